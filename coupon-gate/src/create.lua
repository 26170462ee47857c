-- create.lua: create a campaign, or update its definition, atomically.
--
-- KEYS[1]  campaign meta hash   fields: quota, opens, closes, next, issued, digits (see admit.lua)
-- KEYS[2]  outbox stream
-- ARGV[1]  quota (positive integer)
-- ARGV[2]  opens (ms since the Unix epoch, 0 = no bound)
-- ARGV[3]  closes (ms since the Unix epoch, 0 = no bound)
-- ARGV[4]  name of the outbox consumer group
-- ARGV[5]  changes channel      ARGV[6] is published here after a creation or update, so that
-- ARGV[6]  campaign id          servers that remember the campaign as sold out forget it
-- ARGV[7]  digits               of a new campaign: user buckets are keyed by this many last
--                               digits of the user id (kept when the definition changes)
--
-- Returns {code, issued} (codes in prelude.lua):
--   CREATED             the campaign did not exist; meta and the outbox consumer group now do
--   UNCHANGED           it exists with exactly this definition; nothing written
--   UPDATED             it existed with another definition, which is now replaced
--   QUOTA_BELOW_ISSUED  the new quota is below the number of users already admitted; nothing
--                       written
--
-- Every check comes before the first write.

local meta = redis.call('HMGET', KEYS[1], 'quota', 'opens', 'closes', 'issued')
local issued = tonumber(meta[4] or 0)

if not meta[1] then
  -- The stream may outlive an earlier campaign of the same id; its group is then reused.
  local ok = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[4], '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(ok.err)
  end
  redis.call('HSET', KEYS[1], 'quota', ARGV[1], 'opens', ARGV[2], 'closes', ARGV[3], 'next', 0,
    'issued', 0, 'digits', ARGV[7])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return {CREATED, issued}
end

if meta[1] == ARGV[1] and meta[2] == ARGV[2] and meta[3] == ARGV[3] then
  return {UNCHANGED, issued}
end
if tonumber(ARGV[1]) < issued then
  return {QUOTA_BELOW_ISSUED, issued}
end
redis.call('HSET', KEYS[1], 'quota', ARGV[1], 'opens', ARGV[2], 'closes', ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {UPDATED, issued}
