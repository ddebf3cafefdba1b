"""Batch assembly in Redis (the stage_items and fail_batch Lua scripts) checked against
the pure rules model (msarch.batch_rules).

Hypothesis generates a stream of operations on 1-3 small batches: items in any
order, duplicates carrying other values, items that contradict their batch,
and timeouts. Each operation is applied both to `Store.stage_items` /
`Store.fail_batch` on the real Redis (db 9, a fresh namespace per example) and
to `msarch.batch_rules.BatchRules`; status, outcome and stored count must agree
after every step, and the final hashes must hold exactly the first value sent
for each index. Then the log those scripts wrote is replayed (msarch.replay)
into a scratch namespace: the rebuilt projections must equal the live ones,
and each rebuilt batch must have the status the rules gave it.
"""

from collections import Counter
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msarch.batch_rules import BatchRules, Outcome
from msarch.events import EventType
from msarch.messages import BatchItem, BatchStatus
from msarch.replay import replay_and_compare
from msarch.storage import Store
from tests.utils.fixture_api import StoreFactory

MODEL_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Items:
    """Items of one batch, all with the same size, staged in one call."""

    batch: int
    items: tuple[tuple[int, int, str], ...]  # (index, size, value tag)


@dataclass(frozen=True)
class TimeOut:
    batch: int


Op = Items | TimeOut


@st.composite
def operations(draw: st.DrawFn, *, max_group: int = 1) -> list[Op]:
    """A stream of operations on 1-3 batches; most batches get all their items."""
    sizes = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    slots: list[tuple[int, int]] = []
    for batch, size in enumerate(sizes):
        indices = list(range(size))
        if draw(st.integers(0, 3)) == 0:  # sometimes an item never arrives
            indices.remove(draw(st.sampled_from(indices)))
        indices += draw(st.lists(st.sampled_from(range(size)), max_size=3))
        slots += [(batch, index) for index in indices]
    slots = draw(st.permutations(slots))

    ops: list[Op] = []
    position = 0
    while position < len(slots):
        batch = slots[position][0]
        group = [slots[position][1]]
        position += 1
        limit = draw(st.integers(1, max_group))
        while len(group) < limit and position < len(slots) and slots[position][0] == batch:
            group.append(slots[position][1])
            position += 1
        size = sizes[batch]
        ops.append(Items(batch, tuple((i, size, f"v{len(ops)}") for i in group)))

    extras = draw(st.lists(st.tuples(st.integers(0, len(ops)), st.data()), max_size=3))
    for at, data in sorted(extras, key=lambda e: -e[0]):
        batch = data.draw(st.integers(0, len(sizes) - 1))
        size = sizes[batch]
        kind = data.draw(st.sampled_from(["timeout", "size", "index", "negative", "zero"]))
        if kind == "timeout":
            ops.insert(at, TimeOut(batch))
            continue
        bad = {
            "size": (0, size + 1),
            "index": (data.draw(st.integers(size, size + 2)), size),
            "negative": (-1, size),
            "zero": (0, 0),
        }[kind]
        # Alone in its call; a bad item sharing a call has a test of its own below.
        ops.insert(at, Items(batch, ((*bad, "bad"),)))
    return ops


def _item(batch_id: UUID, index: int, size: int, tag: str) -> BatchItem:
    # model_construct: the Lua script must cope with what validation would stop (-1, 0).
    return BatchItem.model_construct(
        batch_id=batch_id, index=index, size=size, key=f"key-{index}-{tag}", value=f"{tag}:{index}"
    )


def _group_outcome(outcomes: list[Outcome]) -> Outcome:
    """What one call staging several items reports, by the pure rules applied in order."""
    for outcome in outcomes:
        if outcome in (Outcome.COMPLETED, Outcome.INVALIDATED):
            return outcome
    for outcome in (Outcome.STAGED, Outcome.DUPLICATE):
        if outcome in outcomes:
            return outcome
    return Outcome.IGNORED


@dataclass
class Model:
    """The pure side: one BatchRules per batch, and the first value sent for each index."""

    ids: list[UUID]
    batches: dict[UUID, BatchRules] = field(default_factory=dict)
    first_values: dict[UUID, dict[int, tuple[str, str]]] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        for bid in self.ids:
            self.batches[bid] = BatchRules()
            self.first_values[bid] = {}


async def _run(store: Store, ops: list[Op]) -> Model:
    batches = 1 + max(op.batch for op in ops) if ops else 0
    model = Model([uuid4() for _ in range(batches)])

    for step, op in enumerate(ops):
        bid = model.ids[op.batch]
        rules = model.batches[bid]
        where = f"step {step}: {op}"
        if isinstance(op, TimeOut):
            changed = rules.time_out()
            status = await store.fail_batch(bid, BatchStatus.TimeoutExceeded, "test timeout")
            assert status is rules.status, where
            model.events["BatchFailed"] += changed
        else:
            items = [_item(bid, *spec) for spec in op.items]
            outcomes = []
            for item in items:
                was_final = rules.status.is_final
                outcome = rules.receive(item.index, item.size)
                outcomes.append(outcome)
                if outcome in (Outcome.STAGED, Outcome.COMPLETED):
                    model.first_values[bid].setdefault(item.index, (item.key, item.value))
                    model.events["BatchItemStaged"] += 1
                if not was_final and outcome is Outcome.COMPLETED:
                    model.events["BatchCommitted"] += 1
                if outcome is Outcome.INVALIDATED:
                    model.events["BatchFailed"] += 1
            result = await store.stage_items(items)
            expected = _group_outcome(outcomes)
            assert (result.outcome, result.status, result.stored) == (
                expected,
                rules.status,
                len(rules.received),
            ), where
            assert (result.detail is not None) is (
                rules.status in (BatchStatus.Invalid, BatchStatus.TimeoutExceeded)
            ), where
        state = await store.batch_state(bid)
        assert state is not None, where
        assert (state.status, state.stored) == (rules.status, len(rules.received)), where
        assert state.size == rules.size, where

    done: list[str] = []
    for bid, rules in model.batches.items():
        stored = [kv async for kv in store.iter_batch_values(bid)]
        if rules.status is BatchStatus.Done:
            done.append(str(bid))
            assert rules.size is not None
            first = model.first_values[bid]
            assert stored == [first[i] for i in range(rules.size)], bid
            assert await store.batch_size(bid) == rules.size
        else:
            assert stored == []
            assert await store.batch_size(bid) is None
        staging = await store.redis.hlen(store.keys.batch_staging(str(bid)))
        pending = rules.status is BatchStatus.PendingDatabase
        assert staging == (len(rules.received) if pending else 0)
    assert sorted(await store.list_batches(0, 10)) == sorted(done)

    logged = Counter(event.type.value for event in await store.read_events(limit=10_000))
    for kind in ("BatchItemStaged", "BatchCommitted", "BatchFailed"):
        assert logged[kind] == model.events[kind], kind
    assert set(logged) <= {t.value for t in EventType}
    await _check_replay(store, model)
    return model


async def _check_replay(store: Store, model: Model) -> None:
    """The replay projection rebuilds what the scripts wrote, and agrees with the rules."""
    scratch = store.in_namespace(f"{store.namespace}replay-")
    report = await replay_and_compare(store, scratch)
    assert report.differences == []
    for bid, rules in model.batches.items():
        rebuilt = await scratch.batch_state(bid)  # None for a batch no operation touched
        assert (rebuilt.status if rebuilt else BatchStatus.None_) is rules.status, bid


def _count_endings(model: Model) -> None:
    for rules in model.batches.values():
        event(f"batch ends {rules.status.value}")


@MODEL_SETTINGS
@given(ops=operations())
async def test_redis_assembly_follows_the_pure_rules_item_by_item(
    fresh_store: StoreFactory, ops: list[Op]
) -> None:
    _count_endings(await _run(fresh_store(), ops))


@MODEL_SETTINGS
@given(ops=operations(max_group=3))
async def test_redis_assembly_follows_the_pure_rules_for_items_staged_together(
    fresh_store: StoreFactory, ops: list[Op]
) -> None:
    # The store's stage buffer stages every item of a batch that arrived together in one call.
    _count_endings(await _run(fresh_store(), ops))


async def test_an_out_of_range_item_after_the_completing_one_in_the_same_call(
    fresh_store: StoreFactory,
) -> None:
    store = fresh_store()
    await _run(store, [Items(0, ((0, 2, "a"), (1, 2, "a"), (5, 2, "bad")))])


async def test_a_model_run_writes_only_under_its_own_prefix(fresh_store: StoreFactory) -> None:
    store = fresh_store()
    await _run(store, [Items(0, ((0, 1, "a"),))])
    keys = [k async for k in store.redis.scan_iter(match=f"{store.keys.prefix}*")]
    assert keys
    assert all(k.startswith(store.keys.prefix) for k in keys)
