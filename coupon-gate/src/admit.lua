-- admit.lua: decide admission for one or more users of one campaign, atomically.
--
-- KEYS[1]  campaign meta hash   fields: quota, opens (ms, 0 = no bound), closes (ms, 0 = no bound),
--                               next (highest seq ever handed out), issued (users holding a
--                               seq), digits (see KEYS[2]), outbox (events in the outbox not
--                               yet acknowledged: added here and by release.lua, taken off by
--                               ack.lua), floor (the earliest stamp of the next admission; see
--                               `stamp` in prelude.lua)
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
-- KEYS[5]  queue sorted set     a draw's pre-queue: user id, score = ticket (lowest wins)
-- ARGV[1]  tickets              7 random bytes per user, in ARGV order: a user joining a
--                               pre-queue for the first time gets the ticket made of its 7 bytes
--                               (53 bits); unused otherwise
-- ARGV[2..n+1] user ids (validated by the caller), in arrival order
--
-- Meta fields of a draw (see draw.lua): queue_opens (ms; absent or 0 for a race), drawn ('1'
-- once the draw has ended).
--
-- Returns a flat array with two integers per user, in user order: code, value (codes in
-- prelude.lua)
--   ADMITTED          value = the seq taken (1..=quota)
--   DUPLICATE         value = the seq the user already holds
--   SOLD_OUT          value = 0
--   NOT_OPEN          value = 0
--   CLOSED            value = 0
--   UNKNOWN_CAMPAIGN  value = 0
--   ARCHIVED          value = 0: the campaign was archived (archive.lua)
--   QUEUED            value = opens (ms), when the draw runs: the user is in the pre-queue
--   DRAW_PENDING      value = 0: the draw is due and has not ended; nothing written. The
--                     caller runs the draw (draw.lua) and applies again
--
-- Users are decided in order exactly as if each had called alone, one after the other.
-- Every check comes before the first write: phase one decides with reads and local tables
-- only, phase two writes. A request that is duplicate, sold out or outside the window writes
-- nothing, so a sold-out campaign puts no write load on Redis.

local n = #ARGV - 1
local out = {}

local function all(code, value)
  for i = 1, n do
    out[2 * i - 1] = code
    out[2 * i] = value
  end
  return out
end

local meta = redis.call('HMGET', KEYS[1], 'quota', 'opens', 'closes', 'next', 'issued', 'digits',
  'queue_opens', 'floor')
if not meta[1] then
  if archived(KEYS[1]) then
    return all(ARCHIVED, 0)
  end
  return all(UNKNOWN_CAMPAIGN, 0)
end

local now = now_ms()
local opens = tonumber(meta[2])
local closes = tonumber(meta[3])
local queue_opens = tonumber(meta[7] or 0)
-- The end of the window first: a campaign closed early (close.lua) may close before it opens.
if closes > 0 and now >= closes then
  return all(CLOSED, 0)
end
if opens > 0 and now < opens then
  if queue_opens == 0 or now < queue_opens then
    return all(NOT_OPEN, 0)
  end
  -- The pre-queue: a user's first join fixes its ticket; joining again changes nothing.
  local tickets = ARGV[1]
  for i = 1, n do
    local b1, b2, b3, b4, b5, b6, b7 = string.byte(tickets, 7 * i - 6, 7 * i)
    local ticket = ((((((b1 % 32) * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6) * 256 + b7
    redis.call('ZADD', KEYS[5], 'NX', string.format('%d', ticket), ARGV[i + 1])
  end
  return all(QUEUED, opens)
end
local quota = tonumber(meta[1])
local issued = tonumber(meta[5])
-- Whether a draw has ended is read only where it can change the answer: a draw campaign with
-- coupons left. A sold-out campaign is a race or a drawn draw (a draw ends once the quota is
-- filled), so its answers read nothing more.
if queue_opens > 0 and issued < quota and redis.call('HGET', KEYS[1], 'drawn') ~= '1' then
  return all(DRAW_PENDING, 0)
end

-- Made on the first admission, so that a call admitting nobody (sold out) does not pay for it.
local take_seq, commit_seqs = nil, nil

-- The bucket key of a user, computed once per user.
local bucket = bucket_of(KEYS[2], tonumber(meta[6]))

-- Phase one: decide.
local decided = {}  -- user -> seq taken earlier in this batch
-- The admitted, in order, as parallel arrays (no table per user): user, bucket key, seq as a
-- decimal string. Numbers are formatted here, once, with %d: a number handed to redis.call
-- would be formatted with %.17g, which costs several times as much.
local adm_users, adm_buckets, adm_seqs = {}, {}, {}
local admitted = 0
for i = 1, n do
  local user = ARGV[i + 1]
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
    if not take_seq then
      take_seq, commit_seqs = seq_source(KEYS[3], meta[1], tonumber(meta[4]), n)
    end
    local seq = take_seq()
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
  local next_seq = commit_seqs()
  redis.call('HSET', KEYS[1], 'next', string.format('%d', next_seq), 'issued', string.format('%d', issued))
  for j = 1, admitted do
    redis.call('HSET', adm_buckets[j], adm_users[j], adm_seqs[j])
  end
  append_admissions(KEYS[1], KEYS[4], string.format('%d', stamp(now, meta[8])), adm_users, adm_seqs,
    admitted, n)
end
return out
