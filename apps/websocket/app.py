"""The websocket service: pushes forwarded key/values to its websocket clients."""

from apps.websocket.handlers import subscribe
from apps.websocket.hub import Hub
from apps.websocket.routes import router
from msarch.service import create_service

app = create_service("websocket", routers=[router], subscribe=subscribe, dependencies=[Hub])
