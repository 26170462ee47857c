-- release.lua: give back the slot of a user whose admission was definitely abandoned.
--
-- KEYS[1]  campaign meta hash   (see admit.lua)
-- KEYS[2]  users                base name of the user buckets (see admit.lua)
-- KEYS[3]  free sorted set      seqs returned by release, score = seq
-- KEYS[4]  outbox stream
-- ARGV[1]  user id (decimal, validated by the caller)
-- ARGV[2]  changes channel      ARGV[3] is published here after a release, so that servers
-- ARGV[3]  campaign id          that remember the campaign as sold out forget it
--
-- Returns {code, seq}:
--   1 released          the user is removed, seq is free for the next admission, and a
--                       release entry is in the outbox so downstream stores drop the coupon
--   0 not admitted      the user holds no slot (never admitted, or already released); nothing written
--   6 unknown campaign  nothing written
--
-- Every check comes before the first write.

local digits = redis.call('HGET', KEYS[1], 'digits')
if not digits then
  return {6, 0}
end
digits = tonumber(digits)
local users = KEYS[2] .. ':' .. (digits == 0 and '0' or string.sub(ARGV[1], -digits))
local seq = redis.call('HGET', users, ARGV[1])
if not seq then
  return {0, 0}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', users, ARGV[1])
redis.call('HINCRBY', KEYS[1], 'issued', -1)
redis.call('ZADD', KEYS[3], seq, seq)
redis.call('XADD', KEYS[4], '*', 'release', string.format('%d %s:%d', now, ARGV[1], seq))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, tonumber(seq)}
