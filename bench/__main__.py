"""`just bench`: msarch's benchmarks, each printed with the baseline measured in the same run.

    python -m bench                         every benchmark, both backends, 10,000-item batch
    python -m bench batch --backend nats --large   adds 100,000 and 1,000,000-item batches
    python -m bench publish roundtrip --backend rabbit
    python -m bench wait                    the cost of WAIT before an ack (no broker)
    python -m bench log-ceiling             how fast one Redis primary appends events (no broker)
    python -m bench log-upkeep              snapshot, trim and replay from the snapshot (no broker)
    python -m bench rate-limit              the gateway's CPU per request, rate limit on vs off
    python -m bench logs                    lines, bytes and CPU of the services' logs in a soak
    flock /tmp/msarch-docker.lock python -m bench cluster
                                            single node vs three-node cluster in containers

Each backend gets its own private stack (free loopback ports, a "test-bench-"
namespace) that is stopped and deleted on exit, Ctrl-C and errors included.
Figures go to bench/results/<date>-<backend>.json (wait, log-ceiling, log-upkeep: -redis.json,
cluster: -cluster.json). `cluster` needs Docker and is only run when named.
"""

import argparse
import asyncio
import atexit
import shlex
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.machine import describe_machine
from bench.report import save_results
from bench.session import BACKENDS, bench_stack
from msarch.testing.stack import kill_leftovers

BENCHMARKS = (
    "publish",
    "roundtrip",
    "batch",
    "replay",
    "rate-limit",
    "logs",
    "wait",
    "log-ceiling",
    "log-upkeep",
    "cluster",
)
"""In the order they run; roundtrip, batch and replay share one stack per backend; wait,
log-ceiling and log-upkeep need no broker and run once, on Redis servers of their own (saved
as "redis"); cluster brings up the compose stacks, single then cluster, on RabbitMQ (saved
as "cluster")."""
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
        "--concurrency", type=int, help="roundtrip connections (default 32; cluster: 16)"
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
        "--roundtrips", type=int, default=2000, help="cluster: roundtrips CPU is measured over"
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    if unknown := set(args.benchmarks) - set(BENCHMARKS):
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}: use {', '.join(BENCHMARKS)}")
    args.benchmarks = args.benchmarks or list(DEFAULT)
    if not 1 <= args.items <= 1_000_000:
        parser.error("--items must be between 1 and 1,000,000")
    return args


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

                measured(
                    "roundtrip",
                    await bench_roundtrip(
                        stack, backend, args.duration, args.concurrency or 32, args.samples or 200
                    ),
                )
            if "batch" in chosen:
                from bench.batch import bench_batch

                measured("batch", await bench_batch(stack, backend, args.items, args.large))
            if "replay" in chosen:
                from bench.replay import bench_replay

                measured("replay", await bench_replay(stack, backend))
            if "rate-limit" in chosen:
                from bench.rate_limit import bench_rate_limit

                measured("rate_limit", await bench_rate_limit(stack, backend))
    if "logs" in chosen:
        from bench.logs import bench_logs

        measured("logs", await bench_logs(backend, args.log_soak))
    return figures


async def run(args: argparse.Namespace, command: str) -> None:
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
    from bench.summary import print_summary

    print_summary(results)


def main() -> None:
    argv = sys.argv[1:]
    atexit.register(kill_leftovers)
    command = shlex.join(["python", "-m", "bench", *argv])
    try:
        asyncio.run(run(parse_args(argv), command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nbench: interrupted; stacks stopped and namespaces deleted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
