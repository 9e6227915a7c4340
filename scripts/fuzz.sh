#!/usr/bin/env bash
# Runs both fuzz targets for a while each (default 60 s). Not part of `make test`.
#   otlp_http_body: the HTTP receiver's decompression and the intake's decode, into the engine;
#   wire_reader:    the borrowed reader against prost on any bytes.
# Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../graphgen"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz asks for nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/otlp_http_body fuzz/corpus/wire_reader
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
# The reader's seeds: the benchmark's requests as protobuf, small ones.
cargo run -q --release -p graphgen --bin graphgen-load -- decode --traces-per-request 2 \
  --requests 8 --write-to fuzz/corpus/wire_reader
for target in otlp_http_body wire_reader; do
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 | tail -20
done
