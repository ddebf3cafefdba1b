"""The websocket service: pushes forwarded key/values to its websocket clients."""

from apps.websocket.handlers import MESSAGING
from apps.websocket.routes import router
from msarch.asyncapi import docs_app
from msarch.service import create_service

app = create_service(MESSAGING, routers=[router])
stream_app = docs_app(app.state.runtime.bus)
"""For `faststream docs gen apps.websocket.app:stream_app`; the service runs under uvicorn."""
