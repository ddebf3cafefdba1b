# Python for the local images: Debian's python3 on the local Debian base (no image registry).
# Built by infra/local/images.sh; its context holds the host's apt sources and CA bundle.
ARG BASE_IMAGE=msarch-local/debian
FROM ${BASE_IMAGE}
COPY debian.sources /etc/apt/sources.list.d/debian.sources
RUN rm -f /etc/apt/sources.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
# After every apt step: PyPI is reachable from a build only through the host's own CA bundle.
COPY host-ca-bundle.crt /etc/ssl/certs/host-ca-bundle.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt \
    SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt
