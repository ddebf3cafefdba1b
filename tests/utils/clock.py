"""A clock the test moves by hand, for code that takes `clock: Callable[[], float]`."""

from dataclasses import dataclass


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now
