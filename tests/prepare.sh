#!/usr/bin/env bash
# What `just test` needs beyond the Python packages, installed or started when missing, with
# one line saying so: Debian's chromium for the browser tests, Debian's prometheus (and its
# promtool) for the metrics tests, and a Docker engine (with Compose and debootstrap) and the
# local images for the container suite. The servers the tests talk to (RabbitMQ,
# Redis, NATS) are the machine's own: .ci/run starts those. Without root it says what is
# missing and fails: no test is skipped for want of a tool.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "msarch tests: missing /usr/bin/chromium (Debian's chromium, for the browser tests):" \
            "as root, apt-get install chromium" >&2
        exit 1
    fi
    echo "msarch tests: installing Debian's chromium for the browser tests"
    log=/var/log/msarch-apt.log  # apt's chatter goes here; shown when it fails
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
fi

if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "msarch tests: missing /usr/bin/prometheus and promtool (Debian's prometheus, for" \
            "the metrics tests): as root, apt-get install prometheus" >&2
        exit 1
    fi
    echo "msarch tests: installing Debian's prometheus for the metrics tests"
    log=/var/log/msarch-apt.log
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
    # The package starts a server of its own on :9090 where it can; the tests start theirs.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service >>"$log" 2>&1 || true
    elif [ -x /etc/init.d/prometheus ]; then
        /etc/init.d/prometheus stop >>"$log" 2>&1 || true
    fi
fi

infra/local/engine.sh
infra/local/images.sh
