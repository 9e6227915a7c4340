//! The crash simulator: the disk queue over a test-only file layer that records every write,
//! truncation, fsync, creation and deletion, so that the states a power cut can leave are
//! built and reopened by the thousand (the method of ALICE, OSDI 2014, and CrashMonkey,
//! OSDI 2018). A crash keeps what was synced, plus a random prefix of what was not (its last
//! write cut anywhere), then maybe a tail of zeros (delayed allocation) or garbage; directory
//! entries created or removed since the directory's last fsync may or may not be there. It
//! can also fail writes (partial, ENOSPC), fsyncs (EIO, with the pages dropped as Linux does)
//! and file creation (leaving an empty entry).
//!
//! After each crash the queue is reopened and its promise checked: every record read back is
//! one that was written (byte for byte); with `always` every acknowledged request that was
//! not done comes back; with `periodic` every one acknowledged before the last successful
//! fsync tick (a second before the crash; while fsyncs fail the writer thread refuses
//! requests, so none is acknowledged that a tick could not cover); with any policy, after a
//! process crash (no power cut) every acknowledged one; and opening never fails.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::disk::{self, AckState, DiskLog, Fsync, Location};
use super::files::{QueueDir, QueueFile};

#[derive(Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

fn apply(content: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => content.resize(*len as usize, 0),
    }
}

#[derive(Default, Clone)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What is on the device.
    durable: Vec<u8>,
    /// Changes since the last fsync, in order.
    pending: Vec<Op>,
}

struct SimState {
    inodes: Vec<Inode>,
    names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    rng: fastrand::Rng,
    /// Probability that a write, fsync or creation fails.
    fault_rate: f64,
    /// How long an fsync and a read take (a slow disk), and how many fsyncs there were.
    sync_delay: std::time::Duration,
    read_delay: std::time::Duration,
    syncs: usize,
}

impl SimState {
    fn fault(&mut self) -> bool {
        self.fault_rate > 0.0 && self.rng.f64() < self.fault_rate
    }
}

#[derive(Clone)]
pub(super) struct SimDir(Arc<Mutex<SimState>>);

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: usize,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl SimDir {
    fn new(seed: u64, fault_rate: f64) -> Self {
        SimDir(Arc::new(Mutex::new(SimState {
            inodes: Vec::new(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
            fault_rate,
            sync_delay: std::time::Duration::ZERO,
            read_delay: std::time::Duration::ZERO,
            syncs: 0,
        })))
    }

    /// A directory on a disk whose every fsync takes `delay`.
    pub(super) fn slow(delay: std::time::Duration) -> Self {
        let dir = Self::new(0, 0.0);
        dir.lock().sync_delay = delay;
        dir
    }

    /// The same disk, with reads that take `delay`.
    pub(super) fn with_read_delay(self, delay: std::time::Duration) -> Self {
        self.lock().read_delay = delay;
        self
    }

    /// fsyncs of files so far.
    pub(super) fn syncs(&self) -> usize {
        self.lock().syncs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.0.lock().unwrap()
    }

    fn file(&self, inode: usize) -> Arc<dyn QueueFile> {
        Arc::new(SimFile {
            state: self.0.clone(),
            inode,
        })
    }

    /// The directory as a power cut (or, with `power_cut` false, a process crash) leaves it.
    fn crash(&self, rng: &mut fastrand::Rng, power_cut: bool) -> SimDir {
        let state = self.lock();
        let mut inodes = Vec::with_capacity(state.inodes.len());
        for inode in &state.inodes {
            let mut content = if power_cut {
                inode.durable.clone()
            } else {
                inode.data.clone()
            };
            if power_cut {
                let kept = rng.usize(0..=inode.pending.len());
                for op in &inode.pending[..kept] {
                    apply(&mut content, op);
                }
                if let Some(Op::Write { offset, data }) = inode.pending.get(kept) {
                    let cut = rng.usize(0..=data.len());
                    apply(
                        &mut content,
                        &Op::Write {
                            offset: *offset,
                            data: data[..cut].to_vec(),
                        },
                    );
                }
                // The length reached the disk, the data did not: zeros or garbage.
                if inode.data.len() > content.len() && rng.bool() {
                    let len = rng.usize(content.len() + 1..=inode.data.len());
                    let zeros = rng.bool();
                    while content.len() < len {
                        content.push(if zeros { 0 } else { rng.u8(..) });
                    }
                }
            }
            inodes.push(Inode {
                data: content.clone(),
                durable: content,
                pending: Vec::new(),
            });
        }
        let names = if power_cut {
            let mut names = BTreeMap::new();
            let all: HashSet<&String> = state
                .names
                .keys()
                .chain(state.durable_names.keys())
                .collect();
            let mut all: Vec<&String> = all.into_iter().collect();
            all.sort();
            for name in all {
                let (now, then) = (state.names.get(name), state.durable_names.get(name));
                let chosen = if now == then || rng.bool() { now } else { then };
                if let Some(inode) = chosen {
                    names.insert(name.clone(), *inode);
                }
            }
            names
        } else {
            state.names.clone()
        };
        SimDir(Arc::new(Mutex::new(SimState {
            inodes,
            durable_names: names.clone(),
            names,
            rng: fastrand::Rng::with_seed(rng.u64(..)),
            fault_rate: 0.0,
            sync_delay: std::time::Duration::ZERO,
            read_delay: std::time::Duration::ZERO,
            syncs: 0,
        })))
    }
}

impl QueueFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let delay = self.state.lock().unwrap().read_delay;
        std::thread::sleep(delay);
        let state = self.state.lock().unwrap();
        let data = &state.inodes[self.inode].data;
        let end = offset as usize + buf.len();
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[offset as usize..end]);
        Ok(())
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fault() {
            // A partial write: some bytes land, then the disk is full.
            let cut = state.rng.usize(0..data.len().max(1));
            let op = Op::Write {
                offset,
                data: data[..cut.min(data.len())].to_vec(),
            };
            let inode = &mut state.inodes[self.inode];
            apply(&mut inode.data, &op);
            inode.pending.push(op);
            return Err(enospc());
        }
        let op = Op::Write {
            offset,
            data: data.to_vec(),
        };
        let inode = &mut state.inodes[self.inode];
        apply(&mut inode.data, &op);
        inode.pending.push(op);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fault() {
            return Err(eio());
        }
        let inode = &mut state.inodes[self.inode];
        apply(&mut inode.data, &Op::SetLen(len));
        inode.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.state.lock().unwrap().inodes[self.inode].data.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = self.state.lock().unwrap().sync_delay;
        std::thread::sleep(delay);
        let mut state = self.state.lock().unwrap();
        state.syncs += 1;
        let failed = state.fault();
        let inode = &mut state.inodes[self.inode];
        if failed {
            // fsyncgate: the dirty pages are dropped (marked clean); they never reach the disk.
            inode.pending.clear();
            return Err(eio());
        }
        for op in std::mem::take(&mut inode.pending) {
            apply(&mut inode.durable, &op);
        }
        Ok(())
    }
}

impl QueueDir for SimDir {
    fn names(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().names.keys().cloned().collect())
    }

    fn create_new(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let mut state = self.lock();
        if state.names.contains_key(name) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        state.inodes.push(Inode::default());
        let inode = state.inodes.len() - 1;
        state.names.insert(name.to_string(), inode);
        // ENOSPC after the entry was made: an empty file stays behind.
        if state.fault() {
            return Err(enospc());
        }
        drop(state);
        Ok(self.file(inode))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let mut state = self.lock();
        if state.fault() {
            return Err(enospc());
        }
        let inode = match state.names.get(name) {
            Some(inode) => {
                let inode = *inode;
                let file = &mut state.inodes[inode];
                file.data.clear();
                file.pending.push(Op::SetLen(0));
                inode
            }
            None => {
                state.inodes.push(Inode::default());
                let inode = state.inodes.len() - 1;
                state.names.insert(name.to_string(), inode);
                inode
            }
        };
        drop(state);
        Ok(self.file(inode))
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn QueueFile>> {
        let inode = *self
            .lock()
            .names
            .get(name)
            .ok_or(io::Error::from(io::ErrorKind::NotFound))?;
        Ok(self.file(inode))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock()
            .names
            .remove(name)
            .map(|_| ())
            .ok_or(io::ErrorKind::NotFound.into())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state
            .names
            .remove(from)
            .ok_or(io::Error::from(io::ErrorKind::NotFound))?;
        state.names.insert(to.to_string(), inode);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.fault() {
            return Err(eio());
        }
        state.durable_names = state.names.clone();
        Ok(())
    }
}

/// Small segments, so that runs cross several of them.
const SEGMENT_BYTES: u64 = 700;

/// A request's payload: its id, then filler; every one different.
/// A record as the queue writes it: the default tenant's (an empty envelope), then the id.
fn payload(id: u32, rng: &mut fastrand::Rng) -> Bytes {
    let mut bytes = vec![0];
    bytes.extend(id.to_le_bytes());
    let filler = rng.usize(1..160);
    bytes.extend((0..filler).map(|i| (id as usize * 31 + i) as u8));
    Bytes::from(bytes)
}

struct Outcome {
    faults_injected: bool,
}

/// One run: a random workload, a crash at a random point, a reopen and the checks.
fn run_once(seed: u64, fsync: Fsync) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let power_cut = rng.u8(0..5) != 0;
    let fault_rate = if rng.u8(0..3) == 0 { 0.05 } else { 0.0 };
    let dir = SimDir::new(rng.u64(..), fault_rate);
    let mut log = match DiskLog::open(Box::new(dir.clone()), SEGMENT_BYTES, fsync) {
        Ok((log, _)) => log,
        Err(e) => panic!("seed {seed}: open of an empty directory failed: {e}"),
    };

    let mut written: HashMap<u32, Bytes> = HashMap::new();
    // Acknowledged and not done, with the step it was acknowledged at.
    let mut pending: Vec<(u32, Location)> = Vec::new();
    let mut acked_at: HashMap<u32, usize> = HashMap::new();
    let mut done: HashSet<u32> = HashSet::new();
    let mut last_good_sync: Option<usize> = None;
    let mut next_id = 0u32;
    let steps = rng.usize(1..50);
    for step in 0..steps {
        match rng.u8(0..10) {
            0..=5 => {
                let items: Vec<(Bytes, usize)> = (0..rng.usize(1..5))
                    .map(|_| {
                        let id = next_id;
                        next_id += 1;
                        let bytes = payload(id, &mut rng);
                        written.insert(id, bytes.clone());
                        (bytes, 1 + rng.usize(0..20))
                    })
                    .collect();
                let results = log.append_group(&items);
                for ((bytes, _), result) in items.iter().zip(results) {
                    let id = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
                    if let Ok(location) = result {
                        pending.push((id, location));
                        acked_at.insert(id, step);
                    }
                }
            }
            6..=7 if !pending.is_empty() => {
                let n = rng.usize(1..=pending.len().min(4));
                let state = if rng.bool() {
                    AckState::Done
                } else {
                    AckState::Sent
                };
                let chosen: Vec<(u32, Location)> = if state == AckState::Done {
                    (0..n)
                        .map(|_| pending.swap_remove(rng.usize(0..pending.len())))
                        .collect()
                } else {
                    (0..n)
                        .map(|_| pending[rng.usize(0..pending.len())])
                        .collect()
                };
                let locations: Vec<Location> = chosen.iter().map(|(_, l)| *l).collect();
                log.mark(&locations, state);
                if state == AckState::Done {
                    done.extend(chosen.iter().map(|(id, _)| *id));
                }
            }
            _ => {
                // The periodic tick.
                if log.sync_all().is_ok() {
                    last_good_sync = Some(step);
                }
            }
        }
        // Records being read back while the queue runs are the ones that were written.
        if let Some((id, location)) = pending.get(step % pending.len().max(1)) {
            let bytes = disk::read(&log.view(), location)
                .unwrap_or_else(|e| panic!("seed {seed}: a queued record cannot be read: {e}"));
            assert_eq!(bytes, written[id], "seed {seed}: read back another record");
        }
    }
    let faults_injected = fault_rate > 0.0;
    let crashed = dir.crash(&mut rng, power_cut);
    drop(log);

    let (log, recovery) = DiskLog::open(Box::new(crashed), SEGMENT_BYTES, fsync)
        .unwrap_or_else(|e| panic!("seed {seed}: reopen after a crash failed: {e}"));
    let view = log.view();
    let mut recovered: HashMap<u32, usize> = HashMap::new();
    for p in &recovery.pending {
        let bytes = disk::read(&view, &p.location)
            .unwrap_or_else(|e| panic!("seed {seed}: a recovered record cannot be read: {e}"));
        let id = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
        assert_eq!(
            written.get(&id),
            Some(&bytes),
            "seed {seed}: a record read back that was never written"
        );
        *recovered.entry(id).or_default() += 1;
    }
    if !faults_injected {
        assert!(
            recovered.values().all(|n| *n == 1),
            "seed {seed}: a record came back twice"
        );
    }
    let promised = |id: u32| -> bool {
        let at = acked_at[&id];
        if !power_cut {
            return true;
        }
        match fsync {
            Fsync::Always => true,
            Fsync::Periodic => last_good_sync.is_some_and(|s| s > at),
            Fsync::Never => false,
        }
    };
    for (id, _) in &pending {
        if promised(*id) {
            assert!(
                recovered.contains_key(id),
                "seed {seed} ({fsync:?}, power cut {power_cut}, faults {faults_injected}): \
                 request {id} was acknowledged and not done, and did not come back"
            );
        }
    }
    if !power_cut && !faults_injected {
        let expected: HashSet<u32> = pending.iter().map(|(id, _)| *id).collect();
        let got: HashSet<u32> = recovered.keys().copied().collect();
        assert_eq!(
            got, expected,
            "seed {seed}: after a process crash exactly what was not done comes back"
        );
    }
    Outcome { faults_injected }
}

fn many_crashes(fsync: Fsync, first_seed: u64) {
    let runs = 10_000;
    let faulty = (first_seed..first_seed + runs)
        .map(|seed| run_once(seed, fsync))
        .filter(|o| o.faults_injected)
        .count();
    assert!(
        faulty > 1000,
        "a share of the runs inject faults ({faulty})"
    );
}

#[test]
fn always_keeps_every_acknowledged_request_through_10000_crashes() {
    many_crashes(Fsync::Always, 0);
}

#[test]
fn periodic_keeps_what_was_acknowledged_before_the_last_tick_through_10000_crashes() {
    many_crashes(Fsync::Periodic, 1_000_000);
}

#[test]
fn never_reads_back_only_what_was_written_through_10000_crashes() {
    many_crashes(Fsync::Never, 2_000_000);
}

/// The simulator itself: a power cut keeps what was synced and can lose what was not, and a
/// failed fsync loses the pages it was given (the checks above rely on both).
#[test]
fn the_simulator_keeps_synced_data_and_can_lose_the_rest() {
    let dir = SimDir::new(1, 0.0);
    let file = dir.create_new("a").unwrap();
    file.write_all_at(b"synced", 0).unwrap();
    file.sync_data().unwrap();
    dir.sync().unwrap();
    file.write_all_at(b" and not", 6).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut lost = false;
    for _ in 0..100 {
        let crashed = dir.crash(&mut rng, true);
        let f = crashed.open("a").unwrap();
        let mut head = [0u8; 6];
        f.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"synced");
        let mut all = [0u8; 14];
        lost |= f.read_exact_at(&mut all, 0).is_err() || &all != b"synced and not";
    }
    assert!(lost, "unsynced data is sometimes lost");
    let crashed = dir.crash(&mut rng, false);
    let mut all = [0u8; 14];
    crashed
        .open("a")
        .unwrap()
        .read_exact_at(&mut all, 0)
        .unwrap();
    assert_eq!(
        &all, b"synced and not",
        "a process crash keeps the page cache"
    );
}

/// An upgrade from the first format under injected faults: whatever failed, the next start
/// delivers each old record exactly once (copies of a failed rewrite are dropped whole).
#[test]
fn an_upgrade_that_fails_halfway_delivers_each_old_record_once_later() {
    let records: Vec<(Vec<u8>, u32)> = (0..6u8).map(|i| (vec![i; 40], 2)).collect();
    let old = super::upgrade::encode_v1(&records);
    let mut kept_once = false;
    for seed in 0..300 {
        for fsync in [Fsync::Always, Fsync::Periodic] {
            let dir = SimDir::new(seed, 0.0);
            dir.create_new("0000000000000003.seg")
                .unwrap()
                .write_all_at(&old, 0)
                .unwrap();
            dir.lock().fault_rate = 0.3;
            let first = DiskLog::open(Box::new(dir.clone()), SEGMENT_BYTES, fsync);
            let upgraded = first.as_ref().is_ok_and(|(_, r)| r.pending.len() == 6);
            drop(first);
            dir.lock().fault_rate = 0.0;
            kept_once |= !upgraded;
            let (log, recovery) = DiskLog::open(Box::new(dir), SEGMENT_BYTES, fsync).unwrap();
            let mut found: Vec<u8> = recovery
                .pending
                .iter()
                .map(|p| disk::read(&log.view(), &p.location).unwrap()[p.request_start])
                .collect();
            found.sort_unstable();
            assert_eq!(found, (0..6).collect::<Vec<u8>>(), "seed {seed} {fsync:?}");
        }
    }
    assert!(kept_once, "some upgrades failed halfway");
}
