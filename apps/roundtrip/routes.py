"""POST /api/roundtrip: accept a key/value, publish it, answer once the broker confirmed."""

from fastapi import APIRouter
from pydantic import BaseModel

from msarch import channels
from msarch.bus import PublishError
from msarch.messages import KeyValue, KeyValueIn
from msarch.observability import request_id
from msarch.problems import Problem
from msarch.service import RuntimeDep

router = APIRouter(prefix="/api", tags=["roundtrip"])

PUBLISH_TIMEOUT_S = 5.0
"""A broker that does not confirm in time is a 503 from here, well before the gateway's
10 s: a client learns of an outage at once instead of from a timeout."""


class Accepted(BaseModel):
    id: str
    key: str
    value: str


@router.post("/roundtrip", status_code=202, summary="Send a key/value on its roundtrip")
async def roundtrip(body: KeyValueIn, runtime: RuntimeDep) -> Accepted:
    kv = KeyValue(key=body.key, value=body.value)
    try:
        await runtime.bus.publish(
            channels.EVENT,
            kv,
            message_id=str(kv.id),
            correlation_id=request_id.get(),
            timeout_s=PUBLISH_TIMEOUT_S,
        )
    except PublishError as exc:
        raise Problem(
            503,
            "Service Unavailable",
            f"the broker did not confirm the message: {exc}",
            headers={"Retry-After": "2"},
        ) from exc
    return Accepted(id=str(kv.id), key=kv.key, value=kv.value)
