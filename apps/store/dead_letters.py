"""The dead letters, for operators: list them, send them back onto their channel, drop them;
and their count per channel in /metrics.

On the store service, behind the gateway's /api/dead (and its API key when one is set). A
dead letter's id is the handle its backend gives it (bus.base.DeadLetter).
"""

import asyncio
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from prometheus_client import Gauge
from pydantic import BaseModel, ConfigDict, Field

from msarch import channels
from msarch.bus import PublishError
from msarch.bus.base import DeadLetter
from msarch.channels import Channel
from msarch.problems import Problem
from msarch.service import Runtime, RuntimeDep

log = logging.getLogger("msarch.store.dead_letters")
router = APIRouter(prefix="/api/dead", tags=["dead letters"])
COUNT_EVERY_S = 10.0
COUNT_TIMEOUT_S = 5.0
"""A count the broker does not answer in time (a node cut off) waits for the next round."""
DEAD_LETTERS = Gauge(
    "msarch_dead_letters", "Messages held in a channel's dead letters", ["channel"]
)

ChannelName = Literal["event", "forward_roundtrip", "batch", "batch_reply"]
_BY_NAME = {channel.name: channel for channel in channels.ALL}


class DeadLetterOut(BaseModel):
    id: str
    channel: str
    reason: str
    dead_at: str | None
    deliveries: int | None
    message_id: str | None
    preview: str = Field(description="the body's first 120 characters")

    @classmethod
    def of(cls, letter: DeadLetter) -> "DeadLetterOut":
        return cls(
            id=letter.id,
            channel=letter.channel,
            reason=letter.reason,
            dead_at=letter.dead_at,
            deliveries=letter.deliveries,
            message_id=letter.message_id,
            preview=letter.preview(),
        )


class DeadLetters(BaseModel):
    counts: dict[str, int]
    """Dead letters held, per channel."""
    letters: list[DeadLetterOut]


class Chosen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, max_length=10_000)
    all: bool = Field(default=False, description="every dead letter (of `channel`, if given)")
    channel: ChannelName | None = None


class Done(BaseModel):
    ids: list[str]


@router.get("", summary="Dead letters with their reasons, oldest first")
async def list_dead(
    runtime: RuntimeDep,
    channel: ChannelName | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetters:
    bus, chosen = runtime.bus, _channels(channel)
    counts = {c.name: await bus.dead_letter_count(c) for c in channels.ALL}
    letters = [letter for c in chosen for letter in await bus.dead_letters(c, limit)]
    return DeadLetters(counts=counts, letters=[DeadLetterOut.of(d) for d in letters[:limit]])


@router.post("/requeue", summary="Send dead letters back onto their channel, original ids kept")
async def requeue(body: Chosen, runtime: RuntimeDep) -> Done:
    ids = _ids(body)
    try:
        done = [i for c in _channels(body.channel) for i in await runtime.bus.requeue_dead(c, ids)]
    except PublishError as exc:  # what was sent back before it stays sent; the rest stays dead
        raise Problem(503, "Service Unavailable", str(exc), headers={"Retry-After": "2"}) from exc
    return Done(ids=_all_found(ids, done))


@router.post("/drop", summary="Remove dead letters for good")
async def drop(body: Chosen, runtime: RuntimeDep) -> Done:
    if body.all:
        raise Problem(422, "Invalid input", "drop takes the ids to drop, not all")
    ids = _ids(body)
    done = [i for c in _channels(body.channel) for i in await runtime.bus.drop_dead(c, ids or [])]
    return Done(ids=_all_found(ids, done))


def _channels(name: str | None) -> list[Channel]:
    return list(channels.ALL) if name is None else [_BY_NAME[name]]


def _ids(body: Chosen) -> list[str] | None:
    if body.all == bool(body.ids):
        raise Problem(422, "Invalid input", "give the ids of the dead letters, or all: true")
    return None if body.all else body.ids


def _all_found(asked: list[str] | None, done: list[str]) -> list[str]:
    if asked is not None and (missing := sorted(set(asked) - set(done))):
        raise Problem(
            404, "Not Found", f"no dead letter {', '.join(missing)}", done=done, missing=missing
        )
    return done


async def count_dead_letters(runtime: Runtime) -> None:
    """Keep msarch_dead_letters{channel} current (every COUNT_EVERY_S)."""
    while True:
        try:
            for channel in channels.ALL:
                async with asyncio.timeout(COUNT_TIMEOUT_S):
                    count = await runtime.bus.dead_letter_count(channel)
                DEAD_LETTERS.labels(channel=channel.name).set(count)
        except Exception:  # the broker is away: the figures wait for it, the service does not
            log.debug("counting dead letters failed; will try again", exc_info=True)
        await asyncio.sleep(COUNT_EVERY_S)
