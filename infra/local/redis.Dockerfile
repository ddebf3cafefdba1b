# Redis from Debian's redis-server, shaped like the upstream redis:7 image: data in /data,
# protected mode off (other containers connect; the compose network is the boundary).
# Built by infra/local/images.sh.
ARG BASE_IMAGE=msarch-local/debian
FROM ${BASE_IMAGE}
COPY debian.sources /etc/apt/sources.list.d/debian.sources
RUN rm -f /etc/apt/sources.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh
USER redis
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint.sh"]
CMD ["redis-server"]
