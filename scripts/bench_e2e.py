#!/usr/bin/env python3
"""`make bench-e2e`: graphgen end to end, as processes over loopback, in one run.

The collector under test is pinned to core 0; the load generator and the sink share core 1.
For each mode it reads the collector's CPU time (utime + stime from /proc/PID/stat) over the
measured window and its peak RSS (VmHWM), and the load generator's summary (accepted spans,
wall rate, latency). Every target gets identical requests (`graphgen-load --replay`, fixed
seed). A decode-only baseline (prost, same requests) runs in the same script, and, if the
`rotel` wheel installs, rotel-agent (a Rust OTLP collector) is measured as a peer.

Figures are spans per CPU-second of the collector process (steadier than wall time on a
shared machine) and ratios between rows of the same run. With valgrind installed, instructions
per span (callgrind) are counted too, which do not move with the machine's noise: the same
requests sent one at a time, N and then 2N of them to a fresh graphgen each, and the difference
divided by N requests' spans (start-up and shutdown cancel out); the decode baseline likewise
with 1 and 2 rounds. graphgen is counted in the steady state, as the CPU-second rows run: both
runs first take one cycle of the replayed requests (so the difference is of requests seen
before, every table at its size), and from a fresh process too, its tables still growing.

The machine is shared, so one window per mode can be off by a third. The rows compared in
the ratios (the decode baseline, graphgen's gRPC ingest and forwarding, and rotel-agent's) are
therefore measured in `--rounds` alternating rounds: each such row shows the median of its
rounds, and each ratio the median of the per-round ratios with their range.

Usage: scripts/bench_e2e.py [--seconds 15] [--rounds 3] [--overload-seconds 0] [--no-rotel]
                            [--no-callgrind]
"""

import argparse
import json
import os
import statistics
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
GRAPHGEN = Path(os.environ.get("GRAPHGEN_BIN", RELEASE / "graphgen"))
LOAD = RELEASE / "graphgen-load"
TICKS = os.sysconf("SC_CLK_TCK")
REPLAYED = 200
SHAPE = ["--traces-per-request", "100", "--replay", str(REPLAYED), "--seed", "7"]
# Requests built as they are sent, every span id new: what the de-duplication record costs
# for spans it has not seen (a replayed request is all duplicates after its first round).
FRESH = ["--traces-per-request", "100", "--seed", "7"]
LOGS = Path(tempfile.mkdtemp(prefix="bench-e2e-"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(name, cmd, core):
    log = open(LOGS / f"{name}.log", "w")
    return subprocess.Popen(["taskset", "-c", str(core), *map(str, cmd)], stdout=log, stderr=log)


def stop(process, timeout=30):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(endpoint, protocol, seconds, extra=(), shape=SHAPE, concurrency=16):
    cmd = ["taskset", "-c", "1", LOAD, "send", "--endpoint", endpoint, "--protocol", protocol,
           "--duration", f"{seconds}s", "--concurrency", concurrency, "--json", *shape, *extra]
    out = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def graphgen_metric(admin_port, name):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics").read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def measure(name, collector, protocol, seconds, extra_load=(), shape=SHAPE):
    """Runs `collector` (name, cmd, grpc port, http port), warms it up, measures one window."""
    cmd, grpc, http = collector
    process = start(name, cmd, 0)
    try:
        wait_port(grpc)
        endpoint = f"http://127.0.0.1:{grpc if protocol == 'grpc' else http}"
        load(endpoint, protocol, 2, extra_load, shape)  # warm-up
        cpu0 = cpu_seconds(process.pid)
        summary = load(endpoint, protocol, seconds, extra_load, shape)
        cpu = cpu_seconds(process.pid) - cpu0
        rss = peak_rss_mib(process.pid)
    finally:
        stop(process)
    return {
        "mode": name,
        "spans": summary["accepted_spans"],
        "cpu": cpu,
        "per_cpu_s": summary["accepted_spans"] / max(cpu, 1e-9),
        "wall": summary["spans_per_second"],
        "rss": rss,
        "p99": summary["latency_ms_p99"],
        "pushed_back": summary["pushed_back"],
        "summary": summary,
    }


def callgrind_instructions(cmd, name):
    """Runs `cmd` under callgrind to its end; returns the instructions it executed."""
    out = LOGS / f"callgrind.{name}.out"
    log = open(LOGS / f"callgrind.{name}.log", "w")
    process = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                *map(str, cmd)], stdout=log, stderr=log)
    return process, out


def callgrind_total(out):
    for line in out.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def graphgen_instructions_per_span(name, requests, traces_endpoint=None, warm_up=0):
    """Instructions graphgen executes per span: `warm_up` requests, then N or 2N more, to a
    fresh process each; the difference per span, so start-up, warm-up and shutdown cancel out."""
    totals, spans = [], []
    for n in (requests, 2 * requests):
        (cmd, grpc, _), _ = graphgen_cmd(traces_endpoint)
        process, out = callgrind_instructions(cmd, f"{name}.{warm_up}+{n}")
        try:
            wait_port(grpc, timeout=120)
            summary = load(f"http://127.0.0.1:{grpc}", "grpc", 600, ["--requests", warm_up + n],
                           concurrency=1)
            spans.append(summary["accepted_spans"])
        finally:
            stop(process, timeout=300)
        totals.append(callgrind_total(out))
    return (totals[1] - totals[0]) / max(spans[1] - spans[0], 1)


def decode_instructions_per_span():
    totals, spans = [], []
    for rounds in (1, 2):
        cmd = [LOAD, "decode", "--rounds", rounds, "--json", *SHAPE[:2], "--seed", "7"]
        process, out = callgrind_instructions(cmd, f"decode.{rounds}")
        process.wait()
        totals.append(callgrind_total(out))
        log = (LOGS / f"callgrind.decode.{rounds}.log").read_text()
        spans.append(json.loads([line for line in log.splitlines() if line.startswith("{")][-1])["spans"])
    return (totals[1] - totals[0]) / max(spans[1] - spans[0], 1)


def decode_row(name, seconds):
    """The baseline: prost decoding the same requests in a loop, on core 0, same allocator."""
    out = subprocess.run(list(map(str, ["taskset", "-c", "0", LOAD, "decode", "--seconds", seconds,
                                        "--json", *SHAPE[:2], "--seed", "7"])),
                         capture_output=True, text=True, check=True)
    decode = json.loads(out.stdout.strip().splitlines()[-1])
    return {"mode": name, "per_cpu_s": decode["spans_per_cpu_second"],
            "wall": None, "rss": None, "p99": None, "cpu": decode["cpu_seconds"], "spans": decode["spans"]}


def median_row(name, measured):
    """One row for a mode measured in several rounds: the median round by spans per CPU-s."""
    row = dict(sorted(measured, key=lambda r: r["per_cpu_s"])[len(measured) // 2])
    row["mode"] = name
    row["rounds"] = [r["per_cpu_s"] for r in measured]
    return row


def graphgen_cmd(traces_endpoint=None, extra=()):
    grpc, http, admin = free_port(), free_port(), free_port()
    cmd = [GRAPHGEN, "--otlp-grpc-addr", f"127.0.0.1:{grpc}", "--otlp-http-addr", f"127.0.0.1:{http}",
           "--admin-addr", f"127.0.0.1:{admin}", *extra]
    if traces_endpoint:
        cmd += ["--traces-endpoint", traces_endpoint]
    return (list(map(str, cmd)), grpc, http), admin


def rotel_agent():
    """The rotel-agent binary from the `rotel` wheel, installed into a venv of its own."""
    venv = ROOT / ".tools" / "rotel-venv"
    agent = next(venv.glob("lib/python*/site-packages/rotel/rotel-agent"), None)
    if agent is None:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        ok = subprocess.run([venv / "bin" / "pip", "install", "-q", "rotel==0.0.1a15"]).returncode == 0
        agent = next(venv.glob("lib/python*/site-packages/rotel/rotel-agent"), None) if ok else None
    return agent


def rotel_cmd(agent, exporter_endpoint=None):
    grpc, http = free_port(), free_port()
    cmd = [agent, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
           "--otlp-http-endpoint", f"127.0.0.1:{http}"]
    if exporter_endpoint:
        cmd += ["--exporter", "otlp", "--otlp-exporter-endpoint", exporter_endpoint]
    else:
        cmd += ["--exporter", "blackhole"]
    return cmd, grpc, http


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the rows the ratios compare")
    parser.add_argument("--overload-seconds", type=float, default=0,
                        help="also forward to a slow sink this long and report peak RSS")
    parser.add_argument("--no-rotel", action="store_true")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--callgrind-requests", type=int, default=20,
                        help="requests (500 spans each) in the smaller of the two callgrind runs")
    args = parser.parse_args()
    for binary in (GRAPHGEN, LOAD):
        if not binary.exists():
            sys.exit(f"{binary} missing: `make bench-e2e` builds it (cargo build --release -p graphgen)")

    sink_port = free_port()
    sink = start("sink", [LOAD, "sink", "--listen", f"127.0.0.1:{sink_port}"], 1)
    wait_port(sink_port)
    sink_url = f"http://127.0.0.1:{sink_port}"
    rows = []
    agent = None if args.no_rotel else rotel_agent()
    if not agent:
        print("rotel-agent not available: peer rows left out", file=sys.stderr)
    try:
        # The compared rows, in alternating rounds: every round measures each once.
        compared = [
            ("prost decode alone (baseline)", lambda name: decode_row(name, args.seconds / 2)),
            ("graphgen ingest (gRPC, both processors)",
             lambda name: measure(name, graphgen_cmd()[0], "grpc", args.seconds)),
            ("graphgen ingest + forward (gRPC)",
             lambda name: measure(name, graphgen_cmd(sink_url)[0], "grpc", args.seconds)),
        ]
        if agent:
            compared += [
                ("rotel-agent blackhole (gRPC)",
                 lambda name: measure(name, rotel_cmd(agent), "grpc", args.seconds)),
                ("rotel-agent forward (gRPC)",
                 lambda name: measure(name, rotel_cmd(agent, sink_url), "grpc", args.seconds)),
            ]
        rounds = {name: [] for name, _ in compared}
        for _ in range(max(args.rounds, 1)):
            for name, run in compared:
                rounds[name].append(run(name))
        rows += [median_row(name, measured) for name, measured in rounds.items()]

        collector, _ = graphgen_cmd()
        rows.append(measure("graphgen ingest (HTTP protobuf)", collector, "http", args.seconds))

        # --dedup-window: new spans (fresh ids, the record full after the warm-up, so every
        # span also evicts one) against the same load without it, and spans all seen before.
        collector, _ = graphgen_cmd()
        rows.append(measure("graphgen ingest, fresh ids", collector, "grpc", args.seconds, shape=FRESH))
        for most in (100_000, 1_000_000):
            collector, _ = graphgen_cmd(extra=["--dedup-window", "5m", "--dedup-max-spans", most])
            rows.append(measure(f"graphgen ingest, fresh ids, dedup {most:,}", collector, "grpc",
                                args.seconds, shape=FRESH))
        collector, _ = graphgen_cmd(extra=["--dedup-window", "5m"])
        rows.append(measure("graphgen ingest, all re-delivered, dedup", collector, "grpc", args.seconds))

        # Refusal: a dead traces endpoint and a 1-byte queue: every request after the first is
        # refused; the load generator does not wait, so graphgen does nothing but refuse.
        collector, admin = graphgen_cmd(f"http://127.0.0.1:{free_port()}",
                                        ["--queue-max-bytes", "1", "--retry-max-elapsed", "0s"])
        refused = measure("graphgen refusing (queue full)", collector, "grpc", args.seconds / 2,
                          ["--ignore-pushback"])
        refusals = sum(refused["pushed_back"].values())
        refused["refusals_per_cpu_s"] = refusals / max(refused["cpu"], 1e-9)
        rows.append(refused)

        if agent:
            rows.append(measure("rotel-agent blackhole (HTTP)", rotel_cmd(agent), "http", args.seconds))

        instructions = {}
        if args.no_callgrind:
            pass
        elif subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
            print("valgrind not installed: instruction counts left out", file=sys.stderr)
        else:
            n = args.callgrind_requests
            instructions["prost decode alone (baseline)"] = decode_instructions_per_span()
            # Steady state: after one cycle of the replayed requests, as the CPU-second rows
            # run (their warm-up alone is thousands of requests). Fresh: from the process's
            # first request, its tables (edge slots, series) still growing.
            for label, warm_up in (("", REPLAYED), (", fresh process", 0)):
                instructions[f"graphgen ingest (gRPC, both processors){label}"] = \
                    graphgen_instructions_per_span("ingest", n, warm_up=warm_up)
                instructions[f"graphgen ingest + forward (gRPC){label}"] = \
                    graphgen_instructions_per_span("forward", n, sink_url, warm_up=warm_up)

        if args.overload_seconds:
            slow_port = free_port()
            slow = start("slow-sink", [LOAD, "sink", "--listen", f"127.0.0.1:{slow_port}", "--delay", "200ms"], 1)
            wait_port(slow_port)
            collector, _ = graphgen_cmd(f"http://127.0.0.1:{slow_port}")
            row = measure("graphgen forward to a slow sink (overload)", collector, "grpc", args.overload_seconds)
            rows.append(row)
            stop(slow)
    finally:
        stop(sink)

    by_mode = {r["mode"]: r for r in rows}
    print(f"\nbench-e2e, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; collector pinned to core 0,"
          f" load generator and sink on core 1; 500 spans a request; {args.seconds:.0f} s a mode;"
          f" compared rows: the median of {max(args.rounds, 1)} alternating rounds\n")
    print(f"| {'mode':<44} | spans per CPU-s | wall spans/s | peak RSS MiB | p99 ms |")
    print(f"|{'-' * 46}|-----------------|--------------|--------------|--------|")
    for r in rows:
        wall = f"{r['wall']:>12,.0f}" if r.get("wall") is not None else " " * 12
        rss = f"{r['rss']:>12.0f}" if r.get("rss") is not None else " " * 12
        p99 = f"{r['p99']:>6.1f}" if r.get("p99") is not None else " " * 6
        figure = r.get("refusals_per_cpu_s")
        per = f"{figure:>9,.0f} req" if figure else f"{r['per_cpu_s']:>13,.0f}"
        print(f"| {r['mode']:<44} | {per:>15} | {wall} | {rss} | {p99} |")

    print("\nthe rounds of the compared rows (spans per CPU-s):")
    for name, measured in rounds.items():
        print(f"  {name:<44} " + ", ".join(f"{r['per_cpu_s']:,.0f}" for r in measured))

    if instructions:
        print("\ninstructions per span (callgrind, the whole process; the same requests, sent one"
              " at a time):")
        for mode, figure in instructions.items():
            print(f"  {mode:<60} {figure:>8,.0f}")
        base = instructions["prost decode alone (baseline)"]
        for mode in instructions:
            if mode.startswith("graphgen"):
                print(f"  decode / {mode}: {base / instructions[mode]:.2f}×")

    def ratio(a, b):
        if a not in by_mode or b not in by_mode:
            return
        if a in rounds and b in rounds:
            each = [x["per_cpu_s"] / y["per_cpu_s"] for x, y in zip(rounds[a], rounds[b])]
            print(f"  {a} / {b}: {statistics.median(each):.2f}× (rounds: "
                  + ", ".join(f"{r:.2f}" for r in each) + ")")
        else:
            print(f"  {a} / {b}: {by_mode[a]['per_cpu_s'] / by_mode[b]['per_cpu_s']:.2f}×")
    print("\nratios (spans per CPU-second):")
    ratio("graphgen ingest + forward (gRPC)", "rotel-agent forward (gRPC)")
    ratio("graphgen ingest (gRPC, both processors)", "rotel-agent blackhole (gRPC)")
    ratio("graphgen ingest (HTTP protobuf)", "rotel-agent blackhole (HTTP)")
    ratio("graphgen ingest (gRPC, both processors)", "prost decode alone (baseline)")
    ratio("graphgen ingest, fresh ids, dedup 100,000", "graphgen ingest, fresh ids")
    ratio("graphgen ingest, fresh ids, dedup 1,000,000", "graphgen ingest, fresh ids")
    ratio("graphgen ingest, all re-delivered, dedup", "graphgen ingest (gRPC, both processors)")
    accepted = by_mode["graphgen ingest (gRPC, both processors)"]
    refused = by_mode["graphgen refusing (queue full)"]
    if refused.get("refusals_per_cpu_s"):
        accepted_cpu_per_request = accepted["cpu"] / max(accepted["summary"]["accepted_requests"], 1)
        refused_cpu_per_request = 1 / refused["refusals_per_cpu_s"]
        print(f"  CPU of a refused request / an accepted one: {refused_cpu_per_request / accepted_cpu_per_request:.3f}")
    print(f"\nlogs: {LOGS}")


if __name__ == "__main__":
    main()
