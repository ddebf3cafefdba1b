"""The gateway serves the web client and the docs from the project: nothing from a CDN."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from apps.gateway.app import app
from msarch.channels import ALL

PAGES = ["/", "/docs", "/docs/asyncapi"]


@pytest.fixture(scope="module")
def gateway() -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def _assets_of(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_only_local_assets(gateway: TestClient, page: str) -> None:
    response = gateway.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assets = _assets_of(response.text)
    assert assets, "a page with no script or style"
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert gateway.get(url).status_code == 200, url


def test_openapi_describes_the_public_api(gateway: TestClient) -> None:
    schema = gateway.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/api/roundtrip",
        "/api/batch",
        "/api/batch/batchkeys",
        "/api/batch/batchvalues/{batch_id}",
        "/api/batch/{batch_id}",
        "/api/dead",
        "/api/dead/requeue",
        "/api/dead/drop",
    }
    batch = schema["paths"]["/api/batch"]["post"]["responses"]
    assert "application/problem+json" in batch["400"]["content"]
    assert "202" in schema["paths"]["/api/roundtrip"]["post"]["responses"]


@pytest.mark.parametrize(("query", "binding"), [("", "amqp"), ("?backend=nats", "nats")])
def test_asyncapi_json_has_every_channel(gateway: TestClient, query: str, binding: str) -> None:
    document = gateway.get(f"/docs/asyncapi.json{query}").json()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == {c.name for c in ALL}
    assert all(binding in c["bindings"] for c in document["channels"].values())


def test_asyncapi_json_of_an_unknown_backend_is_a_problem(gateway: TestClient) -> None:
    response = gateway.get("/docs/asyncapi.json?backend=kafka")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
