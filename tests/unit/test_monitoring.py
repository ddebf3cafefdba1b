"""Metrics for users: infra/prometheus.yml (checked by Debian's promtool), the Grafana dashboard
infra/grafana/msarch-dashboard.json (against tests/schemas/grafana-dashboard.json, msarch's own
minimal schema of Grafana's dashboard JSON model, and its PromQL by promtool) with its
provisioning, and the `monitoring` profile of both compose files.

Grafana itself cannot run here (no package source ships it): what it would refuse is checked
from the files. tests/e2e/test_prometheus.py runs a real Prometheus with the scrape jobs and
every dashboard query against a stack.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from msarch.settings import SERVICES, Settings
from tests.utils.compose_spec import errors_of
from tests.utils.dashboard import SCHEMA_FILE, load_dashboard, panels, queries
from tests.utils.prometheus import SCRAPE_CONFIG, for_stack, project_config
from tests.utils.series import expected_series, metric_names

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
GRAFANA = INFRA / "grafana"
COMPOSE_FILES = (INFRA / "compose.yaml", INFRA / "compose.cluster.yaml")
LOCAL_OVERRIDES = (INFRA / "compose.local.yaml", INFRA / "compose.cluster.local.yaml")
MONITORING = ("prometheus", "grafana", "jaeger")
METRIC_DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(msarch_\w+)\"")

Document = dict[str, Any]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "these tests need promtool (Debian's prometheus): tests/prepare.sh installs it",
            pytrace=False,
        )
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, check=False)


def load_yaml(path: Path) -> Document:
    document: Document = yaml.safe_load(path.read_text())
    return document


def code_metrics() -> set[str]:
    """Every msarch metric the services define (prometheus_client's constructors)."""
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "apps").rglob("*.py")]
    return {name for path in sources for name in METRIC_DEFINITION.findall(path.read_text())}


def of_a_family(name: str, families: set[str]) -> bool:
    """`name` is one of `families`, or a series of one (a histogram's _bucket, _count)."""
    return any(name == family or name.startswith(f"{family}_") for family in families)


# The scrape configuration.


def test_scrape_configuration_is_valid_for_prometheus() -> None:
    checked = promtool("check", "config", str(SCRAPE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_one_scrape_job_per_service_on_its_port() -> None:
    jobs = {job["job_name"]: job for job in project_config()["scrape_configs"]}
    assert set(jobs) == set(SERVICES)
    for service, job in jobs.items():
        [discovery] = job["dns_sd_configs"]
        assert service in discovery["names"], service
        assert discovery["port"] == Settings.model_fields[f"{service}_port"].default, service


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_instance_of_the_compose_stacks_is_scraped(compose_file: Path) -> None:
    """Each compose service running an msarch service (the cluster's gateway-2 too) is a DNS
    name of that service's job."""
    names = {
        job["job_name"]: {n for d in job["dns_sd_configs"] for n in d["names"]}
        for job in project_config()["scrape_configs"]
    }
    for name, service in load_yaml(compose_file)["services"].items():
        runs = (service.get("environment") or {}).get("SERVICE")
        if runs is not None:
            assert name in names[runs], f"{compose_file.name}: {name} ({runs}) is not scraped"


def test_the_test_configuration_keeps_the_jobs_and_scrapes_the_stack(tmp_path: Path) -> None:
    settings = Settings(host="127.0.0.1", gateway_port=18000, store_port=18004)
    config = for_stack(project_config(), settings, 1.0)
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets["gateway"] == ["127.0.0.1:18000"]
    assert targets["store"] == ["127.0.0.1:18004"]
    assert set(targets) == set(SERVICES)
    written = tmp_path / "prometheus.yml"
    written.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(written))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# The Grafana dashboard.


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_dashboard_matches_the_schema(validator: Draft202012Validator) -> None:
    assert errors_of(validator, load_dashboard()) == []


def _without_title(d: Document) -> None:
    del d["title"]


def _too_wide(d: Document) -> None:
    d["panels"][1]["gridPos"]["w"] = 25


def _no_position(d: Document) -> None:
    del d["panels"][1]["gridPos"]


def _no_query(d: Document) -> None:
    del d["panels"][1]["targets"][0]["expr"]


def _string_schema_version(d: Document) -> None:
    d["schemaVersion"] = "39"


def _unknown_panel_key(d: Document) -> None:
    d["panels"][1]["target"] = d["panels"][1]["targets"]


@pytest.mark.parametrize(
    "breaking",
    [
        _without_title,
        _too_wide,
        _no_position,
        _no_query,
        _string_schema_version,
        _unknown_panel_key,
    ],
)
def test_schema_rejects_a_broken_dashboard(validator: Draft202012Validator, breaking: Any) -> None:
    """The check above means something: each of these breaks it."""
    dashboard = load_dashboard()
    breaking(dashboard)
    assert errors_of(validator, dashboard) != []


def test_panels_have_unique_ids_and_do_not_overlap_on_the_grid() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_query_uses_the_provisioned_prometheus() -> None:
    [source] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")[
        "datasources"
    ]
    wanted = {"type": "prometheus", "uid": source["uid"]}
    for panel in panels(load_dashboard()):
        assert panel["datasource"] == wanted, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", wanted) == wanted, panel["title"]


def test_dashboard_queries_are_promql_prometheus_accepts(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule's expression (no server needed)."""
    rules = [
        {"record": f"msarch:dashboard:{index}", "expr": expr}
        for index, (_, expr) in enumerate(queries(load_dashboard()))
    ]
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(rule_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_shows_every_metric_the_services_define() -> None:
    shown = {name for _, expr in queries(load_dashboard()) for name in metric_names(expr)}
    defined = code_metrics()
    assert defined, "no metric definition found: is METRIC_DEFINITION out of date?"
    assert {m for m in defined if not any(of_a_family(s, {m}) for s in shown)} == set()


def test_dashboard_reads_only_metrics_the_services_define() -> None:
    defined = code_metrics()
    for title, expr in queries(load_dashboard()):
        unknown = {name for name in metric_names(expr) if not of_a_family(name, defined)}
        assert unknown == set(), f"{title}: {unknown}"


def test_the_series_the_e2e_test_expects_are_defined() -> None:
    defined = code_metrics()
    for series in expected_series(namespace=""):
        assert of_a_family(series.metric, defined), series.selector


# Compose: Prometheus and Grafana for users, behind the `monitoring` profile.


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=lambda path: path.name)
def monitoring(request: pytest.FixtureRequest) -> dict[str, Document]:
    services: dict[str, Document] = load_yaml(request.param)["services"]
    return {name: services[name] for name in MONITORING}


def test_monitoring_is_a_profile_of_pinned_upstream_images(monitoring: dict[str, Document]) -> None:
    for name, service in monitoring.items():
        assert service["profiles"] == ["monitoring"], name
        image, _, tag = service["image"].partition(":")
        assert image in ("prom/prometheus", "grafana/grafana", "jaegertracing/all-in-one"), name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a version, not {tag!r}"
        assert service["restart"] == "always"
        assert service["healthcheck"]["test"], name


def test_jaeger_takes_otlp_and_the_services_can_be_pointed_at_it(
    monitoring: dict[str, Document],
) -> None:
    assert monitoring["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    for path in COMPOSE_FILES:
        environment = load_yaml(path)["x-msarch-environment"]
        assert environment["MSARCH_OTEL_ENDPOINT"] == "${MSARCH_COMPOSE_OTEL_ENDPOINT:-}", path


def test_prometheus_reads_the_project_scrape_configuration(monitoring: dict[str, Document]) -> None:
    prometheus = monitoring["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus(
    monitoring: dict[str, Document],
) -> None:
    grafana = monitoring["grafana"]
    mounts = {source: target for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = load_yaml(GRAFANA / "provisioning" / "dashboards" / "msarch.yaml")["providers"]
    dashboard_in = mounts["./grafana/msarch-dashboard.json"]
    assert Path(dashboard_in).parent == Path(provider["options"]["path"])
    [source] = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    assert grafana["depends_on"]["prometheus"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("override", LOCAL_OVERRIDES, ids=lambda path: path.name)
def test_the_local_stack_builds_and_swaps_no_monitoring_image(override: Path) -> None:
    """The local stack (no registry) leaves them out: their profile is off unless asked for."""
    assert not set(load_yaml(override)["services"]) & set(MONITORING)
