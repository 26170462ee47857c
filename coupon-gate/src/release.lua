-- release.lua: give back the slot of a user whose admission was definitely abandoned.
--
-- KEYS[1]  campaign meta hash   (see admit.lua)
-- KEYS[2]  users                base name of the user buckets (see admit.lua)
-- KEYS[3]  free sorted set      seqs returned by release, score = seq
-- KEYS[4]  outbox stream        announced as in admit.lua
-- ARGV[1]  user id (decimal, validated by the caller)
-- ARGV[2]  changes channel      ARGV[3] is published here after a release, so that servers
-- ARGV[3]  campaign id          that remember the campaign as sold out forget it
--
-- Returns {code, seq} (codes in prelude.lua):
--   RELEASED          the user is removed, seq is free for the next admission, and a release
--                     entry is in the outbox so downstream stores drop the coupon
--   NOT_ADMITTED      the user holds no slot (never admitted, or already released); nothing written
--   UNKNOWN_CAMPAIGN  nothing written
--   ARCHIVED          the campaign was archived (archive.lua); nothing written
--
-- Every check comes before the first write.

local meta = redis.call('HMGET', KEYS[1], 'digits', 'floor')
local digits = meta[1]
if not digits then
  if archived(KEYS[1]) then
    return {ARCHIVED, 0}
  end
  return {UNKNOWN_CAMPAIGN, 0}
end
local users = bucket_of(KEYS[2], tonumber(digits))(ARGV[1])
local seq = redis.call('HGET', users, ARGV[1])
if not seq then
  return {NOT_ADMITTED, 0}
end

-- Stamped after every admission so far (the one undone included, even in this millisecond),
-- and every later admission after it (see `stamp` in prelude.lua).
local at = stamp(now_ms(), meta[2]) + 1
redis.call('HDEL', users, ARGV[1])
redis.call('HINCRBY', KEYS[1], 'issued', -1)
redis.call('HSET', KEYS[1], 'floor', string.format('%d', at + 1))
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('XADD', KEYS[4], '*', 'release', string.format('%d %s:%d', at, ARGV[1], seq))
announce_outbox(KEYS[4], redis.call('HINCRBY', KEYS[1], 'outbox', 1), 1)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {RELEASED, tonumber(seq)}
