"""WS /ws: every roundtrip, as one JSON text frame each."""

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from apps.websocket.handlers import HUB

router = APIRouter(tags=["websocket"])


@router.websocket("/ws")
async def ws(client: WebSocket) -> None:
    await client.accept()
    HUB.join(client)
    try:
        while True:
            # Clients have nothing to say; reading notices when they leave.
            await client.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        HUB.leave(client)
