//! The forwarding queue between the receivers and the trace exporter. Accepted requests wait
//! here, as the protobuf bytes they arrived as, until the traces endpoint has acknowledged them.
//!
//! - Bounded in bytes and in spans. A receiver reserves a request's bytes before decoding it,
//!   so a full queue refuses at the cost of reading the body (back-pressure, nothing dropped).
//! - In memory by default. With a directory ([`disk`]) every request is written before its
//!   client hears OK, and whatever was not acknowledged is sent again after a restart
//!   (at-least-once; duplicates are bounded by what was being sent, and counted).
//! - Several exporters take batches at once and finish in any order.

pub mod disk;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::selfmetrics::SelfMetrics;
use disk::{DiskLog, Fsync, Location};

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
    spans: usize,
    bytes: usize,
    sent_before: bool,
}

struct State {
    ready: VecDeque<Entry>,
    /// Reserved, queued and being sent.
    bytes: usize,
    spans: usize,
    closed: bool,
    disk: Option<DiskLog>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    limits: Limits,
    metrics: Arc<SelfMetrics>,
    healthy: AtomicBool,
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

impl SpanQueue {
    pub fn open(
        storage: &Storage,
        limits: Limits,
        metrics: Arc<SelfMetrics>,
    ) -> std::io::Result<(Self, Recovered)> {
        let mut state = State {
            ready: VecDeque::new(),
            bytes: 0,
            spans: 0,
            closed: false,
            disk: None,
        };
        let mut recovered = Recovered::default();
        if let Storage::Disk {
            dir,
            fsync,
            segment_bytes,
        } = storage
        {
            let (log, recovery) = DiskLog::open(Path::new(dir), *segment_bytes, *fsync)?;
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
                    spans: p.spans,
                    bytes: p.bytes,
                    sent_before: p.sent_before,
                });
            }
            recovered.corrupt_segments = recovery.corrupt_segments;
            recovered.unreadable_bytes = recovery.unreadable_bytes;
            state.disk = Some(log);
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
            healthy: AtomicBool::new(true),
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
        q.segments
            .set(state.disk.as_ref().map_or(0, |d| d.segment_count()) as i64);
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

    /// False after an export attempt failed, until one succeeds.
    pub fn is_healthy(&self) -> bool {
        self.0.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.0.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Takes up to `max_spans` / `max_bytes` worth of requests (at least one), waiting for
    /// one to arrive; `None` once the queue is closed and nothing is left to take.
    pub async fn next_batch(&self, max_spans: usize, max_bytes: usize) -> Option<Batch> {
        loop {
            let notified = self.0.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_batch(max_spans, max_bytes) {
                Ok(Some(batch)) => return Some(batch),
                Ok(None) if self.lock().closed => return None,
                Ok(None) => notified.await,
                Err(e) => {
                    // A record that cannot be read back is counted and skipped; go on.
                    tracing::error!(error = %e, "cannot read a queued request back from disk");
                }
            }
        }
    }

    /// Takes a batch if anything is waiting.
    pub fn try_batch(
        &self,
        max_spans: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, std::io::Error> {
        let mut entries = Vec::new();
        let (mut spans, mut bytes) = (0, 0);
        let mut readers = Vec::new();
        {
            let mut state = self.lock();
            while let Some(next) = state.ready.front() {
                if !entries.is_empty()
                    && (spans + next.spans > max_spans || bytes + next.bytes > max_bytes)
                {
                    break;
                }
                let entry = state.ready.pop_front().expect("front exists");
                spans += entry.spans;
                bytes += entry.bytes;
                entries.push(entry);
            }
            if entries.is_empty() {
                return Ok(None);
            }
            if let Some(disk) = &mut state.disk {
                let locations: Vec<Location> = entries.iter().filter_map(disk_location).collect();
                disk.mark_sent(&locations);
                readers = locations.iter().map(|l| (disk.reader(l), *l)).collect();
            }
        }
        // Reads from disk happen outside the lock; receivers keep appending meanwhile.
        let mut disk_parts = readers.into_iter().map(|(file, location)| match file {
            Some(file) => disk::read(&file, &location),
            None => Err(std::io::Error::other("segment already deleted")),
        });
        let mut parts = Vec::with_capacity(entries.len());
        let mut unreadable = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match &entry.payload {
                Payload::Memory(bytes) => parts.push(bytes.clone()),
                Payload::Disk(_) => match disk_parts.next().expect("one per disk entry") {
                    Ok(bytes) => parts.push(bytes),
                    Err(e) => {
                        tracing::error!(error = %e, "a queued request cannot be read back; its spans are lost");
                        unreadable.push(i);
                    }
                },
            }
        }
        let resent_spans = entries
            .iter()
            .filter(|e| e.sent_before)
            .map(|e| e.spans)
            .sum();
        let mut batch = Batch {
            entries,
            parts,
            spans,
            bytes,
            resent_spans,
        };
        if !unreadable.is_empty() {
            let lost: Vec<Entry> = unreadable
                .into_iter()
                .rev()
                .map(|i| batch.entries.remove(i))
                .collect();
            let lost_spans: usize = lost.iter().map(|e| e.spans).sum();
            batch.spans -= lost_spans;
            batch.bytes -= lost.iter().map(|e| e.bytes).sum::<usize>();
            self.0
                .metrics
                .count_dropped(crate::selfmetrics::DropReason::unreadable, lost_spans);
            self.finish_entries(lost);
            if batch.entries.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(batch))
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
        let mut state = self.lock();
        let locations: Vec<Location> = entries.iter().filter_map(disk_location).collect();
        if let Some(disk) = &mut state.disk {
            disk.mark_done(&locations);
        }
        self.release(&mut state, &entries);
    }

    fn release(&self, state: &mut State, entries: &[Entry]) {
        for entry in entries {
            state.bytes -= entry.bytes;
            state.spans -= entry.spans;
        }
        self.update_gauges(state);
    }

    /// Stops taking new requests: exporters get `None` once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.0.wake.notify_waiters();
    }

    /// Whether requests survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.lock().disk.is_some()
    }

    /// Spans still waiting (not being sent) at shutdown. In memory they are given up and
    /// their room returned; on disk they stay for the next start.
    pub fn abandon_waiting(&self) -> usize {
        let mut state = self.lock();
        let spans = state.ready.iter().map(|e| e.spans).sum();
        if state.disk.is_none() {
            let bytes: usize = state.ready.iter().map(|e| e.bytes).sum();
            state.ready.clear();
            state.bytes -= bytes;
            state.spans -= spans;
            self.update_gauges(&state);
        }
        spans
    }

    /// For the periodic fsync: syncs the segment being written if it changed.
    pub async fn sync(&self) -> std::io::Result<()> {
        let dirty = self.lock().disk.as_mut().and_then(|d| d.take_dirty());
        match dirty {
            Some(file) => tokio::task::spawn_blocking(move || file.sync_data())
                .await
                .map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Whether a periodic fsync task is needed.
    pub fn sync_every(&self) -> Option<Duration> {
        let state = self.lock();
        match state.disk.as_ref().map(|d| d.fsync()) {
            Some(Fsync::Periodic) => Some(Duration::from_secs(1)),
            _ => None,
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
    /// Queues the request: `payload` is its protobuf encoding, `spans` its span count. On disk
    /// it is written before this returns. The room taken becomes the payload's real size.
    pub fn commit(mut self, payload: Bytes, spans: usize) -> Result<(), QueueError> {
        let queue = self.queue.clone();
        let shared = &queue.0;
        let mut state = queue.lock();
        let reserved = std::mem::take(&mut self.bytes);
        state.bytes -= reserved;
        let busy = state.bytes > 0 || state.spans > 0;
        if busy && state.spans + spans > shared.limits.max_spans {
            return Err(queue.full(&state));
        }
        let bytes = payload.len();
        let payload = match &mut state.disk {
            Some(disk) => Payload::Disk(disk.append(&payload, spans)?),
            None => Payload::Memory(payload),
        };
        state.bytes += bytes;
        state.spans += spans;
        state.ready.push_back(Entry {
            payload,
            spans,
            bytes,
            sent_before: false,
        });
        queue.update_gauges(&state);
        drop(state);
        shared.wake.notify_one();
        Ok(())
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

    fn push(queue: &SpanQueue, bytes: usize, spans: usize) -> Result<(), QueueError> {
        queue
            .try_reserve(bytes)?
            .commit(Bytes::from(vec![7; bytes]), spans)
    }

    #[test]
    fn limits_in_bytes_and_spans_refuse_before_decoding_and_free_on_finish() {
        let queue = memory(1000, 10);
        push(&queue, 600, 4).unwrap();
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
        push(&queue, 100, 6).unwrap();
        assert!(queue.try_reserve(1).is_err(), "spans at the limit");
        let batch = queue.try_batch(100, 1 << 20).unwrap().unwrap();
        assert_eq!((batch.spans, batch.bytes, batch.parts.len()), (10, 700, 2));
        assert!(queue.try_reserve(1).is_err(), "still being sent");
        queue.finish(batch);
        assert!(queue.is_empty());
        // Larger than the whole queue: let in when empty.
        push(&queue, 5000, 50).unwrap();
    }

    #[test]
    fn a_commit_past_the_span_limit_is_refused_and_gives_its_room_back() {
        let queue = memory(1000, 10);
        push(&queue, 10, 8).unwrap();
        let err = push(&queue, 10, 5).unwrap_err();
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

    #[test]
    fn batches_stop_at_their_limits_but_take_at_least_one_request() {
        let queue = memory(1 << 20, 1 << 20);
        for spans in [3, 3, 3, 50] {
            push(&queue, 100, spans).unwrap();
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| queue.try_batch(7, 1 << 20).unwrap())
            .map(|b| b.spans)
            .collect();
        assert_eq!(sizes, vec![6, 3, 50]);
        let queue = memory(1 << 20, 1 << 20);
        for _ in 0..3 {
            push(&queue, 100, 1).unwrap();
        }
        assert_eq!(queue.try_batch(100, 250).unwrap().unwrap().parts.len(), 2);
    }

    #[tokio::test]
    async fn an_exporter_waiting_on_an_empty_queue_wakes_for_a_request_and_for_close() {
        let queue = memory(1 << 20, 1 << 20);
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next_batch(10, 1 << 20).await.map(|b| b.spans) }
        });
        tokio::task::yield_now().await;
        push(&queue, 10, 4).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(4));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next_batch(10, 1 << 20).await.map(|b| b.spans) }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[test]
    fn on_disk_what_was_not_finished_comes_back_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("graphgen-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::Disk {
            dir: dir.clone(),
            fsync: Fsync::Never,
            segment_bytes: 1 << 20,
        };
        let limits = Limits {
            max_bytes: 1 << 20,
            max_spans: 1000,
        };
        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(recovered.requests, 0);
        for i in 0..4u8 {
            queue
                .try_reserve(10)
                .unwrap()
                .commit(Bytes::from(vec![i; 10]), 1)
                .unwrap();
        }
        let delivered = queue.try_batch(2, 1 << 20).unwrap().unwrap();
        assert_eq!(
            delivered.parts,
            vec![Bytes::from(vec![0; 10]), Bytes::from(vec![1; 10])]
        );
        queue.finish(delivered);
        let in_flight = queue.try_batch(1, 1 << 20).unwrap().unwrap();
        assert_eq!(in_flight.parts, vec![Bytes::from(vec![2; 10])]);
        drop(queue); // a crash: the batch in flight was never finished

        let (queue, recovered) = SpanQueue::open(&storage, limits, Arc::default()).unwrap();
        assert_eq!(
            (recovered.requests, recovered.spans, recovered.resent_spans),
            (2, 2, 1)
        );
        assert_eq!(queue.spans(), 2);
        let batch = queue.try_batch(10, 1 << 20).unwrap().unwrap();
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
}
