//! When to retry an export and how long to wait: pure values, no I/O, table-tested.
//!
//! Where a failure happened decides it. An answer from the server (a gRPC status it sent)
//! follows the OTLP rules: only the retryable codes are retried, RESOURCE_EXHAUSTED only with
//! a RetryInfo. Everything on our side of the wire (connect refused, reset, broken pipe, h2
//! GOAWAY or stream reset, timeouts, a stream cut short without a status) never reached a
//! decision of the server, so it is retried: re-sending is safe, Tempo de-duplicates the spans
//! of a trace when it reads them.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, after the server's delay if it named one.
    Retry { server_delay: Option<Duration> },
    /// The server refused the data for good.
    GiveUp,
}

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureSource {
    /// The server answered with a status.
    Server,
    /// The request or its answer was lost on the way (our side of the wire).
    Transport,
}

/// Where `status` came from: tonic attaches the underlying error (hyper, h2, io) as the
/// status' source for failures it made up itself; a status read from the server's
/// `grpc-status` has none (tonic 0.14 `Status::from_header_map` vs `Status::from_error`).
/// UNKNOWN is what tonic reports for a stream that ended without any status (cut by a proxy or
/// a dying server); no OTLP server answers UNKNOWN on purpose.
pub fn source_of(status: &Status) -> FailureSource {
    if std::error::Error::source(status).is_some() || status.code() == Code::Unknown {
        FailureSource::Transport
    } else {
        FailureSource::Server
    }
}

/// The verdict on a failed attempt.
pub fn classify(status: &Status) -> Verdict {
    let server_delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
    if source_of(status) == FailureSource::Transport {
        return Verdict::Retry { server_delay: None };
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Verdict::Retry { server_delay },
        Code::ResourceExhausted if server_delay.is_some() => Verdict::Retry { server_delay },
        _ => Verdict::GiveUp,
    }
}

/// The verdict on a failed HTTP attempt (remote write), by the remote-write spec: 5xx and 429
/// are retried (429 after its `Retry-After`), any other 4xx never is; no answer at all
/// (`status` `None`: refused, reset, timed out) is retried.
pub fn classify_http(status: Option<u16>, retry_after: Option<Duration>) -> Verdict {
    match status {
        None => Verdict::Retry { server_delay: None },
        Some(429) => Verdict::Retry {
            server_delay: retry_after,
        },
        Some(500..=599) => Verdict::Retry {
            server_delay: retry_after,
        },
        Some(_) => Verdict::GiveUp,
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Prometheus-compatible receivers).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Exponential backoff with jitter, as the Collector's exporters do (`configretry`: 1.5×,
/// ±50 %). Jitter spreads the retries of many exporters after a shared outage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// 0.5: the delay is drawn from [d/2, 3d/2].
    pub jitter: f64,
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new(initial: Duration) -> Self {
        Self {
            initial,
            max: Self::MAX,
            multiplier: 1.5,
            jitter: 0.5,
        }
    }

    /// The wait before retry number `attempt` (0 for the first retry); `unit` is a random
    /// number in [0, 1). Never more than `max`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let base = base.min(self.max.as_secs_f64());
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        Duration::from_secs_f64(base * factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    fn transport_error() -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        Status::from_error(Box::new(io))
    }

    #[test]
    fn http_answers_are_retried_as_the_remote_write_spec_says() {
        let retry = |d| Verdict::Retry { server_delay: d };
        let two = Some(Duration::from_secs(2));
        for (status, retry_after, verdict) in [
            (None, None, retry(None)),
            (Some(429), two, retry(two)),
            (Some(429), None, retry(None)),
            (Some(500), None, retry(None)),
            (Some(503), two, retry(two)),
            (Some(400), None, Verdict::GiveUp),
            (Some(404), two, Verdict::GiveUp),
            (Some(413), None, Verdict::GiveUp),
        ] {
            assert_eq!(classify_http(status, retry_after), verdict, "{status:?}");
        }
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn failures_are_classified_by_where_they_happened() {
        let with_retry_info = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        let retry = |d| Verdict::Retry { server_delay: d };
        let cases = [
            (
                Status::unavailable("down"),
                FailureSource::Server,
                retry(None),
            ),
            (
                Status::deadline_exceeded("slow"),
                FailureSource::Server,
                retry(None),
            ),
            (
                Status::cancelled("gone"),
                FailureSource::Server,
                retry(None),
            ),
            (Status::aborted("again"), FailureSource::Server, retry(None)),
            (
                Status::data_loss("lost"),
                FailureSource::Server,
                retry(None),
            ),
            (
                Status::resource_exhausted("too big"),
                FailureSource::Server,
                Verdict::GiveUp,
            ),
            (
                with_retry_info,
                FailureSource::Server,
                retry(Some(Duration::from_secs(2))),
            ),
            (
                Status::invalid_argument("bad"),
                FailureSource::Server,
                Verdict::GiveUp,
            ),
            (
                Status::internal("bug"),
                FailureSource::Server,
                Verdict::GiveUp,
            ),
            (
                Status::unauthenticated("who"),
                FailureSource::Server,
                Verdict::GiveUp,
            ),
            (
                Status::permission_denied("no"),
                FailureSource::Server,
                Verdict::GiveUp,
            ),
            // Ours: a reset connection, or a stream that ended without a status.
            (transport_error(), FailureSource::Transport, retry(None)),
            (
                Status::unknown("transport error"),
                FailureSource::Transport,
                retry(None),
            ),
        ];
        let mut wrong = Vec::new();
        for (status, source, verdict) in cases {
            let got = (source_of(&status), classify(&status));
            if got != (source, verdict) {
                wrong.push(format!(
                    "{status:?}: got {got:?}, want {:?}",
                    (source, verdict)
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn backoff_grows_by_its_multiplier_with_jitter_and_stops_at_the_max() {
        let backoff = Backoff::new(Duration::from_millis(500));
        let ms = |d: Duration| d.as_millis();
        let cases = [
            // (attempt, unit random, expected ms)
            (0, 0.5, 500),
            (1, 0.5, 750),
            (2, 0.5, 1125),
            (0, 0.0, 250),
            (0, 0.999_999, 749),
            (1, 0.0, 375),
            (20, 0.5, 30_000),
            (20, 0.0, 15_000),
            (20, 1.0, 30_000),
            (u32::MAX, 0.5, 30_000),
        ];
        for (attempt, unit, want) in cases {
            assert_eq!(
                ms(backoff.delay(attempt, unit)),
                want,
                "attempt {attempt}, unit {unit}"
            );
        }
        let no_jitter = Backoff {
            jitter: 0.0,
            ..backoff
        };
        assert_eq!(ms(no_jitter.delay(3, 0.9)), 1687);
    }
}
