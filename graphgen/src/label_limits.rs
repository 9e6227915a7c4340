//! How long and how varied label values may be, as Tempo's metrics-generator registry bounds
//! them: values and names are cut to a length (`max_label_value_length`,
//! `max_label_name_length`), and a label with more distinct values than
//! `max_cardinality_per_label` has its values replaced by `__cardinality_overflow__`, so one
//! exploding attribute (a user id used as a dimension) degrades that label instead of filling
//! `--max-series` and refusing everything else.

use std::collections::HashMap;

/// Tempo's defaults (`modules/generator/registry/config.go`: `max_label_name_length` 1024,
/// `max_label_value_length` 2048, applied in `builder.go`).
pub const MAX_LABEL_NAME_LENGTH: usize = 1024;
pub const MAX_LABEL_VALUE_LENGTH: usize = 2048;

/// What an over-limit label's values become (Tempo's `per_label_limiter.go` `overflowValue`).
pub const OVERFLOW_VALUE: &str = "__cardinality_overflow__";

/// Cuts `text` to at most `max` bytes, at a UTF-8 character boundary (Tempo cuts at the byte,
/// which can split a character; for ASCII both keep the same first `max` bytes). Returns
/// whether it was cut.
pub fn truncate_label(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    true
}

/// Distinct values per label position, over the stale window.
///
/// Tempo estimates the distinct values with HyperLogLog sketches over a sliding window and
/// decides every 15 s; this keeps the values' hashes exactly (at most twice the limit per
/// label, so memory stays bounded under an attack) and decides on every expiry tick. As in
/// Tempo, while a label is over the limit every value of it is replaced (known ones too), the
/// original values are still counted so that the label recovers once they age out, and empty
/// (absent) values are not counted.
#[derive(Debug)]
pub struct PerLabelLimiter {
    /// 0: off.
    max: usize,
    labels: Vec<LabelState>,
    hasher: ahash::RandomState,
}

#[derive(Debug, Default)]
struct LabelState {
    /// Value hash → when it was last seen.
    seen: HashMap<u64, u64>,
    over: bool,
    /// Values replaced by the overflow value.
    limited: u64,
}

impl PerLabelLimiter {
    pub fn new(labels: usize, max: usize) -> Self {
        Self {
            max,
            labels: (0..labels).map(|_| LabelState::default()).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// Whether no limit is set: [`Self::limit`] then changes nothing.
    pub fn is_off(&self) -> bool {
        self.max == 0
    }

    /// Counts `values` (one per label position) seen at `now` and replaces those of labels
    /// over the limit.
    pub fn limit(&mut self, values: &mut [String], now: u64) {
        if self.max == 0 {
            return;
        }
        let cap = self.max.saturating_mul(2).max(self.max + 1);
        for (state, value) in self.labels.iter_mut().zip(values) {
            if value.is_empty() {
                continue;
            }
            let hash = self.hasher.hash_one(value.as_str());
            if state.seen.len() < cap || state.seen.contains_key(&hash) {
                state.seen.insert(hash, now);
            }
            if state.over {
                value.clear();
                value.push_str(OVERFLOW_VALUE);
                state.limited += 1;
            }
        }
    }

    /// Forgets values not seen since `cutoff` and decides again which labels are over the
    /// limit; `names` name the positions for the log.
    pub fn maintain(&mut self, cutoff: u64, names: &[String]) {
        if self.max == 0 {
            return;
        }
        for (i, state) in self.labels.iter_mut().enumerate() {
            state.seen.retain(|_, seen| *seen >= cutoff);
            let over = state.seen.len() > self.max;
            if over != state.over {
                let label = names.get(i).map_or("?", String::as_str);
                if over {
                    tracing::warn!(label, limit = self.max, "label over --max-cardinality-per-label: its values are replaced by {OVERFLOW_VALUE}");
                } else {
                    tracing::info!(label, "label back under --max-cardinality-per-label");
                }
            }
            state.over = over;
        }
    }

    /// Values replaced so far, per label position.
    pub fn limited(&self) -> impl Iterator<Item = u64> + '_ {
        self.labels.iter().map(|s| s.limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_label_over_the_limit_overflows_until_its_values_age_out() {
        let names = values(&["service", "user"]);
        let mut limiter = PerLabelLimiter::new(2, 3);
        for (t, user) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut v = values(&["shop", user]);
            limiter.limit(&mut v, t as u64);
            assert_eq!(v, values(&["shop", user]), "decided only on maintenance");
        }
        limiter.maintain(0, &names);
        let mut v = values(&["shop", "a"]);
        limiter.limit(&mut v, 10);
        assert_eq!(
            v,
            values(&["shop", OVERFLOW_VALUE]),
            "known values too; other labels kept"
        );
        let mut absent = values(&["shop", ""]);
        limiter.limit(&mut absent, 10);
        assert_eq!(
            absent,
            values(&["shop", ""]),
            "an absent label stays absent"
        );
        assert_eq!(limiter.limited().collect::<Vec<_>>(), [0, 1]);
        // Only "a" seen since 10: back under the limit.
        limiter.maintain(10, &names);
        let mut v = values(&["shop", "e"]);
        limiter.limit(&mut v, 11);
        assert_eq!(v, values(&["shop", "e"]));
    }

    #[test]
    fn memory_stays_bounded_under_an_attack_and_zero_turns_it_off() {
        let mut limiter = PerLabelLimiter::new(1, 10);
        for i in 0..100_000 {
            limiter.limit(&mut values(&[&i.to_string()]), 1);
        }
        assert!(limiter.labels[0].seen.len() <= 20);
        let mut off = PerLabelLimiter::new(1, 0);
        for i in 0..1000 {
            off.limit(&mut values(&[&i.to_string()]), 1);
        }
        off.maintain(0, &[]);
        let mut v = values(&["x"]);
        off.limit(&mut v, 2);
        assert_eq!(v, values(&["x"]));
        assert!(off.labels[0].seen.is_empty());
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        let mut three_bytes = "€€€".to_string(); // 9 bytes
        assert!(truncate_label(&mut three_bytes, 8));
        assert_eq!(three_bytes, "€€");
        let mut short = "ok".to_string();
        assert!(!truncate_label(&mut short, 8));
    }
}
