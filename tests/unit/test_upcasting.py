"""Event versions: every event the scripts write carries the current version, and a log
written by version 1 code (tests/fixtures/events-v1.json, raw stream entries as that code
wrote them) reads and replays as the current version."""

import json
from pathlib import Path
from typing import cast
from uuid import uuid4

import pytest

from msarch.events import EventType
from msarch.messages import BatchStatus, KeyValue, item_of
from msarch.replay import Report, rebuild
from msarch.storage import BatchHash, Store
from msarch.upcasting import CURRENT_VERSION, STEPS, UnknownVersion, upcast

V1_LOG = Path(__file__).parents[1] / "fixtures" / "events-v1.json"


async def test_every_event_the_store_writes_carries_the_current_version(store: Store) -> None:
    await store.store_key_value(KeyValue(key="k", value="v"))
    done, invalid, failed = uuid4(), uuid4(), uuid4()
    for batch_id in (done, invalid, failed):
        await store.request_batch(batch_id, 1)
    await store.stage_items([item_of(done, 0, 1)])
    await store.stage_items([item_of(invalid, 0, 1).model_copy(update={"size": 2})])
    await store.fail_batch(failed, BatchStatus.TimeoutExceeded, "")
    raw = cast(list[tuple[str, dict[str, str]]], await store.redis.xrange(store.keys.events))
    assert {fields["type"] for _, fields in raw} == {kind.value for kind in EventType}
    assert {fields["version"] for _, fields in raw} == {str(CURRENT_VERSION)}
    events = await store.read_events(None, 100)
    (no_detail,) = [e for e in events if e.message_id.endswith(":TimeoutExceeded")]
    assert no_detail.payload["detail"] is None


async def test_a_version_1_log_reads_upcast_and_replays_to_the_projections(store: Store) -> None:
    for entry in json.loads(V1_LOG.read_text()):
        await store.redis.xadd(store.keys.events, entry["fields"], id=entry["id"])
    events = await store.read_events(None, 100)
    assert {e.version for e in events} == {CURRENT_VERSION}
    failed = next(e for e in events if e.type is EventType.BatchFailed)
    assert failed.payload["detail"] is None, "version 1 wrote an empty detail"

    scratch = store.in_namespace(f"{store.namespace}replayed-")
    report = Report()
    await rebuild(store, scratch, report)
    assert report.differences == []
    assert await scratch.get_value("greeting") == "hello again"
    committed = "00000000-0000-4000-8000-0000000000d0"
    assert await scratch.projections.hash_length(committed, BatchHash.FINAL) == 2
    meta = await scratch.projections.batch_meta(
        "00000000-0000-4000-8000-0000000000f0", ["status", "detail"]
    )
    assert meta == ["TimeoutExceeded", ""]


def test_every_type_has_a_step_from_every_older_version() -> None:
    for kind in EventType:
        for version in range(1, CURRENT_VERSION):
            assert (kind, version) in STEPS, (kind, version)


def test_a_newer_version_is_read_as_it_is_and_an_unknown_older_one_is_refused() -> None:
    newer = {"batch_id": "b", "status": "Invalid", "detail": None, "reason_code": 7}
    assert upcast(EventType.BatchFailed, CURRENT_VERSION + 1, newer) == newer
    with pytest.raises(UnknownVersion, match="version 0"):
        upcast(EventType.KeyValueStored, 0, {})
