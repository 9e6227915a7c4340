//! The two pieces of PromQL the service map reproduces, so that its figures and Grafana's agree
//! on the same counters: `histogram_quantile` over classic buckets and the counter-reset rule of
//! `increase`.

/// `histogram_quantile(q, …)` of one classic histogram, given its cumulative bucket counts
/// (one per bound, then `+Inf`), as Prometheus computes it: find the bucket holding the rank
/// `q × count` and interpolate linearly inside it, the first bucket starting at 0 and a rank in
/// the `+Inf` bucket answering the highest finite bound (prometheus/prometheus v3.13.1
/// `promql/quantile.go`, `bucketQuantile`; the same in v2.42.0). `None` where Prometheus
/// answers NaN: no observations, or no buckets.
pub fn histogram_quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> Option<f64> {
    if q.is_nan() || bounds.is_empty() || cumulative.len() != bounds.len() + 1 {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    // Counts a rate computed from noisy samples can make decrease; Prometheus makes them
    // monotonic before searching (ensureMonotonic).
    let mut counts = cumulative.to_vec();
    for i in 1..counts.len() {
        counts[i] = counts[i].max(counts[i - 1]);
    }
    let observations = *counts.last()?;
    if observations <= 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let last = counts.len() - 1;
    let b = counts[..last].partition_point(|c| *c < rank);
    if b == last {
        return Some(bounds[last - 1]);
    }
    if b == 0 && bounds[0] <= 0.0 {
        return Some(bounds[0]);
    }
    let (start, end) = (if b == 0 { 0.0 } else { bounds[b - 1] }, bounds[b]);
    let mut count = counts[b];
    if b > 0 {
        count -= counts[b - 1];
        rank -= counts[b - 1];
    }
    Some(start + (end - start) * (rank / count))
}

/// How much a counter grew from `before` to `now`; a counter that went down was reset (a
/// series dropped as stale and started again), so all of `now` is new, as `increase` counts it.
pub fn increase(before: f64, now: f64) -> f64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.1, 0.2, 0.4];

    #[test]
    fn quantiles_match_hand_computed_values() {
        // (q, cumulative counts incl. +Inf, expected), each worked out by hand from the rule.
        let cases: &[(f64, [f64; 4], Option<f64>)] = &[
            // 10 observations ≤ 0.1: rank 9 of 10 in the first bucket, which starts at 0.
            (0.9, [10.0, 10.0, 10.0, 10.0], Some(0.09)),
            // rank 9: 5 in (0, 0.1], then 4 of the 5 in (0.1, 0.2] → 0.1 + 0.1 × 4/5.
            (0.9, [5.0, 10.0, 10.0, 10.0], Some(0.18)),
            // rank 5 lands exactly on the first bucket's top.
            (0.5, [5.0, 10.0, 10.0, 10.0], Some(0.1)),
            // rank 9 in the +Inf bucket: the highest finite bound.
            (0.9, [1.0, 2.0, 3.0, 10.0], Some(0.4)),
            // rank 0.9 of 1 observation in (0.2, 0.4] → 0.2 + 0.2 × 0.9.
            (0.9, [0.0, 0.0, 1.0, 1.0], Some(0.38)),
            // No observations: NaN in Prometheus.
            (0.9, [0.0, 0.0, 0.0, 0.0], None),
            // Rates over noisy samples: made monotonic first (the 3 becomes 4): rank 6 is 2 of
            // the 4 in (0.2, 0.4] → 0.3 (0.32 if the 3 were kept).
            (0.75, [4.0, 3.0, 8.0, 8.0], Some(0.3)),
            (-0.1, [1.0, 1.0, 1.0, 1.0], Some(f64::NEG_INFINITY)),
            (1.5, [1.0, 1.0, 1.0, 1.0], Some(f64::INFINITY)),
        ];
        for (q, cumulative, expected) in cases {
            let got = histogram_quantile(*q, &BOUNDS, cumulative);
            match (got, expected) {
                (Some(g), Some(e)) if g.is_infinite() => assert_eq!(g, *e),
                (Some(g), Some(e)) => {
                    assert!((g - e).abs() < 1e-12, "q={q} {cumulative:?}: {g} != {e}")
                }
                (g, e) => assert_eq!(g, *e, "q={q} {cumulative:?}"),
            }
        }
    }

    #[test]
    fn a_first_bucket_with_a_negative_bound_answers_its_bound() {
        assert_eq!(
            histogram_quantile(0.5, &[-1.0, 1.0], &[4.0, 4.0, 4.0]),
            Some(-1.0)
        );
    }

    #[test]
    fn a_counter_that_went_down_was_reset() {
        assert_eq!(increase(10.0, 15.0), 5.0);
        assert_eq!(increase(10.0, 3.0), 3.0);
        assert_eq!(increase(0.0, 0.0), 0.0);
    }
}
