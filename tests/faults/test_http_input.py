"""Fault 13 of issue 7: bad HTTP input never gives a 5xx; unicode comes back byte for byte."""

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from msarch.testing.stack import StackFactory, wait_for, ws_frames
from tests.utils.figures import Figures

pytestmark = pytest.mark.faults

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
MAX_EXAMPLES = 25
UNICODE = {
    "ключ-🔑-e\u0301-𝔘𝔫𝔦-\u200d-עברית-中文": 'wörld 🌍 \u2028 \x00 \\ " \U0010fffd ﷽',
    "\t tab, nbsp\u00a0and ZWJ 👩\u200d💻": "ǅ ß ẞ ﬃ İı " + "é" * 1000,
}


async def test_schemathesis_finds_no_server_error(
    stack_with: StackFactory, tmp_path: Path, figures: Figures
) -> None:
    # Batches stay small: the fuzzer asks for every size the schema allows.
    async with stack_with(batch_max=200, batch_timeout_s=5.0) as stack:
        started = time.monotonic()
        run = await asyncio.to_thread(
            subprocess.run,
            [
                SCHEMATHESIS,
                "run",
                f"{stack.gateway_url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--request-timeout",
                "20",
                "--seed",
                "7",
                "--generation-database",
                "none",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
        elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    cases = re.search(r"(\d+) generated", output)
    figures(
        max_examples=MAX_EXAMPLES,
        test_cases=cases.group(1) if cases else "?",
        exit_code=run.returncode,
        seconds=round(elapsed, 1),
    )
    assert run.returncode == 0, output[-4000:]


async def test_malformed_bodies_are_4xx_never_5xx(
    stack_with: StackFactory, figures: Figures
) -> None:
    nested = 100_000
    bodies: dict[str, tuple[bytes, dict[str, str]]] = {
        "oversized": (b'{"key": "k", "value": "' + b"x" * (600 * 1024) + b'"}', {}),
        "oversized-chunked": (b'{"key": "k", "value": "' + b"x" * (600 * 1024) + b'"}', {}),
        "value-over-64KiB": (json.dumps({"key": "k", "value": "x" * 65537}).encode(), {}),
        "invalid-utf8": (b'{"key": "\xff\xfe\xc3(", "value": "v"}', {}),
        "invalid-utf8-latin1-declared": (
            b'{"key": "\xe9", "value": "v"}',
            {"content-type": "application/json; charset=latin-1"},
        ),
        "nested-arrays": (b"[" * nested + b"]" * nested, {}),
        # 80,000 levels: 480 KB, under the body limit, so the parser itself is tried.
        "nested-objects": (b'{"a":' * 80_000 + b"1" + b"}" * 80_000, {}),
        "nested-in-value": (b'{"key": "k", "value": ' + b"[" * nested + b"]" * nested + b"}", {}),
        "empty": (b"", {}),
        "not-json": (b"key=value", {"content-type": "application/x-www-form-urlencoded"}),
        "json-null": (b"null", {}),
        "key-too-long": (json.dumps({"key": "k" * 513, "value": "v"}).encode(), {}),
    }
    statuses: dict[str, int] = {}
    # The gateway refuses a declared length over the limit before reading the body and
    # closes: a client still sending may see a reset, so that case sends the head only.
    del bodies["oversized"]
    async with stack_with() as stack, httpx.AsyncClient(timeout=30) as client:
        for name, (body, headers) in bodies.items():
            for path in ("/api/roundtrip", "/api/batch"):
                content: Any = body
                if name.endswith("chunked"):

                    async def chunks(data: bytes = body) -> Any:
                        for i in range(0, len(data), 65536):
                            yield data[i : i + 65536]

                    content = chunks()
                answer = await client.post(
                    stack.gateway_url + path,
                    content=content,
                    headers={"content-type": "application/json", **headers},
                )
                statuses[f"{name}{path.replace('/api/', '@')}"] = answer.status_code
                if answer.status_code >= 400:
                    assert answer.headers["content-type"] == "application/problem+json", name
        for path in ("/api/roundtrip", "/api/batch"):
            status = await _status_of_declared_length(stack.gateway_url, path, 600 * 1024)
            statuses[f"oversized{path.replace('/api/', '@')}"] = status
        health = await client.get(f"{stack.gateway_url}/health")
    figures(**statuses)
    assert [k for k, s in statuses.items() if s >= 500] == []
    # An empty or null body is a valid batch request (the default size); nothing else is.
    valid = {"empty@batch", "json-null@batch"}
    assert all(400 <= s < 500 for k, s in statuses.items() if k not in valid), statuses
    assert statuses["oversized@roundtrip"] == 413
    assert statuses["oversized-chunked@roundtrip"] == 413
    assert health.status_code == 200, "the services are still up"


async def test_unicode_comes_back_byte_for_byte(stack_with: StackFactory, figures: Figures) -> None:
    frames: list[dict[str, Any]] = []
    async with stack_with() as stack:
        ready = asyncio.Event()
        reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
        await asyncio.wait_for(ready.wait(), 10)
        raw = aioredis.Redis.from_url(stack.settings.redis_url)  # bytes, no decoding
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answers = [
                    await client.post(
                        f"{stack.gateway_url}/api/roundtrip",
                        content=json.dumps({"key": k, "value": v}, ensure_ascii=False).encode(),
                        headers={"content-type": "application/json"},
                    )
                    for k, v in UNICODE.items()
                ]
            ids = [a.json()["id"] for a in answers]
            await wait_for(lambda: set(ids) <= {f["id"] for f in frames}, 15)
            stored = {
                k: await raw.get(f"{stack.settings.namespace}msarch:kv:{k}".encode())
                for k in UNICODE
            }
        finally:
            reader.cancel()
            await raw.aclose()
    echoed = {a.json()["key"]: a.json()["value"] for a in answers}
    pushed = {f["key"]: f["value"] for f in frames if f["id"] in ids}
    same_in_redis = all(stored[k] == v.encode() for k, v in UNICODE.items())
    figures(
        pairs=len(UNICODE),
        http=[a.status_code for a in answers],
        echo_equal=echoed == UNICODE,
        websocket_equal=pushed == UNICODE,
        redis_bytes_equal=same_in_redis,
    )
    assert [a.status_code for a in answers] == [202] * len(UNICODE)
    assert echoed == UNICODE
    assert pushed == UNICODE
    assert same_in_redis


async def _status_of_declared_length(base_url: str, path: str, length: int) -> int:
    """POST with a Content-Length over the limit, send no body: the status the server answers."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(status_line.split()[1])
