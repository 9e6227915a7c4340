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


# --- Compose files as Compose reads them: `.env` interpolation, the `!reset` / `!override`
# tags (Compose v2.24+) and the merge of an override file over the base file.

class Reset:
    """`!reset`: the attribute is removed from the merged model."""

    def __init__(self, value):
        self.value = value


class Override:
    """`!override`: the value replaces the base one instead of being merged with it."""

    def __init__(self, value):
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    pass


def _tagged(cls):
    def construct(loader, node):
        if isinstance(node, yaml.MappingNode):
            return cls(loader.construct_mapping(node, deep=True))
        if isinstance(node, yaml.SequenceNode):
            return cls(loader.construct_sequence(node, deep=True))
        return cls(loader.construct_scalar(node))
    return construct


ComposeLoader.add_constructor("!reset", _tagged(Reset))
ComposeLoader.add_constructor("!override", _tagged(Override))

INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?)-([^}]*))?\})")


def env_file():
    """KEY=value lines of deploy/.env (comments and blank lines skipped)."""
    values = {}
    for line in (DEPLOY / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def interpolate(text, variables):
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`, on the file's text (so
    that a substituted number parses as a number, as Compose's typed model has it)."""
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        name, colon, default = match.group(1), match.group(2), match.group(3)
        value = variables.get(name)
        if default is not None and (value is None or (colon and value == "")):
            return default
        assert value is not None, f"${{{name}}} is neither set nor defaulted"
        return value
    return INTERPOLATION.sub(replace, text)


def load_compose(*files, variables=None):
    """The model `docker compose -f a -f b …` builds: each file interpolated with deploy/.env
    (plus `variables`, as the shell environment would), then merged in order."""
    values = {**env_file(), "GRAFANA_ADMIN_PASSWORD": "test", **(variables or {})}
    model = None
    for path in files:
        document = yaml.load(interpolate(pathlib.Path(path).read_text(), values), Loader=ComposeLoader)
        model = strip_tags(document) if model is None else merge_compose(model, document)
    return model


# Sequences an override replaces instead of appending to (compose-spec 13-merge.md).
_REPLACED_SEQUENCES = {"command", "entrypoint", "test", "dns", "dns_search", "tmpfs"}


def strip_tags(node):
    if isinstance(node, (Reset, Override)):
        return strip_tags(node.value)
    if isinstance(node, dict):
        return {k: strip_tags(v) for k, v in node.items() if not isinstance(v, Reset)}
    if isinstance(node, list):
        return [strip_tags(v) for v in node]
    return node


def merge_compose(base, override, key=None):
    """Merge as compose-spec's merge rules say for what these files use: mappings merge key by
    key, sequences append the items not already there (ports, volumes), `command`-like
    sequences and scalars are replaced, `!reset` removes, `!override` replaces."""
    if isinstance(override, Override):
        return strip_tags(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            if isinstance(v, Reset):
                merged.pop(k, None)
            elif k in merged:
                merged[k] = merge_compose(merged[k], v, k)
            else:
                merged[k] = strip_tags(v)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        return base + [strip_tags(v) for v in override if strip_tags(v) not in base]
    return strip_tags(override)


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
