-- prelude.lua: joined in front of every script of the gate at compile time (see script.rs), so
-- that the answer codes, the clock and the bucket rule are written once.

-- Answer codes. Rust's `script::code` holds the same numbers; a unit test there reads this
-- block and pins that they agree.
local ADMITTED, DUPLICATE, SOLD_OUT, NOT_OPEN, CLOSED, UNKNOWN_CAMPAIGN, QUEUED, DRAW_PENDING = 1, 2, 3, 4, 5, 6, 7, 8
local NOT_ADMITTED, RELEASED = 0, 1
local CREATED, UNCHANGED, UPDATED, QUOTA_BELOW_ISSUED, OPENING_LOCKED, ENDED = 1, 2, 3, 4, 5, 6
local NO_DRAW, DRAW_NOT_DUE, DRAW_GOES_ON, DRAW_DONE = 0, 1, 2, 3
local CLOSED_NOW, ALREADY_CLOSED = 1, 2
local ARCHIVED_NOW, NOT_CLOSED, OUTBOX_PENDING, CHANGED = 1, 3, 4, 5
-- An archived campaign (archive.lua), answered by every script that is asked about one; no
-- other code of any script is 9.
local ARCHIVED = 9

-- Milliseconds since the Unix epoch, by the Redis server's clock, so that every application
-- node agrees on the time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether the campaign whose meta hash is `meta` was archived: its meta hash is then a
-- tombstone (see archive.lua), which has none of a live campaign's fields. Asked only where a
-- script found no campaign, so it costs a live campaign nothing.
local function archived(meta)
  return redis.call('HEXISTS', meta, 'archived') == 1
end

-- The time an admission is stamped with in the outbox: Redis's clock, but never before the meta
-- hash's `floor` (absent: no bound), which release.lua sets past the stamp of every release. So
-- the admission that takes a released seq, or that admits a released user again, is stamped
-- later than the release, which is stamped later than the admission it undoes: a store that
-- receives a campaign's events out of order (they are keyed by user, over several partitions)
-- tells the newer of two rows that claim one seq or one user by their stamps.
local function stamp(now, floor)
  return math.max(now, tonumber(floor or 0))
end

-- Announces that the outbox stream `outbox` (`<prefix>:{<campaign>}:outbox`) holds work again,
-- by publishing the campaign id on `<prefix>:outbox-ready`, when `events` were just added to its
-- count `backlog` (the meta hash's `outbox` field, after the HINCRBY): only when the count was
-- zero before, so that a relay that let the campaign rest reads it again, and an outbox that is
-- already being drained costs no message. Neither the prefix nor the id holds `{` or `}`.
local function announce_outbox(outbox, backlog, events)
  if backlog ~= events then
    return
  end
  -- Called after the writes, so it must not fail: a key of another shape is not announced.
  local prefix, campaign = string.match(outbox, '^(.*):{([^{}]*)}:outbox$')
  if prefix then
    redis.call('PUBLISH', prefix .. ':outbox-ready', campaign)
  end
end

-- The bucket rule: a function giving the key of the hash that holds a user (its id as text) of
-- a campaign whose bucket keys start with `users`: `<users>:<the id's last `digits` digits>` for
-- a numeric id, `<users>:<a stable hash of the id, in `digits` digits>` for any other, or
-- `<users>:0` when `digits` is 0. Rust's `Keys::user_bucket` is the same rule; the campaign tests
-- pin that they agree. The keys are built from pieces made once per call, as string work is
-- most of the admit script's cost per user.
local function bucket_of(users, digits)
  if digits == 0 then
    local only = users .. ':0'
    return function(_)
      return only
    end
  end
  local prefix = users .. ':'
  local modulus = 10 ^ digits
  local width = '%0' .. digits .. 'd'
  return function(user)
    if not string.find(user, '[^0-9]') then
      return prefix .. string.sub(user, -digits)
    end
    -- djb2 modulo 2^32: every step stays below 2^38, exact in Lua's doubles.
    local h = 5381
    for i = 1, #user do
      h = (h * 33 + string.byte(user, i)) % 4294967296
    end
    return prefix .. string.format(width, h % modulus)
  end
end

-- Seqs for `count` new holders of a campaign of `quota` whose highest seq handed out is
-- `next_seq`: released seqs (the free sorted set `free`) first, lowest first, then new ones.
-- Returns a function giving the next seq, and a function that writes what was taken (the free
-- seqs used, and the meta's `next`) and answers the new `next`. Every seq in 1..=next is held or
-- free, so when no free seq <= quota is left and a slot is open, next < quota.
local function seq_source(free_key, quota, next_seq, count)
  local free = nil
  local used = 0
  local function take()
    if free == nil then
      free = redis.call('ZRANGEBYSCORE', free_key, '-inf', quota, 'LIMIT', 0, count)
    end
    if used < #free then
      used = used + 1
      return tonumber(free[used])
    end
    next_seq = next_seq + 1
    return next_seq
  end
  local function commit()
    for j = 1, used do
      redis.call('ZREM', free_key, free[j])
    end
    return next_seq
  end
  return take, commit
end

-- Appends admissions to the outbox stream `outbox` as entries of at most `per_entry` users
-- (`admit = "<at ms> <user>:<seq> ..."`), counts them into the meta hash `meta`'s `outbox`
-- field and announces the outbox if it was empty. `users` and `seqs` (decimal strings) are
-- parallel arrays of `count` admissions in order.
local function append_admissions(meta, outbox, at, users, seqs, count, per_entry)
  local first = 1
  while first <= count do
    local last = math.min(count, first + per_entry - 1)
    local record = {at}
    for j = first, last do
      record[#record + 1] = users[j] .. ':' .. seqs[j]
    end
    redis.call('XADD', outbox, '*', 'admit', table.concat(record, ' '))
    first = last + 1
  end
  announce_outbox(outbox, redis.call('HINCRBY', meta, 'outbox', count), count)
end
