#!/usr/bin/env bash
# `make dev`: the stack without Docker. graphgen and the five demo roles as local processes,
# plus Prometheus when the machine has it, fed by graphgen's remote write (Prometheus 2.42 has no
# OTLP receiver; a scrape would lose each new series' first value to rate(), remote write
# writes a zero before it). Its scrape of graphgen keeps only graphgen_* series, as compose's.
# checkout's PostgreSQL and the NATS server run as local processes too (Debian's postgresql
# and nats-server, which `make tools` installs), in a throw-away directory on free ports.
# GRAPHGEN_HISTOGRAMS=native|both (or any other GRAPHGEN_* option) passes through.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
work=$(mktemp -d)
pids=()
pg_pid=
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  # PostgreSQL's fast shutdown: open sessions are cut, not waited for.
  [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: then its programs run as Debian's `postgres` user.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL is missing: make tools installs it" >&2; exit 1; }
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || { echo "nats-server is missing: make tools installs it" >&2; exit 1; }
as_pg=()
mkdir -p "$work/pg"
if [ "$(id -u)" = 0 ]; then
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  chmod 755 "$work"
  chown postgres:postgres "$work/pg"
fi
pg_port=$(free_port)
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U demo --auth=trust -E UTF8 --no-sync >/dev/null
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
  -c listen_addresses=127.0.0.1 >"$work/postgres.log" 2>&1 &
pg_pid=$!
until "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; do sleep 0.2; done
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U demo orders
nats_port=$(free_port)
"$nats" -a 127.0.0.1 -p "$nats_port" >"$work/nats.log" 2>&1 &
pids+=($!)
export DEMO_DATABASE_URL="postgres://demo@127.0.0.1:$pg_port/orders"
export DEMO_NATS_URL="nats://127.0.0.1:$nats_port"

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
echo "postgres:   $DEMO_DATABASE_URL   nats: $DEMO_NATS_URL"
echo "demo:       http://localhost:8080"
echo "graphgen:   http://localhost:9464/metrics"
echo "service map: http://localhost:9464/graph (graphgen's own, no Grafana needed)"
echo "Ctrl-C to stop."
wait
