//! The sans-I/O glue around raft-rs's `RawNode`: one Raft replica that is
//! ticked, stepped and asked to propose, and that answers with [`Outputs`]
//! for its caller to carry out, in raft-rs's documented order:
//!
//! 1. send `messages` (a leader's, at once: replication runs alongside its
//!    own disk write);
//! 2. apply `snapshot`, if any, to the state machine;
//! 3. apply `committed` entries, in order;
//! 4. write `persist` durably (hard state, entries, snapshot), then call
//!    [`Replica::persisted`] with its number and send the messages that
//!    returns (votes and acknowledgements must not leave before the state
//!    they promise is on disk).
//!
//! Persistence is asynchronous (`advance_append_async` and
//! `on_persist_ready`), so a slow fsync never blocks ticking or stepping;
//! several persists may be outstanding and complete in order. The log the
//! replica reads is an in-memory [`MemStorage`] that runs ahead of the disk,
//! as raft-rs requires; after a crash it is rebuilt from what was durable
//! ([`Durable`]).
//!
//! raft-rs draws each election timeout from an unseeded random number in
//! `[min_election_tick, max_election_tick)`. To keep this core deterministic
//! that range is one tick wide, and replicas are given different widths by
//! the caller ([`ReplicaConfig::election_ticks`]), which is what the random
//! draw is for: that no two replicas time out together for ever.

use raft::eraftpb::{ConfState, Entry, HardState, Message, Snapshot};
use raft::storage::MemStorage;
use raft::{RawNode, ReadState, StateRole};

/// How a replica is set up.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub id: u64,
    /// The voters when the group is created (ignored on restart from a
    /// durable state that has a configuration).
    pub voters: Vec<u64>,
    /// Ticks without a leader's word before this replica stands for
    /// election; give replicas different values.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Largest batch of entries in one append message, in bytes.
    pub message_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub inflight_messages_max: usize,
}

impl ReplicaConfig {
    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            min_election_tick: self.election_ticks,
            max_election_tick: self.election_ticks + 1,
            max_size_per_msg: self.message_bytes_max,
            max_inflight_msgs: self.inflight_messages_max,
            applied,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        }
    }
}

/// What a replica has made durable: enough to restart it.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    pub hard_state: HardState,
    pub conf_state: Option<ConfState>,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, in index order.
    pub entries: Vec<Entry>,
}

impl Durable {
    /// Adds a completed persist: a snapshot replaces everything before it,
    /// entries replace any durable suffix they conflict with.
    pub fn absorb(&mut self, persist: &Persist) {
        if let Some(snapshot) = &persist.snapshot {
            let index = snapshot.get_metadata().index;
            self.entries.retain(|entry| entry.index > index);
            self.conf_state = Some(snapshot.get_metadata().get_conf_state().clone());
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(first) = persist.entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend(persist.entries.iter().cloned());
        }
        if let Some(hard_state) = &persist.hard_state {
            self.hard_state = hard_state.clone();
        }
    }
}

/// One batch to write durably, in order with the others.
#[derive(Clone, Debug)]
pub struct Persist {
    /// Hand back to [`Replica::persisted`] once written.
    pub number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
}

/// What one [`Replica::drive`] asks of its caller, in order.
#[derive(Debug, Default)]
pub struct Outputs {
    pub messages: Vec<Message>,
    pub snapshot: Option<Snapshot>,
    pub committed: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub persist: Option<Persist>,
}

/// One Raft replica.
pub struct Replica {
    node: RawNode<MemStorage>,
    /// Per outstanding persist: its number and the messages that wait for it.
    waiting: std::collections::VecDeque<(u64, Vec<Message>)>,
}

impl Replica {
    /// A replica starting from `durable` (empty for a new group).
    pub fn new(
        config: &ReplicaConfig,
        durable: &Durable,
        logger: &slog::Logger,
    ) -> raft::Result<Replica> {
        let storage = MemStorage::new();
        let applied = {
            let mut core = storage.wl();
            match (&durable.snapshot, &durable.conf_state) {
                (Some(snapshot), _) => core.apply_snapshot(snapshot.clone())?,
                (None, Some(conf_state)) => core.set_conf_state(conf_state.clone()),
                (None, None) => {
                    core.set_conf_state(ConfState::from((config.voters.clone(), vec![])))
                }
            }
            core.append(&durable.entries)?;
            core.set_hardstate(durable.hard_state.clone());
            // The state machine is rebuilt from the snapshot and re-applies
            // the committed entries after it.
            durable
                .snapshot
                .as_ref()
                .map_or(0, |snapshot| snapshot.get_metadata().index)
        };
        let node = RawNode::new(&config.raft_config(applied), storage, logger)?;
        Ok(Replica {
            node,
            waiting: std::collections::VecDeque::new(),
        })
    }

    pub fn id(&self) -> u64 {
        self.node.raft.id
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The leader this replica knows of (0: none).
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// One logical clock tick.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A message from another replica.
    pub fn step(&mut self, message: Message) -> raft::Result<()> {
        self.node.step(message)
    }

    /// Proposes `data` for the log (a follower forwards it to the leader).
    pub fn propose(&mut self, data: Vec<u8>) -> raft::Result<()> {
        self.node.propose(Vec::new(), data)
    }

    /// Asks for a linearizable read point, answered in a later
    /// [`Outputs::read_states`] with `context`.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.node.read_index(context);
    }

    /// Takes whatever raft-rs has ready. The caller must carry out the
    /// outputs (see the module doc) before the next drive, applying the
    /// committed entries it returns.
    pub fn drive(&mut self) -> raft::Result<Outputs> {
        let mut outputs = Outputs::default();
        if !self.node.has_ready() {
            return Ok(outputs);
        }
        let mut ready = self.node.ready();
        outputs.messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.node
                .mut_store()
                .wl()
                .apply_snapshot(snapshot.clone())?;
            outputs.snapshot = Some(snapshot);
        }
        outputs.committed = ready.take_committed_entries();
        outputs.read_states = ready.take_read_states();
        if !ready.entries().is_empty() {
            self.node.mut_store().wl().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.node.mut_store().wl().set_hardstate(hard_state.clone());
        }
        let persist = Persist {
            number: ready.number(),
            hard_state: ready.hs().cloned(),
            entries: ready.entries().clone(),
            snapshot: outputs.snapshot.clone(),
        };
        let held = ready.take_persisted_messages();
        let needs_writing = persist.hard_state.is_some()
            || !persist.entries.is_empty()
            || persist.snapshot.is_some();
        if needs_writing || !held.is_empty() {
            self.waiting.push_back((persist.number, held));
            outputs.persist = Some(persist);
        }
        self.node.advance_append_async(ready);
        if let Some(last) = outputs.committed.last() {
            self.node.advance_apply_to(last.index);
        }
        Ok(outputs)
    }

    /// Persist `number` (and every one before it) is durable. Returns the
    /// messages that waited for it, to send now.
    pub fn persisted(&mut self, number: u64) -> Vec<Message> {
        self.node.on_persist_ready(number);
        let mut released = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(waiting, _)| *waiting <= number)
        {
            let (_, messages) = self.waiting.pop_front().expect("just seen");
            released.extend(messages);
        }
        released
    }
}

/// A slog drain that forwards raft-rs's log records to `tracing`, at the
/// same level, with the record's message and location.
pub struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _values: &slog::OwnedKVList) -> Result<(), Self::Err> {
        let message = record.msg();
        let module = record.module();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", module, "{message}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", module, "{message}"),
            slog::Level::Info => tracing::info!(target: "raft", module, "{message}"),
            slog::Level::Debug => tracing::debug!(target: "raft", module, "{message}"),
            slog::Level::Trace => tracing::trace!(target: "raft", module, "{message}"),
        }
        Ok(())
    }
}

/// A logger for raft-rs that writes through `tracing`.
pub fn tracing_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
