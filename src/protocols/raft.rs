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

use std::sync::{Arc, RwLock};

use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, HardState, Message, MessageType, Snapshot,
};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, RawNode, ReadState, StateRole, Storage, StorageError};

/// The log raft-rs reads: raft-rs's in-memory log, plus the latest
/// snapshot of the state machine (with its data), which followers too far
/// behind are sent. [`Replica::compact`] takes one and drops the entries
/// before it.
#[derive(Clone, Default)]
pub struct ReplicaLog {
    entries: MemStorage,
    snapshot: Arc<RwLock<Snapshot>>,
    /// The configuration after the latest applied membership change, if
    /// one came after the snapshot.
    membership: Arc<RwLock<Option<ConfState>>>,
}

impl ReplicaLog {
    fn latest_snapshot(&self) -> Snapshot {
        self.snapshot
            .read()
            .expect("snapshot lock is never poisoned")
            .clone()
    }

    fn keep_snapshot(&self, snapshot: Snapshot) {
        *self
            .snapshot
            .write()
            .expect("snapshot lock is never poisoned") = snapshot;
    }

    fn keep_membership(&self, conf_state: Option<ConfState>) {
        *self
            .membership
            .write()
            .expect("membership lock is never poisoned") = conf_state;
    }
}

impl Storage for ReplicaLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.entries.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.entries.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self
            .snapshot
            .read()
            .expect("snapshot lock is never poisoned");
        let metadata = snapshot.get_metadata();
        if index != 0 && index == metadata.index {
            return Ok(metadata.term);
        }
        drop(snapshot);
        self.entries.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.entries.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.entries.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut snapshot = self.latest_snapshot();
        let index = snapshot.get_metadata().index;
        // request_index is 0 unless a follower asked for a newer one.
        if index > 0 && index >= request_index {
            // A replica that joined after the snapshot was taken must find
            // itself in it, or it refuses it. The changes between the
            // snapshot and now come to it again in the entries that follow,
            // and applying a change twice changes nothing.
            let membership = self
                .membership
                .read()
                .expect("membership lock is never poisoned");
            if let Some(conf_state) = membership.as_ref() {
                snapshot.mut_metadata().set_conf_state(conf_state.clone());
            }
            Ok(snapshot)
        } else {
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ))
        }
    }
}

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
    /// Bytes of entries a leader holds uncommitted; proposals beyond are
    /// refused (`ProposalDropped`), so a slow quorum bounds memory.
    pub uncommitted_bytes_max: u64,
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
            max_uncommitted_size: self.uncommitted_bytes_max,
            applied,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        }
    }
}

/// A change to the group's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Join as a learner: replicated to, but no vote.
    AddLearner,
    /// A learner (or a new node) becomes a voter.
    Promote,
    Remove,
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
            self.compacted(snapshot);
        }
        if let Some(first) = persist.entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend(persist.entries.iter().cloned());
        }
        if let Some(hard_state) = &persist.hard_state {
            self.hard_state = hard_state.clone();
        }
    }

    /// Keeps `snapshot` in place of every entry up to its index.
    pub fn compacted(&mut self, snapshot: &Snapshot) {
        let index = snapshot.get_metadata().index;
        self.entries.retain(|entry| entry.index > index);
        self.conf_state = Some(snapshot.get_metadata().get_conf_state().clone());
        self.snapshot = Some(snapshot.clone());
    }
}

impl Durable {
    /// Where this durable log ends: see [`LogPosition`].
    pub fn position(&self) -> LogPosition {
        let snapshot = self
            .snapshot
            .as_ref()
            .map(|snapshot| snapshot.get_metadata());
        let (last_index, last_term) = match (self.entries.last(), snapshot) {
            (Some(entry), _) => (entry.index, entry.term),
            (None, Some(metadata)) => (metadata.index, metadata.term),
            (None, None) => (0, 0),
        };
        let term = self
            .hard_state
            .term
            .max(snapshot.map_or(0, |metadata| metadata.term));
        LogPosition {
            term,
            last_index,
            last_term,
        }
    }
}

/// How far a replica's durable log reached: its current term (from the
/// hard state, which also holds its vote in that term) and its last entry.
/// Each write moves it on: the term never falls, and within one term the
/// last entry only grows or is replaced by entries of a later term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub term: u64,
    pub last_index: u64,
    pub last_term: u64,
}

impl LogPosition {
    /// Moves on past `persist`, written after this position.
    pub fn absorb(&mut self, persist: &Persist) {
        if let Some(snapshot) = &persist.snapshot {
            let metadata = snapshot.get_metadata();
            self.last_index = metadata.index;
            self.last_term = metadata.term;
            self.term = self.term.max(metadata.term);
        }
        if let Some(entry) = persist.entries.last() {
            self.last_index = entry.index;
            self.last_term = entry.term;
        }
        if let Some(hard_state) = &persist.hard_state {
            self.term = self.term.max(hard_state.term);
        }
    }

    /// Whether a log at this position lost something that a log at
    /// `recorded` had made durable: an earlier term (a vote forgotten) or,
    /// in the same term, an earlier last entry.
    pub fn is_behind(&self, recorded: &LogPosition) -> bool {
        (self.term, self.last_term, self.last_index)
            < (recorded.term, recorded.last_term, recorded.last_index)
    }
}

/// Whether a replica may vote and stand for election. A replica that lost
/// durable state it had promised from (its votes, entries it acknowledged)
/// breaks Raft's safety if it votes as if it had never made the promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Voting {
    /// Its log holds everything it promised.
    #[default]
    Allowed,
    /// It has never held an entry and has no record of having held any: it
    /// votes only for candidates whose log is empty too (the group's first
    /// election) until it holds an entry. A replica that lost everything,
    /// its record included, then cannot elect a leader that lacks what
    /// others acknowledged.
    Fresh,
    /// It lost state it had promised from: its log had reached `lost`
    /// (the identity record's position). It never stands for election, and
    /// votes only as the replica it was would have: for a candidate of a
    /// term after `lost.term` (it may have voted in every term up to it)
    /// whose log is at least as up to date as `lost`'s last entry. It
    /// votes freely again once its log holds an entry of a term after
    /// `lost.term`: that entry's leader was elected by such votes and,
    /// being a leader, holds every entry committed before its term, so the
    /// log under that entry holds everything this replica ever
    /// acknowledged that counted.
    Withheld { lost: LogPosition },
}

impl std::fmt::Display for Voting {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Voting::Allowed => write!(formatter, "allowed"),
            Voting::Fresh => write!(formatter, "fresh (votes only for a candidate with an empty log)"),
            Voting::Withheld { lost } => write!(
                formatter,
                "withheld: it lost its log up to entry {} of term {} in term {}; it votes only for a later term's candidate holding as much, until its log holds an entry of a term above {}",
                lost.last_index, lost.last_term, lost.term, lost.term
            ),
        }
    }
}

impl Voting {
    /// What voting a log at `position` allows, from this.
    pub fn after(self, position: &LogPosition) -> Voting {
        match self {
            Voting::Fresh if position.last_index > 0 => Voting::Allowed,
            Voting::Withheld { lost } if position.last_term > lost.term => Voting::Allowed,
            voting => voting,
        }
    }

    /// Whether a replica in this state may answer `message`, a request
    /// for its vote (or for its standing, in a leadership transfer).
    fn may_answer(&self, message: &Message) -> bool {
        match self {
            Voting::Allowed => true,
            Voting::Fresh => message.index == 0,
            Voting::Withheld { lost } => {
                message.get_msg_type() != MessageType::MsgTimeoutNow
                    && message.term > lost.term
                    && (message.log_term, message.index) >= (lost.last_term, lost.last_index)
            }
        }
    }

    /// Withholds votes for what `lost` held too, beside what this already
    /// withholds for.
    pub fn withhold(self, lost: LogPosition) -> Voting {
        match self {
            Voting::Withheld { lost: before } => Voting::Withheld {
                lost: LogPosition {
                    term: before.term.max(lost.term),
                    ..if before.is_behind(&lost) {
                        lost
                    } else {
                        before
                    }
                },
            },
            _ => Voting::Withheld { lost },
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

impl Outputs {
    /// Nothing to carry out.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.snapshot.is_none()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.persist.is_none()
    }
}

/// One Raft replica.
pub struct Replica {
    node: RawNode<ReplicaLog>,
    /// Per outstanding persist: its number and the messages that wait for it.
    waiting: std::collections::VecDeque<(u64, Vec<Message>)>,
    /// A snapshot handed out for applying: its persist number and index.
    snapshot_applied: Option<(u64, u64)>,
    voting: Voting,
    /// Requests for this replica's vote it left unanswered (see [`Voting`]).
    votes_withheld: u64,
}

impl Replica {
    /// A replica starting from `durable` (empty for a new group).
    pub fn new(
        config: &ReplicaConfig,
        durable: &Durable,
        logger: &slog::Logger,
    ) -> raft::Result<Replica> {
        let storage = ReplicaLog::default();
        if let Some(snapshot) = &durable.snapshot {
            storage.keep_snapshot(snapshot.clone());
            storage.keep_membership(durable.conf_state.clone());
        }
        let applied = {
            let mut core = storage.entries.wl();
            if let Some(snapshot) = &durable.snapshot {
                core.apply_snapshot(snapshot.clone())?;
            }
            // The durable configuration is the latest: it is written with
            // every snapshot and every applied change.
            match (&durable.snapshot, &durable.conf_state) {
                (_, Some(conf_state)) => core.set_conf_state(conf_state.clone()),
                (Some(_), None) => {}
                (None, None) => {
                    core.set_conf_state(ConfState::from((config.voters.clone(), vec![])))
                }
            }
            core.append(&durable.entries)?;
            // A snapshot holds only committed state, and may have been
            // written before the hard state that says its index committed.
            let mut hard_state = durable.hard_state.clone();
            if let Some(snapshot) = &durable.snapshot {
                let metadata = snapshot.get_metadata();
                hard_state.commit = hard_state.commit.max(metadata.index);
                hard_state.term = hard_state.term.max(metadata.term);
            }
            core.set_hardstate(hard_state);
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
            snapshot_applied: None,
            voting: Voting::Allowed,
            votes_withheld: 0,
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

    /// The leader this replica follows (None: it knows of none).
    pub fn leader(&self) -> Option<u64> {
        Some(self.node.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    /// leader, follower, candidate or pre-candidate.
    pub fn role(&self) -> &'static str {
        match self.node.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    pub fn last_index(&self) -> u64 {
        self.node.raft.raft_log.last_index()
    }

    /// Voters and learners of the current configuration, by raft id.
    pub fn members(&self) -> (Vec<u64>, Vec<u64>) {
        let mut conf = self.node.raft.prs().conf().to_conf_state();
        conf.voters.sort_unstable();
        conf.learners.sort_unstable();
        (conf.voters, conf.learners)
    }

    /// Sets what voting this replica may do (from its identity record;
    /// [`Voting::Allowed`] unless told otherwise). It moves on by itself as
    /// the log does.
    pub fn set_voting(&mut self, voting: Voting) {
        self.voting = voting;
        self.refresh_voting();
    }

    pub fn voting(&self) -> Voting {
        self.voting
    }

    /// Requests for this replica's vote it left unanswered.
    pub fn votes_withheld(&self) -> u64 {
        self.votes_withheld
    }

    /// Where the log (in memory, ahead of the disk) ends.
    pub fn position(&self) -> LogPosition {
        let log = &self.node.raft.raft_log;
        LogPosition {
            term: self.node.raft.term,
            last_index: log.last_index(),
            last_term: log.last_term(),
        }
    }

    fn refresh_voting(&mut self) {
        if self.voting != Voting::Allowed {
            self.voting = self.voting.after(&self.position());
        }
    }

    /// One logical clock tick.
    pub fn tick(&mut self) {
        if matches!(self.voting, Voting::Withheld { .. }) {
            // Never time out, so never stand for election.
            self.node.raft.election_elapsed = 0;
        }
        self.node.tick();
    }

    /// A message from another replica. A request for a vote this replica
    /// may not give is dropped unanswered (and counted): the candidate
    /// hears nothing, as from a replica that is down.
    pub fn step(&mut self, message: Message) -> raft::Result<()> {
        let asks_for_vote = matches!(
            message.get_msg_type(),
            MessageType::MsgRequestVote
                | MessageType::MsgRequestPreVote
                | MessageType::MsgTimeoutNow
        );
        if asks_for_vote && !self.voting.may_answer(&message) {
            self.votes_withheld += 1;
            return Ok(());
        }
        let mut message = message;
        if message.get_msg_type() == MessageType::MsgHeartbeat {
            // A heartbeat carries the commit index up to which the leader
            // believes this follower's log matches its own. A follower that
            // lost its log makes that belief stale: its log may be shorter
            // (raft-rs stops on a commit index beyond the log) or hold other
            // entries there. Such a follower takes commit indices only from
            // appends, whose entries are checked against the leader's log.
            let log = &self.node.raft.raft_log;
            let unverifiable =
                matches!(self.voting, Voting::Withheld { .. }) || message.commit > log.last_index();
            if unverifiable {
                message.commit = log.committed;
            }
        }
        self.node.step(message)
    }

    /// Proposes `data` for the log (a follower forwards it to the leader).
    pub fn propose(&mut self, data: Vec<u8>) -> raft::Result<()> {
        self.node.propose(Vec::new(), data)
    }

    /// Proposes adding `id` as a learner (`voter` false) or a voter, or
    /// removing it; `context` comes back with the committed entry.
    pub fn propose_membership(
        &mut self,
        context: Vec<u8>,
        id: u64,
        change: MembershipChange,
    ) -> raft::Result<()> {
        let change_type = match change {
            MembershipChange::AddLearner => ConfChangeType::AddLearnerNode,
            MembershipChange::Promote => ConfChangeType::AddNode,
            MembershipChange::Remove => ConfChangeType::RemoveNode,
        };
        let conf_change = ConfChange {
            change_type,
            node_id: id,
            ..Default::default()
        };
        self.node.propose_conf_change(context, conf_change)
    }

    /// Applies a committed configuration change entry; returns the new
    /// configuration, which the caller writes durably.
    pub fn apply_membership(&mut self, entry: &Entry) -> raft::Result<ConfState> {
        use protobuf::Message as _;
        let change = ConfChange::parse_from_bytes(entry.get_data())
            .map_err(|error| raft::Error::ConfChangeError(error.to_string()))?;
        let conf_state = self.node.apply_conf_change(&change)?;
        self.node
            .mut_store()
            .keep_membership(Some(conf_state.clone()));
        // raft-rs keeps a leader that removed itself leading (and then
        // fails on its next write): it steps down, in the same term, and
        // the remaining voters elect a leader among themselves.
        if self.is_leader() && !conf_state.voters.contains(&self.id()) {
            let term = self.term();
            self.node.raft.become_follower(term, raft::INVALID_ID);
        }
        Ok(conf_state)
    }

    /// Asks the leader to hand leadership to `to` (a voter); it does once
    /// `to` has caught up.
    pub fn transfer_leadership(&mut self, to: u64) {
        self.node.transfer_leader(to);
    }

    /// Whether a configuration change is proposed and not applied yet
    /// (raft-rs takes one at a time).
    pub fn membership_change_pending(&self) -> bool {
        self.node.raft.has_pending_conf()
    }

    /// On a leader: learners whose log is within `lag_max` entries of the
    /// commit index, ready to vote.
    pub fn learners_caught_up(&self, lag_max: u64) -> Vec<u64> {
        if !self.is_leader() {
            return Vec::new();
        }
        let commit = self.commit_index();
        let progress = self.node.raft.prs();
        let mut ready: Vec<u64> = progress
            .conf()
            .learners()
            .iter()
            .copied()
            .filter(|&id| {
                progress.get(id).is_some_and(|learner| {
                    learner.state == raft::ProgressState::Replicate
                        && learner.matched + lag_max >= commit
                })
            })
            .collect();
        ready.sort_unstable();
        ready
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
            let log = self.node.mut_store();
            log.entries.wl().apply_snapshot(snapshot.clone())?;
            log.keep_snapshot(snapshot.clone());
            log.keep_membership(None);
            outputs.snapshot = Some(snapshot);
        }
        outputs.committed = ready.take_committed_entries();
        outputs.read_states = ready.take_read_states();
        if !ready.entries().is_empty() {
            self.node.mut_store().entries.wl().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            let log = self.node.mut_store();
            log.entries.wl().set_hardstate(hard_state.clone());
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
        if let Some(snapshot) = &outputs.snapshot {
            // The caller restores its state machine from it now; raft-rs
            // counts it applied once it is durable (see `persisted`).
            self.snapshot_applied = Some((ready.number(), snapshot.get_metadata().index));
        }
        self.node.advance_append_async(ready);
        if let Some(last) = outputs.committed.last() {
            self.node.advance_apply_to(last.index);
        }
        self.refresh_voting();
        Ok(outputs)
    }

    /// Snapshots the state machine, whose state after applying `index`
    /// is `data`, and drops the log before `index` (the entry at `index`
    /// stays, so the log is never empty). `index` must be applied here.
    /// Returns the snapshot: the caller writes it durably and may drop its
    /// durable entries up to `index`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> raft::Result<Snapshot> {
        let term = self.node.raft.raft_log.term(index)?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.node.raft.prs().conf().to_conf_state());
        let log = self.node.mut_store();
        log.keep_snapshot(snapshot.clone());
        log.keep_membership(None);
        log.entries.wl().compact(index)?;
        Ok(snapshot)
    }

    /// Whether this leader still waits for `to` to install a snapshot it
    /// was sent (the follower's answer once installed ends the wait).
    pub fn sending_snapshot_to(&self, to: u64) -> bool {
        self.is_leader()
            && self
                .node
                .raft
                .prs()
                .get(to)
                .is_some_and(|progress| progress.state == raft::ProgressState::Snapshot)
    }

    /// Whether a snapshot this replica sent to `to` arrived. A transport
    /// that knows must say; one that only knows of failures says those,
    /// and the follower's answer after installing it reports success.
    /// Until one or the other, the leader sends that follower nothing else.
    pub fn report_snapshot(&mut self, to: u64, arrived: bool) {
        let status = if arrived {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Persist `number` (and every one before it) is durable. Returns the
    /// messages that waited for it, to send now.
    pub fn persisted(&mut self, number: u64) -> Vec<Message> {
        self.node.on_persist_ready(number);
        if let Some((waiting, index)) = self.snapshot_applied {
            if waiting <= number {
                self.node.advance_apply_to(index);
                self.snapshot_applied = None;
            }
        }
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
