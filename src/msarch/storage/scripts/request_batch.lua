-- Appends BatchRequested: the batch exists, its items are on their way.
-- KEYS: meta, events. ARGV: batch id, size, now ms, time, correlation id
if redis.call('HSETNX', KEYS[1], 'status', 'PendingConsume') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'size', ARGV[2], 'created_at', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'type', 'BatchRequested', 'version', '2',
  'message_id', ARGV[1] .. ':Requested', 'correlation_id', ARGV[5], 'time', ARGV[4], 'payload',
  cjson.encode({batch_id = ARGV[1], size = tonumber(ARGV[2])}))
return 1
