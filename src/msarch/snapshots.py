"""Snapshots of the projections, and trimming the log up to what one covers.

A snapshot is the projections as of one event: the previous snapshot (or
nothing) with the log's events after it applied, written into a namespace of
its own. It is built from the log, not copied from the live keys, so it is
exact however busy the system is, and it becomes the latest only once it is
whole (one HSET of its record). Replay starts from it; a trim removes only
events it covers, so replay from the latest snapshot plus the kept log always
gives the live projections.
"""

import contextlib
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis.exceptions import LockError

from msarch.events import event_position
from msarch.replay import Report, rebuild
from msarch.storage import Store
from msarch.storage.clock import iso_now, now_ms

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LOCK_S = 900.0
"""How long a snapshot may hold its lock: a process killed while it held it blocks no longer."""


class LogNotCovered(Exception):
    """What was asked would lose events that no snapshot holds."""


class SnapshotBusy(Exception):
    """Another snapshot is being taken (by `msarch snapshot` or a store instance)."""


@dataclass(frozen=True)
class Snapshot:
    event_id: str
    """The last event the snapshot includes."""
    namespace: str
    """Where its projections are (a namespace of their own, next to the live one)."""
    created_at: str
    events_applied: int
    """Events applied on top of the previous snapshot to make it."""
    seconds: float


@dataclass(frozen=True)
class Trimmed:
    removed: int
    newest_removed: str | None
    first_kept: str
    """The bound used: the one asked for, or the latest snapshot's, if that came first."""
    limited_by_snapshot: bool


async def latest(store: Store) -> Snapshot | None:
    record = cast(dict[str, str], await store.redis.hgetall(store.keys.snapshot))
    if not record:
        return None
    return Snapshot(
        event_id=record["event_id"],
        namespace=record["namespace"],
        created_at=record["created_at"],
        events_applied=int(record["events_applied"]),
        seconds=float(record["seconds"]),
    )


async def take(store: Store) -> Snapshot:
    """Snapshot the projections as of the log's last event; LogNotCovered when the log was
    trimmed past what no snapshot holds (it cannot be rebuilt then), SnapshotBusy when
    another snapshot is under way (two would drop the one the other copies from)."""
    lock = store.redis.lock(store.keys.snapshot_lock, timeout=LOCK_S)
    if not await lock.acquire(blocking=False):
        raise SnapshotBusy("another snapshot is being taken; try again when it is done")
    try:
        return await _take(store)
    finally:
        with contextlib.suppress(LockError):  # held past LOCK_S: it is no longer ours
            await lock.release()


async def _take(store: Store) -> Snapshot:
    started = time.perf_counter()
    last = await store.last_event_id()
    previous = await latest(store)
    if last is None or (previous and event_position(last) <= event_position(previous.event_id)):
        if previous is None:
            raise LogNotCovered("the event log is empty: there is nothing to snapshot")
        return previous
    target = store.in_namespace(f"{store.namespace}snapshot-{last}-")
    await target.projections.drop()  # what an interrupted run of this left
    report = Report()
    try:
        after = await _start(store, previous, target)
        await rebuild(store, target, report, after=after, until=last)
        if report.differences:
            raise LogNotCovered("; ".join(report.differences))
    except BaseException:
        await target.projections.drop()
        raise
    snapshot = Snapshot(
        event_id=last,
        namespace=target.namespace,
        created_at=iso_now(),
        events_applied=sum(report.events.values()),
        seconds=round(time.perf_counter() - started, 3),
    )
    await store.redis.hset(store.keys.snapshot, mapping=_record(snapshot))
    if previous is not None:
        await store.in_namespace(previous.namespace).projections.drop()
    return snapshot


async def restore_into(store: Store, target: Store) -> str | None:
    """Put the latest snapshot's projections into the empty namespace of `target`; the id of
    the last event it includes, or None without one (replay then starts at the first event,
    if the log still has it: LogNotCovered otherwise)."""
    snapshot = await latest(store)
    return await _start(store, snapshot, target)


async def trim(store: Store, before: str) -> Trimmed:
    """Remove the log's events before `before`, but none after the latest snapshot."""
    snapshot = await latest(store)
    if snapshot is None:
        raise LogNotCovered("no snapshot covers any event: take one first (msarch snapshot)")
    covered = _successor(snapshot.event_id)
    first_kept = min(before, covered, key=event_position)
    removed, newest = await store.trim_events_before(first_kept)
    return Trimmed(removed, newest, first_kept, limited_by_snapshot=first_kept != before)


def keep_bound(keep: str, now: int | None = None) -> str:
    """The first event id to keep for `--keep 7d` (s, m, h or d): events older are trimmed."""
    match = _DURATION.fullmatch(keep.strip())
    if match is None:
        raise ValueError(f"a duration is a number and s, m, h or d (90m, 7d), not {keep!r}")
    return kept_since(int(match[1]) * _UNIT_S[match[2]], now)


def kept_since(keep_s: float, now: int | None = None) -> str:
    """The first event id to keep when events older than `keep_s` go."""
    return f"{max(0, (now_ms() if now is None else now) - int(keep_s * 1000))}-0"


async def _start(store: Store, snapshot: Snapshot | None, target: Store) -> str | None:
    if snapshot is None:
        if gap := await store.gap_after("0-0"):
            raise LogNotCovered(f"the log was trimmed and no snapshot holds it: {gap.detail}")
        return None
    await store.in_namespace(snapshot.namespace).projections.copy_into(target.projections)
    return snapshot.event_id


def _successor(event_id: str) -> str:
    ms, seq = event_position(event_id)
    return f"{ms + 1}-0" if seq == 2**64 - 1 else f"{ms}-{seq + 1}"


def _record(snapshot: Snapshot) -> dict[Any, str]:
    return {name: str(value) for name, value in asdict(snapshot).items()}
