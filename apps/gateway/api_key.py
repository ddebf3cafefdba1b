"""The optional API key (MSARCH_API_KEY): when it is set, /api/* and /ws require it.

HTTP clients send it in the X-API-Key header; websocket clients (browsers
cannot set headers on a websocket) as ?api_key=. /health, /metrics, / and the
docs stay open.
"""

import hashlib
import hmac

from fastapi import Request, WebSocket
from starlette.requests import HTTPConnection

from apps.gateway.deps import SettingsDep
from msarch.problems import Problem

API_KEY_HEADER = "X-API-Key"
API_KEY_QUERY = "api_key"


def is_authorized(expected: str | None, presented: str | None) -> bool:
    if not expected:
        return True
    # Constant time, so the key cannot be guessed a character at a time.
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """A dependency of /api/*: 401 problem+json without the right key."""
    if not is_authorized(settings.api_key, request.headers.get(API_KEY_HEADER)):
        raise Problem(
            401,
            "Unauthorized",
            f"this gateway requires an API key: send it in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'},
        )


def websocket_authorized(socket: WebSocket, expected: str | None) -> bool:
    presented = socket.query_params.get(API_KEY_QUERY) or socket.headers.get(API_KEY_HEADER)
    return is_authorized(expected, presented)


def client_of(connection: HTTPConnection) -> str:
    """Who a budget belongs to: the API key sent (hashed), else the client's address."""
    key = connection.headers.get(API_KEY_HEADER) or connection.query_params.get(API_KEY_QUERY)
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "addr:" + (connection.client.host if connection.client else "unknown")
