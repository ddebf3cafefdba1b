"""`faststream docs gen apps.<service>.app:stream_app` works offline, on each backend.

The gateway is not among them: it has no broker (it proxies HTTP), so a document
of its own would be empty; it serves the system-wide one at /docs/asyncapi.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msarch.asyncapi import LOCAL_BROKERS, Backend
from msarch.channels import ALL

ROOT = Path(__file__).parents[2]
FASTSTREAM = Path(sys.executable).parent / "faststream"
SERVICES = ("roundtrip", "store", "batch", "websocket")


def _expected(service: str) -> dict[str, str]:
    """The channels ARCHITECTURE.md says `service` sends ("send") or receives ("receive")."""
    sends = {c.name: "send" for c in ALL if c.producer == service}
    return sends | {c.name: "receive" for c in ALL if c.consumer == service}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["rabbit", "nats"])
@pytest.mark.parametrize("service", SERVICES)
def test_docs_gen_writes_the_services_channels(
    service: str, backend: Backend, tmp_path: Path
) -> None:
    out = tmp_path / f"{service}.json"
    env = {**os.environ, "MSARCH_BROKER_URL": LOCAL_BROKERS[backend]}
    done = subprocess.run(
        [FASTSTREAM, "docs", "gen", f"apps.{service}.app:stream_app", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["info"]["title"] == f"msarch {service}"
    actions = {
        op["channel"]["$ref"].rsplit("/", 1)[1]: op["action"]
        for op in document["operations"].values()
    }
    assert actions == _expected(service)
    binding = "amqp" if backend == "rabbit" else "nats"
    assert all(binding in c["bindings"] for c in document["channels"].values())
