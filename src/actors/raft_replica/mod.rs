//! The RaftReplica actor: one control-plane replica, on each node named in
//! `[control] replicas`. It owns a [`Replica`] (the sans-I/O core around
//! raft-rs) and the [`ClusterState`] it applies, and does the I/O:
//!
//! ```text
//! peer replica ─QUIC consensus/bulk stream─▶ reader task ─Peer─▶ RaftReplica
//! client API ─Client─▶ RaftReplica ─propose / read_index─▶ Replica
//! RaftReplica ─DiskJob─▶ writer thread ─raft-engine, fsync─▶ Persisted ─▶ RaftReplica
//! RaftReplica ─messages─▶ PeerTable queue ─▶ writer task ─QUIC─▶ peer replica
//! ```
//!
//! Disk writes go to a thread of their own, which takes every batch queued
//! meanwhile and writes them with one fsync (group commit), so the actor
//! never waits for the disk; messages that must follow a write (votes,
//! acknowledgements) are held by the core until the write is reported.
//!
//! What must survive the actor's restart is on disk. A new incarnation
//! claims the [`ReplicaDisk`] (an older incarnation's writer stops at its
//! next batch), reads back what is durable and starts from it, as after a
//! crash. Client requests it had not answered time out at the client,
//! which retries them with the same request id.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use raft::eraftpb::{EntryType, Message, MessageType};

use crate::clock::monotonic_ms;
use crate::config::ControlConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::cluster_state::{
    ClusterState, Command, Outcome, Proposal, RequestId, KEY_BYTES_MAX,
};
use crate::protocols::control::{
    ClientReply, ClientRequest, ControlError, Operation, ReplicaStatus,
};
use crate::protocols::mesh::OverlayCommit;
use crate::protocols::raft::{MembershipChange, Outputs, Replica, ReplicaConfig, Voting};
use crate::protocols::wire::{encode_raft_message, TrafficClass};

use super::messages::{RaftMsg, TopologyMsg};
use super::overlay_state::OverlayState;
use super::shared::{NodeShared, Ticker};

pub mod disk;
pub mod files;
pub mod identity;
pub mod log;

use disk::{spawn_writer, Claimed, DiskJob, ReplicaDisk};

/// Raft messages from peers waiting for the replica; more are dropped and
/// counted (Raft sends them again).
pub const RAFT_QUEUE_MAX: usize = 4_096;
/// Drives per wake: outputs beget outputs, but a wake must end.
const DRIVES_PER_WAKE_MAX: usize = 64;
/// Ticks between sweeps for client requests past their deadline.
const EXPIRY_SWEEP_TICKS: u64 = 10;
/// A snapshot on its way is given this long, plus its size at
/// SNAPSHOT_BYTES_PER_S_MIN, to be installed before the leader sends it
/// again.
const SNAPSHOT_WAIT_MS: u64 = 5_000;
const SNAPSHOT_BYTES_PER_S_MIN: u64 = 20_000_000;
/// A learner this close to the commit index (in entries) is promoted.
const LEARNER_LAG_MAX: u64 = 64;
/// Bytes of entries a leader holds uncommitted before it refuses more.
const UNCOMMITTED_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A client request awaiting its answer.
struct Waiting {
    reply: RpcReplyPort<ClientReply>,
    deadline_ms: u64,
}

pub struct RaftReplica;

/// What a replica's incarnation starts from: the node's shared core, the
/// overlay it records commits and leadership in, and the disk its
/// incarnations share.
pub struct RaftReplicaArgs {
    pub shared: Arc<NodeShared>,
    pub overlay: Arc<OverlayState>,
    pub disk: Arc<ReplicaDisk>,
}

pub struct RaftReplicaState {
    shared: Arc<NodeShared>,
    overlay: Arc<OverlayState>,
    replica: Replica,
    machine: ClusterState,
    generation: u64,
    fsync: bool,
    writer: mpsc::Sender<DiskJob>,
    _ticker: Ticker,
    ticks: u64,
    /// A Drive is queued.
    drive_queued: bool,
    writes: HashMap<RequestId, Waiting>,
    /// Reads awaiting their read index, by the context raft-rs echoes.
    reads: HashMap<u64, (String, Waiting)>,
    /// Reads whose read index is known, awaiting that apply.
    reads_ready: Vec<(u64, String, Waiting)>,
    next_read: u64,
    snapshot_index: u64,
    /// Bytes of entries applied since the last snapshot.
    applied_bytes: u64,
    /// Snapshots sent and not yet installed: follower id → deadline (ms).
    snapshots_sent: HashMap<u64, u64>,
    /// Why the identity record withholds this replica's votes, if it does.
    voting_reason: String,
}

/// Tells this node's topology actor the overlay `machine` committed. It is
/// recorded first, so a topology actor starting meanwhile, which takes its
/// slot before it reads the record, gets it one way or the other.
fn tell_overlay(shared: &NodeShared, overlay: &OverlayState, machine: &ClusterState) {
    if machine.overlay_epoch == 0 {
        return;
    }
    let commit = OverlayCommit {
        epoch: machine.overlay_epoch,
        down: machine.overlay_down.clone(),
        placed: machine.placed.clone(),
    };
    overlay.record_overlay(&Arc::new(commit.clone()));
    if let Some(topology) = shared.mailboxes.topology.get() {
        let _ = topology.cast(TopologyMsg::Committed(commit));
    }
}

/// The core's settings for replica `id`: election timeouts differ per
/// replica (spread by the cluster seed) so that they rarely stand together.
pub fn replica_config(control: &ControlConfig, id: u64, seed: u64) -> ReplicaConfig {
    let count = control.replica_nodes().count().max(1) as u64;
    let step = (control.election_ticks / 8).max(1);
    let spread = ((id - 1 + seed) % count) as usize;
    // Every replica, standby ones too, starts from the group's first
    // configuration: a standby replica is outside it (so it never stands
    // for election) until the entries that add it are applied.
    ReplicaConfig {
        id,
        voters: (1..=control.replicas.len() as u64).collect(),
        election_ticks: control.election_ticks + spread * step,
        heartbeat_ticks: control.heartbeat_ticks,
        message_bytes_max: control.message_bytes_max,
        inflight_messages_max: control.inflight_messages_max,
        uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX,
    }
}

impl Actor for RaftReplica {
    type Msg = RaftMsg;
    type State = RaftReplicaState;
    type Arguments = RaftReplicaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RaftMsg>,
        args: RaftReplicaArgs,
    ) -> Result<RaftReplicaState, ActorProcessingErr> {
        let RaftReplicaArgs {
            shared,
            overlay,
            disk,
        } = args;
        let control = &shared.config.control;
        let id = control
            .replica_id(&shared.node_id)
            .ok_or("this node holds no control-plane replica")?;
        let Claimed {
            generation,
            durable,
            fsync,
            voting,
            voting_reason,
        } = disk.claim()?;
        let machine = match &durable.snapshot {
            Some(snapshot) => ClusterState::restore(snapshot.get_data())?,
            None => ClusterState::default(),
        };
        let snapshot_index = machine.applied;
        let config = replica_config(control, id, shared.config.seed);
        let logger = crate::protocols::raft::tracing_logger();
        let mut replica = Replica::new(&config, &durable, &logger)?;
        replica.set_voting(voting);
        let writer = spawn_writer(
            disk,
            generation,
            myself.clone(),
            shared.metrics.clone(),
            &shared.node_id,
        )?;
        let tick = Duration::from_millis(control.tick_ms);
        let ticker = Ticker::new(myself.send_interval(tick, || RaftMsg::Tick));
        tracing::info!(node = %shared.node_id, id, applied = machine.applied, entries = durable.entries.len(), "raft replica started");
        shared.mailboxes.replica.set(Some(myself));
        tell_overlay(&shared, &overlay, &machine);
        Ok(RaftReplicaState {
            shared,
            overlay,
            replica,
            machine,
            generation,
            fsync,
            writer,
            _ticker: ticker,
            ticks: 0,
            drive_queued: false,
            writes: HashMap::new(),
            reads: HashMap::new(),
            reads_ready: Vec::new(),
            next_read: 0,
            snapshot_index,
            applied_bytes: 0,
            snapshots_sent: HashMap::new(),
            voting_reason,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RaftMsg>,
        message: RaftMsg,
        state: &mut RaftReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RaftMsg::Drive => {
                state.drive_queued = false;
                return state.drive();
            }
            RaftMsg::Tick => {
                state.replica.tick();
                state.ticks += 1;
                if state.ticks % EXPIRY_SWEEP_TICKS == 0 {
                    state.expire(monotonic_ms());
                    state.promote_learners();
                    state.check_snapshots_sent(monotonic_ms());
                }
            }
            RaftMsg::Peer { message, permit } => {
                drop(permit);
                NodeMetrics::count(&state.shared.metrics.counters.raft_messages_received);
                // A stale or unexpected message is refused, not fatal.
                if let Err(error) = state.replica.step(*message) {
                    tracing::debug!(node = %state.shared.node_id, %error, "raft message refused");
                }
            }
            RaftMsg::Persisted { generation, number } => {
                if generation == state.generation {
                    let released = state.replica.persisted(number);
                    state.send(released);
                }
            }
            RaftMsg::DiskFailed(reason) => {
                return Err(format!("raft log write failed: {reason}").into());
            }
            RaftMsg::Client { request, reply } => state.client(request, reply),
            RaftMsg::Propose(proposal) => state.propose_own(&proposal),
            RaftMsg::CompactNow(reply) => {
                if state.machine.applied > state.snapshot_index {
                    state.compact()?;
                }
                state
                    .writer
                    .send(DiskJob::Barrier(reply))
                    .map_err(|_| "the raft log writer stopped")?;
            }
        }
        if !state.drive_queued {
            state.drive_queued = true;
            myself.cast(RaftMsg::Drive)?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RaftMsg>,
        state: &mut RaftReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.mailboxes.replica.set(None);
        let leading = &state.overlay.replica_leading;
        leading.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl RaftReplicaState {
    fn drive(&mut self) -> Result<(), ActorProcessingErr> {
        for _ in 0..DRIVES_PER_WAKE_MAX {
            let outputs = self.replica.drive()?;
            if outputs.is_empty() {
                break;
            }
            self.carry_out(outputs)?;
        }
        let leading = &self.overlay.replica_leading;
        leading.store(
            self.replica.is_leader(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// A proposal of this node's own actors (the topology's overlay
    /// changes, the placement planner's directories): taken by a leader,
    /// dropped otherwise (they propose again if it does not commit).
    fn propose_own(&mut self, proposal: &Proposal) {
        if !self.replica.is_leader() {
            return;
        }
        let proposed = proposal
            .encode()
            .map_err(|error| error.to_string())
            .and_then(|data| {
                self.replica
                    .propose(data)
                    .map_err(|error| error.to_string())
            });
        if let Err(error) = proposed {
            tracing::debug!(node = %self.shared.node_id, %error, "own proposal refused");
        }
    }

    fn carry_out(&mut self, outputs: Outputs) -> Result<(), ActorProcessingErr> {
        self.send(outputs.messages);
        if let Some(snapshot) = &outputs.snapshot {
            self.machine = ClusterState::restore(snapshot.get_data())?;
            tell_overlay(&self.shared, &self.overlay, &self.machine);
            self.snapshot_index = self.machine.applied;
            self.applied_bytes = 0;
            let counters = &self.shared.metrics.counters;
            NodeMetrics::count(&counters.raft_snapshots_installed);
            counters.raft_snapshot_bytes_installed.fetch_add(
                snapshot.get_data().len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            tracing::info!(node = %self.shared.node_id, index = self.snapshot_index, bytes = snapshot.get_data().len(), "installed a snapshot from the leader");
        }
        for entry in outputs.committed {
            self.apply(&entry)?;
        }
        for read in outputs.read_states {
            let Ok(context) = <[u8; 8]>::try_from(&read.request_ctx[..]) else {
                continue;
            };
            if let Some((key, waiting)) = self.reads.remove(&u64::from_be_bytes(context)) {
                self.reads_ready.push((read.index, key, waiting));
            }
        }
        self.answer_reads();
        if let Some(persist) = outputs.persist {
            self.writer
                .send(DiskJob::Persist(persist))
                .map_err(|_| "the raft log writer stopped")?;
        }
        self.maybe_compact()
    }

    fn apply(&mut self, entry: &raft::eraftpb::Entry) -> Result<(), ActorProcessingErr> {
        self.applied_bytes += entry.get_data().len() as u64;
        if entry.get_entry_type() != EntryType::EntryNormal {
            return self.apply_membership(entry);
        }
        let epoch = self.machine.overlay_epoch;
        let applied = self.machine.apply(entry.index, entry.get_data());
        if self.machine.overlay_epoch != epoch {
            tell_overlay(&self.shared, &self.overlay, &self.machine);
        }
        match applied {
            Ok(Some((request, outcome))) => {
                let Some(waiting) = self.writes.remove(&request) else {
                    return Ok(());
                };
                NodeMetrics::count(&self.shared.metrics.counters.control_writes_done);
                let reply = match outcome {
                    Outcome::Done | Outcome::Stale => ClientReply::Done,
                    Outcome::NotFound => ClientReply::NotFound,
                    Outcome::Mismatch => ClientReply::Mismatch,
                };
                let _ = waiting.reply.send(reply);
            }
            Ok(None) => {}
            // Every replica skips the same malformed entry.
            Err(error) => {
                tracing::error!(node = %self.shared.node_id, index = entry.index, %error, "skipped a log entry")
            }
        }
        Ok(())
    }

    /// A committed membership change: raft-rs applies it, the new
    /// configuration is written durably, and the client that asked for it
    /// (its request id is the entry's context) is answered.
    fn apply_membership(&mut self, entry: &raft::eraftpb::Entry) -> Result<(), ActorProcessingErr> {
        self.machine.apply(entry.index, &[])?;
        let conf_state = self.replica.apply_membership(entry)?;
        tracing::info!(node = %self.shared.node_id, voters = ?conf_state.voters, learners = ?conf_state.learners, "membership changed");
        self.writer
            .send(DiskJob::Membership(conf_state))
            .map_err(|_| "the raft log writer stopped")?;
        if let Ok(request) = crate::protocols::control::decode::<RequestId>(entry.get_context()) {
            if let Some(waiting) = self.writes.remove(&request) {
                let _ = waiting.reply.send(ClientReply::Done);
            }
        }
        Ok(())
    }

    /// Forgets snapshots installed, and reports as failed those not
    /// installed in time (the connection dropped them), so the leader
    /// sends them again.
    fn check_snapshots_sent(&mut self, now_ms: u64) {
        let replica = &mut self.replica;
        self.snapshots_sent.retain(|&to, deadline| {
            if !replica.sending_snapshot_to(to) {
                return false;
            }
            if *deadline > now_ms {
                return true;
            }
            replica.report_snapshot(to, false);
            false
        });
    }

    /// On the leader: a learner that has caught up becomes a voter (one
    /// change at a time).
    fn promote_learners(&mut self) {
        if self.replica.membership_change_pending() {
            return;
        }
        if let Some(&learner) = self.replica.learners_caught_up(LEARNER_LAG_MAX).first() {
            let promoted =
                self.replica
                    .propose_membership(Vec::new(), learner, MembershipChange::Promote);
            tracing::info!(node = %self.shared.node_id, learner, ok = promoted.is_ok(), "promoting a caught-up learner");
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.machine.applied;
        let mut index = 0;
        while index < self.reads_ready.len() {
            if self.reads_ready[index].0 > applied {
                index += 1;
                continue;
            }
            let (_, key, waiting) = self.reads_ready.swap_remove(index);
            NodeMetrics::count(&self.shared.metrics.counters.control_reads_done);
            let reply = match self.machine.get(&key) {
                Some(value) => ClientReply::Value(value.to_vec()),
                None => ClientReply::NotFound,
            };
            let _ = waiting.reply.send(reply);
        }
    }

    /// Snapshots the state every `compact_every` applied entries, or
    /// `compact_bytes` of them.
    fn maybe_compact(&mut self) -> Result<(), ActorProcessingErr> {
        let control = &self.shared.config.control;
        let applied = self.machine.applied;
        if applied < self.snapshot_index + control.compact_every
            && self.applied_bytes < control.compact_bytes
        {
            return Ok(());
        }
        self.compact()
    }

    fn compact(&mut self) -> Result<(), ActorProcessingErr> {
        let applied = self.machine.applied;
        let snapshot = self.replica.compact(applied, self.machine.snapshot())?;
        self.snapshot_index = applied;
        self.applied_bytes = 0;
        self.writer
            .send(DiskJob::Compacted(snapshot))
            .map_err(|_| "the raft log writer stopped")?;
        Ok(())
    }

    /// Sends messages to their replicas; a message that cannot be queued
    /// is dropped and counted (Raft retries), and a snapshot's sender is
    /// told whether it went.
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let Some(peer) = self.shared.config.control.replica_node(message.to) else {
                continue;
            };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(peer.to_string(), message);
                continue;
            }
            let parts = encode_raft_message(&message);
            let class = if parts.len() == 1 {
                TrafficClass::Consensus
            } else {
                TrafficClass::Bulk
            };
            let frames = parts
                .into_iter()
                .map(|part| (class, Bytes::from(part)))
                .collect();
            let sent = self.shared.peers.try_send_all(peer, frames).is_ok();
            let counters = &self.shared.metrics.counters;
            NodeMetrics::count(if sent {
                &counters.raft_messages_sent
            } else {
                &counters.raft_messages_unsent
            });
        }
    }

    /// Sends a snapshot on streams of its own (beside the frames, so it
    /// delays no heartbeat or vote). Written is not installed: the
    /// follower's answer once it has installed the snapshot tells the
    /// leader. Reporting success on sending would let the leader send it
    /// again and again while the first copy is still on the way.
    fn send_snapshot(&mut self, peer: String, message: Message) {
        let counters = &self.shared.metrics.counters;
        let to = message.to;
        let Some(connection) = self.shared.peers.connection(&peer) else {
            NodeMetrics::count(&counters.raft_messages_unsent);
            self.replica.report_snapshot(to, false);
            return;
        };
        NodeMetrics::count(&counters.raft_messages_sent);
        let bytes = message.get_snapshot().get_data().len() as u64;
        let wait_ms = SNAPSHOT_WAIT_MS + bytes * 1_000 / SNAPSHOT_BYTES_PER_S_MIN;
        self.snapshots_sent.insert(to, monotonic_ms() + wait_ms);
        let node = self.shared.node_id.clone();
        tokio::spawn(async move {
            // A transfer cut off is sent again once its wait is over.
            if let Err(error) = crate::net::transfer::send_snapshot(connection, message).await {
                tracing::debug!(%node, %peer, %error, "snapshot transfer cut off");
            }
        });
    }

    fn pending(&self) -> usize {
        self.writes.len() + self.reads.len() + self.reads_ready.len()
    }

    fn client(&mut self, request: ClientRequest, reply: RpcReplyPort<ClientReply>) {
        if let Operation::Status = request.operation {
            let _ = reply.send(ClientReply::Status(self.status()));
            return;
        }
        if let Err(error) = self.admit(&request) {
            let _ = reply.send(ClientReply::Failed(error));
            return;
        }
        let waiting = Waiting {
            reply,
            deadline_ms: monotonic_ms() + self.shared.config.control.request_timeout_ms,
        };
        let command = match request.operation {
            Operation::Put { key, value } => Command::Put { key, value },
            Operation::Delete { key } => Command::Delete { key },
            Operation::CompareAndSet {
                key,
                from,
                to,
                create_if_missing,
            } => Command::CompareAndSet {
                key,
                from,
                to,
                create_if_missing,
            },
            Operation::AddReplica { node } => {
                return self.change_membership(request.request, &node, true, waiting)
            }
            Operation::RemoveReplica { node } => {
                return self.change_membership(request.request, &node, false, waiting)
            }
            Operation::Get { key } => {
                self.next_read += 1;
                self.replica
                    .read_index(self.next_read.to_be_bytes().to_vec());
                self.reads.insert(self.next_read, (key, waiting));
                return;
            }
            Operation::Status => unreachable!("answered above"),
            Operation::CallAgent { .. } => {
                let error =
                    ControlError::Invalid("a call is served by the node, not its replica".into());
                let _ = waiting.reply.send(ClientReply::Failed(error));
                return;
            }
        };
        let proposal = Proposal {
            request: request.request,
            command,
        };
        let refused = match proposal.encode() {
            Err(error) => Some(ControlError::Invalid(error.to_string())),
            Ok(data) => self.replica.propose(data).err().map(|_| self.no_leader()),
        };
        match refused {
            Some(error) => {
                let _ = waiting.reply.send(ClientReply::Failed(error));
            }
            None => {
                // A retry of a request still waiting replaces it; the
                // older caller gave up.
                self.writes.insert(request.request, waiting);
            }
        }
    }

    /// Proposes adding `node`'s replica as a learner, or removing it.
    fn change_membership(&mut self, request: RequestId, node: &str, add: bool, waiting: Waiting) {
        match self.propose_membership(request, node, add) {
            Ok(()) => {
                self.writes.insert(request, waiting);
            }
            Err(error) => {
                let _ = waiting.reply.send(ClientReply::Failed(error));
            }
        }
    }

    fn propose_membership(
        &mut self,
        request: RequestId,
        node: &str,
        add: bool,
    ) -> Result<(), ControlError> {
        let id = self.shared.config.control.replica_id(node).ok_or_else(|| {
            ControlError::Invalid(format!(
                "node {node:?} runs no replica (control.replicas or control.standby)"
            ))
        })?;
        let (voters, learners) = self.replica.members();
        let member = voters.contains(&id) || learners.contains(&id);
        if add && member {
            return Err(ControlError::Invalid(format!(
                "{node} is already in the group"
            )));
        }
        if !add && !member {
            return Err(ControlError::Invalid(format!("{node} is not in the group")));
        }
        if self.replica.membership_change_pending() {
            return Err(ControlError::ChangePending);
        }
        // A leader asked to remove itself hands over first, so the group
        // is not left without one; the client's retry reaches the new
        // leader.
        if !add && id == self.replica.id() && self.replica.is_leader() {
            if let Some(&successor) = voters.iter().find(|&&voter| voter != id) {
                self.replica.transfer_leadership(successor);
                return Err(ControlError::ChangePending);
            }
        }
        let change = if add {
            MembershipChange::AddLearner
        } else {
            MembershipChange::Remove
        };
        let context = crate::protocols::control::encode(&request);
        self.replica
            .propose_membership(context, id, change)
            .map_err(|_| self.no_leader())
    }

    /// Refuses what cannot be served now: too many waiting, no leader, an
    /// oversized key.
    fn admit(&mut self, request: &ClientRequest) -> Result<(), ControlError> {
        let counters = &self.shared.metrics.counters;
        let pending_max = self.shared.config.control.pending_requests_max;
        if self.pending() >= pending_max {
            NodeMetrics::count(&counters.control_refused_busy);
            return Err(ControlError::Busy { pending_max });
        }
        if self.replica.leader().is_none() {
            NodeMetrics::count(&counters.control_refused_no_leader);
            return Err(self.no_leader());
        }
        if let Operation::Get { key } = &request.operation {
            if key.len() > KEY_BYTES_MAX {
                let reason = format!(
                    "key of {} bytes; keys are at most {KEY_BYTES_MAX}",
                    key.len()
                );
                return Err(ControlError::Invalid(reason));
            }
        }
        Ok(())
    }

    fn no_leader(&self) -> ControlError {
        let control = &self.shared.config.control;
        let (voters, _) = self.replica.members();
        let reachable = voters
            .iter()
            .filter_map(|&id| control.replica_node(id))
            .filter(|node| *node == self.shared.node_id || self.shared.peers.is_connected(node))
            .count();
        ControlError::NoLeader {
            replica: self.shared.node_id.clone(),
            term: self.replica.term(),
            reachable,
            replicas: voters.len(),
            withheld: match self.replica.voting() {
                Voting::Allowed => String::new(),
                voting => format!("; its vote is {voting}"),
            },
        }
    }

    /// Fails every request past its deadline.
    fn expire(&mut self, now_ms: u64) {
        let ms = self.shared.config.control.request_timeout_ms;
        let mut late: Vec<Waiting> = Vec::new();
        let due: Vec<RequestId> = self
            .writes
            .iter()
            .filter(|(_, waiting)| waiting.deadline_ms <= now_ms)
            .map(|(request, _)| *request)
            .collect();
        late.extend(due.iter().filter_map(|request| self.writes.remove(request)));
        let due: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, (_, waiting))| waiting.deadline_ms <= now_ms)
            .map(|(read, _)| *read)
            .collect();
        late.extend(
            due.iter()
                .filter_map(|read| self.reads.remove(read).map(|(_, waiting)| waiting)),
        );
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(_, _, waiting)| waiting.deadline_ms <= now_ms);
        self.reads_ready = waiting;
        late.extend(expired.into_iter().map(|(_, _, waiting)| waiting));
        for waiting in late {
            NodeMetrics::count(&self.shared.metrics.counters.control_timeouts);
            let _ = waiting
                .reply
                .send(ClientReply::Failed(ControlError::Timeout { ms }));
        }
    }

    fn status(&self) -> ReplicaStatus {
        let control = &self.shared.config.control;
        let names = |ids: Vec<u64>| -> Vec<String> {
            ids.into_iter()
                .filter_map(|id| control.replica_node(id).map(str::to_string))
                .collect()
        };
        let (voters, learners) = self.replica.members();
        ReplicaStatus {
            node: self.shared.node_id.clone(),
            id: self.replica.id(),
            role: self.replica.role().to_string(),
            leader: self
                .replica
                .leader()
                .and_then(|id| control.replica_node(id).map(str::to_string)),
            term: self.replica.term(),
            commit_index: self.replica.commit_index(),
            applied_index: self.machine.applied,
            last_index: self.replica.last_index(),
            snapshot_index: self.snapshot_index,
            voters: names(voters),
            learners: names(learners),
            overlay_epoch: self.machine.overlay_epoch,
            overlay_down: self.machine.overlay_down.iter().cloned().collect(),
            placed_agents: self.machine.placed.len() as u64,
            placements: (self.machine.placed.iter())
                .take(crate::protocols::control::STATUS_PLACEMENTS_MAX)
                .map(|(agent, node)| (agent.clone(), node.clone()))
                .collect(),
            keys: self.machine.kv.len() as u64,
            fsync: self.fsync,
            voting: self.replica.voting().to_string(),
            voting_reason: match self.replica.voting() {
                Voting::Withheld { .. } => self.voting_reason.clone(),
                _ => String::new(),
            },
            votes_withheld: self.replica.votes_withheld(),
        }
    }
}
