-- draw.lua: run the next part of a campaign's draw, atomically.
--
-- KEYS[1]  campaign meta hash   (see admit.lua); the draw's own fields:
--                               queue_opens  when the pre-queue opened (ms; 0 or absent: a race)
--                               draw_started when the draw's first part ran (ms)
--                               queued       users in the pre-queue when the draw started
--                               drawn        '1' once the draw has ended
-- KEYS[2]  users                base name of the user buckets (see admit.lua)
-- KEYS[3]  free sorted set      (see admit.lua)
-- KEYS[4]  outbox stream        (see admit.lua)
-- KEYS[5]  queue sorted set     user id, score = ticket: the users with the lowest tickets win
-- ARGV[1]  most winners this call
-- ARGV[2]  most users per outbox entry
--
-- Returns {code, winners, ms} (codes in prelude.lua):
--   NO_DRAW       no such campaign, or a race
--   DRAW_NOT_DUE  ms = how long until opens, by Redis's clock
--   DRAW_GOES_ON  this call drew `winners`; call again
--   DRAW_DONE     the draw has ended: in this call (ms = how long since its first part
--                 started), or earlier (ms = -1)
--
-- Each call pops the lowest tickets off the queue and admits those users exactly as admit.lua
-- would have (a seq, a user bucket entry, an outbox entry), in the same atomic step, so a draw
-- cut short at any point goes on from where it stopped, whoever calls next. The draw ends when
-- the quota is filled or the queue is empty; the queue is then removed (those not drawn hold
-- nothing) and the campaign answers as a race.

local meta = redis.call('HMGET', KEYS[1], 'quota', 'opens', 'next', 'issued', 'digits',
  'queue_opens', 'drawn', 'draw_started', 'floor')
if not meta[1] or tonumber(meta[6] or 0) == 0 then
  return {NO_DRAW, 0, 0}
end
if meta[7] == '1' then
  return {DRAW_DONE, 0, -1}
end
local now = now_ms()
local opens = tonumber(meta[2])
if now < opens then
  return {DRAW_NOT_DUE, 0, opens - now}
end

local started = tonumber(meta[8] or 0)
if started == 0 then
  started = now
  redis.call('HSET', KEYS[1], 'draw_started', string.format('%d', now),
    'queued', redis.call('ZCARD', KEYS[5]))
end

local quota = tonumber(meta[1])
local issued = tonumber(meta[4])
local room = math.min(tonumber(ARGV[1]), quota - issued)
local popped = {}
if room > 0 then
  popped = redis.call('ZPOPMIN', KEYS[5], room)
end

local bucket = bucket_of(KEYS[2], tonumber(meta[5]))
local take_seq, commit_seqs = seq_source(KEYS[3], meta[1], tonumber(meta[3]), room)
local users, seqs = {}, {}
local winners = 0
for j = 1, #popped, 2 do
  local user = popped[j]
  local key = bucket(user)
  -- Nobody is admitted before the draw ends, so a queued user holds nothing; checked all the
  -- same, as a seq given twice could not be taken back.
  if not redis.call('HGET', key, user) then
    local seq = string.format('%d', take_seq())
    redis.call('HSET', key, user, seq)
    winners = winners + 1
    users[winners] = user
    seqs[winners] = seq
  end
end
if winners > 0 then
  redis.call('HSET', KEYS[1], 'next', string.format('%d', commit_seqs()),
    'issued', string.format('%d', issued + winners))
  append_admissions(KEYS[1], KEYS[4], string.format('%d', stamp(now, meta[9])), users, seqs,
    winners, tonumber(ARGV[2]))
end

if issued + winners >= quota or redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('HSET', KEYS[1], 'drawn', '1')
  redis.call('UNLINK', KEYS[5])
  return {DRAW_DONE, winners, now - started}
end
return {DRAW_GOES_ON, winners, 0}
