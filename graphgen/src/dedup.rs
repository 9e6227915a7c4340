//! A bounded record of recently seen spans, so that a span delivered twice — an SDK retrying a
//! request graphgen had already taken, or the Collector's load balancer re-sending a whole batch
//! after one backend failed — is counted once by the processors. Forwarding is not affected:
//! Tempo de-duplicates spans when it reads a trace.
//!
//! A span is its (trace id, span id), kept as a 64-bit fingerprint with the time it was first
//! seen. Entries leave after `window`, or the oldest first once `max_spans` are held, so memory is
//! fixed (about 40 bytes a span) and a burst shortens the window instead of growing memory; the
//! effective window is reported ([`SeenSpans::oldest_age_nanos`]). Two different spans share a
//! fingerprint with a probability of about n²/2⁶⁵ (1e-7 for a million spans held).

use std::collections::VecDeque;
use std::time::Duration;

use hashbrown::HashSet;

#[derive(Debug)]
pub struct SeenSpans {
    window_nanos: u64,
    max_spans: usize,
    /// Fingerprints in the order they were first seen, with that time.
    order: VecDeque<(u64, u64)>,
    seen: HashSet<u64, ahash::RandomState>,
    hasher: ahash::RandomState,
    duplicates: u64,
}

impl SeenSpans {
    /// `max_spans` must be at least 1 (checked by the configuration).
    pub fn new(window: Duration, max_spans: usize) -> Self {
        Self {
            window_nanos: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            max_spans: max_spans.max(1),
            order: VecDeque::new(),
            seen: HashSet::with_hasher(ahash::RandomState::new()),
            hasher: ahash::RandomState::new(),
            duplicates: 0,
        }
    }

    /// Whether this is the first time the span is seen within the window (then it is recorded);
    /// `false` for a duplicate, which is counted.
    pub fn first_time(&mut self, trace_id: &[u8], span_id: &[u8], now: u64) -> bool {
        self.forget_older_than(now.saturating_sub(self.window_nanos));
        let fingerprint = self.hasher.hash_one((trace_id, span_id));
        // One probe: the insert says whether it was there.
        if !self.seen.insert(fingerprint) {
            self.duplicates += 1;
            return false;
        }
        if self.order.len() >= self.max_spans {
            if let Some((oldest, _)) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back((fingerprint, now));
        true
    }

    fn forget_older_than(&mut self, cutoff: u64) {
        while let Some(&(fingerprint, at)) = self.order.front() {
            if at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&fingerprint);
        }
    }

    /// Duplicates seen so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// How far back the record reaches now: the window, or less when `max_spans` cut it short.
    pub fn oldest_age_nanos(&self, now: u64) -> u64 {
        self.order
            .front()
            .map_or(0, |&(_, at)| now.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_span_seen_again_within_the_window_is_a_duplicate() {
        let mut seen = SeenSpans::new(Duration::from_secs(60), 100);
        let (trace, a, b) = ([1u8; 16], [1u8; 8], [2u8; 8]);
        assert!(seen.first_time(&trace, &a, 0));
        assert!(seen.first_time(&trace, &b, S));
        assert!(!seen.first_time(&trace, &a, 30 * S), "a again");
        assert!(!seen.first_time(&[1u8; 16], &b, 59 * S), "b again");
        assert_eq!(seen.duplicates(), 2);
        // Past the window it counts as new (a retry cannot come that late).
        assert!(seen.first_time(&trace, &a, 61 * S));
        assert_eq!(seen.len(), 2, "b still held, a again");
        // The same span id in another trace is another span.
        assert!(seen.first_time(&[2u8; 16], &b, 61 * S));
    }

    #[test]
    fn memory_is_bounded_and_a_full_record_forgets_the_oldest_first() {
        let mut seen = SeenSpans::new(Duration::from_secs(3600), 3);
        let trace = [9u8; 16];
        for i in 0..5u64 {
            assert!(seen.first_time(&trace, &i.to_be_bytes(), i * S));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen.oldest_age_nanos(4 * S),
            2 * S,
            "the window shrank to 2 s"
        );
        assert!(
            seen.first_time(&trace, &0u64.to_be_bytes(), 5 * S),
            "0 was forgotten"
        );
        assert!(
            !seen.first_time(&trace, &4u64.to_be_bytes(), 5 * S),
            "4 is held"
        );
    }
}
