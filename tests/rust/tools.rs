//! Shared by the Rust test suites of both crates (`#[path]`-included from each
//! `tests/support/mod.rs`): free ports, and the programs some tests need besides Rust.
//!
//! Under `make test` (which sets `GRAPHGEN_REQUIRE_TOOLS=1`) a missing program fails the test;
//! under a bare `cargo test` the test is skipped with a message that names the program and the
//! target that installs it.

use std::path::PathBuf;

/// A loopback port free now, for a program that cannot bind port 0 and say which it got
/// (Prometheus, the demo roles, a sink started later). It is taken below the kernel's
/// ephemeral range, so no socket bound to port 0 (graphgen under test binds its listeners so)
/// and no outgoing connection can be given it meanwhile; and never handed out twice in this
/// process, so parallel tests do not collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let start = low + (std::process::id() as u16).wrapping_mul(7919) % (high - low);
    for i in 0..(high - low) {
        let port = low + (start - low + i) % (high - low);
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port below {high}");
}

/// `None` (and a loud SKIPPED line) when `what` is missing outside `make`; a panic under it.
fn missing<T>(what: &str) -> Option<T> {
    skip_or_fail(format!(
        "{what} is missing: `make tools` installs it (Debian, as root); `make test` runs every test"
    ))
}

fn skip_or_fail<T>(message: String) -> Option<T> {
    if std::env::var_os("GRAPHGEN_REQUIRE_TOOLS").is_some() {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
    None
}

/// The Python of the project's venv (`PYTHON`, which the Makefile sets, or `.venv/bin/python`)
/// with the packages of `tests/requirements.txt`.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"))
        });
    if path.exists() {
        Some(path)
    } else {
        missing(&format!(
            "the Python venv ({}, with tests/requirements.txt)",
            path.display()
        ))
    }
}

/// Debian's `prometheus` (or `$PROMETHEUS`).
pub fn prometheus() -> Option<PathBuf> {
    let binary = std::env::var_os("PROMETHEUS").unwrap_or_else(|| "prometheus".into());
    let found = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some(PathBuf::from(binary))
    } else {
        missing("Prometheus (`prometheus` on PATH, Debian's package, or $PROMETHEUS)")
    }
}

/// The directory of PostgreSQL's server programs (Debian's `postgresql`: the newest
/// `/usr/lib/postgresql/<version>/bin`, or `$PG_BIN`).
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .max();
    match newest.map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))) {
        Some(bin) if bin.join("initdb").exists() => Some(bin),
        _ => missing("PostgreSQL (/usr/lib/postgresql/<version>/bin: Debian's postgresql)"),
    }
}

/// Debian's `nats-server` (or `$NATS_SERVER`).
pub fn nats_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("NATS_SERVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/sbin/nats-server")),
        Some(PathBuf::from("/usr/bin/nats-server")),
    ];
    match candidates.into_iter().flatten().find(|p| p.exists()) {
        Some(binary) => Some(binary),
        None => missing("nats-server (/usr/sbin/nats-server: Debian's nats-server)"),
    }
}

/// Runs one of `tests/browser/*.py` (selenium driving Chromium) with `args`, offline; panics
/// with its output when it fails, returns what it printed otherwise.
pub fn run_browser_script(python: &std::path::Path, script: &str, args: &[String]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/");
    let output = std::process::Command::new(python)
        .arg(format!("{path}{script}"))
        .args(args)
        .env("SE_OFFLINE", "true")
        .output()
        .expect("run the browser script");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "browser check {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Debian's Chromium and its driver, which the browser test drives through selenium.
pub fn chromium() -> Option<()> {
    let has = |p: &str| std::path::Path::new(p).exists();
    if has("/usr/bin/chromium") && has("/usr/bin/chromedriver") {
        Some(())
    } else {
        missing("Chromium and chromedriver (/usr/bin/chromium, /usr/bin/chromedriver: Debian's chromium, chromium-driver)")
    }
}

/// libfiu's `fiu-run` and `fiu-ctrl` (Debian's fiu-utils): fault injection into POSIX calls.
pub fn fiu() -> Option<()> {
    let has = |p: &str| std::path::Path::new(p).exists();
    if has("/usr/bin/fiu-run") && has("/usr/bin/fiu-ctrl") {
        Some(())
    } else {
        missing("libfiu's fiu-run and fiu-ctrl (Debian's fiu-utils)")
    }
}

/// Root, who can mount a tmpfs (to fill a real filesystem).
pub fn root() -> Option<()> {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.as_deref() == Some("0") {
        Some(())
    } else {
        skip_or_fail(
            "not root: the full-disk test mounts a small tmpfs; run `make test` as root, as CI does"
                .into(),
        )
    }
}
