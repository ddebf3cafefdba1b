"""The gateway's routes and policies from one TOML file (apps/gateway/config.py): the built-in
table is infra/gateway.toml, a bad file is refused with every mistake named, and the policies
do what they say on a gateway with nothing behind it."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apps.gateway.app import create_gateway
from apps.gateway.config import (
    Balancing,
    GatewayConfig,
    GatewayConfigError,
    Route,
    default_config,
    load,
)
from apps.gateway.upstreams import Upstreams
from msarch.settings import SERVICES, Settings
from msarch.testing.isolation import free_port

SHIPPED = Path(__file__).parents[2] / "infra" / "gateway.toml"


def test_the_shipped_file_is_the_built_in_table() -> None:
    assert load(SHIPPED) == default_config(Settings())


def test_the_longest_prefix_wins() -> None:
    config = GatewayConfig(
        routes=[
            Route(prefix="/api/batch", service="batch"),
            Route(prefix="/api/batch/batchkeys", service="store", timeout_s=1),
        ]
    )
    assert config.route_for("/api/batch/batchkeys").service == "store"  # type: ignore[union-attr]
    assert config.route_for("/api/batch/123").service == "batch"  # type: ignore[union-attr]
    assert config.route_for("/api/batchx") is None
    assert config.route_for("/api") is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("routes = [", "not TOML"),
        ("[[routes]]\nprefix = '/api/x'\nservice = 'nowhere'", "routes.0.service"),
        ("[[routes]]\nprefix = 'api/x'\nservice = 'batch'", "routes.0.prefix"),
        ("[[routes]]\nprefix = '/api/x'\nservice = 'batch'\ntimeout = 3", "routes.0.timeout"),
        ("[[routes]]\nprefix = '/a'\nservice = 'batch'\ntimeout_s = -1", "routes.0.timeout_s"),
        ("[[routes]]\nprefix = '/a'\nservice = 'batch'\nrate_limit = {requests = 0, period_s = 1}",
         "routes.0.rate_limit.requests"),
        ("[[routes]]\nprefix = '/a'\nservice = 'batch'\nbody_limit_bytes = 10000000",
         "routes.0.body_limit_bytes"),
        ("[[routes]]\nprefix = '/a'\nservice = 'batch'\n[[routes]]\nprefix = '/a'\n"
         "service = 'roundtrip'", "repeated: /a"),
        ("[[routes]]\nprefix = '/a'\nservice = 'batch'\n[cors]\nallow_origins = ['*']\n"
         "allow_credentials = true", "allow_credentials"),
        ("", "routes"),
    ],
)  # fmt: skip
def test_a_bad_file_names_its_mistakes(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(GatewayConfigError) as refused:
        load(path)
    assert str(path) in str(refused.value)
    assert named in str(refused.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot be read"):
        load(tmp_path / "nowhere.toml")


class Fixed(Upstreams):
    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = urls

    def instances(self, service: str) -> list[str]:
        return self.urls


def test_least_outstanding_goes_to_the_least_busy_instance() -> None:
    route = Route(prefix="/a", service="batch", balancing=Balancing.least_outstanding)
    upstreams = Fixed(["http://a", "http://b", "http://c"])
    upstreams.started("http://a")
    upstreams.started("http://a")
    upstreams.started("http://c")
    assert [upstreams.candidates("batch", route)[0] for _ in range(3)] == ["http://b"] * 3
    upstreams.finished("http://a")
    upstreams.finished("http://a")
    assert upstreams.candidates("batch", route)[-1] == "http://c"
    # round robin does not look at them
    assert {Fixed.candidates(upstreams, "batch")[0] for _ in range(3)} == {
        "http://a", "http://b", "http://c"
    }  # fmt: skip


def test_each_route_has_its_own_breaker() -> None:
    touchy = Route(prefix="/a", service="batch", breaker_threshold=1, breaker_cooldown_s=60)
    patient = Route(prefix="/b", service="batch", breaker_threshold=5)
    upstreams = Fixed(["http://a"])
    upstreams.failed("http://a", "refused", touchy)
    upstreams.failed("http://a", "refused", patient)
    assert upstreams.candidates("batch", touchy) == []
    assert upstreams.candidates("batch", patient) == ["http://a"]
    assert upstreams.retry_after_s("batch", touchy) == 60


def _gateway_with(tmp_path: Path, table: str) -> Iterator[TestClient]:
    path = tmp_path / "gateway.toml"
    path.write_text(table)
    ports = {f"{s}_port": free_port() for s in SERVICES}
    settings = Settings(gateway_config=str(path)).model_copy(update=ports)
    with TestClient(create_gateway(settings)) as client:
        yield client


@pytest.fixture
def small_bodies(tmp_path: Path) -> Iterator[TestClient]:
    yield from _gateway_with(
        tmp_path,
        "[[routes]]\nprefix = '/api/roundtrip'\nservice = 'roundtrip'\nbody_limit_bytes = 16\n"
        "retries = 0",
    )


def test_a_body_over_the_routes_limit_is_413_before_any_upstream(small_bodies: TestClient) -> None:
    refused = small_bodies.post("/api/roundtrip", json={"key": "k", "value": "x" * 64})
    assert refused.status_code == 413
    assert refused.headers["content-type"] == "application/problem+json"
    # within the limit it goes on, to an instance that is not there: 503
    assert small_bodies.post("/api/roundtrip", json={"key": "k"}).status_code == 503
    assert small_bodies.get("/api/batch/batchkeys").status_code == 404  # no route in this file


def test_a_bad_file_stops_the_gateway_at_start(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[[routes]]\nprefix = '/a'\nservice = 'nowhere'")
    with pytest.raises(GatewayConfigError, match=r"routes\.0\.service"):
        create_gateway(Settings(gateway_config=str(path)))
