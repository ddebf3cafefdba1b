"""Serving one service with uvicorn: the one place that decides where a service listens.

The address uvicorn binds and the address the service registers in Consul come
from the same settings: `--host`/`--port` are written into the environment the
service's settings are read from, before its app is imported. A container told
to listen on 0.0.0.0 therefore also knows it must advertise an address of its own.
"""

import os

import uvicorn

from msarch.settings import SERVICES, Settings


def serve(
    service: str, host: str | None = None, port: int | None = None, log_level: str = "info"
) -> None:
    """Run one service in this process until SIGTERM/SIGINT (in-flight messages finish first)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")
    if host is not None:
        os.environ["MSARCH_HOST"] = host
    if port is not None:
        os.environ[f"MSARCH_{service.upper()}_PORT"] = str(port)
    settings = Settings()
    uvicorn.run(
        f"apps.{service}.app:app",
        host=settings.host,
        port=settings.port_of(service),
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.graceful_timeout_s),
    )
