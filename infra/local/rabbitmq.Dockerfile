# RabbitMQ from Debian's rabbitmq-server, shaped like the upstream rabbitmq:*-management image:
# data in /var/lib/rabbitmq, extra config from /etc/rabbitmq/conf.d/, management UI on 15672,
# the node named after the container's hostname. Built by infra/local/images.sh.
ARG BASE_IMAGE=msarch-local/debian
FROM ${BASE_IMAGE}
COPY debian.sources /etc/apt/sources.list.d/debian.sources
RUN rm -f /etc/apt/sources.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management \
    && mkdir -p /etc/rabbitmq/conf.d \
    && printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\n' \
        > /etc/rabbitmq/conf.d/10-defaults.conf \
    && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
# Debian's /usr/sbin/rabbitmq-server only switches to the rabbitmq user; run the real one as it.
USER rabbitmq
ENV HOME=/var/lib/rabbitmq \
    RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d
EXPOSE 5672 15672
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
