"""Replay: rebuild every projection of the run's namespace from its event log, and compare."""

import time
from typing import Any

from bench.event_log import events_length
from bench.report import print_table
from msarch.replay import drop, replay_and_compare
from msarch.storage import Store
from msarch.testing.stack import Stack


async def bench_replay(stack: Stack, backend: str) -> dict[str, Any]:
    live = stack.store()
    # Under the run's namespace, so the run's cleanup deletes it whatever happens.
    scratch = Store.from_settings(stack.settings, namespace=f"{stack.settings.namespace}replay-")
    try:
        events = await events_length(live)
        started = time.perf_counter()
        report = await replay_and_compare(live, scratch)
        seconds = time.perf_counter() - started
        await drop(scratch)
    finally:
        await live.close()
        await scratch.close()
    figures = {
        "events": events,
        "seconds": round(seconds, 2),
        "rebuild_s": round(report.rebuild_s, 2),
        "compare_s": round(report.compare_s, 2),
        "events_per_s": round(events / report.rebuild_s, 1) if report.rebuild_s else None,
        "kv_keys": report.kv_keys,
        "batches": report.batches,
        "batch_fields": report.batch_fields,
        "passed": report.passed,
        "differences": report.differences[:5],
    }
    print_table(
        f"replay of the run's event log ({backend})",
        ["events", "rebuild s", "rebuild events/s", "compare s", "total s", "projections equal"],
        [[events, figures["rebuild_s"], figures["events_per_s"] or 0.0, figures["compare_s"],
          figures["seconds"], "yes" if report.passed else "NO"]],
        note="msarch.replay.replay_and_compare into a scratch namespace, after the runs above; "
        "baseline: none (a one-off job; rebuild events/s is the comparable figure)",
    )  # fmt: skip
    if not report.passed:
        print("   differences:", *report.differences[:5], sep="\n   ")
    return figures
