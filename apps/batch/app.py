"""The batch service: publishes a batch as single items and waits for the store's reply."""

from apps.batch.handlers import subscribe
from apps.batch.routes import router
from apps.batch.waiters import Waiters
from msarch.service import create_service

app = create_service("batch", routers=[router], subscribe=subscribe, dependencies=[Waiters])
