# NATS with JetStream from Debian's nats-server, shaped like the upstream nats image:
# `nats-server` is the entrypoint, so the compose command (-c /etc/nats/nats.conf) is the same;
# wget for the compose healthcheck. Built by infra/local/images.sh.
ARG BASE_IMAGE=msarch-local/debian
FROM ${BASE_IMAGE}
COPY debian.sources /etc/apt/sources.list.d/debian.sources
RUN rm -f /etc/apt/sources.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data
EXPOSE 4222 8222
ENTRYPOINT ["nats-server"]
CMD ["-c", "/etc/nats/nats.conf"]
