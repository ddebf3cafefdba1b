"""The `msarch` read commands (batches, values, events) against the running stack's gateway."""

import asyncio
import json
from uuid import uuid4

import httpx
import pytest
from typer.testing import CliRunner, Result

from msarch.cli import app
from msarch.testing.stack import Stack

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
