"""Shared paths and helpers for the stack checks (static files and the end-to-end run)."""

import json
import os
import pathlib
import re
import urllib.parse
import urllib.request

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = ROOT / "grafana" / "dashboards"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def dashboards():
    """(file name, parsed JSON) for every provisioned dashboard."""
    return [(p.name, json.loads(p.read_text())) for p in sorted(DASHBOARDS.glob("*.json"))]


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # rows


# What Grafana substitutes in the queries, with values that suit a short test run.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "$service": ".*",
}


def substitute(expr):
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def prometheus_exprs():
    """(dashboard, panel title, expr) for every Prometheus query of every dashboard."""
    out = []
    for name, dashboard in dashboards():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                ds = target.get("datasource") or panel.get("datasource") or {}
                if ds.get("type") == "prometheus":
                    out.append((name, panel["title"], target["expr"]))
    return out


def http_get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def prom_query(base, expr):
    """Instant query; returns the result list. Fails the test on a PromQL error."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = http_get_json(url)
    except urllib.error.HTTPError as e:
        pytest.fail(f"Prometheus refused {expr!r}: {e.read().decode()}")
    assert body["status"] == "success", body
    return body["data"]["result"]


TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
PYTHON = os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python"))
