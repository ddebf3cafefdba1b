-- A live publisher keeps its batch from being swept as stalled, unless it is final.
-- KEYS: meta, assembling. ARGV: batch id, now ms, final statuses (space-separated)
local status = redis.call('HGET', KEYS[1], 'status')
if not status or string.find(' ' .. ARGV[3] .. ' ', ' ' .. status .. ' ', 1, true) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
