"""`just bench`: msarch's benchmarks, each printed with the baseline measured in the same run.

    python -m bench                         every benchmark, both backends, 10,000-item batch
    python -m bench batch --backend nats --large   adds 100,000 and 1,000,000-item batches
    python -m bench publish roundtrip --backend rabbit

Each backend gets its own private stack (free loopback ports, a "test-bench-"
namespace) that is stopped and deleted on exit, Ctrl-C and errors included.
Figures go to bench/results/<date>-<backend>.json.
"""

import argparse
import asyncio
import atexit
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

from bench.machine import describe_machine
from bench.report import save_results
from bench.session import BACKENDS, bench_stack
from msarch.testing.stack import kill_leftovers

BENCHMARKS = ("publish", "roundtrip", "batch", "replay")
"""In the order they run; roundtrip, batch and replay share one stack per backend."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "benchmarks",
        nargs="*",
        metavar="BENCHMARK",
        help=f"any of {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--items", type=int, default=10_000, help="batch size to measure")
    parser.add_argument(
        "--large", action="store_true", help="also 100,000 and 1,000,000-item batches"
    )
    parser.add_argument("--messages", type=int, default=5_000, help="messages per publish mode")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per roundtrip load")
    parser.add_argument("--concurrency", type=int, default=32, help="roundtrip connections")
    parser.add_argument("--samples", type=int, default=200, help="POST->websocket samples")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    if unknown := set(args.benchmarks) - set(BENCHMARKS):
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))}: use {', '.join(BENCHMARKS)}")
    args.benchmarks = args.benchmarks or list(BENCHMARKS)
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
    if chosen & {"roundtrip", "batch", "replay"}:
        async with bench_stack(backend) as stack:
            if "roundtrip" in chosen:
                from bench.roundtrip import bench_roundtrip

                measured(
                    "roundtrip",
                    await bench_roundtrip(
                        stack, backend, args.duration, args.concurrency, args.samples
                    ),
                )
            if "batch" in chosen:
                from bench.batch import bench_batch

                measured("batch", await bench_batch(stack, backend, args.items, args.large))
            if "replay" in chosen:
                from bench.replay import bench_replay

                measured("replay", await bench_replay(stack, backend))
    return figures


async def run(args: argparse.Namespace, command: str) -> None:
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    machine = await describe_machine()
    print("bench: machine:", ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:

        def keep(name: str, value: Any, backend: str = backend) -> None:
            if not args.no_save:
                path = save_results(backend, {name: value}, machine, command)
                print(f"bench: {name} figures written to {path}", flush=True)

        results[backend] = await run_backend(backend, args, keep)
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
