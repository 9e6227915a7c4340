//! What the two metric pushes (OTLP and remote write) share: the forms a family is written in,
//! the record of series already written (each gets its zero point once), and a cursor over the
//! series of one push.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::native_histogram::HistogramMode;
use crate::series::{Family, FamilyKind, Series};

/// The form a family is written in: a histogram family once per histogram kind on
/// (`--histograms both` writes it twice, classic and native, which Prometheus stores as
/// `_bucket`/`_sum`/`_count` and as one native series).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    Counter,
    /// Set, not accumulated: written as it is, with no zero point before it.
    Gauge,
    Classic,
    Native,
}

/// The flavors of every family, in order.
fn flavors(families: &[Family], mode: HistogramMode) -> Vec<(usize, Flavor)> {
    let mut out = Vec::with_capacity(families.len() * 2);
    for (i, family) in families.iter().enumerate() {
        match family.kind {
            FamilyKind::Counter => out.push((i, Flavor::Counter)),
            FamilyKind::Gauge => out.push((i, Flavor::Gauge)),
            FamilyKind::Histogram => {
                if mode.classic() {
                    out.push((i, Flavor::Classic));
                }
                if mode.native() {
                    out.push((i, Flavor::Native));
                }
            }
        }
    }
    out
}

/// The series already written, so each gets its zero point once. A series is its family, its
/// flavor, its labels and its start (a stale series seen again, or a native histogram after a
/// reset, starts over and gets a new zero).
#[derive(Debug, Default)]
pub struct PushedSeries {
    keys: HashSet<u64>,
    hasher: ahash::RandomState,
    /// When the previous push listed the series: a zero point goes after it.
    last_push_nanos: Option<u64>,
}

impl PushedSeries {
    fn key(&self, family: &Family, flavor: Flavor, series: &Series) -> u64 {
        let mut h = self.hasher.build_hasher();
        family.name.hash(&mut h);
        flavor.hash(&mut h);
        series.labels.hash(&mut h);
        series.start_nanos.hash(&mut h);
        h.finish()
    }

    /// Starts recording one push's outcome.
    pub fn begin(&self) -> Outcome {
        Outcome {
            keys: HashSet::with_capacity(self.keys.len()),
        }
    }

    /// What the push at `now_nanos` got through, replacing the old record: series gone
    /// (stale) are forgotten, so the record stays as large as the engine.
    pub fn finish(&mut self, outcome: Outcome, now_nanos: u64) {
        self.keys = outcome.keys;
        self.last_push_nanos = Some(now_nanos);
    }
}

/// The series one push has written so far.
#[derive(Debug)]
pub struct Outcome {
    keys: HashSet<u64>,
}

impl Outcome {
    /// A request went through, or may have (no answer: a timeout after the server stored
    /// it): its series are written. A zero sent again later would land before stored samples
    /// (out of order) or, after them, read as a counter reset and count the value twice.
    pub fn stored(&mut self, keys: Vec<u64>) {
        self.keys.extend(keys);
    }

    /// The server answered no, so it stored nothing (Prometheus rolls a refused request back):
    /// series written before stay written, new ones get their zero point next time, after
    /// this push's time.
    pub fn not_stored(&mut self, keys: Vec<u64>, before: &PushedSeries) {
        self.keys
            .extend(keys.into_iter().filter(|k| before.keys.contains(k)));
    }
}

/// The next series of a push.
pub struct Item<'a> {
    pub family: &'a Family,
    pub flavor: Flavor,
    pub series: &'a Series,
    pub key: u64,
    /// Not written before: it gets a zero point first, at `zero_at_nanos`.
    pub new: bool,
    pub zero_at_nanos: u64,
}

/// Walks every series of a push in every flavor, family by family; a request builder looks at
/// the next one and takes it only if it fits.
pub struct Cursor<'a> {
    families: &'a [Family],
    flavors: Vec<(usize, Flavor)>,
    /// (flavor, series) indexes of the next series.
    next: (usize, usize),
    pushed: &'a PushedSeries,
    now_nanos: u64,
}

impl<'a> Cursor<'a> {
    /// The series of a push at `now_nanos`.
    pub fn new(
        families: &'a [Family],
        mode: HistogramMode,
        pushed: &'a PushedSeries,
        now_nanos: u64,
    ) -> Self {
        Self {
            families,
            flavors: flavors(families, mode),
            next: (0, 0),
            pushed,
            now_nanos,
        }
    }

    /// The next series, if any (not taken yet).
    pub fn peek(&mut self) -> Option<Item<'a>> {
        loop {
            let &(index, flavor) = self.flavors.get(self.next.0)?;
            let family = &self.families[index];
            let Some(series) = family.series.get(self.next.1) else {
                self.next = (self.next.0 + 1, 0);
                continue;
            };
            let key = self.pushed.key(family, flavor, series);
            return Some(Item {
                family,
                flavor,
                series,
                key,
                // A gauge is set, not counted from zero: it never gets a zero point.
                new: flavor != Flavor::Gauge && !self.pushed.keys.contains(&key),
                zero_at_nanos: zero_point_nanos(
                    series.start_nanos,
                    self.pushed.last_push_nanos,
                    self.now_nanos,
                ),
            });
        }
    }

    /// Takes the series `peek` returned.
    pub fn advance(&mut self) {
        self.next.1 += 1;
    }
}

/// The HTTP client of both pushes: a request answers within 10 s or counts as failed.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("graphgen/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Bytes a field of `len` bytes takes inside its message: tag and length prefix.
pub fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// When a new series' zero point is written: at its start, but after the previous push (whose
/// samples of a reset or refused series the zero must follow) and strictly before its first
/// value, all in Prometheus' milliseconds (a series may be written in the millisecond it
/// started).
fn zero_point_nanos(start: u64, last_push: Option<u64>, now: u64) -> u64 {
    const MS: u64 = 1_000_000;
    let after_last = last_push.map_or(0, |t| (t / MS + 1) * MS);
    start.max(after_last).min(now.saturating_sub(MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_point_follows_the_previous_push_and_precedes_the_value() {
        let s = 1_000_000_000u64; // one second in nanoseconds
        for (start, last_push, now, zero) in [
            (5 * s, None, 10 * s, 5 * s),                            // at its start
            (5 * s, None, 5 * s, 5 * s - 1_000_000), // pushed in the millisecond it started
            (5 * s, Some(8 * s), 10 * s, 8 * s + 1_000_000), // refused before: after that push
            (5 * s + 1, Some(5 * s + 2), 10 * s, 5 * s + 1_000_000), // a reset in that push's ms
            (9 * s, Some(8 * s), 10 * s, 9 * s),     // started since the last push
        ] {
            assert_eq!(
                zero_point_nanos(start, last_push, now),
                zero,
                "{start} {last_push:?}"
            );
        }
    }
    use crate::series::{Labels, SeriesValue};

    fn family(name: &'static str, kind: FamilyKind, n: usize) -> Family {
        Family {
            name,
            help: "",
            unit: "",
            kind,
            series: (0..n)
                .map(|i| Series {
                    labels: Labels::from_pairs([("client", format!("c{i}"))]),
                    value: SeriesValue::Counter(1.0),
                    start_nanos: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_cursor_visits_every_series_in_every_flavor_and_the_record_keeps_what_went_through() {
        let families = [
            family("a_total", FamilyKind::Counter, 2),
            family("empty_total", FamilyKind::Counter, 0),
            family("h", FamilyKind::Histogram, 1),
            family("info", FamilyKind::Gauge, 1),
        ];
        let mut pushed = PushedSeries::default();
        let walk = |pushed: &PushedSeries, mode| {
            let mut cursor = Cursor::new(&families, mode, pushed, 0);
            let mut seen = Vec::new();
            while let Some(item) = cursor.peek() {
                seen.push((item.family.name, item.flavor, item.new, item.key));
                cursor.advance();
            }
            seen
        };
        let both = walk(&pushed, HistogramMode::Both);
        let flavors: Vec<(&str, Flavor, bool)> = both.iter().map(|s| (s.0, s.1, s.2)).collect();
        assert_eq!(
            flavors,
            [
                ("a_total", Flavor::Counter, true),
                ("a_total", Flavor::Counter, true),
                ("h", Flavor::Classic, true),
                ("h", Flavor::Native, true),
                // A gauge is set, not counted from zero: never a zero point.
                ("info", Flavor::Gauge, false),
            ]
        );
        assert_eq!(walk(&pushed, HistogramMode::Native).len(), 4);
        // The first counter and the native histogram went through, the rest failed.
        let mut outcome = pushed.begin();
        outcome.stored(vec![both[0].3, both[3].3]);
        outcome.not_stored(vec![both[1].3, both[2].3], &pushed);
        pushed.finish(outcome, 0);
        let again: Vec<bool> = walk(&pushed, HistogramMode::Both)
            .iter()
            .map(|s| s.2)
            .collect();
        assert_eq!(again, [false, true, true, false, false]);
        // A failure later does not forget what was written before.
        let mut outcome = pushed.begin();
        outcome.not_stored(vec![both[0].3], &pushed);
        pushed.finish(outcome, 0);
        assert!(!walk(&pushed, HistogramMode::Both)[0].2);
    }
}
