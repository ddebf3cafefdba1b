"""msarch.storage on the real Redis (db 9, a private namespace): the log and its projections."""

import json
from typing import cast
from uuid import uuid4

import pytest

from msarch.batch_rules import Outcome
from msarch.events import EventType
from msarch.messages import BatchItem, BatchStatus, KeyValue, item_of
from msarch.storage import IDEMPOTENCY_TTL_S, MessageState, Store
from tests.unit.text_samples import UNICODE_SAMPLES


async def test_a_key_value_is_stored_once_and_logged_once(store: Store) -> None:
    kv = KeyValue(key="k", value="v1")
    state, event_id = await store.store_key_value(kv, "corr-1")
    assert state is MessageState.NEW
    assert await store.get_value("k") == "v1"

    # The same message again (a redelivery) changes nothing, says what it was and keeps its id.
    assert await store.store_key_value(kv, "corr-1") == (MessageState.STORED, event_id)
    await store.mark_forwarded(kv)
    assert await store.store_key_value(kv) == (MessageState.FORWARDED, event_id)

    events = await store.read_events()
    assert [(e.id, e.type) for e in events] == [(event_id, EventType.KeyValueStored)]
    assert events[0].message_id == str(kv.id)
    assert events[0].correlation_id == "corr-1"
    assert events[0].trace_id is None
    assert KeyValue.model_validate(events[0].payload) == kv


async def test_a_key_value_event_keeps_the_trace_of_its_request(store: Store) -> None:
    trace_id = uuid4().hex
    _, event_id = await store.store_key_value(KeyValue(key="k", value="v"), None, trace_id)
    raw = cast(list[tuple[str, dict[str, str]]], await store.redis.xrange(store.keys.events))
    [(entry_id, fields)] = raw
    assert (entry_id, fields["trace_id"]) == (event_id, trace_id)
    [event] = await store.read_events()
    assert (event.id, event.trace_id) == (event_id, trace_id)


async def test_the_idempotency_marker_expires_and_keeps_its_ttl(store: Store) -> None:
    kv = KeyValue(key="k", value="v")
    _, event_id = await store.store_key_value(kv)
    marker = store.keys.message(str(kv.id))
    ttl = await store.redis.ttl(marker)
    assert 0 < ttl <= IDEMPOTENCY_TTL_S
    await store.mark_forwarded(kv)
    assert await store.redis.hgetall(marker) == {"state": "forwarded", "event": event_id}
    assert 0 < await store.redis.ttl(marker) <= ttl


async def test_a_later_message_for_the_same_key_overwrites_the_value(store: Store) -> None:
    first, second = KeyValue(key="k", value="old"), KeyValue(key="k", value="new")
    (_, first_id), (_, second_id) = (
        await store.store_key_value(first),
        await store.store_key_value(second),
    )
    assert await store.get_value("k") == "new"
    events = await store.read_events()
    assert [(e.id, e.payload["value"]) for e in events] == [(first_id, "old"), (second_id, "new")]


async def test_get_value_of_an_unknown_key_is_none(store: Store) -> None:
    assert await store.get_value("never-stored") is None


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
async def test_unicode_values_are_stored_byte_for_byte(store: Store, text: str) -> None:
    kv = KeyValue(key=text, value=text)
    await store.store_key_value(kv)
    assert await store.get_value(text) == text
    (logged,) = await store.read_events()
    assert logged.payload["key"] == text


async def test_a_64_kib_value_is_stored_whole(store: Store) -> None:
    value = "é" * (64 * 1024 // 2)
    await store.store_key_value(KeyValue(key="big", value=value))
    assert await store.get_value("big") == value


async def test_read_events_pages_strictly_after_an_id(store: Store) -> None:
    kvs = [KeyValue(key=f"k{i}", value=str(i)) for i in range(5)]
    for kv in kvs:
        await store.store_key_value(kv)
    first_page = await store.read_events(limit=2)
    assert [e.payload["key"] for e in first_page] == ["k0", "k1"]
    rest = await store.read_events(after=first_page[-1].id, limit=100)
    assert [e.payload["key"] for e in rest] == ["k2", "k3", "k4"]
    assert await store.last_event_id() == rest[-1].id
    assert await store.read_events(after=rest[-1].id) == []


async def test_an_empty_log_has_no_last_event(store: Store) -> None:
    assert await store.last_event_id() is None
    assert await store.read_events() == []


# -- batches ------------------------------------------------------------------------


async def test_a_batch_commits_when_its_last_item_arrives(store: Store) -> None:
    batch_id = uuid4()
    await store.request_batch(batch_id, 3, "corr")
    state = await store.batch_state(batch_id)
    assert state is not None
    assert (state.status, state.size, state.stored) == (BatchStatus.PendingConsume, 3, 0)

    for index, outcome in [
        (2, Outcome.STAGED),
        (0, Outcome.STAGED),
        (2, Outcome.DUPLICATE),
        (1, Outcome.COMPLETED),
    ]:
        result = await store.stage_items([item_of(batch_id, index, 3)], "corr")
        assert result.outcome is outcome

    assert result.status is BatchStatus.Done
    assert result.stored == 3
    assert await store.batch_size(batch_id) == 3
    assert await store.list_batches() == [str(batch_id)]
    values = [kv async for kv in store.iter_batch_values(batch_id)]
    assert values == [(f"{batch_id}_key_{i}", f"{batch_id}_value_{i}") for i in range(3)]
    assert not await store.redis.exists(store.keys.batch_staging(str(batch_id)))
    assert await store.redis.zscore(store.keys.assembling, str(batch_id)) is None
    types = [e.type for e in await store.read_events()]
    assert types == [
        EventType.BatchRequested,
        *[EventType.BatchItemStaged] * 3,
        EventType.BatchCommitted,
    ]


async def test_an_item_of_a_done_batch_is_ignored(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 1)])
    late = item_of(batch_id, 0, 1).model_copy(update={"value": "late"})
    result = await store.stage_items([late])
    assert (result.outcome, result.status, result.stored) == (Outcome.IGNORED, BatchStatus.Done, 1)
    assert [v async for _, v in store.iter_batch_values(batch_id)] == [f"{batch_id}_value_0"]


async def test_an_item_with_another_size_makes_the_batch_invalid(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 3)])
    result = await store.stage_items([item_of(batch_id, 1, 4)])
    assert (result.status, result.outcome, result.stored) == (
        BatchStatus.Invalid,
        Outcome.INVALIDATED,
        0,
    )
    assert result.detail == "an item says size 4, the batch has size 3"
    assert not await store.redis.exists(store.keys.batch_staging(str(batch_id)))
    assert await store.batch_size(batch_id) is None
    assert await store.list_batches() == []
    failed = [e for e in await store.read_events() if e.type is EventType.BatchFailed]
    assert [e.payload for e in failed] == [
        {"batch_id": str(batch_id), "status": "Invalid", "detail": result.detail}
    ]


async def test_stage_items_takes_one_batch_of_one_size(store: Store) -> None:
    with pytest.raises(ValueError, match="one batch"):
        await store.stage_items([item_of(uuid4(), 0, 2), item_of(uuid4(), 1, 2)])
    batch_id = uuid4()
    with pytest.raises(ValueError, match="one size"):
        await store.stage_items([item_of(batch_id, 0, 2), item_of(batch_id, 1, 3)])


async def test_many_items_in_one_call(store: Store) -> None:
    batch_id = uuid4()
    items = [item_of(batch_id, i, 500) for i in reversed(range(500))]
    result = await store.stage_items(items)
    assert (result.status, result.outcome, result.stored) == (
        BatchStatus.Done,
        Outcome.COMPLETED,
        500,
    )
    assert await store.batch_size(batch_id) == 500


async def test_fail_batch_does_not_touch_a_final_batch(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 1)])
    status = await store.fail_batch(batch_id, BatchStatus.TimeoutExceeded, "too late")
    assert status is BatchStatus.Done
    state = await store.batch_state(batch_id)
    assert state is not None
    assert (state.status, state.stored, state.detail) == (BatchStatus.Done, 1, None)


async def test_fail_batch_times_out_a_pending_batch_once(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 2)])
    assert await store.fail_batch(batch_id, BatchStatus.TimeoutExceeded, "idle") is (
        BatchStatus.TimeoutExceeded
    )
    assert await store.fail_batch(batch_id, BatchStatus.DatabaseOperationFailed, "x") is (
        BatchStatus.TimeoutExceeded
    )
    state = await store.batch_state(batch_id)
    assert state is not None
    assert (state.status, state.stored, state.detail) == (BatchStatus.TimeoutExceeded, 0, "idle")
    assert await store.stalled_batches(0) == []
    failed = [e for e in await store.read_events() if e.type is EventType.BatchFailed]
    assert len(failed) == 1
    assert failed[0].message_id == f"{batch_id}:TimeoutExceeded"


async def test_stalled_batches_are_the_idle_incomplete_ones(store: Store) -> None:
    pending, done = uuid4(), uuid4()
    await store.stage_items([item_of(pending, 0, 2)])
    await store.stage_items([item_of(done, 0, 1)])
    assert await store.stalled_batches(0) == [pending]
    assert await store.stalled_batches(3600) == []


async def test_batch_state_of_an_unknown_batch_is_none(store: Store) -> None:
    unknown = uuid4()
    assert await store.batch_state(unknown) is None
    assert await store.batch_size(unknown) is None
    assert [kv async for kv in store.iter_batch_values(unknown)] == []


async def test_request_batch_never_overwrites_progress(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 1)])
    await store.request_batch(batch_id, 1)
    await store.request_batch(batch_id, 5)
    state = await store.batch_state(batch_id)
    assert state is not None
    assert (state.status, state.size) == (BatchStatus.Done, 1)
    assert EventType.BatchRequested not in {e.type for e in await store.read_events()}


async def test_a_requested_batch_fixes_the_size_its_items_must_have(store: Store) -> None:
    batch_id = uuid4()
    await store.request_batch(batch_id, 2)
    await store.request_batch(batch_id, 2)  # a retried request logs once
    result = await store.stage_items([item_of(batch_id, 0, 3)])
    assert (result.status, result.detail) == (
        BatchStatus.Invalid,
        "an item says size 3, the batch has size 2",
    )
    types = [e.type for e in await store.read_events()]
    assert types == [EventType.BatchRequested, EventType.BatchFailed]


async def test_list_batches_is_newest_first_and_pages(store: Store) -> None:
    ids = [uuid4() for _ in range(4)]
    for score, batch_id in enumerate(ids):
        await store.stage_items([item_of(batch_id, 0, 1)])
        # Commit times within one millisecond tie: spread them to fix the order.
        await store.redis.zadd(store.keys.batches, {str(batch_id): 1000 + score})
    newest_first = [str(b) for b in reversed(ids)]
    assert await store.list_batches() == newest_first
    assert await store.list_batches(offset=1, limit=2) == newest_first[1:3]
    assert await store.list_batches(offset=10) == []


async def test_iter_batch_values_reads_in_chunks_with_offset_and_limit(store: Store) -> None:
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, i, 25) for i in range(25)])
    everything = [kv async for kv in store.iter_batch_values(batch_id, chunk=7)]
    assert [key for key, _ in everything] == [f"{batch_id}_key_{i}" for i in range(25)]
    window = [kv async for kv in store.iter_batch_values(batch_id, offset=5, limit=10, chunk=3)]
    assert window == everything[5:15]
    assert [kv async for kv in store.iter_batch_values(batch_id, offset=24, limit=10)] == (
        everything[24:]
    )
    assert [kv async for kv in store.iter_batch_values(batch_id, offset=30)] == []


async def test_batch_values_keep_unicode_exactly(store: Store) -> None:
    batch_id = uuid4()
    items = [
        BatchItem(batch_id=batch_id, index=i, size=len(UNICODE_SAMPLES), key=text, value=text)
        for i, text in enumerate(UNICODE_SAMPLES)
    ]
    await store.stage_items(items)
    assert [kv async for kv in store.iter_batch_values(batch_id)] == [
        (t, t) for t in UNICODE_SAMPLES
    ]


async def test_every_key_is_under_the_namespace(store: Store, namespace: str) -> None:
    await store.store_key_value(KeyValue(key="k", value="v"))
    batch_id = uuid4()
    await store.stage_items([item_of(batch_id, 0, 2)])
    await store.stage_items([item_of(uuid4(), 0, 1)])
    keys = {k async for k in store.redis.scan_iter(match=f"{namespace}*")}
    assert keys
    assert all(k.startswith(f"{namespace}msarch:") for k in keys)
    raw = await store.redis.hget(store.keys.batch_staging(str(batch_id)), "0")
    assert raw is not None
    assert json.loads(raw) == [f"{batch_id}_key_0", f"{batch_id}_value_0"]


async def _logged(store: Store, count: int) -> list[str]:
    for index in range(count):
        await store.store_key_value(KeyValue(key=f"k{index}", value="v"))
    return [event.id for event in await store.read_events(None, count)]


async def test_a_reader_after_trimmed_or_deleted_events_is_told_and_one_past_them_is_not(
    store: Store,
) -> None:
    assert await store.gap_after("0-0") is None, "no log yet, nothing removed"
    ids = await _logged(store, 6)
    assert await store.gap_after(ids[0]) is None
    assert await store.trim_events_before(ids[2]) == (2, ids[1])
    gap = await store.gap_after(ids[0])
    assert gap is not None
    assert (gap.after, gap.removed_up_to, gap.oldest_kept) == (ids[0], ids[1], ids[2])
    assert ids[0] in gap.detail
    assert ids[2] in gap.detail
    assert await store.gap_after(ids[1]) is None, "read up to the cut: nothing missed"
    # What XDEL removes Redis records itself; the newer of the two removals counts.
    await store.redis.xdel(store.keys.events, ids[4])
    gap = await store.gap_after(ids[3])
    assert gap is not None
    assert gap.removed_up_to == ids[4]
    assert await store.gap_after(ids[4]) is None
