//! A Raft replica's durable state on disk: its log entries and hard state
//! in raft-engine (TiKV's Raft log store), and its latest snapshot in a
//! file beside them.
//!
//! ```text
//! DIR/engine/     raft-engine's files: entries, hard state, conf state
//! DIR/snapshot    the latest snapshot (protobuf), replaced atomically
//! ```
//!
//! Writes come in [`Persist`] batches from [`crate::protocols::raft`]; one
//! [`RaftLog::write`] takes several (group commit) and makes them durable
//! with a single fdatasync, unless the log was opened without fsync (for
//! benchmarks only: a crash of the machine can then lose acknowledged
//! writes). Snapshots are written before the entries that follow them, and
//! each is fsynced and renamed into place, so a crash leaves the old
//! snapshot or the new one, never half of one.
//!
//! Entries that a snapshot covers are dropped from the engine; on
//! [`RaftLog::load`] any that survived a crash between the two writes are
//! skipped. This module never decides anything about Raft itself: it keeps
//! what it is given and reads it back.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft_engine::{Command, Config, Engine, LogBatch, MessageExt, ReadableSize};

use crate::protocols::raft::{Durable, Persist};

/// raft-engine keeps many groups apart by id; a node has one.
const GROUP: u64 = 1;
const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
/// Engine files past this size are rewritten or removed once compacted.
const PURGE_THRESHOLD_BYTES: u64 = 256 * 1024 * 1024;
/// Size of one engine log file before the next is started.
const TARGET_FILE_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    #[error("raft log in {path}: {reason}")]
    Engine { path: String, reason: String },
    #[error("snapshot {path}: {source}")]
    Snapshot {
        path: String,
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt: {reason}")]
    CorruptSnapshot { path: String, reason: String },
}

#[derive(Clone)]
struct EntryType;

impl MessageExt for EntryType {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

/// One replica's durable log.
pub struct RaftLog {
    engine: Engine,
    directory: PathBuf,
    fsync: bool,
}

impl RaftLog {
    /// Opens (or creates) the log in `directory`. With `fsync` false,
    /// writes are not forced to disk: for benchmarks only.
    pub fn open(directory: &Path, fsync: bool) -> Result<RaftLog, RaftLogError> {
        let engine_directory = directory.join("engine");
        let failed = |reason: String| RaftLogError::Engine {
            path: engine_directory.display().to_string(),
            reason,
        };
        fs::create_dir_all(&engine_directory).map_err(|error| failed(error.to_string()))?;
        let config = Config {
            dir: engine_directory.display().to_string(),
            purge_threshold: ReadableSize(PURGE_THRESHOLD_BYTES),
            target_file_size: ReadableSize(TARGET_FILE_BYTES),
            ..Default::default()
        };
        let engine = Engine::open(config).map_err(|error| failed(error.to_string()))?;
        Ok(RaftLog {
            engine,
            directory: directory.to_path_buf(),
            fsync,
        })
    }

    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// Everything durable: the state a replica restarts from.
    pub fn load(&self) -> Result<Durable, RaftLogError> {
        let snapshot = self.read_snapshot()?;
        let hard_state = self
            .engine
            .get_message::<HardState>(GROUP, HARD_STATE_KEY)
            .map_err(|error| self.engine_error(error))?
            .unwrap_or_default();
        let conf_state = self
            .engine
            .get_message::<ConfState>(GROUP, CONF_STATE_KEY)
            .map_err(|error| self.engine_error(error))?;
        let after = snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.get_metadata().index);
        let mut entries = Vec::new();
        if let (Some(first), Some(last)) = (
            self.engine.first_index(GROUP),
            self.engine.last_index(GROUP),
        ) {
            let first = first.max(after + 1);
            if first <= last {
                self.engine
                    .fetch_entries_to::<EntryType>(GROUP, first, last + 1, None, &mut entries)
                    .map_err(|error| self.engine_error(error))?;
            }
        }
        let conf_state = match (&snapshot, conf_state) {
            (_, Some(conf_state)) => Some(conf_state),
            (Some(snapshot), None) => Some(snapshot.get_metadata().get_conf_state().clone()),
            (None, None) => None,
        };
        Ok(Durable {
            hard_state,
            conf_state,
            snapshot,
            entries,
        })
    }

    /// Makes `persists` durable, in order, with one sync at the end.
    pub fn write(&self, persists: &[Persist]) -> Result<(), RaftLogError> {
        let mut batch = LogBatch::default();
        for persist in persists {
            if let Some(snapshot) = &persist.snapshot {
                // Entries queued before the snapshot go first: the
                // snapshot replaces them, and the engine must never hold a
                // hole after the snapshot's index.
                self.write_batch(&mut batch)?;
                self.keep_snapshot(snapshot)?;
                let conf_state = snapshot.get_metadata().get_conf_state();
                batch
                    .put_message(GROUP, CONF_STATE_KEY.to_vec(), conf_state)
                    .map_err(|error| self.engine_error(error))?;
                batch.add_command(
                    GROUP,
                    Command::Compact {
                        index: snapshot.get_metadata().index + 1,
                    },
                );
            }
            if !persist.entries.is_empty() {
                batch
                    .add_entries::<EntryType>(GROUP, &persist.entries)
                    .map_err(|error| self.engine_error(error))?;
            }
            if let Some(hard_state) = &persist.hard_state {
                batch
                    .put_message(GROUP, HARD_STATE_KEY.to_vec(), hard_state)
                    .map_err(|error| self.engine_error(error))?;
            }
        }
        self.write_batch(&mut batch)
    }

    /// Keeps the group's configuration after an applied change.
    pub fn keep_membership(&self, conf_state: &ConfState) -> Result<(), RaftLogError> {
        let mut batch = LogBatch::default();
        batch
            .put_message(GROUP, CONF_STATE_KEY.to_vec(), conf_state)
            .map_err(|error| self.engine_error(error))?;
        self.write_batch(&mut batch)
    }

    /// Keeps `snapshot` (taken here by compaction) and drops the entries
    /// it covers; the entry at its index stays in memory only.
    pub fn compacted(&self, snapshot: &Snapshot) -> Result<(), RaftLogError> {
        self.keep_snapshot(snapshot)?;
        self.engine
            .compact_to(GROUP, snapshot.get_metadata().index + 1);
        self.engine
            .purge_expired_files()
            .map_err(|error| self.engine_error(error))?;
        Ok(())
    }

    /// Bytes the engine's files take on disk.
    pub fn used_bytes(&self) -> usize {
        self.engine.get_used_size()
    }

    fn write_batch(&self, batch: &mut LogBatch) -> Result<(), RaftLogError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine
            .write(batch, self.fsync)
            .map_err(|error| self.engine_error(error))?;
        Ok(())
    }

    fn snapshot_path(&self) -> PathBuf {
        self.directory.join("snapshot")
    }

    /// Writes `snapshot` to a temporary file, syncs it and renames it over
    /// the previous one.
    fn keep_snapshot(&self, snapshot: &Snapshot) -> Result<(), RaftLogError> {
        let path = self.snapshot_path();
        let temporary = self.directory.join("snapshot.tmp");
        let failed = |source| RaftLogError::Snapshot {
            path: path.display().to_string(),
            source,
        };
        let bytes = snapshot
            .write_to_bytes()
            .map_err(|error| failed(std::io::Error::other(error.to_string())))?;
        let mut file = File::create(&temporary).map_err(failed)?;
        file.write_all(&bytes).map_err(failed)?;
        if self.fsync {
            file.sync_data().map_err(failed)?;
        }
        fs::rename(&temporary, &path).map_err(failed)?;
        if self.fsync {
            File::open(&self.directory)
                .and_then(|directory| directory.sync_all())
                .map_err(failed)?;
        }
        Ok(())
    }

    fn read_snapshot(&self) -> Result<Option<Snapshot>, RaftLogError> {
        let path = self.snapshot_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RaftLogError::Snapshot {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let snapshot =
            Snapshot::parse_from_bytes(&bytes).map_err(|error| RaftLogError::CorruptSnapshot {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        Ok(Some(snapshot))
    }

    fn engine_error(&self, error: raft_engine::Error) -> RaftLogError {
        RaftLogError::Engine {
            path: self.directory.join("engine").display().to_string(),
            reason: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn persist(number: u64, entries: Vec<Entry>, commit: u64) -> Persist {
        let hard_state = HardState {
            term: entries.last().map_or(1, |entry| entry.term),
            vote: 1,
            commit,
            ..Default::default()
        };
        Persist {
            number,
            hard_state: Some(hard_state),
            entries,
            snapshot: None,
        }
    }

    fn snapshot_at(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut snapshot = Snapshot {
            data: data.to_vec().into(),
            ..Default::default()
        };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot
            .mut_metadata()
            .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
        snapshot
    }

    #[test]
    fn what_was_written_is_read_back_after_reopening() {
        let folder = tempfile::tempdir().unwrap();
        {
            let log = RaftLog::open(folder.path(), true).unwrap();
            assert!(log.load().unwrap().entries.is_empty(), "a new log is empty");
            let first = persist(1, vec![entry(1, 1, b"a"), entry(2, 1, b"b")], 1);
            let second = persist(2, vec![entry(3, 1, b"c")], 2);
            log.write(&[first, second]).unwrap();
            // A new leader's entries replace the uncommitted suffix.
            log.write(&[persist(3, vec![entry(3, 2, b"d")], 3)])
                .unwrap();
        }
        let durable = RaftLog::open(folder.path(), true).unwrap().load().unwrap();
        let read: Vec<(u64, u64)> = durable
            .entries
            .iter()
            .map(|entry| (entry.index, entry.term))
            .collect();
        assert_eq!(read, vec![(1, 1), (2, 1), (3, 2)]);
        assert_eq!(durable.hard_state.commit, 3);
        assert!(durable.snapshot.is_none());
    }

    #[test]
    fn a_snapshot_replaces_the_entries_it_covers() {
        let folder = tempfile::tempdir().unwrap();
        let log = RaftLog::open(folder.path(), true).unwrap();
        let entries = (1..=5).map(|index| entry(index, 1, b"x")).collect();
        log.write(&[persist(1, entries, 5)]).unwrap();
        log.compacted(&snapshot_at(3, 1, b"state at 3")).unwrap();
        let durable = log.load().unwrap();
        assert_eq!(durable.snapshot.unwrap().get_data(), b"state at 3");
        let indices: Vec<u64> = durable.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indices, vec![4, 5]);
        assert_eq!(durable.conf_state.unwrap().voters, vec![1, 2, 3]);

        // A snapshot received from a leader far ahead, then entries after
        // it: no hole, nothing stale.
        let received = Persist {
            number: 2,
            hard_state: None,
            entries: vec![entry(21, 2, b"after")],
            snapshot: Some(snapshot_at(20, 2, b"state at 20")),
        };
        log.write(&[received]).unwrap();
        drop(log);
        let durable = RaftLog::open(folder.path(), false).unwrap().load().unwrap();
        assert_eq!(durable.snapshot.unwrap().get_metadata().index, 20);
        let indices: Vec<u64> = durable.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indices, vec![21]);
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_naming_the_file() {
        let folder = tempfile::tempdir().unwrap();
        let log = RaftLog::open(folder.path(), true).unwrap();
        fs::write(folder.path().join("snapshot"), b"\xff\xff\xff not protobuf").unwrap();
        let error = log.load().unwrap_err().to_string();
        assert!(
            error.contains("snapshot") && error.contains("corrupt"),
            "{error}"
        );
    }
}
