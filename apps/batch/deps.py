"""What the batch service holds beyond its bus and store: the requests waiting for a reply.

The Waiters are one per service instance, built by create_service
(dependencies=[Waiters]); the batch_reply subscriber resolves them and the
POST /api/batch route waits on them.
"""

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from apps.batch.waiters import Waiters
from msarch.service import runtime_of


async def waiters_of(connection: HTTPConnection) -> Waiters:
    return (await runtime_of(connection)).dependency(Waiters)


WaitersDep = Annotated[Waiters, Depends(waiters_of)]
