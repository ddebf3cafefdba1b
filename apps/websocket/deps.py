"""What the websocket service holds beyond its bus and store: the Hub of its clients.

The hub is one per service instance, built by create_service (dependencies=[Hub]);
the forward_roundtrip subscriber pushes into it and the /ws route joins it.
"""

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from apps.websocket.hub import Hub
from msarch.service import runtime_of


async def hub_of(connection: HTTPConnection) -> Hub:
    return (await runtime_of(connection)).dependency(Hub)


HubDep = Annotated[Hub, Depends(hub_of)]
