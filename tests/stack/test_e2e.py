"""End to end on this machine: graphgen and the five demo roles as processes, a real Prometheus
(Debian's 2.42) scraping graphgen, headless Chromium clicking every button of the landing page;
then the exact PromQL Grafana's service graph and its table issue must show every expected edge,
and every dashboard panel's query must return data.

Not run here (no Docker engine, no Tempo or Grafana binaries): the containers themselves.
Prometheus 2.42 has no OTLP receiver, so it scrapes graphgen's /metrics, which carries the same
series under the same names as graphgen's OTLP push (tested in graphgen's own tests).
"""

import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import PYTHON, ROOT, TRACE_ID, prom_query, prometheus_exprs, substitute

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
ROLES = ["frontend", "checkout", "inventory", "payments", "notifications"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def stack():
    """graphgen, Prometheus and the shop, all on loopback; stopped at the end."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="e2e-"))
    procs = []

    def start(args, env=None, log="proc"):
        out = open(work / f"{log}.log", "w")
        procs.append(subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT))

    ports = {name: free_port() for name in ["grpc", "http", "admin", "prometheus", *ROLES]}
    for binary in ["graphgen", "demo-app"]:
        assert (TARGET / binary).exists(), f"{TARGET / binary} missing: `make e2e` builds it"
    start([str(TARGET / "graphgen"), f"--otlp-grpc-addr=127.0.0.1:{ports['grpc']}",
           f"--otlp-http-addr=127.0.0.1:{ports['http']}", f"--admin-addr=127.0.0.1:{ports['admin']}",
           "--wait=2s", "--enable-virtual-node-label", "--enable-messaging-system-latency-histogram"],
          log="graphgen")
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: graphgen\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{ports['admin']}']}}]\n")
    start(["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
           f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], log="prometheus")
    url = {role: f"http://127.0.0.1:{ports[role]}" for role in ROLES}
    for role in ROLES:
        start([str(TARGET / "demo-app")], log=role, env={
            "DEMO_ROLE": role, "DEMO_LISTEN": f"127.0.0.1:{ports[role]}",
            "DEMO_CHECKOUT_URL": url["checkout"], "DEMO_INVENTORY_URL": url["inventory"],
            "DEMO_PAYMENTS_URL": url["payments"], "DEMO_NOTIFICATIONS_URL": url["notifications"],
            "DEMO_LATENCY_SCALE": "0.02", "RUST_LOG": "warn",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc']}", "OTEL_BSP_SCHEDULE_DELAY": "200",
        })
    wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
    wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready")
    for role in ROLES:
        wait_http(f"{url[role]}/healthz")
    yield {"frontend": url["frontend"], "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
           "admin": f"http://127.0.0.1:{ports['admin']}", "work": work}
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


EDGES = {
    ("user", "frontend", "virtual_node"),
    ("frontend", "checkout", ""),
    ("checkout", "inventory", ""),
    ("checkout", "payments", ""),
    ("payments", "payment-gateway", "virtual_node"),
    ("checkout", "postgres", "database"),
    ("checkout", "notifications", "messaging_system"),
    ("frontend", "inventory", ""),
    ("frontend", "payments", ""),
    ("frontend", "notifications", ""),
}
FAILING = {("user", "frontend"), ("frontend", "checkout"), ("checkout", "inventory"), ("checkout", "payments"),
           ("payments", "payment-gateway"), ("checkout", "notifications")}
METRICS = ["traces_service_graph_request_server_seconds_sum", "traces_service_graph_request_total",
           "traces_service_graph_request_failed_total", "traces_service_graph_request_server_seconds_bucket"]


ROUNDS = 4
PATHS = ["/chain", "/chain?fail=payment-gateway", "/chain?fail=inventory", "/chain?fail=notifications",
         "/multi-service", "/delayed-chain", "/error"]


@pytest.fixture(scope="module")
def traffic(stack):
    """Chromium clicks every button (and a burst, and a failure); then rounds of traffic a few
    scrapes apart, so rates see increases; then waits until every edge has completed or
    expired and Prometheus has scraped the result."""
    shot = ROOT / "target" / "e2e-landing-page.png"
    result = subprocess.run([PYTHON, str(ROOT / "tests" / "browser" / "landing.py"), stack["frontend"] + "/", str(shot)],
                            capture_output=True, text=True, env={**os.environ, "SE_OFFLINE": "true"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for _ in range(ROUNDS):
        time.sleep(2.5)
        for path in PATHS:
            get(stack["frontend"] + path)
    deadline = time.time() + 90
    while time.time() < deadline:
        pending = prom_query(stack["prometheus"], "graphgen_store_edges")
        found = {(r["metric"].get("client"), r["metric"].get("server"), r["metric"].get("connection_type", ""))
                 for r in prom_query(stack["prometheus"],
                                     "group by (client, connection_type, server) (traces_service_graph_request_total{})")}
        if EDGES <= found and pending and float(pending[0]["value"][1]) == 0:
            time.sleep(2)  # one more scrape of the final values
            return result.stdout
        time.sleep(1)
    pytest.fail(f"edges never all showed up; have {found}")


def edge_of(result):
    return result["metric"].get("client"), result["metric"].get("server")


@pytest.mark.parametrize("metric", METRICS)
def test_grafana_graph_queries_show_every_edge(stack, traffic, metric):
    prom = stack["prometheus"]
    rate = prom_query(prom, f"sum by (client, server) (rate({metric}{{}}[5m]))")
    group = prom_query(prom, f"group by (client, connection_type, server) ({metric}{{}})")
    expected = {(c, s) for c, s, _ in EDGES}
    if metric == "traces_service_graph_request_failed_total":
        expected = FAILING
    rates = {edge_of(r): float(r["value"][1]) for r in rate}
    assert expected <= set(rates), f"{metric}: missing {expected - set(rates)}"
    for edge in expected:
        if metric.endswith("_sum") and edge == ("payments", "payment-gateway"):
            # No server span from an uninstrumented peer: its server time is 0, as in Tempo.
            assert rates[edge] == 0
            continue
        assert rates[edge] > 0, f"{metric} {edge}: rate {rates[edge]}"
    typed = {(r["metric"]["client"], r["metric"]["server"], r["metric"].get("connection_type", "")) for r in group}
    want = EDGES if metric != "traces_service_graph_request_failed_total" else {e for e in EDGES if e[:2] in FAILING}
    assert want <= typed, f"{metric}: missing {want - typed}"


def test_node_stats_are_plausible(stack, traffic):
    """Grafana credits the server node: mean latency = server_seconds_sum / request_total."""
    prom = stack["prometheus"]
    total = {edge_of(r): float(r["value"][1]) for r in prom_query(prom, "sum by (client, server) (traces_service_graph_request_total)")}
    failed = {edge_of(r): float(r["value"][1]) for r in prom_query(prom, "sum by (client, server) (traces_service_graph_request_failed_total)")}
    seconds = {edge_of(r): float(r["value"][1]) for r in prom_query(prom, "sum by (client, server) (traces_service_graph_request_server_seconds_sum)")}
    # The browser made 27 calls to frontend endpoints (plus the page itself), the rounds more.
    assert total[("user", "frontend")] >= 27 + ROUNDS * len(PATHS), total
    assert 0 < failed[("user", "frontend")] < total[("user", "frontend")]
    for edge in FAILING:
        assert failed[edge] <= total[edge], edge
    for edge, n in total.items():
        mean = seconds[edge] / n
        assert 0 <= mean < 5, f"{edge}: mean latency {mean} s"


def test_grafana_edge_links(stack, traffic):
    prom = stack["prometheus"]
    for client, server, _ in EDGES:
        sel = f'client="{client}",server="{server}"'
        rate = prom_query(prom, f"sum by (client, server)(rate(traces_service_graph_request_total{{{sel}}}[1m]))")
        assert rate and float(rate[0]["value"][1]) > 0, (client, server)
        p90 = prom_query(prom, "histogram_quantile(0.9, sum(rate(traces_service_graph_request_server_seconds_bucket"
                               f"{{{sel}}}[1m])) by (le, client, server))")
        assert p90 and float(p90[0]["value"][1]) >= 0, (client, server, p90)
    failed = prom_query(prom, 'sum by (client, server)(rate(traces_service_graph_request_failed_total{client="payments",server="payment-gateway"}[1m]))')
    assert failed and float(failed[0]["value"][1]) > 0


def test_grafana_service_graph_table_queries(stack, traffic):
    prom = stack["prometheus"]
    top = prom_query(prom, 'topk(5, sum(rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}[5m])) by (span_name))')
    names = {r["metric"]["span_name"] for r in top}
    assert len(top) == 5 and "GET /chain" in names, names
    matcher = "|".join(sorted(n.replace("/", "\\\\/") for n in names))
    errors = prom_query(prom, 'topk(5, sum(rate(traces_spanmetrics_calls_total{status_code="STATUS_CODE_ERROR",'
                              f'span_name=~"{matcher}"}}[5m])) by (span_name))')
    assert errors and all(float(r["value"][1]) > 0 for r in errors), errors
    duration = prom_query(prom, f'histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{{span_name=~"{matcher}"}}[5m])) by (le))')
    assert duration and float(duration[0]["value"][1]) > 0
    services = {r["metric"]["service"] for r in prom_query(prom, "group by (service) (traces_spanmetrics_calls_total)")}
    assert set(ROLES) <= services, "span metrics carry the label `service`, as the table's filter expects"


@pytest.mark.parametrize("dashboard,panel,expr", prometheus_exprs(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_every_dashboard_panel_returns_data(stack, traffic, dashboard, panel, expr):
    result = prom_query(stack["prometheus"], substitute(expr))
    assert result, f"{dashboard} / {panel}: no data for {expr}"


def test_the_browser_saw_a_trace_id_for_every_button(traffic):
    import json
    seen = json.loads(traffic)
    for path in ["/simple", "/nested", "/error", "/chain", "/delayed-chain", "/multi-service"]:
        trace = seen[path].rsplit(" ", 1)[-1]
        assert TRACE_ID.match(trace), seen[path]
