"""The gateway's routes and their policies, from one file: what ocelot.json is to Ocelot.

MSARCH_GATEWAY_CONFIG names a TOML file (infra/gateway.toml is the default table, written
out); unset, the gateway uses `default_config`, which is the same table. A file that does
not parse or does not validate stops the gateway at start with every mistake named
(GatewayConfigError), never a gateway half configured.
"""

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from msarch.limits import DEFAULT_MAX_BODY
from msarch.settings import Settings

Upstream = Literal["roundtrip", "batch", "websocket", "store"]


class Balancing(StrEnum):
    round_robin = "round_robin"
    """Each request to the next instance in turn."""
    least_outstanding = "least_outstanding"
    """To the instance with the fewest requests in flight from this gateway (ties in turn)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """A budget of `requests` per `period_s` for each client (its API key when it sends one,
    else its address), shared by every gateway instance through Redis."""

    requests: int = Field(ge=1)
    period_s: float = Field(gt=0)


class Route(_Strict):
    """Requests whose path is `prefix` or under it go to `service`, under these policies."""

    prefix: str = Field(pattern=r"^/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]$")
    service: Upstream
    timeout_s: float = Field(default=10.0, gt=0)
    """Until the whole answer's head has come back; then a 503."""
    retries: int | None = Field(default=None, ge=0)
    """Other instances tried after one refused the connection (nothing was sent); unset: every
    instance. A request that may have arrived is never sent twice."""
    breaker_threshold: int = Field(default=3, ge=1)
    """Failures in a row after which an instance gets nothing for breaker_cooldown_s."""
    breaker_cooldown_s: float = Field(default=5.0, gt=0)
    balancing: Balancing = Balancing.round_robin
    rate_limit: RateLimit | None = None
    """Unset: no limit."""
    body_limit_bytes: int = Field(default=DEFAULT_MAX_BODY, ge=0, le=DEFAULT_MAX_BODY)
    """Larger bodies are answered 413 without reaching the service (at most the services' own
    limit, 512 KiB, which the gateway enforces too while a body streams in)."""

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class Cors(_Strict):
    """Cross-origin requests from browsers (the seed served its client from its own nginx):
    the origins allowed, and what they may send. Preflights are answered by the gateway."""

    allow_origins: list[str] = Field(default_factory=list)
    """Exact origins ("https://app.example.com"), or ["*"] for any (not with credentials)."""
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Content-Type", "X-API-Key", "X-Request-Id"]
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: ["X-Request-Id", "Retry-After", "RateLimit", "RateLimit-Policy"]
    )
    allow_credentials: bool = False
    max_age_s: int = Field(default=600, ge=0)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_credentials needs the origins named: a browser refuses '*'")
        return self


class GatewayConfig(_Strict):
    routes: list[Route] = Field(min_length=1)
    cors: Cors | None = None
    """Unset: no cross-origin access (the web client is served by the gateway itself)."""

    @model_validator(mode="after")
    def _one_route_per_prefix(self) -> Self:
        prefixes = [route.prefix for route in self.routes]
        repeated = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if repeated:
            raise ValueError(f"each prefix is routed once; repeated: {', '.join(repeated)}")
        return self

    def route_for(self, path: str) -> Route | None:
        """The route of the longest prefix that `path` is, or is under."""
        matching = [route for route in self.routes if route.matches(path)]
        return max(matching, key=lambda route: len(route.prefix), default=None)


class GatewayConfigError(Exception):
    """The configuration file cannot be used; the message names the file and every mistake."""


def default_config(settings: Settings) -> GatewayConfig:
    """The table the gateway has when no file is given. A batch may legitimately take a while:
    its route waits for the batch service's own timeout, and then some."""
    return GatewayConfig(
        routes=[
            Route(prefix="/api/roundtrip", service="roundtrip"),
            Route(
                prefix="/api/batch",
                service="batch",
                timeout_s=settings.batch_timeout_s + settings.upstream_timeout_s,
            ),
            Route(prefix="/api/events", service="websocket"),
            Route(prefix="/api/dead", service="store"),
            Route(prefix="/ws", service="websocket"),
        ]
    )


def load(path: str | Path) -> GatewayConfig:
    """The configuration in the TOML file at `path`; GatewayConfigError if it cannot be used."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GatewayConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GatewayConfigError(f"{path}: not TOML: {exc}") from exc
    try:
        return GatewayConfig.model_validate(document)
    except ValidationError as exc:
        mistakes = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'the file'}: {error['msg']}"
            for error in exc.errors()
        )
        raise GatewayConfigError(f"{path}: {mistakes}") from exc


def config_of(settings: Settings) -> GatewayConfig:
    """MSARCH_GATEWAY_CONFIG's file when it is set, the default table otherwise."""
    return load(settings.gateway_config) if settings.gateway_config else default_config(settings)
