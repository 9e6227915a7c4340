//! One edge of the graph: a request from a client to a server, assembled from the two spans
//! that describe it.

/// An edge is found by trace id plus the client's span id (the server's parent span id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EdgeKey {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    trace_id_len: u8,
    span_id_len: u8,
}

impl EdgeKey {
    /// `None` when an id is longer than OTLP allows (16 and 8 bytes).
    pub fn new(trace_id: &[u8], span_id: &[u8]) -> Option<Self> {
        // Ids of their full lengths, nearly all: copied whole, in registers. Through the
        // general path two `memcpy` calls wrote the key, which was then read back in 16-byte
        // loads the CPU could not forward from their stores (a stall a span).
        if let (Ok(trace), Ok(span)) =
            (<[u8; 16]>::try_from(trace_id), <[u8; 8]>::try_from(span_id))
        {
            return Some(Self {
                trace_id: trace,
                span_id: span,
                trace_id_len: 16,
                span_id_len: 8,
            });
        }
        if trace_id.len() > 16 || span_id.len() > 8 {
            return None;
        }
        let mut key = Self {
            trace_id_len: trace_id.len() as u8,
            span_id_len: span_id.len() as u8,
            ..Self::default()
        };
        key.trace_id[..trace_id.len()].copy_from_slice(trace_id);
        key.span_id[..span_id.len()].copy_from_slice(span_id);
        Some(key)
    }

    pub fn trace_id(&self) -> &[u8] {
        &self.trace_id[..self.trace_id_len as usize]
    }

    /// A server span without a parent keys its edge with an empty span id: it is a root.
    pub fn is_root(&self) -> bool {
        self.span_id_len == 0
    }
}

/// How the two sides talk, the `connection_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionType {
    #[default]
    Unknown,
    MessagingSystem,
    Database,
    VirtualNode,
}

impl ConnectionType {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Unknown => "",
            Self::MessagingSystem => "messaging_system",
            Self::Database => "database",
            Self::VirtualNode => "virtual_node",
        }
    }
}

/// What has been learnt about a request so far. Strings keep their capacity across reuse.
#[derive(Debug, Clone)]
pub struct Edge {
    pub key: EdgeKey,
    pub connection_type: ConnectionType,
    pub client_service: String,
    pub server_service: String,
    pub client_latency_sec: f64,
    pub server_latency_sec: f64,
    pub client_end_nanos: u64,
    pub server_start_nanos: u64,
    /// Kind of the last span applied, reported when the edge expires unmatched.
    pub span_kind: i32,
    pub failed: bool,
    /// Dimension values by slot (see `graph::Dimensions`); empty means unset.
    pub dimensions: Vec<String>,
    pub peer_node: String,
    pub span_multiplier: f64,
}

impl Edge {
    pub fn new(dimension_slots: usize) -> Self {
        Self {
            key: EdgeKey::default(),
            connection_type: ConnectionType::Unknown,
            client_service: String::new(),
            server_service: String::new(),
            client_latency_sec: 0.0,
            server_latency_sec: 0.0,
            client_end_nanos: 0,
            server_start_nanos: 0,
            span_kind: 0,
            failed: false,
            dimensions: vec![String::new(); dimension_slots],
            peer_node: String::new(),
            span_multiplier: 1.0,
        }
    }

    /// Clears the edge for a new key, keeping buffers.
    pub fn reset(&mut self, key: EdgeKey) {
        self.key = key;
        self.connection_type = ConnectionType::Unknown;
        self.client_service.clear();
        self.server_service.clear();
        self.client_latency_sec = 0.0;
        self.server_latency_sec = 0.0;
        self.client_end_nanos = 0;
        self.server_start_nanos = 0;
        self.span_kind = 0;
        self.failed = false;
        self.dimensions.iter_mut().for_each(String::clear);
        self.peer_node.clear();
        self.span_multiplier = 1.0;
    }

    /// Both sides are named.
    pub fn is_complete(&self) -> bool {
        !self.client_service.is_empty() && !self.server_service.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::EdgeKey;

    /// Full-length ids take a shortcut; keys must still be equal exactly when both ids are.
    #[test]
    fn keys_are_equal_exactly_when_both_ids_are() {
        let trace = [3u8; 16];
        let ids: [(&[u8], &[u8]); 6] = [
            (&trace, &[1; 8]),
            (&trace, &[1; 7]),
            (&trace, &[]),
            (&trace[..15], &[1; 8]),
            (&trace[..15], &[1; 7]),
            (&[], &[1; 8]),
        ];
        for (i, (t, s)) in ids.iter().enumerate() {
            let key = EdgeKey::new(t, s).unwrap();
            assert_eq!(key.trace_id(), *t);
            assert_eq!(key.is_root(), s.is_empty());
            for (j, (t2, s2)) in ids.iter().enumerate() {
                assert_eq!(
                    key == EdgeKey::new(t2, s2).unwrap(),
                    i == j,
                    "{i} against {j}"
                );
            }
        }
        assert_eq!(EdgeKey::new(&[0; 17], &[1; 8]), None);
        assert_eq!(EdgeKey::new(&trace, &[1; 9]), None);
    }
}
