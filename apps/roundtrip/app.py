"""The roundtrip service: accepts key/values over HTTP and publishes them on `event`."""

from apps.roundtrip.routes import router
from msarch.service import create_service

app = create_service("roundtrip", routers=[router])
