"""Snapshots and trimming on the real Redis: replay from the latest snapshot and the kept log
gives what replay of the whole log gives, wherever Hypothesis snapshots and trims."""

from dataclasses import dataclass
from typing import Any, cast
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from msarch.messages import BatchStatus, KeyValue, item_of
from msarch.replay import Report, compare, rebuild
from msarch.snapshots import (
    LogNotCovered,
    SnapshotBusy,
    keep_bound,
    latest,
    restore_into,
    take,
    trim,
)
from msarch.storage import Store
from tests.utils.fixture_api import StoreFactory


@dataclass(frozen=True)
class Put:
    key: int
    value: str


@dataclass(frozen=True)
class Batch:
    size: int
    staged: int
    """Items staged: all of them commits the batch, fewer leaves it assembling."""
    failed: bool


@dataclass(frozen=True)
class Snap:
    pass


@dataclass(frozen=True)
class Trim:
    at: float
    """Where in the log as it is now: 0 its first event, 1 past its last."""


Op = Put | Batch | Snap | Trim

operations = st.lists(
    st.one_of(
        st.builds(Put, st.integers(0, 5), st.sampled_from(["a", "b", "é"])),
        st.builds(Batch, st.integers(1, 4), st.integers(0, 4), st.booleans()),
        st.just(Snap()),
        st.builds(Trim, st.floats(0, 1)),
    ),
    max_size=14,
)


async def _apply(store: Store, op: Op) -> None:
    if isinstance(op, Put):
        await store.store_key_value(KeyValue(key=f"k{op.key}", value=op.value))
    elif isinstance(op, Batch):
        batch_id = uuid4()
        await store.request_batch(batch_id, op.size)
        items = [item_of(batch_id, index, op.size) for index in range(min(op.staged, op.size))]
        if items:
            await store.stage_items(items)
        if op.failed:
            await store.fail_batch(batch_id, BatchStatus.TimeoutExceeded, "given up")
    elif isinstance(op, Snap):
        try:
            await take(store)
        except LogNotCovered:  # nothing logged yet
            assert await store.last_event_id() is None
    else:
        ids = [event.id for event in await store.read_events(None, 10_000)]
        if ids:
            bound = ids[min(int(op.at * len(ids)), len(ids) - 1)]
            try:
                await trim(store, bound)
            except LogNotCovered:  # no snapshot yet: nothing may go
                assert await latest(store) is None


async def _archive(live: Store, whole: Store, after: str | None) -> str | None:
    """Copy the log's entries after `after` into `whole`'s log, ids and all."""
    start = f"({after}" if after else "-"
    entries = cast(
        list[tuple[str, dict[Any, Any]]], await live.redis.xrange(live.keys.events, start)
    )
    for entry_id, fields in entries:
        await whole.redis.xadd(whole.keys.events, fields, id=entry_id)
        after = entry_id
    return after


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
@example(ops=[Put(0, "a"), Snap(), Put(1, "b"), Batch(2, 2, False), Trim(1.0)])
@example(ops=[Batch(3, 1, False), Snap(), Batch(2, 2, False), Trim(0.9), Snap(), Trim(1.0)])
async def test_replay_from_the_snapshot_and_the_kept_log_equals_replay_of_the_whole_log(
    fresh_store: StoreFactory, ops: list[Op]
) -> None:
    live, whole, from_snapshot, from_whole = (fresh_store() for _ in range(4))
    archived = None
    for op in ops:
        if isinstance(op, Trim):  # what the trim may take is kept aside first
            archived = await _archive(live, whole, archived)
        await _apply(live, op)
    await _archive(live, whole, archived)

    expected, got = Report(), Report()
    await rebuild(whole, from_whole, expected)
    after = await restore_into(live, from_snapshot)
    await rebuild(live, from_snapshot, got, after=after)
    assert not expected.differences
    assert not got.differences
    for reference in (from_whole, live):
        report = Report()
        await compare(reference, from_snapshot, report)
        assert report.differences == []


async def test_no_trim_without_a_snapshot_and_none_past_the_latest(store: Store) -> None:
    with pytest.raises(LogNotCovered, match="the event log is empty"):
        await take(store)
    for index in range(4):
        await store.store_key_value(KeyValue(key=f"k{index}", value="v"))
    ids = [event.id for event in await store.read_events()]
    with pytest.raises(LogNotCovered, match="take one first"):
        await trim(store, ids[3])
    first = await take(store)
    assert (first.event_id, first.events_applied) == (ids[3], 4)
    assert await take(store) == first, "nothing new: the same snapshot"
    await store.store_key_value(KeyValue(key="after-the-snapshot", value="v"))
    done = await trim(store, "99999999999999-0")
    assert (done.removed, done.newest_removed, done.limited_by_snapshot) == (4, ids[3], True)
    second = await take(store)
    assert second.events_applied == 1, "the second snapshot starts from the first"
    assert not [k async for k in store.redis.scan_iter(match=f"{first.namespace}*")]


async def test_a_trimmed_log_without_a_snapshot_does_not_replay(store: Store) -> None:
    for index in range(3):
        await store.store_key_value(KeyValue(key=f"k{index}", value="v"))
    ids = [event.id for event in await store.read_events()]
    await store.trim_events_before(ids[1])  # by the store itself, past any snapshot
    with pytest.raises(LogNotCovered, match="no snapshot holds it"):
        await restore_into(store, store.in_namespace(f"{store.namespace}scratch-"))


@pytest.mark.parametrize(
    ("keep", "bound"),
    [
        ("90m", f"{10**9 - 5_400_000}-0"),
        ("7d", "395200000-0"),
        ("30d", "0-0"),
        ("0s", f"{10**9}-0"),
    ],
)
def test_keep_is_a_duration_back_from_now(keep: str, bound: str) -> None:
    assert keep_bound(keep, now=10**9) == bound


@pytest.mark.parametrize("keep", ["", "7", "7w", "-1d", "1.5h"])
def test_a_duration_that_is_not_one_is_refused(keep: str) -> None:
    with pytest.raises(ValueError, match="a duration is a number"):
        keep_bound(keep)


async def test_one_snapshot_at_a_time(store: Store) -> None:
    await store.store_key_value(KeyValue(key="k", value="v"))
    other = store.redis.lock(store.keys.snapshot_lock, timeout=30)
    assert await other.acquire(blocking=False)
    with pytest.raises(SnapshotBusy):
        await take(store)
    await other.release()
    assert (await take(store)).events_applied == 1
    assert not await store.redis.exists(store.keys.snapshot_lock), "released after"
