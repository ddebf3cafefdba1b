"""The pure parts of `python -m bench cluster` and `log-ceiling`: where a container's CPU is,
how it is read and charged per unit, and the side-by-side table. No Docker, no server."""

import math
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import (
    _split,
    comparison_rows,
    compose_stack,
    one_instance_per_core,
    per_core_rows,
)
from bench.container_cpu import (
    CpuSample,
    cpu_ns_per_unit,
    idle_rates,
    parse_usage_ns,
    per_core,
    service_group,
    usage_file,
    usage_files,
)
from bench.report import ratio_text

CID = "f" * 64


@pytest.mark.parametrize(
    "layout",
    [
        f"cpu,cpuacct/docker/{CID}/cpuacct.usage",
        f"cpuacct/docker/{CID}/cpuacct.usage",
        f"cpuacct/system.slice/docker-{CID}.scope/cpuacct.usage",
        f"system.slice/docker-{CID}.scope/cpu.stat",
    ],
)
def test_the_usage_file_is_found_in_each_cgroup_layout(tmp_path: Path, layout: str) -> None:
    path = tmp_path / layout
    path.parent.mkdir(parents=True)
    path.write_text("1\n")
    assert path in usage_files(CID, tmp_path)
    assert usage_file(CID, tmp_path) == path


def test_no_usage_file_names_every_path_tried(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cpuacct/docker/fff") as raised:
        usage_file(CID, tmp_path)
    assert "cpu.stat" in str(raised.value)


def test_v1_usage_is_nanoseconds_and_v2_is_microseconds() -> None:
    assert parse_usage_ns(Path("cpuacct.usage"), "9159780920\n") == 9_159_780_920
    v2 = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"
    assert parse_usage_ns(Path("cpu.stat"), v2) == 1_500_000
    with pytest.raises(ValueError, match="usage_usec"):
        parse_usage_ns(Path("cpu.stat"), "user_usec 1\n")


@pytest.mark.parametrize(
    ("service", "group"),
    [
        ("gateway", "gateway"),
        ("gateway-2", "gateway"),
        ("rabbitmq", "rabbitmq"),
        ("rabbitmq3", "rabbitmq"),
        ("redis-replica", "redis"),
        ("sentinel1", "sentinel"),
        ("nats2", "nats"),
        ("store", "store"),
    ],
)
def test_instances_are_grouped_by_service(service: str, group: str) -> None:
    assert service_group(service) == group


def test_cpu_per_unit_sums_instances_and_takes_off_the_idle_rate() -> None:
    before = CpuSample(at=100.0, ns={"a": 0, "b": 1_000, "c": 0})
    after = CpuSample(at=110.0, ns={"a": 30_000_000, "b": 10_001_000, "c": 5_000})
    groups = {"a": "store", "b": "store", "c": "gateway"}
    assert cpu_ns_per_unit(before, after, groups, 1000) == {
        "gateway": 5.0,
        "store": 40_000.0,
    }
    # 1 ms/s idle on a is 10 ms over the 10 s phase; c's idle exceeds what it spent: 0, not < 0.
    idle = {"a": 1_000_000.0, "c": 1_000.0}
    assert cpu_ns_per_unit(before, after, groups, 1000, idle) == {
        "gateway": 0.0,
        "store": 30_000.0,
    }


def test_idle_rates_are_ns_per_second() -> None:
    rates = idle_rates(CpuSample(0.0, {"a": 0}), CpuSample(4.0, {"a": 80_000_000}))
    assert rates == {"a": 20_000_000.0}


def test_per_core_is_one_core_over_the_cpu_per_unit() -> None:
    assert per_core(500_000) == 2000.0  # 0.5 ms of CPU per roundtrip: 2,000/s on one core
    assert per_core(0) == math.inf


def test_ratio_text() -> None:
    assert ratio_text(200.0, 50.0) == "0.25x"
    assert ratio_text(0.0, 5.0) == "n/a"
    assert ratio_text(float("nan"), 5.0) == "n/a"


def test_the_load_is_shared_between_gateways() -> None:
    assert _split(2000, 2) == [1000, 1000]
    assert _split(15, 2) == [8, 7]
    assert _split(16, 1) == [16]


def _stack_figures(scale: float) -> dict[str, Any]:
    cpu = {"gateway": 1.0 * scale, "store": 2.0 * scale, "rabbitmq": 0.5 * scale}
    return {
        "confirms": {"one_at_a_time_msgs_per_s": 400 / scale, "pipelined_msgs_per_s": 2000 / scale},
        "frame_latency": {"p50_ms": 10 * scale, "p99_ms": 40 * scale, "post_202_p50_ms": 5.0},
        "roundtrip": {
            "req_per_s": 100.0,
            "cpu_ms_per_unit": cpu,
            "per_core_units_per_s": {k: 1000 / v for k, v in cpu.items()},
        },
        "batch": {
            "items_per_s_median": 500 / scale,
            "cpu_us_per_unit": {k: v * 100 for k, v in cpu.items()},
            "per_core_units_per_s": {k: 1e6 / (v * 100) for k, v in cpu.items()},
        },
    }


def test_comparison_rows_put_single_and_cluster_side_by_side() -> None:
    results = {
        "backend": "rabbit",
        "options": {"window": 64, "items": 10_000},
        "single": _stack_figures(1.0),
        "cluster": _stack_figures(2.0),
    }
    rows = {str(row[0]): row[1:] for row in comparison_rows(results)}
    assert rows["confirms pipelined (window 64), msgs/s"] == [2000.0, 1000.0, "0.50x"]
    assert rows["POST -> websocket frame p50, ms"] == [10.0, 20.0, "2.00x"]
    assert rows["batch of 10,000, items/s (median)"] == [500.0, 250.0, "0.50x"]
    assert rows["CPU ms per roundtrip, store"] == [2.0, 4.0, "2.00x"]
    assert rows["CPU us per batch item, rabbitmq"] == [50.0, 100.0, "2.00x"]
    missing = rows["CPU ms per roundtrip, batch"]  # a service with no figure: no ratio
    assert math.isnan(float(str(missing[0])))
    assert missing[2] == "n/a"


def test_per_core_rows_name_each_service_and_its_flows() -> None:
    rows = {row[0]: row[1:] for row in per_core_rows(_stack_figures(1.0))}
    assert list(rows) == ["gateway", "roundtrip", "batch", "websocket", "store"]
    assert rows["gateway"] == [1.0, 1000.0, 100.0, 10_000.0]
    assert rows["store"] == [2.0, 500.0, 200.0, 5_000.0]
    assert rows["batch"][1] == "-"  # not on the roundtrip's path


def test_a_broadcast_instance_handles_every_unit() -> None:
    # Two store instances share the roundtrips: 3 ms summed is what one roundtrip costs.
    assert one_instance_per_core("store", 3_000_000, 2) == pytest.approx(333.3, abs=0.1)
    # Two websocket instances each push every roundtrip: each spends half the sum.
    assert one_instance_per_core("websocket", 2_000_000, 2) == 1000.0


def test_the_nats_stacks_use_the_profile_and_every_server() -> None:
    single, cluster = compose_stack("single", "nats"), compose_stack("cluster", "nats")
    assert single.env["MSARCH_COMPOSE_BROKER_URL"] == "nats://nats:4222"
    assert cluster.env["MSARCH_COMPOSE_BROKER_URL"] == (
        "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"
    )
    assert cluster.env["COMPOSE_PROFILES"] == "nats"
    assert cluster.env["MSARCH_COMPOSE_STACK"] == "cluster"
    rabbit = compose_stack("cluster", "rabbit")
    assert "MSARCH_COMPOSE_BROKER_URL" not in rabbit.env  # the file's three RabbitMQ nodes
    assert rabbit.env["MSARCH_BATCH_TIMEOUT_S"] == "600"
    assert rabbit.project.startswith("msarch-bench-")
