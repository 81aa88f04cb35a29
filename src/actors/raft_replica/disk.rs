//! A control-plane replica's disk as its incarnations share it: the log
//! ([`super::log::RaftLog`]), claimed by one incarnation at a time, and
//! the writer thread that makes each incarnation's batches durable with
//! one fsync for every batch queued meanwhile (group commit).

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use ractor::{ActorRef, RpcReplyPort};
use raft::eraftpb::Snapshot;

use crate::metrics::NodeMetrics;
use crate::protocols::raft::{Persist, Voting};

use super::identity::Owner;
use super::log::{RaftLog, RaftLogError};
use crate::actors::messages::RaftMsg;

/// Disk jobs one write takes at most.
const GROUP_COMMIT_MAX: usize = 1_024;

/// What the writer thread is asked to make durable, in order.
pub(super) enum DiskJob {
    Persist(Persist),
    /// The configuration after an applied membership change.
    Membership(raft::eraftpb::ConfState),
    /// A snapshot taken here by compaction.
    Compacted(Snapshot),
    /// Answer once every job before this one is durable.
    Barrier(RpcReplyPort<()>),
}

/// A replica's log, shared by its incarnations. Only the incarnation that
/// claimed it last may write.
pub struct ReplicaDisk {
    inner: Mutex<DiskInner>,
}

struct DiskInner {
    generation: u64,
    /// None once closed (the node stopped, or a write failed).
    log: Option<RaftLog>,
    /// Why a write failed, if one did.
    failed: Option<String>,
}

/// What an incarnation starts from.
pub(super) struct Claimed {
    pub generation: u64,
    pub durable: crate::protocols::raft::Durable,
    pub fsync: bool,
    pub voting: Voting,
    pub voting_reason: String,
}

impl ReplicaDisk {
    /// Opens the log and says once what opening it found; its syncs
    /// after the first `fail_syncs_after` fail (fault tests only).
    pub fn open(
        directory: &Path,
        owner: &Owner,
        fsync: bool,
        fail_syncs_after: Option<u64>,
    ) -> Result<ReplicaDisk, RaftLogError> {
        let log = RaftLog::open_with(directory, owner, fsync, fail_syncs_after)?;
        for note in &log.opened().notes {
            tracing::warn!(node = %owner.node, "raft log: {note}");
        }
        Ok(ReplicaDisk {
            inner: Mutex::new(DiskInner {
                generation: 0,
                log: Some(log),
                failed: None,
            }),
        })
    }

    /// A writer that panicked with the lock held left nothing half done in
    /// what the lock guards (a generation and the log's handle): the panic
    /// is answered by closing the log (`fail`).
    fn lock(&self) -> std::sync::MutexGuard<'_, DiskInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the caller the only writer and reads what is durable. An
    /// older writer holds the lock while it writes, so nothing it writes
    /// lands after this read.
    pub(super) fn claim(&self) -> Result<Claimed, String> {
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        if let Some(reason) = &inner.failed {
            return Err(format!(
                "the replica's log failed and stays closed until the node restarts: {reason}"
            ));
        }
        let log = inner.log.as_ref().ok_or("the replica's log is closed")?;
        let durable = log.load().map_err(|error| error.to_string())?;
        Ok(Claimed {
            generation,
            durable,
            fsync: log.fsync(),
            voting: log.voting(),
            voting_reason: log.voting_reason(),
        })
    }

    /// Closes the log after a write failed half way (raft-engine cannot
    /// say what reached the disk): later claims are refused with `reason`.
    /// The log is leaked, not dropped: dropping raft-engine syncs its
    /// files once more, and after a failed sync that panics again, twice
    /// (one per file queue), which aborts the process. Its files stay
    /// open until the node stops; the replica does not reopen them.
    fn fail(&self, reason: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        std::mem::forget(inner.log.take());
        inner.failed = Some(reason.to_string());
    }

    /// The first failed sync of the log's files, naming the file.
    fn sync_failure(&self) -> Option<String> {
        self.lock().log.as_ref()?.sync_failure()
    }

    /// Writes `jobs` for `generation`; None if a newer incarnation claimed
    /// the disk (the jobs are then dropped unwritten, as a crash would).
    fn write(&self, generation: u64, jobs: &[DiskJob]) -> Result<Option<u64>, RaftLogError> {
        let inner = self.lock();
        let Some(log) = inner
            .log
            .as_ref()
            .filter(|_| inner.generation == generation)
        else {
            return Ok(None);
        };
        let mut persists = Vec::new();
        let mut last = 0;
        for job in jobs {
            match job {
                DiskJob::Persist(persist) => {
                    last = persist.number;
                    persists.push(persist.clone());
                }
                DiskJob::Compacted(snapshot) => {
                    log.write(&std::mem::take(&mut persists))?;
                    log.compacted(snapshot)?;
                }
                DiskJob::Membership(conf_state) => {
                    log.write(&std::mem::take(&mut persists))?;
                    log.keep_membership(conf_state)?;
                }
                DiskJob::Barrier(_) => log.write(&std::mem::take(&mut persists))?,
            }
        }
        log.write(&persists)?;
        Ok(Some(last))
    }

    /// Closes the log (releasing its directory's lock); writers stop.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.log = None;
    }
}

/// Starts the writer thread of one incarnation. Its queue needs no bound
/// of its own: what reaches it is bounded by Raft's flow control (entries
/// a leader holds uncommitted, appends in flight to a follower) and by the
/// client requests a replica admits.
pub(super) fn spawn_writer(
    disk: Arc<ReplicaDisk>,
    generation: u64,
    replica: ActorRef<RaftMsg>,
    metrics: Arc<NodeMetrics>,
    node: &str,
) -> std::io::Result<mpsc::Sender<DiskJob>> {
    let (sender, receiver) = mpsc::channel::<DiskJob>();
    std::thread::Builder::new()
        .name(format!("raft-log-{node}"))
        .spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut jobs = vec![first];
                while jobs.len() < GROUP_COMMIT_MAX {
                    match receiver.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                // A panic in the write path must not leave the replica
                // waiting for an answer for ever. raft-engine panics when
                // a sync fails; the failure is then reported as what it is.
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    disk.write(generation, &jobs)
                }))
                .unwrap_or_else(|panic| {
                    let reason = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("the log writer panicked");
                    let reason = disk
                        .sync_failure()
                        .unwrap_or_else(|| format!("the log writer panicked: {reason}"));
                    disk.fail(&reason);
                    Err(RaftLogError::Engine {
                        path: "the replica's log".into(),
                        reason,
                    })
                });
                match written {
                    Ok(Some(number)) => {
                        for job in jobs {
                            if let DiskJob::Barrier(reply) = job {
                                let _ = reply.send(());
                            }
                        }
                        NodeMetrics::count(&metrics.counters.raft_log_writes);
                        if number > 0 {
                            let _ = replica.cast(RaftMsg::Persisted { generation, number });
                        }
                    }
                    Ok(None) => return,
                    Err(error) => {
                        // What reached the disk is unknown: the log stays
                        // closed until the node restarts and reads it anew.
                        let reason = error.to_string();
                        disk.fail(&reason);
                        let _ = replica.cast(RaftMsg::DiskFailed(reason));
                        return;
                    }
                }
            }
        })?;
    Ok(sender)
}
