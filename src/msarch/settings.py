"""One settings class: every MSARCH_* environment variable, read once."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("gateway", "roundtrip", "batch", "websocket", "store")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSARCH_", extra="ignore")

    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
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
    upstream_timeout_s: float = Field(default=30.0, gt=0)
    log_level: str = "INFO"
    # `msarch up` starts NATS and Redis of its own when none answer locally.
    embedded: bool = True
    data_dir: str = ".msarch"

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
    Credentials with no colon are a token (nats://TOKEN@host): hidden whole."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user, colon, _ = credentials.partition(":")
        return f"{scheme}{sep}{user}:***@{host}" if colon else f"{scheme}{sep}***@{host}"
    return url
