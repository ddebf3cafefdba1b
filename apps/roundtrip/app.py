"""The roundtrip service: accepts key/values over HTTP and publishes them on `event`."""

from apps.roundtrip.handlers import MESSAGING
from apps.roundtrip.routes import router
from msarch.asyncapi import docs_app
from msarch.service import create_service

app = create_service(MESSAGING, routers=[router])
stream_app = docs_app(app.state.runtime.bus)
"""For `faststream docs gen apps.roundtrip.app:stream_app`; the service runs under uvicorn."""
