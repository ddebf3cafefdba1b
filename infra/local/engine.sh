#!/usr/bin/env bash
# Make sure a Docker engine answers, with Compose and debootstrap beside it: what the container
# suite and `just compose-local` need. Installs Debian's docker.io, docker-compose and debootstrap
# when they are missing and starts dockerd when it is not running, saying so in one line each.
# Without root (or apt) it says exactly what is missing and fails.
set -euo pipefail
say() { printf 'msarch containers: %s\n' "$*"; }
fail() { say "$*" >&2; exit 1; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || fail "missing ${missing[*]} (Debian packages); install them as root: apt-get install ${missing[*]}"
    say "installing ${missing[*]} from Debian's packages"
    log=/var/log/msarch-apt.log  # apt's chatter goes here; shown when it fails
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    [ -S /var/run/docker.sock ] \
        && fail "the Docker engine does not answer $(id -un) ($(docker info 2>&1 | tail -n 1)): join the docker group or run as root"
    fail "no Docker engine answers and only root can start one here: start dockerd"
fi
log=/var/log/msarch-dockerd.log
say "starting the Docker engine (dockerd in the background, log in $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 120); do
    if docker info >/dev/null 2>&1; then exit 0; fi
    sleep 0.5
done
tail -n 20 "$log" >&2
fail "dockerd did not answer within 60 s (log: $log)"
