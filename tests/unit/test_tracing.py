"""msarch.tracing: the ring of recent traces (bounded, grouped), sampling, propagation, and the
traceparent every HTTP answer carries (msarch.observability.RequestContext)."""

import json
import logging

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from msarch.logs import JsonFormatter
from msarch.observability import current_trace_id, message_trace, request_id
from msarch.problems import Problem
from msarch.service import create_app
from msarch.settings import Settings
from msarch.tracing import (
    TraceRing,
    Tracing,
    context_from,
    otlp_traces_url,
    traceparent_of,
    with_current_trace,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(settings: Settings, memory: InMemorySpanExporter, service: str = "test") -> Tracing:
    """A service's Tracing, with the SDK's in-memory exporter beside its ring."""
    tracing = Tracing.start(service, settings.model_copy(update={"trace_sample": 1.0}))
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    return tracing


def sampled(traceparent: str) -> bool:
    """The sampled bit of a traceparent's flags (the SDK sets the "random" bit beside it)."""
    return bool(int(traceparent.rsplit("-", 1)[1], 16) & 1)


def make_traces(tracer: Tracer, count: int, spans_each: int = 1) -> list[str]:
    """`count` traces of `spans_each` spans (a root and its children); their ids, in order."""
    ids = []
    for n in range(count):
        with tracer.start_as_current_span(f"root {n}") as root:
            for child in range(spans_each - 1):
                with tracer.start_as_current_span(f"child {n}.{child}"):
                    pass
        ids.append(format(root.get_span_context().trace_id, "032x"))
    return ids


def test_the_ring_keeps_the_last_traces_only() -> None:
    ring = TraceRing(keep=3)
    provider = TracerProvider()
    provider.add_span_processor(ring)
    ids = make_traces(provider.get_tracer("t"), 5)
    assert len(ring) == 3
    assert [t["trace_id"] for t in ring.recent()] == ids[:1:-1], "newest first, the oldest gone"
    assert ring.spans_of(ids[0]) is None
    assert ring.recent(limit=1)[0]["trace_id"] == ids[-1]


def test_the_ring_groups_spans_by_trace_with_their_parents() -> None:
    ring = TraceRing(keep=10)
    provider = TracerProvider()
    provider.add_span_processor(ring)
    first, second = make_traces(provider.get_tracer("t"), 2, spans_each=3)
    spans = ring.spans_of(first)
    assert spans is not None
    assert {s["trace_id"] for s in spans} == {first}
    assert [s["name"] for s in spans] == ["root 0", "child 0.0", "child 0.1"], "by start"
    root = spans[0]
    assert root["parent_id"] is None
    assert [s["parent_id"] for s in spans[1:]] == [root["span_id"]] * 2
    assert all(s["duration_ms"] >= 0 for s in spans)
    other = ring.spans_of(second)
    assert other is not None
    assert {s["trace_id"] for s in other} == {second}


def test_a_trace_that_grows_stays_recent_and_bounded() -> None:
    ring = TraceRing(keep=2, spans_per_trace=3)
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    provider.add_span_processor(ring)
    with tracer.start_as_current_span("long") as long_running:
        for n in range(5):
            with tracer.start_as_current_span(f"part {n}"):
                pass
        with tracer.start_as_current_span("other", context=Context()):
            pass  # another trace ended meanwhile
    long_id = format(long_running.get_span_context().trace_id, "032x")
    make_traces(tracer, 1)
    kept = {t["trace_id"]: t for t in ring.recent()}
    assert long_id in kept, "its last span made it recent again"
    assert len(kept[long_id]["spans"]) == 3
    assert kept[long_id]["dropped_spans"] == 3, "the other spans were counted, not kept"


def test_the_ring_holds_what_the_sdk_exported(
    unit_settings: Settings, memory: InMemorySpanExporter
) -> None:
    tracing = traced(unit_settings, memory)
    (trace_id,) = make_traces(tracing.tracer, 1, spans_each=4)
    exported = {format(s.context.span_id, "016x") for s in memory.get_finished_spans() if s.context}
    kept = tracing.ring.spans_of(trace_id)
    assert kept is not None
    assert {s["span_id"] for s in kept} == exported
    assert {s["service"] for s in kept} == {"test"}
    assert {s["instance"] for s in kept} == {tracing.instance}


def test_sampling_off_records_nothing_and_still_names_a_trace(
    unit_settings: Settings, memory: InMemorySpanExporter
) -> None:
    tracing = Tracing.start("test", unit_settings.model_copy(update={"trace_sample": 0.0}))
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracing.tracer.start_as_current_span("unsampled") as span:
        headers = with_current_trace(None)
    assert memory.get_finished_spans() == ()
    assert len(tracing.ring) == 0
    assert span.get_span_context().is_valid
    assert not sampled(headers["traceparent"]), "propagated, marked not sampled"


def test_a_sampled_caller_is_followed_whatever_the_ratio(
    unit_settings: Settings, memory: InMemorySpanExporter
) -> None:
    tracing = Tracing.start("test", unit_settings.model_copy(update={"trace_sample": 0.0}))
    tracing.provider.add_span_processor(SimpleSpanProcessor(memory))
    parent = context_from({"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    with tracing.tracer.start_as_current_span("child", context=parent) as span:
        assert traceparent_of(span.get_span_context()).startswith(f"00-{CALLER_TRACE}-")
    (finished,) = memory.get_finished_spans()
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == CALLER_SPAN


def test_a_traceparent_already_there_is_kept(unit_settings: Settings) -> None:
    tracing = Tracing.start("test", unit_settings.model_copy(update={"trace_sample": 1.0}))
    theirs = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "x": "y"}
    with tracing.tracer.start_as_current_span("requeue"):
        assert with_current_trace(theirs) == theirs
        assert with_current_trace({"x": "y"})["traceparent"] != theirs["traceparent"]
    assert with_current_trace(None) == {}, "outside any trace: nothing to add"


def test_no_traceparent_or_a_broken_one_is_no_trace() -> None:
    assert context_from(None) is None
    assert context_from({"other": "x"}) is None
    assert context_from({"traceparent": "00-not-a-trace-01"}) is None


def test_the_otlp_endpoint_gets_the_traces_path() -> None:
    assert otlp_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otlp_traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_log_lines_carry_the_trace_and_request_id(unit_settings: Settings) -> None:
    formatter = JsonFormatter("test")
    record = logging.LogRecord("msarch.test", logging.INFO, "", 0, "handled", (), None)
    assert "trace_id" not in json.loads(formatter.format(record))
    tracing = Tracing.start("test", unit_settings.model_copy(update={"trace_sample": 0.0}))
    rid = request_id.set("rid-1")
    try:
        with tracing.tracer.start_as_current_span("handling") as span:
            entry = json.loads(formatter.format(record))
    finally:
        request_id.reset(rid)
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["request_id"] == "rid-1"
    token = message_trace.set(f"00-{CALLER_TRACE}-{CALLER_SPAN}-00")  # a batch item's
    try:
        assert current_trace_id() == CALLER_TRACE
    finally:
        message_trace.reset(token)


def _app(tracing: Tracing) -> FastAPI:
    app = create_app("test", tracing)

    @app.get("/ok/{name}")
    async def ok(name: str) -> dict[str, str]:
        return {"name": name}

    @app.get("/teapot")
    async def teapot() -> None:
        raise Problem(418, "I'm a teapot", "short and stout")

    return app


async def test_every_answer_carries_a_traceparent_of_its_span(
    unit_settings: Settings, memory: InMemorySpanExporter
) -> None:
    tracing = traced(unit_settings, memory)
    transport = httpx.ASGITransport(app=_app(tracing))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = [
            await client.get("/ok/a"),
            await client.get("/teapot"),
            await client.get("/nowhere"),
            await client.get("/health"),
        ]
        caller = await client.get(
            "/ok/b", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
        )
    assert [a.status_code for a in answers] == [200, 418, 404, 404]
    spans = {format(s.context.span_id, "016x"): s for s in memory.get_finished_spans() if s.context}
    for answer in answers[:3]:
        _, trace_id, span_id, _flags = answer.headers["traceparent"].split("-")
        assert sampled(answer.headers["traceparent"])
        assert span_id in spans, f"{answer.url}: the answer names its own server span"
    assert spans[answers[0].headers["traceparent"].split("-")[2]].name == "GET /ok/{name}"
    assert answers[3].headers["traceparent"].split("-")[2] not in spans, "probes: no span"
    _, trace_id, span_id, _ = caller.headers["traceparent"].split("-")
    assert trace_id == CALLER_TRACE, "the caller's trace goes on"
    parent = spans[span_id].parent
    assert parent is not None
    assert format(parent.span_id, "016x") == CALLER_SPAN


async def test_traces_routes_show_the_ring(
    unit_settings: Settings, memory: InMemorySpanExporter
) -> None:
    tracing = traced(unit_settings, memory)
    transport = httpx.ASGITransport(app=_app(tracing))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/ok/x")
        trace_id = answer.headers["traceparent"].split("-")[1]
        recent = (await client.get("/traces")).json()
        one = await client.get(f"/traces/{trace_id}")
        unknown = await client.get(f"/traces/{'1' * 32}")
        invalid = await client.get("/traces/nope")
    assert recent["service"] == "test"
    assert recent["instance"] == tracing.instance
    assert [t["trace_id"] for t in recent["traces"]] == [trace_id], "the views are not traced"
    assert one.status_code == 200
    (span,) = one.json()["spans"]
    assert span["name"] == "GET /ok/{name}"
    assert span["attributes"]["http.response.status_code"] == 200
    assert unknown.status_code == 404
    assert invalid.status_code == 422
