-- Fails a batch unless it is already final; returns its final status.
-- KEYS: meta, staging, assembling, events
-- ARGV: batch id, status, detail, now ms, time, final statuses (space-separated)
local status = redis.call('HGET', KEYS[1], 'status')
if status and string.find(' ' .. ARGV[6] .. ' ', ' ' .. status .. ' ', 1, true) then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return status
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'detail', ARGV[3], 'updated_at', ARGV[4],
  'stored', 0)
local detail = cjson.null
if ARGV[3] ~= '' then detail = ARGV[3] end
redis.call('XADD', KEYS[4], '*', 'type', 'BatchFailed', 'version', '2',
  'message_id', ARGV[1] .. ':' .. ARGV[2], 'correlation_id', '', 'time', ARGV[5], 'payload',
  cjson.encode({batch_id = ARGV[1], status = ARGV[2], detail = detail}))
return ARGV[2]
