//! One segment of a durable queue: a file of records (`<first id>.seg`) and, beside it,
//! the ids of its entries that were committed (`<first id>.ack`, 12 bytes each: the id
//! and its CRC32C). A segment is deleted, both files, once every entry in it is
//! committed. Not the queue's order or limits: see `store`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::EntryId;
use super::record::{self, HEADER_LEN};

const SEGMENT_SUFFIX: &str = "seg";
const ACK_SUFFIX: &str = "ack";
const ACK_LEN: usize = 12;

/// A segment as the store tracks it.
pub struct Segment {
    /// Id of its first record; names its files.
    pub first_id: EntryId,
    pub file: Arc<File>,
    /// Bytes of whole records: reads never go past it, the next append starts there.
    pub len: u64,
    /// Sound records in it (corrupt ones found at recovery are not counted).
    pub records: u64,
    /// Of those, how many are committed.
    pub committed: u64,
    /// No more appends (an older segment, or one whose last append failed).
    pub sealed: bool,
    /// Found at start: committed ids the reader skips, and corruption already counted.
    pub recovered: bool,
    /// Ids committed before this start (recovered segments only).
    pub acked: HashSet<EntryId>,
    /// Written since the last fsync round (records or acks).
    pub dirty: bool,
    acks: Option<Arc<File>>,
    dir: PathBuf,
}

impl Segment {
    /// Creates the files of a new segment starting at `first_id`.
    pub fn create(dir: &Path, first_id: EntryId) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path(dir, first_id, SEGMENT_SUFFIX))?;
        Ok(Segment {
            first_id,
            file: Arc::new(file),
            len: 0,
            records: 0,
            committed: 0,
            sealed: false,
            recovered: false,
            acked: HashSet::new(),
            dirty: false,
            acks: None,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing segment (read-only from now on) with the ids committed in it.
    pub fn open_existing(dir: &Path, first_id: EntryId) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .open(path(dir, first_id, SEGMENT_SUFFIX))?;
        let len = file.metadata()?.len();
        Ok(Segment {
            first_id,
            file: Arc::new(file),
            len,
            records: 0,
            committed: 0,
            sealed: true,
            recovered: true,
            acked: read_acks(&path(dir, first_id, ACK_SUFFIX))?,
            dirty: false,
            acks: None,
            dir: dir.to_path_buf(),
        })
    }

    /// Appends one record at the end. On failure (a full disk) the segment is cut back
    /// to its last whole record; if even that fails it is sealed, so a torn record is
    /// never followed by appends. Returns the record's start offset.
    pub fn append(&mut self, header: &[u8; HEADER_LEN], payload: &[u8]) -> io::Result<u64> {
        let start = self.len;
        let written = self
            .file
            .write_all_at(header, start)
            .and_then(|()| self.file.write_all_at(payload, start + HEADER_LEN as u64));
        match written {
            Ok(()) => {
                self.len += (HEADER_LEN + payload.len()) as u64;
                self.records += 1;
                self.dirty = true;
                Ok(start)
            }
            Err(e) => {
                if self.file.set_len(start).is_err() {
                    self.sealed = true;
                }
                Err(e)
            }
        }
    }

    /// Records that entry `id` (one of this segment's) is committed.
    pub fn commit(&mut self, id: EntryId) -> io::Result<()> {
        self.committed += 1;
        self.dirty = true;
        let acks = match &self.acks {
            Some(file) => file,
            None => self.acks.insert(Arc::new(
                OpenOptions::new().create(true).append(true).open(path(
                    &self.dir,
                    self.first_id,
                    ACK_SUFFIX,
                ))?,
            )),
        };
        let mut entry = [0u8; ACK_LEN];
        entry[..8].copy_from_slice(&id.to_le_bytes());
        let crc = crc32c::crc32c(&entry[..8]);
        entry[8..].copy_from_slice(&crc.to_le_bytes());
        (&**acks).write_all(&entry)
    }

    /// The files written since the last fsync round; clears the mark.
    pub fn take_dirty(&mut self) -> impl Iterator<Item = Arc<File>> + use<> {
        let dirty = std::mem::take(&mut self.dirty);
        let files = [Some(self.file.clone()), self.acks.clone()];
        files.into_iter().flatten().filter(move |_| dirty)
    }

    pub fn fully_committed(&self) -> bool {
        self.sealed && self.committed >= self.records
    }

    /// Removes both files.
    pub fn delete(self) -> io::Result<()> {
        fs::remove_file(path(&self.dir, self.first_id, SEGMENT_SUFFIX))?;
        match fs::remove_file(path(&self.dir, self.first_id, ACK_SUFFIX)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads the record at `offset` (see [`record::read_at`]).
    pub fn read_at(&self, offset: u64) -> io::Result<record::Found> {
        record::read_at(self.file.as_ref(), offset, self.len)
    }
}

fn path(dir: &Path, first_id: EntryId, suffix: &str) -> PathBuf {
    dir.join(format!("{first_id:020}.{suffix}"))
}

/// The first ids of the segments in `dir`, oldest first, and the ack files that have no
/// segment any more (left by a crash between the two deletions).
pub fn list(dir: &Path) -> io::Result<(Vec<EntryId>, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut acks = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((stem, suffix)) = name.split_once('.') else {
            continue;
        };
        let Ok(first_id) = stem.parse::<EntryId>() else {
            continue;
        };
        match suffix {
            SEGMENT_SUFFIX => segments.push(first_id),
            ACK_SUFFIX => acks.push(first_id),
            _ => {}
        }
    }
    segments.sort_unstable();
    let orphans = acks
        .into_iter()
        .filter(|id| segments.binary_search(id).is_err())
        .map(|id| path(dir, id, ACK_SUFFIX))
        .collect();
    Ok((segments, orphans))
}

/// The committed ids in an ack file; a torn or damaged entry is ignored (its entry is
/// then delivered once more, never lost).
fn read_acks(path: &Path) -> io::Result<HashSet<EntryId>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    }
    Ok(bytes
        .chunks_exact(ACK_LEN)
        .filter(|entry| crc32c::crc32c(&entry[..8]).to_le_bytes() == entry[8..])
        .map(|entry| {
            let mut id = [0u8; 8];
            id.copy_from_slice(&entry[..8]);
            u64::from_le_bytes(id)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::queue::durable::record::{Found, encode_header};

    #[test]
    fn appends_read_back_and_commits_persist() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 10).unwrap();
        let a = segment.append(&encode_header(10, 1, b"aa"), b"aa").unwrap();
        let b = segment
            .append(&encode_header(11, 1, b"bbb"), b"bbb")
            .unwrap();
        assert_eq!((a, b), (0, HEADER_LEN as u64 + 2));
        segment.commit(11).unwrap();
        segment.sealed = true;
        assert!(!segment.fully_committed());
        drop(segment);

        let reopened = Segment::open_existing(dir.path(), 10).unwrap();
        assert_eq!(reopened.acked, HashSet::from([11]));
        assert!(
            matches!(reopened.read_at(b).unwrap(), Found::Record { header, .. } if header.id == 11)
        );
        assert_eq!(list(dir.path()).unwrap(), (vec![10], vec![]));
        reopened.delete().unwrap();
        assert_eq!(list(dir.path()).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn a_torn_ack_entry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 0).unwrap();
        segment.commit(0).unwrap();
        segment.commit(1).unwrap();
        drop(segment);
        let ack = path(dir.path(), 0, ACK_SUFFIX);
        let mut bytes = fs::read(&ack).unwrap();
        bytes[13] ^= 1; // second entry's id
        bytes.extend_from_slice(&[1, 2, 3]); // torn third
        fs::write(&ack, bytes).unwrap();
        assert_eq!(read_acks(&ack).unwrap(), HashSet::from([0]));
    }

    #[test]
    fn an_ack_file_without_its_segment_is_an_orphan() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path(), 5, ACK_SUFFIX), b"").unwrap();
        fs::write(dir.path().join("queue.meta"), b"").unwrap();
        let (segments, orphans) = list(dir.path()).unwrap();
        assert!(segments.is_empty());
        assert_eq!(orphans, vec![path(dir.path(), 5, ACK_SUFFIX)]);
    }
}
