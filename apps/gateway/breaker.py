"""A circuit breaker per upstream instance: stop sending to an instance that keeps failing.

closed: requests flow; `threshold` failures in a row open it.
open: nothing is sent for `cooldown_s`; then it is half-open.
half-open: one trial request; its success closes the breaker, its failure opens it again.
"""

import time
from collections.abc import Callable
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return State.OPEN
        return State.HALF_OPEN

    def allow(self) -> bool:
        """May a request go to this instance now? Half-open lets one trial through."""
        state = self.state
        if state is not State.HALF_OPEN:
            return state is State.CLOSED
        now = self._clock()
        # A trial that never reported back (its client left) does not block for ever.
        if self._trial_at is not None and now - self._trial_at < self.cooldown_s:
            return False
        self._trial_at = now
        return True

    def success(self) -> None:
        self._failures, self._opened_at, self._trial_at = 0, None, None

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at, self._trial_at = self._clock(), None

    def retry_after_s(self) -> float:
        """How long until a request may be tried again (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
