//! Edges that span kinds do not mark (`--edges-from-parent-child`, off by default): when a
//! span's parent belongs to another service and neither has a kind Tempo pairs (both INTERNAL
//! or UNSPECIFIED), the pair is an edge parent service → child service, the parent as client
//! side and the child as server side. Legacy or hand-made instrumentation then still draws its
//! calls.
//!
//! Tempo's store pairs one client with one server; a parent has any number of children, so
//! these spans wait in an index of their own: each span under its own id (for children that
//! come later), and a child whose parent has not come yet under its parent's id. Both wait
//! `wait` and count against `max_items`, as the store's edges do. Pure.

use std::collections::HashMap;

use super::edge::{ConnectionType, Edge, EdgeKey};

/// What a kind-less span contributes to an edge on either side.
#[derive(Debug, Clone)]
pub(super) struct KindlessSpan {
    pub service: String,
    pub kind: i32,
    pub duration_sec: f64,
    pub start_nanos: u64,
    pub end_nanos: u64,
    pub failed: bool,
    pub multiplier: f64,
    /// Values of the configured dimensions, in `Layout::dimensions` order.
    pub dimensions: Vec<String>,
    pub expires_at: u64,
}

/// The kind-less spans of the last `wait`.
#[derive(Debug, Default)]
pub(super) struct KindlessSpans {
    /// By (trace id, span id): possible parents.
    parents: HashMap<EdgeKey, KindlessSpan>,
    /// By (trace id, parent span id): children whose parent has not come yet.
    orphans: HashMap<EdgeKey, Vec<KindlessSpan>>,
    held: usize,
}

/// A parent → child pair found, ready to be recorded.
pub(super) struct Pair {
    /// The trace and the parent's span id.
    pub key: EdgeKey,
    pub parent: KindlessSpan,
    pub child: KindlessSpan,
}

impl KindlessSpans {
    /// Takes in one kind-less span (`own`: its trace and span id; `parent`: its trace and parent
    /// span id, `None` for a root) and calls `pair` for every edge it completes. `false` when
    /// `max_items` spans are held and this one could not wait.
    pub fn push(
        &mut self,
        own: EdgeKey,
        parent: Option<EdgeKey>,
        span: KindlessSpan,
        max_items: usize,
        mut pair: impl FnMut(Pair),
    ) -> bool {
        // As a parent: the children that came first.
        if let Some(children) = self.orphans.remove(&own) {
            self.held -= children.len();
            for child in children {
                if child.service != span.service {
                    pair(Pair {
                        key: own,
                        parent: span.clone(),
                        child,
                    });
                }
            }
        }
        let mut stored = true;
        // As a child: its parent, or wait for it.
        if let Some(parent) = parent {
            match self.parents.get(&parent) {
                Some(p) => {
                    if p.service != span.service {
                        pair(Pair {
                            key: parent,
                            parent: p.clone(),
                            child: span.clone(),
                        });
                    }
                }
                None if self.held < max_items => {
                    self.orphans.entry(parent).or_default().push(span.clone());
                    self.held += 1;
                }
                None => stored = false,
            }
        }
        // For children still to come.
        if self.held < max_items {
            if self.parents.insert(own, span).is_none() {
                self.held += 1;
            }
        } else {
            stored = false;
        }
        stored
    }

    /// Forgets what has waited its `wait`: a child whose parent never came makes no edge.
    pub fn expire(&mut self, now: u64) {
        self.parents.retain(|_, s| s.expires_at > now);
        self.orphans.retain(|_, children| {
            children.retain(|c| c.expires_at > now);
            !children.is_empty()
        });
        self.held = self.parents.len() + self.orphans.values().map(Vec::len).sum::<usize>();
    }
}

impl Pair {
    /// The edge, as a client/server pair would make it: the parent's service and duration on
    /// the client side, the child's on the server side, failed if either failed. No connection
    /// type: Grafana draws the child as instrumented (grafana-tempo-datasource v13.1.0,
    /// `src/graphTransform.ts:258-268`: a server is instrumented when `connection_type` is empty
    /// or `messaging_system`).
    /// `dimensions`: `(attribute, client slot, server slot)`, in the order of the spans' values.
    pub fn fill(&self, dimensions: &[(String, usize, usize)], e: &mut Edge) {
        e.key = self.key;
        e.connection_type = ConnectionType::Unknown;
        super::replace(&mut e.client_service, &self.parent.service);
        super::replace(&mut e.server_service, &self.child.service);
        e.client_latency_sec = self.parent.duration_sec;
        e.server_latency_sec = self.child.duration_sec;
        e.client_end_nanos = self.parent.end_nanos;
        e.server_start_nanos = self.child.start_nanos;
        e.span_kind = self.child.kind;
        e.failed = self.parent.failed || self.child.failed;
        e.span_multiplier = self.child.multiplier;
        e.peer_node.clear();
        for slot in e.dimensions.iter_mut() {
            slot.clear();
        }
        for (i, (_, client_slot, server_slot)) in dimensions.iter().enumerate() {
            // Client values first, then server ones, as the pair's spans would be applied.
            if let Some(v) = self.parent.dimensions.get(i).filter(|v| !v.is_empty()) {
                super::replace(&mut e.dimensions[*client_slot], v);
            }
            if let Some(v) = self.child.dimensions.get(i).filter(|v| !v.is_empty()) {
                super::replace(&mut e.dimensions[*server_slot], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(span: u8) -> EdgeKey {
        EdgeKey::new(&[1; 16], &[span; 8]).unwrap()
    }

    fn span(service: &str, expires_at: u64) -> KindlessSpan {
        KindlessSpan {
            service: service.into(),
            kind: 1,
            duration_sec: 0.1,
            start_nanos: 0,
            end_nanos: 100,
            failed: false,
            multiplier: 1.0,
            dimensions: vec![],
            expires_at,
        }
    }

    #[test]
    fn what_waits_is_bounded_by_max_items_and_forgotten_after_wait() {
        let mut spans = KindlessSpans::default();
        let mut pairs = 0;
        // Children of a parent that never comes: each waits as an orphan and as a parent.
        assert!(spans.push(key(2), Some(key(1)), span("b", 10), 4, |_| pairs += 1));
        assert!(spans.push(key(3), Some(key(1)), span("c", 10), 4, |_| pairs += 1));
        assert_eq!(spans.held, 4);
        // Full: the next one cannot wait, and says so.
        assert!(!spans.push(key(4), Some(key(1)), span("d", 10), 4, |_| pairs += 1));
        assert_eq!(spans.held, 4);
        // After the wait nothing is held, and a late parent finds no one.
        spans.expire(10);
        assert_eq!(spans.held, 0);
        assert!(spans.push(key(1), None, span("a", 20), 4, |_| pairs += 1));
        assert_eq!(pairs, 0);
        // Within the wait, the parent finds its waiting children, each once.
        assert!(spans.push(key(5), Some(key(1)), span("e", 20), 4, |_| pairs += 1));
        assert_eq!(pairs, 1);
    }
}
