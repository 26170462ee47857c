-- prelude.lua: joined in front of every script of the gate at compile time (see script.rs), so
-- that the answer codes, the clock and the bucket rule are written once.

-- Answer codes. Rust's `script::code` holds the same numbers; a unit test there reads this
-- block and pins that they agree.
local ADMITTED, DUPLICATE, SOLD_OUT, NOT_OPEN, CLOSED, UNKNOWN_CAMPAIGN = 1, 2, 3, 4, 5, 6
local NOT_ADMITTED, RELEASED = 0, 1
local CREATED, UNCHANGED, UPDATED, QUOTA_BELOW_ISSUED = 1, 2, 3, 4

-- Milliseconds since the Unix epoch, by the Redis server's clock, so that every application
-- node agrees on the time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
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

