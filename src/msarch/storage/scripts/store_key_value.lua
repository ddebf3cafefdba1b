-- Appends KeyValueStored and sets kv:{key}, once per message id.
-- KEYS: kv, msg marker, events.
-- ARGV: value, message id, correlation id, time, payload, ttl, trace id ('' when none)
-- Returns {'new' | 'stored' | 'forwarded', event id} (msarch.storage.key_values.MessageState).
local seen = redis.call('HMGET', KEYS[2], 'state', 'event')
if seen[1] then return seen end
redis.call('SET', KEYS[1], ARGV[1])
local entry = {'type', 'KeyValueStored', 'version', '2',
  'message_id', ARGV[2], 'correlation_id', ARGV[3], 'time', ARGV[4], 'payload', ARGV[5]}
if ARGV[7] ~= '' then
  table.insert(entry, 'trace_id')
  table.insert(entry, ARGV[7])
end
local event = redis.call('XADD', KEYS[3], '*', unpack(entry))
redis.call('HSET', KEYS[2], 'state', 'stored', 'event', event)
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {'new', event}
