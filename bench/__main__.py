"""`just bench`: msarch's benchmarks, each printed with the baseline measured in the same run.

    python -m bench                         every benchmark, both backends, 10,000-item batch
    python -m bench batch --backend nats --large   adds 100,000 and 1,000,000-item batches
    python -m bench publish roundtrip --backend rabbit
    python -m bench wait                    the cost of WAIT before an ack (no broker)
    python -m bench log-ceiling             how fast one Redis primary appends events (no broker)
    python -m bench log-upkeep              snapshot, trim and replay from the snapshot (no broker)
    python -m bench rate-limit              the gateway's CPU per request, rate limit on vs off
    python -m bench tracing                 CPU per roundtrip and per batch item, tracing off,
                                            at the default sampling and on every request
    python -m bench logs                    lines, bytes and CPU of the services' logs in a soak
    flock /tmp/msarch-docker.lock python -m bench cluster
                                            single node vs three-node cluster in containers

    python -m bench batch roundtrip --repeat 1 --items 2000 --duration 3
                                            a quick look at msarch against the raw baselines
    python -m bench --json                  one JSON object on stdout; the rest on stderr

batch and roundtrip run their raw baselines (bench/baselines: the client libraries alone, at
msarch's durability) in the same run, each measurement right after msarch's, `--repeat` times
(3 by default); the last lines print msarch's figure, the baseline's, the ratio and whether
issue 15's target is met (bench/targets.py). `--no-baselines` leaves them out.

Each backend gets its own private stack (free loopback ports, a "test-bench-"
namespace) that is stopped and deleted on exit, Ctrl-C and errors included.
Figures go to bench/results/<date>-<backend>.json (wait, log-ceiling, log-upkeep: -redis.json,
cluster: -cluster.json), the plot to bench/results/<date>-plot.png (with matplotlib).
`cluster` needs Docker and is only run when named.
"""

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any

from bench.machine import describe_machine
from bench.report import RESULTS_DIR, run_document, save_results
from bench.session import BACKENDS, bench_stack
from msarch.testing.stack import Stack, kill_leftovers

if TYPE_CHECKING:
    from bench.batch import BatchBaseline
    from bench.roundtrip import RoundtripBaseline

BENCHMARKS = (
    "publish",
    "roundtrip",
    "batch",
    "replay",
    "rate-limit",
    "tracing",
    "logs",
    "wait",
    "log-ceiling",
    "log-upkeep",
    "cluster",
)
"""In the order they run; roundtrip, batch and replay share one stack per backend (tracing
brings up its own, one per sampling ratio); wait, log-ceiling and log-upkeep need no broker
and run once, on Redis servers of their own (saved as "redis"); cluster brings up the compose
stacks, single then cluster, on RabbitMQ (saved as "cluster")."""
DEFAULT = tuple(name for name in BENCHMARKS if name != "cluster")
"""What runs when none is named: cluster needs Docker and takes the machine ~15 minutes."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of {', '.join(BENCHMARKS)} (default: all but cluster)",
    )
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "both"],
        help="default: both (cluster: rabbit, the NATS pair only when asked)",
    )
    parser.add_argument("--items", type=int, default=10_000, help="batch size to measure")
    parser.add_argument(
        "--large", action="store_true", help="also 100,000 and 1,000,000-item batches"
    )
    parser.add_argument("--messages", type=int, default=5_000, help="messages per publish mode")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per roundtrip load")
    parser.add_argument(
        "--concurrency", type=int, help="roundtrip connections (default 32; cluster, tracing: 16)"
    )
    parser.add_argument(
        "--samples", type=int, help="POST->websocket samples (default 200; cluster: 150)"
    )
    parser.add_argument(
        "--log-soak", type=float, default=30.0, help="logs: seconds of soak per log level"
    )
    parser.add_argument("--writes", type=int, default=1000, help="writes per WAIT mode")
    parser.add_argument(
        "--log-seconds", type=float, default=5.0, help="seconds per log-ceiling cell"
    )
    parser.add_argument(
        "--log-items", type=int, default=1_000_000, help="log-upkeep: items in the batch logged"
    )
    parser.add_argument("--confirms", type=int, default=3000, help="cluster: msgs per confirm mode")
    parser.add_argument(
        "--roundtrips",
        type=int,
        default=2000,
        help="cluster, tracing: roundtrips CPU is measured over",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each compared figure; medians (default 3)"
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="leave out the raw baselines (bench/baselines)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout, the rest on stderr"
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    if unknown := set(args.benchmarks) - set(BENCHMARKS):
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}: use {', '.join(BENCHMARKS)}")
    args.benchmarks = args.benchmarks or list(DEFAULT)
    if not 1 <= args.items <= 1_000_000:
        parser.error("--items must be between 1 and 1,000,000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


@asynccontextmanager
async def raw_chain(
    backend: str, stack: Stack, args: argparse.Namespace
) -> AsyncIterator["RoundtripBaseline | None"]:
    """The roundtrip's raw baseline, with the stack's prefetch; None with --no-baselines."""
    if args.no_baselines:
        yield None
        return
    from bench.baselines.chain import running_chain

    print(f"bench: {backend}: starting the raw chain ...", flush=True)
    async with running_chain(backend, stack.settings) as chain:
        yield chain


def raw_batch_of(backend: str, stack: Stack, args: argparse.Namespace) -> "BatchBaseline | None":
    """The batch's raw baseline, with the stack's window and prefetch; None with
    --no-baselines."""
    if args.no_baselines:
        return None
    from bench.baselines.batch import raw_batch

    return lambda size: raw_batch(backend, size, stack.settings)


async def run_backend(
    backend: str, args: argparse.Namespace, keep: Callable[[str, Any], None]
) -> dict[str, Any]:
    """Run the chosen benchmarks; `keep` each figure as soon as it is measured."""
    figures: dict[str, Any] = {}

    def measured(name: str, value: Any) -> None:
        figures[name] = value
        keep(name, value)

    chosen = set(args.benchmarks)
    if "publish" in chosen:
        from bench.publish import bench_publish

        measured("publish", await bench_publish(backend, args.messages))
    if chosen & {"roundtrip", "batch", "replay", "rate-limit"}:
        async with bench_stack(backend) as stack:
            if "roundtrip" in chosen:
                from bench.roundtrip import bench_roundtrip

                async with raw_chain(backend, stack, args) as chain:
                    roundtrip = await bench_roundtrip(
                        stack, backend, args.duration, args.concurrency or 32,
                        args.samples or 200, args.repeat, chain,
                    )  # fmt: skip
                measured("roundtrip", roundtrip)
            if "batch" in chosen:
                from bench.batch import bench_batch

                baseline = raw_batch_of(backend, stack, args)
                batch = await bench_batch(
                    stack, backend, args.items, args.large, args.repeat, baseline
                )
                measured("batch", batch)
            if "replay" in chosen:
                from bench.replay import bench_replay

                measured("replay", await bench_replay(stack, backend))
            if "rate-limit" in chosen:
                from bench.rate_limit import bench_rate_limit

                measured("rate_limit", await bench_rate_limit(stack, backend))
    if "tracing" in chosen:
        from bench.tracing import bench_tracing

        tracing = await bench_tracing(
            backend, args.roundtrips, args.concurrency or 16, args.items, args.repeat
        )
        measured("tracing", tracing)
    if "logs" in chosen:
        from bench.logs import bench_logs

        measured("logs", await bench_logs(backend, args.log_soak))
    return figures


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every benchmark chosen; the run's document (what --json prints)."""
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    machine = await describe_machine()
    print("bench: machine:", ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    backends = list(BACKENDS) if args.backend in (None, "both") else [args.backend]
    results: dict[str, dict[str, Any]] = {}

    def keep(name: str, value: Any, target: str) -> None:
        if not args.no_save:
            path = save_results(target, {name: value}, machine, command)
            print(f"bench: {name} figures written to {path}", flush=True)

    for backend in backends:
        results[backend] = await run_backend(backend, args, partial(keep, target=backend))
    if "wait" in args.benchmarks:
        from bench.wait import bench_wait

        results["redis"] = {"wait": await bench_wait(args.writes)}
        keep("wait", results["redis"]["wait"], target="redis")
    if "log-ceiling" in args.benchmarks:
        from bench.log_ceiling import bench_log_ceiling

        ceiling = await bench_log_ceiling(args.log_seconds)
        results.setdefault("redis", {})["log_ceiling"] = ceiling
        keep("log_ceiling", ceiling, target="redis")
    if "log-upkeep" in args.benchmarks:
        from bench.log_upkeep import bench_log_upkeep

        upkeep = await bench_log_upkeep(args.log_items)
        results.setdefault("redis", {})["log_upkeep"] = upkeep
        keep("log_upkeep", upkeep, target="redis")
    if "cluster" in args.benchmarks:
        from bench.cluster import ClusterOptions, bench_cluster

        options = ClusterOptions(
            confirms=args.confirms,
            roundtrips=args.roundtrips,
            items=args.items,
            **({"samples": args.samples} if args.samples else {}),
            **({"concurrency": args.concurrency} if args.concurrency else {}),
        )
        figures = results.setdefault("cluster", {})
        for backend in backends if args.backend else ["rabbit"]:
            # RabbitMQ's keeps the plain name: it is the benchmark's first figure.
            name = "cluster" if backend == "rabbit" else f"cluster_{backend}"
            figures[name] = await bench_cluster(options, backend)
            keep(name, figures[name], target="cluster")
    from bench.plot import save_plot
    from bench.summary import print_summary
    from bench.targets import all_met, comparisons

    found = comparisons(results)
    print_summary(results, found)
    title = f"{command} · {date.today()} · load average at start {machine['load_average']}"
    path = RESULTS_DIR / f"{date.today()}-plot.png"
    plot = None if args.no_save else save_plot(results, path, title)
    if plot is not None:
        print(f"bench: plot written to {plot}", flush=True)
    return run_document(
        machine, command, results, [c.as_dict() for c in found], all_met(found), plot
    )


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """What this process and its children write to stdout goes to stderr while inside."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # children inherit file descriptor 1
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    argv = sys.argv[1:]
    atexit.register(kill_leftovers)
    command = shlex.join(["python", "-m", "bench", *argv])
    args = parse_args(argv)
    try:
        if not args.json:
            asyncio.run(run(args, command))
            return
        with stdout_to_stderr():
            document = asyncio.run(run(args, command))
        print(json.dumps(document, allow_nan=False), flush=True)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbench: interrupted; stacks stopped and namespaces deleted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
