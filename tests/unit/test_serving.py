"""`msarch serve`: where a service listens is decided once, and its settings agree with it."""

import os

import pytest
import uvicorn
from typer.testing import CliRunner

from msarch import serving
from msarch.cli import app


def test_serve_binds_and_advertises_the_same_address(monkeypatch: pytest.MonkeyPatch) -> None:
    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **options: started.update(
        target=target, **options))  # fmt: skip
    # Set here so that monkeypatch restores them (unset) after the test: serve() writes them.
    monkeypatch.setenv("MSARCH_HOST", "127.0.0.1")
    monkeypatch.setenv("MSARCH_STORE_PORT", "8004")
    serving.serve("store", host="0.0.0.0", port=9104)
    assert started["target"] == "apps.store.app:app"
    assert (started["host"], started["port"]) == ("0.0.0.0", 9104)
    # The app's own settings (read when uvicorn imports it) see the same address and port.
    assert os.environ["MSARCH_HOST"] == "0.0.0.0"
    assert os.environ["MSARCH_STORE_PORT"] == "9104"
    assert started["timeout_graceful_shutdown"] == 15


def test_serve_reads_service_and_port_from_the_image_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str | None, int | None, str]] = []
    monkeypatch.setattr(serving, "serve", lambda *args: calls.append(args))
    result = CliRunner().invoke(app, ["serve"], env={"SERVICE": "batch", "PORT": "9102"})
    assert result.exit_code == 0, result.output
    assert calls == [("batch", None, 9102, "info")]


def test_serve_refuses_an_unknown_service_clearly() -> None:
    result = CliRunner().invoke(app, ["serve", "billing"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "unknown service 'billing': one of gateway, roundtrip, batch, websocket, store" in output
