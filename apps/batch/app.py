"""The batch service: publishes a batch as single items and waits for the store's reply."""

from apps.batch.handlers import MESSAGING
from apps.batch.routes import router
from msarch.asyncapi import docs_app
from msarch.service import create_service

app = create_service(MESSAGING, routers=[router])
stream_app = docs_app(app.state.runtime.bus)
"""For `faststream docs gen apps.batch.app:stream_app`; the service runs under uvicorn."""
