//! One queued request on disk, and reading records back with corruption detected.
//!
//! A record is a fixed 24-byte header followed by the request bytes as received:
//!
//! ```text
//! magic "SSQ1" | payload length u32 | entry id u64 | span count u32 | CRC32C u32 | payload
//! ```
//!
//! All integers are little-endian. The CRC32C covers the length, id and span count and
//! the payload, so a torn write (a crash mid-append) or flipped bits anywhere in a record
//! are detected. After a bad record the reader looks for the next magic that starts a
//! record whose CRC holds, so one bad record costs only itself. Not segments or
//! directories: see `segment` and `store`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::super::EntryId;

pub const MAGIC: [u8; 4] = *b"SSQ1";
pub const HEADER_LEN: usize = 24;

/// Receivers refuse requests far below this; a larger length field is corruption.
const MAX_PAYLOAD: u32 = 1 << 30;

/// How much is read at a time while looking for the next record after a bad one.
const RESYNC_CHUNK: usize = 64 * 1024;

/// A record's header, read and checked for shape (the CRC is checked with the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub id: EntryId,
    pub spans: u32,
    crc: u32,
}

impl Header {
    /// The whole record's size on disk.
    pub fn record_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// The header of the record holding `payload`.
pub fn encode_header(id: EntryId, spans: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&id.to_le_bytes());
    header[16..20].copy_from_slice(&spans.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[4..20]), payload);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Reads a header's fields; `None` when it cannot be one (wrong magic, absurd length).
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
    if bytes[0..4] != MAGIC {
        return None;
    }
    let le32 =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let len = le32(4);
    if len > MAX_PAYLOAD {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[8..16]);
    Some(Header {
        len,
        id: u64::from_le_bytes(id),
        spans: le32(16),
        crc: le32(20),
    })
}

fn checks_out(header_bytes: &[u8; HEADER_LEN], header: &Header, payload: &[u8]) -> bool {
    crc32c::crc32c_append(crc32c::crc32c(&header_bytes[4..20]), payload) == header.crc
}

/// Where records are read from: a segment file, or bytes in memory (the fuzz target).
pub trait ReadAt {
    /// Fills `buf` from `offset`; an error if fewer bytes are there.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// What the reader found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A whole record whose CRC holds; the next one starts at `next`.
    Record {
        header: Header,
        payload: Vec<u8>,
        next: u64,
    },
    /// Bytes from `at` that are no record (torn or corrupted); reading resumes at
    /// `resume`, the next offset where a sound record starts, or the end.
    Corrupt { at: u64, resume: u64 },
    /// `offset` is the end: nothing more to read.
    End,
}

/// Reads the record at `offset` of `file`, looking only at bytes before `end` (what was
/// written completely; later bytes may be an append in progress).
pub fn read_at<R: ReadAt + ?Sized>(file: &R, offset: u64, end: u64) -> io::Result<Found> {
    if offset >= end {
        return Ok(Found::End);
    }
    match sound_record(file, offset, end)? {
        Some((header, payload)) => Ok(Found::Record {
            next: offset + header.record_len(),
            header,
            payload,
        }),
        None => Ok(Found::Corrupt {
            at: offset,
            resume: resync(file, offset + 1, end)?,
        }),
    }
}

/// The record at `offset` if a whole one with a matching CRC is there.
fn sound_record<R: ReadAt + ?Sized>(
    file: &R,
    offset: u64,
    end: u64,
) -> io::Result<Option<(Header, Vec<u8>)>> {
    if end - offset < HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header_bytes, offset)?;
    let Some(header) = decode_header(&header_bytes) else {
        return Ok(None);
    };
    if end - offset < header.record_len() {
        return Ok(None);
    }
    let mut payload = vec![0u8; header.len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)?;
    Ok(checks_out(&header_bytes, &header, &payload).then_some((header, payload)))
}

/// The first offset at or after `from` where a sound record starts, or `end`.
fn resync<R: ReadAt + ?Sized>(file: &R, from: u64, end: u64) -> io::Result<u64> {
    let mut chunk = vec![0u8; RESYNC_CHUNK + MAGIC.len() - 1];
    let mut at = from;
    while at < end {
        let want = usize::try_from((end - at).min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.read_exact_at(&mut chunk[..want], at)?;
        let window = &chunk[..want];
        let mut searched = 0;
        while let Some(hit) = find_magic(&window[searched..]) {
            let candidate = at + (searched + hit) as u64;
            if sound_record(file, candidate, end)?.is_some() {
                return Ok(candidate);
            }
            searched += hit + 1;
        }
        // Overlap by the magic's length less one, so a magic across chunks is found.
        if want < chunk.len() {
            break;
        }
        at += (want - (MAGIC.len() - 1)) as u64;
    }
    Ok(end)
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|w| w == MAGIC)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn record(id: EntryId, payload: &[u8]) -> Vec<u8> {
        let mut out = encode_header(id, 7, payload).to_vec();
        out.extend_from_slice(payload);
        out
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn a_record_reads_back_with_its_fields() {
        let bytes = record(42, b"hello spans");
        let file = file_with(&bytes);
        let Found::Record {
            header,
            payload,
            next,
        } = read_at(&file, 0, bytes.len() as u64).unwrap()
        else {
            panic!("expected a record");
        };
        assert_eq!((header.id, header.spans, header.len), (42, 7, 11));
        assert_eq!(payload, b"hello spans");
        assert_eq!(next, bytes.len() as u64);
        assert_eq!(read_at(&file, next, next).unwrap(), Found::End);
    }

    #[test]
    fn a_truncated_last_record_is_detected_at_every_byte_offset() {
        let first = record(1, b"first record");
        let second = record(2, b"second record, cut short by a crash");
        let mut bytes = first.clone();
        bytes.extend_from_slice(&second);
        for cut in first.len()..bytes.len() {
            let file = file_with(&bytes[..cut]);
            let end = cut as u64;
            assert!(
                matches!(read_at(&file, 0, end).unwrap(), Found::Record { header, .. } if header.id == 1)
            );
            let at = first.len() as u64;
            match read_at(&file, at, end).unwrap() {
                Found::Corrupt { at: bad, resume } => {
                    assert_eq!((bad, resume), (at, end), "cut at {cut}")
                }
                Found::End => assert_eq!(cut, first.len()),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_detected_and_the_next_record_is_found() {
        let first = record(1, b"the record that gets damaged");
        let second = record(2, b"the record after it");
        for byte in 0..first.len() {
            for bit in [0, 3, 7] {
                let mut bytes = first.clone();
                bytes[byte] ^= 1 << bit;
                bytes.extend_from_slice(&second);
                let file = file_with(&bytes);
                let end = bytes.len() as u64;
                let found = read_at(&file, 0, end).unwrap();
                let Found::Corrupt { at: 0, resume } = found else {
                    panic!("byte {byte} bit {bit}: {found:?}");
                };
                assert_eq!(resume, first.len() as u64, "byte {byte} bit {bit}");
                assert!(
                    matches!(read_at(&file, resume, end).unwrap(), Found::Record { header, .. } if header.id == 2)
                );
            }
        }
    }

    #[test]
    fn a_magic_inside_a_payload_does_not_fool_the_resync() {
        let mut payload = b"xxxx".to_vec();
        payload.extend_from_slice(&MAGIC);
        payload.extend_from_slice(&[0xff; 40]);
        let damaged = {
            let mut r = record(1, &payload);
            r[5] ^= 0x10; // length field
            r
        };
        let mut bytes = damaged.clone();
        bytes.extend_from_slice(&record(2, b"sound"));
        let file = file_with(&bytes);
        let Found::Corrupt { resume, .. } = read_at(&file, 0, bytes.len() as u64).unwrap() else {
            panic!("expected corruption");
        };
        assert_eq!(resume, damaged.len() as u64);
    }

    #[test]
    fn resync_finds_a_record_across_chunk_boundaries() {
        // Garbage longer than a resync chunk, then a record straddling the chunk edge.
        let mut bytes = vec![0u8; RESYNC_CHUNK - 2];
        let start = bytes.len();
        bytes.extend_from_slice(&record(9, b"after the garbage"));
        let file = file_with(&bytes);
        let found = read_at(&file, 0, bytes.len() as u64).unwrap();
        assert_eq!(
            found,
            Found::Corrupt {
                at: 0,
                resume: start as u64
            }
        );
    }
}
