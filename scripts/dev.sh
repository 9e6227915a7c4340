#!/usr/bin/env bash
# `make dev`: the stack without Docker. graphgen and the five demo roles as local processes,
# plus Prometheus when the machine has it, fed by graphgen's remote write (Prometheus 2.42 has no
# OTLP receiver; a scrape would lose each new series' first value to rate(), remote write
# writes a zero before it). Its scrape of graphgen keeps only graphgen_* series, as compose's.
# GRAPHGEN_HISTOGRAMS=native|both (or any other GRAPHGEN_* option) passes through.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

remote_write=()
if command -v prometheus >/dev/null; then
  remote_write=(--remote-write-endpoint http://127.0.0.1:9090/api/v1/write)
fi
./target/debug/graphgen --otlp-grpc-addr 127.0.0.1:4317 --otlp-http-addr 127.0.0.1:4318 \
  --admin-addr 127.0.0.1:9464 --enable-virtual-node-label --enable-messaging-system-latency-histogram \
  "${remote_write[@]}" &
pids+=($!)
for role in frontend checkout inventory payments notifications; do
  DEMO_ROLE=$role OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 ./target/debug/demo-app &
  pids+=($!)
done
if command -v prometheus >/dev/null; then
  cat > "$work/prometheus.yml" <<YAML
global: {scrape_interval: 5s}
scrape_configs:
  - job_name: graphgen
    static_configs: [{targets: ['127.0.0.1:9464']}]
    metric_relabel_configs:
      - {source_labels: [__name__], regex: "graphgen_.*", action: keep}
YAML
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address=127.0.0.1:9090 --web.enable-remote-write-receiver \
    --enable-feature=native-histograms --enable-feature=exemplar-storage \
    >"$work/prometheus.log" 2>&1 &
  pids+=($!)
  echo "prometheus: http://localhost:9090 (graphgen remote-writes its series)"
fi
echo "demo:       http://localhost:8080"
echo "graphgen:   http://localhost:9464/metrics"
echo "service map: http://localhost:9464/graph (graphgen's own, no Grafana needed)"
echo "Ctrl-C to stop."
wait
