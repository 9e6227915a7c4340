"""End to end on this machine, as `make dev` runs it: graphgen and the five demo roles as
processes, a real Prometheus (Debian's 2.42) fed by graphgen's remote write (classic and native
histograms, `--histograms both`) and scraping only graphgen's own graphgen_* series, headless
Chromium clicking every button of the landing page; then the exact PromQL Grafana's service graph
and its table issue (classic and native forms) must show every expected edge, and every
dashboard panel's query must return data. The very first burst must already count.

Not run here (no Docker engine, no Tempo or Grafana binaries): the containers themselves.
Prometheus 2.42 has no OTLP receiver; the OTLP push is tested in graphgen's own tests.
"""

import json
import re
import math
import os
import pathlib
import sys
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

import backends
from conftest import PYTHON, ROOT, TRACE_ID, http_get_json, prom_query, prometheus_exprs, substitute

sys.path.insert(0, str(ROOT / "tests" / "browser"))
import service_map  # noqa: E402  (Chromium helpers, next to landing.py)

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


TRACES_SEEN = set()


def get(url):
    """GETs a demo endpoint; remembers the trace id it answers with (errors carry one too)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        TRACES_SEEN.add(json.loads(body).get("trace_id", ""))
    except ValueError:
        pass
    return status


@pytest.fixture(scope="module")
def stack():
    """graphgen, Prometheus and the shop, all on loopback; stopped at the end."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="e2e-"))
    procs = []

    def start(args, env=None, log="proc"):
        out = open(work / f"{log}.log", "w")
        procs.append(subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT))

    ports = {name: free_port() for name in ["grpc", "http", "admin", "prometheus", "postgres", "nats", *ROLES]}
    # checkout's database and the broker, real processes like the rest.
    postgres = backends.start_postgres(ports["postgres"], open(work / "postgres.log", "w"))
    procs.append(backends.start_nats(ports["nats"], open(work / "nats.log", "w")))
    for binary in ["graphgen", "demo-app"]:
        assert (TARGET / binary).exists(), f"{TARGET / binary} missing: `make e2e` builds it"
    start([str(TARGET / "graphgen"), f"--otlp-grpc-addr=127.0.0.1:{ports['grpc']}",
           f"--otlp-http-addr=127.0.0.1:{ports['http']}", f"--admin-addr=127.0.0.1:{ports['admin']}",
           "--wait=2s", "--enable-virtual-node-label", "--enable-messaging-system-latency-histogram",
           "--grafana-url=http://localhost:3000", "--flush-interval=1s", "--histograms=both",
           f"--remote-write-endpoint=http://127.0.0.1:{ports['prometheus']}/api/v1/write"],
          log="graphgen")
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: graphgen\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{ports['admin']}']}}]\n"
        "    metric_relabel_configs: [{source_labels: [__name__], regex: 'graphgen_.*', action: keep}]\n")
    start(["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
           f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--web.enable-remote-write-receiver",
           "--enable-feature=native-histograms", "--enable-feature=exemplar-storage"], log="prometheus")
    url = {role: f"http://127.0.0.1:{ports[role]}" for role in ROLES}
    for role in ROLES:
        start([str(TARGET / "demo-app")], log=role, env={
            "DEMO_ROLE": role, "DEMO_LISTEN": f"127.0.0.1:{ports[role]}",
            "DEMO_CHECKOUT_URL": url["checkout"], "DEMO_INVENTORY_URL": url["inventory"],
            "DEMO_PAYMENTS_URL": url["payments"], "DEMO_NOTIFICATIONS_URL": url["notifications"],
            "DEMO_LATENCY_SCALE": "0.02", "RUST_LOG": "warn",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['grpc']}", "OTEL_BSP_SCHEDULE_DELAY": "200",
            "GRAPHGEN_URL": f"http://127.0.0.1:{ports['admin']}",
            "DEMO_DATABASE_URL": f"postgres://demo@127.0.0.1:{ports['postgres']}/orders",
            "DEMO_NATS_URL": f"nats://127.0.0.1:{ports['nats']}",
        })
    try:
        wait_http(f"http://127.0.0.1:{ports['admin']}/readyz")
        wait_http(f"http://127.0.0.1:{ports['prometheus']}/-/ready")
        for role in ROLES:
            wait_http(f"{url[role]}/healthz")
        yield {"frontend": url["frontend"], "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
               "admin": f"http://127.0.0.1:{ports['admin']}", "work": work}
    finally:
        # Also when a process never came up: nothing outlives the run.
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        backends.stop_postgres(*postgres)


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
# The browser makes 27 calls to frontend endpoints (plus the page itself), the rounds more.
FRONTEND_CALLS = 27 + ROUNDS * len(PATHS)


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
    # Every request into frontend counted (the burst's too): the SDKs' last batches may still
    # be on their way when the store is momentarily empty.
    wait_for_edges(stack["prometheus"], FRONTEND_CALLS + sum(BURST_SENT), "the rounds")
    return result.stdout


def edge_of(result):
    return result["metric"].get("client"), result["metric"].get("server")


def wait_for_edges(prom, into_frontend, what):
    """Until every edge is in Prometheus, none is pending in graphgen and `into_frontend`
    requests into frontend are counted; then one more push."""
    deadline = time.time() + 90
    while time.time() < deadline:
        pending = prom_query(prom, "graphgen_store_edges")
        found = {(r["metric"].get("client"), r["metric"].get("server"), r["metric"].get("connection_type", ""))
                 for r in prom_query(prom, "group by (client, connection_type, server) (traces_service_graph_request_total{})")}
        counted = prom_query(prom, 'sum(traces_service_graph_request_total{client="user",server="frontend"})')
        counted = float(counted[0]["value"][1]) if counted else 0
        if EDGES <= found and pending and float(pending[0]["value"][1]) == 0 and counted >= into_frontend:
            time.sleep(2)  # one more push of the final values
            return
        time.sleep(1)
    pytest.fail(f"{what}: edges never all showed up; have {found}, {counted} of {into_frontend} requests into frontend")


BURST = ["/chain"] * 5 + ["/chain?fail=payments", "/multi-service"]
BURST_SENT = []


def test_the_first_burst_already_counts_in_grafanas_queries(stack):
    """One burst of clicks into a fresh graphgen and Prometheus, then Grafana's own queries: every
    edge has a rate and payments its failures. Each series' first value is a rise from the zero
    remote write puts before it; a scrape would have made it rate()'s starting point instead."""
    prom = stack["prometheus"]
    assert not prom_query(prom, "traces_service_graph_request_total"), "must run on a fresh stack, before any other traffic"
    for path in BURST:
        get(stack["frontend"] + path)
    BURST_SENT.append(len(BURST))
    wait_for_edges(prom, len(BURST), "one burst")
    for metric in METRICS:
        rates = {edge_of(r): float(r["value"][1])
                 for r in prom_query(prom, f"sum by (client, server) (rate({metric}{{}}[5m]))")}
        expected = {(c, s) for c, s, _ in EDGES}
        if metric == "traces_service_graph_request_failed_total":
            expected = {("checkout", "payments")}
        for edge in expected:
            if metric.endswith("_sum") and edge == ("payments", "payment-gateway"):
                continue  # an uninstrumented peer has no server time
            assert rates.get(edge, 0) > 0, f"{metric} {edge}: rate {rates.get(edge)} after one burst"
    share = prom_query(prom, 'sum(rate(traces_service_graph_request_failed_total{client="checkout",server="payments"}[5m]))'
                             ' / sum(rate(traces_service_graph_request_total{client="checkout",server="payments"}[5m]))')
    assert share and 0 < float(share[0]["value"][1]) < 1, share


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
    assert total[("user", "frontend")] >= FRONTEND_CALLS, total
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
                               f"{{{sel}}}[5m])) by (le, client, server))")
        assert p90, (client, server)
        value = float(p90[0]["value"][1])
        # Within the classic buckets (0.1 s … 12.8 s); an uninstrumented peer's 0 s lands in the
        # first bucket, where the quantile interpolates between 0 and 0.1.
        assert 0 < value <= 12.8, (client, server, value)
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


def test_grafana_native_histogram_queries(stack, traffic):
    """With native histograms written, Grafana 13.1 switches its latency queries to them
    (grafana-tempo-datasource v13.1.0 `datasource.ts:257-300` detects them, `:1295-1296` drops
    `_bucket`, `:1171` the p90 link, `graphTransform.ts:34-37` the table's duration)."""
    prom = stack["prometheus"]
    url = f"{prom}/api/v1/series?" + urllib.parse.urlencode(
        {"match[]": "traces_service_graph_request_server_seconds", "limit": 1})
    assert http_get_json(url)["data"], "Grafana would not detect native histograms"
    metric = "traces_service_graph_request_server_seconds"
    graph = {edge_of(r) for r in prom_query(prom, f"sum by (client, server) (rate({metric}{{}}[5m]))")}
    assert {(c, s) for c, s, _ in EDGES} <= graph, graph
    for client, server, _ in EDGES:
        sel = f'client="{client}",server="{server}"'
        p90 = prom_query(prom, f"histogram_quantile(0.9, sum(rate({metric}{{{sel}}}[5m])) by (le, client, server))")
        assert p90, (client, server)
        value = float(p90[0]["value"][1])
        if server == "payment-gateway":
            # No server time from an uninstrumented peer: the zero bucket (|x| <= 2^-128).
            assert value < 1e-30, f"an uninstrumented peer has no server time: {value}"
        else:
            assert 0 < value < 5, (client, server, value)
    duration = prom_query(prom, 'histogram_quantile(.9, sum(rate(traces_spanmetrics_latency{span_name=~"GET /chain"}[5m])) by (le))')
    assert duration and float(duration[0]["value"][1]) > 0, duration


@pytest.mark.parametrize("dashboard,panel,expr", prometheus_exprs(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_every_dashboard_panel_returns_data(stack, traffic, dashboard, panel, expr):
    result = prom_query(stack["prometheus"], substitute(expr))
    assert result, f"{dashboard} / {panel}: no data for {expr}"
    # A latency panel reads classic buckets `or` native histograms, whichever is written:
    # with both written, each side alone has data.
    if " or histogram_quantile" in expr:
        for side in expr.split(" or "):
            assert prom_query(stack["prometheus"], substitute(side)), f"{dashboard} / {panel}: no data for {side}"


def test_the_browser_saw_a_trace_id_for_every_button(traffic):
    seen = json.loads(traffic)
    for path in ["/simple", "/nested", "/error", "/chain", "/delayed-chain", "/multi-service"]:
        trace = seen[path].rsplit(" ", 1)[-1]
        assert TRACE_ID.match(trace), seen[path]


# --- graphgen's own service map (/graph, /api/graph) -------------------------------------------

MAP_NODES = ["frontend", "checkout", "inventory", "payments", "payment-gateway", "postgres", "notifications", "user"]


def browser_traces(traffic):
    return {m.group(0) for text in json.loads(traffic).values() for m in re.finditer(r"\b[0-9a-f]{32}\b", text)}


def test_service_map_in_chromium(stack, traffic):
    """The demo's map in a real browser: every node, failing edges marked, rates, the window
    switch, a click listing trace ids that graphgen holds and the demo answered with."""
    shot = ROOT / "target" / "e2e-service-map.png"
    seen = service_map.check_demo(
        stack["admin"] + "/graph", stack["admin"] + "/api/graph", MAP_NODES,
        failing_edges=[("payments", "payment-gateway"), ("checkout", "payments")],
        known_traces=TRACES_SEEN | browser_traces(traffic), screenshot=str(shot))
    assert shot.exists()
    print(json.dumps(seen, indent=2))


def edge_values(results):
    return {(r["metric"].get("client"), r["metric"].get("server")): float(r["value"][1]) for r in results}


def test_service_map_figures_equal_grafanas_queries(stack, traffic):
    """A quiet spell, a round of traffic, then the same window asked of graphgen and of the real
    Prometheus (through the PromQL Grafana's edge links use) at the same instant.

    The window starts in the quiet spell, so both see exactly the round's requests. Prometheus
    (scraping every second) extrapolates its first and last sample in the window to the
    window's edges: its rate is the increase divided by the sampled interval, W - 2 s at
    worst, where graphgen divides by W. So per edge: graphgen ≤ Prometheus ≤ graphgen ×
    W / (W - 2) (1 % slack for float rounding); p90 is a ratio of bucket rates and must agree
    to 1e-6. The raw samples Prometheus stored in the window rose by exactly graphgen's counts
    of requests and failures."""
    window = 30
    prom = stack["prometheus"]
    # Quiet: the window's start and graphgen's snapshots around it (5 s apart) see no traffic.
    time.sleep(15)
    started = time.time()
    for _ in range(2):
        for path in PATHS:
            get(stack["frontend"] + path)
    deadline = time.time() + 30
    while float(prom_query(prom, "graphgen_store_edges")[0]["value"][1]) != 0 or time.time() < started + 8:
        assert time.time() < deadline, "edges of the round never completed"
        time.sleep(0.5)
    time.sleep(max(0.0, started + window - 8 - time.time()))  # the window starts 8 s before the round
    api = http_get_json(f"{stack['admin']}/api/graph?window={window}s")
    at = api["computed_at_unix_ms"] / 1000
    assert started - 14 < at - window < started - 6, "the window starts in the quiet spell"

    def query(expr):
        url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        return http_get_json(url)["data"]["result"]

    def stored_increase(name):
        """Per edge, what the counters rose by in the window, from the raw samples Prometheus
        stored: no extrapolation (the window starts in the quiet spell and ends after it)."""
        rose = {}
        for r in query(f"{name}[{window}s]"):
            values = [float(v) for _, v in r["values"]]
            key = edge_of(r)
            rose[key] = rose.get(key, 0.0) + values[-1] - values[0]
        return rose

    stored_requests = stored_increase("traces_service_graph_request_total")
    stored_failed = stored_increase("traces_service_graph_request_failed_total")
    rates = edge_values(query(f"sum by (client, server)(rate(traces_service_graph_request_total[{window}s]))"))
    failed = edge_values(query(f"sum by (client, server)(rate(traces_service_graph_request_failed_total[{window}s]))"))
    p90 = edge_values(query("histogram_quantile(0.9, sum(rate(traces_service_graph_request_server_seconds_bucket"
                            f"[{window}s])) by (le, client, server))"))
    compared = []
    for edge in api["edges"]:
        key = (edge["source"], edge["target"])
        ours = edge["detail__requests_per_second"]
        theirs = rates.get(key, 0.0)
        compared.append((key, ours, theirs))
        assert ours * 0.99 <= theirs <= ours * window / (window - 2) * 1.01 + 1e-12, (key, ours, theirs)
        if ours == 0:
            continue
        # Exactly the requests and failures Prometheus stored...
        requests = ours * window
        assert math.isclose(requests, stored_requests.get(key, 0.0), rel_tol=1e-6), (key, requests, stored_requests)
        share = edge["detail__error_percent"] / 100
        assert math.isclose(share * requests, stored_failed.get(key, 0.0), rel_tol=1e-6, abs_tol=1e-9), \
            (key, share, stored_failed)
        # ...and Grafana's ratio of two rates agrees up to their extrapolations, which differ
        # when one series' first sample is 0 (Prometheus then extrapolates no further back than
        # to zero) or its samples start or end a push apart from the other's.
        ratio = failed.get(key, 0.0) / theirs
        assert share * (window - 2) / window * 0.99 - 1e-9 <= ratio <= share * window / (window - 2) * 1.01 + 1e-9, \
            (key, share, ratio)
        if math.isnan(p90.get(key, math.nan)):
            assert edge["detail__p90_ms"] is None, key
        else:
            assert math.isclose(edge["detail__p90_ms"] / 1000, p90[key], rel_tol=1e-6), (key, edge["detail__p90_ms"], p90[key])
    busy = [c for c in compared if c[1] > 0]
    assert len(busy) >= len(EDGES), f"the round crossed every edge: {compared}"
    print(json.dumps([[f"{c} -> {s}", ours, theirs] for (c, s), ours, theirs in compared], indent=1))


@pytest.fixture
def lone_graphgen():
    """A graphgen of its own, for maps the demo does not make."""
    ports = {name: free_port() for name in ["grpc", "http", "admin"]}
    log = open(tempfile.mkstemp(prefix="graphgen-map-", suffix=".log")[1], "w")
    proc = subprocess.Popen([str(TARGET / "graphgen"), f"--otlp-grpc-addr=127.0.0.1:{ports['grpc']}",
                             f"--otlp-http-addr=127.0.0.1:{ports['http']}", f"--admin-addr=127.0.0.1:{ports['admin']}",
                             "--wait=1s"], stdout=log, stderr=subprocess.STDOUT)
    admin = f"http://127.0.0.1:{ports['admin']}"
    try:
        wait_http(admin + "/readyz")
        yield {"admin": admin, "http": f"http://127.0.0.1:{ports['http']}/v1/traces"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror="window.pwned=1">', "' onmouseover='alert(1)",
           "svc-" + "x" * 300, "сервис-платежей ✓ 支付"]


def test_service_map_empty_then_fifty_services_and_hostile_names(lone_graphgen):
    service_map.check_empty(lone_graphgen["admin"] + "/graph")
    services = [f"service-{i:02d}" for i in range(50)]
    body, calls = service_map.synthetic_spans(services, HOSTILE)
    service_map.send_json(lone_graphgen["http"], body)
    deadline = time.time() + 20
    while len(http_get_json(lone_graphgen["admin"] + "/api/graph")["edges"]) < len(set(calls)):
        assert time.time() < deadline, "the synthetic edges never all showed"
        time.sleep(0.3)
    shot = ROOT / "target" / "e2e-service-map-50.png"
    service_map.check_large_and_hostile(lone_graphgen["admin"] + "/graph", services, HOSTILE, str(shot))
    assert shot.exists()
