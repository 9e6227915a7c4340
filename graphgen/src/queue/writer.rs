//! The disk queue's writer thread. It alone owns the files ([`DiskLog`]); the async side
//! sends it commands and awaits the replies, so no write, fsync or unlink runs on tokio's
//! workers or under the queue's lock (vector's disk buffer keeps its writer apart the same
//! way). Appends that arrive while it is busy are written together: with `--queue-fsync
//! always` one fsync covers every request waiting on it (group commit).
//!
//! Faults are counted (`graphgen_queue_write_errors_total{op}`), logged once when they begin
//! and once when they end, and shown on `/readyz` (`graphgen_queue_writable`). Nothing here
//! stops for good: every request tries again, and while refusing, the writer probes the
//! directory every second so readiness comes back without traffic.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::disk::{AckState, DiskLog, Fsync, Location, ReadView, WriteError};
use crate::selfmetrics::{QueueWriteLabels, QueueWriteOp, SelfMetrics};

/// How often `periodic` syncs, and how often a refusing queue probes its directory.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// The longest a group commit waits for more requests.
const MAX_GATHER: Duration = Duration::from_millis(2);

/// Where a request's write is answered.
type Reply = oneshot::Sender<Result<Location, WriteError>>;

/// What the writer is asked to do.
pub enum Command {
    Append {
        payload: Bytes,
        spans: usize,
        reply: Reply,
    },
    Mark {
        locations: Vec<Location>,
        state: AckState,
    },
    /// fsync everything written (shutdown).
    Sync {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
}

/// The handle to the writer thread; dropping it lets the thread finish (a last fsync) and
/// waits for it, so the directory's lock is free once the queue is gone.
pub struct Writer {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    view: Arc<RwLock<ReadView>>,
    writable: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the thread. `max_group`: most appends written before one fsync.
    pub fn spawn(log: DiskLog, metrics: Arc<SelfMetrics>, max_group: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let view = log.view();
        let writable = Arc::new(AtomicBool::new(true));
        metrics.queue.writable.set(1);
        let thread = std::thread::Builder::new()
            .name("graphgen-queue-writer".into())
            .spawn({
                let writable = writable.clone();
                move || {
                    let faults = Faults {
                        failing: BTreeMap::new(),
                        metrics,
                        writable,
                    };
                    run(log, rx, faults, max_group.max(1));
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            view,
            writable,
        })
    }

    pub fn send(&self, command: Command) {
        // The thread ends only when this handle is dropped.
        let _ = self.tx.as_ref().expect("open until dropped").send(command);
    }

    pub fn view(&self) -> &RwLock<ReadView> {
        &self.view
    }

    /// False while writes fail, until one succeeds again.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The faults going on now, by operation: each is logged when it begins and when it ends.
struct Faults {
    failing: BTreeMap<QueueWriteOp, (io::ErrorKind, u64)>,
    metrics: Arc<SelfMetrics>,
    writable: Arc<AtomicBool>,
}

impl Faults {
    fn record(&mut self, errors: Vec<WriteError>) {
        for e in errors {
            self.metrics
                .queue
                .write_errors
                .get_or_create(&QueueWriteLabels { op: e.op })
                .inc();
            let kind = e.source.kind();
            match self.failing.get_mut(&e.op) {
                Some((k, count)) if *k == kind => *count += 1,
                _ => {
                    tracing::error!(op = ?e.op, error = %e.source, "queue directory write failed; requests that need it are refused with a retryable status until it works again");
                    self.failing.insert(e.op, (kind, 1));
                }
            }
        }
        self.update();
    }

    /// `ops` worked again.
    fn cleared(&mut self, ops: &[QueueWriteOp]) {
        for op in ops {
            if let Some((_, count)) = self.failing.remove(op) {
                tracing::info!(op = ?op, errors = count, "queue directory writable again");
            }
        }
        self.update();
    }

    /// Whether requests are being refused: a segment start, an append or an fsync is failing
    /// (under `always` the group commit fails them, under `periodic` they are refused until an
    /// fsync works).
    fn refusing(&self) -> bool {
        [
            QueueWriteOp::segment_start,
            QueueWriteOp::append,
            QueueWriteOp::fsync,
        ]
        .iter()
        .any(|op| self.failing.contains_key(op))
    }

    fn update(&self) {
        let writable = !self.refusing();
        self.writable.store(writable, Ordering::Relaxed);
        self.metrics.queue.writable.set(i64::from(writable));
    }
}

/// The writer thread's state between commands.
struct Loop {
    log: DiskLog,
    faults: Faults,
    max_group: usize,
    periodic: bool,
    next_tick: Instant,
    /// Size and commit time of the last group (`always`), for gathering the next one.
    last_group: usize,
    gather: Duration,
}

fn run(log: DiskLog, rx: mpsc::Receiver<Command>, faults: Faults, max_group: usize) {
    let mut state = Loop {
        periodic: log.fsync() == Fsync::Periodic,
        log,
        faults,
        max_group,
        next_tick: Instant::now() + SYNC_EVERY,
        last_group: 0,
        gather: Duration::ZERO,
    };
    while let Some(commands) = state.next_commands(&rx) {
        state.handle(commands);
    }
    if let Err(e) = state.log.sync_all() {
        tracing::error!(error = %e, "cannot sync the queue directory at exit");
    }
}

impl Loop {
    /// Waits for commands (until the next tick, if one is due), then takes whatever else is
    /// waiting. Under `always`, when fewer requests are here than the last group had, their
    /// clients are likely on their way back: it waits for them up to half the last commit's
    /// time (PostgreSQL's commit_delay, made adaptive), so one fsync serves them all. A lone
    /// client never waits. `None` once the queue is gone.
    fn next_commands(&mut self, rx: &mpsc::Receiver<Command>) -> Option<Vec<Command>> {
        let wait = if self.periodic || !self.faults.failing.is_empty() {
            self.next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        let mut commands = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(command) => commands.push(command),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
        let is_append = |c: &Command| matches!(c, Command::Append { .. });
        let mut appends = commands.iter().filter(|c| is_append(c)).count();
        let gather_until = Instant::now() + self.gather;
        while appends < self.max_group {
            let next = if appends > 0 && appends < self.last_group {
                rx.recv_timeout(gather_until.saturating_duration_since(Instant::now()))
                    .ok()
            } else {
                rx.try_recv().ok()
            };
            let Some(command) = next else {
                break;
            };
            appends += usize::from(is_append(&command));
            commands.push(command);
        }
        Some(commands)
    }

    fn handle(&mut self, commands: Vec<Command>) {
        let mut appends = Vec::new();
        let mut syncs = Vec::new();
        for command in commands {
            match command {
                Command::Append {
                    payload,
                    spans,
                    reply,
                } => appends.push(((payload, spans), reply)),
                Command::Mark { locations, state } => self.log.mark(&locations, state),
                Command::Sync { reply } => syncs.push(reply),
            }
        }
        if !appends.is_empty() {
            self.commit(appends);
        }
        if Instant::now() >= self.next_tick {
            self.tick();
        }
        if !syncs.is_empty() {
            let result = self.log.sync_all();
            self.faults.record(self.log.take_errors());
            for reply in syncs {
                let _ = reply.send(result.clone());
            }
        }
        self.faults.record(self.log.take_errors());
        let segments = self.log.segment_count() as i64;
        self.faults.metrics.queue.segments.set(segments);
    }

    /// Writes a group of requests (and, under `always`, syncs it) and answers each.
    fn commit(&mut self, appends: Vec<((Bytes, usize), Reply)>) {
        let (items, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        if self.periodic && self.faults.failing.contains_key(&QueueWriteOp::fsync) {
            // Under `periodic` an OK promises the disk within a second; while fsync fails no
            // request can be promised that. Refused until a tick or the probe shows it works.
            let refused = WriteError {
                op: QueueWriteOp::fsync,
                source: Arc::new(io::Error::other(
                    "fsync of the queue directory is failing; retry later",
                )),
            };
            for reply in replies {
                let _ = reply.send(Err(refused.clone()));
            }
            return;
        }
        let started = Instant::now();
        let results = self.log.append_group(&items);
        let always = self.log.fsync() == Fsync::Always;
        if always {
            self.last_group = items.len();
            self.gather = (started.elapsed() / 2).min(MAX_GATHER);
        }
        let all_ok = results.iter().all(|r| r.is_ok());
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        self.faults.record(self.log.take_errors());
        if all_ok {
            let mut ops = vec![
                QueueWriteOp::segment_start,
                QueueWriteOp::append,
                QueueWriteOp::ack,
                QueueWriteOp::remove,
            ];
            if always {
                ops.push(QueueWriteOp::fsync);
            }
            self.faults.cleared(&ops);
        }
    }

    /// Once a second: the periodic fsync, and while writes fail, a probe of the directory.
    fn tick(&mut self) {
        self.next_tick = Instant::now() + SYNC_EVERY;
        let mut sync_failed = false;
        if self.periodic {
            // Only fsyncs that had something to do, all of which worked, show the disk works
            // again (one that failed may have had its records rewritten, or none to keep).
            let tested = self.log.needs_sync();
            let result = self.log.sync_all();
            let errors = self.log.take_errors();
            sync_failed = errors.iter().any(|e| e.op == QueueWriteOp::fsync);
            self.faults.record(errors);
            if result.is_ok() && tested && !sync_failed {
                self.faults.cleared(&[QueueWriteOp::fsync]);
            }
        }
        if self.faults.refusing() && self.log.probe() {
            let mut ops = vec![QueueWriteOp::segment_start, QueueWriteOp::append];
            // A probe does not outvote an fsync of the queue's own files that just failed.
            if !sync_failed {
                ops.push(QueueWriteOp::fsync);
            }
            self.faults.cleared(&ops);
        }
    }
}
