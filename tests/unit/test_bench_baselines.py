"""The pure parts of the raw baselines: the names they create things under, their messages,
the publish window, and the JSON-lines talk with a child process (a real child, no broker)."""

import asyncio
import os
import sys
from uuid import uuid4

import pytest

from bench.baselines.chain_layout import ChainLayout
from bench.baselines.items import item_body, publish_pipelined
from bench.baselines.processes import Child, run_child, running, say, say_ready
from bench.baselines.topology import Names
from bench.session import NAMESPACE_PREFIX
from msarch.messages import BatchItem, item_of


def test_every_name_is_under_the_runs_own_bench_namespace() -> None:
    first, second = Names.new(), Names.new()
    assert first.namespace != second.namespace
    layout = ChainLayout(first)
    names = [
        layout.event, layout.forward, layout.websocket_queue, layout.work_stream,
        layout.broadcast_stream, layout.worker_consumer, layout.websocket_consumer,
        first.kv_key("k"),
    ]  # fmt: skip
    assert all(name.startswith(first.namespace) for name in names)
    assert first.namespace.startswith(NAMESPACE_PREFIX)
    assert len(set(names)) == len(names)


def test_stream_names_have_no_dot() -> None:
    names = Names("test-bench-abc-")
    assert names.of("forward.websocket") == "test-bench-abc-raw-forward.websocket"
    assert names.stream("forward.websocket") == "test-bench-abc-raw-forward_websocket"


def test_the_raw_message_is_msarchs_batch_item() -> None:
    item = item_of(uuid4(), 7, 10_000)
    body = item_body(item.batch_id, 7, 10_000)
    assert BatchItem.model_validate_json(body) == item
    assert abs(len(body) - len(item.model_dump_json())) <= 2


async def test_publish_pipelined_keeps_at_most_window_in_flight() -> None:
    in_flight, most, sent = 0, 0, []

    async def send(index: int) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001 * (index % 3))
        in_flight -= 1
        sent.append(index)

    await publish_pipelined(send, 50, window=8)
    assert sorted(sent) == list(range(50))
    assert most == 8


async def test_publish_pipelined_raises_the_first_failure_and_leaves_nothing_running() -> None:
    started: list[int] = []

    async def send(index: int) -> None:
        started.append(index)
        if index == 3:
            raise RuntimeError("nack")
        await asyncio.sleep(0.5)

    with pytest.raises(RuntimeError, match="nack"):
        await publish_pipelined(send, 1000, window=4)
    assert len(started) < 1000
    await asyncio.sleep(0)
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in leftovers if "send" in repr(t.get_coro())]


CHILD = "tests.unit.test_bench_baselines"
"""This module, run as a child (see the end of the file)."""


async def test_a_child_says_ready_then_its_figures_and_is_stopped() -> None:
    child = Child(CHILD, ["figures"])
    async with running(child):
        assert await child.message(10) == {"items_per_s": 123.0}
        assert child.process is not None
        pid = child.process.pid
    assert child.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_child_that_dies_says_why() -> None:
    child = Child(CHILD, ["fail"])
    with pytest.raises(RuntimeError, match=r"exited \(exit code 3\).*the broker said no"):
        async with running(child):
            pass


async def test_a_child_found_dead_later_says_why_too() -> None:
    child = Child(CHILD, ["exit-after-ready"])
    async with running(child):
        assert child.process is not None
        await child.process.wait()
        with pytest.raises(RuntimeError, match="exit code 4"):
            await child.check_running()


async def _child(mode: str) -> None:
    if mode == "fail":
        print("the broker said no", file=sys.stderr, flush=True)
        raise SystemExit(3)
    say_ready()
    if mode == "exit-after-ready":
        raise SystemExit(4)
    say(items_per_s=123.0)
    await asyncio.sleep(3600)  # until stopped


if __name__ == "__main__":
    run_child(_child(sys.argv[1]))
