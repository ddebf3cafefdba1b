-- One request against a client's budget (GCRA, the generic cell rate algorithm): the key holds
-- the theoretical arrival time (TAT, ms on Redis's clock, shared by every gateway instance).
-- KEYS: the client's key on this route. ARGV: requests per period, period ms.
-- Returns {allowed (1|0), remaining, ms until the budget is whole again, ms until one more}.
local requests, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local interval = period / requests
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local after = tat + interval
if after - now > period then
  return {0, 0, math.ceil(tat - now), math.ceil(after - now - period)}
end
redis.call('SET', KEYS[1], string.format('%d', math.ceil(after)), 'PX', math.ceil(after - now))
return {1, math.floor((period - (after - now)) / interval), math.ceil(after - now), 0}
