-- admit.lua: decide admission for one or more users of one campaign, atomically.
--
-- KEYS[1]  campaign meta hash   fields: quota, opens (ms, 0 = no bound), closes (ms, 0 = no bound),
--                               next (highest seq ever handed out), issued (users holding a
--                               seq), digits (see KEYS[2]), outbox (events in the outbox not
--                               yet acknowledged: added here and by release.lua, taken off by
--                               ack.lua)
-- KEYS[2]  users                base name of the user buckets: user id -> seq lives in the hash
--                               KEYS[2]:<the user id's last `digits` decimal digits> (KEYS[2]:0
--                               when digits is 0; `bucket_of` in prelude.lua). Small buckets stay
--                               in Redis's compact listpack encoding; they share KEYS[2]'s hash
--                               tag, so a campaign's keys stay in one cluster slot
-- KEYS[3]  free sorted set      seqs returned by release, score = seq
-- KEYS[4]  outbox stream        one entry per call that admitted anyone, one field:
--                               admit = "<at ms> <user>:<seq> <user>:<seq> ..." (arrival order);
--                               when it held nothing unacknowledged before, the campaign id is
--                               published on <prefix>:outbox-ready (announce_outbox in
--                               prelude.lua)
-- ARGV[1..n] user ids (decimal, validated by the caller), in arrival order
--
-- Returns a flat array with two integers per user, in ARGV order: code, value (codes in prelude.lua)
--   ADMITTED          value = the seq taken (1..=quota)
--   DUPLICATE         value = the seq the user already holds
--   SOLD_OUT          value = 0
--   NOT_OPEN          value = 0
--   CLOSED            value = 0
--   UNKNOWN_CAMPAIGN  value = 0
--
-- Users are decided in ARGV order exactly as if each had called alone, one after the other.
-- Every check comes before the first write: phase one decides with reads and local tables
-- only, phase two writes. A request that is duplicate, sold out or outside the window writes
-- nothing, so a sold-out campaign puts no write load on Redis.

local n = #ARGV
local out = {}

local function all(code)
  for i = 1, n do
    out[2 * i - 1] = code
    out[2 * i] = 0
  end
  return out
end

local meta = redis.call('HMGET', KEYS[1], 'quota', 'opens', 'closes', 'next', 'issued', 'digits')
if not meta[1] then
  return all(UNKNOWN_CAMPAIGN)
end

local now = now_ms()
local opens = tonumber(meta[2])
local closes = tonumber(meta[3])
if opens > 0 and now < opens then
  return all(NOT_OPEN)
end
if closes > 0 and now >= closes then
  return all(CLOSED)
end

local quota = tonumber(meta[1])
local next_seq = tonumber(meta[4])
local issued = tonumber(meta[5])

-- The bucket key of a user, computed once per user.
local bucket = bucket_of(KEYS[2], tonumber(meta[6]))

-- Phase one: decide.
local decided = {}  -- user -> seq taken earlier in this batch
-- The admitted, in order, as parallel arrays (no table per user): user, bucket key, seq as a
-- decimal string. Numbers are formatted here, once, with %d: a number handed to redis.call
-- would be formatted with %.17g, which costs several times as much.
local adm_users, adm_buckets, adm_seqs = {}, {}, {}
local admitted = 0
local free = nil    -- released seqs <= quota, ascending, loaded on first need
local free_used = 0
for i = 1, n do
  local user = ARGV[i]
  local held = decided[user]
  local key
  if not held then
    key = bucket(user)
    held = redis.call('HGET', key, user)
  end
  if held then
    out[2 * i - 1] = DUPLICATE
    out[2 * i] = tonumber(held)
  elseif issued >= quota then
    out[2 * i - 1] = SOLD_OUT
    out[2 * i] = 0
  else
    -- A released seq is reused before a new one is taken, lowest first. Every seq in
    -- 1..=next is either held or free, so when no free seq <= quota is left and a slot
    -- is still open, next < quota and next + 1 is a valid seq.
    if free == nil then
      free = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', meta[1], 'LIMIT', 0, n)
    end
    local seq
    if free_used < #free then
      free_used = free_used + 1
      seq = tonumber(free[free_used])
    else
      next_seq = next_seq + 1
      seq = next_seq
    end
    issued = issued + 1
    decided[user] = seq
    admitted = admitted + 1
    adm_users[admitted] = user
    adm_buckets[admitted] = key
    adm_seqs[admitted] = string.format('%d', seq)
    out[2 * i - 1] = ADMITTED
    out[2 * i] = seq
  end
end

-- Phase two: write.
if admitted > 0 then
  for j = 1, free_used do
    redis.call('ZREM', KEYS[3], free[j])
  end
  redis.call('HSET', KEYS[1], 'next', string.format('%d', next_seq), 'issued', string.format('%d', issued))
  local record = {string.format('%d', now)}
  for j = 1, admitted do
    local user, seq = adm_users[j], adm_seqs[j]
    redis.call('HSET', adm_buckets[j], user, seq)
    record[j + 1] = user .. ':' .. seq
  end
  redis.call('XADD', KEYS[4], '*', 'admit', table.concat(record, ' '))
  announce_outbox(KEYS[4], redis.call('HINCRBY', KEYS[1], 'outbox', admitted), admitted)
end
return out
