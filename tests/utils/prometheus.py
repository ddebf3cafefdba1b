"""A real Prometheus for the tests: Debian's `prometheus` (tests/prepare.sh installs it), run
with a given configuration on a free port, its storage in a directory of the test's own, asked
through its HTTP API (/api/v1/...), and stopped at the end.

The project's scrape configuration (infra/prometheus.yml) finds the compose stacks' services by
their DNS names; `for_stack` makes of it the configuration that scrapes a test stack: the same
jobs, each with the stack's address of its service.
"""

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from msarch.embedded import free_port
from msarch.settings import Settings
from msarch.testing.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "infra" / "prometheus.yml"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Config = dict[str, Any]


def prometheus_binary() -> str:
    """Debian's prometheus, or a failure that says how to get it."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail(
            "this test needs Debian's prometheus: tests/prepare.sh installs it "
            "(as root: apt-get install prometheus)",
            pytrace=False,
        )
    return found


def project_config() -> Config:
    config: Config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    return config


def for_stack(config: Config, settings: Settings, every_s: float) -> Config:
    """`config` scraping the services of a stack with these settings every `every_s`: each job's
    DNS discovery becomes the address of the service it names; the rest stays as written."""
    interval = f"{every_s:g}s"
    jobs = []
    for written in config["scrape_configs"]:
        job = {k: v for k, v in written.items() if k != "dns_sd_configs"}
        address = urlsplit(settings.url_of(job["job_name"])).netloc
        jobs.append({**job, "static_configs": [{"targets": [address]}]})
    scraping = {"scrape_interval": interval, "scrape_timeout": interval}
    return {**config, "global": {**config.get("global", {}), **scraping}, "scrape_configs": jobs}


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error, or did not start."""


@dataclass
class Prometheus:
    """A running Prometheus and an HTTP client for its API."""

    url: str
    client: httpx.AsyncClient

    async def api(self, path: str, **params: Any) -> Any:
        """The `data` of GET /api/v1/<path>; PrometheusError with its error otherwise."""
        answer = (await self.client.get(f"{self.url}/api/v1/{path}", params=params)).json()
        if answer.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {params}: {answer}")
        return answer["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        data = await self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def up_jobs(self) -> set[str]:
        """The jobs that have at least one target whose last scrape succeeded."""
        data = await self.api("targets", state="active")
        return {t["labels"]["job"] for t in data["activeTargets"] if t["health"] == "up"}

    async def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await self.client.get(f"{self.url}/-/ready")).status_code == 200
        return False


@contextlib.asynccontextmanager
async def running_prometheus(config: Config, workdir: Path) -> AsyncIterator[Prometheus]:
    """Prometheus with `config` on a free port, storage and log under `workdir`; SIGTERM (then
    SIGKILL) on any exit."""
    config_file, log_file = workdir / "prometheus.yml", workdir / "prometheus.log"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    address = f"127.0.0.1:{free_port()}"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={address}",
            stdout=log,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            prometheus = Prometheus(f"http://{address}", client)
            try:
                await wait_for(prometheus.ready, START_TIMEOUT_S, 0.2, "prometheus is ready")
            except TimeoutError as exc:
                tail = log_file.read_text(errors="replace")[-3000:]
                raise PrometheusError(f"prometheus did not start:\n{tail}") from exc
            yield prometheus
    finally:
        await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
