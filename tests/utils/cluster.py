"""The cluster stack under test (infra/compose.cluster.yaml) on one backend: who leads, whether a
node serves, whether the cluster is whole, each asked of the engines themselves.

Nodes are named by their compose services (rabbitmq1..3, nats1..3). RabbitMQ is asked through
the management API of a given node, not rabbitmqctl: during a partition the CLI can hang on the
majority side for a while, the API answers.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
import httpx
import nats
from aiormq.exceptions import AMQPError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from msarch.testing.stack import wait_for
from tests.utils.compose import (
    NATS_SERVERS,
    RABBITMQ_NODES,
    ComposeError,
    ComposeStack,
    stream_detail,
)

Backend = Literal["rabbit", "nats"]
WORK_QUEUES = ("event", "batch")
"""RabbitMQ's work queues in the stack (its namespace is empty)."""
WORK_STREAM = "msarch-work"
"""The NATS stream of the `event` and `batch` subjects."""
BROADCAST_STREAM = "msarch-broadcast"
"""The NATS stream of `forward_roundtrip` and `batch_reply`."""
ASK_TIMEOUT_S = 5.0
PROBE = "msarch-test-probe"
"""A quorum queue / a 3-replica stream of the test's own, for publishing to one node alone."""


@dataclass
class Cluster:
    stack: ComposeStack
    backend: Backend

    @property
    def nodes(self) -> tuple[str, ...]:
        return RABBITMQ_NODES if self.backend == "rabbit" else NATS_SERVERS

    async def _get(self, node: str, port: int, path: str) -> httpx.Response:
        """GET from a node's HTTP port (RabbitMQ management, NATS monitoring) at its address."""
        address = await self.stack.service_address(node)
        async with httpx.AsyncClient(timeout=ASK_TIMEOUT_S, auth=("guest", "guest")) as client:
            return await client.get(f"http://{address}:{port}{path}")

    # -- who leads -----------------------------------------------------------------

    async def leaders(self, *, asking: str | None = None) -> dict[str, str]:
        """Queue or stream -> its leader, as node `asking` (default: the first node) sees it:
        RabbitMQ's `event` and `batch` quorum queues, or NATS's work stream."""
        node = asking or self.nodes[0]
        if self.backend == "rabbit":
            leaders = {}
            for queue in WORK_QUEUES:
                answer = await self._get(node, 15672, f"/api/queues/%2F/{queue}")
                leaders[queue] = str(answer.json().get("leader", "")).partition("@")[2]
            return leaders
        detail = stream_detail(await self.stack.jsz(node, "streams=true"), WORK_STREAM) or {}
        return {WORK_STREAM: detail.get("cluster", {}).get("leader", "")}

    async def replicas(self) -> dict[str, int]:
        """Queue or stream -> on how many nodes it is held."""
        if self.backend == "rabbit":
            return {
                queue: len((await self.queue(queue)).get("members", [])) for queue in WORK_QUEUES
            }
        detail = stream_detail(await self.stack.jsz(self.nodes[0], "streams=true"), WORK_STREAM)
        return {
            WORK_STREAM: 1 + len(detail.get("cluster", {}).get("replicas", [])) if detail else 0
        }

    async def queue(self, name: str) -> dict[str, Any]:
        """RabbitMQ's management API view of a queue (policy, members, messages...)."""
        answer = await self._get(self.nodes[0], 15672, f"/api/queues/%2F/{name}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    async def leader(self) -> str:
        """The node leading the work (`event`'s queue on RabbitMQ, the work stream on NATS)."""
        return next(iter((await self.leaders()).values()))

    async def lead_all_from(self, node: str) -> dict[str, str]:
        """Make `node` the leader of all the work and answer the leaders once it is. NATS holds
        the work in one stream, so only RabbitMQ has anything to move: each work queue led
        elsewhere has its leadership transferred to `node` (what `rabbitmq-upgrade drain` does
        to a node's queues; the CLI of 3.10 has no command for one queue). Since the services'
        connections spread over the nodes, the queues' leaders land where each was first
        declared, often on two nodes."""
        if self.backend == "rabbit":
            for queue, leader in (await self.leaders(asking=node)).items():
                if leader != node:
                    await self._transfer_leadership(queue, node)

        async def led_from_node() -> bool:
            return set((await self.leaders(asking=node)).values()) == {node}

        await wait_for(led_from_node, 30, 0.5)
        return await self.leaders(asking=node)

    async def _transfer_leadership(self, queue: str, node: str) -> None:
        erlang = (
            f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{queue}">>)), '
            f"rabbit_quorum_queue:transfer_leadership(Q, 'rabbit@{node}')."
        )
        container = await self.stack.container(node)
        answer = await self.stack.docker("exec", container, "rabbitmqctl", "eval", erlang)
        if "migrated" not in answer:
            raise AssertionError(f"{queue}'s leadership not moved to {node}: {answer.strip()}")

    # -- health --------------------------------------------------------------------

    async def serves(self, node: str) -> bool:
        """Does the node take work? RabbitMQ: its rabbit app runs (a minority node pauses it and
        closes its listeners). NATS: its full /healthz passes (a server cut off from the meta
        leader fails it; its streams have no quorum and confirm no publish). Asked inside the
        node's container, which a partition does not cut off from the test."""
        if self.backend == "rabbit":
            command = ["rabbitmq-diagnostics", "-q", "-t", "5", "check_running"]
        else:
            command = ["wget", "-qO-", "-T", "5", "http://127.0.0.1:8222/healthz"]
        try:
            container = await self.stack.container(node)
            await self.stack.docker("exec", container, *command, timeout_s=15)
        except (ComposeError, ValueError):  # ValueError: its container is not running
            return False
        return True

    async def formed(self) -> bool:
        """Every node is running and back in the one cluster, as the nodes themselves say."""
        try:
            if self.backend == "rabbit":
                for node in self.nodes:
                    answer = await self._get(node, 15672, "/api/nodes")
                    listed = answer.json()
                    if answer.status_code != 200 or not isinstance(listed, list):
                        return False  # a node still starting answers with an error object
                    running = [n for n in listed if n["running"]]
                    if len(running) != len(self.nodes) or any(n["partitions"] for n in running):
                        return False
                    if not await self.serves(node):
                        return False
                return True
            for node in self.nodes:
                if (await self._get(node, 8222, "/healthz")).status_code != 200:
                    return False
            return True
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    async def whole(self) -> bool:
        """The cluster is formed and every container of the stack is healthy again."""
        return await self.formed() and await self.stack.healthy()

    async def whole_again(self, timeout_s: float) -> list[str]:
        """Wait until the cluster is whole; a node that has not come back by itself within
        `timeout_s` is restarted, as an operator (or a health-check restart) would, and named
        in the answer: a RabbitMQ node once stayed out of a healed cluster for good (its rabbit
        app stopped, its Erlang link to one of the others never made again)."""
        try:
            await wait_for(self.whole, timeout_s, 1)
            return []
        except TimeoutError:
            stuck = [node for node in self.nodes if not await self.serves(node)]
        for node in stuck:
            await self.stack.docker("restart", await self.stack.container(node), timeout_s=120)
        await wait_for(self.whole, 240, 1)
        return stuck

    # -- one node alone --------------------------------------------------------------

    @asynccontextmanager
    async def _channel(self, node: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        """A channel (publisher confirms on) of a connection to `node` alone."""
        address = await self.stack.service_address(node)
        url = f"amqp://guest:guest@{address}:5672/"
        async with await aio_pika.connect(url, timeout=ASK_TIMEOUT_S) as connection:
            yield await connection.channel()

    @asynccontextmanager
    async def _jetstream(self, node: str) -> AsyncIterator[JetStreamContext]:
        """JetStream through a connection to `node` alone (no reconnect to another server)."""
        address = await self.stack.service_address(node)
        client = await nats.connect(
            f"nats://{address}:4222", allow_reconnect=False, connect_timeout=ASK_TIMEOUT_S
        )
        try:
            yield client.jetstream(timeout=ASK_TIMEOUT_S)
        finally:
            await client.close()

    async def make_probe(self, node: str) -> None:
        """The probe queue or stream, replicated on every node, made through `node`."""
        if self.backend == "rabbit":
            async with self._channel(node) as channel:
                await channel.declare_queue(
                    PROBE, durable=True, arguments={"x-queue-type": "quorum"}
                )
        else:
            async with self._jetstream(node) as js:
                config = StreamConfig(name=PROBE, subjects=[PROBE], num_replicas=len(self.nodes))
                await js.add_stream(config)

    async def drop_probe(self, node: str) -> None:
        if self.backend == "rabbit":
            async with self._channel(node) as channel:
                await channel.queue_delete(PROBE)
        else:
            async with self._jetstream(node) as js:
                await js.delete_stream(PROBE)

    async def publish_alone(self, node: str) -> str:
        """Publish one message to the probe through `node` alone, as a client of that node
        only: "confirmed", or how it was refused (no connection, a nack, no confirm within
        ASK_TIMEOUT_S). Asked from the test host, which a partition (ComposeStack.cut_off)
        does not cut off."""
        try:
            if self.backend == "rabbit":
                async with self._channel(node) as channel:
                    publish = channel.default_exchange.publish(
                        aio_pika.Message(b"probe"), routing_key=PROBE
                    )
                    await asyncio.wait_for(publish, ASK_TIMEOUT_S)
            else:
                async with self._jetstream(node) as js:
                    await js.publish(PROBE, b"probe")
            return "confirmed"
        except TimeoutError:
            return f"no confirm within {ASK_TIMEOUT_S:g} s"
        except (OSError, AMQPError, NatsError) as exc:
            return f"refused: {type(exc).__name__}"

    # -- what NATS holds -------------------------------------------------------------

    async def forwarded_ids(self, node: str) -> set[str]:
        """The ids of every key/value the store forwarded that the broadcast stream holds, read
        through `node` with a consumer of the test's own (gone with the connection)."""
        found: set[str] = set()
        async with self._jetstream(node) as js:
            reader = await js.pull_subscribe(
                "forward_roundtrip",
                stream=BROADCAST_STREAM,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.NONE,
                    deliver_policy=DeliverPolicy.ALL,
                    inactive_threshold=10.0,
                ),
            )
            while True:
                try:
                    batch = await reader.fetch(1000, timeout=2)
                except TimeoutError:
                    return found
                found.update(json.loads(m.data)["id"] for m in batch)

    async def broadcast_consumers(self, node: str) -> dict[str, dict[str, int]]:
        """Each websocket instance's broadcast consumer, as `node` sees it: how far it has
        delivered and been acked, and what is still pending."""
        async with self._jetstream(node) as js:
            consumers = await js.consumers_info(BROADCAST_STREAM)
        return {
            str(c.name): {
                "delivered": int(c.delivered.stream_seq or 0) if c.delivered else 0,
                "ack_floor": int(c.ack_floor.stream_seq or 0) if c.ack_floor else 0,
                "pending": int(c.num_pending or 0),
                "ack_pending": int(c.num_ack_pending or 0),
                "redelivered": int(c.num_redelivered or 0),
            }
            for c in consumers
            if str(c.name).startswith("forward_roundtrip-")
        }
