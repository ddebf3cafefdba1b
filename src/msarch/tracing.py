"""Tracing: one OpenTelemetry TracerProvider per service, W3C trace context in and out of every
hop, and the last traces kept in memory for GET /traces.

A trace starts at the gateway (or at whichever service a request reaches first) and follows the
request: `traceparent` goes upstream in HTTP headers and onward in message headers on both
backends, so the roundtrip, the store, its Redis script, the forward publish and the websocket
push are one trace. Which traces are recorded is decided once, where the trace starts
(MSARCH_TRACE_SAMPLE, a ratio of trace ids); every later hop follows that decision
(parent-based), so an unsampled message costs a header and no span. Finished spans go to a
`TraceRing` (the last MSARCH_TRACE_KEEP traces, grouped by trace id) and, when
MSARCH_OTEL_ENDPOINT is set, over OTLP/HTTP to a collector; without it nothing is sent anywhere.
"""

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from msarch.settings import Settings

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
SPANS_PER_TRACE = 512
"""At most this many spans of one trace are kept (a large sampled batch has one store span per
staged group): the rest are counted, so memory stays bounded however large a trace grows."""
OTLP_TRACES_PATH = "/v1/traces"

_PROPAGATOR = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()
_NO_TRACER = trace.NoOpTracer()


def trace_id_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def span_id_hex(span_id: int) -> str:
    return format(span_id, "016x")


def is_trace_id(text: str) -> bool:
    """32 lowercase hex digits, not all zero: a W3C trace id as /traces takes it."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text) and text != "0" * 32


# -- propagation ---------------------------------------------------------------


def context_from(headers: Mapping[str, Any] | None) -> Context | None:
    """The trace context a caller sent in `headers` (traceparent, tracestate); None without."""
    if not headers or not headers.get(TRACEPARENT):
        return None
    context = _PROPAGATOR.extract(headers)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def traceparent_of(span_context: SpanContext) -> str:
    """The W3C traceparent header of a span: what the next hop continues from."""
    flags = int(span_context.trace_flags) & 0xFF
    return (
        f"00-{trace_id_hex(span_context.trace_id)}-{span_id_hex(span_context.span_id)}-{flags:02x}"
    )


def current_headers() -> dict[str, str]:
    """The current span's traceparent (and tracestate) as headers; empty outside any trace."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def with_current_trace(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """`headers` with the current span's traceparent, unless they carry one already (a requeued
    dead letter goes on in the trace it came from)."""
    combined = dict(headers or {})
    if TRACEPARENT not in combined:
        combined.update(current_headers())
    return combined


def untraced_context() -> Context:
    """A context with fresh, unsampled ids: a traceparent for an answer that records no span
    (/health, /metrics), so that every answer still names a trace."""
    span_context = SpanContext(_IDS.generate_trace_id(), _IDS.generate_span_id(), is_remote=False)
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def recording() -> bool:
    """Inside a sampled trace: what a span that only makes sense as a child (a Redis script
    call) asks before it is started, so background work starts no traces of its own."""
    return trace.get_current_span().is_recording()


# -- the ring of recent traces ---------------------------------------------------


@dataclass
class _Trace:
    spans: list[ReadableSpan] = field(default_factory=list)
    dropped: int = 0


class TraceRing(SpanProcessor):
    """The last `keep` traces that ended a span here, each with up to SPANS_PER_TRACE spans.

    A trace counts as recent from its latest span: a batch that goes on for a minute stays in.
    Spans are held as the SDK made them and turned into JSON only when asked for, so ending a
    span costs a dictionary look-up and an append.
    """

    def __init__(self, keep: int, spans_per_trace: int = SPANS_PER_TRACE) -> None:
        self.keep = keep
        self.spans_per_trace = spans_per_trace
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._lock = threading.Lock()  # on_end may come from any thread that ends a span

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        trace_id = span.context.trace_id
        with self._lock:
            held = self._traces.get(trace_id)
            if held is None:
                held = self._traces[trace_id] = _Trace()
                if len(self._traces) > self.keep:
                    self._traces.popitem(last=False)
            else:
                self._traces.move_to_end(trace_id)
            if len(held.spans) < self.spans_per_trace:
                held.spans.append(span)
            else:
                held.dropped += 1

    def __len__(self) -> int:
        return len(self._traces)

    def spans_of(self, trace_id: str) -> list[dict[str, Any]] | None:
        """The spans kept of one trace (hex id), oldest first; None if it is not kept."""
        with self._lock:
            held = self._traces.get(int(trace_id, 16))
            spans = list(held.spans) if held else None
        return None if spans is None else sorted(map(span_json, spans), key=_start)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest `limit` traces, newest first: id, spans, and how many were left out."""
        with self._lock:
            latest = list(self._traces.items())[-limit:][::-1] if limit > 0 else []
            held = [(tid, list(t.spans), t.dropped) for tid, t in latest]
        return [
            {
                "trace_id": trace_id_hex(tid),
                "spans": sorted(map(span_json, spans), key=_start),
                "dropped_spans": dropped,
            }
            for tid, spans, dropped in held
        ]


def span_json(span: ReadableSpan) -> dict[str, Any]:
    """A span as GET /traces shows it (start in epoch nanoseconds)."""
    context = span.context
    assert context is not None  # a span the SDK ended has its context
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    resource = span.resource.attributes
    return {
        "trace_id": trace_id_hex(context.trace_id),
        "span_id": span_id_hex(context.span_id),
        "parent_id": span_id_hex(span.parent.span_id) if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": resource.get(SERVICE_NAME),
        "instance": resource.get(SERVICE_INSTANCE_ID),
        "start": start,
        "duration_ms": (end - start) / 1e6,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def _start(span: Mapping[str, Any]) -> int:
    start: int = span["start"]
    return start


# -- one service's tracing -------------------------------------------------------


@dataclass
class Tracing:
    """What a service traces with: its provider (resource, sampler, processors), its tracer,
    and the ring GET /traces reads."""

    service: str
    instance: str
    provider: TracerProvider
    ring: TraceRing
    tracer: Tracer

    @classmethod
    def start(cls, service: str, settings: Settings, instance: str | None = None) -> "Tracing":
        """The service's provider: its name and instance id as the resource, parent-based
        sampling at MSARCH_TRACE_SAMPLE, the ring, and OTLP export if MSARCH_OTEL_ENDPOINT."""
        instance = instance or f"{service}-{uuid4().hex[:8]}"
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service, SERVICE_INSTANCE_ID: instance}),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample)),
            shutdown_on_exit=False,  # the service's lifespan shuts it down (and flushes OTLP)
        )
        ring = TraceRing(settings.trace_keep)
        provider.add_span_processor(ring)
        if settings.otel_endpoint:
            # Imported only here: without an endpoint the exporter is neither loaded nor run.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_traces_url(settings.otel_endpoint))
            provider.add_span_processor(BatchSpanProcessor(exporter))
        tracing = cls(service, instance, provider, ring, provider.get_tracer("msarch"))
        _BY_SERVICE[service] = tracing
        return tracing

    def shutdown(self) -> None:
        """Export what is still pending, then stop the exporter's thread."""
        self.provider.shutdown()


_BY_SERVICE: dict[str, Tracing] = {}
"""The Tracing each service of this process started: the tracer of code that knows only its
service's name (the Redis scripts, registered per service like their metrics)."""


def tracer_of(service: str) -> Tracer:
    """The tracer of `service` in this process; one that records nothing if it has none."""
    tracing = _BY_SERVICE.get(service)
    return tracing.tracer if tracing is not None else _NO_TRACER


def otlp_traces_url(endpoint: str) -> str:
    """MSARCH_OTEL_ENDPOINT as the OTLP/HTTP traces URL: a bare collector address
    (http://collector:4318) gets the standard /v1/traces path."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(OTLP_TRACES_PATH) else endpoint + OTLP_TRACES_PATH
