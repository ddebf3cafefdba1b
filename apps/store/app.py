"""The store service: persists `event` and `batch` in Redis (health and metrics only over HTTP)."""

from apps.store.handlers import subscribe
from apps.store.timeouts import sweep_stalled_batches
from msarch.service import create_service

app = create_service("store", subscribe=subscribe, background=[sweep_stalled_batches])
