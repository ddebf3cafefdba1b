#!/bin/sh
# Redis and Sentinel rewrite their own config file: Sentinel with the primary, replicas and peers
# it learns, a Redis node with the role Sentinel gives it (REPLICAOF, then CONFIG REWRITE). So
# each runs from a writable copy of its read-only template, made in /data on the container's
# first start with the instance's own lines appended, and kept: a restart comes back as what
# the instance last was, not as what the template says.
#   redis-run.sh [--sentinel] TEMPLATE [LINE...]
# runs `redis-server /data/<TEMPLATE's name> [--sentinel]`. Works with the upstream redis image
# and the local one (both have redis-server and a /data the redis user owns).
#
# The container outlives a crash of its server: a server that dies (kill -9 included) is started
# again after MSARCH_REDIS_RESTART_PAUSE_S (10 s), and meanwhile the container keeps its name on
# the network. Sentinel cannot fail over from a primary whose name no longer resolves, which is
# what the name of a stopped container does (redis/redis#12753: "Failed to resolve hostname");
# 10 s is well past a failover here (about 3 s). The server's pid is in /tmp/redis-server.pid.
set -eu
pause=${MSARCH_REDIS_RESTART_PAUSE_S:-10}
mode=
if [ "${1:-}" = --sentinel ]; then
    mode=--sentinel
    shift
fi
template=$1
shift
config=/data/$(basename "$template")
if [ ! -f "$config" ]; then
    { cat "$template"; printf '%s\n' "$@"; } >"$config"
fi
pid=
trap 'if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; fi; exit 0' TERM INT
while true; do
    redis-server "$config" $mode &
    pid=$!
    echo "$pid" >/tmp/redis-server.pid
    status=0
    wait "$pid" || status=$?
    pid=
    echo "redis-run.sh: redis-server exited with $status; starting it again in ${pause} s" >&2
    sleep "$pause" &
    wait $!
done
