//! Segments of the queue's first format (`GGQSEG01`, before storage faults were handled), read
//! once at start so an upgrade delivers what an older graphgen left queued. [`super::disk`]
//! writes what is still pending into a segment of the current format, syncs it, and only then
//! deletes the old files.
//!
//! ```text
//! <id>.seg  "GGQSEG01", then records: len u32 | spans u32 | crc32(payload) u32 | payload
//! <id>.ack  entries: record index u32 | state u8 (1 sent, 2 done)
//! ```
//! The old format's weaknesses are read around: a record with no bytes or no spans (what a
//! zero-filled tail reads as) ends the segment, and a torn last ack entry is ignored.

use std::collections::HashMap;
use std::io;

use bytes::Bytes;

use super::files::QueueFile;

pub const MAGIC_V1: &[u8; 8] = b"GGQSEG01";
const HEADER: usize = 12;
const SENT: u8 = 1;
const DONE: u8 = 2;

/// A record of an old segment that was not done.
#[derive(Debug, PartialEq)]
pub struct OldRecord {
    pub payload: Bytes,
    pub spans: usize,
    pub sent_before: bool,
}

/// The records of an old segment not marked done, in order, and the bytes after the last
/// readable one.
pub fn read_v1(
    segment: &dyn QueueFile,
    acks: Option<&dyn QueueFile>,
) -> io::Result<(Vec<OldRecord>, u64)> {
    let size = segment.size()?;
    let mut states: HashMap<u32, u8> = HashMap::new();
    if let Some(acks) = acks {
        let mut bytes = vec![0u8; usize::try_from(acks.size()?).map_err(io::Error::other)?];
        acks.read_exact_at(&mut bytes, 0)?;
        for entry in bytes.chunks_exact(5) {
            let index = u32::from_le_bytes(entry[0..4].try_into().expect("4 bytes"));
            let state = states.entry(index).or_insert(0);
            *state = (*state).max(entry[4]);
        }
    }
    let mut records = Vec::new();
    let mut offset = MAGIC_V1.len() as u64;
    let mut index = 0u32;
    let mut header = [0u8; HEADER];
    while offset + HEADER as u64 <= size {
        segment.read_exact_at(&mut header, offset)?;
        let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, spans, crc) = (word(0), word(4), word(8));
        let end = offset + HEADER as u64 + u64::from(len);
        if len == 0 || spans == 0 || end > size {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        segment.read_exact_at(&mut payload, offset + HEADER as u64)?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        let state = states.get(&index).copied().unwrap_or(0);
        if state != DONE {
            records.push(OldRecord {
                payload: payload.into(),
                spans: spans as usize,
                sent_before: state == SENT,
            });
        }
        offset = end;
        index += 1;
    }
    Ok((records, size - offset))
}

/// A segment of the first format holding these payloads and span counts (for tests).
#[cfg(test)]
pub fn encode_v1(records: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let mut segment = MAGIC_V1.to_vec();
    for (payload, spans) in records {
        segment.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        segment.extend_from_slice(&spans.to_le_bytes());
        segment.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        segment.extend_from_slice(payload);
    }
    segment
}
