//! The queue's files: append-only segments of records, each segment with an append-only
//! acknowledgement log beside it.
//!
//! ```text
//! <dir>/0000000000000007.seg   "GGQSEG01", then records: len u32 | spans u32 | crc32 u32 | bytes
//! <dir>/0000000000000007.ack   entries: record index u32 | state u8 (1 sent, 2 done)
//! ```
//! Records are written sequentially into the newest segment; a segment is deleted once every
//! record in it is done (delivered or given up on and counted). Exports finish out of order
//! (several run at once), which is why acknowledgements are per record rather than a read
//! offset. On start every segment is read back: records marked done are skipped, records
//! marked sent are sent again and counted as possible duplicates, a bad checksum or a
//! truncated tail ends that segment's records (the rest are counted as lost), and a segment
//! without the header is renamed `*.corrupt` and skipped — never a crash loop.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

const MAGIC: &[u8; 8] = b"GGQSEG01";
const HEADER: usize = 12;
const SENT: u8 = 1;
const DONE: u8 = 2;

/// When written records reach the disk itself, not only the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// After every request, before its client hears OK: survives a power loss.
    Always,
    /// Once a second: a process crash loses nothing, a power loss up to the last second.
    Periodic,
    /// Left to the kernel: a process crash loses nothing, a power loss what was not written back.
    Never,
}

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub index: u32,
    offset: u64,
    len: u32,
}

/// A record found on disk at start that still has to be sent.
#[derive(Debug)]
pub struct Pending {
    pub location: Location,
    pub spans: usize,
    pub bytes: usize,
    /// It had been sent before the restart and may already have arrived.
    pub sent_before: bool,
}

/// What the start-up read found.
#[derive(Debug, Default)]
pub struct Recovery {
    pub pending: Vec<Pending>,
    /// Segments without a valid header, renamed `*.corrupt`.
    pub corrupt_segments: usize,
    /// Bytes after a bad checksum or a truncated record, which could not be read.
    pub unreadable_bytes: u64,
}

struct Segment {
    file: Arc<File>,
    acks: File,
    /// Records not yet done.
    outstanding: usize,
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
    records: u32,
    /// Written since the last fsync.
    dirty: bool,
}

pub struct DiskLog {
    /// Held for the process' lifetime: two processes never share a queue directory.
    _lock: File,
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    next_id: u64,
    segment_bytes: u64,
    fsync: Fsync,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

fn ack_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.ack"))
}

fn open_acks(dir: &Path, id: u64) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(ack_path(dir, id))
}

impl DiskLog {
    /// Opens (or creates) the queue in `dir` and reads back what it holds.
    pub fn open(dir: &Path, segment_bytes: u64, fsync: Fsync) -> io::Result<(Self, Recovery)> {
        fs::create_dir_all(dir)?;
        let lock = File::create(dir.join("lock"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another graphgen is using this queue directory",
            ),
            fs::TryLockError::Error(e) => e,
        })?;
        let mut ids: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        ids.sort_unstable();
        let mut log = DiskLog {
            _lock: lock,
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            active: None,
            next_id: ids.last().map_or(0, |id| id + 1),
            segment_bytes,
            fsync,
        };
        let mut recovery = Recovery::default();
        for id in ids {
            log.recover_segment(id, &mut recovery)?;
        }
        // Ack files whose segment is gone (deleted between the two removals).
        for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name().into_string().unwrap_or_default();
            if let Some(id) = name
                .strip_suffix(".ack")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                if !log.segments.contains_key(&id) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok((log, recovery))
    }

    fn recover_segment(&mut self, id: u64, recovery: &mut Recovery) -> io::Result<()> {
        let path = segment_path(&self.dir, id);
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut magic = [0u8; 8];
        if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
            tracing::error!(segment = %path.display(), "queue segment without a valid header, renamed *.corrupt and skipped");
            fs::rename(&path, path.with_extension("corrupt"))?;
            let _ = fs::remove_file(ack_path(&self.dir, id));
            recovery.corrupt_segments += 1;
            return Ok(());
        }
        let states = read_acks(&ack_path(&self.dir, id))?;
        let mut offset = MAGIC.len() as u64;
        let mut index = 0u32;
        let mut outstanding = 0;
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; HEADER];
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let spans = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let crc = u32::from_le_bytes(header[8..12].try_into().unwrap());
            let record_end = offset + (HEADER as u64) + u64::from(len);
            if record_end > size {
                break;
            }
            payload.resize(len as usize, 0);
            reader.read_exact(&mut payload)?;
            if crc32fast::hash(&payload) != crc {
                break;
            }
            let state = states.get(&index).copied().unwrap_or(0);
            if state != DONE {
                outstanding += 1;
                recovery.pending.push(Pending {
                    location: Location {
                        segment: id,
                        index,
                        offset: offset + HEADER as u64,
                        len,
                    },
                    spans: spans as usize,
                    bytes: len as usize,
                    sent_before: state == SENT,
                });
            }
            offset = record_end;
            index += 1;
        }
        if offset < size {
            let lost = size - offset;
            tracing::error!(segment = %path.display(), bytes = lost, "queue segment has a bad checksum or a truncated record; the rest of it is skipped");
            recovery.unreadable_bytes += lost;
        }
        if outstanding == 0 {
            fs::remove_file(&path)?;
            let _ = fs::remove_file(ack_path(&self.dir, id));
            return Ok(());
        }
        self.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                acks: open_acks(&self.dir, id)?,
                outstanding,
            },
        );
        Ok(())
    }

    /// Appends one record; with `Fsync::Always` it is on the disk when this returns.
    pub fn append(&mut self, payload: &[u8], spans: usize) -> io::Result<Location> {
        let record = (HEADER + payload.len()) as u64;
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.records > 0 && a.len + record > self.segment_bytes)
        {
            self.seal();
        }
        if self.active.is_none() {
            self.start_segment()?;
        }
        let active = self.active.as_mut().expect("just started");
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(spans as u32).to_le_bytes());
        header[8..12].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        let written = (&*active.file)
            .write_all(&header)
            .and_then(|()| (&*active.file).write_all(payload))
            .and_then(|()| match self.fsync {
                Fsync::Always => active.file.sync_data(),
                _ => Ok(()),
            });
        if let Err(e) = written {
            // A partial record may be on disk: nothing more goes into this segment (start-up
            // reads stop at the partial record).
            self.seal();
            return Err(e);
        }
        let location = Location {
            segment: active.id,
            index: active.records,
            offset: active.len + HEADER as u64,
            len: payload.len() as u32,
        };
        active.len += record;
        active.records += 1;
        active.dirty = true;
        self.segments
            .get_mut(&active.id)
            .expect("the active segment is listed")
            .outstanding += 1;
        Ok(location)
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.next_id;
        let path = segment_path(&self.dir, id);
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        let file = Arc::new(file);
        self.segments.insert(
            id,
            Segment {
                file: file.clone(),
                acks: open_acks(&self.dir, id)?,
                outstanding: 0,
            },
        );
        self.next_id += 1;
        self.active = Some(Active {
            id,
            file,
            len: MAGIC.len() as u64,
            records: 0,
            dirty: true,
        });
        Ok(())
    }

    /// Stops writing to the active segment; deleted at once if nothing in it is outstanding.
    fn seal(&mut self) {
        if let Some(active) = self.active.take() {
            if self
                .segments
                .get(&active.id)
                .is_some_and(|s| s.outstanding == 0)
            {
                self.remove(active.id);
            }
        }
    }

    /// The file a record is read from (outside any lock: reads are positioned).
    pub fn reader(&self, location: &Location) -> Option<Arc<File>> {
        self.segments.get(&location.segment).map(|s| s.file.clone())
    }

    /// Records that these records were handed to an exporter.
    pub fn mark_sent(&mut self, locations: &[Location]) {
        self.write_acks(locations, SENT);
    }

    /// Records that these records are done; deletes segments with nothing left.
    pub fn mark_done(&mut self, locations: &[Location]) {
        self.write_acks(locations, DONE);
        for location in locations {
            let Some(segment) = self.segments.get_mut(&location.segment) else {
                continue;
            };
            segment.outstanding = segment.outstanding.saturating_sub(1);
            let active = self
                .active
                .as_ref()
                .is_some_and(|a| a.id == location.segment);
            if segment.outstanding == 0 && !active {
                self.remove(location.segment);
            }
        }
    }

    fn write_acks(&mut self, locations: &[Location], state: u8) {
        let mut by_segment: HashMap<u64, Vec<u8>> = HashMap::new();
        for location in locations {
            let entry = by_segment.entry(location.segment).or_default();
            entry.extend_from_slice(&location.index.to_le_bytes());
            entry.push(state);
        }
        for (id, bytes) in by_segment {
            if let Some(segment) = self.segments.get_mut(&id) {
                // A lost acknowledgement costs a duplicate after a restart, never data.
                if let Err(e) = segment.acks.write_all(&bytes) {
                    tracing::warn!(error = %e, "cannot write a queue acknowledgement");
                }
            }
        }
    }

    fn remove(&mut self, id: u64) {
        self.segments.remove(&id);
        for path in [segment_path(&self.dir, id), ack_path(&self.dir, id)] {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(error = %e, file = %path.display(), "cannot delete a finished queue segment");
            }
        }
    }

    /// The active segment's file if it has unsynced writes (for the periodic fsync, which runs
    /// outside the queue's lock).
    pub fn take_dirty(&mut self) -> Option<Arc<File>> {
        let active = self.active.as_mut()?;
        std::mem::take(&mut active.dirty).then(|| active.file.clone())
    }

    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Reads a record's bytes.
pub fn read(file: &File, location: &Location) -> io::Result<Bytes> {
    let mut buf = vec![0u8; location.len as usize];
    file.read_exact_at(&mut buf, location.offset)?;
    Ok(buf.into())
}

/// Each record's latest state; a torn last entry is ignored.
fn read_acks(path: &Path) -> io::Result<HashMap<u32, u8>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut states = HashMap::new();
    for entry in bytes.chunks_exact(5) {
        let index = u32::from_le_bytes(entry[0..4].try_into().unwrap());
        let state = states.entry(index).or_insert(0);
        *state = (*state).max(entry[4]);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("graphgen-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn payloads(recovery: &Recovery, log: &DiskLog) -> Vec<Vec<u8>> {
        recovery
            .pending
            .iter()
            .map(|p| {
                read(&log.reader(&p.location).unwrap(), &p.location)
                    .unwrap()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn records_survive_a_reopen_until_done_and_sent_ones_are_flagged() {
        let dir = temp_dir("reopen");
        let (mut log, recovery) = DiskLog::open(&dir, 64, Fsync::Never).unwrap();
        assert!(recovery.pending.is_empty());
        // 64-byte segments: every record starts a new one.
        let locations: Vec<Location> = (0..4u8)
            .map(|i| log.append(&[i; 40], i as usize + 1).unwrap())
            .collect();
        assert_eq!(log.segment_count(), 4);
        log.mark_sent(&locations[1..3]);
        log.mark_done(&locations[2..3]);
        assert_eq!(
            log.segment_count(),
            3,
            "a finished sealed segment is deleted"
        );
        drop(log);

        let (log, recovery) = DiskLog::open(&dir, 64, Fsync::Never).unwrap();
        let found: Vec<(usize, bool)> = recovery
            .pending
            .iter()
            .map(|p| (p.spans, p.sent_before))
            .collect();
        assert_eq!(found, vec![(1, false), (2, true), (4, false)]);
        assert_eq!(
            payloads(&recovery, &log),
            vec![vec![0; 40], vec![1; 40], vec![3; 40]]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_queue_directory_is_used_by_one_process_at_a_time() {
        let dir = temp_dir("lock");
        let (log, _) = DiskLog::open(&dir, 1 << 20, Fsync::Never).unwrap();
        let err = DiskLog::open(&dir, 1 << 20, Fsync::Never).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
        drop(log);
        DiskLog::open(&dir, 1 << 20, Fsync::Never).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_truncated_or_garbled_segment_is_skipped_and_counted_never_fatal() {
        let dir = temp_dir("corrupt");
        let (mut log, _) = DiskLog::open(&dir, 1 << 20, Fsync::Always).unwrap();
        for i in 0..3u8 {
            log.append(&[i; 100], 1).unwrap();
        }
        let first = log.active.as_ref().unwrap().id;
        log.seal();
        log.append(&[9; 100], 1).unwrap();
        drop(log);
        // Cut the first segment in the middle of its last record…
        let path = segment_path(&dir, first);
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 50)
            .unwrap();
        // …and put a segment of garbage beside it.
        fs::write(segment_path(&dir, 99), b"not a segment at all").unwrap();

        let (log, recovery) = DiskLog::open(&dir, 1 << 20, Fsync::Always).unwrap();
        assert_eq!(recovery.corrupt_segments, 1);
        assert_eq!(recovery.unreadable_bytes, (HEADER + 100 - 50) as u64);
        assert_eq!(
            payloads(&recovery, &log),
            vec![vec![0; 100], vec![1; 100], vec![9; 100]]
        );
        assert!(dir.join(format!("{:016x}.corrupt", 99)).exists());

        // A bad checksum ends the segment's records too.
        drop(log);
        let path = segment_path(&dir, first);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + HEADER + 5] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (log, recovery) = DiskLog::open(&dir, 1 << 20, Fsync::Always).unwrap();
        assert_eq!(payloads(&recovery, &log), vec![vec![9; 100]]);
        assert!(recovery.unreadable_bytes > 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
