"""The two clocks written with every change: epoch ms for scores and meta, ISO time for events."""

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()
