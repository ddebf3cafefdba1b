"""One settings class: every MSARCH_* environment variable, read once."""

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("gateway", "roundtrip", "batch", "websocket", "store")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSARCH_", extra="ignore")

    # One node, or a cluster's nodes comma-separated: a service connects to one that answers
    # and moves to the next when its node goes away.
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # RabbitMQ: how many nodes hold a replica of each work queue (unset: every node listed
    # in MSARCH_BROKER_URL when it lists several, else the broker's default). Read when a
    # queue is first declared.
    quorum_size: int | None = Field(default=None, ge=1)
    # RabbitMQ's management API (http://user:pass@host:15672, or one per node comma-separated):
    # when set, delivery limit and dead-lettering are a policy, changed without deleting a
    # queue. Unset: they are queue arguments, fixed when the queue is first declared.
    rabbit_management_url: str | None = None
    # NATS JetStream: how many servers hold each stream (3 in a three-server cluster).
    nats_replicas: int = Field(default=1, ge=1, le=5)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis through Sentinel: host:port list and the name of the monitored primary. When set,
    # MSARCH_REDIS_URL gives only the database number and the password.
    redis_sentinels: str | None = None
    redis_master: str = "mymaster"
    # Replicas that must hold a write before it is acknowledged (Redis WAIT); unset: 1 with
    # Sentinel, else 0. A failover then promotes a replica that has every acknowledged write.
    redis_wait_replicas: int | None = Field(default=None, ge=0)
    redis_wait_timeout_ms: int = Field(default=2000, ge=1)
    consul_url: str | None = None
    # The address other machines reach this instance at, as registered in Consul.
    # Unset: MSARCH_HOST, or this machine's primary IP when that is 0.0.0.0.
    advertise_host: str | None = None
    # How often the gateway re-reads the healthy instances from Consul.
    discovery_interval_s: float = Field(default=2.0, gt=0)
    namespace: str = ""

    batch_size: int = Field(default=20, ge=1)
    batch_max: int = Field(default=1_000_000, ge=1)
    batch_timeout_s: float = Field(default=20.0, gt=0)
    assembly_timeout_s: float = Field(default=10.0, gt=0)
    # The log's upkeep by the store service: a snapshot this often (0: never), then a trim of
    # the events it holds that are older than MSARCH_LOG_KEEP_S (unset: the log is kept whole).
    snapshot_every_s: float = Field(default=0.0, ge=0)
    log_keep_s: float | None = Field(default=None, ge=0)
    api_key: str | None = None

    host: str = "127.0.0.1"
    # Where the gateway finds a service that is not on MSARCH_HOST (in compose: by name).
    gateway_url: str | None = None
    roundtrip_url: str | None = None
    batch_url: str | None = None
    websocket_url: str | None = None
    store_url: str | None = None
    gateway_port: int = 8000
    roundtrip_port: int = 8001
    batch_port: int = 8002
    websocket_port: int = 8003
    store_port: int = 8004

    # Reliability knobs: bounded in-flight work, bounded retries, bounded shutdown.
    prefetch: int = Field(default=256, ge=1)
    delivery_limit: int = Field(default=5, ge=1)
    graceful_timeout_s: float = Field(default=15.0, gt=0)
    publish_window: int = Field(default=512, ge=1)
    # How long a batch item whose publish failed is sent again (its broker node went away and
    # the connection moves to another) before the batch is given up as not published.
    publish_retry_s: float = Field(default=15.0, ge=0)
    # How soon a service notices that its broker node went silent without closing (a node cut
    # off by a partition): RabbitMQ's heartbeat (the node is left after heartbeat + 1 s of
    # silence), three NATS ping intervals. It then moves to another node of MSARCH_BROKER_URL.
    broker_heartbeat_s: float = Field(default=10.0, ge=2)
    upstream_timeout_s: float = Field(default=30.0, gt=0)
    # The gateway's routes and policies (a TOML file like infra/gateway.toml); unset: the same
    # table built in (apps/gateway/config.py).
    gateway_config: str | None = None
    # Tracing (msarch.tracing): the share of new traces recorded, decided where a trace starts
    # and followed by every later hop. 0.1: a tenth of the requests pay for spans (the others
    # pay for a header only), and a caller that wants its request traced sends a sampled
    # traceparent. The last MSARCH_TRACE_KEEP traces are kept in memory (GET /traces); with
    # MSARCH_OTEL_ENDPOINT (an OTLP/HTTP collector, e.g. http://collector:4318) they are
    # exported too, and without it nothing is sent anywhere.
    trace_sample: float = Field(default=0.1, ge=0, le=1)
    trace_keep: int = Field(default=200, ge=1, le=100_000)
    otel_endpoint: str | None = None
    log_level: str = "INFO"
    # JSON lines ("json"), readable lines ("text"), or "auto": text on a terminal, else JSON.
    log_format: Literal["auto", "json", "text"] = "auto"
    # `msarch up` starts NATS and Redis of its own when none answer locally.
    embedded: bool = True
    data_dir: str = ".msarch"

    @property
    def broker_urls(self) -> list[str]:
        """The broker's nodes, as MSARCH_BROKER_URL lists them."""
        return [node.strip() for node in self.broker_url.split(",") if node.strip()]

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """MSARCH_REDIS_SENTINELS as (host, port) pairs (26379 when a port is left out)."""
        pairs = []
        for node in filter(None, (n.strip() for n in (self.redis_sentinels or "").split(","))):
            host, _, port = node.partition(":")
            pairs.append((host, int(port or 26379)))
        return pairs

    @property
    def wait_replicas(self) -> int:
        if self.redis_wait_replicas is not None:
            return self.redis_wait_replicas
        return 1 if self.sentinels else 0

    def port_of(self, service: str) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def url_of(self, service: str) -> str:
        override: str | None = getattr(self, f"{service}_url")
        return override.rstrip("/") if override else f"http://{self.host}:{self.port_of(service)}"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def redacted(url: str) -> str:
    """The URL without its password, for what is printed or logged (MSARCH_*_URL may hold one).
    Credentials with no colon are a token (nats://TOKEN@host): hidden whole. A
    comma-separated list of nodes is redacted node by node."""
    if "," in url:
        return ",".join(redacted(node.strip()) for node in url.split(","))
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user, colon, _ = credentials.partition(":")
        return f"{scheme}{sep}{user}:***@{host}" if colon else f"{scheme}{sep}***@{host}"
    return url
