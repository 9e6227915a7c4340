//! The span multiplier an OpenTelemetry probability sampler writes into the W3C tracestate
//! (`ot=th:<threshold>;rv:<randomness>`), for Tempo's `enable_tracestate_span_multiplier`.
//!
//! As Tempo's `pkg/sampling/multiplier.go` with the Collector contrib's `pkg/sampling` it
//! vendors (ad33aa8): the adjusted count is 2^56 / (2^56 − threshold); with a randomness value a
//! fractional count is rounded to a neighbouring whole number, up with the probability of its
//! fraction, so totals stay unbiased and deterministic per trace. A missing or malformed `ot`
//! entry gives 0: the caller falls back to the attribute multiplier.

/// 2^56: thresholds and randomness are 56-bit.
const MAX_ADJUSTED_COUNT: u64 = 1 << 56;
const HEX_DIGITS: usize = 14;

/// The multiplier carried by `tracestate`, or 0 when it carries none.
pub fn multiplier_from_tracestate(tracestate: &str) -> f64 {
    let Some(ot) = otel_entry(tracestate) else {
        return 0.0;
    };
    let Some((threshold, randomness)) = parse(ot) else {
        return 0.0;
    };
    let Some(threshold) = threshold else {
        return 0.0;
    };
    let m = MAX_ADJUSTED_COUNT as f64 / (MAX_ADJUSTED_COUNT - threshold) as f64;
    let Some(randomness) = randomness else {
        return m;
    };
    let whole = m.floor();
    let fraction = m - whole;
    if fraction == 0.0 {
        return whole;
    }
    let r = (randomness >> 3) as f64 / (1u64 << 53) as f64;
    if r < fraction {
        whole + 1.0
    } else {
        whole
    }
}

/// The value of the first `ot=` member of a W3C tracestate.
fn otel_entry(mut tracestate: &str) -> Option<&str> {
    loop {
        tracestate = tracestate.trim();
        let next_comma = tracestate.find(',');
        if let Some(rest) = tracestate.strip_prefix("ot=") {
            let end = match next_comma {
                Some(comma) if comma > 0 => comma - 3,
                _ => rest.len(),
            };
            return Some(&rest[..end]);
        }
        tracestate = &tracestate[next_comma? + 1..];
    }
}

/// `(threshold, randomness)` of an `ot` value, each absent when not given; `None` when the
/// value is malformed (any member, as the contrib parser fails the whole value).
#[allow(clippy::type_complexity)]
fn parse(ot: &str) -> Option<(Option<u64>, Option<u64>)> {
    if ot.len() > 256 || !valid(ot) {
        return None;
    }
    let (mut threshold, mut randomness) = (None, None);
    for member in ot.split(';').filter(|m| !m.is_empty()) {
        let Some((key, value)) = member.split_once(':') else {
            continue;
        };
        match key {
            "rv" if value.len() == HEX_DIGITS => {
                randomness = Some(u64::from_str_radix(value, 16).ok()?);
            }
            "rv" => return None,
            "th" if !value.is_empty() && value.len() <= HEX_DIGITS => {
                let unsigned = u64::from_str_radix(value, 16).ok()?;
                threshold = Some(unsigned << (4 * (HEX_DIGITS - value.len())));
            }
            "th" => return None,
            _ => {}
        }
    }
    Some((threshold, randomness))
}

/// `key:value` members separated by `;`: a key is a lower-case letter then lower-case letters
/// or digits; a value is letters, digits, `.`, `_`, `-`.
fn valid(ot: &str) -> bool {
    if ot.is_empty() || ot.ends_with(';') {
        return false;
    }
    ot.split(';').all(|member| {
        let Some((key, value)) = member.split_once(':') else {
            return false;
        };
        let mut key_bytes = key.bytes();
        key_bytes.next().is_some_and(|c| c.is_ascii_lowercase())
            && key_bytes.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && value
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_randomness_give_tempos_multipliers() {
        // (tracestate, multiplier): Tempo's own cases (`pkg/sampling/multiplier_test.go`) and more.
        for (tracestate, want) in [
            ("", 0.0),
            ("vendor=x", 0.0),
            ("ot=th:0", 1.0),
            ("ot=th:8", 2.0), // probability 1/2
            ("ot=th:c", 4.0), // 1/4
            (
                "ot=th:fd70a4",
                1.0 / (1.0 - f64::from(0xfd70a4u32) / f64::from(1u32 << 24)),
            ),
            ("vendor=x, ot=th:8;x:y", 2.0),
            ("not=th:8, ot=th:c", 4.0),
            ("not=th:c", 0.0),
            ("ot=rv:00112233445566;th:8", 2.0),
            ("ot=th:", 0.0),
            ("ot=th:8,vendor=x", 2.0),
            // 1/(1 − 1/3) = 1.5: rounded by the randomness.
            ("ot=th:55555555555556;rv:00000000000000", 2.0),
            ("ot=th:55555555555556;rv:ffffffffffffff", 1.0),
            // Malformed: no multiplier at all.
            ("ot=th:8;rv:123", 0.0),
            ("ot=th:g", 0.0),
            ("ot=th:8;", 0.0),
            ("ot=th:123456789abcdef", 0.0),
            ("ot=TH:8", 0.0),
            ("ot=rv:00000000000000", 0.0),
        ] {
            let got = multiplier_from_tracestate(tracestate);
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1.0),
                "{tracestate:?}: {got}, want {want}"
            );
        }
    }
}
