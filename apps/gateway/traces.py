"""GET /api/traces/{trace_id}: one trace, its spans gathered from every instance of every service.

Each instance keeps the spans it recorded (GET /traces/{trace_id} on it, msarch.tracing); the
gateway asks every instance discovery lists, all at once, and puts together what they answer
with its own spans, oldest first. An instance that does not answer in time is named in
"unreachable": the trace is shown without its spans rather than not at all.
"""

import asyncio
from typing import Any

import aiohttp
from fastapi import APIRouter, Depends

from apps.gateway.api_key import require_api_key
from apps.gateway.deps import ClientDep, TracingDep, UpstreamsDep
from apps.gateway.upstreams import Upstreams
from msarch.problems import Problem
from msarch.service import checked_trace_id
from msarch.settings import SERVICES

router = APIRouter(tags=["traces"])

ASK_TIMEOUT_S = 2.0


@router.get(
    "/api/traces/{trace_id}",
    summary="One trace: the spans of every service and instance, oldest first",
    dependencies=[Depends(require_api_key)],
    responses={404: {"description": "no instance keeps a span of this trace"}},
)
async def one_trace(
    trace_id: str, tracing: TracingDep, upstreams: UpstreamsDep, client: ClientDep
) -> dict[str, Any]:
    checked_trace_id(trace_id)
    asked = _instances(upstreams)
    answers = await asyncio.gather(*(_spans_at(client, base, trace_id) for base in asked))
    spans = list(tracing.ring.spans_of(trace_id) or [])
    unreachable = []
    for base, found in zip(asked, answers, strict=True):
        if found is None:
            unreachable.append(base)
        else:
            spans.extend(found)
    if not spans:
        raise Problem(404, "Not Found", f"no instance keeps a span of trace {trace_id}")
    unique = {span["span_id"]: span for span in spans}  # two routes to one instance: once
    ordered = sorted(unique.values(), key=lambda span: int(span["start"]))
    return {
        "trace_id": trace_id,
        "services": sorted({str(span["service"]) for span in ordered}),
        "spans": ordered,
        "unreachable": unreachable,
    }


def _instances(upstreams: Upstreams) -> list[str]:
    """The base URL of every instance of every service behind the gateway, once each."""
    found = [
        base
        for service in SERVICES
        if service != "gateway"
        for base in upstreams.instances(service)
    ]
    return list(dict.fromkeys(found))


async def _spans_at(
    client: aiohttp.ClientSession, base: str, trace_id: str
) -> list[dict[str, Any]] | None:
    """An instance's spans of the trace ([] if it keeps none); None if it did not answer."""
    try:
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
        async with client.get(f"{base}/traces/{trace_id}", timeout=timeout) as answer:
            if answer.status == 404:
                return []
            if answer.status != 200:
                return None
            body = await answer.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    spans = body.get("spans") if isinstance(body, dict) else None
    return [span for span in spans if isinstance(span, dict)] if isinstance(spans, list) else None
