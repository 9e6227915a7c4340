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

use super::part::{MapPart, PartError};

/// Most bytes read from one peer's answer: a part of `--service-map-max-series` 2000 series
/// is well under 1 MiB.
const MOST_PART_BYTES: usize = 16 << 20;

/// The replicas to ask, and how.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// `host:port` of each peer's admin listener, as configured.
    peers: Vec<String>,
    client: reqwest::Client,
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
    /// Why it is missing.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// The replica that drew the map.
    This,
    /// Answered; its part is in the map.
    Answered,
    /// Did not answer, or answered with a part that cannot be merged: the map lacks its share.
    Missing,
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
    /// `bounds`, and a row for each replica, this one (`own`) first. A replica reached at
    /// several addresses, or listed under several names, counts once.
    pub async fn gather(
        &self,
        own: &MapPart,
        window: Duration,
        window_text: &str,
        bounds: &[f64],
    ) -> (Vec<MapPart>, Vec<Replica>) {
        let mut replicas = vec![Replica::this(&own.instance)];
        let mut addresses = BTreeSet::new();
        for peer in &self.peers {
            // A resolver that does not answer must not hold the page past the peers' timeout.
            let lookup = tokio::time::timeout(self.timeout, tokio::net::lookup_host(peer.as_str()));
            match lookup.await {
                Err(_) => replicas.push(missing(
                    peer.clone(),
                    format!("not resolved within {:?}", self.timeout),
                )),
                Ok(Err(e)) => replicas.push(missing(peer.clone(), format!("not resolved: {e}"))),
                Ok(Ok(found)) => {
                    let found: Vec<SocketAddr> = found.collect();
                    if found.is_empty() {
                        replicas.push(missing(peer.clone(), "the name has no address".into()));
                    }
                    addresses.extend(found);
                }
            }
        }
        let timeout = self.timeout;
        let mut asked = tokio::task::JoinSet::new();
        for address in addresses {
            let (client, window_text) = (self.client.clone(), window_text.to_string());
            let bounds = bounds.to_vec();
            asked.spawn(async move {
                let got = ask(&client, address, &window_text, &bounds, window)
                    .await
                    .map_err(|e| e.with_timeout(timeout));
                (address, got)
            });
        }
        let mut answers: Vec<(SocketAddr, Result<MapPart, PeerError>)> = asked.join_all().await;
        answers.sort_by_key(|(address, _)| *address);

        let mut parts: Vec<MapPart> = Vec::new();
        for (address, answer) in answers {
            match answer {
                Ok(part) if part.instance == own.instance => {
                    // This replica, reached through the fleet's name: already counted.
                    replicas[0].address = address.to_string();
                }
                Ok(part) if parts.iter().any(|p| p.instance == part.instance) => {
                    replicas.push(missing(
                        address.to_string(),
                        format!(
                            "instance id {:?} answered already at another address; each replica needs its own --instance-id",
                            part.instance
                        ),
                    ));
                }
                Ok(part) => {
                    replicas.push(Replica {
                        address: address.to_string(),
                        instance: Some(part.instance.clone()),
                        state: ReplicaState::Answered,
                        error: None,
                    });
                    parts.push(part);
                }
                Err(e) => replicas.push(missing(address.to_string(), e.to_string())),
            }
        }
        (parts, replicas)
    }
}

impl Replica {
    /// The row of the replica drawing the map.
    pub fn this(instance: &str) -> Self {
        Self {
            address: "this replica".to_string(),
            instance: Some(instance.to_string()),
            state: ReplicaState::This,
            error: None,
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

impl PeerError {
    fn with_timeout(self, timeout: Duration) -> Self {
        match self {
            Self::Timeout(_) => Self::Timeout(timeout),
            other => other,
        }
    }
}

fn missing(address: String, error: String) -> Replica {
    Replica {
        address,
        instance: None,
        state: ReplicaState::Missing,
        error: Some(error),
    }
}

async fn ask(
    client: &reqwest::Client,
    address: SocketAddr,
    window_text: &str,
    bounds: &[f64],
    window: Duration,
) -> Result<MapPart, PeerError> {
    let mut response = client
        .get(format!(
            "http://{address}/api/graph/part?{}",
            serde_urlencoded::to_string([("window", window_text)]).unwrap_or_default()
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

/// A `--peers` entry: `host:port`, the admin listener of a replica or a name for all of them.
pub fn parse_peer(text: &str) -> Result<String, String> {
    let text = text.trim();
    let example = "write host:port, e.g. graphgen:9464";
    if text.contains("://") || text.contains('/') {
        return Err(format!("{text:?}: {example} (no scheme or path)"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?}: no port; {example}"));
    };
    if host.is_empty() {
        return Err(format!("{text:?}: no host; {example}"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(text.to_string()),
        _ => Err(format!("{text:?}: {port:?} is not a port; {example}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn part(instance: &str, bounds: Vec<f64>) -> MapPart {
        MapPart {
            instance: instance.into(),
            at_nanos: 1,
            window_seconds: 300.0,
            bounds,
            edges: vec![],
            omitted_edges: 0,
        }
    }

    /// A peer that answers every connection with `answer` (or, if `None`, never answers).
    async fn peer(answer: Option<String>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    async fn peers_that_cannot_be_merged_are_missing_with_the_reason() {
        let bounds = vec![0.1, 1.0];
        let good = peer(Some(
            serde_json::to_string(&part("b", bounds.clone())).unwrap(),
        ))
        .await;
        let same_id = peer(Some(
            serde_json::to_string(&part("b", bounds.clone())).unwrap(),
        ))
        .await;
        let itself = peer(Some(
            serde_json::to_string(&part("a", bounds.clone())).unwrap(),
        ))
        .await;
        let other_buckets = peer(Some(serde_json::to_string(&part("c", vec![0.5])).unwrap())).await;
        let garbage = peer(Some("<html>".into())).await;
        let silent = peer(None).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let all = [
            good,
            same_id,
            itself,
            other_buckets,
            garbage,
            silent,
            closed,
        ];
        let fleet = Fleet::new(
            all.iter().map(|a| a.to_string()).collect(),
            Duration::from_millis(300),
        )
        .unwrap();
        let own = part("a", bounds.clone());
        let (parts, rows) = fleet
            .gather(&own, Duration::from_secs(300), "5m", &bounds)
            .await;
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].instance, "b");
        let row = |a: SocketAddr| rows.iter().find(|r| r.address == a.to_string());
        // This replica, reached as a peer: its own row, not a second part.
        assert_eq!(rows[0].state, ReplicaState::This);
        assert_eq!(rows[0].address, itself.to_string());
        assert!(row(itself).is_some());
        let reason = |a: SocketAddr| {
            let r = row(a).unwrap();
            assert_eq!(r.state, ReplicaState::Missing, "{r:?}");
            r.error.clone().unwrap()
        };
        // Whichever of the two with instance "b" answered first is in; the other is named.
        let (first, second) = if row(good).unwrap().state == ReplicaState::Answered {
            (good, same_id)
        } else {
            (same_id, good)
        };
        assert_eq!(row(first).unwrap().state, ReplicaState::Answered);
        assert!(reason(second).contains("own --instance-id"));
        assert!(reason(other_buckets).contains("latency buckets"));
        assert!(reason(garbage).contains("not a map part"));
        assert!(reason(silent).contains("no answer within 300ms"));
        assert!(
            reason(closed).to_lowercase().contains("refused"),
            "{}",
            reason(closed)
        );
        assert_eq!(rows.len(), 1 + all.len() - 1);
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
        assert!(parse_peer("graphgen").unwrap_err().contains("no port"));
    }
}
