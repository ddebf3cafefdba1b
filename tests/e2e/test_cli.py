"""The `msarch` read commands (batches, values, events) against the running stack's gateway,
and the log's operator commands (snapshot, trim, replay) against its Redis."""

import asyncio
import json
import os
import subprocess
import sys
from uuid import uuid4

import httpx
import pytest
from typer.testing import CliRunner, Result

from msarch import channels
from msarch.cli import app
from msarch.events import event_position
from msarch.messages import KeyValue
from msarch.testing.isolation import env_of
from msarch.testing.load import metric
from msarch.testing.stack import Stack, wait_for
from tests.utils.broker import connected_bus

pytestmark = pytest.mark.e2e


async def msarch(stack: Stack, *args: str) -> Result:
    """`msarch ARGS --url <the stack's gateway>`, in a thread: the CLI's HTTP calls block."""
    command = [*args, "--url", stack.gateway_url]
    return await asyncio.to_thread(lambda: CliRunner().invoke(app, command))


async def test_batches_values_and_events_read_what_the_stack_stored(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 3})
    assert answer.status_code == 200, answer.text
    batch_id = answer.json()["batch_id"]

    listed = await msarch(stack, "batches", "--json", "--limit", "1000")
    assert listed.exit_code == 0, listed.output
    assert batch_id in json.loads(listed.output)

    values = await msarch(stack, "values", batch_id, "--json")
    assert values.exit_code == 0, values.output
    assert [item["key"] for item in json.loads(values.output)] == [
        f"{batch_id}_key_{index}" for index in range(3)
    ]
    table = await msarch(stack, "values", batch_id)
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if batch_id[:13] in line]
    assert [row.split()[1] for row in rows] == ["0", "1", "2"]  # "│ 0 │ <key> │ <value> │"

    events = await msarch(stack, "events", "--json", "--limit", "2")
    assert events.exit_code == 0, events.output
    page = json.loads(events.output)
    assert len(page["events"]) == 2
    assert page["next_after"] == page["events"][-1]["id"]


async def test_values_of_an_unknown_batch_says_404_and_exits_1(stack: Stack) -> None:
    result = await msarch(stack, "values", str(uuid4()))
    assert result.exit_code == 1
    assert "404" in result.output


async def operator(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`msarch ARGS` as an operator runs it next to the stack: its Redis and namespace."""
    env = {**os.environ, **env_of(stack.settings)}
    command = [sys.executable, "-m", "msarch", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120
    )


async def test_snapshot_trim_and_replay_from_the_snapshot_on_a_running_stack(
    private_stack: Stack,
) -> None:
    stack = private_stack
    refused = await operator(stack, "trim", "--keep", "0s")
    assert refused.returncode == 1
    assert "take one first (msarch snapshot)" in refused.stderr + refused.stdout
    async with httpx.AsyncClient(timeout=60) as client:
        for index in range(20):
            await client.post(
                f"{stack.gateway_url}/api/roundtrip", json={"key": f"snap-{index}", "value": "v"}
            )
        assert (await client.post(f"{stack.gateway_url}/api/batch", json={"size": 50})).is_success
        made = await operator(stack, "snapshot", "--json")
        assert made.returncode == 0, made.stderr
        snapshot = json.loads(made.stdout)
        for index in range(5):  # after the snapshot: kept by any trim
            await client.post(
                f"{stack.gateway_url}/api/roundtrip", json={"key": f"later-{index}", "value": "v"}
            )
    store = stack.store()
    try:
        await wait_for(lambda: store.get_value("later-4"), 30)
        trimmed = await operator(stack, "trim", "--keep", "0s", "--json")
        assert trimmed.returncode == 0, trimmed.stderr
        report = json.loads(trimmed.stdout)
        assert report["newest_removed"] == snapshot["event_id"]
        assert report["limited_by_snapshot"] is True
        left = await store.read_events(None, 1000)
        assert len(left) == 5
        assert all(event_position(e.id) > event_position(snapshot["event_id"]) for e in left)
    finally:
        await store.close()
    replayed = await operator(stack, "replay")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"from the snapshot as of event {snapshot['event_id']}" in replayed.stdout
    assert "PASS" in replayed.stdout
    whole = await operator(stack, "replay", "--from-start")
    assert whole.returncode == 1
    assert "no longer starts at its first event" in whole.stdout


async def test_dead_letters_through_the_gateway_the_cli_and_metrics(stack: Stack) -> None:
    """A poison message is listed over HTTP and by `msarch dead list`, counted in the store's
    /metrics, and dropped by the CLI; a good one dead-lettered is requeued by the CLI and
    stored once."""
    kv = KeyValue(key=f"dead-cli-{uuid4().hex[:6]}", value="v")
    async with connected_bus(stack.settings) as bus:
        poison = b'{"id": "not-a-uuid", "key": "k", "value": "v"}'
        await bus.publish_raw(channels.EVENT, poison, message_id=f"poison-{uuid4().hex[:6]}")
        await bus.dead_letter(
            bus.name(channels.EVENT), kv.model_dump_json().encode(), {}, "handler failed",
            message_id=str(kv.id), deliveries=5,
        )  # fmt: skip
    store_url = stack.settings.url_of("store")

    async def counted() -> bool:
        return await metric(store_url, "msarch_dead_letters", channel="event") == 2

    await wait_for(counted, 30, 0.5)
    async with httpx.AsyncClient(timeout=30) as client:
        listed = await client.get(f"{stack.gateway_url}/api/dead", params={"channel": "event"})
        wrong = await client.get(f"{stack.gateway_url}/api/dead", params={"channel": "nope"})
        neither = await client.post(f"{stack.gateway_url}/api/dead/requeue", json={})
    assert listed.status_code == 200, listed.text
    assert listed.json()["counts"]["event"] == 2
    letters = {d["message_id"]: d for d in listed.json()["letters"]}
    bad = next(d for d in letters.values() if d["preview"].startswith('{"id": "not-a-uuid"'))
    assert bad["reason"].startswith("invalid message:")
    assert (wrong.status_code, neither.status_code) == (422, 422)

    shown = await msarch(stack, "dead", "list", "--channel", "event")
    assert shown.exit_code == 0, shown.output
    assert "held: event 2," in shown.output
    dropped = await msarch(stack, "dead", "drop", bad["id"], "--json")
    assert dropped.exit_code == 0, dropped.output
    assert json.loads(dropped.output) == [bad["id"]]
    again = await msarch(stack, "dead", "drop", bad["id"])
    assert again.exit_code == 1
    assert "404" in again.output
    requeued = await msarch(stack, "dead", "requeue", "--all", "--channel", "event", "--json")
    assert requeued.exit_code == 0, requeued.output
    assert json.loads(requeued.output) == [letters[str(kv.id)]["id"]]
    store = stack.store()
    try:
        await wait_for(lambda: store.get_value(kv.key), 30)
    finally:
        await store.close()
    await wait_for(lambda: _no_dead(store_url), 30, 0.5)


async def _no_dead(store_url: str) -> bool:
    return await metric(store_url, "msarch_dead_letters", channel="event") == 0
