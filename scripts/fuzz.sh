#!/usr/bin/env bash
# Runs the OTLP/HTTP body fuzz target for a while (default 60 s). Not part of `make test`.
# Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../graphgen"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz asks for nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/otlp_http_body
# Seed the corpus with real requests: the conformance inputs as JSON (selector byte 1).
for f in tests/conformance/cases/*/input.json; do
  [ -f "$f" ] || continue
  name=$(basename "$(dirname "$f")")
  python3 - "$f" "fuzz/corpus/otlp_http_body/$name" <<'PY'
import json, sys
requests = json.load(open(sys.argv[1]))["requests"]
open(sys.argv[2], "wb").write(b"\x01" + json.dumps(requests[0]).encode())
PY
done
cargo fuzz run otlp_http_body fuzz/corpus/otlp_http_body -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 | tail -20
