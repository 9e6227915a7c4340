//! Sides of edges left out by `filter_policies`, remembered for `wait` so that their other side
//! is dropped too instead of waiting and expiring (or becoming a virtual-node edge), as
//! Tempo's store does with its dropped span sides (`servicegraphs/store/store.go`,
//! `addDroppedSpanSide` and `hasDroppedCounterpart`, ad33aa8).

use std::collections::HashMap;

use super::edge::EdgeKey;
use super::Side;

/// Bounded by `max_items` entries, as Tempo bounds them; past it a side is not remembered
/// (and counted).
#[derive(Debug, Default)]
pub struct FilteredSides {
    sides: HashMap<(EdgeKey, Side), u64>,
    max: usize,
    overflow: u64,
}

impl FilteredSides {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Remembers that `side` of `key` was filtered out, until `expires_at`.
    pub fn add(&mut self, key: EdgeKey, side: Side, expires_at: u64) {
        if let Some(at) = self.sides.get_mut(&(key, side)) {
            *at = expires_at;
            return;
        }
        if self.sides.len() >= self.max {
            self.overflow += 1;
            return;
        }
        self.sides.insert((key, side), expires_at);
    }

    /// Whether the other side of `side` of `key` was filtered out.
    #[inline]
    pub fn has_counterpart(&self, key: &EdgeKey, side: Side) -> bool {
        !self.sides.is_empty() && self.sides.contains_key(&(*key, side.other()))
    }

    pub fn expire(&mut self, now: u64) {
        if !self.sides.is_empty() {
            self.sides.retain(|_, at| *at > now);
        }
    }

    /// Sides not remembered because `max_items` were.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    pub fn len(&self) -> usize {
        self.sides.len()
    }
}
