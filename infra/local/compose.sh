#!/usr/bin/env bash
# The compose stack with local images, as project msarch (MSARCH_COMPOSE_PROJECT):
#   compose.sh up            build every image (images.sh), start infra/compose.yaml with
#                            infra/compose.local.yaml, wait for the gateway, print the URLs
#   compose.sh up cluster    the same for infra/compose.cluster.yaml with
#                            infra/compose.cluster.local.yaml (three RabbitMQ nodes, Redis with
#                            Sentinel, two instances of each service; NATS: COMPOSE_PROFILES=nats)
#   compose.sh down          stop and remove whichever of the two the project runs
#   compose.sh ARGS...       anything else goes to compose (`compose.sh ps`, `compose.sh logs
#                            store`, `compose.sh down -v`, `compose.sh up -d --scale store=3`)
# The file set: MSARCH_COMPOSE_STACK=single|cluster when set (or `up cluster`, `down cluster`);
# otherwise the one the project's containers were started from, else single.
# Compose v2 (`docker compose`) when present, else Debian's docker-compose 1.29 with
# --compatibility (which turns deploy.replicas into running replicas).
# Prometheus and Grafana (profile `monitoring`) are upstream images that images.sh does not
# build: they start only with COMPOSE_PROFILES=monitoring, which pulls them from a registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
project=${MSARCH_COMPOSE_PROJECT:-msarch}
port=${MSARCH_COMPOSE_GATEWAY_PORT:-8000}
port2=${MSARCH_COMPOSE_GATEWAY2_PORT:-8010}
stack=${MSARCH_COMPOSE_STACK:-}

if [ $# -ge 2 ] && { [ "$1" = up ] || [ "$1" = down ]; } \
    && { [ "$2" = cluster ] || [ "$2" = single ]; }; then
    stack=$2
    set -- "$1" "${@:3}"
fi
if [ -z "$stack" ] && [ "${1:-up}" != up ]; then
    # Compose labels each container with the files it came from.
    started_from=$(docker ps --all --filter "label=com.docker.compose.project=$project" \
        --format '{{.Label "com.docker.compose.project.config_files"}}' 2>/dev/null || true)
    case "$started_from" in *compose.cluster.yaml*) stack=cluster ;; esac
fi
case "${stack:-single}" in
single) files=(-f "$root/infra/compose.yaml" -f "$root/infra/compose.local.yaml") ;;
cluster) files=(-f "$root/infra/compose.cluster.yaml" -f "$root/infra/compose.cluster.local.yaml") ;;
*) printf 'msarch: MSARCH_COMPOSE_STACK is single or cluster, not %s\n' "$stack" >&2; exit 2 ;;
esac

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" "${files[@]}" "$@"
    else
        docker-compose -p "$project" "${files[@]}" --compatibility "$@"
    fi
}

answers() {  # the gateway on this host port is healthy
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$1/health', timeout=2)" 2>/dev/null
}

case "${*:-up}" in
up)
    "$root/infra/local/engine.sh"
    "$root/infra/local/images.sh"
    started=$SECONDS
    gateways=("$port") limit=180
    if [ "${stack:-single}" = cluster ]; then gateways+=("$port2") limit=300; fi
    # Compose 1.29 gives up on the whole start when one dependency reports unhealthy once (on
    # a loaded 2-core machine, a health check that timed out while ten services start); the
    # containers go on, restarted by their policy, so the start is tried again.
    for attempt in 1 2 3; do
        compose up -d && break
        [ "$attempt" -lt 3 ] || exit 1
        printf 'msarch: compose up failed (attempt %s of 3), trying again in 10 s\n' "$attempt" >&2
        sleep 10
    done
    printf 'msarch: waiting for the gateway on http://127.0.0.1:%s/health\n' "${gateways[@]}"
    for _ in $(seq "$limit"); do
        waiting=()
        for gateway in "${gateways[@]}"; do answers "$gateway" || waiting+=("$gateway"); done
        if [ ${#waiting[@]} -eq 0 ]; then
            printf '\nmsarch is up in containers (%s s after `up`):\n' "$((SECONDS - started))"
            for gateway in "${gateways[@]}"; do
                printf '  web client  http://127.0.0.1:%s/\n  docs        http://127.0.0.1:%s/docs\n' \
                    "$gateway" "$gateway"
            done
            printf '  RabbitMQ UI http://127.0.0.1:%s (guest/guest)\n' "${MSARCH_COMPOSE_RABBITMQ_UI_PORT:-15672}"
            printf '  stop it     just compose-down\n'
            exit 0
        fi
        sleep 1
    done
    compose ps
    printf 'msarch: the gateway was not healthy within %s s; see `%s logs`\n' "$limit" "$0" >&2
    exit 1
    ;;
down)
    compose down --remove-orphans
    ;;
*)
    compose "$@"
    ;;
esac
