"""The last lines of a run: one line per figure that matters, per backend."""

from typing import Any


def _lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if publish := figures.get("publish"):
        lines.append(
            f"publish: {publish['pipelined_msgs_per_s']:,.0f} msgs/s pipelined vs "
            f"{publish['baseline_msgs_per_s']:,.0f} one confirm at a time ({publish['ratio']}x)"
        )
    if roundtrip := figures.get("roundtrip"):
        gw, direct = roundtrip["gateway"], roundtrip["direct"]
        lines.append(
            f"roundtrip: {gw['req_per_s']:,.0f} req/s p50 {gw['p50_ms']} ms p99 {gw['p99_ms']} ms "
            f"through the gateway vs {direct['req_per_s']:,.0f} req/s p50 {direct['p50_ms']} ms "
            f"direct; gateway CPU {gw['cpu_ms_per_request']['gateway']} ms/req; "
            f"POST->websocket p50 {roundtrip['websocket']['p50_ms']} ms"
        )
    if batch := figures.get("batch"):
        for run in batch["runs"]:
            rss = run["rss"]
            lines.append(
                f"batch {run['size']:>9,}: {run['status']} in {run['seconds']:,.1f} s, "
                f"{run['items_per_s']:,.0f} items/s, {run['events_per_s']:,.0f} events/s, "
                f"RSS +{rss['batch']['delta_mib']} MiB batch, "
                f"+{rss['store']['delta_mib']} MiB store"
            )
    if replay := figures.get("replay"):
        lines.append(
            f"replay: {replay['events']:,} events in {replay['seconds']} s "
            f"(rebuild {replay['rebuild_s']} s), projections equal: {replay['passed']}"
        )
    return lines


def print_summary(results: dict[str, dict[str, Any]]) -> None:
    print("\n== summary")
    for backend, figures in results.items():
        for line in _lines(figures):
            print(f"{backend:<6} {line}")
