"""The `msarch` command: run the stack, and talk to it through the gateway."""

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from msarch.settings import get_settings

if TYPE_CHECKING:
    from msarch.storage import Store

app = typer.Typer(
    help="msarch: event-sourced microservices on a real broker.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="gateway URL (default http://127.0.0.1:8000)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON, for scripts")]


def _gateway(url: str | None) -> str:
    return (url or get_settings().url_of("gateway")).rstrip("/")


def _headers() -> dict[str, str]:
    key = os.environ.get("MSARCH_API_KEY")
    return {"X-API-Key": key} if key else {}


def _fail(message: str) -> NoReturn:
    err.print(f"[red]msarch:[/red] {message}")
    raise typer.Exit(1)


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, url, headers=_headers(), **kwargs)
    except httpx.ConnectError:
        _fail(f"cannot reach the gateway at {url.split('/api')[0]}: is the stack up? (`just up`)")
    except httpx.TimeoutException:
        _fail(f"no answer from {url} in time")


def _get_json(url: str, as_json: bool, **kwargs: Any) -> Any:
    """GET a page of the API: its JSON body; printed as it is with --json (then None)."""
    response = _request("GET", url, **kwargs)
    if response.status_code != 200:
        _problem(response)
    body = response.json()
    if as_json:
        print(json.dumps(body))
        return None
    return body


def _problem(response: httpx.Response) -> NoReturn:
    try:
        body = response.json()
        detail = body.get("detail") or ""
        _fail(f"{response.status_code} {body.get('title', '')}: {detail}".rstrip(": "))
    except ValueError:
        _fail(f"{response.status_code}: {response.text[:200]}")


@app.command()
def up() -> None:
    """Run the whole stack on this machine until Ctrl-C."""
    from msarch import up as stack

    raise typer.Exit(asyncio.run(stack.run(get_settings())))


@app.command()
def serve(
    service: Annotated[
        str, typer.Argument(envvar="SERVICE", help="gateway, roundtrip, batch, websocket or store")
    ],
    host: Annotated[str | None, typer.Option(help="address to bind (default MSARCH_HOST)")] = None,
    port: Annotated[
        int | None,
        typer.Option(envvar="PORT", help="port to listen on (default MSARCH_<SERVICE>_PORT)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's own log level")] = "info",
) -> None:
    """Run one service in this process (what `msarch up` and the container image start)."""
    from msarch.serving import serve as serve_one

    try:
        serve_one(service, host, port, log_level)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def batch(
    size: Annotated[int | None, typer.Option("--size", "-n", help="items in the batch")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a batch of SIZE items and wait until it is stored."""
    body = {} if size is None else {"size": size}
    started = time.perf_counter()
    timeout = get_settings().batch_timeout_s + 600
    if as_json:
        response = _request("POST", f"{_gateway(url)}/api/batch", json=body, timeout=timeout)
    else:
        with out.status(f"batch of {size or 'default'} items: publishing and waiting..."):
            response = _request("POST", f"{_gateway(url)}/api/batch", json=body, timeout=timeout)
    if response.status_code != 200:
        if as_json:
            print(response.text)
            raise typer.Exit(1)
        _problem(response)
    result = response.json()
    if as_json:
        print(json.dumps(result))
        return
    seconds = time.perf_counter() - started
    out.print(
        f"[green]{result['status']}[/green] batch {result['batch_id']}: "
        f"{result['size']} items in {result['elapsed_ms'] / 1000:.2f} s "
        f"({result['size'] / max(seconds, 1e-9):,.0f} items/s)"
    )


@app.command()
def batches(offset: int = 0, limit: int = 20, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List stored batches, newest first."""
    params = {"offset": offset, "limit": limit}
    ids = _get_json(f"{_gateway(url)}/api/batch/batchkeys", as_json, params=params)
    if ids is None:
        return
    for batch_id in ids:
        out.print(batch_id)
    if not ids:
        out.print("no stored batches")


@app.command()
def values(
    batch_id: str,
    offset: int = 0,
    limit: Annotated[int | None, typer.Option(help="at most this many items")] = 100,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the key/values of a stored batch, in item order."""
    params: dict[str, int] = {"offset": offset}
    if limit is not None:
        params["limit"] = limit
    address = f"{_gateway(url)}/api/batch/batchvalues/{batch_id}"
    items = _get_json(address, as_json, params=params, timeout=120)
    if items is None:
        return
    table = Table("#", "key", "value")
    for index, item in enumerate(items, start=offset):
        table.add_row(str(index), item["key"], item["value"])
    out.print(table)


@app.command()
def roundtrip(key: str, value: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Send KEY=VALUE and print its websocket echo and the latency."""
    from msarch.client import roundtrip_once

    try:
        echo, latency_ms = asyncio.run(roundtrip_once(_gateway(url), key, value, _headers()))
    except ConnectionError as exc:
        _fail(str(exc))
    except RuntimeError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps({"echo": echo, "latency_ms": latency_ms}))
        return
    out.print_json(data=echo)
    out.print(f"round trip: {latency_ms:.1f} ms")


@app.command()
def health(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show every service and dependency."""
    response = _request("GET", f"{_gateway(url)}/health", timeout=10)
    body = response.json()
    if as_json:
        print(json.dumps(body))
        raise typer.Exit(0 if response.status_code == 200 else 1)
    table = Table("service", "status", "broker", "redis")
    table.add_row("gateway", "ok", "-", "-")
    for service, state in body.get("upstreams", {}).items():
        table.add_row(
            service, state.get("status", "?"), state.get("broker", "-"), state.get("redis", "-")
        )
    out.print(table)
    if response.status_code != 200:
        raise typer.Exit(1)


@app.command()
def events(
    after: Annotated[str | None, typer.Option(help="start after this event id")] = None,
    limit: int = 50,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a page of the event log, oldest first."""
    params: dict[str, str | int] = {"limit": limit}
    if after:
        params["after"] = after
    page = _get_json(f"{_gateway(url)}/api/events", as_json, params=params)
    if page is None:
        return
    table = Table("event id", "type", "time", "payload")
    for event in page["events"]:
        payload = json.dumps(event["payload"], ensure_ascii=False)
        table.add_row(event["id"], event["type"], event["time"][:23], payload[:80])
    out.print(table)
    if page["next_after"]:
        out.print(f"more: msarch events --after {page['next_after']}")


@app.command()
def replay(
    keep: Annotated[bool, typer.Option(help="keep the rebuilt namespace")] = False,
    from_start: Annotated[
        bool, typer.Option(help="from the first event, not the latest snapshot")
    ] = False,
) -> None:
    """Rebuild every projection from the latest snapshot and the event log after it (or the
    whole log) and compare it with the live one."""
    from uuid import uuid4

    from msarch.replay import drop, replay_and_compare
    from msarch.snapshots import LogNotCovered, restore_into
    from msarch.storage import Store

    settings = get_settings()

    async def run() -> bool:
        live = Store.from_settings(settings)
        scratch_ns = f"{settings.namespace}replay-{uuid4().hex[:8]}-"
        scratch = Store.from_settings(settings, namespace=scratch_ns)
        try:
            after = None if from_start else await restore_into(live, scratch)
            if after:
                out.print(f"from the snapshot as of event {after}")
            report = await replay_and_compare(live, scratch, after)
        except LogNotCovered as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(f"cannot reach Redis at {settings.redis_url}: {exc}")
        finally:
            if not keep:
                await drop(scratch)
            await live.close()
            await scratch.close()
        table = Table("event type", "count")
        for kind, count in sorted(report.events.items()):
            table.add_row(kind, f"{count:,}")
        out.print(table)
        total = sum(report.events.values())
        out.print(
            f"replayed {total:,} events in {report.rebuild_s:.2f} s "
            f"({total / max(report.rebuild_s, 1e-9):,.0f} events/s); compared "
            f"{report.kv_keys:,} kv keys, {report.batches:,} batches "
            f"({report.batch_fields:,} fields) in {report.compare_s:.2f} s"
        )
        if keep:
            out.print(f"rebuilt projections kept under {scratch_ns}msarch:")
        for difference in report.differences:
            out.print(f"[red]differs:[/red] {difference}")
        out.print("[green]PASS[/green]" if report.passed else "[red]FAIL[/red]")
        return report.passed

    raise typer.Exit(0 if asyncio.run(run()) else 1)


@app.command()
def snapshot(as_json: JsonOpt = False) -> None:
    """Snapshot the projections as of the log's last event (replay and trim start from it)."""
    from dataclasses import asdict

    from msarch.snapshots import LogNotCovered, SnapshotBusy, take

    async def run() -> dict[str, Any]:
        async with _live_store() as store:
            try:
                return asdict(await take(store))
            except (LogNotCovered, SnapshotBusy) as exc:
                _fail(str(exc))

    made = asyncio.run(run())
    if as_json:
        out.print_json(data=made)
        return
    out.print(
        f"snapshot as of event {made['event_id']}: {made['events_applied']:,} events applied "
        f"in {made['seconds']:.2f} s, under {made['namespace']}msarch:"
    )


@app.command()
def trim(
    before: Annotated[
        str | None, typer.Option(help="remove the events before this event id")
    ] = None,
    keep: Annotated[
        str | None, typer.Option(help="remove the events older than this: 90m, 12h, 7d")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old events from the log, never one that the latest snapshot does not hold."""
    from dataclasses import asdict

    from msarch.events import is_event_id
    from msarch.snapshots import LogNotCovered, keep_bound
    from msarch.snapshots import trim as trim_log

    if (before is None) == (keep is None):
        _fail("give one of --before <event id> or --keep <duration>")
    if before is not None and not is_event_id(before):
        _fail(f"--before takes an event id like 1700000000000-0, not {before!r}")
    try:
        bound = before or keep_bound(keep or "")
    except ValueError as exc:
        _fail(str(exc))

    async def run() -> dict[str, Any]:
        async with _live_store() as store:
            try:
                return asdict(await trim_log(store, bound))
            except LogNotCovered as exc:
                _fail(str(exc))

    done = asyncio.run(run())
    if as_json:
        out.print_json(data=done)
        return
    out.print(f"removed {done['removed']:,} events; the log now starts at {done['first_kept']}")
    if done["limited_by_snapshot"]:
        out.print("(not further: the latest snapshot holds no event after that)")


dead = typer.Typer(help="The dead letters: what could not be handled, and why.")
app.add_typer(dead, name="dead")
ChannelOpt = Annotated[
    str | None,
    typer.Option(help="event, forward_roundtrip, batch or batch_reply (default: every one)"),
]


@dead.command("list")
def dead_list(
    channel: ChannelOpt = None, limit: int = 100, url: UrlOpt = None, as_json: JsonOpt = False
) -> None:
    """The dead letters with their reason, when, deliveries and the start of the body."""
    params: dict[str, str | int] = {"limit": limit, **({"channel": channel} if channel else {})}
    found = _get_json(f"{_gateway(url)}/api/dead", as_json, params=params)
    if found is None:
        return
    table = Table("id", "channel", "dead at", "deliveries", "reason", "body")
    for letter in found["letters"]:
        table.add_row(
            letter["id"],
            letter["channel"],
            (letter["dead_at"] or "")[:23],
            str(letter["deliveries"] or ""),
            letter["reason"][:60],
            letter["preview"][:40],
        )
    out.print(table)
    counts = ", ".join(f"{name} {count:,}" for name, count in found["counts"].items())
    out.print(f"held: {counts}")


@dead.command("requeue")
def dead_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="dead letter ids")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
    channel: ChannelOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send dead letters back onto their channel, with their original message ids."""
    _dead_action("requeue", ids, every, channel, url, as_json)


@dead.command("drop")
def dead_drop(
    ids: Annotated[list[str], typer.Argument(help="dead letter ids")],
    channel: ChannelOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove dead letters for good."""
    _dead_action("drop", ids, False, channel, url, as_json)


def _dead_action(
    action: str,
    ids: list[str] | None,
    every: bool,
    channel: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    if every == bool(ids):
        _fail("give the ids of the dead letters, or --all")
    body = {"ids": ids or [], "all": every, "channel": channel}
    response = _request("POST", f"{_gateway(url)}/api/dead/{action}", json=body, timeout=120)
    if response.status_code != 200:
        _problem(response)
    done = response.json()["ids"]
    if as_json:
        print(json.dumps(done))
        return
    verb = "requeued" if action == "requeue" else "dropped"
    out.print(f"{verb} {len(done):,}: {' '.join(done)}" if done else f"{verb} none")


@contextlib.asynccontextmanager
async def _live_store() -> AsyncIterator["Store"]:
    from msarch.storage import Store

    settings = get_settings()
    store = Store.from_settings(settings)
    try:
        yield store
    except OSError as exc:
        _fail(f"cannot reach Redis at {settings.redis_url}: {exc}")
    finally:
        await store.close()


def main() -> None:  # pragma: no cover - console script entry
    sys.exit(app())
