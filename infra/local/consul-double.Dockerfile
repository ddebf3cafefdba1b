# The project's Consul test double (tests/utils/consul_double.py) as a container, standing in
# for the Consul agent, which no package source reachable here ships. It answers Consul's
# HTTP API on 8500 and runs each registered HTTP health check itself, from this container.
# Built by infra/local/images.sh on the msarch image (the double uses msarch.embedded).
ARG MSARCH_IMAGE=msarch-local/msarch
FROM ${MSARCH_IMAGE}
COPY consul_double.py /opt/consul-double/consul_double.py
EXPOSE 8500
ENTRYPOINT ["python", "/opt/consul-double/consul_double.py"]
CMD ["--host", "0.0.0.0", "--port", "8500", "--check-every", "2"]
