-- close.lua: end a campaign now, atomically.
--
-- KEYS[1]  campaign meta hash   (see admit.lua)
-- KEYS[2]  queue sorted set     a draw's pre-queue (see admit.lua and draw.lua)
-- ARGV[1]  changes channel      ARGV[2] is published here after a close, so that servers that
-- ARGV[2]  campaign id          remember the campaign as sold out forget it and are told closed
--
-- Returns {code, closes} (codes in prelude.lua), closes in ms since the Unix epoch:
--   CLOSED_NOW        closes is now, by Redis's clock; every later application is answered
--                     CLOSED (admit.lua checks the end of the window before its start). A draw
--                     that had not ended is cancelled: its queue is removed, `drawn` is set and
--                     `queued` records how many had joined; those it drew keep their coupons
--   ALREADY_CLOSED    the window had ended at closes (by itself or by an earlier close);
--                     nothing written
--   UNKNOWN_CAMPAIGN  nothing written
--   ARCHIVED          the campaign was archived (archive.lua); nothing written
--
-- Every check comes before the first write. Holders keep their coupons: closing stops
-- admissions, it takes nothing back.

local meta = redis.call('HMGET', KEYS[1], 'closes', 'queue_opens', 'drawn', 'draw_started')
if not meta[1] then
  if archived(KEYS[1]) then
    return {ARCHIVED, 0}
  end
  return {UNKNOWN_CAMPAIGN, 0}
end
local now = now_ms()
local closes = tonumber(meta[1])
if closes > 0 and closes <= now then
  return {ALREADY_CLOSED, closes}
end

-- `ended` keeps a later create.lua from reopening it (a definition sent again would otherwise
-- move closes back).
redis.call('HSET', KEYS[1], 'closes', string.format('%d', now), 'ended', '1')
if tonumber(meta[2] or 0) > 0 and meta[3] ~= '1' then
  if not meta[4] then
    redis.call('HSET', KEYS[1], 'queued', redis.call('ZCARD', KEYS[2]))
  end
  redis.call('HSET', KEYS[1], 'drawn', '1')
  -- Freed in the background, as draw.lua does: a queue of a million users would stall Redis.
  redis.call('UNLINK', KEYS[2])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {CLOSED_NOW, now}
