"""The store service: persists `event` and `batch` in Redis; over HTTP, health, metrics and the
dead letters (apps/store/dead_letters.py)."""

from apps.store.dead_letters import count_dead_letters, router
from apps.store.handlers import MESSAGING
from apps.store.log_upkeep import keep_the_log
from apps.store.timeouts import sweep_stalled_batches
from msarch.asyncapi import docs_app
from msarch.service import create_service

app = create_service(
    MESSAGING,
    routers=[router],
    background=[sweep_stalled_batches, keep_the_log, count_dead_letters],
)
stream_app = docs_app(app.state.runtime.bus)
"""For `faststream docs gen apps.store.app:stream_app`; the service runs under uvicorn."""
