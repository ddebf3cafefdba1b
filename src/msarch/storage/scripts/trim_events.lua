-- Removes the log's entries before ARGV[1] and records the newest id removed, so that a reader
-- resuming inside the removed part is told so (EventLog.gap_after) instead of missing them:
-- Redis records what XDEL removes (max-deleted-entry-id), not what XTRIM does.
-- KEYS: events, events:trimmed
-- ARGV: the first id to keep
-- Returns {entries removed, the newest id removed (false when none was)}.
local newest = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #newest == 0 then
  return {0, false}
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('SET', KEYS[2], newest[1][1])
return {removed, newest[1][1]}
