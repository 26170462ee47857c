-- ack.lua: acknowledge delivered outbox entries and remove them from the stream, atomically.
--
-- KEYS[1]  outbox stream
-- KEYS[2]  campaign meta hash   its `outbox` field counts the events in the outbox not yet
--                               acknowledged (see admit.lua); the events of the entries
--                               acknowledged here are taken off it
-- ARGV[1]  the relays' consumer group
-- ARGV[2..n] pairs: the id of a delivered entry, then how many events it holds; in any order
--
-- Returns the number of entries acknowledged.
--
-- Every entry of the stream at or below the group's last-delivered id has been read by a relay,
-- so it is either pending or acknowledged. Below the oldest pending entry (below the successor
-- of the last-delivered id when none is pending) everything is acknowledged, and XTRIM MINID
-- drops that head of the stream by whole nodes. Ids acknowledged here that lie above the floor,
-- behind an entry another relay still holds, are deleted one by one. Either way the stream keeps
-- exactly the entries still to be delivered. An id that was never read is left alone.

local stream = KEYS[1]
local meta = KEYS[2]
local group = ARGV[1]
local n = #ARGV

-- XACK one id at a time: an entry acknowledged here for the first time leaves the outbox in
-- this call (trimmed or deleted below), and its events leave the count.
local acked = 0
local events = 0
for i = 2, n - 1, 2 do
  if redis.call('XACK', stream, group, ARGV[i]) == 1 then
    acked = acked + 1
    events = events + tonumber(ARGV[i + 1])
  end
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- The group's last-delivered id: entries after it were never read by any relay.
local last
for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name, delivered
  for i = 1, #info, 2 do
    if info[i] == 'name' then
      name = info[i + 1]
    elseif info[i] == 'last-delivered-id' then
      delivered = info[i + 1]
    end
  end
  if name == group then
    last = delivered
  end
end
if not last then
  return redis.error_reply('NOGROUP no consumer group ' .. group .. ' on the outbox')
end
local last_ms, last_seq = parse(last)

local floor_ms, floor_seq
local pending = redis.call('XPENDING', stream, group)
if pending[1] > 0 then
  floor_ms, floor_seq = parse(pending[2])
else
  floor_ms, floor_seq = last_ms, last_seq + 1
end
redis.call('XTRIM', stream, 'MINID', string.format('%d-%d', floor_ms, floor_seq))

-- Acknowledged here but at or above the floor: read, and now acknowledged, unless it lies
-- after the last-delivered id (never read: acknowledging it did nothing, and it stays).
for i = 2, n - 1, 2 do
  local ms, seq = parse(ARGV[i])
  if ms
    and (ms > floor_ms or (ms == floor_ms and seq >= floor_seq))
    and (ms < last_ms or (ms == last_ms and seq <= last_seq)) then
    redis.call('XDEL', stream, ARGV[i])
  end
end

-- The count, of a campaign that exists. An empty outbox sets it to 0: so a count that an older
-- version never kept (or that anything else put off) is right again once the outbox drains.
if redis.call('EXISTS', meta) == 1 then
  if redis.call('XLEN', stream) == 0 then
    redis.call('HSET', meta, 'outbox', 0)
  elseif events > 0 then
    redis.call('HINCRBY', meta, 'outbox', -events)
  end
end
return acked
