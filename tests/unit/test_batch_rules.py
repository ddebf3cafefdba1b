"""The pure batch rules (msarch.batch_rules), as Hypothesis properties."""

from collections import Counter
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msarch.batch_rules import BatchRules, Outcome
from msarch.messages import BatchStatus

FINAL_OUTCOMES = {Outcome.COMPLETED, Outcome.INVALIDATED}

sizes = st.integers(min_value=1, max_value=12)


@st.composite
def arrivals(draw: st.DrawFn, size: int, *, complete: bool) -> list[int]:
    """Indices of one batch in any order, with duplicates; every index if complete."""
    indices = list(range(size))
    if not complete:
        missing = draw(st.sets(st.sampled_from(indices), min_size=1))
        indices = [i for i in indices if i not in missing]
    duplicates = draw(st.lists(st.sampled_from(indices), max_size=size)) if indices else []
    return draw(st.permutations(indices + duplicates))


@st.composite
def complete_batches(draw: st.DrawFn) -> tuple[int, list[int]]:
    size = draw(sizes)
    return size, draw(arrivals(size, complete=True))


@st.composite
def incomplete_batches(draw: st.DrawFn) -> tuple[int, list[int]]:
    size = draw(sizes)
    return size, draw(arrivals(size, complete=False))


def feed(rules: BatchRules, size: int, indices: list[int]) -> list[Outcome]:
    return [rules.receive(index, size) for index in indices]


# -- completion ------------------------------------------------------------------------


@given(complete_batches())
def test_completes_exactly_once_whatever_the_order(batch: tuple[int, list[int]]) -> None:
    size, indices = batch
    rules = BatchRules()
    outcomes = feed(rules, size, indices)

    assert outcomes.count(Outcome.COMPLETED) == 1
    assert Outcome.INVALIDATED not in outcomes
    assert rules.status is BatchStatus.Done
    assert rules.received == set(range(size))
    done_at = outcomes.index(Outcome.COMPLETED)
    # It completes on the arrival of the last missing index, not before.
    assert set(indices[: done_at + 1]) == set(range(size))
    assert set(indices[:done_at]) != set(range(size))
    assert all(o is Outcome.IGNORED for o in outcomes[done_at + 1 :])


@given(complete_batches())
def test_new_indices_stage_and_repeats_are_duplicates(batch: tuple[int, list[int]]) -> None:
    size, indices = batch
    outcomes = feed(BatchRules(), size, indices)
    done_at = outcomes.index(Outcome.COMPLETED)
    seen: set[int] = set()
    for index, outcome in zip(indices[:done_at], outcomes[:done_at], strict=True):
        assert outcome is (Outcome.DUPLICATE if index in seen else Outcome.STAGED)
        seen.add(index)
    assert Counter(outcomes)[Outcome.STAGED] == size - 1


@given(incomplete_batches())
def test_never_completes_while_an_index_is_missing(batch: tuple[int, list[int]]) -> None:
    size, indices = batch
    rules = BatchRules()
    outcomes = feed(rules, size, indices)

    assert not FINAL_OUTCOMES & set(outcomes)
    assert rules.status is (BatchStatus.PendingDatabase if indices else BatchStatus.None_)
    assert rules.received == set(indices)
    assert not rules.status.is_final


@given(incomplete_batches(), st.data())
def test_timeout_fails_an_incomplete_batch_once(
    batch: tuple[int, list[int]], data: st.DataObject
) -> None:
    size, indices = batch
    rules = BatchRules()
    feed(rules, size, indices)

    assert rules.time_out() is True
    assert rules.status is BatchStatus.TimeoutExceeded
    assert rules.detail == f"received {len(set(indices))} of {size if indices else None} items"
    assert rules.received == set()
    assert rules.time_out() is False
    # Even the missing items, arriving late, change nothing.
    late = data.draw(st.lists(st.integers(0, size - 1), min_size=1))
    assert feed(rules, size, late) == [Outcome.IGNORED] * len(late)
    assert rules.status is BatchStatus.TimeoutExceeded


@given(complete_batches())
def test_timeout_after_completion_changes_nothing(batch: tuple[int, list[int]]) -> None:
    size, indices = batch
    rules = BatchRules()
    feed(rules, size, indices)
    assert rules.time_out() is False
    assert rules.status is BatchStatus.Done
    assert rules.received == set(range(size))


def test_a_fresh_batch_can_time_out() -> None:
    rules = BatchRules()
    assert rules.time_out() is True
    assert rules.status is BatchStatus.TimeoutExceeded


# -- invalid items ------------------------------------------------------------------------


@st.composite
def bad_items(draw: st.DrawFn, size: int) -> tuple[int, int]:
    """(index, size) contradicting a batch of `size`: another size, or an index out of range."""
    kind = draw(st.sampled_from(["size", "index", "non-positive size"]))
    if kind == "size":
        other = draw(st.integers(1, 20).filter(lambda s: s != size))
        return draw(st.integers(0, other - 1)), other
    if kind == "index":
        return draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=size))), size
    return draw(st.integers(0, 3)), draw(st.integers(max_value=0))


@given(st.data())
def test_a_contradicting_item_invalidates_exactly_once(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 12))
    # At least one item came first: it fixed the size the bad item contradicts.
    before = data.draw(arrivals(size, complete=False).filter(bool))
    bad_index, bad_size = data.draw(bad_items(size))
    after = data.draw(st.lists(st.integers(0, size - 1), max_size=2 * size))
    rules = BatchRules()

    feed(rules, size, before)
    assert rules.receive(bad_index, bad_size) is Outcome.INVALIDATED
    assert rules.status is BatchStatus.Invalid
    assert rules.detail
    assert rules.received == set()
    # Later items, the missing ones included, and a timeout: nothing changes any more.
    assert feed(rules, size, list(range(size)) + after) == [Outcome.IGNORED] * (size + len(after))
    assert rules.receive(bad_index, bad_size) is Outcome.IGNORED
    assert rules.time_out() is False
    assert rules.status is BatchStatus.Invalid


@given(st.data())
def test_a_contradicting_first_item_invalidates(data: st.DataObject) -> None:
    size = data.draw(sizes)
    index = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=size)))
    rules = BatchRules()
    assert rules.receive(index, size) is Outcome.INVALIDATED
    assert rules.status is BatchStatus.Invalid
    assert feed(rules, size, list(range(size))) == [Outcome.IGNORED] * size


@given(complete_batches(), st.data())
def test_a_contradicting_item_after_completion_is_ignored(
    batch: tuple[int, list[int]], data: st.DataObject
) -> None:
    size, indices = batch
    rules = BatchRules()
    feed(rules, size, indices)
    bad_index, bad_size = data.draw(bad_items(size))
    assert rules.receive(bad_index, bad_size) is Outcome.IGNORED
    assert rules.status is BatchStatus.Done
    assert rules.received == set(range(size))


@pytest.mark.parametrize(
    ("first", "bad", "detail"),
    [
        ((0, 3), (1, 4), "item 1 says size 4, the batch has size 3"),
        ((0, 3), (3, 3), "index 3 is outside 0..2"),
        ((0, 3), (-1, 3), "index -1 is outside 0..2"),
        ((0, 3), (0, 0), "size 0 is not positive"),
    ],
)
def test_invalid_detail_says_what_is_wrong(
    first: tuple[int, int], bad: tuple[int, int], detail: str
) -> None:
    rules = BatchRules()
    rules.receive(*first)
    rules.receive(*bad)
    assert rules.detail == detail


# -- several batches at once ---------------------------------------------------------------


@st.composite
def interleaved(draw: st.DrawFn) -> tuple[dict[UUID, tuple[int, list[int], bool]], list[UUID]]:
    """1..4 batches, some incomplete, their arrivals interleaved in one stream."""
    batches: dict[UUID, tuple[int, list[int], bool]] = {}
    for _ in range(draw(st.integers(1, 4))):
        size = draw(sizes)
        complete = draw(st.booleans())
        batches[uuid4()] = (size, draw(arrivals(size, complete=complete)), complete)
    slots = [bid for bid, (_, indices, _) in batches.items() for _ in indices]
    return batches, draw(st.permutations(slots))


@given(interleaved())
def test_interleaved_batches_assemble_independently(
    case: tuple[dict[UUID, tuple[int, list[int], bool]], list[UUID]],
) -> None:
    batches, order = case
    rules: dict[UUID, BatchRules] = {bid: BatchRules() for bid in batches}
    outcomes: dict[UUID, list[Outcome]] = {bid: [] for bid in batches}
    cursor = dict.fromkeys(batches, 0)
    for bid in order:
        size, indices, _ = batches[bid]
        index = indices[cursor[bid]]
        cursor[bid] += 1
        outcomes[bid].append(rules[bid].receive(index, size))

    for bid, (size, indices, complete) in batches.items():
        # Each batch sees exactly what it would have seen alone.
        assert outcomes[bid] == feed(BatchRules(), size, indices)
        assert outcomes[bid].count(Outcome.COMPLETED) == (1 if complete else 0)
        pending = BatchStatus.PendingDatabase if indices else BatchStatus.None_
        assert rules[bid].status is (BatchStatus.Done if complete else pending)


# -- any sequence at all ---------------------------------------------------------------


Step = tuple[int, int] | None
"""(index, size) for an item, None for a timeout."""


@st.composite
def any_steps(draw: st.DrawFn) -> list[Step]:
    size = draw(st.integers(1, 6))
    item = st.tuples(st.integers(-1, size), st.sampled_from([size, size, size, size + 1, 0]))
    good = st.tuples(st.integers(0, size - 1), st.just(size))
    step: st.SearchStrategy[Step] = st.one_of(good, good, good, item, st.none())
    return draw(st.lists(step, max_size=25))


@given(any_steps())
def test_at_most_one_final_outcome_and_nothing_after_it(steps: list[Step]) -> None:
    rules = BatchRules()
    finals = 0
    for step in steps:
        was_final = rules.status.is_final
        if step is None:
            changed = rules.time_out()
            assert changed is not was_final
            finals += changed
        else:
            outcome = rules.receive(*step)
            assert (outcome is Outcome.IGNORED) is was_final
            finals += outcome in FINAL_OUTCOMES
        assert finals == (1 if rules.status.is_final else 0)
        assert len(rules.received) <= (rules.size or 0)
        if rules.status in (BatchStatus.Invalid, BatchStatus.TimeoutExceeded):
            assert rules.received == set()
