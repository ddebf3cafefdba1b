"""The store service: persists `event` and `batch` in Redis (health and metrics only over HTTP)."""

from apps.store.assembler import sweep_stalled_batches
from apps.store.handlers import subscribe
from msarch.service import create_service

app = create_service("store", subscribe=subscribe, background=[sweep_stalled_batches])
