-- archive.lua: replace a settled campaign's state by a tombstone, atomically.
--
-- KEYS[1]  campaign meta hash   (see admit.lua); becomes the tombstone
-- KEYS[2]  free sorted set      (see admit.lua)
-- KEYS[3]  queue sorted set     (see admit.lua)
-- KEYS[4]  outbox stream        holds exactly the entries still to be delivered (see ack.lua);
--                               read as well as the meta's count of them, which reads low for an
--                               outbox older than the count
-- ARGV[1]  issued               the seal: the meta's issued, next and floor ('' for none) as
-- ARGV[2]  next                 the caller read them before it compared the holders with the
-- ARGV[3]  floor                stores downstream; any admission or release since changed one
-- ARGV[4]  changes channel      ARGV[5] is published here after archiving, so that servers that
-- ARGV[5]  campaign id          remember the campaign as sold out forget it
--
-- Returns {code, value} (codes in prelude.lua):
--   ARCHIVED_NOW      value = the archive time (ms). The meta hash is now the tombstone:
--                     archived (ms), closed_at (ms), quota_was, holders (the issued count), and
--                     sweep (the bucket digits) while the caller still removes the user buckets
--                     and the outbox, which are too many keys for one call (Gate::archive)
--   ARCHIVED          value = the archive time (ms) of an earlier archive; nothing written
--   NOT_CLOSED        value = closes (ms, 0 for no bound): the window has not ended
--   OUTBOX_PENDING    value = events (or, when the count reads low, entries) in the outbox not
--                     yet acknowledged
--   CHANGED           value = 0: an admission or release since the seal was read
--   UNKNOWN_CAMPAIGN  value = 0
--
-- Every check comes before the first write. A closed campaign admits nobody, so once the seal
-- holds, its holders are final: only a release could change them, and a release changes the
-- seal.

local meta = redis.call('HMGET', KEYS[1], 'quota', 'closes', 'issued', 'next', 'floor', 'outbox',
  'digits', 'archived')
if meta[8] then
  return {ARCHIVED, tonumber(meta[8])}
end
if not meta[1] then
  return {UNKNOWN_CAMPAIGN, 0}
end
local now = now_ms()
local closes = tonumber(meta[2])
if closes == 0 or closes > now then
  return {NOT_CLOSED, closes}
end
local pending = math.max(tonumber(meta[6] or 0), redis.call('XLEN', KEYS[4]))
if pending > 0 then
  return {OUTBOX_PENDING, pending}
end
if meta[3] ~= ARGV[1] or meta[4] ~= ARGV[2] or (meta[5] or '') ~= ARGV[3] then
  return {CHANGED, 0}
end

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'archived', string.format('%d', now), 'closed_at', meta[2],
  'quota_was', meta[1], 'holders', meta[3], 'sweep', meta[7])
redis.call('UNLINK', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {ARCHIVED_NOW, now}
