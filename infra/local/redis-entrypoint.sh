#!/bin/sh
# The upstream redis image is built with protected mode off; Debian's is not. Turn it off
# when the container runs the server, so the compose command stays the upstream one.
set -e
if [ "${1:-}" = "redis-server" ]; then
    shift
    exec redis-server "$@" --protected-mode no
fi
exec "$@"
