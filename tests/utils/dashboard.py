"""The Grafana dashboard (infra/grafana/msarch-dashboard.json) as the tests read it: its panels
and their PromQL, with Grafana's variables given the values a plain Prometheus query needs."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "infra" / "grafana" / "msarch-dashboard.json"
SCHEMA_FILE = ROOT / "tests" / "schemas" / "grafana-dashboard.json"

VARIABLES = {"$__rate_interval": "1m", "$service": ".*"}
"""What Grafana would put in: a rate window, and every service (the variable's allValue)."""

Panel = dict[str, Any]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[Panel]:
    """Every panel that is not a row, those folded into a row included."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL as Prometheus gets it) for every target of every panel."""
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            yield panel["title"], expr
