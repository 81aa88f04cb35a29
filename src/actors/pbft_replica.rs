//! The PbftReplica actor: one replica of the Byzantine-tolerant group, on
//! each node named in `[pbft] replicas`. It drives the sans-I/O core
//! ([`crate::protocols::pbft`]) and does its I/O:
//!
//! ```text
//! peer replica ─QUIC consensus/bulk stream─▶ reader task ─Peer─▶ PbftReplica
//! client ─Request (with its reply channel)─▶ PbftReplica ─▶ Replica
//! PbftReplica ─packets─▶ PeerTable queue ─▶ writer task ─QUIC─▶ peer replica
//! PbftReplica ─ClientEvent─▶ client's channel
//! ```
//!
//! Messages from peers queue in the mailbox; a single `Drive` queued behind
//! them hands them to the core together, so their signatures are checked
//! in one batch when a queue forms. A replica configured to misbehave
//! (`[pbft.behaviours]`) changes what it sends as
//! [`crate::protocols::pbft::Behaviour`] says.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::metrics::NodeMetrics;
use crate::protocols::pbft::keys::Ed25519Keys;
use crate::protocols::pbft::messages::{Digest, Packet};
use crate::protocols::pbft::{
    Behaviour, ClientKey, Outgoing, Outputs, Replica, Request, Signed, Target,
};
use crate::protocols::wire::codec::encode_pbft_packet;
use crate::protocols::wire::TrafficClass;

use super::messages::{ClientEvent, PbftMsg, PbftStatus};
use super::shared::{NodeShared, Ticker};

/// Packets from peers queued for the replica, at most.
pub const PBFT_QUEUE_MAX: usize = 8_192;
/// Clients whose reply channels a replica keeps.
const CLIENTS_TRACKED_MAX: usize = 65_536;
/// Old messages a replaying replica keeps to send again.
const REPLAY_KEPT_MAX: usize = 1_024;
/// Executed sequence numbers kept for checks across replicas.
const EXECUTED_KEPT_MAX: usize = 500_000;

impl PbftStatus {
    /// The status of the replica on the node of `shared`, if it runs and
    /// answers within `timeout`.
    pub async fn of(shared: &NodeShared, timeout: Duration) -> Option<PbftStatus> {
        let actor = shared.mailboxes.pbft.get()?;
        match actor.call(PbftMsg::Status, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(status)) => Some(status),
            _ => None,
        }
    }
}

/// What a correct replica executed, and when views changed, for the
/// benchmark's and tests' checks.
#[derive(Debug, Default)]
pub struct ExecutedLog {
    /// Correct now and never told to misbehave on this node: only such a
    /// replica's log is held to agree with the others.
    pub correct: bool,
    pub ever_hostile: bool,
    pub executed: BTreeMap<u64, Digest>,
    /// When this replica last started a view change, while none finished.
    pub view_change_started: Option<Instant>,
    /// Each view entered: the view, and how long its view change took here.
    pub views_entered: Vec<(u64, Duration)>,
}

/// What this node's PBFT replica keeps across its restarts; the node
/// supervisor holds it.
#[derive(Debug, Default)]
pub struct PbftMemory {
    /// What it executed, for checks across replicas.
    pub executed: Mutex<ExecutedLog>,
    /// The behaviour it was last told to take on at run time (None: the
    /// config's); a restarted replica keeps it.
    pub behaviour: Mutex<Option<Behaviour>>,
}

pub struct PbftReplica;

/// What a replica's incarnation starts from.
pub struct PbftReplicaArgs {
    pub shared: Arc<NodeShared>,
    pub memory: Arc<PbftMemory>,
}

pub struct PbftReplicaState {
    shared: Arc<NodeShared>,
    memory: Arc<PbftMemory>,
    replica: Replica<Ed25519Keys>,
    behaviour: Behaviour,
    inbox: Vec<Signed>,
    /// Client requests waiting for the next drive, with who sent each.
    requests: Vec<(Request, Option<mpsc::Sender<ClientEvent>>)>,
    drive_queued: bool,
    /// The view change target last logged.
    moving_to: Option<u64>,
    clients: HashMap<ClientKey, mpsc::Sender<ClientEvent>>,
    seen: VecDeque<Signed>,
    rng: ChaCha8Rng,
    _ticker: Ticker,
}

impl Actor for PbftReplica {
    type Msg = PbftMsg;
    type State = PbftReplicaState;
    type Arguments = PbftReplicaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PbftMsg>,
        args: PbftReplicaArgs,
    ) -> Result<PbftReplicaState, ActorProcessingErr> {
        let PbftReplicaArgs { shared, memory } = args;
        let settings = &shared.config.pbft;
        let id = settings
            .replica_id(&shared.node_id)
            .ok_or("this node holds no PBFT replica")?;
        let keys: Vec<_> = settings
            .replicas
            .iter()
            .map(|node| shared.directory.roster.node_keys[node])
            .collect();
        let keys = Ed25519Keys::new(shared.key.clone(), keys);
        let replica = Replica::new(settings.protocol(), id, keys);
        let told = *memory.behaviour.lock().expect("never poisoned");
        let behaviour = told.unwrap_or_else(|| settings.behaviour_of(&shared.node_id));
        let tick = Duration::from_millis(settings.tick_ms);
        let ticker = Ticker::new(myself.send_interval(tick, || PbftMsg::Tick));
        note_behaviour(&memory, behaviour);
        tracing::info!(node = %shared.node_id, id, behaviour = behaviour.name(), "pbft replica started");
        shared.mailboxes.pbft.set(Some(myself));
        let seed = shared.config.seed ^ u64::from(id);
        Ok(PbftReplicaState {
            shared,
            memory,
            replica,
            behaviour,
            inbox: Vec::new(),
            requests: Vec::new(),
            drive_queued: false,
            moving_to: None,
            clients: HashMap::new(),
            seen: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PbftMsg>,
        message: PbftMsg,
        state: &mut PbftReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PbftMsg::Tick => state.replica.tick(),
            PbftMsg::Drive => {
                state.drive_queued = false;
                state.take_requests();
                let inbox = std::mem::take(&mut state.inbox);
                if !inbox.is_empty() {
                    state.keep_for_replay(&inbox);
                    state.replica.receive(inbox);
                }
                state.carry_out();
                return Ok(());
            }
            PbftMsg::Peer { packet, permit } => {
                drop(permit);
                match *packet {
                    Packet::Message(message) => state.inbox.push(message),
                    Packet::Request(request) => state.requests.push((request, None)),
                }
            }
            PbftMsg::Request { request, replies } => state.client_request(request, replies),
            PbftMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            PbftMsg::Behave(behaviour) => {
                *state.memory.behaviour.lock().expect("never poisoned") = Some(behaviour);
                note_behaviour(&state.memory, behaviour);
                tracing::info!(node = %state.shared.node_id, behaviour = behaviour.name(), "pbft replica behaves anew");
                state.behaviour = behaviour;
                return Ok(());
            }
        }
        if !state.drive_queued {
            state.drive_queued = true;
            myself.cast(PbftMsg::Drive)?;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PbftMsg>,
        state: &mut PbftReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.mailboxes.pbft.set(None);
        Ok(())
    }
}

/// Records whether the node's replica can be held to agree with the
/// others: once it misbehaved, never again on this node.
fn note_behaviour(memory: &PbftMemory, behaviour: Behaviour) {
    let mut log = memory.executed.lock().expect("never poisoned");
    log.ever_hostile |= behaviour != Behaviour::Correct;
    log.correct = !log.ever_hostile;
}

impl PbftReplicaState {
    /// Hands the queued requests to the core, their signatures checked in
    /// one batch, and tells clients about those refused.
    fn take_requests(&mut self) {
        if self.requests.is_empty() {
            return;
        }
        let (requests, senders): (Vec<Request>, Vec<_>) =
            std::mem::take(&mut self.requests).into_iter().unzip();
        let verdicts = self.replica.requests(requests);
        for (verdict, sender) in verdicts.into_iter().zip(senders) {
            if let (Err(error), Some(sender)) = (verdict, sender) {
                let event = ClientEvent::Refused {
                    replica: self.replica.id(),
                    reason: error.to_string(),
                };
                let _ = sender.try_send(event);
            }
        }
    }

    fn client_request(&mut self, request: Request, replies: mpsc::Sender<ClientEvent>) {
        if self.clients.len() >= CLIENTS_TRACKED_MAX && !self.clients.contains_key(&request.client)
        {
            // Forget the clients whose channels closed; if all are open,
            // start over: a client not heard again gets no answer.
            self.clients.retain(|_, channel| !channel.is_closed());
            if self.clients.len() >= CLIENTS_TRACKED_MAX {
                self.clients.clear();
            }
        }
        self.clients.insert(request.client, replies.clone());
        self.requests.push((request, Some(replies)));
    }

    fn status(&self) -> PbftStatus {
        PbftStatus {
            replica: self.replica.id(),
            view: self.replica.view(),
            moving_to: self.replica.view_change_target(),
            view_changes_heard: self.replica.view_changes_heard(),
            executed: self.replica.executed(),
            stable_checkpoint: self.replica.stable_checkpoint(),
            batch_size: self.replica.batch_size(),
        }
    }

    fn keep_for_replay(&mut self, inbox: &[Signed]) {
        if self.behaviour != Behaviour::Replay {
            return;
        }
        self.seen.extend(inbox.iter().cloned());
        while self.seen.len() > REPLAY_KEPT_MAX {
            self.seen.pop_front();
        }
    }

    fn carry_out(&mut self) {
        let outputs = self.replica.take_outputs();
        self.record(&outputs);
        self.publish_counters();
        if self.behaviour == Behaviour::Silent {
            return;
        }
        for reply in outputs.replies {
            let Some(reply) = self.behaviour.reply(reply) else {
                continue;
            };
            if let Some(channel) = self.clients.get(&reply.client) {
                let _ = channel.try_send(ClientEvent::Reply(reply));
            }
        }
        for (target, outgoing) in outputs.sends {
            self.send(target, outgoing);
        }
        if self.behaviour == Behaviour::Replay && !self.seen.is_empty() && self.rng.gen_bool(0.3) {
            let old = self.seen[self.rng.gen_range(0..self.seen.len())].clone();
            let to = self.rng.gen_range(0..self.replica.config().replicas);
            self.send(Target::Replica(to), Outgoing::Message(old));
        }
    }

    /// Notes what was executed and when views changed.
    fn record(&mut self, outputs: &Outputs) {
        let mut log = self
            .memory
            .executed
            .lock()
            .expect("executed log lock is never poisoned");
        for (sequence, digest, _) in &outputs.executed {
            log.executed.insert(*sequence, *digest);
        }
        while log.executed.len() > EXECUTED_KEPT_MAX {
            log.executed.pop_first();
        }
        if self.replica.in_view_change() && log.view_change_started.is_none() {
            log.view_change_started = Some(Instant::now());
        }
        let target = self.replica.view_change_target();
        if target.is_some() && target != self.moving_to {
            let heard = self.replica.view_changes_heard();
            let (pending, known) = self.replica.waiting();
            tracing::info!(node = %self.shared.node_id, view = self.replica.view(), target, ?heard, executed = self.replica.executed(), pending, known, "pbft view change");
        }
        self.moving_to = target;
        if let Some(view) = outputs.entered_view {
            let took = log
                .view_change_started
                .take()
                .map_or(Duration::ZERO, |started| started.elapsed());
            log.views_entered.push((view, took));
            let (pending, known) = self.replica.waiting();
            tracing::info!(node = %self.shared.node_id, view, took_ms = took.as_millis() as u64, executed = self.replica.executed(), pending, known, "pbft view entered");
        }
    }

    fn publish_counters(&self) {
        let counters = self.replica.counters();
        let metrics = &self.shared.metrics.counters;
        let set = |counter: &std::sync::atomic::AtomicU64, value: u64| {
            counter.store(value, Ordering::Relaxed)
        };
        set(
            &metrics.pbft_rejected_signature,
            counters.rejected_signature,
        );
        set(&metrics.pbft_rejected_invalid, counters.rejected_invalid);
        set(&metrics.pbft_refused_busy, counters.refused_busy);
        set(
            &metrics.pbft_view_changes_started,
            counters.view_changes_started,
        );
        set(&metrics.pbft_views_entered, counters.views_entered);
        set(
            &metrics.pbft_view_changes_checked,
            counters.view_changes_checked,
        );
        set(&metrics.pbft_requests_executed, counters.requests_executed);
        set(&metrics.pbft_states_fetched, counters.states_fetched);
    }

    /// Sends a packet to its replicas, as this replica's behaviour has it.
    fn send(&mut self, target: Target, outgoing: Outgoing) {
        let settings = &self.shared.config.pbft;
        let me = &self.shared.node_id;
        let peers: Vec<String> = match target {
            Target::All => settings
                .replicas
                .iter()
                .filter(|n| *n != me)
                .cloned()
                .collect(),
            Target::Replica(id) => settings
                .replicas
                .get(id as usize)
                .cloned()
                .into_iter()
                .collect(),
        };
        let delay = match self.behaviour {
            Behaviour::Delay => Duration::from_millis(settings.request_timeout_ms / 2),
            _ => Duration::ZERO,
        };
        for (place, peer) in peers.into_iter().enumerate() {
            let packet = match &outgoing {
                Outgoing::Message(message) => {
                    let keys = self.replica.keys();
                    Packet::Message(self.behaviour.message(message, place, keys))
                }
                Outgoing::Request(request) => Packet::Request(request.clone()),
            };
            let parts = encode_pbft_packet(&packet);
            let class = if parts.len() == 1 {
                TrafficClass::Consensus
            } else {
                TrafficClass::Bulk
            };
            let frames: Vec<(TrafficClass, Bytes)> = parts
                .into_iter()
                .map(|part| (class, Bytes::from(part)))
                .collect();
            if delay.is_zero() {
                send_counted(&self.shared, &peer, frames);
            } else {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send_counted(&shared, &peer, frames);
                });
            }
        }
    }
}

/// Queues one packet's frames for `peer`, counting those that could not
/// be (PBFT sends again what matters).
fn send_counted(shared: &NodeShared, peer: &str, frames: Vec<(TrafficClass, Bytes)>) {
    let counters = &shared.metrics.counters;
    NodeMetrics::count(match shared.peers.try_send_all(peer, frames) {
        Ok(()) => &counters.pbft_packets_sent,
        Err(_) => &counters.pbft_packets_unsent,
    });
}
