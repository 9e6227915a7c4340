//! The forwarding queue between the receivers and the trace exporter. Accepted requests wait
//! here, as the protobuf bytes they arrived as, until the traces endpoint has acknowledged them.
//!
//! - Bounded in bytes and in spans. A receiver reserves a request's bytes before decoding it,
//!   so a full queue refuses at the cost of reading the body (back-pressure, nothing dropped).
//! - In memory by default. With a directory ([`disk`]) every request is written before its
//!   client hears OK, and whatever was not acknowledged is sent again after a restart
//!   (at-least-once; duplicates are bounded by what was being sent, and counted). The files
//!   are written by one thread ([`writer`]; group commit under `--queue-fsync always`), never
//!   on the async workers or under this module's lock; a failed write refuses that request
//!   and intake resumes as soon as writes work again.
//! - Several exporters take batches at once and finish in any order.
//! - Every request keeps its tenant (on disk in its record, [`envelope`]); a batch never mixes
//!   tenants, so each export carries one tenant's header.

#[cfg(test)]
mod crash_sim;
pub mod disk;
mod envelope;
pub mod files;
mod upgrade;
pub mod writer;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::selfmetrics::SelfMetrics;
use crate::tenants::TenantId;
use disk::{AckState, DiskLog, Fsync, Location};
use writer::{Command, Writer};

/// How much may wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_spans: usize,
}

/// Where the queue keeps its requests.
#[derive(Debug, Clone)]
pub enum Storage {
    Memory,
    Disk {
        dir: std::path::PathBuf,
        fsync: Fsync,
        segment_bytes: u64,
        /// Most requests written before one fsync (`always`); 1 turns group commit off.
        max_group: usize,
    },
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("forwarding queue is full ({spans} spans, {bytes} bytes waiting), retry later")]
    Full { spans: usize, bytes: usize },
    #[error("cannot write to the queue directory: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
enum Payload {
    Memory(Bytes),
    Disk(Location),
}

#[derive(Debug)]
struct Entry {
    payload: Payload,
    /// `None`: the default tenant.
    tenant: Option<TenantId>,
    /// Where the request starts in what is read back (after a record's tenant).
    request_start: usize,
    spans: usize,
    bytes: usize,
    sent_before: bool,
}

struct State {
    ready: VecDeque<Entry>,
    /// Reserved, being written, queued and being sent.
    bytes: usize,
    spans: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    limits: Limits,
    metrics: Arc<SelfMetrics>,
    /// The persistent queue's writer thread, if on disk.
    disk: Option<Writer>,
}

/// The queue; cheap to clone, shared by the receivers, the exporters and the admin server.
#[derive(Clone)]
pub struct SpanQueue(Arc<Shared>);

/// Room for a request's bytes, held while it is decoded; dropping it gives the room back.
pub struct Reservation {
    queue: SpanQueue,
    bytes: usize,
}

/// Requests taken together for one export.
#[derive(Debug)]
pub struct Batch {
    entries: Vec<Entry>,
    /// Whose requests these are (`None`: the default tenant's); one tenant a batch.
    pub tenant: Option<TenantId>,
    /// The requests' bytes; written one after the other they are one request.
    pub parts: Vec<Bytes>,
    pub spans: usize,
    pub bytes: usize,
    /// Spans in it that had been sent before a restart (possible duplicates).
    pub resent_spans: usize,
}

/// What the start found in the queue directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovered {
    pub spans: usize,
    pub requests: usize,
    pub resent_spans: usize,
    pub corrupt_segments: usize,
    pub unreadable_bytes: u64,
}

/// Why the queue cannot take a request now (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAccepting {
    Full,
    NotWritable,
}

impl SpanQueue {
    pub fn open(
        storage: &Storage,
        limits: Limits,
        metrics: Arc<SelfMetrics>,
    ) -> std::io::Result<(Self, Recovered)> {
        let disk = match storage {
            Storage::Memory => None,
            Storage::Disk {
                dir,
                fsync,
                segment_bytes,
                max_group,
            } => {
                let files = files::OsDir::open(dir)?;
                let (log, recovery) = DiskLog::open(Box::new(files), *segment_bytes, *fsync)?;
                Some((log, recovery, *max_group))
            }
        };
        Self::with_log(disk, limits, metrics)
    }

    /// The queue over an opened log (or in memory); tests pass a log over their own files.
    fn with_log(
        log: Option<(DiskLog, disk::Recovery, usize)>,
        limits: Limits,
        metrics: Arc<SelfMetrics>,
    ) -> std::io::Result<(Self, Recovered)> {
        let mut state = State {
            ready: VecDeque::new(),
            bytes: 0,
            spans: 0,
        };
        let mut recovered = Recovered::default();
        let mut disk = None;
        if let Some((log, recovery, max_group)) = log {
            for p in recovery.pending {
                recovered.requests += 1;
                recovered.spans += p.spans;
                if p.sent_before {
                    recovered.resent_spans += p.spans;
                }
                state.bytes += p.bytes;
                state.spans += p.spans;
                state.ready.push_back(Entry {
                    payload: Payload::Disk(p.location),
                    tenant: p.tenant,
                    request_start: p.request_start,
                    spans: p.spans,
                    bytes: p.bytes,
                    sent_before: p.sent_before,
                });
            }
            recovered.corrupt_segments = recovery.corrupt_segments;
            recovered.unreadable_bytes = recovery.unreadable_bytes;
            metrics.queue.segments.set(log.segment_count() as i64);
            disk = Some(Writer::spawn(log, metrics.clone(), max_group)?);
        }
        if disk.is_none() {
            // Memory is always writable; on disk the writer thread keeps this.
            metrics.queue.writable.set(1);
        }
        metrics.queue.capacity_bytes.set(limits.max_bytes as i64);
        metrics.queue.capacity_spans.set(limits.max_spans as i64);
        metrics.queue.recovered_spans.inc_by(recovered.spans as u64);
        metrics
            .queue
            .corrupt_segments
            .inc_by(recovered.corrupt_segments as u64);
        metrics
            .queue
            .unreadable_bytes
            .inc_by(recovered.unreadable_bytes);
        let queue = SpanQueue(Arc::new(Shared {
            state: Mutex::new(state),
            wake: Notify::new(),
            limits,
            metrics,
            disk,
        }));
        queue.update_gauges(&queue.lock());
        Ok((queue, recovered))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_gauges(&self, state: &State) {
        let q = &self.0.metrics.queue;
        q.spans.set(state.spans as i64);
        q.bytes.set(state.bytes as i64);
    }

    /// The error a full queue answers with.
    pub fn full_error(&self) -> QueueError {
        self.full(&self.lock())
    }

    fn full(&self, state: &State) -> QueueError {
        QueueError::Full {
            spans: state.spans,
            bytes: state.bytes,
        }
    }

    /// Whether a request of `bytes` would be let in now (nothing is reserved).
    pub fn has_room(&self, bytes: usize) -> bool {
        let state = self.lock();
        let busy = state.bytes > 0 || state.spans > 0;
        !busy
            || (state.bytes + bytes <= self.0.limits.max_bytes
                && state.spans < self.0.limits.max_spans)
    }

    /// Whether a request would be taken now: room, and (on disk) writes that work.
    pub fn accepting(&self) -> Result<(), NotAccepting> {
        if self.0.disk.as_ref().is_some_and(|w| !w.is_writable()) {
            return Err(NotAccepting::NotWritable);
        }
        if !self.has_room(1) {
            return Err(NotAccepting::Full);
        }
        Ok(())
    }

    /// Reserves room for a request of `bytes`, before it is decoded. A request larger than the
    /// whole queue is let in when the queue is empty, so it is never refused forever.
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation, QueueError> {
        let mut state = self.lock();
        let limits = self.0.limits;
        let busy = state.bytes > 0 || state.spans > 0;
        if busy && (state.bytes + bytes > limits.max_bytes || state.spans >= limits.max_spans) {
            return Err(self.full(&state));
        }
        state.bytes += bytes;
        Ok(Reservation {
            queue: self.clone(),
            bytes,
        })
    }

    /// Spans queued or being sent.
    pub fn spans(&self) -> usize {
        self.lock().spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans() == 0
    }

    /// Takes up to `max_spans` / `max_bytes` worth of requests (at least one), waiting for
    /// one to arrive.
    pub async fn next_batch(&self, max_spans: usize, max_bytes: usize) -> Batch {
        loop {
            let notified = self.0.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take(max_spans, max_bytes) {
                Some(entries) if self.0.disk.is_none() => {
                    if let Some(batch) = self.load(entries) {
                        return batch;
                    }
                }
                // Records on disk are read on a blocking thread. A caller that stops waiting
                // meanwhile (shutdown's select) does not lose them: they go back in front.
                Some(entries) => {
                    let (hand, handed) = oneshot::channel();
                    let queue = self.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Some(batch) = queue.load(entries) {
                            if let Err(batch) = hand.send(batch) {
                                queue.put_back(batch);
                            }
                        }
                    });
                    let mut handed = Handed {
                        batch: Some(handed),
                        queue: self.clone(),
                    };
                    let received = handed.batch.as_mut().expect("set above").await;
                    handed.batch = None;
                    if let Ok(batch) = received {
                        return batch;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Takes a batch if anything is waiting (reading disk records on this thread).
    pub fn try_batch(&self, max_spans: usize, max_bytes: usize) -> Option<Batch> {
        loop {
            let entries = self.take(max_spans, max_bytes)?;
            if let Some(batch) = self.load(entries) {
                return Some(batch);
            }
        }
    }

    /// The next entries of a batch, marked sent on disk.
    fn take(&self, max_spans: usize, max_bytes: usize) -> Option<Vec<Entry>> {
        let mut entries = Vec::new();
        let (mut spans, mut bytes) = (0, 0);
        let mut state = self.lock();
        while let Some(next) = state.ready.front() {
            let first: Option<&Entry> = entries.first();
            if first.is_some_and(|first| {
                spans + next.spans > max_spans
                    || bytes + next.bytes > max_bytes
                    || first.tenant != next.tenant
            }) {
                break;
            }
            let entry = state.ready.pop_front().expect("front exists");
            spans += entry.spans;
            bytes += entry.bytes;
            entries.push(entry);
        }
        drop(state);
        if entries.is_empty() {
            return None;
        }
        if let Some(writer) = &self.0.disk {
            let locations: Vec<Location> = entries.iter().filter_map(disk_location).collect();
            writer.send(Command::Mark {
                locations,
                state: AckState::Sent,
            });
        }
        Some(entries)
    }

    /// Reads the entries' bytes. One that cannot be read back is counted as dropped
    /// (`unreadable`) and done with; `None` if none could be.
    fn load(&self, mut entries: Vec<Entry>) -> Option<Batch> {
        let mut parts = Vec::with_capacity(entries.len());
        let mut lost = Vec::new();
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries.drain(..) {
            let part = match (&entry.payload, &self.0.disk) {
                (Payload::Memory(bytes), _) => Ok(bytes.clone()),
                (Payload::Disk(location), Some(writer)) => disk::read(writer.view(), location)
                    .map(|record| record.slice(entry.request_start..)),
                (Payload::Disk(_), None) => unreachable!("disk entries need the disk"),
            };
            match part {
                Ok(part) => {
                    parts.push(part);
                    kept.push(entry);
                }
                Err(e) => {
                    tracing::error!(error = %e, "a queued request cannot be read back; its spans are lost");
                    lost.push(entry);
                }
            }
        }
        if !lost.is_empty() {
            let spans = lost.iter().map(|e| e.spans).sum();
            self.0
                .metrics
                .count_dropped(crate::selfmetrics::DropReason::unreadable, spans);
            self.finish_entries(lost);
        }
        if kept.is_empty() {
            return None;
        }
        Some(Batch {
            tenant: kept[0].tenant.clone(),
            spans: kept.iter().map(|e| e.spans).sum(),
            bytes: kept.iter().map(|e| e.bytes).sum(),
            resent_spans: kept.iter().filter(|e| e.sent_before).map(|e| e.spans).sum(),
            entries: kept,
            parts,
        })
    }

    /// A batch nobody took after all: its requests wait again, first in line.
    fn put_back(&self, batch: Batch) {
        let mut state = self.lock();
        for entry in batch.entries.into_iter().rev() {
            state.ready.push_front(entry);
        }
        drop(state);
        self.0.wake.notify_one();
    }

    /// The batch is done with: delivered, or given up on (and counted by the caller). Its
    /// room is given back and, on disk, it is marked done so it is never sent again.
    pub fn finish(&self, batch: Batch) {
        self.finish_entries(batch.entries);
    }

    /// Gives a batch's room back without marking it done: on disk it is sent again on the
    /// next start.
    pub fn keep_for_next_start(&self, batch: Batch) {
        self.release(&mut self.lock(), &batch.entries);
    }

    fn finish_entries(&self, entries: Vec<Entry>) {
        if let Some(writer) = &self.0.disk {
            let locations: Vec<Location> = entries.iter().filter_map(disk_location).collect();
            writer.send(Command::Mark {
                locations,
                state: AckState::Done,
            });
        }
        self.release(&mut self.lock(), &entries);
    }

    fn release(&self, state: &mut State, entries: &[Entry]) {
        for entry in entries {
            state.bytes -= entry.bytes;
            state.spans -= entry.spans;
        }
        self.update_gauges(state);
    }

    /// Whether requests survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.0.disk.is_some()
    }

    /// Spans still waiting (not being sent) at shutdown. In memory they are given up and
    /// their room returned; on disk they stay for the next start.
    pub fn abandon_waiting(&self) -> usize {
        let mut state = self.lock();
        let spans = state.ready.iter().map(|e| e.spans).sum();
        if self.0.disk.is_none() {
            let bytes: usize = state.ready.iter().map(|e| e.bytes).sum();
            state.ready.clear();
            state.bytes -= bytes;
            state.spans -= spans;
            self.update_gauges(&state);
        }
        spans
    }

    /// fsyncs everything written (shutdown), whatever the policy.
    pub async fn sync(&self) -> std::io::Result<()> {
        let Some(writer) = &self.0.disk else {
            return Ok(());
        };
        let (reply, done) = oneshot::channel();
        writer.send(Command::Sync { reply });
        match done.await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(std::io::Error::other("the queue writer stopped")),
        }
    }

    /// A written record becomes a queued entry; a failed write gives its room back.
    fn settle_append(
        &self,
        written: Result<Location, std::io::Error>,
        tenant: Option<TenantId>,
        spans: usize,
        bytes: usize,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        match written {
            Ok(location) => {
                state.ready.push_back(Entry {
                    payload: Payload::Disk(location),
                    request_start: envelope::request_start(tenant.as_ref()),
                    tenant,
                    spans,
                    bytes,
                    sent_before: false,
                });
                self.update_gauges(&state);
                drop(state);
                self.0.wake.notify_one();
                Ok(())
            }
            Err(e) => {
                state.bytes -= bytes;
                state.spans -= spans;
                self.update_gauges(&state);
                Err(QueueError::Io(e))
            }
        }
    }
}

/// A batch being read for an exporter. If the exporter stops waiting, whatever was already
/// handed over goes back in front (the reading thread puts back what it could not hand over).
struct Handed {
    batch: Option<oneshot::Receiver<Batch>>,
    queue: SpanQueue,
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(mut batch) = self.batch.take() {
            batch.close();
            if let Ok(batch) = batch.try_recv() {
                self.queue.put_back(batch);
            }
        }
    }
}

fn disk_location(entry: &Entry) -> Option<Location> {
    match entry.payload {
        Payload::Disk(l) => Some(l),
        Payload::Memory(_) => None,
    }
}

impl Reservation {
    /// Queues the request: `payload` is its protobuf encoding, `spans` its span count,
    /// `tenant` whose it is (`None`: the default tenant's). On disk it is written (and synced,
    /// per the policy) by the writer thread before this returns. The room taken becomes the
    /// payload's real size.
    pub async fn commit(
        mut self,
        tenant: Option<TenantId>,
        payload: Bytes,
        spans: usize,
    ) -> Result<(), QueueError> {
        let queue = self.queue.clone();
        let bytes = payload.len();
        {
            let mut state = queue.lock();
            state.bytes -= std::mem::take(&mut self.bytes);
            let busy = state.bytes > 0 || state.spans > 0;
            if busy && state.spans + spans > queue.0.limits.max_spans {
                return Err(queue.full(&state));
            }
            state.bytes += bytes;
            state.spans += spans;
            queue.update_gauges(&state);
            if queue.0.disk.is_none() {
                state.ready.push_back(Entry {
                    payload: Payload::Memory(payload),
                    tenant,
                    request_start: 0,
                    spans,
                    bytes,
                    sent_before: false,
                });
                drop(state);
                queue.0.wake.notify_one();
                return Ok(());
            }
        }
        let (reply, written) = oneshot::channel();
        queue
            .0
            .disk
            .as_ref()
            .expect("checked above")
            .send(Command::Append {
                payload: envelope::wrap(tenant.as_ref(), &payload),
                spans,
                reply,
            });
        // A task of its own settles the write, so a client going away mid-write can neither
        // lose a written record nor leak its room.
        let settle = tokio::spawn(async move {
            let written = match written.await {
                Ok(result) => result.map_err(std::io::Error::from),
                Err(_) => Err(std::io::Error::other("the queue writer stopped")),
            };
            queue.settle_append(written, tenant, spans, bytes)
        });
        settle
            .await
            .unwrap_or_else(|e| Err(QueueError::Io(std::io::Error::other(e))))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.queue.lock().bytes -= self.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(max_bytes: usize, max_spans: usize) -> SpanQueue {
        let limits = Limits {
            max_bytes,
            max_spans,
        };
        SpanQueue::open(&Storage::Memory, limits, Arc::default())
            .unwrap()
            .0
    }

    async fn push(queue: &SpanQueue, bytes: usize, spans: usize) -> Result<(), QueueError> {
        push_bytes(queue, vec![7; bytes], spans).await
    }

    async fn push_bytes(
        queue: &SpanQueue,
        payload: Vec<u8>,
        spans: usize,
    ) -> Result<(), QueueError> {
        queue
            .try_reserve(payload.len())?
            .commit(None, Bytes::from(payload), spans)
            .await
    }

    /// A queue directory at `dir` (fsync left to the kernel), and room for 1000 spans.
    fn on_disk(dir: &std::path::Path) -> (Storage, Limits) {
        let storage = Storage::Disk {
            dir: dir.to_path_buf(),
            fsync: Fsync::Never,
            segment_bytes: 1 << 20,
            max_group: 64,
        };
        let limits = Limits {
            max_bytes: 1 << 20,
            max_spans: 1000,
        };
        (storage, limits)
    }

    /// A disk queue over the simulator's files.
    fn on_sim(dir: crash_sim::SimDir, fsync: Fsync) -> SpanQueue {
        let (log, recovery) = DiskLog::open(Box::new(dir), 1 << 20, fsync).unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_spans: 1000,
        };
        SpanQueue::with_log(Some((log, recovery, 1024)), limits, Arc::default())
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn limits_in_bytes_and_spans_refuse_before_decoding_and_free_on_finish() {
        let queue = memory(1000, 10);
        push(&queue, 600, 4).await.unwrap();
        assert!(
            matches!(queue.try_reserve(500), Err(QueueError::Full { .. })),
            "bytes"
        );
        let held = queue.try_reserve(400).unwrap();
        assert!(
            queue.try_reserve(1).is_err(),
            "a reservation holds its room"
        );
        drop(held);
        push(&queue, 100, 6).await.unwrap();
        assert!(queue.try_reserve(1).is_err(), "spans at the limit");
        let batch = queue.try_batch(100, 1 << 20).unwrap();
        assert_eq!((batch.spans, batch.bytes, batch.parts.len()), (10, 700, 2));
        assert!(queue.try_reserve(1).is_err(), "still being sent");
        queue.finish(batch);
        assert!(queue.is_empty());
        // Larger than the whole queue: let in when empty.
        push(&queue, 5000, 50).await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_past_the_span_limit_is_refused_and_gives_its_room_back() {
        let queue = memory(1000, 10);
        push(&queue, 10, 8).await.unwrap();
        let err = push(&queue, 10, 5).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::Full {
                    spans: 8,
                    bytes: 10
                }
            ),
            "{err:?}"
        );
        assert_eq!(queue.lock().bytes, 10);
    }

    #[tokio::test]
    async fn batches_stop_at_their_limits_but_take_at_least_one_request() {
        let queue = memory(1 << 20, 1 << 20);
        for spans in [3, 3, 3, 50] {
            push(&queue, 100, spans).await.unwrap();
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.try_batch(7, 1 << 20))
            .map(|b| b.spans)
            .collect();
        assert_eq!(sizes, vec![6, 3, 50]);
        let queue = memory(1 << 20, 1 << 20);
        for _ in 0..3 {
            push(&queue, 100, 1).await.unwrap();
        }
        assert_eq!(queue.try_batch(100, 250).unwrap().parts.len(), 2);
    }

    #[tokio::test]
    async fn an_exporter_waiting_on_an_empty_queue_wakes_for_a_request() {
        let queue = memory(1 << 20, 1 << 20);
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next_batch(10, 1 << 20).await.spans }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing to take yet");
        push(&queue, 10, 4).await.unwrap();
        assert_eq!(waiter.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn on_disk_what_was_not_finished_comes_back_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("graphgen-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (storage, limits) = on_disk(&dir);
        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(recovered.requests, 0);
        for i in 0..4u8 {
            push_bytes(&queue, vec![i; 10], 1).await.unwrap();
        }
        let delivered = queue.try_batch(2, 1 << 20).unwrap();
        assert_eq!(
            delivered.parts,
            vec![Bytes::from(vec![0; 10]), Bytes::from(vec![1; 10])]
        );
        queue.finish(delivered);
        let in_flight = queue.try_batch(1, 1 << 20).unwrap();
        assert_eq!(in_flight.parts, vec![Bytes::from(vec![2; 10])]);
        drop(queue); // a crash: the batch in flight was never finished

        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(
            (recovered.requests, recovered.spans, recovered.resent_spans),
            (2, 2, 1)
        );
        assert_eq!(queue.spans(), 2);
        let batch = queue.try_batch(10, 1 << 20).unwrap();
        assert_eq!(
            batch.parts,
            vec![Bytes::from(vec![2; 10]), Bytes::from(vec![3; 10])]
        );
        assert_eq!(batch.resent_spans, 1);
        queue.finish(batch);
        drop(queue);
        let (_, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(recovered.requests, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tenant(id: &str) -> Option<TenantId> {
        Some(TenantId::parse(id).unwrap())
    }

    /// Each batch is one tenant's (so each export carries one header), in memory and after a
    /// restart from disk alike.
    #[tokio::test]
    async fn a_batch_never_mixes_tenants_and_a_restart_keeps_each_request_s_tenant() {
        let order = [
            tenant("a"),
            tenant("a"),
            tenant("b"),
            None,
            None,
            tenant("a"),
        ];
        let batches = |queue: &SpanQueue| {
            std::iter::from_fn(|| queue.try_batch(1000, 1 << 20))
                .map(|b| {
                    let seen = (b.tenant.clone(), b.parts.clone());
                    queue.finish(b);
                    seen
                })
                .collect::<Vec<_>>()
        };
        let want = vec![
            (
                tenant("a"),
                vec![Bytes::from(vec![0; 10]), Bytes::from(vec![1; 10])],
            ),
            (tenant("b"), vec![Bytes::from(vec![2; 10])]),
            (
                None,
                vec![Bytes::from(vec![3; 10]), Bytes::from(vec![4; 10])],
            ),
            (tenant("a"), vec![Bytes::from(vec![5; 10])]),
        ];
        let memory = memory(1 << 20, 1000);
        for (i, t) in order.iter().enumerate() {
            let r = memory.try_reserve(10).unwrap();
            r.commit(t.clone(), Bytes::from(vec![i as u8; 10]), 1)
                .await
                .unwrap();
        }
        assert_eq!(batches(&memory), want);

        let dir =
            std::env::temp_dir().join(format!("graphgen-queue-tenants-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (storage, limits) = on_disk(&dir);
        let (queue, _) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        for (i, t) in order.iter().enumerate() {
            let r = queue.try_reserve(10).unwrap();
            r.commit(t.clone(), Bytes::from(vec![i as u8; 10]), 1)
                .await
                .unwrap();
        }
        assert_eq!(queue.lock().bytes, 60, "a request's room is its own bytes");
        drop(queue);
        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(recovered.requests, 6);
        assert_eq!(queue.lock().bytes, 60);
        assert_eq!(batches(&queue), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A segment of the second format (before tenants: no envelope) is delivered as it is, its
    /// requests the default tenant's.
    #[tokio::test]
    async fn records_of_the_second_format_are_the_default_tenant_s() {
        let dir = std::env::temp_dir().join(format!("graphgen-queue-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let files = files::OsDir::open(&dir).unwrap();
            let (mut log, _) = DiskLog::open(Box::new(files), 1 << 20, Fsync::Never).unwrap();
            // Written as the previous graphgen wrote them: the request alone.
            for i in 0..2u8 {
                log.append_group(&[(Bytes::from(vec![i; 10]), 1)])
                    .pop()
                    .unwrap()
                    .unwrap();
            }
            log.sync_all().unwrap();
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "seg") {
                let mut bytes = std::fs::read(&path).unwrap();
                assert_eq!(&bytes[..8], b"GGQSEG03");
                bytes[..8].copy_from_slice(b"GGQSEG02");
                std::fs::write(&path, bytes).unwrap();
            }
        }
        let (storage, limits) = on_disk(&dir);
        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(recovered.requests, 2);
        let batch = queue.try_batch(100, 1 << 20).unwrap();
        assert_eq!(batch.tenant, None);
        assert_eq!(
            batch.parts,
            vec![Bytes::from(vec![0; 10]), Bytes::from(vec![1; 10])]
        );
        queue.finish(batch);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A disk whose fsync takes 400 ms (`always`): the requests waiting on it wait, nothing else
    /// does — no disk I/O runs under the queue's lock or on the async workers — and the 17
    /// requests that arrive meanwhile share a few fsyncs instead of taking one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_disk_stalls_only_the_requests_waiting_on_it_and_they_share_fsyncs() {
        let dir = crash_sim::SimDir::slow(std::time::Duration::from_millis(400));
        let queue = on_sim(dir.clone(), Fsync::Always);
        let commits: Vec<_> = (0..17)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move { push_bytes(&queue, vec![i; 10], 1).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let probe = std::time::Instant::now();
        assert!(queue.accepting().is_ok());
        drop(queue.try_reserve(100).unwrap());
        assert!(queue.spans() >= 1, "the waiting requests hold their spans");
        assert!(
            probe.elapsed() < std::time::Duration::from_millis(250),
            "the queue answered in {:?} while an fsync was under way",
            probe.elapsed()
        );
        for commit in commits {
            commit.await.unwrap().unwrap();
        }
        let syncs = dir.syncs();
        assert!(syncs <= 3, "{syncs} fsyncs for 17 requests");
    }

    /// An exporter that stops waiting while a batch is being read from disk (shutdown's
    /// select does that) loses nothing: the batch goes back in front of the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_read_from_disk_is_put_back_if_its_exporter_stops_waiting() {
        let dir = crash_sim::SimDir::slow(std::time::Duration::ZERO)
            .with_read_delay(std::time::Duration::from_millis(300));
        let queue = on_sim(dir, Fsync::Never);
        for i in 0..2u8 {
            push_bytes(&queue, vec![i; 10], 3).await.unwrap();
        }
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            queue.next_batch(100, 1 << 20),
        )
        .await;
        assert!(waited.is_err(), "still reading when the wait ended");
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        assert_eq!(queue.spans(), 6, "nothing released");
        let batch = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            queue.next_batch(100, 1 << 20),
        )
        .await
        .expect("the batch came back");
        assert_eq!(
            batch.parts,
            vec![Bytes::from(vec![0; 10]), Bytes::from(vec![1; 10])]
        );
        queue.finish(batch);
        assert!(queue.is_empty());
    }
}
