"""The bus's naming of broker objects (msarch.bus), on both backends, with nothing connected.

`broker_objects()` is what msarch.testing.isolation.delete_namespace deletes; these tests hold it to
what the bus actually subscribes on, so the two cannot drift apart.
"""

import asyncio
import re
from collections import Counter
from typing import Any, Literal, overload

import pytest
from faststream.nats.subscriber.usecases.stream_basic import StreamSubscriber
from faststream.rabbit.subscriber import RabbitSubscriber
from yarl import URL

from msarch import channels
from msarch.bus import Bus, PublishError, create_bus
from msarch.bus.base import pipelined
from msarch.bus.nats import NatsBus
from msarch.bus.rabbit import RabbitBus, with_heartbeat
from msarch.bus.rabbit_cluster import NodeConnection, work_policy
from msarch.settings import Settings

URLS = {"rabbit": "amqp://guest:guest@127.0.0.1:5672/", "nats": "nats://127.0.0.1:4222"}


@overload
def _bus(backend: Literal["rabbit"], namespace: str) -> RabbitBus: ...
@overload
def _bus(backend: Literal["nats"], namespace: str) -> NatsBus: ...
@overload
def _bus(backend: str, namespace: str) -> Bus[Any]: ...
def _bus(backend: str, namespace: str) -> Bus[Any]:
    bus = create_bus(Settings(namespace=namespace, broker_url=URLS[backend]), service="test")
    assert isinstance(bus, {"rabbit": RabbitBus, "nats": NatsBus}[backend])
    return bus


def _rabbit_subscribers(bus: RabbitBus) -> list[RabbitSubscriber]:
    subscribers = [s for s in bus.broker.subscribers if isinstance(s, RabbitSubscriber)]
    assert len(subscribers) == len(bus.broker.subscribers)
    return subscribers


def _stream_subscribers(bus: NatsBus) -> list[StreamSubscriber]:
    subscribers = [s for s in bus.broker.subscribers if isinstance(s, StreamSubscriber)]
    assert len(subscribers) == len(bus.broker.subscribers), "every NATS subscriber is JetStream"
    return subscribers


async def _handler(body: dict[str, Any]) -> None:
    """A handler that does nothing: only its registration matters here."""


@pytest.mark.parametrize("backend", URLS)
def test_every_broker_object_is_in_the_namespace(backend: str, namespace: str) -> None:
    names = [name for kind in _bus(backend, namespace).broker_objects().values() for name in kind]
    assert names
    assert all(name.startswith(namespace) for name in names), names


def test_rabbit_subscribes_on_the_objects_it_names(namespace: str) -> None:
    bus = _bus("rabbit", namespace)
    for channel in channels.ALL:
        bus.subscriber(channel)(_handler)
    objects = bus.broker_objects()
    for subscriber in _rabbit_subscribers(bus):
        if subscriber.exchange.name:  # a broadcast: the instance's own queue on the fanout
            assert subscriber.exchange.name in objects["exchange"]
        else:
            assert subscriber.queue.name in objects["queue"]
    for channel in channels.ALL:
        assert bus.dead_letter_queue(channel).name in objects["queue"]
    assert bus.dead_exchange.name in objects["exchange"]


def test_nats_subscribes_on_the_streams_it_names(namespace: str) -> None:
    bus = _bus("nats", namespace)
    for channel in channels.ALL:
        bus.subscriber(channel)(_handler)
    streams = bus.broker_objects()["stream"]
    assert {s.stream.name for s in _stream_subscribers(bus)} <= set(streams)
    assert bus.dead.name in streams


@pytest.mark.parametrize("backend", URLS)
async def test_drop_namespace_never_drops_the_unnamespaced_objects(backend: str) -> None:
    with pytest.raises(ValueError, match="MSARCH_NAMESPACE"):
        await _bus(backend, "").drop_namespace()


# -- clusters -----------------------------------------------------------------------------

THREE_NODES = ",".join(f"amqp://guest:guest@rabbitmq{n}:5672/" for n in (1, 2, 3))


def _work_arguments(settings: Settings) -> dict[str, Any]:
    bus = create_bus(settings, service="test")
    assert isinstance(bus, RabbitBus)
    return dict(bus._work_queue(channels.EVENT).arguments or {})


def test_a_work_queue_is_replicated_on_every_node_listed_unless_told_otherwise() -> None:
    assert _work_arguments(Settings(broker_url=THREE_NODES))["x-quorum-initial-group-size"] == 3
    told = Settings(broker_url=THREE_NODES, quorum_size=2)
    assert _work_arguments(told)["x-quorum-initial-group-size"] == 2
    assert "x-quorum-initial-group-size" not in _work_arguments(Settings(broker_url=URLS["rabbit"]))


def test_delivery_limit_and_dead_lettering_are_a_policy_when_the_management_api_is_known() -> None:
    as_arguments = _work_arguments(Settings(delivery_limit=7))
    assert as_arguments["x-delivery-limit"] == 7
    assert as_arguments["x-dead-letter-strategy"] == "at-least-once"
    with_policy = _work_arguments(
        Settings(delivery_limit=7, rabbit_management_url="http://guest:guest@127.0.0.1:15672")
    )
    assert not {"x-delivery-limit", "x-dead-letter-exchange", "x-overflow"} & set(with_policy)


def test_the_work_policy_matches_exactly_the_work_queues() -> None:
    policy = work_policy(["ns.event", "ns.batch"], {"delivery-limit": 5})
    pattern = re.compile(policy["pattern"])
    assert pattern.match("ns.event")
    assert pattern.match("ns.batch")
    assert not any(map(pattern.match, ["ns.event.dead", "nsXevent", "other.ns.batch", "ns.batc"]))
    assert policy["definition"] == {"delivery-limit": 5}


def test_a_rabbit_bus_on_several_nodes_connects_through_the_node_rotating_connection() -> None:
    bus = _bus("rabbit", "")
    assert "connection_class" not in bus.broker._connection_kwargs
    clustered = create_bus(Settings(broker_url=THREE_NODES), service="test")
    factory = clustered.broker._connection_kwargs["connection_class"]
    assert factory.func is NodeConnection
    assert factory.keywords["nodes"] == [f"{n}?heartbeat=10" for n in THREE_NODES.split(",")]


async def test_connections_spread_over_the_nodes_and_each_tries_every_node_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each connection starts at a node of its own choosing (the services of a cluster spread
    over it) and goes round the nodes from there until one answers."""
    attempts: list[str] = []

    async def connect(connection: NodeConnection) -> None:
        attempts.append(str(connection.url.host))
        if connection.url.host == "rabbitmq2":
            raise ConnectionError("rabbitmq2 is down")

    monkeypatch.setattr("msarch.bus.rabbit_cluster._connect_transport", connect)
    nodes = THREE_NODES.split(",")
    round_of = {"rabbitmq1": ["rabbitmq1"], "rabbitmq2": ["rabbitmq2", "rabbitmq3"]}
    round_of["rabbitmq3"] = ["rabbitmq3"]
    first_nodes: Counter[str] = Counter()
    for _ in range(60):
        attempts.clear()
        connection = NodeConnection(URL(nodes[0]), nodes=nodes)
        await connection._RobustConnection__connect_transport()
        first_nodes[attempts[0]] += 1
        assert attempts == round_of[attempts[0]]
        assert connection.url.host == attempts[-1]
    assert set(first_nodes) == {"rabbitmq1", "rabbitmq2", "rabbitmq3"}, first_nodes


async def test_a_reconnect_starts_at_a_survivor_picked_at_random(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connections a lost node had do not all move to the node after it: each reconnect
    starts at one of the other nodes, picked at random."""
    attempts: list[str] = []

    async def connect(connection: NodeConnection) -> None:
        attempts.append(str(connection.url.host))

    monkeypatch.setattr("msarch.bus.rabbit_cluster._connect_transport", connect)
    nodes = THREE_NODES.split(",")
    moves: Counter[tuple[str, str]] = Counter()
    for _ in range(90):
        connection = NodeConnection(URL(nodes[0]), nodes=nodes)
        await connection._RobustConnection__connect_transport()
        lost = str(connection.url.host)
        attempts.clear()
        await connection._RobustConnection__connect_transport()  # its node went away
        assert attempts[0] != lost, "never back to the node just lost first"
        moves[(lost, attempts[0])] += 1
    hosts = {str(URL(node).host) for node in nodes}
    for lost in hosts:
        assert {to for (was, to) in moves if was == lost} == hosts - {lost}, moves


async def test_a_connection_attempt_that_hangs_is_given_up_for_the_next_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node that takes the connection and then never answers (aio-pika waits on it without
    a limit) costs one attempt's time, then the next node is tried."""
    tried: list[str] = []

    async def connect(connection: NodeConnection) -> None:
        tried.append(str(connection.url.host))
        if connection.url.host == "rabbitmq1":
            await asyncio.Event().wait()  # silent for ever

    monkeypatch.setattr("msarch.bus.rabbit_cluster._connect_transport", connect)
    monkeypatch.setattr("msarch.bus.rabbit_cluster.ATTEMPT_TIMEOUT_S", 0.2)
    monkeypatch.setattr("msarch.bus.rabbit_cluster.random.randrange", lambda n: 0)
    nodes = THREE_NODES.split(",")
    connection = NodeConnection(URL(nodes[0]), nodes=nodes)
    async with asyncio.timeout(5):
        await connection._RobustConnection__connect_transport()
    assert tried == ["rabbitmq1", "rabbitmq2"]
    assert connection.url.host == "rabbitmq2"


def test_a_node_gone_silent_is_noticed_within_the_heartbeat() -> None:
    rabbit = create_bus(Settings(broker_url=THREE_NODES, broker_heartbeat_s=6), service="test")
    factory = rabbit.broker._connection_kwargs["connection_class"]
    assert all(node.endswith("?heartbeat=6") for node in factory.keywords["nodes"])
    own = with_heartbeat("amqp://guest:guest@h:5672/vh?heartbeat=30", 6)
    assert own == "amqp://guest:guest@h:5672/vh?heartbeat=30", "a URL's own heartbeat stands"
    nats = create_bus(Settings(broker_url="nats://n:4222", broker_heartbeat_s=6), service="t")
    assert nats.broker._connection_kwargs["ping_interval"] == 2, "three pings, 6 s"
    assert nats.broker._connection_kwargs["max_outstanding_pings"] == 2


def test_a_nats_bus_gets_every_server_and_the_stream_replicas() -> None:
    servers = "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"
    bus = create_bus(Settings(broker_url=servers, nats_replicas=3), service="test")
    assert isinstance(bus, NatsBus)
    assert bus.broker._connection_kwargs["servers"] == servers.split(",")
    assert {s.config.num_replicas for s in (bus.work, bus.broadcast, bus.dead)} == {3}


async def test_a_batch_item_whose_publish_failed_is_sent_again_within_the_retry_budget() -> None:
    attempts: Counter[str] = Counter()

    async def flaky(message_id: str, body: bytes) -> None:
        attempts[message_id] += 1
        if message_id == "b" and attempts[message_id] <= 2:
            raise ConnectionError("node went away")

    items = [("a", b"1"), ("b", b"2"), ("c", b"3")]
    assert await pipelined(items, flaky, window=2, retry_for_s=5) == 3
    assert attempts == {"a": 1, "b": 3, "c": 1}
    attempts.clear()
    with pytest.raises(PublishError, match="node went away"):
        await pipelined(items, flaky, window=2, retry_for_s=0)


async def _confirm_cancelled_by_the_library() -> None:
    """What aiormq does to a pending confirm when its connection closes: cancels the future."""
    confirm = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(confirm.cancel)
    await confirm


async def test_a_confirm_the_client_library_cancelled_is_a_failed_publish_not_a_shutdown() -> None:
    """A partition's heartbeat timeout closed the connection under a pending confirm: retried
    like any failed publish, a PublishError once the budget is spent, never a CancelledError
    (which uvicorn answers with a bare 500)."""
    attempts: Counter[str] = Counter()

    async def lost_once(message_id: str, body: bytes) -> None:
        attempts[message_id] += 1
        if attempts[message_id] == 1:
            await _confirm_cancelled_by_the_library()

    assert await pipelined([("a", b"1")], lost_once, window=1, retry_for_s=5) == 1
    assert attempts == {"a": 2}

    async def always_lost(message_id: str, body: bytes) -> None:
        await _confirm_cancelled_by_the_library()

    with pytest.raises(PublishError, match="CancelledError"):
        await pipelined([("a", b"1")], always_lost, window=1, retry_for_s=0)

    class Publisher:
        async def publish(self, *args: Any, **kwargs: Any) -> None:
            await _confirm_cancelled_by_the_library()

    bus = _bus("rabbit", "test-unit-confirm-")
    bus._publishers[channels.EVENT.name] = Publisher()
    with pytest.raises(PublishError, match="the connection closed before the confirm"):
        await bus.publish(channels.EVENT, channels.EVENT.payload(key="k", value="v"))


async def test_a_publish_whose_own_task_is_cancelled_still_ends_with_the_cancellation() -> None:
    async def hangs(message_id: str, body: bytes) -> None:
        await asyncio.sleep(60)

    publishing = asyncio.create_task(pipelined([("a", b"1")], hangs, window=1, retry_for_s=5))
    await asyncio.sleep(0.01)
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing


async def test_a_stream_whose_caller_gives_up_leaves_no_send_in_flight() -> None:
    """The batch service's deadline cancels publish_stream: the sends under way end with it."""
    started: list[str] = []
    ended: list[str] = []

    async def slow(message_id: str, body: bytes) -> None:
        started.append(message_id)
        try:
            await asyncio.sleep(60)
        finally:
            ended.append(message_id)

    items = ((str(i), b"x") for i in range(100))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await pipelined(items, slow, window=4)
    await asyncio.sleep(0)  # the cancelled sends run their finally
    assert started == ["0", "1", "2", "3"]
    assert sorted(ended) == started
