"""Where each route goes: the gateway's routing table and the service addresses.

Addresses are static (MSARCH_<SERVICE>_PORT on MSARCH_HOST) for now.
"""

from dataclasses import dataclass

from msarch.settings import Settings


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    timeout_s: float


def routes_of(settings: Settings) -> list[Route]:
    """Longest prefix first. A batch may legitimately take a while: its route waits longer."""
    return [
        Route("/api/roundtrip", "roundtrip", 10.0),
        Route("/api/batch", "batch", settings.batch_timeout_s + settings.upstream_timeout_s),
        Route("/api/events", "websocket", 10.0),
    ]


class Upstreams:
    """Resolves a service name to a base URL."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def resolve(self, service: str) -> str:
        return self.settings.url_of(service)

    def ws_url(self, service: str, path: str) -> str:
        return self.resolve(service).replace("http://", "ws://", 1) + path
