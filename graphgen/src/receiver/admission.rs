//! Requests being read and handled: how much memory they may hold and how many run at once.
//! Room is reserved *before* a body is read — its announced size (or the largest allowed when
//! none is announced), twice that for a compressed body, which may inflate up to the limit —
//! and the excess is given back once the real size is known. Past either limit the client is
//! told to retry later (HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED with RetryInfo), so
//! N clients never hold N × (compressed + decompressed) however full the queue is.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::selfmetrics::SelfMetrics;

/// Memory is counted in KiB: a permit a KiB.
const UNIT: usize = 1024;

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `--max-inflight-bytes` is held by other requests.
    Memory,
    /// `--max-concurrent-requests` are being handled.
    Requests,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Busy::Memory => {
                "too many bytes of requests in flight (--max-inflight-bytes), retry later"
            }
            Busy::Requests => {
                "too many requests in flight (--max-concurrent-requests), retry later"
            }
        })
    }
}

pub struct Admissions {
    bytes: Arc<Semaphore>,
    total_units: usize,
    requests: Arc<Semaphore>,
    max_message_bytes: usize,
    metrics: Arc<SelfMetrics>,
}

/// A request let in; its room is given back when it is dropped.
pub struct Admission {
    bytes: OwnedSemaphorePermit,
    _request: OwnedSemaphorePermit,
    metrics: Arc<SelfMetrics>,
}

impl Admissions {
    pub fn new(
        max_bytes: usize,
        max_requests: usize,
        max_message_bytes: usize,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        let total_units = units(max_bytes).min(Semaphore::MAX_PERMITS);
        metrics
            .receiver_inflight
            .capacity_bytes
            .set(max_bytes as i64);
        Self {
            bytes: Arc::new(Semaphore::new(total_units)),
            total_units,
            requests: Arc::new(Semaphore::new(max_requests.min(Semaphore::MAX_PERMITS))),
            max_message_bytes,
            metrics,
        }
    }

    /// What a request may come to hold: its announced size, or the largest allowed, plus the
    /// largest allowed again for a compressed body.
    pub fn estimate(&self, announced: Option<usize>, compressed: bool) -> usize {
        let max = self.max_message_bytes;
        announced.unwrap_or(max).min(max) + if compressed { max } else { 0 }
    }

    /// Lets a request that may hold `bytes` in, or says why not. A request larger than the
    /// whole budget takes all of it, so it waits for an idle moment rather than never fitting.
    pub fn try_admit(&self, bytes: usize) -> Result<Admission, Busy> {
        let request = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Requests)?;
        let wanted = units(bytes).clamp(1, self.total_units) as u32;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(wanted)
            .map_err(|_| Busy::Memory)?;
        let inflight = &self.metrics.receiver_inflight;
        inflight.requests.inc();
        inflight.bytes.inc_by((bytes.num_permits() * UNIT) as i64);
        Ok(Admission {
            bytes,
            _request: request,
            metrics: self.metrics.clone(),
        })
    }
}

impl Admission {
    /// The request's real size is known: give the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = units(bytes).max(1);
        let held = self.bytes.num_permits();
        if keep < held {
            if let Some(extra) = self.bytes.split(held - keep) {
                self.metrics
                    .receiver_inflight
                    .bytes
                    .dec_by((extra.num_permits() * UNIT) as i64);
            }
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.num_permits() * UNIT
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let inflight = &self.metrics.receiver_inflight;
        inflight.requests.dec();
        inflight
            .bytes
            .dec_by((self.bytes.num_permits() * UNIT) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_reserved_before_reading_and_the_excess_given_back() {
        let metrics = Arc::new(SelfMetrics::default());
        let admissions = Admissions::new(10 << 20, 3, 4 << 20, metrics.clone());
        // Unannounced and compressed: the worst case, 4 MiB read + 4 MiB inflated.
        assert_eq!(admissions.estimate(None, true), 8 << 20);
        assert_eq!(admissions.estimate(Some(1000), false), 1000);
        assert_eq!(admissions.estimate(Some(100 << 20), false), 4 << 20);
        let mut big = admissions.try_admit(8 << 20).unwrap();
        assert_eq!(
            admissions.try_admit(4 << 20).err(),
            Some(Busy::Memory),
            "8 of 10 MiB are held"
        );
        let small = admissions.try_admit(1 << 20).unwrap();
        assert_eq!(metrics.receiver_inflight.bytes.get(), 9 << 20);
        big.shrink_to(100_000);
        assert_eq!(big.bytes(), 98 * UNIT);
        let third = admissions.try_admit(4 << 20).unwrap();
        assert_eq!(
            admissions.try_admit(1).err(),
            Some(Busy::Requests),
            "3 requests at once"
        );
        drop((big, small, third));
        assert_eq!(metrics.receiver_inflight.bytes.get(), 0);
        assert_eq!(metrics.receiver_inflight.requests.get(), 0);
        // Larger than the whole budget: let in alone.
        let whole = admissions.try_admit(50 << 20).unwrap();
        assert_eq!(whole.bytes(), 10 << 20);
        assert!(admissions.try_admit(1).is_err());
    }
}
