//! A Raft replica's identity file: who the replica is (cluster, node, raft
//! id), how far its log reached the last time it was written, and whether
//! it may vote. It is the replica's memory of what it promised, kept apart
//! from the log so that a log that lost data is known to have lost it.
//!
//! ```text
//! DIR/identity   two 4096-byte slots; each a JSON record, padding and a CRC-32
//! ```
//!
//! The file is rewritten after every log write that moves the log on, one
//! slot at a time in turn (as a superblock is): a write torn by a crash
//! damages only the slot being written, and the other still holds the
//! previous record. Reading takes the valid slot with the higher sequence
//! number. A record is made durable (fdatasync) before the replica tells
//! anyone what the log write promised, so the log may run ahead of the
//! record (a crash between the two writes) but never behind it: a log found
//! behind its record lost data that was synced and maybe acknowledged.
//!
//! This module decides nothing about Raft; [`Voting`] is what the replica
//! core is told.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocols::raft::{LogPosition, Voting};

/// Bytes of one slot (a page, so a slot write is one sector run); a
/// record is much smaller, and a reason longer than REASON_BYTES_MAX is cut.
const SLOT_BYTES: usize = 4096;
const REASON_BYTES_MAX: usize = 2048;
const SLOTS: u64 = 2;
/// The record format; a newer one is refused rather than misread.
pub const FORMAT_VERSION: u32 = 1;
/// The CRC trailer: `\ncrc32=` and 8 hex digits and a newline.
const TRAILER_BYTES: usize = 7 + 8 + 1;
const _: () = assert!(SLOT_BYTES > TRAILER_BYTES + REASON_BYTES_MAX + 1024);

/// Who a replica folder belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub cluster: String,
    pub node: String,
    pub raft_id: u64,
}

/// One record of the identity file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub format: u32,
    #[serde(flatten)]
    pub owner: Owner,
    /// Grows by one per write; the slot is `sequence % 2`.
    pub sequence: u64,
    /// The log as it stood after the write this record follows.
    pub position: LogPosition,
    pub voting: Voting,
    /// Why voting is withheld, for the operator (empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("identity file {path} is damaged: neither of its two copies passes its checksum ({first}; {second})")]
    Damaged {
        path: String,
        first: String,
        second: String,
    },
    #[error("identity file {path} belongs to node {} (raft id {}) of cluster {:?}, not to node {} (raft id {}) of cluster {:?}: is control.data_dir shared, or the folder copied from another node?", found.node, found.raft_id, found.cluster, expected.node, expected.raft_id, expected.cluster)]
    Foreign {
        path: String,
        found: Box<Owner>,
        expected: Box<Owner>,
    },
    #[error("identity file {path} has format {found}; this build reads format {FORMAT_VERSION}")]
    Format { path: String, found: u32 },
    #[error("identity record for {path} does not fit in {SLOT_BYTES} bytes")]
    TooLarge { path: String },
}

/// The identity file of one replica folder, open for rewriting.
pub struct IdentityFile {
    path: PathBuf,
    file: File,
    fsync: bool,
    record: IdentityRecord,
}

impl IdentityFile {
    pub fn path_in(directory: &Path) -> PathBuf {
        directory.join("identity")
    }

    /// Reads the identity file in `directory`: None if there is none.
    pub fn read(directory: &Path, owner: &Owner) -> Result<Option<IdentityRecord>, IdentityError> {
        let path = Self::path_in(directory);
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            cause: source,
        };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file.read_to_end(&mut bytes).map_err(io)?,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        let slot = |index: usize| {
            let start = index * SLOT_BYTES;
            match bytes.get(start..start + SLOT_BYTES) {
                Some(slot) => decode_slot(slot),
                None => Err(format!(
                    "copy {} is missing (the file has {} bytes)",
                    index + 1,
                    bytes.len()
                )),
            }
        };
        let record = match (slot(0), slot(1)) {
            (Ok(first), Ok(second)) => Some(if first.sequence >= second.sequence {
                first
            } else {
                second
            }),
            (Ok(record), Err(_)) | (Err(_), Ok(record)) => Some(record),
            (Err(first), Err(second)) => {
                return Err(IdentityError::Damaged {
                    path: path.display().to_string(),
                    first,
                    second,
                })
            }
        }
        .expect("one copy is valid");
        let display = path.display().to_string();
        if record.format != FORMAT_VERSION {
            return Err(IdentityError::Format {
                path: display,
                found: record.format,
            });
        }
        if &record.owner != owner {
            return Err(IdentityError::Foreign {
                path: display,
                found: Box::new(record.owner),
                expected: Box::new(owner.clone()),
            });
        }
        Ok(Some(record))
    }

    /// Writes `record` as the folder's identity, replacing any file there
    /// (through a temporary file renamed into place, so a crash leaves the
    /// old file or the new one), and keeps it open for [`Self::update`].
    pub fn create(
        directory: &Path,
        record: IdentityRecord,
        fsync: bool,
    ) -> Result<IdentityFile, IdentityError> {
        let path = Self::path_in(directory);
        let temporary = directory.join("identity.tmp");
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            cause: source,
        };
        let slot = encode_slot(&record).ok_or_else(|| IdentityError::TooLarge {
            path: path.display().to_string(),
        })?;
        let mut file = File::create(&temporary).map_err(io)?;
        file.write_all(&slot).map_err(io)?;
        file.write_all(&slot).map_err(io)?;
        if fsync {
            file.sync_all().map_err(io)?;
        }
        fs::rename(&temporary, &path).map_err(io)?;
        if fsync {
            File::open(directory)
                .and_then(|folder| folder.sync_all())
                .map_err(io)?;
        }
        Self::open(directory, record, fsync)
    }

    /// Opens the existing file whose latest record is `record`.
    pub fn open(
        directory: &Path,
        record: IdentityRecord,
        fsync: bool,
    ) -> Result<IdentityFile, IdentityError> {
        let path = Self::path_in(directory);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| IdentityError::Io {
                path: path.display().to_string(),
                cause: source,
            })?;
        Ok(IdentityFile {
            path,
            file,
            fsync,
            record,
        })
    }

    pub fn record(&self) -> &IdentityRecord {
        &self.record
    }

    /// Records the log's new position and what voting it allows; writes
    /// nothing when neither changed.
    pub fn update(&mut self, position: LogPosition, voting: Voting) -> Result<(), IdentityError> {
        if position == self.record.position && voting == self.record.voting {
            return Ok(());
        }
        let mut record = self.record.clone();
        record.sequence += 1;
        record.position = position;
        if voting == Voting::Allowed {
            record.reason.clear();
        }
        record.voting = voting;
        let slot = encode_slot(&record).ok_or_else(|| IdentityError::TooLarge {
            path: self.path.display().to_string(),
        })?;
        let io = |source| IdentityError::Io {
            path: self.path.display().to_string(),
            cause: source,
        };
        let offset = (record.sequence % SLOTS) * SLOT_BYTES as u64;
        self.file.write_all_at(&slot, offset).map_err(io)?;
        if self.fsync {
            self.file.sync_data().map_err(io)?;
        }
        self.record = record;
        Ok(())
    }
}

/// JSON, spaces up to the trailer, then `\ncrc32=XXXXXXXX\n` over what
/// comes before it: readable with `head -c 4096`.
fn encode_slot(record: &IdentityRecord) -> Option<Vec<u8>> {
    let mut record = record.clone();
    if record.reason.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX;
        while !record.reason.is_char_boundary(end) {
            end -= 1;
        }
        record.reason.truncate(end);
    }
    let mut slot = serde_json::to_vec(&record).expect("a record always encodes");
    if slot.len() > SLOT_BYTES - TRAILER_BYTES {
        return None;
    }
    slot.resize(SLOT_BYTES - TRAILER_BYTES, b' ');
    let checksum = crc32fast::hash(&slot);
    slot.extend_from_slice(format!("\ncrc32={checksum:08x}\n").as_bytes());
    debug_assert_eq!(slot.len(), SLOT_BYTES);
    Some(slot)
}

fn decode_slot(slot: &[u8]) -> Result<IdentityRecord, String> {
    let (body, trailer) = slot.split_at(SLOT_BYTES - TRAILER_BYTES);
    let written = std::str::from_utf8(trailer)
        .ok()
        .and_then(|trailer| trailer.strip_prefix("\ncrc32="))
        .and_then(|trailer| trailer.strip_suffix('\n'))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or("no checksum where one belongs")?;
    let computed = crc32fast::hash(body);
    if written != computed {
        return Err(format!("checksum {computed:08x}, expected {written:08x}"));
    }
    serde_json::from_slice(body.trim_ascii_end())
        .map_err(|error| format!("unreadable record: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            cluster: "test".into(),
            node: "n1".into(),
            raft_id: 1,
        }
    }

    fn record(term: u64, last_index: u64) -> IdentityRecord {
        IdentityRecord {
            format: FORMAT_VERSION,
            owner: owner(),
            sequence: 0,
            position: LogPosition {
                term,
                last_index,
                last_term: term,
            },
            voting: Voting::Allowed,
            reason: String::new(),
        }
    }

    #[test]
    fn the_latest_record_is_read_back_and_a_torn_copy_falls_back_to_the_other() {
        let folder = tempfile::tempdir().unwrap();
        assert_eq!(IdentityFile::read(folder.path(), &owner()).unwrap(), None);
        let mut file = IdentityFile::create(folder.path(), record(1, 0), true).unwrap();
        let position = |index| LogPosition {
            term: 2,
            last_index: index,
            last_term: 2,
        };
        file.update(position(7), Voting::Allowed).unwrap();
        file.update(position(9), Voting::Allowed).unwrap();
        let read = IdentityFile::read(folder.path(), &owner())
            .unwrap()
            .unwrap();
        assert_eq!((read.sequence, read.position.last_index), (2, 9));

        // A torn write of the next record leaves the one before it.
        let path = IdentityFile::path_in(folder.path());
        let mut bytes = fs::read(&path).unwrap();
        // Slot 1 holds sequence 1, slot 0 sequence 2: both damaged.
        bytes[SLOT_BYTES + 20] ^= 0x55;
        bytes[10] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let error = IdentityFile::read(folder.path(), &owner())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("damaged") && error.contains("identity"),
            "{error}"
        );
        bytes[10] ^= 0x55;
        fs::write(&path, &bytes).unwrap();
        let read = IdentityFile::read(folder.path(), &owner())
            .unwrap()
            .unwrap();
        assert_eq!(read.position.last_index, 9, "slot 0 holds sequence 2");
    }

    #[test]
    fn a_folder_of_another_node_is_refused_by_name() {
        let folder = tempfile::tempdir().unwrap();
        IdentityFile::create(folder.path(), record(1, 0), false).unwrap();
        let other = Owner {
            node: "n2".into(),
            raft_id: 2,
            ..owner()
        };
        let error = IdentityFile::read(folder.path(), &other)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("belongs to node n1") && error.contains("not to node n2"),
            "{error}"
        );
    }

    #[test]
    fn an_unchanged_position_writes_nothing() {
        let folder = tempfile::tempdir().unwrap();
        let mut file = IdentityFile::create(folder.path(), record(1, 3), false).unwrap();
        file.update(record(1, 3).position, Voting::Allowed).unwrap();
        assert_eq!(file.record().sequence, 0);
        file.update(record(1, 4).position, Voting::Allowed).unwrap();
        assert_eq!(file.record().sequence, 1);
    }
}
