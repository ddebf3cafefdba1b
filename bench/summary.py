"""The last lines of a run: one line per figure that matters, per backend, then each target:
msarch's figure, its raw baseline's, the ratio and whether the target is met."""

from collections.abc import Sequence
from typing import Any

from bench.targets import Comparison, all_met
from bench.tracing import comparison_line, verdict_line


def _lines(figures: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if publish := figures.get("publish"):
        lines.append(
            f"publish: {publish['pipelined_msgs_per_s']:,.0f} msgs/s pipelined vs "
            f"{publish['baseline_msgs_per_s']:,.0f} one confirm at a time ({publish['ratio']}x)"
        )
    if roundtrip := figures.get("roundtrip"):
        lines += _roundtrip_lines(roundtrip)
    if batch := figures.get("batch"):
        lines += _batch_lines(batch)
    if limit := figures.get("rate_limit"):
        lines.append(
            f"rate limit: gateway CPU {limit['on']['gateway_cpu_ms_per_request']} ms/request "
            f"with it vs {limit['off']['gateway_cpu_ms_per_request']} ms without "
            f"({limit['cpu_ratio_on_off']}x)"
        )
    if tracing := figures.get("tracing"):
        lines += _tracing_lines(tracing)
    if wait := figures.get("wait"):
        base, waited = wait["wait_0"], wait["wait_1"]
        lines.append(
            f"wait: store_key_value p50 {waited['p50_ms']} ms p99 {waited['p99_ms']} ms with "
            f"WAIT 1 vs p50 {base['p50_ms']} ms p99 {base['p99_ms']} ms on the primary's word "
            f"({wait['p50_ratio']}x)"
        )
    if ceiling := figures.get("log_ceiling"):
        top = ceiling["max_events_per_s"]
        lines.append(
            f"log ceiling: store_key_value {top['python_alone']:,.0f} events/s from one Python "
            f"client ({top['python_wait_1']:,.0f} with WAIT 1), {top['c_client_alone']:,.0f} "
            f"from redis-benchmark ({top['c_client_replica']:,.0f} feeding a replica)"
        )
    for cluster in (figures.get("cluster"), figures.get("cluster_nats")):
        if not cluster:
            continue
        single, three = cluster["single"], cluster["cluster"]
        lines.append(
            f"cluster vs single ({cluster['backend']}): confirms pipelined "
            f"{three['confirms']['pipelined_msgs_per_s']:,.0f} vs "
            f"{single['confirms']['pipelined_msgs_per_s']:,.0f} msgs/s, websocket p50 "
            f"{three['frame_latency']['p50_ms']} vs {single['frame_latency']['p50_ms']} ms, batch "
            f"{three['batch']['items_per_s_median']:,.0f} vs "
            f"{single['batch']['items_per_s_median']:,.0f} items/s"
        )
    if replay := figures.get("replay"):
        lines.append(
            f"replay: {replay['events']:,} events in {replay['seconds']} s "
            f"(rebuild {replay['rebuild_s']} s), projections equal: {replay['passed']}"
        )
    return lines


def _roundtrip_lines(roundtrip: dict[str, Any]) -> list[str]:
    gw, direct = roundtrip["gateway"], roundtrip["direct"]
    lines = [
        f"roundtrip: {gw['req_per_s']:,.0f} req/s p50 {gw['p50_ms']} ms p99 {gw['p99_ms']} ms "
        f"through the gateway vs {direct['req_per_s']:,.0f} req/s p50 {direct['p50_ms']} ms "
        f"direct; gateway CPU {gw['cpu_ms_per_request']['gateway']} ms/req; "
        f"POST->websocket p50 {roundtrip['websocket']['p50_ms']} ms"
    ]
    if raw := roundtrip.get("raw"):
        load, latency = raw["load"], raw["latency"]
        cpu = ", ".join(f"{k} {v}" for k, v in load["cpu_ms_per_request"].items())
        lines.append(
            f"roundtrip {raw['name']}: {load['completed_per_s']:,.0f} completed/s "
            f"({load['req_per_s']:,.0f} req/s), POST->websocket p50 {latency['p50_ms']} ms "
            f"p99 {latency['p99_ms']} ms; CPU ms/req {cpu}"
        )
    return lines


def _batch_lines(batch: dict[str, Any]) -> list[str]:
    lines = []
    for run in batch["runs"]:
        rss = run["rss"]
        lines.append(
            f"batch {run['size']:>9,}: {run['status']} in {run['seconds']:,.1f} s, "
            f"{run['items_per_s']:,.0f} items/s, {run['events_per_s']:,.0f} events/s, "
            f"RSS +{rss['batch']['delta_mib']} MiB batch, "
            f"+{rss['store']['delta_mib']} MiB store"
        )
    if raw := batch.get("raw"):
        rates = ", ".join(f"{r['size']:,}: {r['items_per_s']:,.0f}" for r in raw["runs"])
        lines.append(f"batch {raw['name']} items/s: {rates}")
    return lines


def _tracing_lines(tracing: dict[str, Any]) -> list[str]:
    modes: dict[str, Any] = tracing["modes"]
    roundtrip = {m: f["roundtrip"]["cpu_us_per_roundtrip"]["total"] for m, f in modes.items()}
    batch = {m: f["batch"]["cpu_us_per_item"]["total"] for m, f in modes.items()}
    default = tracing["default_sample"]
    return [
        comparison_line("tracing: roundtrip CPU/req total", roundtrip),
        comparison_line("tracing: batch CPU/item total", batch),
        verdict_line(default, tracing["default_overhead_pct"], tracing["limit_pct"]),
    ]


def print_summary(
    results: dict[str, dict[str, Any]], comparisons: Sequence[Comparison] = ()
) -> None:
    print("\n== summary")
    for backend, figures in results.items():
        for line in _lines(figures):
            print(f"{backend:<6} {line}")
    if comparisons:
        print("\n== targets (issue 15: msarch against the raw baselines of this run)")
        for comparison in comparisons:
            print(comparison.line())
        verdict = {True: "every target met", False: "not every target met", None: "cannot tell"}
        print(verdict[all_met(list(comparisons))])
