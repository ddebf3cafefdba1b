"""wait_for: the harness's poll, and what its TimeoutError says was awaited."""

import pytest

from msarch.testing.stack import wait_for


async def test_a_true_predicate_returns_and_an_async_one_is_awaited() -> None:
    calls: list[int] = []

    async def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    await wait_for(third_time, 5, 0)
    assert len(calls) == 3


async def test_a_lambda_never_true_is_named_by_its_source() -> None:
    seen: list[int] = []
    with pytest.raises(TimeoutError, match=r"not true in 0.05 s: .*len\(seen\) >= 300"):
        await wait_for(lambda: len(seen) >= 300, 0.05, 0.01)


async def test_what_names_it_and_a_function_goes_by_its_name() -> None:
    def never() -> bool:
        return False

    with pytest.raises(TimeoutError, match="the heal"):
        await wait_for(never, 0.05, 0.01, what="the heal")
    with pytest.raises(TimeoutError, match=r"test_what_names_it.*\.never$"):
        await wait_for(never, 0.05, 0.01)


async def test_the_predicates_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    def fails() -> bool:
        raise TimeoutError("its own")

    with pytest.raises(TimeoutError, match=r"^its own$"):
        await wait_for(fails, 5)
