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
use std::sync::{Arc, Mutex};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft_engine::{Command, Config, LogBatch, MessageExt, ReadableSize, RecoveryMode};

use super::files::{SyncWatch, WatchedFileSystem};
use super::identity::{IdentityError, IdentityFile, IdentityRecord, Owner};
use crate::protocols::raft::{Durable, LogPosition, Persist, Voting};

type Engine = raft_engine::Engine<WatchedFileSystem>;

/// raft-engine keeps many groups apart by id; a node has one.
const GROUP: u64 = 1;
const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
/// Engine files past this size are rewritten or removed once compacted.
const PURGE_THRESHOLD_BYTES: u64 = 256 * 1024 * 1024;
/// Size of one engine log file before the next is started.
const TARGET_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// The snapshot file starts with this, then the protobuf's length (u64)
/// and CRC-32 (u32), little-endian.
const SNAPSHOT_MAGIC: &[u8; 8] = b"AMSNAP1\n";
const SNAPSHOT_HEADER_BYTES: usize = 8 + 8 + 4;

#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    #[error("raft log in {path}: {reason}")]
    Engine { path: String, reason: String },
    #[error("snapshot {path}: {cause}")]
    Snapshot { path: String, cause: std::io::Error },
    #[error("snapshot {path} is damaged: {reason}")]
    CorruptSnapshot { path: String, reason: String },
    #[error("raft log in {path} starts at entry {first} but its snapshot ends at entry {snapshot}: the snapshot file is missing or older than the log")]
    Gap {
        path: String,
        first: u64,
        snapshot: u64,
    },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

#[derive(Clone)]
struct EntryType;

impl MessageExt for EntryType {
    type Entry = Entry;

    fn index(entry: &Entry) -> u64 {
        entry.index
    }
}

/// What opening a log found, beyond its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// What voting the log allows.
    pub voting: Voting,
    /// Said once, at open, to the operator: why voting is withheld, or
    /// what was repaired.
    pub notes: Vec<String>,
}

/// One replica's durable log.
pub struct RaftLog {
    engine: Engine,
    /// What the engine's syncs did.
    syncs: Arc<SyncWatch>,
    directory: PathBuf,
    fsync: bool,
    /// Rewritten after each write that moves the log on, with the
    /// position it records; None only while [`RaftLog::open`] runs.
    identity: Mutex<Option<(IdentityFile, LogPosition)>>,
    opened: Opened,
}

impl RaftLog {
    /// Opens (or creates) the log in `directory` for `owner`, reads all of
    /// it back to check it, and compares it with the folder's identity
    /// record. Damage that loses nothing anyone was told of (the unfinished
    /// last write of a crash) is repaired; a log found behind its record
    /// opens with voting withheld ([`Opened`]); damage that cannot be
    /// read past is an error naming the file. With `fsync` false, writes
    /// are not forced to disk: for benchmarks only.
    pub fn open(directory: &Path, owner: &Owner, fsync: bool) -> Result<RaftLog, RaftLogError> {
        RaftLog::open_with(directory, owner, fsync, None)
    }

    /// [`RaftLog::open`], with the engine's syncs after the first
    /// `fail_syncs_after` failing (`[[disk_faults]]`, for fault tests).
    pub fn open_with(
        directory: &Path,
        owner: &Owner,
        fsync: bool,
        fail_syncs_after: Option<u64>,
    ) -> Result<RaftLog, RaftLogError> {
        let engine_directory = directory.join("engine");
        fs::create_dir_all(&engine_directory).map_err(|error| RaftLogError::Engine {
            path: engine_directory.display().to_string(),
            reason: error.to_string(),
        })?;
        let record = IdentityFile::read(directory, owner)?;
        let mut notes = Vec::new();
        let syncs = Arc::new(SyncWatch::failing_after(fail_syncs_after));
        let (engine, repaired) = open_engine(&engine_directory, &syncs)?;
        let mut log = RaftLog {
            engine,
            syncs,
            directory: directory.to_path_buf(),
            fsync,
            identity: Mutex::new(None),
            opened: Opened {
                voting: Voting::Allowed,
                notes: Vec::new(),
            },
        };
        let durable = log.load()?;
        check_no_gap(&durable, &engine_directory)?;
        let position = durable.position();
        let behind = record
            .as_ref()
            .is_some_and(|record| position.is_behind(&record.position));
        let (voting, reason) = match &record {
            None if position == LogPosition::default() => (Voting::Fresh, String::new()),
            None => {
                notes.push(format!(
                    "no identity file in {}: made one from the log",
                    directory.display()
                ));
                (Voting::Allowed, String::new())
            }
            Some(record) if behind => (
                record.voting.withhold(record.position),
                lost_reason(
                    &engine_directory,
                    &position,
                    &record.position,
                    repaired.as_ref(),
                ),
            ),
            Some(record) => (record.voting.after(&position), record.reason.clone()),
        };
        if let Some(repaired) = repaired.filter(|_| !behind) {
            // A crash's unfinished write: nothing in it was promised.
            let _ = fs::remove_dir_all(&repaired.kept);
            notes.push(format!(
                "discarded the unfinished last write in {} ({}); the identity record shows nothing in it was acknowledged",
                engine_directory.display(),
                repaired.reason
            ));
        }
        if let Voting::Withheld { .. } = voting {
            notes.push(format!("votes {voting}: {reason}"));
        }
        let record = IdentityRecord {
            format: super::identity::FORMAT_VERSION,
            owner: owner.clone(),
            sequence: record.map_or(0, |record| record.sequence + 1),
            position,
            voting,
            reason,
        };
        let identity = IdentityFile::create(directory, record, fsync)?;
        log.identity = Mutex::new(Some((identity, position)));
        log.opened = Opened { voting, notes };
        Ok(log)
    }

    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// The first sync of the engine's files that failed, naming the file.
    pub fn sync_failure(&self) -> Option<String> {
        self.syncs.failure()
    }

    /// What [`RaftLog::open`] found.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Why voting is withheld, as the identity record says (empty when
    /// it is not).
    pub fn voting_reason(&self) -> String {
        self.identity
            .lock()
            .expect("identity lock is never poisoned")
            .as_ref()
            .map_or_else(String::new, |(identity, _)| {
                identity.record().reason.clone()
            })
    }

    /// What voting the log allows now.
    pub fn voting(&self) -> Voting {
        self.identity
            .lock()
            .expect("identity lock is never poisoned")
            .as_ref()
            .map_or(Voting::Allowed, |(identity, _)| identity.record().voting)
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
        self.write_batch(&mut batch)?;
        self.record_position(persists)
    }

    /// Brings the identity record up to the log after `persists` were
    /// written, before anyone is told they are durable.
    fn record_position(&self, persists: &[Persist]) -> Result<(), RaftLogError> {
        let mut identity = self
            .identity
            .lock()
            .expect("identity lock is never poisoned");
        let Some((file, position)) = identity.as_mut() else {
            return Ok(());
        };
        for persist in persists {
            position.absorb(persist);
        }
        let voting = file.record().voting.after(position);
        file.update(*position, voting)?;
        Ok(())
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

    /// Writes `snapshot` (header, then protobuf) to a temporary file,
    /// syncs it and renames it over the previous one.
    fn keep_snapshot(&self, snapshot: &Snapshot) -> Result<(), RaftLogError> {
        let path = self.snapshot_path();
        let temporary = self.directory.join("snapshot.tmp");
        let failed = |source| RaftLogError::Snapshot {
            path: path.display().to_string(),
            cause: source,
        };
        let body = snapshot
            .write_to_bytes()
            .map_err(|error| failed(std::io::Error::other(error.to_string())))?;
        let mut header = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
        header.extend_from_slice(SNAPSHOT_MAGIC);
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        let mut file = File::create(&temporary).map_err(failed)?;
        file.write_all(&header).map_err(failed)?;
        file.write_all(&body).map_err(failed)?;
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
                    cause: source,
                })
            }
        };
        let corrupt = |reason: String| RaftLogError::CorruptSnapshot {
            path: path.display().to_string(),
            reason,
        };
        let body = snapshot_body(&bytes).map_err(corrupt)?;
        let snapshot = Snapshot::parse_from_bytes(body)
            .map_err(|error| corrupt(format!("unreadable protobuf: {error}")))?;
        Ok(Some(snapshot))
    }

    fn engine_error(&self, error: raft_engine::Error) -> RaftLogError {
        RaftLogError::Engine {
            path: self.directory.join("engine").display().to_string(),
            reason: engine_reason(&error),
        }
    }
}

/// raft-engine's words, led by what they mean when it is the disk that is
/// full (raft-engine says only "nospace" then).
fn engine_reason(error: &raft_engine::Error) -> String {
    let words = error.to_string();
    let full = matches!(error, raft_engine::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull)
        || words.contains("nospace");
    match full {
        true => format!("the disk is full (no space left on device); raft-engine: {words}"),
        false => words,
    }
}

/// A log whose first entry does not follow its snapshot lost the snapshot
/// (or holds an older one): what lies between is gone.
fn check_no_gap(durable: &Durable, engine_directory: &Path) -> Result<(), RaftLogError> {
    let Some(first) = durable.entries.first() else {
        return Ok(());
    };
    let snapshot = durable
        .snapshot
        .as_ref()
        .map_or(0, |snapshot| snapshot.get_metadata().index);
    if first.index == snapshot + 1 {
        return Ok(());
    }
    Err(RaftLogError::Gap {
        path: engine_directory.display().to_string(),
        first: first.index,
        snapshot,
    })
}

/// Why a log found behind its identity record withholds its votes.
fn lost_reason(
    engine_directory: &Path,
    found: &LogPosition,
    recorded: &LogPosition,
    repaired: Option<&Repair>,
) -> String {
    let mut reason = format!(
        "the log in {} ends at entry {} of term {} in term {}, behind its identity record (entry {} of term {} in term {}): synced state was lost",
        engine_directory.display(),
        found.last_index,
        found.last_term,
        found.term,
        recorded.last_index,
        recorded.last_term,
        recorded.term,
    );
    if let Some(repaired) = repaired {
        reason.push_str(&format!(
            " (raft-engine: {}; the files as found are in {})",
            repaired.reason,
            repaired.kept.display()
        ));
    }
    reason
}

/// The protobuf of a snapshot file, once its header and checksum agree.
fn snapshot_body(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(format!(
            "no snapshot header ({} bytes; a snapshot file starts with {:?})",
            bytes.len(),
            String::from_utf8_lossy(SNAPSHOT_MAGIC).trim_end()
        ));
    }
    let length = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let checksum = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if body.len() as u64 != length {
        return Err(format!(
            "{} bytes after the header, the header says {length}",
            body.len()
        ));
    }
    let computed = crc32fast::hash(body);
    if computed != checksum {
        return Err(format!("checksum {computed:08x}, expected {checksum:08x}"));
    }
    Ok(body)
}

fn engine_config(directory: &Path, recovery_mode: RecoveryMode) -> Config {
    Config {
        dir: directory.display().to_string(),
        purge_threshold: ReadableSize(PURGE_THRESHOLD_BYTES),
        target_file_size: ReadableSize(TARGET_FILE_BYTES),
        recovery_mode,
        ..Default::default()
    }
}

/// What opening the engine cut from the tail of its last file.
struct Repair {
    /// raft-engine's words.
    reason: String,
    /// Where the files are, as they were found.
    kept: PathBuf,
}

/// Opens raft-engine so that damage is never silently cut away. First
/// with absolute consistency: any record that fails its checksum is an
/// error. If only the last file's tail is damaged, which is also what a
/// crash in the middle of a write (or space allocated ahead and never
/// written) leaves, the engine's files are first copied to
/// `damaged-<unix seconds>/` beside it, then opened again letting the
/// engine cut the tail; the caller compares what is left with the
/// identity record to tell a crash from lost data. Returns the engine and
/// what was cut, if anything.
fn open_engine(
    directory: &Path,
    syncs: &Arc<SyncWatch>,
) -> Result<(Engine, Option<Repair>), RaftLogError> {
    let open = |recovery_mode| {
        let file_system = Arc::new(WatchedFileSystem::new(syncs.clone()));
        Engine::open_with_file_system(engine_config(directory, recovery_mode), file_system)
    };
    let failed = |error: raft_engine::Error| RaftLogError::Engine {
        path: directory.display().to_string(),
        reason: error.to_string(),
    };
    let strict = match open(RecoveryMode::AbsoluteConsistency) {
        Ok(engine) => return Ok((engine, None)),
        Err(error @ raft_engine::Error::Corruption(_)) => error,
        Err(error) => return Err(failed(error)),
    };
    let reason = strict.to_string();
    let kept = keep_damaged_files(directory).map_err(|error| RaftLogError::Engine {
        path: directory.display().to_string(),
        reason: format!("{reason}; and the damaged files could not be copied aside: {error}"),
    })?;
    match open(RecoveryMode::TolerateTailCorruption) {
        Ok(engine) => Ok((engine, Some(Repair { reason, kept }))),
        // Not only the tail: nothing was changed, and nothing is guessed.
        Err(error) => Err(failed(error)),
    }
}

/// Copies the engine's files to a new `damaged-<unix seconds>` folder
/// beside `directory`, so that the bytes raft-engine is about to cut stay
/// for whoever investigates.
fn keep_damaged_files(directory: &Path) -> std::io::Result<PathBuf> {
    let parent = directory.parent().unwrap_or(directory);
    let kept = unused_path(parent, "damaged");
    fs::create_dir_all(&kept)?;
    for file in fs::read_dir(directory)? {
        let file = file?;
        if file.file_type()?.is_file() {
            fs::copy(file.path(), kept.join(file.file_name()))?;
        }
    }
    Ok(kept)
}

/// `parent/<stem>-<unix seconds>`, with a number after it if that is
/// taken: a name for something kept aside.
fn unused_path(parent: &Path, stem: &str) -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut path = parent.join(format!("{stem}-{seconds}"));
    let mut suffix = 1;
    while path.exists() {
        path = parent.join(format!("{stem}-{seconds}-{suffix}"));
        suffix += 1;
    }
    path
}

/// What [`rebuild`] did.
#[derive(Debug)]
pub struct Rebuilt {
    /// Where the replica's folder, as it was, now is.
    pub kept: PathBuf,
    pub voting: Voting,
}

/// Starts a replica whose log cannot be read over, for the operator
/// (`agentmesh members rebuild`): its folder is moved aside, untouched,
/// and a new one holds an empty log and an identity record that withholds
/// the replica's votes for what the old folder had reached: its identity
/// record's position, or, when that is unreadable too, `term_lost` given
/// by the operator (the highest term the group has seen will do). The node
/// must be stopped: a folder whose engine is locked is refused.
pub fn rebuild(directory: &Path, owner: &Owner, term_lost: Option<u64>) -> Result<Rebuilt, String> {
    if !directory.is_dir() {
        return Err(format!(
            "there is no replica folder at {}",
            directory.display()
        ));
    }
    let lock = directory.join("engine").join("LOCK");
    if let Ok(file) = File::open(&lock) {
        fs2::FileExt::try_lock_exclusive(&file).map_err(|_| {
            format!(
                "{} is locked: the node still runs; stop it first",
                lock.display()
            )
        })?;
    }
    let lost = match (IdentityFile::read(directory, owner), term_lost) {
        (Err(error @ IdentityError::Foreign { .. }), _) => return Err(error.to_string()),
        (_, Some(term)) => LogPosition {
            term,
            last_index: u64::MAX,
            last_term: term,
        },
        (Ok(Some(record)), None) => match record.voting.withhold(record.position) {
            Voting::Withheld { lost } => lost,
            _ => record.position,
        },
        (Ok(None), None) => {
            return Err(format!(
                "{} has no identity record to say how far its log reached; give --term-lost with the highest term any replica reports (agentmesh status)",
                directory.display()
            ))
        }
        (Err(error), None) => {
            return Err(format!(
                "{error}; give --term-lost with the highest term any replica reports (agentmesh status)"
            ))
        }
    };
    let name = directory.file_name().map_or_else(
        || "replica".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let parent = directory.parent().unwrap_or(Path::new("."));
    let kept = unused_path(parent, &format!("{name}.before-rebuild"));
    let moved = |error: std::io::Error| {
        format!(
            "cannot move {} to {}: {error}",
            directory.display(),
            kept.display()
        )
    };
    fs::rename(directory, &kept).map_err(moved)?;
    fs::create_dir_all(directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let voting = Voting::Withheld { lost };
    let record = IdentityRecord {
        format: super::identity::FORMAT_VERSION,
        owner: owner.clone(),
        sequence: 0,
        position: LogPosition::default(),
        voting,
        reason: format!(
            "rebuilt empty by agentmesh members rebuild; the folder as it was is in {}",
            kept.display()
        ),
    };
    IdentityFile::create(directory, record, true).map_err(|error| error.to_string())?;
    Ok(Rebuilt { kept, voting })
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
            let log = RaftLog::open(folder.path(), &owner(), true).unwrap();
            assert!(log.load().unwrap().entries.is_empty(), "a new log is empty");
            let first = persist(1, vec![entry(1, 1, b"a"), entry(2, 1, b"b")], 1);
            let second = persist(2, vec![entry(3, 1, b"c")], 2);
            log.write(&[first, second]).unwrap();
            // A new leader's entries replace the uncommitted suffix.
            log.write(&[persist(3, vec![entry(3, 2, b"d")], 3)])
                .unwrap();
        }
        let durable = RaftLog::open(folder.path(), &owner(), true)
            .unwrap()
            .load()
            .unwrap();
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
        let log = RaftLog::open(folder.path(), &owner(), true).unwrap();
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
        let durable = RaftLog::open(folder.path(), &owner(), false)
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(durable.snapshot.unwrap().get_metadata().index, 20);
        let indices: Vec<u64> = durable.entries.iter().map(|entry| entry.index).collect();
        assert_eq!(indices, vec![21]);
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_naming_the_file() {
        let folder = tempfile::tempdir().unwrap();
        let log = RaftLog::open(folder.path(), &owner(), true).unwrap();
        fs::write(folder.path().join("snapshot"), b"\xff\xff\xff not protobuf").unwrap();
        let error = log.load().unwrap_err().to_string();
        assert!(
            error.contains("snapshot") && error.contains("damaged"),
            "{error}"
        );
    }
}
