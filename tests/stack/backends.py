"""A real PostgreSQL and NATS server as local processes for the end-to-end run, as
tests/rust/backends.rs starts them for the Rust tests and scripts/dev.sh for `make dev`
(Debian's postgresql and nats-server, which `make tools` installs)."""

import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time


def postgres_bin():
    versions = sorted((int(p.name) for p in pathlib.Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()),
                      reverse=True)
    for v in versions:
        bin_dir = pathlib.Path(f"/usr/lib/postgresql/{v}/bin")
        if (bin_dir / "initdb").exists():
            return bin_dir
    raise AssertionError("PostgreSQL missing (/usr/lib/postgresql/<version>/bin): `make tools` installs it")


def nats_server():
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"]:
        if os.path.exists(candidate):
            return candidate
    raise AssertionError("nats-server missing: `make tools` installs it")


def _as_postgres():
    """PostgreSQL refuses root: as root, run its programs as Debian's `postgres` user."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    return []


def start_postgres(port, log):
    """initdb (trust for user demo), the server on 127.0.0.1:`port`, database `orders`.
    Returns (process, directory); stop it with stop_postgres."""
    bin_dir = postgres_bin()
    work = pathlib.Path(tempfile.mkdtemp(prefix="demo-pg-"))
    if os.geteuid() == 0:
        shutil.chown(work, "postgres", "postgres")
    run = _as_postgres()
    subprocess.run([*run, bin_dir / "initdb", "-D", work / "data", "-U", "demo", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True)
    process = subprocess.Popen([*run, bin_dir / "postgres", "-D", work / "data", "-p", str(port), "-k", work,
                                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while subprocess.run([bin_dir / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
        assert process.poll() is None and time.time() < deadline, "postgres did not start"
        time.sleep(0.1)
    subprocess.run([*run, bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "demo", "orders"],
                   check=True, capture_output=True)
    return process, work


def stop_postgres(process, work):
    """Fast shutdown (SIGINT: sessions are cut, not waited for), then the directory goes."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(work, ignore_errors=True)


def start_nats(port, log):
    return subprocess.Popen([nats_server(), "-a", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
