//! The queue's files: append-only segments of records, each with an acknowledgement log beside
//! it. Synchronous and single-owner: [`super::writer`] runs it on its own thread.
//!
//! ```text
//! <dir>/0000000000000007.seg   "GGQSEG03" | segment id u64, then records:
//!                              crc u32 | len u32 | spans u32 | index u32 | payload
//!                              payload: tenant_len u8 | tenant | request ([`super::envelope`])
//! <dir>/0000000000000007.ack   12-byte entries: index u32 | state u32 | crc u32
//! ```
//! What a power cut or a full disk can leave, and why it cannot be misread
//! (`shared/storage-fault-model.md` lists the faults):
//! - A record's CRC-32 covers the segment id, its index in the segment, its length, its span
//!   count and its payload, so a zero-filled tail (delayed allocation), garbage, or a record
//!   of another segment never validates; zero lengths and span counts are invalid too. Reading
//!   stops at the first bad record; the tail is counted and cut off at start.
//! - Writes are positioned at the end of the last good record (entry): a partial write (ENOSPC)
//!   is overwritten by the next one and never shifts what follows. Ack entries are fixed-size
//!   and checksummed with the segment id: a torn or foreign entry is ignored, never read at the
//!   wrong offset, and an entry only counts for a record that itself validates.
//! - A segment starts all-or-nothing: its id is never used twice (not even after a failed
//!   start), a stub without a full header is removed.
//! - After a failed fsync nothing written since the last good one is trusted (the kernel may
//!   have dropped those pages, PostgreSQL's "fsyncgate"): that segment is sealed, and the
//!   records it held are written again elsewhere (`periodic`) or refused to their clients
//!   (`always`, before they heard OK).
//! - A segment that cannot be read at start is renamed `*.corrupt` and counted; the rest is
//!   delivered: never a crash loop. Segments of the first format are rewritten in this one
//!   (`queue/upgrade.rs`); those of the second (`GGQSEG02`, before tenants) are read as they
//!   are, their records belonging to the default tenant.
//!
//! Exports finish out of order (several run at once), which is why acknowledgements are per
//! record rather than a read offset. A segment is deleted once every record in it is done.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::files::{QueueDir, QueueFile};
use super::upgrade;
use crate::selfmetrics::QueueWriteOp;

const MAGIC: &[u8; 8] = b"GGQSEG03";
/// The second format: the same layout, payloads without a tenant.
const MAGIC_V2: &[u8; 8] = b"GGQSEG02";
const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: usize = 16;
const ACK_ENTRY: usize = 12;
/// Records up to this size are gathered and written with the rest of their group in one call.
const SMALL_RECORD: usize = 64 << 10;

/// When written records reach the disk itself, not only the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before a client hears OK (one fsync for every request waiting on it): survives a power
    /// loss.
    Always,
    /// Once a second: a process crash loses nothing, a power loss up to the last second.
    Periodic,
    /// Left to the kernel: a process crash loses nothing, a power loss what was not written back.
    Never,
}

/// What an acknowledgement entry says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckState {
    /// Handed to an exporter: after a restart it is sent again and counted as a possible
    /// duplicate.
    Sent = 1,
    /// Delivered, given up on (and counted), or written again elsewhere: never read again.
    Done = 2,
}

impl AckState {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(AckState::Sent),
            2 => Some(AckState::Done),
            _ => None,
        }
    }
}

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub index: u32,
    /// Where its header starts.
    offset: u64,
    len: u32,
}

/// A write that failed, and at which step.
#[derive(Debug, Clone, thiserror::Error)]
#[error("queue {op:?} failed: {source}")]
pub struct WriteError {
    pub op: QueueWriteOp,
    pub source: Arc<io::Error>,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// A record found at start that still has to be sent.
#[derive(Debug)]
pub struct Pending {
    pub location: Location,
    /// Its tenant (`None`: the default one), and where its request starts in the payload.
    pub tenant: Option<crate::tenants::TenantId>,
    pub request_start: usize,
    pub spans: usize,
    pub bytes: usize,
    /// It had been sent before the restart and may already have arrived.
    pub sent_before: bool,
}

/// What the start-up read found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub pending: Vec<Pending>,
    /// Segments without a valid header, or that could not be read: renamed `*.corrupt`.
    pub corrupt_segments: usize,
    /// Bytes after a bad or truncated record, which could not be read (cut off).
    pub unreadable_bytes: u64,
}

/// What readers (the exporters) need: the segments' files and where records written again
/// after a failed fsync went. Shared with the writer thread; held only for lookups.
#[derive(Default)]
pub struct ReadView {
    files: HashMap<u64, Arc<dyn QueueFile>>,
    moved: HashMap<(u64, u32), Location>,
}

impl ReadView {
    /// Where a record is now.
    fn resolve(&self, mut location: Location) -> Location {
        while let Some(next) = self.moved.get(&(location.segment, location.index)) {
            location = *next;
        }
        location
    }
}

/// Reads a record's payload back, checking it is the record that was written there.
pub fn read(view: &RwLock<ReadView>, location: &Location) -> io::Result<Bytes> {
    let (file, location) = {
        let view = view.read().unwrap_or_else(|e| e.into_inner());
        let location = view.resolve(*location);
        (view.files.get(&location.segment).cloned(), location)
    };
    let file = file.ok_or_else(|| io::Error::other("queue segment already deleted"))?;
    let mut buf = vec![0u8; RECORD_HEADER + location.len as usize];
    file.read_exact_at(&mut buf, location.offset)?;
    match parse_record_header(&buf[..RECORD_HEADER]) {
        Some(h)
            if h.len == location.len
                && h.index == location.index
                && h.crc == record_crc(location.segment, &h, &buf[RECORD_HEADER..]) =>
        {
            Ok(Bytes::from(buf).slice(RECORD_HEADER..))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "queued record changed on disk (checksum mismatch)",
        )),
    }
}

struct RecordHeader {
    crc: u32,
    len: u32,
    spans: u32,
    index: u32,
}

fn parse_record_header(b: &[u8]) -> Option<RecordHeader> {
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let header = RecordHeader {
        crc: word(0),
        len: word(4),
        spans: word(8),
        index: word(12),
    };
    (header.len > 0 && header.spans > 0).then_some(header)
}

fn record_crc(segment: u64, h: &RecordHeader, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment.to_le_bytes());
    crc.update(&h.index.to_le_bytes());
    crc.update(&h.len.to_le_bytes());
    crc.update(&h.spans.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

fn ack_entry(segment: u64, index: u32, state: AckState) -> [u8; ACK_ENTRY] {
    let mut entry = [0u8; ACK_ENTRY];
    entry[0..4].copy_from_slice(&index.to_le_bytes());
    entry[4..8].copy_from_slice(&(state as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&segment.to_le_bytes());
    crc.update(&entry[0..8]);
    entry[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    entry
}

/// Each record's latest state from an ack log; entries that do not validate are ignored.
fn parse_acks(segment: u64, bytes: &[u8]) -> HashMap<u32, AckState> {
    let mut states = HashMap::new();
    for entry in bytes.chunks_exact(ACK_ENTRY) {
        let index = u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes"));
        let state = u32::from_le_bytes(entry[4..8].try_into().expect("4 bytes"));
        let Some(state) = AckState::from_u32(state) else {
            continue;
        };
        if ack_entry(segment, index, state) != *entry {
            continue;
        }
        let latest = states.entry(index).or_insert(state);
        *latest = (*latest).max(state);
    }
    states
}

fn segment_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

fn ack_name(id: u64) -> String {
    format!("{id:016x}.ack")
}

/// The id in a queue file's name (`*.seg`, `*.ack`, `*.corrupt`), if it is one.
fn id_of(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    (stem.len() == 16)
        .then(|| u64::from_str_radix(stem, 16).ok())
        .flatten()
        .map(|id| (id, ext))
}

struct Segment {
    file: Arc<dyn QueueFile>,
    acks: Arc<dyn QueueFile>,
    /// End of the last good ack entry: the next one is written there.
    ack_len: u64,
    /// End of the last good record: the next one is written there.
    len: u64,
    records: u32,
    /// Records not yet done.
    outstanding: usize,
    /// Written since the last fsync.
    dirty: bool,
}

impl Segment {
    /// Appends ack entries for these records at the end of the last good one; a failed write
    /// moves nothing (the next entries land there).
    fn append_acks(
        &mut self,
        id: u64,
        indices: impl IntoIterator<Item = u32>,
        state: AckState,
    ) -> io::Result<()> {
        let entries: Vec<u8> = indices
            .into_iter()
            .flat_map(|i| ack_entry(id, i, state))
            .collect();
        self.acks.write_all_at(&entries, self.ack_len)?;
        self.ack_len += entries.len() as u64;
        Ok(())
    }
}

/// A record written but not yet synced (`periodic`): kept so a failed fsync can write it again.
type Unsynced = BTreeMap<u32, (Bytes, usize)>;

pub struct DiskLog {
    dir: Box<dyn QueueDir>,
    segments: BTreeMap<u64, Segment>,
    active: Option<u64>,
    next_id: u64,
    segment_bytes: u64,
    fsync: Fsync,
    /// Entries created or removed since the directory's last fsync.
    dir_dirty: bool,
    unsynced: BTreeMap<u64, Unsynced>,
    /// Records of a segment whose fsync failed, still to be written elsewhere.
    to_rewrite: BTreeMap<(u64, u32), (Bytes, usize)>,
    /// Their old copies, let go (marked done, their segment deleted once empty) only once the
    /// new copies are synced.
    to_release: Vec<(u64, u32)>,
    view: Arc<RwLock<ReadView>>,
    errors: Vec<WriteError>,
    /// Inside [`DiskLog::append_group`]: small records are gathered and written in one call.
    staging: bool,
    staged: Option<Staged>,
    /// Records of the group whose gathered write failed, by their place in the group.
    staged_failures: Vec<(usize, WriteError)>,
}

/// Records gathered for one write, contiguous in one segment.
struct Staged {
    segment: u64,
    offset: u64,
    bytes: Vec<u8>,
    /// Their places in the group, and their indices in the segment.
    slots: Vec<usize>,
    indices: Vec<u32>,
}

impl DiskLog {
    /// Opens the queue in `dir` and reads back what it holds. Only a directory that cannot be
    /// listed fails the start; a segment that cannot be read is quarantined.
    pub fn open(
        dir: Box<dyn QueueDir>,
        segment_bytes: u64,
        fsync: Fsync,
    ) -> io::Result<(Self, Recovery)> {
        let names = dir.names()?;
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|n| id_of(n))
            .filter(|(_, ext)| *ext == "seg")
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        // Never reuse an id any file still carries, corrupt ones included.
        let next_id = names
            .iter()
            .filter_map(|n| id_of(n))
            .map(|(id, _)| id + 1)
            .max()
            .unwrap_or(0);
        let mut log = DiskLog {
            dir,
            segments: BTreeMap::new(),
            active: None,
            next_id,
            segment_bytes,
            fsync,
            dir_dirty: false,
            unsynced: BTreeMap::new(),
            to_rewrite: BTreeMap::new(),
            to_release: Vec::new(),
            view: Arc::default(),
            errors: Vec::new(),
            staging: false,
            staged: None,
            staged_failures: Vec::new(),
        };
        let mut recovery = Recovery::default();
        let mut old_format = Vec::new();
        for id in ids {
            if log.is_old_format(id) {
                old_format.push(id);
                continue;
            }
            if let Err(e) = log.recover_segment(id, &mut recovery) {
                let name = segment_name(id);
                tracing::error!(segment = name, error = %e, "queue segment cannot be read; renamed *.corrupt and skipped, the other segments are delivered");
                if let Err(e) = log.dir.rename(&name, &format!("{id:016x}.corrupt")) {
                    tracing::error!(segment = name, error = %e, "cannot rename the unreadable queue segment");
                }
                let _ = log.dir.remove(&ack_name(id));
                log.segments.remove(&id);
                recovery.corrupt_segments += 1;
            }
        }
        let kept_old = log.upgrade(&old_format, &mut recovery);
        // Ack logs whose segment is gone (removed between the two deletions).
        for name in &names {
            if let Some((id, "ack")) = id_of(name) {
                if !log.segments.contains_key(&id) && !kept_old.contains(&id) {
                    let _ = log.dir.remove(name);
                }
            }
        }
        log.publish();
        Ok((log, recovery))
    }

    /// Whether segment `id` is of the first format (read by [`upgrade`]).
    fn is_old_format(&self, id: u64) -> bool {
        let mut magic = [0u8; 8];
        self.dir
            .open(&segment_name(id))
            .and_then(|f| f.read_exact_at(&mut magic, 0))
            .is_ok_and(|()| &magic == upgrade::MAGIC_V1)
    }

    /// Rewrites what segments of the first format still hold into the current one, synced,
    /// then deletes them; they join the recovered records. A segment that cannot be read or
    /// rewritten stays as it is for the next start (logged); its id is returned.
    fn upgrade(&mut self, ids: &[u64], recovery: &mut Recovery) -> Vec<u64> {
        let mut kept = Vec::new();
        for &id in ids {
            let name = segment_name(id);
            let read = self.dir.open(&name).and_then(|segment| {
                let acks = self.dir.open(&ack_name(id)).ok();
                upgrade::read_v1(segment.as_ref(), acks.as_deref())
            });
            let (records, unreadable) = match read {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(segment = name, error = %e, "cannot read a queue segment of the first format; left for the next start");
                    kept.push(id);
                    continue;
                }
            };
            let items: Vec<(Bytes, usize)> = records
                .iter()
                .map(|r| (super::envelope::wrap(None, &r.payload), r.spans))
                .collect();
            // Its copies go to segments of their own, so that a failure can drop them whole.
            self.seal();
            let first_copy_segment = self.next_id;
            let results = self.append_group(&items);
            let copies: Vec<Location> = results.iter().filter_map(|r| r.clone().ok()).collect();
            let written = match results.into_iter().find_map(Result::err) {
                Some(e) => Err(e),
                None => self.sync_all(),
            };
            if let Err(e) = written {
                // The old segment is read again next time: the copies made so far go, so
                // nothing is delivered twice.
                tracing::error!(segment = name, error = %e, "cannot rewrite a queue segment of the first format; left for the next start");
                self.drop_segments_from(first_copy_segment);
                kept.push(id);
                continue;
            }
            let locations = copies;
            let sent: Vec<Location> = locations
                .iter()
                .zip(&records)
                .filter(|(_, r)| r.sent_before)
                .map(|(l, _)| *l)
                .collect();
            self.mark(&sent, AckState::Sent);
            for (location, record) in locations.into_iter().zip(records) {
                recovery.pending.push(Pending {
                    location,
                    tenant: None,
                    request_start: 1,
                    spans: record.spans,
                    bytes: record.payload.len(),
                    sent_before: record.sent_before,
                });
            }
            recovery.unreadable_bytes += unreadable;
            tracing::info!(
                segment = name,
                requests = items.len(),
                "queue segment of the first format rewritten in the current one"
            );
            // The segment first: its acks go only with it, or a later start would send again
            // what they marked done.
            match self.dir.remove(&name) {
                Ok(()) => {
                    let _ = self.dir.remove(&ack_name(id));
                }
                Err(e) => {
                    tracing::error!(segment = name, error = %e, "cannot delete a queue segment of the first format after rewriting it; if it stays, the next start sends its records again")
                }
            }
            self.dir_dirty = true;
        }
        // The rewritten records go on with the next segment, as after any start.
        self.seal();
        kept
    }

    /// Deletes segment `first` and every later one, with whatever refers to them.
    fn drop_segments_from(&mut self, first: u64) {
        self.active = None;
        let ids: Vec<u64> = self.segments.range(first..).map(|(id, _)| *id).collect();
        for id in ids {
            self.remove_segment(id);
        }
        self.to_rewrite.retain(|(id, _), _| *id < first);
        self.to_release.retain(|(id, _)| *id < first);
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .moved
            .retain(|(id, _), _| *id < first);
    }

    fn recover_segment(&mut self, id: u64, recovery: &mut Recovery) -> io::Result<()> {
        let name = segment_name(id);
        let file = self.dir.open(&name)?;
        let size = file.size()?;
        if size < SEGMENT_HEADER {
            // A start that did not finish: no record can be in it.
            self.dir.remove(&name)?;
            let _ = self.dir.remove(&ack_name(id));
            return Ok(());
        }
        let mut header = [0u8; SEGMENT_HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        let enveloped = &header[..8] == MAGIC;
        if !(enveloped || &header[..8] == MAGIC_V2) || header[8..] != id.to_le_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a queue segment of this version (bad header)",
            ));
        }
        let (acks, ack_bytes) = match self.dir.open(&ack_name(id)) {
            Ok(acks) => {
                let len = acks.size()?;
                let mut bytes = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
                acks.read_exact_at(&mut bytes, 0)?;
                (acks, bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (self.dir.create(&ack_name(id))?, Vec::new())
            }
            Err(e) => return Err(e),
        };
        let states = parse_acks(id, &ack_bytes);
        // A torn last entry is cut; the next entry is written where it started.
        let ack_len = (ack_bytes.len() - ack_bytes.len() % ACK_ENTRY) as u64;
        if ack_len < ack_bytes.len() as u64 {
            let _ = acks.set_len(ack_len);
        }

        let mut offset = SEGMENT_HEADER;
        let mut index = 0u32;
        let mut outstanding = 0;
        let mut header = [0u8; RECORD_HEADER];
        let mut payload = Vec::new();
        while offset + RECORD_HEADER as u64 <= size {
            file.read_exact_at(&mut header, offset)?;
            let Some(h) = parse_record_header(&header) else {
                break;
            };
            let end = offset + RECORD_HEADER as u64 + u64::from(h.len);
            if h.index != index || end > size {
                break;
            }
            payload.resize(h.len as usize, 0);
            file.read_exact_at(&mut payload, offset + RECORD_HEADER as u64)?;
            if h.crc != record_crc(id, &h, &payload) {
                break;
            }
            let state = states.get(&index).copied();
            let (tenant, request_start) = match enveloped {
                true => {
                    match super::envelope::unwrap(&payload) {
                        Some(found) => found,
                        // Intact (its checksum holds) but not a tenant this graphgen accepts: that
                        // record alone cannot be sent; the ones after it are still read.
                        None => {
                            if state != Some(AckState::Done) {
                                tracing::error!(segment = name, index, "a queued record names no valid tenant; it is skipped and counted");
                                recovery.unreadable_bytes += u64::from(h.len);
                            }
                            offset = end;
                            index += 1;
                            continue;
                        }
                    }
                }
                false => (None, 0),
            };
            if state != Some(AckState::Done) {
                outstanding += 1;
                recovery.pending.push(Pending {
                    location: Location {
                        segment: id,
                        index,
                        offset,
                        len: h.len,
                    },
                    tenant,
                    request_start,
                    spans: h.spans as usize,
                    bytes: h.len as usize - request_start,
                    sent_before: state == Some(AckState::Sent),
                });
            }
            offset = end;
            index += 1;
        }
        if offset < size {
            let lost = size - offset;
            tracing::error!(segment = name, bytes = lost, "queue segment ends in a bad or truncated record (a torn write or a power cut); that tail is cut off and counted");
            recovery.unreadable_bytes += lost;
            // Counted once: the next start does not find it again.
            let _ = file.set_len(offset);
        }
        if outstanding == 0 {
            // Nothing left to send; if it cannot be deleted now, the next start tries again.
            if let Err(e) = self.dir.remove(&name) {
                tracing::warn!(segment = name, error = %e, "cannot delete a finished queue segment");
            }
            let _ = self.dir.remove(&ack_name(id));
            self.dir_dirty = true;
            return Ok(());
        }
        self.segments.insert(
            id,
            Segment {
                file,
                acks,
                ack_len,
                len: offset,
                records: index,
                outstanding,
                dirty: false,
            },
        );
        Ok(())
    }

    /// The readers' view of the files.
    pub fn view(&self) -> Arc<RwLock<ReadView>> {
        self.view.clone()
    }

    fn publish(&self) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        view.files = self
            .segments
            .iter()
            .map(|(id, s)| (*id, s.file.clone()))
            .collect();
    }

    fn fail(&mut self, op: QueueWriteOp, e: io::Error) -> WriteError {
        let error = WriteError {
            op,
            source: Arc::new(e),
        };
        self.errors.push(error.clone());
        error
    }

    /// The write errors since the last call, for counting and logging.
    pub fn take_errors(&mut self) -> Vec<WriteError> {
        std::mem::take(&mut self.errors)
    }

    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends requests together: with `Fsync::Always` one fsync covers them all (group
    /// commit), and none is reported written unless it is on the disk.
    pub fn append_group(&mut self, items: &[(Bytes, usize)]) -> Vec<Result<Location, WriteError>> {
        // Each touched segment's state before the group, to undo it if the fsync fails.
        let mut before: BTreeMap<u64, (u64, u32, usize)> = BTreeMap::new();
        let mut results = Vec::with_capacity(items.len());
        self.staging = true;
        for (slot, (payload, spans)) in items.iter().enumerate() {
            results.push(self.append_one(payload, *spans, slot, &mut before));
        }
        self.flush_staged();
        self.staging = false;
        for (slot, error) in std::mem::take(&mut self.staged_failures) {
            results[slot] = Err(error);
        }
        if self.fsync != Fsync::Always || !results.iter().any(|r| r.is_ok()) {
            return results;
        }
        if let Err(error) = self.sync_dirty() {
            for (id, (len, records, outstanding)) in before {
                self.undo(id, len, records, outstanding);
            }
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        results
    }

    /// Writes the gathered records. If that fails they are taken back (their clients are
    /// refused) and the next record goes where they would have started.
    fn flush_staged(&mut self) {
        let Some(staged) = self.staged.take() else {
            return;
        };
        let segment = self
            .segments
            .get_mut(&staged.segment)
            .expect("a segment with staged records stays until they are written");
        let Err(e) = segment.file.write_all_at(&staged.bytes, staged.offset) else {
            return;
        };
        let n = staged.slots.len();
        let kept = (segment.records - n as u32, segment.outstanding - n);
        let cut = self.take_back(staged.segment, staged.offset, kept.0, kept.1);
        if let Some(unsynced) = self.unsynced.get_mut(&staged.segment) {
            for index in &staged.indices {
                unsynced.remove(index);
            }
        }
        let error = self.fail(QueueWriteOp::append, e);
        for slot in staged.slots {
            self.staged_failures.push((slot, error.clone()));
        }
        if !cut && self.active == Some(staged.segment) {
            self.seal();
        }
    }

    fn append_one(
        &mut self,
        payload: &Bytes,
        spans: usize,
        slot: usize,
        before: &mut BTreeMap<u64, (u64, u32, usize)>,
    ) -> Result<Location, WriteError> {
        let (len, spans32) = match (u32::try_from(payload.len()), u32::try_from(spans)) {
            (Ok(len), Ok(spans)) if len > 0 && spans > 0 => (len, spans),
            _ => {
                return Err(self.fail(
                    QueueWriteOp::append,
                    io::Error::new(io::ErrorKind::InvalidInput, "record of 0 or over 4 GiB"),
                ))
            }
        };
        let record = (RECORD_HEADER + payload.len()) as u64;
        let stage = self.staging && payload.len() <= SMALL_RECORD;
        if !stage {
            self.flush_staged();
        }
        if let Some(id) = self.active {
            let segment = &self.segments[&id];
            if segment.records > 0 && segment.len + record > self.segment_bytes {
                self.flush_staged();
                self.seal();
            }
        }
        let id = match self.active {
            Some(id) => id,
            None => {
                self.flush_staged();
                self.start_segment()?
            }
        };
        let segment = self.segments.get_mut(&id).expect("the active segment");
        before
            .entry(id)
            .or_insert((segment.len, segment.records, segment.outstanding));
        let h = RecordHeader {
            crc: 0,
            len,
            spans: spans32,
            index: segment.records,
        };
        let mut header = [0u8; RECORD_HEADER];
        header[0..4].copy_from_slice(&record_crc(id, &h, payload).to_le_bytes());
        header[4..8].copy_from_slice(&len.to_le_bytes());
        header[8..12].copy_from_slice(&spans32.to_le_bytes());
        header[12..16].copy_from_slice(&h.index.to_le_bytes());
        let offset = segment.len;
        if stage {
            // Gathered: written with the rest of the group (small records, most of them).
            let staged = self.staged.get_or_insert_with(|| Staged {
                segment: id,
                offset,
                bytes: Vec::new(),
                slots: Vec::new(),
                indices: Vec::new(),
            });
            debug_assert_eq!(staged.offset + staged.bytes.len() as u64, offset);
            staged.bytes.extend_from_slice(&header);
            staged.bytes.extend_from_slice(payload);
            staged.slots.push(slot);
            staged.indices.push(h.index);
        }
        // A large record is written at once, not copied.
        let written = if stage {
            Ok(())
        } else {
            segment.file.write_all_at(&header, offset).and_then(|()| {
                segment
                    .file
                    .write_all_at(payload, offset + RECORD_HEADER as u64)
            })
        };
        if let Err(e) = written {
            // The next record is written at the same offset, over whatever part of this one
            // landed; cutting it off keeps the file short on a full disk.
            if segment.file.set_len(offset).is_err() {
                self.seal();
            }
            return Err(self.fail(QueueWriteOp::append, e));
        }
        segment.len += record;
        segment.records += 1;
        segment.outstanding += 1;
        segment.dirty = true;
        if self.fsync == Fsync::Periodic {
            self.unsynced
                .entry(id)
                .or_default()
                .insert(h.index, (payload.clone(), spans));
        }
        Ok(Location {
            segment: id,
            index: h.index,
            offset,
            len,
        })
    }

    /// A new segment, all or nothing; its id is used up even if this fails.
    fn start_segment(&mut self) -> Result<u64, WriteError> {
        let id = self.next_id;
        self.next_id += 1;
        let name = segment_name(id);
        let file = self
            .dir
            .create_new(&name)
            .map_err(|e| self.fail(QueueWriteOp::segment_start, e))?;
        self.dir_dirty = true;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&id.to_le_bytes());
        let acks = file
            .write_all_at(&header, 0)
            .and_then(|()| self.dir.create(&ack_name(id)));
        let acks = match acks {
            Ok(acks) => acks,
            Err(e) => {
                let _ = self.dir.remove(&name);
                let _ = self.dir.remove(&ack_name(id));
                return Err(self.fail(QueueWriteOp::segment_start, e));
            }
        };
        self.segments.insert(
            id,
            Segment {
                file,
                acks,
                ack_len: 0,
                len: SEGMENT_HEADER,
                records: 0,
                outstanding: 0,
                dirty: true,
            },
        );
        self.active = Some(id);
        self.publish();
        Ok(id)
    }

    /// Stops writing to the active segment; deleted at once if nothing in it is outstanding.
    fn seal(&mut self) {
        if let Some(id) = self.active.take() {
            self.remove_if_finished(id);
        }
    }

    /// Takes the records of `id` from index `records` on back out (their clients are
    /// refused): the file is cut at `len`, or, if it cannot be, they are marked done so a
    /// restart does not send them beside their clients' retries (best effort; failing costs a
    /// duplicate). Whether the file was cut.
    fn take_back(&mut self, id: u64, len: u64, records: u32, outstanding: usize) -> bool {
        let Some(segment) = self.segments.get_mut(&id) else {
            return true;
        };
        let cut = segment.records == records || segment.file.set_len(len).is_ok();
        if !cut {
            let _ = segment.append_acks(id, records..segment.records, AckState::Done);
        }
        segment.len = len;
        segment.records = records;
        segment.outstanding = outstanding;
        cut
    }

    /// After a failed fsync: the group's records are taken back out of `id` and it is sealed.
    fn undo(&mut self, id: u64, len: u64, records: u32, outstanding: usize) {
        self.take_back(id, len, records, outstanding);
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.dirty = false;
        }
        if self.active == Some(id) {
            self.active = None;
        }
        self.remove_if_finished(id);
    }

    /// Deletes segment `id` if it is sealed and nothing in it is outstanding.
    fn remove_if_finished(&mut self, id: u64) {
        let finished = self.segments.get(&id).is_some_and(|s| s.outstanding == 0);
        if finished && self.active != Some(id) {
            self.remove_segment(id);
        }
    }

    /// Records what became of these records. `Done` ones are never read again; a segment with
    /// nothing left is deleted. A failed write costs a duplicate after a restart, never a
    /// record: entries are positioned and checksummed.
    pub fn mark(&mut self, locations: &[Location], state: AckState) {
        let resolved: Vec<Location> = {
            let view = self.view.read().unwrap_or_else(|e| e.into_inner());
            locations.iter().map(|l| view.resolve(*l)).collect()
        };
        let mut by_segment: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for l in &resolved {
            by_segment.entry(l.segment).or_default().push(l.index);
        }
        for (id, indices) in by_segment {
            let Some(segment) = self.segments.get_mut(&id) else {
                continue;
            };
            if let Err(e) = segment.append_acks(id, indices, state) {
                self.fail(QueueWriteOp::ack, e);
            }
        }
        if state != AckState::Done {
            return;
        }
        if locations.iter().zip(&resolved).any(|(a, b)| a != b) {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            for l in locations {
                let mut key = (l.segment, l.index);
                while let Some(next) = view.moved.remove(&key) {
                    key = (next.segment, next.index);
                }
            }
        }
        for l in resolved {
            self.to_rewrite.remove(&(l.segment, l.index));
            if let Some(unsynced) = self.unsynced.get_mut(&l.segment) {
                unsynced.remove(&l.index);
            }
            if let Some(segment) = self.segments.get_mut(&l.segment) {
                segment.outstanding = segment.outstanding.saturating_sub(1);
                self.remove_if_finished(l.segment);
            }
        }
    }

    fn remove_segment(&mut self, id: u64) {
        self.segments.remove(&id);
        self.unsynced.remove(&id);
        self.publish();
        for name in [segment_name(id), ack_name(id)] {
            if let Err(e) = self.dir.remove(&name) {
                self.fail(QueueWriteOp::remove, e);
            }
        }
        self.dir_dirty = true;
    }

    /// fsyncs every segment written since its last fsync (sealed ones too) and the directory.
    fn sync_dirty(&mut self) -> Result<(), WriteError> {
        let dirty: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(id, _)| *id)
            .collect();
        let mut first = None;
        for id in dirty {
            let segment = self.segments.get_mut(&id).expect("listed");
            match segment.file.sync_data() {
                Ok(()) => {
                    segment.dirty = false;
                    self.unsynced.remove(&id);
                }
                Err(e) => {
                    let error = self.fail(QueueWriteOp::fsync, e);
                    first.get_or_insert(error);
                    // Even a segment header can be in the pages a failed fsync dropped: nothing
                    // more goes into this file.
                    self.rewrite_elsewhere(id);
                }
            }
        }
        if first.is_none() && self.dir_dirty && self.fsync != Fsync::Never {
            match self.dir.sync() {
                Ok(()) => self.dir_dirty = false,
                Err(e) => {
                    let error = self.fail(QueueWriteOp::fsync, e);
                    first.get_or_insert(error);
                }
            }
        }
        match first {
            Some(error) => Err(error),
            None => {
                self.release_old_copies();
                Ok(())
            }
        }
    }

    /// The new copies of rewritten records are synced: their old copies can go.
    fn release_old_copies(&mut self) {
        for (id, index) in std::mem::take(&mut self.to_release) {
            let Some(old) = self.segments.get_mut(&id) else {
                continue;
            };
            let _ = old.append_acks(id, [index], AckState::Done);
            old.outstanding = old.outstanding.saturating_sub(1);
            self.remove_if_finished(id);
        }
    }

    /// fsyncgate: what was written to `id` since its last good fsync may never reach the
    /// disk, and a later fsync could say it did. Seal it and write those records again.
    fn rewrite_elsewhere(&mut self, id: u64) {
        if self.active == Some(id) {
            self.active = None;
        }
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.dirty = false;
        }
        for (index, record) in self.unsynced.remove(&id).unwrap_or_default() {
            self.to_rewrite.insert((id, index), record);
        }
        self.remove_if_finished(id);
    }

    /// Whether an fsync has anything to do (so a successful one proves the disk works).
    pub fn needs_sync(&self) -> bool {
        self.dir_dirty
            || !self.to_rewrite.is_empty()
            || !self.to_release.is_empty()
            || self.segments.values().any(|s| s.dirty)
    }

    /// Writes again the records of segments whose fsync failed; each moves once written.
    fn retry_rewrites(&mut self) {
        let records = std::mem::take(&mut self.to_rewrite);
        let mut before = BTreeMap::new();
        let mut records = records.into_iter();
        for ((id, index), (payload, spans)) in records.by_ref() {
            match self.append_one(&payload, spans, usize::MAX, &mut before) {
                Ok(new) => {
                    self.view
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .moved
                        .insert((id, index), new);
                    self.to_release.push((id, index));
                }
                Err(_) => {
                    self.to_rewrite.insert((id, index), (payload, spans));
                    break;
                }
            }
        }
        self.to_rewrite.extend(records);
    }

    /// The periodic fsync (and the last one at shutdown): every segment written since its
    /// last fsync, sealed ones included, and the directory. Records of a segment whose fsync
    /// fails are written again to a new one, which is synced at once.
    pub fn sync_all(&mut self) -> Result<(), WriteError> {
        let mut result = Ok(());
        for _attempt in 0..2 {
            self.retry_rewrites();
            result = self.sync_dirty();
            if result.is_ok() && self.to_rewrite.is_empty() {
                return Ok(());
            }
        }
        match result {
            Err(e) => Err(e),
            Ok(()) => Err(self.errors.last().cloned().unwrap_or(WriteError {
                op: QueueWriteOp::append,
                source: Arc::new(io::Error::other("records still to be written again")),
            })),
        }
    }

    /// Whether a write would succeed now: a small file is written, synced and removed. Used
    /// while the queue is refusing requests after a fault, to say when it can take them again.
    pub fn probe(&mut self) -> bool {
        const PROBE: &str = "probe";
        let written = self.dir.create(PROBE).and_then(|f| {
            f.write_all_at(&[0u8; 4096], 0)?;
            if self.fsync != Fsync::Never {
                f.sync_data()?;
                self.dir.sync()?;
            }
            Ok(())
        });
        let _ = self.dir.remove(PROBE);
        written.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::files::OsDir;
    use super::*;
    use std::path::{Path, PathBuf};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("graphgen-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, segment_bytes: u64, fsync: Fsync) -> (DiskLog, Recovery) {
        DiskLog::open(Box::new(OsDir::open(dir).unwrap()), segment_bytes, fsync).unwrap()
    }

    fn append(log: &mut DiskLog, payload: &[u8], spans: usize) -> Location {
        log.append_group(&[(super::super::envelope::wrap(None, payload), spans)])
            .pop()
            .unwrap()
            .unwrap()
    }

    /// Each pending record's span count and whether it had been sent before.
    fn spans_and_sent(recovery: &Recovery) -> Vec<(usize, bool)> {
        recovery
            .pending
            .iter()
            .map(|p| (p.spans, p.sent_before))
            .collect()
    }

    fn payloads(recovery: &Recovery, log: &DiskLog) -> Vec<Vec<u8>> {
        let view = log.view();
        recovery
            .pending
            .iter()
            .map(|p| read(&view, &p.location).unwrap()[p.request_start..].to_vec())
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_until_done_and_sent_ones_are_flagged() {
        let dir = temp_dir("reopen");
        let (mut log, recovery) = open(&dir, 64, Fsync::Never);
        assert!(recovery.pending.is_empty());
        // 64-byte segments: every record starts a new one.
        let locations: Vec<Location> = (0..4u8)
            .map(|i| append(&mut log, &[i; 40], i as usize + 1))
            .collect();
        assert_eq!(log.segment_count(), 4);
        log.mark(&locations[1..3], AckState::Sent);
        log.mark(&locations[2..3], AckState::Done);
        assert_eq!(
            log.segment_count(),
            3,
            "a finished sealed segment is deleted"
        );
        drop(log);

        let (log, recovery) = open(&dir, 64, Fsync::Never);
        assert_eq!(
            spans_and_sent(&recovery),
            vec![(1, false), (2, true), (4, false)]
        );
        assert_eq!(
            payloads(&recovery, &log),
            vec![vec![0; 40], vec![1; 40], vec![3; 40]]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_queue_directory_is_used_by_one_process_at_a_time() {
        let dir = temp_dir("lock");
        let first = OsDir::open(&dir).unwrap();
        let err = OsDir::open(&dir).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
        drop(first);
        OsDir::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_garbled_or_unreadable_segment_is_cut_or_quarantined_never_fatal() {
        let dir = temp_dir("corrupt");
        let (mut log, _) = open(&dir, 1 << 20, Fsync::Always);
        for i in 0..3u8 {
            append(&mut log, &[i; 100], 1);
        }
        let first = log.active.unwrap();
        log.seal();
        append(&mut log, &[9; 100], 1);
        drop(log);
        // Cut the first segment in the middle of its last record…
        let path = dir.join(segment_name(first));
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_len(len - 50).unwrap();
        // …put a segment of garbage beside it, and one that cannot be read at all.
        std::fs::write(dir.join(segment_name(99)), b"not a segment at all").unwrap();
        std::fs::create_dir(dir.join(segment_name(98))).unwrap();

        let (log, recovery) = open(&dir, 1 << 20, Fsync::Always);
        assert_eq!(recovery.corrupt_segments, 2);
        // The records hold the 1-byte envelope of the default tenant before their 100 bytes.
        assert_eq!(
            recovery.unreadable_bytes,
            (RECORD_HEADER + 1 + 100 - 50) as u64
        );
        assert_eq!(
            payloads(&recovery, &log),
            vec![vec![0; 100], vec![1; 100], vec![9; 100]]
        );
        assert!(dir.join(format!("{:016x}.corrupt", 99)).exists());
        assert!(dir.join(format!("{:016x}.corrupt", 98)).exists());
        assert!(log.next_id > 99, "no id of a quarantined file is reused");
        drop(log);
        // The cut tail was counted once.
        let (log, recovery) = open(&dir, 1 << 20, Fsync::Always);
        assert_eq!(
            (recovery.unreadable_bytes, recovery.corrupt_segments),
            (0, 0)
        );

        // A bad checksum ends the segment's records too.
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SEGMENT_HEADER as usize + RECORD_HEADER + 5] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (log, recovery) = open(&dir, 1 << 20, Fsync::Always);
        assert_eq!(payloads(&recovery, &log), vec![vec![9; 100]]);
        assert!(recovery.unreadable_bytes > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A record whose checksum holds but whose tenant this graphgen does not accept is skipped
    /// and counted; the records after it are delivered, not cut off as a torn tail.
    #[test]
    fn a_record_with_an_unreadable_tenant_is_skipped_not_the_rest() {
        let dir = temp_dir("bad-envelope");
        let (mut log, _) = open(&dir, 1 << 20, Fsync::Never);
        append(&mut log, &[1; 10], 1);
        let bad = Bytes::from(vec![3, b'a', b'/', b'b', 9, 9]);
        log.append_group(&[(bad.clone(), 1)])
            .pop()
            .unwrap()
            .unwrap();
        append(&mut log, &[2; 10], 1);
        drop(log);
        let (log, recovery) = open(&dir, 1 << 20, Fsync::Never);
        assert_eq!(payloads(&recovery, &log), vec![vec![1; 10], vec![2; 10]]);
        assert_eq!(recovery.unreadable_bytes, bad.len() as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zeros_and_foreign_bytes_never_validate_as_records_or_acks() {
        let header = |crc: u32, len: u32, spans: u32, index: u32| {
            let mut h = [0u8; RECORD_HEADER];
            for (i, v) in [crc, len, spans, index].into_iter().enumerate() {
                h[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            h
        };
        assert!(parse_record_header(&[0; RECORD_HEADER]).is_none());
        // A record copied from segment 1 does not validate in segment 2.
        let h = parse_record_header(&header(0, 3, 1, 0)).unwrap();
        assert_ne!(record_crc(1, &h, b"abc"), record_crc(2, &h, b"abc"));
        assert!(parse_acks(7, &[0; ACK_ENTRY * 4]).is_empty());
        let entry = ack_entry(7, 3, AckState::Done);
        assert_eq!(parse_acks(7, &entry).get(&3), Some(&AckState::Done));
        assert!(parse_acks(8, &entry).is_empty(), "another segment's entry");
    }

    #[test]
    fn a_torn_ack_entry_is_cut_and_the_next_one_lands_aligned() {
        let dir = temp_dir("acks");
        let (mut log, _) = open(&dir, 1 << 20, Fsync::Never);
        let a = append(&mut log, b"first", 1);
        let b = append(&mut log, b"second", 1);
        log.mark(&[a], AckState::Sent);
        drop(log);
        // Half an entry at the end (a torn or partial write).
        let ack = dir.join(ack_name(a.segment));
        let mut bytes = std::fs::read(&ack).unwrap();
        bytes.extend_from_slice(&ack_entry(a.segment, a.index, AckState::Done)[..5]);
        std::fs::write(&ack, bytes).unwrap();

        let (mut log, recovery) = open(&dir, 1 << 20, Fsync::Never);
        assert_eq!(recovery.pending.len(), 2, "the torn DONE does not count");
        assert!(recovery.pending[0].sent_before);
        log.mark(&[recovery.pending[1].location], AckState::Done);
        drop(log);
        let (_, recovery) = open(&dir, 1 << 20, Fsync::Never);
        let left: Vec<u32> = recovery.pending.iter().map(|p| p.location.index).collect();
        assert_eq!(left, vec![a.index], "b's DONE was read at its own offset");
        assert_ne!(a.index, b.index);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_of_the_first_format_are_rewritten_and_delivered_after_an_upgrade() {
        let dir = temp_dir("upgrade");
        std::fs::create_dir_all(&dir).unwrap();
        // What an older graphgen left: three records, the second done, the first sent, a torn
        // last ack entry, and a zero-filled tail.
        let records: Vec<(Vec<u8>, u32)> = [(1u8, 3u32), (2, 4), (3, 5)]
            .into_iter()
            .map(|(i, spans)| (vec![i; 50], spans))
            .collect();
        let mut old = upgrade::encode_v1(&records);
        old.extend_from_slice(&[0u8; 1000]);
        std::fs::write(dir.join(segment_name(4)), old).unwrap();
        let mut acks = vec![0, 0, 0, 0, 1, 1, 0, 0, 0, 2];
        acks.extend_from_slice(&[2, 0, 0]);
        std::fs::write(dir.join(ack_name(4)), acks).unwrap();

        let (log, recovery) = open(&dir, 1 << 20, Fsync::Periodic);
        assert_eq!(spans_and_sent(&recovery), vec![(3, true), (5, false)]);
        assert_eq!(payloads(&recovery, &log), vec![vec![1; 50], vec![3; 50]]);
        assert_eq!(recovery.corrupt_segments, 0);
        assert!(
            !dir.join(segment_name(4)).exists(),
            "the old segment is gone"
        );
        drop(log);
        // Now in the current format: the same records, the sent flag kept.
        let (log, recovery) = open(&dir, 1 << 20, Fsync::Periodic);
        assert_eq!(spans_and_sent(&recovery), vec![(3, true), (5, false)]);
        assert_eq!(payloads(&recovery, &log), vec![vec![1; 50], vec![3; 50]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
