"""RabbitMQ beyond one node: a connection that moves between the cluster's nodes, and the
queue settings that are policies (changed without deleting a queue).

aio-pika's RobustConnection reconnects, but always to the one URL it was given. Each of
NodeConnection's connection attempts tries the nodes in turn instead, so a service outlives its
node without a restart. Its channels, consumers and declared queues are restored on the new
node by RobustConnection itself. A connection's first node is picked at random, and so is the
node a reconnect starts at, among the nodes other than the one it was on (most likely the node
that just went away): the services of a cluster spread over its nodes, and the loss of one node
moves only the connections it had, spread over the survivors, not every one of them onto the
same node (the node after it, as before 2026-12-08: in a partition test both roundtrip
instances had moved onto one node, and that node was the one cut off).

Quorum queues hold their delivery limit and dead-lettering in a policy when the management API
is configured (MSARCH_RABBIT_MANAGEMENT_URL): a policy can change on a running queue, a queue
argument only by deleting the queue and what it holds.
"""

import asyncio
import functools
import logging
import random
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aio_pika import RobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

log = logging.getLogger("msarch.bus.rabbit")

_connect_transport = RobustConnection._RobustConnection__connect_transport  # type: ignore[attr-defined]
"""RobustConnection's one connection attempt: to self.url (aio-pika 10.2, pinned)."""

ATTEMPT_TIMEOUT_S = 30.0
"""How long one node gets to take the connection and restore every channel, queue and consumer
on it. aio-pika waits on each without a limit, and a store stopped for good in a leader kill
(no frame, no log line, no connection on any node for ten minutes): an attempt that hangs is
given up and the next node tried."""


class NodeConnection(RobustConnection):
    """A RobustConnection whose every attempt tries each node of a cluster in turn."""

    def __init__(self, url: URL, *args: Any, nodes: Sequence[str], **kwargs: Any) -> None:
        super().__init__(url, *args, **kwargs)
        # A cluster shares its users and vhosts: each node gets the first URL's credentials,
        # vhost and the options FastStream put on it (heartbeat, connection name, ...).
        self.nodes = [
            url.with_host(node.host or "").with_port(node.port) for node in map(URL, nodes)
        ]
        self._next = random.randrange(len(self.nodes))
        self._on: int | None = None
        """The index of the node of the last connection made, if any."""

    async def _RobustConnection__connect_transport(self) -> None:
        if self._on is not None and len(self.nodes) > 1:
            self._next = random.choice([i for i in range(len(self.nodes)) if i != self._on])
        failure: BaseException | None = None
        for _ in self.nodes:
            index = self._next
            self.url = self.nodes[index]
            self._next = (index + 1) % len(self.nodes)
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                    await _connect_transport(self)
            except CONNECTION_EXCEPTIONS as exc:  # TimeoutError among them
                log.warning("RabbitMQ node %s does not answer: %r", self, exc)
                failure = exc
                await self._abandon(exc)
            else:
                log.info("connected to RabbitMQ node %s", self)
                self._on = index
                return
        assert failure is not None
        raise failure

    async def _abandon(self, reason: BaseException) -> None:
        """Close what a failed attempt left open (a timed-out restore leaves its transport)."""
        self.connected.clear()
        if self.transport is not None and not self.transport.connection.is_closed:
            await asyncio.gather(self.transport.connection.close(reason), return_exceptions=True)


def node_connection(nodes: Sequence[str]) -> Callable[..., RobustConnection]:
    """The `connection_class` for aio-pika's connect_robust that knows the cluster's nodes."""
    return functools.partial(NodeConnection, nodes=nodes)


# -- policies ----------------------------------------------------------------------------


def work_policy(queues: Sequence[str], definition: dict[str, Any]) -> dict[str, Any]:
    """The body of the policy that applies `definition` to exactly these queues."""
    return {
        "pattern": "^(" + "|".join(re.escape(q) for q in queues) + ")$",
        "apply-to": "queues",
        "priority": 10,
        "definition": definition,
    }


async def apply_policy(
    management_urls: str, vhost: str, name: str, policy: dict[str, Any], timeout_s: float = 10
) -> None:
    """PUT the policy through the first management API that answers (policies are
    cluster-wide, so any node will do); raise with every node's answer if none took it."""
    failures = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for node in filter(None, (u.strip() for u in management_urls.split(","))):
        url = urlsplit(node)
        auth = aiohttp.BasicAuth(url.username or "guest", url.password or "guest")
        base = f"{url.scheme}://{url.hostname}:{url.port or 15672}"
        endpoint = f"{base}/api/policies/{quote(vhost, safe='')}/{quote(name, safe='')}"
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, auth=auth) as session,
                session.put(endpoint, json=policy) as response,
            ):
                if response.status in (200, 201, 204):
                    return
                failures.append(f"{base}: {response.status} {(await response.text())[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{base}: {exc!r}")
    raise ConnectionError(f"no RabbitMQ management API took policy {name}: {failures}")
