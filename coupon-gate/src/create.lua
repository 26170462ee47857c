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
-- ARGV[8]  queue_opens          when a draw's pre-queue opens (ms), 0 for a race (see
--                               admit.lua and draw.lua)
--
-- Returns {code, issued} (codes in prelude.lua):
--   CREATED             the campaign did not exist; meta and the outbox consumer group now do
--   UNCHANGED           it exists with exactly this definition; nothing written
--   UPDATED             it existed with another definition, which is now replaced
--   QUOTA_BELOW_ISSUED  the new quota is below the number of users already admitted; nothing
--                       written
--   OPENING_LOCKED      the update changes how the campaign opens (race or draw, or when the
--                       queue opens) after it began taking applications (a race: opened; a
--                       draw: its queue opened), or moves a draw's opens once the draw began;
--                       nothing written
--   ENDED               the campaign was ended early (close.lua): it keeps its definition for
--                       good; nothing written
--   ARCHIVED            the campaign was archived (archive.lua): its id is not reused; nothing
--                       written
--
-- Every check comes before the first write.

local meta = redis.call('HMGET', KEYS[1], 'quota', 'opens', 'closes', 'issued', 'queue_opens',
  'draw_started', 'ended')
local issued = tonumber(meta[4] or 0)

if not meta[1] then
  if archived(KEYS[1]) then
    return {ARCHIVED, issued}
  end
  -- The stream may outlive an earlier campaign of the same id; its group is then reused.
  local ok = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[4], '0', 'MKSTREAM')
  if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(ok.err)
  end
  redis.call('HSET', KEYS[1], 'quota', ARGV[1], 'opens', ARGV[2], 'closes', ARGV[3], 'next', 0,
    'issued', 0, 'digits', ARGV[7], 'queue_opens', ARGV[8])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  return {CREATED, issued}
end

if meta[7] then
  return {ENDED, issued}
end
local queue_opens = meta[5] or '0'
if meta[1] == ARGV[1] and meta[2] == ARGV[2] and meta[3] == ARGV[3] and queue_opens == ARGV[8] then
  return {UNCHANGED, issued}
end
local now = now_ms()
local began = tonumber(queue_opens)
if began == 0 then
  began = tonumber(meta[2])
end
if queue_opens ~= ARGV[8] and now >= began then
  return {OPENING_LOCKED, issued}
end
if meta[6] and meta[2] ~= ARGV[2] then
  return {OPENING_LOCKED, issued}
end
if tonumber(ARGV[1]) < issued then
  return {QUOTA_BELOW_ISSUED, issued}
end
redis.call('HSET', KEYS[1], 'quota', ARGV[1], 'opens', ARGV[2], 'closes', ARGV[3], 'queue_opens',
  ARGV[8])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {UPDATED, issued}
