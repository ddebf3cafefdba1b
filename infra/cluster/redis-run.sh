#!/bin/sh
# Redis and Sentinel rewrite their own config file: Sentinel with the primary, replicas and peers
# it learns, a Redis node with the role Sentinel gives it (REPLICAOF, then CONFIG REWRITE). So
# each runs from a writable copy of its read-only template, made in /data on the container's
# first start with the instance's own lines appended, and kept: a restart comes back as what
# the instance last was, not as what the template says.
#   redis-run.sh [--sentinel] TEMPLATE [LINE...]
# runs `redis-server /data/<TEMPLATE's name> [--sentinel]`. Works with the upstream redis image
# and the local one (both have redis-server and a /data the redis user owns).
set -eu
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
exec redis-server "$config" $mode
