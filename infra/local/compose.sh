#!/usr/bin/env bash
# The compose stack with local images: `compose.sh up` (alone) builds every image (images.sh),
# starts infra/compose.yaml + infra/compose.local.yaml as project msarch (MSARCH_COMPOSE_PROJECT)
# and waits for the gateway; `compose.sh down` stops and removes it; anything else
# (`compose.sh ps`, `compose.sh up -d --scale store=3`, `compose.sh logs store`) goes to compose.
# Compose v2 (`docker compose`) when present, else Debian's docker-compose 1.29 with
# --compatibility (which turns deploy.replicas into running replicas).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
project=${MSARCH_COMPOSE_PROJECT:-msarch}
port=${MSARCH_COMPOSE_GATEWAY_PORT:-8000}
files=(-f "$root/infra/compose.yaml" -f "$root/infra/compose.local.yaml")

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -p "$project" "${files[@]}" "$@"
    else
        docker-compose -p "$project" "${files[@]}" --compatibility "$@"
    fi
}

case "${*:-up}" in
up)
    "$root/infra/local/engine.sh"
    "$root/infra/local/images.sh"
    started=$SECONDS
    compose up -d
    printf 'msarch: waiting for the gateway on http://127.0.0.1:%s/health\n' "$port"
    for _ in $(seq 180); do
        if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
            printf '\nmsarch is up in containers (%s s after `up`):\n' "$((SECONDS - started))"
            printf '  web client  http://127.0.0.1:%s/\n  docs        http://127.0.0.1:%s/docs\n' "$port" "$port"
            printf '  RabbitMQ UI http://127.0.0.1:%s (guest/guest)\n' "${MSARCH_COMPOSE_RABBITMQ_UI_PORT:-15672}"
            printf '  stop it     just compose-down\n'
            exit 0
        fi
        sleep 1
    done
    compose ps
    printf 'msarch: the gateway was not healthy within 180 s; see `%s logs`\n' "$0" >&2
    exit 1
    ;;
down)
    compose down --remove-orphans
    ;;
*)
    compose "$@"
    ;;
esac
