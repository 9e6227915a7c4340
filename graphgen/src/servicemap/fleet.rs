//! The fleet's map: with `--peers`, `/graph` and `/api/graph` ask every other replica for its
//! part of the window (`GET /api/graph/part`) and add the parts up. Peers are found the way
//! Prometheus' `dns_sd_configs` and the Collector's `dns` resolver find them: each `host:port`
//! is resolved at every query to all its addresses (a Compose service name answers with one
//! address per replica, a Kubernetes headless Service with one per ready pod). A replica that
//! does not answer is listed as missing, never silently left out.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::part::{MapPart, PartError};
use crate::selfmetrics::PeerOutcome;

/// Most bytes read from one peer's answer: a part of `--service-map-max-series` 2000 series
/// (at most that many edges) is well under 1 MiB.
const MOST_PART_BYTES: usize = 16 << 20;
/// Most addresses asked at once; a name that resolves to more is a mistake, not a fleet.
const MOST_ADDRESSES: usize = 64;

/// The replicas to ask, and how.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// `host:port` of each peer's admin listener, as configured.
    peers: Vec<String>,
    client: reqwest::Client,
    /// For resolving every name, then for asking every address: the page waits no longer
    /// than twice this.
    timeout: Duration,
}

/// One replica's answer, as shown on the map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    /// The admin address asked (`host:port`), or the configured name when it has none.
    pub address: String,
    /// Its `--instance-id`, when it answered.
    pub instance: Option<String>,
    pub state: ReplicaState,
    /// Why it is missing, and what went wrong.
    pub reason: Option<Missing>,
    pub error: Option<String>,
    /// Edges its snapshots left out (`--service-map-max-series`): their figures are missing
    /// from its share.
    pub omitted_edges: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// The replica that drew the map.
    This,
    /// Answered; its part is in the map.
    Answered,
    /// Its share is not in the map: see [`Missing`].
    Missing,
}

/// Why a replica's share is not in the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The configured name has no address (or DNS did not answer in time).
    Unresolved,
    /// Connection refused or reset, or no answer within `--peer-timeout`.
    NoAnswer,
    /// An HTTP error, an answer too large, or something that is not a map part.
    BadAnswer,
    /// A part that cannot be added to this one's (other latency buckets, counts that are not).
    Unmergeable,
    /// Another process with the same `--instance-id`: its share cannot be told apart.
    SameInstanceId,
    /// Beyond the [`MOST_ADDRESSES`] asked.
    TooManyAddresses,
}

impl Missing {
    /// The `outcome` label of `graphgen_service_map_peer_queries_total`.
    pub fn outcome(self) -> PeerOutcome {
        match self {
            Self::Unresolved => PeerOutcome::unresolved,
            Self::NoAnswer => PeerOutcome::no_answer,
            Self::BadAnswer => PeerOutcome::bad_answer,
            Self::Unmergeable => PeerOutcome::unmergeable,
            Self::SameInstanceId => PeerOutcome::same_instance_id,
            Self::TooManyAddresses => PeerOutcome::too_many_addresses,
        }
    }
}

/// Why a peer's part is not in the map.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no answer: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered more than {MOST_PART_BYTES} bytes")]
    TooLarge,
    #[error("answered something that is not a map part: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot be merged: {0}")]
    Part(#[from] PartError),
}

impl PeerError {
    fn reason(&self) -> Missing {
        match self {
            Self::Timeout(_) | Self::Request(_) => Missing::NoAnswer,
            Self::Status(_) | Self::TooLarge | Self::Json(_) => Missing::BadAnswer,
            Self::Part(_) => Missing::Unmergeable,
        }
    }
}

impl From<reqwest::Error> for PeerError {
    /// The innermost cause says most (`Connection refused`), reqwest's own text least.
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return Self::Timeout(Duration::ZERO);
        }
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        Self::Request(cause.to_string())
    }
}

impl Fleet {
    pub fn new(peers: Vec<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("graphgen/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            peers,
            client,
            timeout,
        })
    }

    /// Every peer's part over `window` (written `window_text` in the query), checked against
    /// `bounds`, and a row for each replica, this one (`own`) first; within twice the timeout.
    /// A process reached at several addresses, or under several names, counts once: parts
    /// are told apart by instance id and boot id.
    pub async fn gather(
        &self,
        own: &MapPart,
        tenant: Option<&str>,
        window: Duration,
        window_text: &str,
        bounds: &[f64],
    ) -> (Vec<MapPart>, Vec<Replica>) {
        let deadline = Instant::now() + self.timeout;
        let mut replicas = vec![Replica::this(own)];

        // Every name at once: a resolver that hangs costs the timeout once, not per name.
        let mut lookups = tokio::task::JoinSet::new();
        for peer in self.peers.clone() {
            lookups.spawn(async move {
                let found =
                    tokio::time::timeout_at(deadline, tokio::net::lookup_host(peer.clone())).await;
                (peer, found)
            });
        }
        let mut resolved = lookups.join_all().await;
        resolved.sort_by(|a, b| a.0.cmp(&b.0));
        let mut addresses = BTreeSet::new();
        for (peer, found) in resolved {
            let error = match found {
                Err(_) => format!("not resolved within {:?}", self.timeout),
                Ok(Err(e)) => format!("not resolved: {e}"),
                Ok(Ok(found)) => {
                    let found: Vec<SocketAddr> = found.collect();
                    if !found.is_empty() {
                        addresses.extend(found);
                        continue;
                    }
                    "the name has no address".to_string()
                }
            };
            replicas.push(missing(peer, Missing::Unresolved, error));
        }
        let mut addresses: Vec<SocketAddr> = addresses.into_iter().collect();
        if addresses.len() > MOST_ADDRESSES {
            let beyond = addresses.split_off(MOST_ADDRESSES);
            replicas.push(missing(
                format!("{} more addresses", beyond.len()),
                Missing::TooManyAddresses,
                format!(
                    "at most {MOST_ADDRESSES} addresses are asked; the names resolve to {}",
                    MOST_ADDRESSES + beyond.len()
                ),
            ));
        }

        // Asking gets its own timeout: a slow resolver must not leave the peers none.
        let deadline = Instant::now() + self.timeout;
        let mut asked = tokio::task::JoinSet::new();
        for address in addresses {
            let (client, window_text) = (self.client.clone(), window_text.to_string());
            let tenant = tenant.map(str::to_string);
            let bounds = bounds.to_vec();
            let timeout = self.timeout;
            asked.spawn(async move {
                let answer = ask(
                    &client,
                    address,
                    tenant.as_deref(),
                    &window_text,
                    &bounds,
                    window,
                );
                let got = match tokio::time::timeout_at(deadline, answer).await {
                    Ok(got) => got.map_err(|e| e.with_timeout(timeout)),
                    Err(_) => Err(PeerError::Timeout(timeout)),
                };
                (address, got)
            });
        }
        let mut answers = asked.join_all().await;
        answers.sort_by_key(|(address, _)| *address);

        let mut parts: Vec<MapPart> = Vec::new();
        for (address, answer) in answers {
            let part = match answer {
                Ok(part) => part,
                Err(e) => {
                    replicas.push(missing(address.to_string(), e.reason(), e.to_string()));
                    continue;
                }
            };
            let same_process = |p: &MapPart| p.instance == part.instance && p.boot == part.boot;
            if same_process(own) {
                // This replica, reached through the fleet's name: already counted.
                if replicas[0].address == THIS {
                    replicas[0].address = address.to_string();
                }
            } else if parts.iter().any(same_process) {
                // A peer reached at a second address.
            } else if own.instance == part.instance
                || parts.iter().any(|p| p.instance == part.instance)
            {
                replicas.push(missing(
                    address.to_string(),
                    Missing::SameInstanceId,
                    format!(
                        "instance id {:?} is another process's too; each replica needs its own --instance-id",
                        part.instance
                    ),
                ));
            } else {
                replicas.push(Replica {
                    address: address.to_string(),
                    instance: Some(part.instance.clone()),
                    state: ReplicaState::Answered,
                    reason: None,
                    error: None,
                    omitted_edges: part.omitted_edges,
                });
                parts.push(part);
            }
        }
        (parts, replicas)
    }
}

/// The address shown for the replica drawing the map until it is reached as a peer.
const THIS: &str = "this replica";

impl Replica {
    /// The row of the replica drawing the map.
    pub fn this(own: &MapPart) -> Self {
        Self {
            address: THIS.to_string(),
            instance: Some(own.instance.clone()),
            state: ReplicaState::This,
            reason: None,
            error: None,
            omitted_edges: own.omitted_edges,
        }
    }
}

impl PeerError {
    fn with_timeout(self, timeout: Duration) -> Self {
        match self {
            Self::Timeout(_) => Self::Timeout(timeout),
            other => other,
        }
    }
}

fn missing(address: String, reason: Missing, error: String) -> Replica {
    Replica {
        address,
        instance: None,
        state: ReplicaState::Missing,
        reason: Some(reason),
        error: Some(error),
        omitted_edges: 0,
    }
}

async fn ask(
    client: &reqwest::Client,
    address: SocketAddr,
    tenant: Option<&str>,
    window_text: &str,
    bounds: &[f64],
    window: Duration,
) -> Result<MapPart, PeerError> {
    let mut response = client
        .get(format!(
            "http://{address}/api/graph/part?{}",
            super::query::query_string(tenant, [("window", window_text)])
        ))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(PeerError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MOST_PART_BYTES {
            return Err(PeerError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let part: MapPart = serde_json::from_slice(&body)?;
    part.check(bounds, window)?;
    Ok(part)
}

/// A `--peers` entry that is not `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?}: {problem}; write host:port, e.g. graphgen:9464")]
pub struct InvalidPeer {
    pub text: String,
    pub problem: &'static str,
}

/// A `--peers` entry: `host:port`, the admin listener of a replica or a name for all of them.
pub fn parse_peer(text: &str) -> Result<String, InvalidPeer> {
    let text = text.trim();
    let invalid = |problem| InvalidPeer {
        text: text.to_string(),
        problem,
    };
    if text.contains("://") || text.contains('/') {
        return Err(invalid("no scheme or path"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(invalid("no port"));
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_string()),
        _ => Err(invalid("not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn part(instance: &str, boot: u64, bounds: Vec<f64>) -> MapPart {
        MapPart {
            instance: instance.into(),
            boot,
            at_nanos: 1,
            window_seconds: 300.0,
            bounds,
            edges: vec![],
            omitted_edges: 0,
        }
    }

    /// A peer that answers every connection with `answer` (or, if `None`, never answers).
    async fn peer(answer: Option<String>) -> SocketAddr {
        peer_on("127.0.0.1", answer).await
    }

    async fn peer_on(ip: &str, answer: Option<String>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                match &answer {
                    Some(body) => {
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                    }
                    None => held.push(socket),
                }
            }
        });
        address
    }

    #[tokio::test]
    async fn each_process_counts_once_and_each_missing_peer_says_why() {
        let bounds = vec![0.1, 1.0];
        let answering = |p: MapPart| peer(Some(serde_json::to_string(&p).unwrap()));
        let b = answering(part("b", 1, bounds.clone())).await;
        // The same process reached at a second address: counted once, not missing.
        let b_again = answering(part("b", 1, bounds.clone())).await;
        // Another process given the same id: its share cannot be told apart.
        // On 127.0.0.2, so it sorts after b's addresses and is the one named.
        let b_twin = peer_on(
            "127.0.0.2",
            Some(serde_json::to_string(&part("b", 2, bounds.clone())).unwrap()),
        )
        .await;
        let itself = answering(part("a", 7, bounds.clone())).await;
        let a_twin = answering(part("a", 8, bounds.clone())).await;
        let other_buckets = answering(part("c", 1, vec![0.5])).await;
        let garbage = peer(Some("<html>".into())).await;
        let silent = peer(None).await;
        // Port 1: nothing listens there, and no test can be handed it.
        let closed = SocketAddr::from(([127, 0, 0, 1], 1));
        let all = [
            b,
            b_again,
            b_twin,
            itself,
            a_twin,
            other_buckets,
            garbage,
            silent,
            closed,
        ];
        let mut names: Vec<String> = all.iter().map(|a| a.to_string()).collect();
        names.push("unresolvable.invalid.:9464".into());
        let fleet = Fleet::new(names, Duration::from_millis(500)).unwrap();
        let own = part("a", 7, bounds.clone());
        let started = Instant::now();
        let (parts, rows) = fleet
            .gather(&own, None, Duration::from_secs(300), "5m", &bounds)
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(1400),
            "one timeout for all lookups, one for all requests: {:?}",
            started.elapsed()
        );
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].instance.as_str(), parts[0].boot), ("b", 1));
        let row = |a: SocketAddr| rows.iter().find(|r| r.address == a.to_string());
        // This replica, reached as a peer: its own row, not a second part.
        assert_eq!(rows[0].state, ReplicaState::This);
        assert_eq!(rows[0].address, itself.to_string());
        // Of b's two addresses (answers are taken in address order) the first is its row.
        let (first, second) = (b.min(b_again), b.max(b_again));
        assert_eq!(row(first).unwrap().state, ReplicaState::Answered);
        assert!(row(second).is_none(), "the same process is listed once");
        let reason = |a: SocketAddr| {
            let r = row(a).unwrap();
            assert_eq!(r.state, ReplicaState::Missing, "{r:?}");
            (r.reason.unwrap(), r.error.clone().unwrap())
        };
        assert_eq!(reason(b_twin).0, Missing::SameInstanceId);
        assert!(reason(b_twin).1.contains("own --instance-id"));
        assert_eq!(reason(a_twin).0, Missing::SameInstanceId);
        assert_eq!(reason(other_buckets).0, Missing::Unmergeable);
        assert!(reason(other_buckets).1.contains("latency buckets"));
        assert_eq!(reason(garbage).0, Missing::BadAnswer);
        assert!(reason(garbage).1.contains("not a map part"));
        assert_eq!(
            reason(silent),
            (Missing::NoAnswer, "no answer within 500ms".into())
        );
        assert_eq!(reason(closed).0, Missing::NoAnswer);
        assert!(
            reason(closed).1.to_lowercase().contains("refused"),
            "{:?}",
            reason(closed)
        );
        let unresolved = rows
            .iter()
            .find(|r| r.address.starts_with("unresolvable"))
            .unwrap();
        assert_eq!(unresolved.reason, Some(Missing::Unresolved));
        // This replica, b, and a row for each of the seven missing.
        assert_eq!(rows.len(), 2 + 7, "{rows:#?}");
    }

    #[test]
    fn peers_are_host_and_port() {
        assert_eq!(parse_peer(" graphgen:9464 ").unwrap(), "graphgen:9464");
        assert_eq!(parse_peer("10.0.0.7:9464").unwrap(), "10.0.0.7:9464");
        assert_eq!(parse_peer("[::1]:9464").unwrap(), "[::1]:9464");
        for bad in [
            "graphgen",
            "http://graphgen:9464",
            ":9464",
            "graphgen:x",
            "g:0",
            "g:9464/",
        ] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_peer("graphgen").unwrap_err().to_string(),
            "\"graphgen\": no port; write host:port, e.g. graphgen:9464"
        );
    }
}
