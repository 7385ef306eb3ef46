//! Opening a queue directory: create it, lock it, check that it is this sink's, and read
//! back what a previous run left (every record checked by its CRC, committed entries
//! skipped, fully committed segments deleted). Not the running queue: see `store`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use super::QueueStorageError;
use super::record::Found;
use super::segment::{self, Segment};
use super::store::{Settings, State};
use crate::chain::queue::EntryId;

const META_FILE: &str = "queue.meta";
const LOCK_FILE: &str = "lock";
const META_VERSION: &str = "spansink durable queue v1";

/// What was found on disk.
pub struct Recovered {
    pub state: State,
    pub lock: File,
    pub corrupt_records: u64,
    pub segments_deleted: usize,
}

/// Opens `dir` for sink `sink`, creating it if needed.
pub fn open(sink: &str, dir: &Path, settings: Settings) -> Result<Recovered, QueueStorageError> {
    let directory = |source: io::Error| QueueStorageError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(directory)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(directory)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(QueueStorageError::Locked {
                path: dir.to_path_buf(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(directory(e)),
    }
    check_owner(sink, dir)?;

    let recovery = |source: io::Error| QueueStorageError::Recovery {
        path: dir.to_path_buf(),
        source,
    };
    let (first_ids, orphans) = segment::list(dir).map_err(recovery)?;
    for orphan in orphans {
        // A crash between deleting a segment and its ack file.
        fs::remove_file(&orphan).map_err(recovery)?;
    }
    let mut segments = VecDeque::new();
    let mut next_id: EntryId = 0;
    let (mut unread_spans, mut unread_bytes) = (0usize, 0usize);
    let mut corrupt_records = 0;
    let mut segments_deleted = 0;
    for first_id in first_ids {
        let mut segment = Segment::open_existing(dir, first_id).map_err(recovery)?;
        next_id = next_id.max(first_id + 1);
        let mut offset = 0;
        let mut acked_records = 0;
        loop {
            match segment.read_at(offset).map_err(recovery)? {
                Found::Record { header, next, .. } => {
                    segment.records += 1;
                    next_id = next_id.max(header.id + 1);
                    if segment.acked.contains(&header.id) {
                        acked_records += 1;
                    } else {
                        unread_spans += header.spans as usize;
                        unread_bytes += header.len as usize;
                    }
                    offset = next;
                }
                Found::Corrupt { at, resume } => {
                    corrupt_records += 1;
                    tracing::error!(
                        sink = %sink,
                        segment = first_id,
                        offset = at,
                        skipped_bytes = resume - at,
                        "torn or corrupt record in the durable queue; skipped, its spans are lost"
                    );
                    offset = resume;
                }
                Found::End => break,
            }
        }
        segment.committed = acked_records;
        if segment.fully_committed() {
            segment.delete().map_err(recovery)?;
            segments_deleted += 1;
        } else {
            segments.push_back(segment);
        }
    }
    Ok(Recovered {
        state: State::recovered(settings, segments, next_id, unread_spans, unread_bytes),
        lock,
        corrupt_records,
        segments_deleted,
    })
}

/// Refuses a directory that holds another sink's queue: its spans would go to the
/// wrong backend. A new directory is marked as this sink's.
fn check_owner(sink: &str, dir: &Path) -> Result<(), QueueStorageError> {
    let meta = dir.join(META_FILE);
    let directory = |source: io::Error| QueueStorageError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    match fs::read_to_string(&meta) {
        Ok(text) => {
            let owner = text
                .lines()
                .find_map(|line| line.strip_prefix("sink: "))
                .unwrap_or_default();
            if owner != sink {
                return Err(QueueStorageError::OtherSink {
                    path: dir.to_path_buf(),
                    owner: owner.to_string(),
                    sink: sink.to_string(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if segment::list(dir).map_err(directory)?.0.is_empty() {
                write_meta(&meta, sink).map_err(directory)
            } else {
                // Segments without a marker: not ours to guess about.
                Err(QueueStorageError::OtherSink {
                    path: dir.to_path_buf(),
                    owner: "unknown (no queue.meta)".to_string(),
                    sink: sink.to_string(),
                })
            }
        }
        Err(e) => Err(directory(e)),
    }
}

fn write_meta(meta: &Path, sink: &str) -> io::Result<()> {
    let tmp: PathBuf = meta.with_extension("tmp");
    fs::write(&tmp, format!("{META_VERSION}\nsink: {sink}\n"))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, meta)
}
