//! One PBFT replica: the normal case, checkpoints and state transfer. The
//! view change is in `view_change.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::machine::{Executed, Machine};
use super::messages::{
    batch_digest, digest_of, Body, ClientKey, Digest, Keys, OperationResult, PreparedProof,
    ReplicaId, Request, Signed, Signer, BATCH_REQUESTS_MAX,
};
use super::PbftConfig;

/// Slots a replica sends one that is behind, per status it hears.
const CATCH_UP_SLOTS_MAX: u64 = 64;
/// Checkpoint votes remembered per replica (its highest ones).
const CHECKPOINT_VOTES_PER_REPLICA: usize = 4;

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Replica(ReplicaId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Message(Signed),
    /// A client request passed on to the primary.
    Request(Request),
}

/// A replica's answer to a client. The channel to the client
/// authenticates it; a client accepts a result once f + 1 replicas agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub replica: ReplicaId,
    pub view: u64,
    pub client: ClientKey,
    pub timestamp: u64,
    pub result: OperationResult,
}

#[derive(Debug, Default)]
pub struct Outputs {
    pub sends: Vec<(Target, Outgoing)>,
    pub replies: Vec<Reply>,
    /// Sequence numbers executed, with their batch digests and sizes.
    pub executed: Vec<(u64, Digest, usize)>,
    /// The view this replica entered, if it entered one.
    pub entered_view: Option<u64>,
}

impl Outputs {
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.replies.is_empty()
            && self.executed.is_empty()
            && self.entered_view.is_none()
    }
}

/// What a replica refused or did, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rejected_signature: u64,
    pub rejected_invalid: u64,
    pub refused_busy: u64,
    pub view_changes_started: u64,
    /// View changes of others checked in full (each once).
    pub view_changes_checked: u64,
    pub views_entered: u64,
    pub batches_executed: u64,
    pub requests_executed: u64,
    pub states_fetched: u64,
}

#[derive(Debug)]
pub(super) struct Slot {
    /// The pre-prepare accepted in the current view, and its batch.
    pub pre_prepare: Option<Signed>,
    pub digest: Digest,
    pub batch: Vec<Request>,
    pub prepares: BTreeMap<ReplicaId, Signed>,
    pub commits: BTreeMap<ReplicaId, Signed>,
    /// The prepared certificate of the highest view, kept across views.
    pub prepared: Option<PreparedProof>,
    pub sent_commit: bool,
    pub committed: bool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            pre_prepare: None,
            digest: [0; 32],
            batch: Vec::new(),
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            prepared: None,
            sent_commit: false,
            committed: false,
        }
    }
}

/// The latest stable checkpoint and its proof.
#[derive(Clone, Debug)]
pub(super) struct Stable {
    pub sequence: u64,
    pub state: Digest,
    pub proof: Vec<Signed>,
    /// The encoded state, when this replica has it (for a fetch).
    pub bytes: Option<Vec<u8>>,
}

/// A view change under way.
#[derive(Clone, Copy, Debug)]
pub(super) struct Changing {
    pub target: u64,
    /// When 2f + 1 replicas were seen moving to `target`: from then on,
    /// its new view is late after a timeout that doubles with each view
    /// passed over since the last normal one.
    pub quorum_since: Option<u64>,
}

pub struct Replica<K: Keys> {
    pub(super) config: PbftConfig,
    pub(super) id: ReplicaId,
    pub(super) keys: K,
    pub(super) view: u64,
    pub(super) changing: Option<Changing>,
    pub(super) ticks: u64,
    pub(super) machine: Machine,
    pub(super) executed: u64,
    pub(super) stable: Stable,
    /// This replica's checkpoints above the stable one: digest and state.
    pub(super) own_checkpoints: BTreeMap<u64, (Digest, Vec<u8>)>,
    /// Per replica, its latest checkpoint votes.
    pub(super) checkpoint_votes: BTreeMap<ReplicaId, BTreeMap<u64, Signed>>,
    pub(super) slots: BTreeMap<u64, Slot>,
    /// The primary's last sequence number given out.
    pub(super) next_sequence: u64,
    /// Requests this replica holds and has not seen executed, in arrival
    /// order: the primary orders them, a backup times the primary on them.
    pub(super) pending: VecDeque<Request>,
    /// The requests held, and at the primary those it ordered in this
    /// view, which are not executed yet: a copy that comes again is not
    /// held twice.
    pub(super) known: BTreeSet<(ClientKey, u64)>,
    /// When a request last started waiting with none executed since.
    pub(super) timer_since: Option<u64>,
    pub(super) batch_size: usize,
    /// Per replica, its latest view change.
    pub(super) view_changes: BTreeMap<ReplicaId, Signed>,
    /// The new view that started the current view (none in view 0).
    pub(super) new_view: Option<Signed>,
    pub(super) new_view_sent: BTreeMap<ReplicaId, u64>,
    /// The stable checkpoint being fetched, and from whom next.
    pub(super) fetching: Option<(u64, usize)>,
    pub(super) outputs: Outputs,
    pub(super) counters: Counters,
}

impl<K: Keys> Replica<K> {
    pub fn new(config: PbftConfig, id: ReplicaId, keys: K) -> Replica<K> {
        assert!(id < config.replicas, "replica {id} of {}", config.replicas);
        let machine = Machine::default();
        let stable = Stable {
            sequence: 0,
            state: machine.digest(),
            proof: Vec::new(),
            bytes: Some(machine.encoded()),
        };
        Replica {
            batch_size: config.batch_fixed.unwrap_or(1),
            config,
            id,
            keys,
            view: 0,
            changing: None,
            ticks: 0,
            machine,
            executed: 0,
            stable,
            own_checkpoints: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            slots: BTreeMap::new(),
            next_sequence: 0,
            pending: VecDeque::new(),
            known: BTreeSet::new(),
            timer_since: None,
            view_changes: BTreeMap::new(),
            new_view: None,
            new_view_sent: BTreeMap::new(),
            fetching: None,
            outputs: Outputs::default(),
            counters: Counters::default(),
        }
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }

    pub fn view(&self) -> u64 {
        self.view
    }

    pub fn is_primary(&self) -> bool {
        self.changing.is_none() && self.config.primary_of(self.view) == self.id
    }

    pub fn in_view_change(&self) -> bool {
        self.changing.is_some()
    }

    /// The view this replica is moving to, during a view change.
    pub fn view_change_target(&self) -> Option<u64> {
        self.changing.map(|changing| changing.target)
    }

    /// Per replica, the view its latest view change heard here moves to.
    pub fn view_changes_heard(&self) -> Vec<(ReplicaId, u64)> {
        self.view_changes
            .iter()
            .map(|(from, m)| (*from, m.view))
            .collect()
    }

    pub fn executed(&self) -> u64 {
        self.executed
    }

    /// Requests held waiting, and requests known but not executed.
    pub fn waiting(&self) -> (usize, usize) {
        (self.pending.len(), self.known.len())
    }

    pub fn stable_checkpoint(&self) -> u64 {
        self.stable.sequence
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn config(&self) -> &PbftConfig {
        &self.config
    }

    pub fn keys(&self) -> &K {
        &self.keys
    }

    pub fn take_outputs(&mut self) -> Outputs {
        std::mem::take(&mut self.outputs)
    }

    pub(super) fn sign(&self, view: u64, body: Body) -> Signed {
        Signed::new(self.id, view, body, &self.keys)
    }

    pub(super) fn broadcast(&mut self, message: Signed) {
        self.outputs
            .sends
            .push((Target::All, Outgoing::Message(message)));
    }

    pub(super) fn send_to(&mut self, to: ReplicaId, message: Signed) {
        if to != self.id {
            self.outputs
                .sends
                .push((Target::Replica(to), Outgoing::Message(message)));
        }
    }

    pub(super) fn faults(&self) -> usize {
        self.config.faults() as usize
    }

    /// Whether `sequence` lies in the window above the stable checkpoint.
    pub(super) fn in_window(&self, sequence: u64) -> bool {
        sequence > self.stable.sequence && sequence <= self.stable.sequence + self.config.window
    }

    /// A tick of the replica's clock: timers and retransmissions.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.check_timers();
        if self.ticks % self.config.retransmit_ticks == 0 {
            self.retransmit();
        }
    }

    /// A request from a client (or passed on by a replica). Refused when
    /// this replica holds `pending_max` requests already; bad ones are
    /// counted and dropped.
    pub fn request(&mut self, request: Request) -> Result<(), super::MessageError> {
        self.requests(vec![request])
            .pop()
            .expect("one verdict per request")
    }

    /// Requests from clients, their signatures checked in one batch; the
    /// verdict for each, in order.
    pub fn requests(&mut self, requests: Vec<Request>) -> Vec<Result<(), super::MessageError>> {
        let items: Vec<(Signer, Vec<u8>, [u8; 64])> = requests
            .iter()
            .map(|r| (Signer::Client(r.client), r.own_signing_bytes(), r.signature))
            .collect();
        let verdicts = self.keys.verify_all(&items);
        requests
            .into_iter()
            .zip(verdicts)
            .map(|(request, good)| {
                if let Err(error) = request.check() {
                    self.counters.rejected_invalid += 1;
                    return Err(error);
                }
                if !good {
                    self.counters.rejected_signature += 1;
                    return Err(super::MessageError::BadSignature(Signer::Client(
                        request.client,
                    )));
                }
                self.take_request(request)
            })
            .collect()
    }

    /// A checked request: answered again if executed, else held.
    fn take_request(&mut self, request: Request) -> Result<(), super::MessageError> {
        if let Some(record) = self.machine.last_of(&request.client) {
            if request.timestamp <= record.timestamp {
                if request.timestamp == record.timestamp {
                    let result = record.result.clone();
                    self.reply(&request, result);
                }
                return Ok(());
            }
        }
        let key = request.key();
        if self.known.contains(&key) {
            return Ok(());
        }
        if self.pending.len() >= self.config.pending_max {
            self.counters.refused_busy += 1;
            return Err(super::MessageError::Invalid(format!(
                "{} requests already wait",
                self.pending.len()
            )));
        }
        self.known.insert(key);
        if self.timer_since.is_none() {
            self.timer_since = Some(self.ticks);
        }
        if !self.is_primary() && self.changing.is_none() {
            let primary = self.config.primary_of(self.view);
            self.outputs
                .sends
                .push((Target::Replica(primary), Outgoing::Request(request.clone())));
        }
        self.pending.push_back(request);
        self.propose();
        Ok(())
    }

    fn reply(&mut self, request: &Request, result: OperationResult) {
        self.outputs.replies.push(Reply {
            replica: self.id,
            view: self.view,
            client: request.client,
            timestamp: request.timestamp,
            result,
        });
    }

    /// Messages from other replicas: signatures are checked together, then
    /// each message is taken in order.
    pub fn receive(&mut self, messages: Vec<Signed>) {
        let items: Vec<(Signer, Vec<u8>, [u8; 64])> = messages
            .iter()
            .map(|m| (Signer::Replica(m.from), m.own_signing_bytes(), m.signature))
            .collect();
        let verdicts = self.keys.verify_all(&items);
        for (message, good) in messages.into_iter().zip(verdicts) {
            if message.from >= self.config.replicas || message.from == self.id {
                self.counters.rejected_invalid += 1;
            } else if !good {
                self.counters.rejected_signature += 1;
            } else {
                self.step(message);
            }
        }
    }

    fn step(&mut self, message: Signed) {
        // A replica in an older view, or moving to this one after it
        // started, lacks the new view that started it.
        let moving_here = matches!(message.body, Body::ViewChange { .. })
            && message.view == self.view
            && self.changing.is_none();
        if message.view < self.view || moving_here {
            self.help_behind(message.from);
        }
        let normal = self.changing.is_none() && message.view == self.view;
        match &message.body {
            Body::PrePrepare { .. } if normal => self.on_pre_prepare(message),
            Body::Prepare { .. } if normal => self.on_prepare(message),
            Body::Commit { .. } if normal => self.on_commit(message),
            Body::Checkpoint { .. } => self.on_checkpoint(message),
            Body::ViewChange { .. } => self.on_view_change(message),
            Body::NewView { .. } => self.on_new_view(message),
            Body::FetchState { sequence } => self.on_fetch_state(message.from, *sequence),
            Body::Status { executed } if normal => self.on_status(message.from, *executed),
            Body::Status { .. } => {}
            Body::State { .. } => self.on_state(message),
            Body::Reply { .. } => self.counters.rejected_invalid += 1,
            // Normal-case messages of another view: an older one is stale,
            // a newer one waits for its new view to come.
            Body::PrePrepare { .. } | Body::Prepare { .. } | Body::Commit { .. } => {}
        }
    }

    /// The primary orders waiting requests while its pipeline has room.
    pub(super) fn propose(&mut self) {
        while self.is_primary()
            && !self.pending.is_empty()
            && self.next_sequence < self.stable.sequence + self.config.window
            && self.next_sequence.saturating_sub(self.executed) < self.config.inflight_batches_max
        {
            let batch = self.next_batch();
            if batch.is_empty() {
                continue;
            }
            self.next_sequence += 1;
            let sequence = self.next_sequence;
            let digest = batch_digest(&batch);
            let body = Body::PrePrepare {
                sequence,
                digest,
                batch,
            };
            let message = self.sign(self.view, body);
            self.accept_pre_prepare(message.clone());
            self.broadcast(message);
        }
    }

    /// Takes the next batch from the waiting requests, and adapts the
    /// batch size to how many wait.
    fn next_batch(&mut self) -> Vec<Request> {
        let size = self.batch_size.min(BATCH_REQUESTS_MAX);
        let mut batch = Vec::with_capacity(size.min(self.pending.len()));
        while batch.len() < size {
            let Some(request) = self.pending.pop_front() else {
                break;
            };
            if self.machine.has_executed(&request.key()) {
                self.known.remove(&request.key());
            } else {
                batch.push(request);
            }
        }
        if self.config.batch_fixed.is_none() {
            if batch.len() == size && !self.pending.is_empty() {
                self.batch_size = (size * 2).min(self.config.batch_max);
            } else if batch.len() < size / 2 {
                self.batch_size = (size / 2).max(1);
            }
        }
        batch
    }

    fn on_pre_prepare(&mut self, message: Signed) {
        let Body::PrePrepare {
            sequence,
            digest,
            batch,
        } = &message.body
        else {
            unreachable!("dispatched on the body");
        };
        let sequence = *sequence;
        if message.from != self.config.primary_of(self.view) || !self.in_window(sequence) {
            self.counters.rejected_invalid += 1;
            return;
        }
        if let Some(accepted) = self
            .slots
            .get(&sequence)
            .and_then(|s| s.pre_prepare.as_ref())
        {
            if accepted.body != message.body {
                // An equivocating primary: the first one stands, and the
                // requests it leaves waiting time the primary out.
                self.counters.rejected_invalid += 1;
            }
            return;
        }
        if !self.batch_is_valid(*digest, batch) {
            self.counters.rejected_invalid += 1;
            return;
        }
        self.accept_pre_prepare(message);
    }

    /// Whether a batch is within bounds, matches its digest, and every
    /// request in it is signed by its client.
    pub(super) fn batch_is_valid(&mut self, digest: Digest, batch: &[Request]) -> bool {
        if batch.len() > BATCH_REQUESTS_MAX || batch_digest(batch) != digest {
            return false;
        }
        if batch.iter().any(|request| request.check().is_err()) {
            return false;
        }
        let items: Vec<(Signer, Vec<u8>, [u8; 64])> = batch
            .iter()
            .map(|r| (Signer::Client(r.client), r.own_signing_bytes(), r.signature))
            .collect();
        self.keys.verify_all(&items).into_iter().all(|good| good)
    }

    /// Takes a pre-prepare of the current view into its slot, prepares
    /// it (a backup says so), and times the primary on its requests.
    pub(super) fn accept_pre_prepare(&mut self, message: Signed) {
        let Body::PrePrepare {
            sequence,
            digest,
            batch,
        } = message.body.clone()
        else {
            unreachable!("a pre-prepare");
        };
        // A backup holds the requests it saw ordered, so that, primary in
        // a later view, it can order them again if this view loses them.
        // One it executed already (a new view orders again what was
        // prepared above the stable checkpoint) waits for nothing.
        if message.from != self.id {
            for request in &batch {
                let key = request.key();
                let fresh = !self.known.contains(&key) && !self.machine.has_executed(&key);
                if self.pending.len() < self.config.pending_max && fresh {
                    self.known.insert(key);
                    self.pending.push_back(request.clone());
                }
            }
        }
        if !batch.is_empty() && self.timer_since.is_none() && sequence > self.executed {
            self.timer_since = Some(self.ticks);
        }
        let slot = self.slots.entry(sequence).or_insert_with(Slot::new);
        slot.pre_prepare = Some(message);
        slot.digest = digest;
        slot.batch = batch;
        if self.config.primary_of(self.view) != self.id {
            let prepare = self.sign(self.view, Body::Prepare { sequence, digest });
            let id = self.id;
            self.slot(sequence).prepares.insert(id, prepare.clone());
            self.broadcast(prepare);
        }
        self.check_prepared(sequence);
    }

    pub(super) fn slot(&mut self, sequence: u64) -> &mut Slot {
        self.slots.entry(sequence).or_insert_with(Slot::new)
    }

    fn on_prepare(&mut self, message: Signed) {
        let Body::Prepare { sequence, .. } = message.body else {
            unreachable!("dispatched on the body");
        };
        if message.from == self.config.primary_of(self.view) || !self.in_window(sequence) {
            self.counters.rejected_invalid += 1;
            return;
        }
        let slot = self.slot(sequence);
        slot.prepares.entry(message.from).or_insert(message);
        self.check_prepared(sequence);
    }

    fn on_commit(&mut self, message: Signed) {
        let Body::Commit { sequence, .. } = message.body else {
            unreachable!("dispatched on the body");
        };
        if !self.in_window(sequence) {
            self.counters.rejected_invalid += 1;
            return;
        }
        let slot = self.slot(sequence);
        slot.commits.entry(message.from).or_insert(message);
        self.check_committed(sequence);
    }

    /// With the pre-prepare and 2f matching prepares, the slot is
    /// prepared: its certificate is kept and a commit sent.
    pub(super) fn check_prepared(&mut self, sequence: u64) {
        let (view, quorum) = (self.view, 2 * self.faults());
        let Some(slot) = self.slots.get_mut(&sequence) else {
            return;
        };
        if slot.pre_prepare.is_none() || slot.sent_commit {
            return;
        }
        let digest = slot.digest;
        let matching: Vec<Signed> = slot
            .prepares
            .values()
            .filter(|m| {
                m.view == view && matches!(m.body, Body::Prepare { digest: d, .. } if d == digest)
            })
            .take(quorum)
            .cloned()
            .collect();
        if matching.len() < quorum {
            return;
        }
        slot.prepared = Some(PreparedProof {
            pre_prepare: slot.pre_prepare.clone().expect("checked above"),
            prepares: matching,
        });
        slot.sent_commit = true;
        let commit = self.sign(view, Body::Commit { sequence, digest });
        let id = self.id;
        self.slot(sequence).commits.insert(id, commit.clone());
        self.broadcast(commit);
        self.check_committed(sequence);
    }

    /// Prepared and with 2f + 1 matching commits, the slot is committed.
    fn check_committed(&mut self, sequence: u64) {
        let (view, quorum) = (self.view, self.config.quorum());
        let Some(slot) = self.slots.get_mut(&sequence) else {
            return;
        };
        if !slot.sent_commit || slot.committed {
            return;
        }
        let digest = slot.digest;
        let matching = slot
            .commits
            .values()
            .filter(|m| {
                m.view == view && matches!(m.body, Body::Commit { digest: d, .. } if d == digest)
            })
            .count();
        if matching >= quorum {
            slot.committed = true;
            self.execute_ready();
        }
    }

    /// Executes committed batches in sequence order.
    pub(super) fn execute_ready(&mut self) {
        let mut progressed = false;
        while let Some(slot) = self.slots.get(&(self.executed + 1)) {
            if !slot.committed {
                break;
            }
            let sequence = self.executed + 1;
            let (digest, batch) = (slot.digest, slot.batch.clone());
            for request in &batch {
                self.known.remove(&request.key());
                match self.machine.execute(sequence, request) {
                    Executed::Fresh(result) => {
                        self.counters.requests_executed += 1;
                        self.reply(request, result);
                    }
                    Executed::Again(result) => self.reply(request, result),
                    Executed::Stale => {}
                }
            }
            self.executed = sequence;
            self.counters.batches_executed += 1;
            self.outputs.executed.push((sequence, digest, batch.len()));
            progressed = true;
            if sequence % self.config.checkpoint_interval == 0 {
                self.take_checkpoint(sequence);
            }
        }
        if progressed {
            self.after_progress();
        }
    }

    /// Execution moved on: the primary's timer restarts for what still
    /// waits, and the primary orders more.
    pub(super) fn after_progress(&mut self) {
        self.drop_executed_pending();
        let waiting = !self.known.is_empty() || !self.pending.is_empty();
        self.timer_since = waiting.then_some(self.ticks);
        self.propose();
    }

    /// Lets go of requests held or known that were executed meanwhile (or
    /// superseded by a later one of their client): none waits any more.
    pub(super) fn drop_executed_pending(&mut self) {
        let machine = &self.machine;
        self.pending
            .retain(|request| !machine.has_executed(&request.key()));
        self.known.retain(|key| !machine.has_executed(key));
    }

    fn take_checkpoint(&mut self, sequence: u64) {
        let bytes = self.machine.encoded();
        let state = digest_of(&bytes);
        self.own_checkpoints.insert(sequence, (state, bytes));
        let vote = self.sign(self.view, Body::Checkpoint { sequence, state });
        self.record_checkpoint_vote(vote.clone());
        self.broadcast(vote);
    }

    fn on_checkpoint(&mut self, message: Signed) {
        let Body::Checkpoint { sequence, .. } = message.body else {
            unreachable!("dispatched on the body");
        };
        if sequence <= self.stable.sequence || sequence % self.config.checkpoint_interval != 0 {
            return;
        }
        self.record_checkpoint_vote(message);
    }

    fn record_checkpoint_vote(&mut self, vote: Signed) {
        let Body::Checkpoint { sequence, state } = vote.body else {
            unreachable!("a checkpoint");
        };
        let votes = self.checkpoint_votes.entry(vote.from).or_default();
        votes.insert(sequence, vote);
        while votes.len() > CHECKPOINT_VOTES_PER_REPLICA {
            votes.pop_first();
        }
        let proof: Vec<Signed> = self
            .checkpoint_votes
            .values()
            .filter_map(|votes| votes.get(&sequence))
            .filter(|m| matches!(m.body, Body::Checkpoint { state: s, .. } if s == state))
            .cloned()
            .collect();
        if proof.len() >= self.config.quorum() {
            self.become_stable(sequence, state, proof);
        }
    }

    /// A checkpoint became stable (2f + 1 agree, or a new view shows it):
    /// the log below goes, and a replica that has not executed that far
    /// fetches the state.
    pub(super) fn become_stable(&mut self, sequence: u64, state: Digest, proof: Vec<Signed>) {
        if sequence <= self.stable.sequence {
            return;
        }
        let bytes = self
            .own_checkpoints
            .get(&sequence)
            .filter(|(own, _)| *own == state)
            .map(|(_, bytes)| bytes.clone());
        self.stable = Stable {
            sequence,
            state,
            proof,
            bytes,
        };
        self.slots = self.slots.split_off(&(sequence + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&(sequence + 1));
        for votes in self.checkpoint_votes.values_mut() {
            *votes = votes.split_off(&(sequence + 1));
        }
        self.next_sequence = self.next_sequence.max(sequence);
        if self.executed < sequence {
            self.fetching = Some((sequence, 0));
            self.fetch_state();
        }
        self.propose();
    }

    /// Asks the next signer of the stable checkpoint for its state.
    fn fetch_state(&mut self) {
        let Some((sequence, next)) = self.fetching else {
            return;
        };
        let signers: Vec<ReplicaId> = self
            .stable
            .proof
            .iter()
            .map(|m| m.from)
            .filter(|&from| from != self.id)
            .collect();
        if signers.is_empty() {
            return;
        }
        let to = signers[next % signers.len()];
        self.fetching = Some((sequence, next + 1));
        let ask = self.sign(self.view, Body::FetchState { sequence });
        self.send_to(to, ask);
    }

    fn on_fetch_state(&mut self, from: ReplicaId, sequence: u64) {
        if self.stable.sequence < sequence {
            return;
        }
        if let Some(bytes) = self.stable.bytes.clone() {
            let body = Body::State {
                sequence: self.stable.sequence,
                state: bytes,
            };
            let answer = self.sign(self.view, body);
            self.send_to(from, answer);
        }
    }

    fn on_state(&mut self, message: Signed) {
        let Body::State { sequence, state } = message.body else {
            unreachable!("dispatched on the body");
        };
        if sequence != self.stable.sequence || self.executed >= sequence {
            return;
        }
        if digest_of(&state) != self.stable.state {
            self.counters.rejected_invalid += 1;
            return;
        }
        let Ok(machine) = Machine::decode(&state) else {
            self.counters.rejected_invalid += 1;
            return;
        };
        self.machine = machine;
        self.executed = sequence;
        self.stable.bytes = Some(state);
        self.fetching = None;
        self.counters.states_fetched += 1;
        self.after_progress();
        self.execute_ready();
    }

    /// A replica of this view executed less than this one: it is sent the
    /// stable checkpoint's proof if it is below it (it then fetches the
    /// state), and this replica's messages for the slots it misses.
    fn on_status(&mut self, from: ReplicaId, executed: u64) {
        if executed >= self.executed {
            return;
        }
        if executed < self.stable.sequence {
            for vote in self.stable.proof.clone() {
                self.send_to(from, vote);
            }
        }
        let first = executed.max(self.stable.sequence) + 1;
        let last = self.executed.min(first + CATCH_UP_SLOTS_MAX - 1);
        let mut again = Vec::new();
        if first > last {
            return;
        }
        for (_, slot) in self.slots.range(first..=last) {
            again.extend(slot.pre_prepare.clone());
            again.extend(slot.prepares.get(&self.id).cloned());
            again.extend(slot.commits.get(&self.id).cloned());
        }
        for message in again {
            self.send_to(from, message);
        }
    }

    /// Sends again what others may have lost.
    fn retransmit(&mut self) {
        // A replica in a view change takes no normal-case messages, so it
        // asks for none; its view change, sent again, gets it the new view
        // from replicas already there.
        if let Some(changing) = self.changing {
            if let Some(own) = self.view_changes.get(&self.id).cloned() {
                if own.view == changing.target {
                    self.broadcast(own);
                }
            }
            return;
        }
        let status = Body::Status {
            executed: self.executed,
        };
        let status = self.sign(self.view, status);
        self.broadcast(status);
        let mut again = Vec::new();
        for (_, slot) in self.slots.range(self.executed + 1..) {
            if let Some(pre_prepare) = &slot.pre_prepare {
                if pre_prepare.from == self.id {
                    again.push(pre_prepare.clone());
                }
            }
            again.extend(slot.prepares.get(&self.id).cloned());
            again.extend(slot.commits.get(&self.id).cloned());
        }
        let own_votes = self.checkpoint_votes.get(&self.id);
        again.extend(own_votes.and_then(|votes| votes.values().last().cloned()));
        again.extend(
            self.stable
                .proof
                .iter()
                .find(|m| m.from == self.id)
                .cloned(),
        );
        for message in again {
            self.broadcast(message);
        }
        if self.fetching.is_some() {
            self.fetch_state();
        }
    }

    /// A replica in an older view gets the new view that started this one.
    fn help_behind(&mut self, replica: ReplicaId) {
        let Some(new_view) = self.new_view.clone() else {
            return;
        };
        let last = self.new_view_sent.get(&replica).copied();
        let interval = self.config.retransmit_ticks;
        if last.is_none_or(|last| self.ticks >= last + interval) {
            self.new_view_sent.insert(replica, self.ticks);
            self.send_to(replica, new_view);
        }
    }
}
