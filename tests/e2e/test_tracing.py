"""Traces across every hop, on the real brokers and Redis: the trace id a POST answers with is
the one its websocket frame carries, and GET /api/traces/{id} puts together the spans of every
service, each linked to its parent."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from msarch.settings import SERVICES
from msarch.testing.stack import Stack, StackFactory, wait_for, ws_frames

pytestmark = pytest.mark.e2e

Span = dict[str, Any]


def trace_of(answer: httpx.Response) -> tuple[str, bool]:
    """The trace id of an answer's traceparent, and whether it is sampled."""
    version, trace_id, span_id, flags = answer.headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16), answer.headers["traceparent"]
    return trace_id, bool(int(flags, 16) & 1)


async def spans_when(
    client: httpx.AsyncClient, stack: Stack, trace_id: str, wanted: set[str]
) -> list[Span]:
    """The trace's spans once every span name in `wanted` is among them."""
    found: list[Span] = []

    async def complete() -> bool:
        answer = await client.get(f"{stack.gateway_url}/api/traces/{trace_id}")
        if answer.status_code != 200:
            return False
        found[:] = answer.json()["spans"]
        return wanted <= {span["name"] for span in found}

    await wait_for(complete, 20, 0.2, what=f"spans {sorted(wanted)} of trace {trace_id}")
    return found


def linked(spans: list[Span]) -> dict[str, Span]:
    """The spans by id, once checked to form one tree: one root, every parent in the trace."""
    by_id = {span["span_id"]: span for span in spans}
    roots = [span for span in spans if span["parent_id"] is None]
    assert [root["service"] for root in roots] == ["gateway"], roots
    orphans = [span["name"] for span in spans if span["parent_id"] not in (None, *by_id)]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    return by_id


def ancestry(by_id: dict[str, Span], span: Span) -> list[str]:
    """'service: name' of a span and each of its ancestors up to the root."""
    chain = []
    current: Span | None = span
    while current is not None:
        chain.append(f"{current['service']}: {current['name']}")
        current = by_id.get(current["parent_id"] or "")
    return chain


def named(spans: list[Span], name: str) -> Span:
    matches = [span for span in spans if span["name"] == name]
    assert matches, f"no span {name!r} in {[s['name'] for s in spans]}"
    return matches[0]


@asynccontextmanager
async def live_frames(stack: Stack, after: str = "") -> AsyncIterator[list[dict[str, Any]]]:
    """The frames a websocket client of the stack gets while the block runs (resuming from
    the log `after` an event id, when given)."""
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    url = f"{stack.ws_url}?after={after}" if after else stack.ws_url
    reader = asyncio.create_task(ws_frames(url, frames, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield frames
    finally:
        reader.cancel()


async def roundtrip_and_frame(
    client: httpx.AsyncClient, stack: Stack, frames: list[dict[str, Any]], key: str
) -> tuple[httpx.Response, dict[str, Any]]:
    """POST a roundtrip (answered 202), and its frame once the client has it."""
    posted = await client.post(
        f"{stack.gateway_url}/api/roundtrip", json={"key": key, "value": "v"}
    )
    assert posted.status_code == 202, posted.text
    kv_id = posted.json()["id"]
    await wait_for(lambda: any(f["id"] == kv_id for f in frames), 10)
    return posted, next(f for f in frames if f["id"] == kv_id)


async def test_a_roundtrip_and_a_batch_are_each_one_trace(stack_with: StackFactory) -> None:
    async with stack_with(trace_sample=1.0) as stack, live_frames(stack) as frames:
        ns = stack.settings.namespace
        async with httpx.AsyncClient(timeout=30) as client:
            posted, frame = await roundtrip_and_frame(client, stack, frames, "traced")
            trace_id, sampled = trace_of(posted)
            assert sampled
            assert frame["trace_id"] == trace_id, "the frame names the POST's trace"
            async with live_frames(stack, after="0-0") as replayed:
                await wait_for(lambda: any(f["id"] == frame["id"] for f in replayed), 10)
            [again] = [f for f in replayed if f["id"] == frame["id"]]
            assert again["trace_id"] == trace_id, "the frame replayed from the log names it too"

            push = "websocket push"
            spans = await spans_when(
                client, stack, trace_id, {push, f"{ns}forward_roundtrip process"}
            )
            by_id = linked(spans)
            assert {s["service"] for s in spans} >= {
                "gateway",
                "roundtrip",
                "store",
                "websocket",
            }
            assert ancestry(by_id, named(spans, push)) == [
                "websocket: websocket push",
                f"websocket: {ns}forward_roundtrip process",
                f"store: {ns}forward_roundtrip publish",
                f"store: {ns}event process",
                f"roundtrip: {ns}event publish",
                "roundtrip: POST /api/roundtrip",
                "gateway: POST roundtrip",
                "gateway: POST /api/{path:path}",
            ]
            script = named(spans, "redis store_key_value")
            assert ancestry(by_id, script)[1] == f"store: {ns}event process"

            batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 5})
            assert batch.status_code == 200, batch.text
            batch_trace, _ = trace_of(batch)
            spans = await spans_when(
                client, stack, batch_trace, {"batch stage", f"{ns}batch_reply process"}
            )
            by_id = linked(spans)
            assert {s["service"] for s in spans} >= {"gateway", "batch", "store"}
            stage = named(spans, "batch stage")
            assert ancestry(by_id, stage)[1:3] == [
                f"batch: {ns}batch publish",
                "batch: POST /api/batch",
            ]
            staged = [s for s in spans if s["name"] == "batch stage"]
            assert sum(s["attributes"]["msarch.items"] for s in staged) == 5, "each item once"
            assert ancestry(by_id, named(spans, "redis stage_items"))[1] == "store: batch stage"
            assert not [s for s in spans if s["name"] == f"{ns}batch process"], "no item spans"


async def test_errors_answer_a_traceparent_too(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{stack.gateway_url}/api/roundtrip", json={"key": ""}),
            await client.get(f"{stack.gateway_url}/api/nowhere"),
            await client.get(f"{stack.gateway_url}/api/traces/not-a-trace"),
            await client.get(f"{stack.gateway_url}/health"),
        ]
    assert [a.status_code for a in answers] == [422, 404, 422, 200]
    for answer in answers:
        trace_of(answer)


async def test_with_sampling_off_a_roundtrip_names_its_trace_and_records_none(
    stack_with: StackFactory,
) -> None:
    async with (
        stack_with(trace_sample=0.0) as stack,
        live_frames(stack) as frames,
        httpx.AsyncClient(timeout=30) as client,
    ):
        posted, frame = await roundtrip_and_frame(client, stack, frames, "dark")
        trace_id, sampled = trace_of(posted)
        assert not sampled
        assert frame["trace_id"] == trace_id
        batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 3})
        assert batch.status_code == 200
        gathered = await client.get(f"{stack.gateway_url}/api/traces/{trace_id}")
        assert gathered.status_code == 404
        for service in SERVICES:
            recent = await client.get(f"{stack.settings.url_of(service)}/traces")
            assert recent.json()["traces"] == [], f"{service} recorded spans"
