-- Stages items of one batch; the last missing item commits the batch.
-- The rules are msarch.batch_rules.BatchRules; tests/unit/test_storage_model.py checks
-- this script against them. Outcomes are msarch.batch_rules.Outcome values.
-- KEYS: meta, staging, final, batches, assembling, events
-- ARGV: batch id, size, now ms, time, correlation id, final statuses (space-separated),
--   then index/key/value triples.
-- Returns {status, outcome, stored, detail}.
local meta, staging, final, batches, assembling, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local batch_id, size, now, at, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local finals = ' ' .. ARGV[6] .. ' '
local FIRST_ITEM = 7
local status = redis.call('HGET', meta, 'status')
if status and string.find(finals, ' ' .. status .. ' ', 1, true) then
  return {status, 'ignored', tonumber(redis.call('HGET', meta, 'stored') or 0),
    redis.call('HGET', meta, 'detail') or ''}
end
local function invalid(detail)
  redis.call('DEL', staging)
  redis.call('ZREM', assembling, batch_id)
  redis.call('HSET', meta, 'status', 'Invalid', 'detail', detail, 'updated_at', now, 'stored', 0)
  redis.call('XADD', events, '*', 'type', 'BatchFailed', 'version', '2',
    'message_id', batch_id .. ':Invalid', 'correlation_id', cid, 'time', at, 'payload',
    cjson.encode({batch_id = batch_id, status = 'Invalid', detail = detail}))
  return {'Invalid', 'invalidated', 0, detail}
end
local known = tonumber(redis.call('HGET', meta, 'size'))
if size < 1 then return invalid('size ' .. ARGV[2] .. ' is not positive') end
if known and known ~= size then
  return invalid('an item says size ' .. size .. ', the batch has size ' .. known)
end
redis.call('HSETNX', meta, 'created_at', now)
local outcome = 'duplicate'
for i = FIRST_ITEM, #ARGV, 3 do
  -- Items after the completing one are ignored, as when they come one by one.
  if redis.call('HLEN', staging) == size then break end
  local index = tonumber(ARGV[i])
  if index < 0 or index >= size then
    return invalid('index ' .. ARGV[i] .. ' is outside 0..' .. (size - 1))
  end
  -- A valid item fixes the size (BatchRules.receive); an invalid first one does not.
  if i == FIRST_ITEM then redis.call('HSET', meta, 'status', 'PendingDatabase', 'size', size) end
  local item = cjson.encode({ARGV[i + 1], ARGV[i + 2]})
  if redis.call('HSETNX', staging, ARGV[i], item) == 1 then
    outcome = 'staged'
    redis.call('XADD', events, '*', 'type', 'BatchItemStaged', 'version', '2',
      'message_id', batch_id .. ':' .. ARGV[i], 'correlation_id', cid, 'time', at, 'payload',
      cjson.encode({batch_id = batch_id, index = index, size = size,
        key = ARGV[i + 1], value = ARGV[i + 2]}))
  end
end
local stored = redis.call('HLEN', staging)
redis.call('HSET', meta, 'stored', stored, 'updated_at', now)
if stored == size then
  redis.call('RENAME', staging, final)
  redis.call('ZREM', assembling, batch_id)
  redis.call('ZADD', batches, now, batch_id)
  redis.call('HSET', meta, 'status', 'Done', 'committed_at', now)
  redis.call('XADD', events, '*', 'type', 'BatchCommitted', 'version', '2',
    'message_id', batch_id .. ':Done', 'correlation_id', cid, 'time', at, 'payload',
    cjson.encode({batch_id = batch_id, size = size, committed_at = tonumber(now)}))
  return {'Done', 'completed', stored, ''}
end
redis.call('ZADD', assembling, now, batch_id)
return {'PendingDatabase', outcome, stored, ''}
