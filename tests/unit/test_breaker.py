"""The gateway's circuit breaker, on a clock the test moves."""

import pytest

from apps.gateway.breaker import CircuitBreaker, State
from tests.utils.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(threshold=3, cooldown_s=5.0, clock=clock)


def state_of(breaker: CircuitBreaker) -> State:
    # A call, so the type checker does not keep the state from an earlier assert.
    return breaker.state


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.threshold):
        breaker.failure()


def test_closed_lets_everything_through(breaker: CircuitBreaker) -> None:
    assert state_of(breaker) is State.CLOSED
    assert all(breaker.allow() for _ in range(10))
    assert breaker.retry_after_s() == 0.0


def test_opens_after_threshold_failures_in_a_row(breaker: CircuitBreaker) -> None:
    breaker.failure()
    breaker.failure()
    assert state_of(breaker) is State.CLOSED
    breaker.failure()
    assert state_of(breaker) is State.OPEN
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(5.0)


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert state_of(breaker) is State.CLOSED
    assert breaker.allow()


def test_open_refuses_until_the_cooldown_has_passed(breaker: CircuitBreaker, clock: Clock) -> None:
    open_it(breaker)
    clock.now += 4.9
    assert state_of(breaker) is State.OPEN
    assert not breaker.allow()
    assert breaker.retry_after_s() == pytest.approx(0.1)
    clock.now += 0.1
    assert state_of(breaker) is State.HALF_OPEN


def test_half_open_lets_exactly_one_trial_through(breaker: CircuitBreaker, clock: Clock) -> None:
    open_it(breaker)
    clock.now += 5.0
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()


def test_a_successful_trial_closes(breaker: CircuitBreaker, clock: Clock) -> None:
    open_it(breaker)
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert state_of(breaker) is State.CLOSED
    assert all(breaker.allow() for _ in range(3))
    # Closed again means counting afresh: one failure does not reopen it.
    breaker.failure()
    assert state_of(breaker) is State.CLOSED


def test_a_failed_trial_reopens_for_a_full_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    open_it(breaker)
    clock.now += 5.0
    assert breaker.allow()
    breaker.failure()
    assert state_of(breaker) is State.OPEN
    assert breaker.retry_after_s() == pytest.approx(5.0)
    clock.now += 5.0
    assert state_of(breaker) is State.HALF_OPEN
    assert breaker.allow()


def test_a_trial_that_never_reports_does_not_block_for_ever(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    open_it(breaker)
    clock.now += 5.0
    assert breaker.allow()
    clock.now += 4.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
