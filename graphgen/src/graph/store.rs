//! The edge store: half-finished edges waiting for their other side, kept in arrival order so
//! expiry only looks at the oldest. Slots are recycled, so a steady stream allocates nothing.

use hashbrown::HashTable;

use super::edge::{Edge, EdgeKey};
use super::Side;

const NIL: u32 = u32::MAX;

/// Why a span could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The store already holds `max_items` edges.
    Full,
}

/// What happened to an edge after an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// Both sides are known: the caller gets the edge to record, then it is recycled.
    Completed { new: bool },
    /// The edge waits for its other side.
    Stored { new: bool },
}

/// A key looked up in the store ([`Store::lookup`]), valid until the store next changes.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    key: EdgeKey,
    hash: u64,
    slot: Option<u32>,
}

impl Lookup {
    /// Whether an edge of this key waits in the store.
    pub fn is_waiting(&self) -> bool {
        self.slot.is_some()
    }
}

#[derive(Debug)]
struct Slot {
    edge: Edge,
    expires_at: u64,
    prev: u32,
    next: u32,
}

/// A waiting edge in the index: its slot, and bits of its key's hash that the table's own tag
/// does not hold. Eight bytes instead of the key's 32 keep the index four times smaller, so a
/// look-up of a key that is not there (most, under load) stays in cache; the key itself, in the
/// slot, is read only when these bits match.
#[derive(Debug, Clone, Copy)]
struct Indexed {
    fingerprint: u32,
    slot: u32,
}

/// Bits 25–56 of the hash: hashbrown places by the low bits and tags by the top seven.
fn fingerprint(hash: u64) -> u32 {
    (hash >> 25) as u32
}

#[derive(Debug)]
pub struct Store {
    /// Each waiting edge's slot. A key is hashed once per span: the table is asked by hash, so
    /// the look-up and the insert or removal that follows share it.
    index: HashTable<Indexed>,
    hasher: ahash::RandomState,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    max_items: usize,
    /// Where a new edge is updated when the store is full: it may still complete on first
    /// sight (database calls) and be recorded.
    scratch: Edge,
}

impl Store {
    pub fn new(max_items: usize, dimension_slots: usize) -> Self {
        Self {
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            max_items,
            scratch: Edge::new(dimension_slots),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Looks `key` up once: the answer says whether its edge waits here and lets
    /// [`Store::upsert_looked_up`] act on it without hashing or probing again.
    pub fn lookup(&self, key: EdgeKey) -> Lookup {
        let hash = self.hasher.hash_one(key);
        let fingerprint = fingerprint(hash);
        let slots = &self.slots;
        let slot = self
            .index
            .find(hash, |e| {
                e.fingerprint == fingerprint && slots[e.slot as usize].edge.key == key
            })
            .map(|e| e.slot);
        Lookup { key, hash, slot }
    }

    /// Whether a span of `lookup`'s key that cannot complete an edge by itself would be
    /// refused: the store is full and no edge of that key waits.
    pub fn refuses_new(&self, lookup: &Lookup) -> bool {
        lookup.slot.is_none() && self.index.len() >= self.max_items
    }

    /// [`Store::upsert_looked_up`] of a key not looked up yet.
    #[cfg(test)]
    pub fn upsert(
        &mut self,
        key: EdgeKey,
        expires_at: u64,
        may_complete_alone: bool,
        update: impl FnOnce(&mut Edge),
        complete: impl FnOnce(&mut Edge),
    ) -> Result<Upsert, StoreError> {
        let lookup = self.lookup(key);
        self.upsert_looked_up(lookup, expires_at, may_complete_alone, update, complete)
    }

    /// Finds or creates the edge of `lookup`'s key (looked up since the store last changed),
    /// applies `update`, and if it is then complete hands it to `complete` and forgets it. A
    /// new edge that is still incomplete is stored with an expiry of `expires_at`, unless the
    /// store is full.
    ///
    /// `may_complete_alone` says whether `update` could complete a new edge by itself (a
    /// database call names its server). When it cannot and the store is full, the span is
    /// refused without building the edge: under overload most spans end there.
    pub fn upsert_looked_up(
        &mut self,
        lookup: Lookup,
        expires_at: u64,
        may_complete_alone: bool,
        update: impl FnOnce(&mut Edge),
        complete: impl FnOnce(&mut Edge),
    ) -> Result<Upsert, StoreError> {
        let Lookup { key, hash, slot } = lookup;
        if let Some(slot) = slot {
            let edge = &mut self.slots[slot as usize].edge;
            debug_assert!(edge.key == key, "a lookup used after the store changed");
            update(edge);
            if !edge.is_complete() {
                return Ok(Upsert::Stored { new: false });
            }
            complete(edge);
            self.remove_hashed(slot, hash);
            return Ok(Upsert::Completed { new: false });
        }

        // A new edge is updated in its slot, not moved there (an edge is a few hundred bytes);
        // with no room, in the scratch edge: it may still complete on first sight (database
        // calls) and be recorded, and is otherwise refused.
        let has_room = self.index.len() < self.max_items;
        if !has_room && !may_complete_alone {
            return Err(StoreError::Full);
        }
        let slot = has_room.then(|| self.allocate(expires_at));
        let edge = match slot {
            Some(slot) => &mut self.slots[slot as usize].edge,
            None => &mut self.scratch,
        };
        edge.reset(key);
        update(edge);
        if edge.is_complete() {
            complete(edge);
            if let Some(slot) = slot {
                self.unlink(slot);
            }
            return Ok(Upsert::Completed { new: true });
        }
        let Some(slot) = slot else {
            return Err(StoreError::Full);
        };
        let (hasher, slots) = (&self.hasher, &self.slots);
        let indexed = Indexed {
            fingerprint: fingerprint(hash),
            slot,
        };
        self.index.insert_unique(hash, indexed, |e| {
            hasher.hash_one(slots[e.slot as usize].edge.key)
        });
        Ok(Upsert::Stored { new: true })
    }

    /// Removes the edge of `key` if it waits for a span of `side` (its one side is the other
    /// one); returns whether it did.
    pub fn remove_waiting_for(&mut self, key: &EdgeKey, side: Side) -> bool {
        let Some(slot) = self.lookup(*key).slot else {
            return false;
        };
        let edge = &self.slots[slot as usize].edge;
        // As Tempo's getEdgeSide: an edge with a server service is a server side.
        let waiting_side = match edge.server_service.is_empty() {
            true => Side::Client,
            false => Side::Server,
        };
        if edge.is_complete() || waiting_side == side {
            return false;
        }
        self.remove(slot);
        true
    }

    /// Removes every edge whose time is up (oldest first), handing each to `expire`.
    pub fn expire(&mut self, now: u64, mut expire: impl FnMut(&mut Edge)) -> usize {
        let mut expired = 0;
        while self.head != NIL && self.slots[self.head as usize].expires_at <= now {
            let slot = self.head;
            expire(&mut self.slots[slot as usize].edge);
            self.remove(slot);
            expired += 1;
        }
        expired
    }

    /// Takes a free slot (or grows) and links it at the tail.
    fn allocate(&mut self, expires_at: u64) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let dims = self.scratch.dimensions.len();
                self.slots.push(Slot {
                    edge: Edge::new(dims),
                    expires_at: 0,
                    prev: NIL,
                    next: NIL,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let tail = self.tail;
        let entry = &mut self.slots[slot as usize];
        entry.expires_at = expires_at;
        entry.prev = tail;
        entry.next = NIL;
        if tail == NIL {
            self.head = slot;
        } else {
            self.slots[tail as usize].next = slot;
        }
        self.tail = slot;
        slot
    }

    /// Unlinks a slot, drops it from the index and returns it to the free list.
    fn remove(&mut self, slot: u32) {
        let hash = self.hasher.hash_one(self.slots[slot as usize].edge.key);
        self.remove_hashed(slot, hash);
    }

    /// [`Store::remove`] of a slot whose key hashes to `hash`.
    fn remove_hashed(&mut self, slot: u32, hash: u64) {
        // By slot, which names one edge: should a slot ever be linked but not indexed (a panic
        // between the two), removing it must not take another slot's entry for the same key.
        if let Ok(entry) = self.index.find_entry(hash, |e| e.slot == slot) {
            entry.remove();
        }
        self.unlink(slot);
    }

    /// Unlinks a slot from the arrival order and returns it to the free list (the index is
    /// the caller's).
    fn unlink(&mut self, slot: u32) {
        let (prev, next) = {
            let entry = &self.slots[slot as usize];
            (entry.prev, entry.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> EdgeKey {
        EdgeKey::new(&[n; 16], &[n; 8]).unwrap()
    }

    #[test]
    fn edges_expire_in_arrival_order_and_slots_are_reused() {
        let mut store = Store::new(10, 0);
        for (n, at) in [(1, 10), (2, 20), (3, 30)] {
            let r = store.upsert(key(n), at, true, |e| e.client_service.push('c'), |_| {});
            assert_eq!(r, Ok(Upsert::Stored { new: true }));
        }
        let mut seen = Vec::new();
        assert_eq!(store.expire(20, |e| seen.push(e.key)), 2);
        assert_eq!(seen, vec![key(1), key(2)]);
        assert_eq!(store.len(), 1);
        store
            .upsert(key(4), 40, true, |e| e.client_service.push('c'), |_| {})
            .unwrap();
        assert_eq!(store.slots.len(), 3, "a freed slot is reused");
    }

    #[test]
    fn completing_an_edge_removes_it() {
        let mut store = Store::new(10, 0);
        store
            .upsert(key(1), 10, true, |e| e.client_service.push('c'), |_| {})
            .unwrap();
        let mut completed = false;
        let r = store.upsert(
            key(1),
            10,
            true,
            |e| e.server_service.push('s'),
            |_| completed = true,
        );
        assert_eq!(r, Ok(Upsert::Completed { new: false }));
        assert!(completed);
        assert_eq!(store.len(), 0);
        assert_eq!(
            store.expire(u64::MAX, |_| panic!("nothing left to expire")),
            0
        );
    }

    #[test]
    fn an_edge_complete_on_first_sight_is_recorded_and_not_kept_full_or_not() {
        for max_items in [0, 1, 10] {
            let mut store = Store::new(max_items, 0);
            let mut completed = Vec::new();
            let both = |e: &mut Edge| {
                e.client_service.push('c');
                e.server_service.push('s');
            };
            let r = store.upsert(key(1), 10, true, both, |e| completed.push(e.key));
            assert_eq!(r, Ok(Upsert::Completed { new: true }), "{max_items}");
            assert_eq!(completed, vec![key(1)]);
            assert_eq!(store.len(), 0);
            assert_eq!(store.expire(u64::MAX, |_| panic!("nothing kept")), 0);
            if max_items > 0 {
                // The slot went back: the next edge reuses it.
                let r = store.upsert(key(2), 10, true, |e| e.client_service.push('c'), |_| {});
                assert_eq!(r, Ok(Upsert::Stored { new: true }));
                assert_eq!(store.slots.len(), 1, "{max_items}");
                let mut seen = Vec::new();
                assert_eq!(store.expire(10, |e| seen.push(e.key)), 1);
                assert_eq!(seen, vec![key(2)], "a reused slot holds only its new edge");
            }
        }
    }

    #[test]
    fn a_slot_left_behind_by_a_panic_expires_without_taking_another_s_entry() {
        let mut store = Store::new(10, 0);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.upsert(key(1), 10, true, |_| panic!("an update that fails"), |_| {});
        }));
        assert!(panicked.is_err());
        // The same key again: a slot of its own, found by the next span.
        let r = store.upsert(key(1), 20, true, |e| e.client_service.push('c'), |_| {});
        assert_eq!(r, Ok(Upsert::Stored { new: true }));
        assert_eq!(store.expire(15, |_| {}), 1, "the slot the panic left");
        let r = store.upsert(key(1), 20, true, |e| e.server_service.push('s'), |_| {});
        assert_eq!(r, Ok(Upsert::Completed { new: false }));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn a_full_store_refuses_new_edges_but_completes_known_ones() {
        let mut store = Store::new(1, 0);
        store
            .upsert(key(1), 10, true, |e| e.client_service.push('c'), |_| {})
            .unwrap();
        let r = store.upsert(key(2), 10, true, |e| e.client_service.push('c'), |_| {});
        assert_eq!(r, Err(StoreError::Full));
        assert!(store.refuses_new(&store.lookup(key(2))));
        assert!(!store.refuses_new(&store.lookup(key(1))), "its edge waits");
        let r = store.upsert(key(1), 10, true, |e| e.server_service.push('s'), |_| {});
        assert_eq!(r, Ok(Upsert::Completed { new: false }));
    }

    #[test]
    fn a_full_store_refuses_a_span_that_cannot_complete_alone_without_building_its_edge() {
        let mut store = Store::new(1, 0);
        store
            .upsert(key(1), 10, false, |e| e.client_service.push('c'), |_| {})
            .unwrap();
        let r = store.upsert(key(2), 10, false, |_| panic!("no edge to build"), |_| {});
        assert_eq!(r, Err(StoreError::Full));
        // A span that may complete alone is still tried, and recorded when it does.
        let mut completed = Vec::new();
        let both = |e: &mut Edge| {
            e.client_service.push('c');
            e.server_service.push('s');
        };
        let r = store.upsert(key(3), 10, true, both, |e| completed.push(e.key));
        assert_eq!(r, Ok(Upsert::Completed { new: true }));
        assert_eq!(completed, vec![key(3)]);
        // A known edge is still found and completed, whatever the hint.
        let r = store.upsert(key(1), 10, false, |e| e.server_service.push('s'), |_| {});
        assert_eq!(r, Ok(Upsert::Completed { new: false }));
    }

    /// The index keeps only slots and hash bits: as it grows (rehashing each entry from the key
    /// in its slot) and shrinks, every waiting key is found, and only those.
    #[test]
    fn every_waiting_edge_is_found_across_growth_and_removal() {
        let key_of = |n: u32| EdgeKey::new(&[7; 16], &n.to_le_bytes()).unwrap();
        let mut store = Store::new(10_000, 0);
        for n in 0..5_000 {
            let r = store.upsert(key_of(n), 10, true, |e| e.client_service.push('c'), |_| {});
            assert_eq!(r, Ok(Upsert::Stored { new: true }));
        }
        for n in (0..5_000).step_by(2) {
            store
                .upsert(key_of(n), 10, true, |e| e.server_service.push('s'), |_| {})
                .unwrap();
        }
        assert_eq!(store.len(), 2_500);
        for n in 0..6_000 {
            let waiting = n < 5_000 && n % 2 == 1;
            assert_eq!(store.lookup(key_of(n)).is_waiting(), waiting, "key {n}");
        }
    }
}
