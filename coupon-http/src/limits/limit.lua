-- Keys' limits, shared by every coupon-http on this Redis: each a GCRA bucket kept as its
-- theoretical arrival time (TAT, µs on Redis's clock, so the processes' clocks never matter).
--
-- KEYS[i]         a key's state (a string); it expires when its bucket is full again
-- ARGV[4i - 3]    its emission interval, µs (1 / the rate)
-- ARGV[4i - 2]    its tolerance, µs (burst × interval)
-- ARGV[4i - 1]    debt: requests a process already let through; charged whatever the bucket holds
-- ARGV[4i]        wanted: requests to lease now if there is room; 0 only charges
--
-- Returns {granted_1, wait_1, granted_2, wait_2, ...}: for each key how many of the wanted fit
-- (0 to wanted), and µs until one more fits after what was charged (0 if it fits now).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local answers = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[4 * i - 3])
  local tolerance = tonumber(ARGV[4 * i - 2])
  local debt = tonumber(ARGV[4 * i - 1])
  local wanted = tonumber(ARGV[4 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  tat = tat + debt * interval
  local room = math.floor((now + tolerance - tat) / interval)
  local granted = math.max(0, math.min(room, wanted))
  tat = tat + granted * interval
  if tat > now then
    -- Gone once the bucket is full again: an idle key costs nothing.
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  end
  answers[2 * i - 1] = granted
  answers[2 * i] = math.max(0, tat + interval - tolerance - now)
end
return answers
