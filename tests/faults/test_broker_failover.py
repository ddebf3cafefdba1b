"""A broker given as several nodes: when the node every service is connected to goes away,
each service moves to the next node by itself, without a restart, and loses nothing.

The two "nodes" are two proxies in front of the machine's broker (msarch.testing.tcp_proxy):
cutting one is, for the services, exactly a node that died (every connection dropped, new ones
refused); silencing it is a node behind a partition (every connection open, nothing coming
through), which the services can only notice from their heartbeats. A real three-node cluster
is tests/clusters' business.
"""

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from msarch.testing.isolation import BROKERS
from msarch.testing.load import RoundtripLoad, events_once_stored, refusals
from msarch.testing.stack import StackFactory, wait_for
from msarch.testing.tcp_proxy import TcpProxy
from tests.utils.figures import Figures

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _through(proxy: TcpProxy, url: str) -> str:
    """`url` with the proxy in place of the server."""
    parts = urlsplit(url)
    credentials, at, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials}{at}127.0.0.1:{proxy.port}").geturl()


HEARTBEAT_S = 3.0
"""MSARCH_BROKER_HEARTBEAT_S here: how soon a service is to notice that its node went silent."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("loss", ["dies", "goes silent"])
async def test_services_move_to_the_next_node_when_theirs_goes_away(
    backend: str, stack_with: StackFactory, figures: Figures, loss: str
) -> None:
    shared = BROKERS[backend]
    port = urlsplit(shared).port or (5672 if backend == "rabbit" else 4222)
    first, second = TcpProxy(port), TcpProxy(port)
    await first.start()
    await second.start()
    try:
        nodes = f"{_through(first, shared)},{_through(second, shared)}"
        async with stack_with(broker_url=nodes, broker_heartbeat_s=HEARTBEAT_S) as stack:
            pids = {s: p.process.pid for s, p in stack.processes.items() if p.process}
            # aio-pika starts on the first node listed, nats-py on a random one (it spreads
            # clients over a cluster): the node to lose is one that has connections.
            dying, other = (first, second) if first.connections else (second, first)
            on_other_before = other.connections
            load = RoundtripLoad(stack.gateway_url, "failover", concurrency=8)
            stop = asyncio.Event()
            sending = asyncio.create_task(load.run(until=stop))
            await wait_for(lambda: len(load.confirmed) >= 100, 60)
            if loss == "dies":
                await dying.cut()  # for good
            else:
                dying.silence()
            cut_at = time.monotonic()
            lost = dying.connections
            confirmed_at_cut = len(load.confirmed)
            await wait_for(lambda: other.connections >= on_other_before + lost, 60, 0.1)
            moved_s = time.monotonic() - cut_at
            await wait_for(lambda: len(load.confirmed) >= confirmed_at_cut + 200, 60, 0.1)
            resumed_s = time.monotonic() - cut_at
            stop.set()
            await sending
            store = stack.store()
            try:
                mine = await events_once_stored(store, load.confirmed, 60)
            finally:
                await store.close()
            same_processes = pids == {
                s: p.process.pid for s, p in stack.processes.items() if p.process
            } and all(p.running for p in stack.processes.values())
    finally:
        await first.stop()
        await second.stop()
    figures(
        backend=backend,
        node=loss,
        requests=len(load.answers),
        confirmed=len(load.confirmed),
        statuses=sorted(load.statuses.items()),
        refused=dict(refusals(load.answers)),
        connections_on_lost_node=dying.connections,
        connections_moved_to_other_node=other.connections - on_other_before,
        seconds_until_every_connection_moved=round(moved_s, 2),
        seconds_until_200_more_confirmed=round(resumed_s, 2),
    )
    assert other.connections > on_other_before, "the services on the lost node moved"
    assert same_processes, "no service was restarted: each moved by itself"
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert set(mine) == set(load.confirmed), "every request answered 202 is stored"
    assert set(mine.values()) == {1}, "once"
    if loss == "goes silent":
        # aiormq's own grace, (heartbeat + 1) x 3 s, would be 12 s before the move even began.
        assert moved_s < 3 * HEARTBEAT_S, "every service left the silent node within 3 heartbeats"
