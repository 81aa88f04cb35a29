//! A Raft group of [`Replica`]s over a simulated network and disk, in
//! virtual milliseconds. The network loses, duplicates and delays (so
//! reorders) messages and can be partitioned; each replica's disk completes
//! writes in order after a random delay, and a crash loses the writes not
//! completed yet. The simulation checks, as it goes:
//!
//! - election safety: at most one leader per term;
//! - log matching and durability of commits: every entry applied at an
//!   index, by any replica in any of its lives, is the same entry;
//! - each replica applies indices in order, without gaps.
//!
//! and, on request, convergence: every live replica has applied every
//! entry committed anywhere.
//!
//! Clients put and get keys of the replicated [`ClusterState`]: a put is
//! proposed at a replica and answered when that replica applies it; a get
//! asks that replica for a ReadIndex and is answered from its state once it
//! has applied that far. Every call and answer is recorded in
//! [`RaftSim::history`] with its virtual times, for a linearizability
//! check; a call whose replica crashed or whose proposal was lost stays
//! unanswered (it may or may not have taken effect).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft::eraftpb::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::protocols::cluster_state::{ClusterState, Command, Proposal, RequestId};
use crate::protocols::raft::{
    Durable, MembershipChange, Outputs, Persist, Replica, ReplicaConfig, Voting,
};

/// One client call and, if it came, its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub client: u64,
    pub key: String,
    pub called_ms: u64,
    /// None: never answered.
    pub answered_ms: Option<u64>,
    pub kind: CallKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallKind {
    Put(Vec<u8>),
    /// The value read, once answered (None inside: the key was absent).
    Get(Option<Option<Vec<u8>>>),
    /// Writes `to` if the key holds `from` (or, with `create_if_missing`,
    /// is absent); `written` says whether it did, once answered.
    CompareAndSet {
        from: Vec<u8>,
        to: Vec<u8>,
        create_if_missing: bool,
        written: Option<bool>,
    },
}

/// Milliseconds per Raft tick.
pub const TICK_MS: u64 = 10;
/// Drives per replica per millisecond, at most: outputs beget outputs.
const DRIVES_PER_STEP_MAX: usize = 16;

/// How unreliable the network and disks are.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Chance that a message is lost.
    pub loss: f64,
    /// Chance that a message is delivered twice.
    pub duplicate: f64,
    /// Messages take 1 to this many milliseconds, so they overtake each
    /// other.
    pub delay_max_ms: u64,
    /// Disk writes take 0 to this many milliseconds.
    pub disk_delay_max_ms: u64,
}

impl Faults {
    /// A network that delivers everything in about a millisecond.
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        delay_max_ms: 1,
        disk_delay_max_ms: 1,
    };
}

/// A safety property the run broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("term {term} has two leaders, {first} and {second}")]
    TwoLeaders { term: u64, first: u64, second: u64 },
    #[error("index {index}: replica {replica} applied term {term}, but term {earlier_term} was applied there before")]
    EntryChanged {
        index: u64,
        replica: u64,
        term: u64,
        earlier_term: u64,
    },
    #[error("replica {replica} applied index {index} after {previous}")]
    AppliedOutOfOrder {
        replica: u64,
        index: u64,
        previous: u64,
    },
    #[error("raft-rs refused: {0}")]
    Raft(String),
}

pub struct RaftSim {
    rng: ChaCha8Rng,
    pub now_ms: u64,
    pub faults: Faults,
    configs: Vec<ReplicaConfig>,
    replicas: Vec<Option<Replica>>,
    durable: Vec<Durable>,
    /// Per replica, what its identity record allows (kept on its disk
    /// beside the log, as `actors::raft_replica::identity` does).
    voting: Vec<Voting>,
    /// Per replica: writes in progress and when each completes.
    disks: Vec<VecDeque<(u64, Persist)>>,
    /// Messages in flight by (delivery time, sequence).
    network: BTreeMap<(u64, u64), Message>,
    sent: u64,
    /// (from, to) pairs that cannot talk.
    cut: BTreeSet<(u64, u64)>,
    leaders: BTreeMap<u64, u64>,
    /// Every entry applied anywhere: index → (term, data).
    pub committed: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Per replica, the last index applied in its current life.
    applied: Vec<u64>,
    /// Per replica, its state machine in its current life.
    states: Vec<ClusterState>,
    /// Per replica, the index of its latest snapshot.
    compacted: Vec<u64>,
    /// Entries applied between snapshots (0: never snapshot).
    pub compact_every: u64,
    /// Snapshots replicas installed from their leader.
    pub snapshots_installed: u64,
    /// Every client call so far.
    pub history: Vec<Call>,
    /// Puts awaiting their replica's apply: (replica index, request) → call.
    pending_puts: BTreeMap<(usize, RequestId), usize>,
    /// Gets awaiting a read index or the apply it needs: (replica index,
    /// call, read index once known).
    pending_gets: Vec<(usize, usize, Option<u64>)>,
    next_request: u64,
    logger: slog::Logger,
}

impl RaftSim {
    /// A new group of `count` replicas (ids 1..=count) with distinct
    /// election timeouts drawn from `seed`.
    pub fn new(seed: u64, count: usize, faults: Faults) -> RaftSim {
        RaftSim::with_standby(seed, count, 0, faults)
    }

    /// A group of `voters` replicas (ids 1..=voters) and `standby` more
    /// (the ids after) that run outside it until added.
    pub fn with_standby(seed: u64, voters: usize, standby: usize, faults: Faults) -> RaftSim {
        let count = voters + standby;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<u64> = (1..=count as u64).collect();
        let group: Vec<u64> = (1..=voters as u64).collect();
        let mut spreads: Vec<usize> = (0..count).collect();
        for index in (1..count).rev() {
            spreads.swap(index, rng.gen_range(0..=index));
        }
        let configs: Vec<ReplicaConfig> = ids
            .iter()
            .zip(spreads)
            .map(|(&id, spread)| ReplicaConfig {
                id,
                voters: group.clone(),
                election_ticks: 10 + 3 * spread,
                heartbeat_ticks: 3,
                message_bytes_max: 64 * 1024,
                inflight_messages_max: 64,
                uncommitted_bytes_max: 16 * 1024 * 1024,
            })
            .collect();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let durable = vec![Durable::default(); count];
        let replicas = configs
            .iter()
            .map(|config| Some(Replica::new(config, &Durable::default(), &logger).expect("valid")))
            .collect();
        RaftSim {
            rng,
            now_ms: 0,
            faults,
            configs,
            replicas,
            durable,
            voting: vec![Voting::Allowed; count],
            disks: vec![VecDeque::new(); count],
            network: BTreeMap::new(),
            sent: 0,
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: vec![0; count],
            states: vec![ClusterState::default(); count],
            compacted: vec![0; count],
            compact_every: 0,
            snapshots_installed: 0,
            history: Vec::new(),
            pending_puts: BTreeMap::new(),
            pending_gets: Vec::new(),
            next_request: 0,
            logger,
        }
    }

    pub fn count(&self) -> usize {
        self.replicas.len()
    }

    /// The replica a live leader of the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.replicas
            .iter()
            .flatten()
            .filter(|replica| replica.is_leader())
            .max_by_key(|replica| replica.term())
            .map(Replica::id)
    }

    /// Proposes `data` at replica `id` (followers forward it); false if
    /// that replica is down or refuses.
    fn propose(&mut self, id: u64, data: Vec<u8>) -> bool {
        match &mut self.replicas[id as usize - 1] {
            Some(replica) => replica.propose(data).is_ok(),
            None => false,
        }
    }

    /// Proposes a membership change for replica `id` at replica `at` (it
    /// takes effect once committed); false if refused outright.
    pub fn change_membership(&mut self, at: u64, id: u64, change: MembershipChange) -> bool {
        match &mut self.replicas[at as usize - 1] {
            Some(replica) => replica.propose_membership(Vec::new(), id, change).is_ok(),
            None => false,
        }
    }

    /// Voters and learners as replica `id` sees them (None while it is down).
    pub fn members(&self, id: u64) -> Option<(Vec<u64>, Vec<u64>)> {
        self.replicas[id as usize - 1]
            .as_ref()
            .map(Replica::members)
    }

    /// At the leader, promotes one learner that has caught up, as the
    /// replica actor does.
    pub fn promote_caught_up(&mut self, lag_max: u64) {
        let Some(leader) = self.leader() else { return };
        let Some(replica) = &mut self.replicas[leader as usize - 1] else {
            return;
        };
        if replica.membership_change_pending() {
            return;
        }
        if let Some(&learner) = replica.learners_caught_up(lag_max).first() {
            let _ = replica.propose_membership(Vec::new(), learner, MembershipChange::Promote);
        }
    }

    /// Stops replica `id`: its writes in progress are lost, its state
    /// machine forgotten.
    pub fn crash(&mut self, id: u64) {
        let index = id as usize - 1;
        self.replicas[index] = None;
        self.disks[index].clear();
        self.applied[index] = 0;
        self.states[index] = ClusterState::default();
        self.compacted[index] = 0;
        self.pending_puts.retain(|(at, _), _| *at != index);
        self.pending_gets.retain(|(at, _, _)| *at != index);
    }

    /// Client `client` puts `value` at `key` through replica `at`.
    pub fn put(&mut self, at: u64, client: u64, key: &str, value: Vec<u8>) {
        self.next_request += 1;
        let request = RequestId {
            client,
            sequence: self.next_request,
        };
        let proposal = Proposal {
            request,
            command: Command::Put {
                key: key.to_string(),
                value: value.clone(),
            },
        };
        let call = self.record(client, key, CallKind::Put(value));
        let data = proposal.encode().expect("small keys and values");
        if self.propose(at, data) {
            self.pending_puts.insert((at as usize - 1, request), call);
        } else {
            // Refused outright: it never entered the log.
            self.history.pop();
        }
    }

    /// Client `client` reads `key` through replica `at`.
    pub fn get(&mut self, at: u64, client: u64, key: &str) {
        let index = at as usize - 1;
        let Some(replica) = &mut self.replicas[index] else {
            return;
        };
        let call = self.history.len();
        replica.read_index((call as u64).to_be_bytes().to_vec());
        self.record(client, key, CallKind::Get(None));
        self.pending_gets.push((index, call, None));
    }

    fn record(&mut self, client: u64, key: &str, kind: CallKind) -> usize {
        self.history.push(Call {
            client,
            key: key.to_string(),
            called_ms: self.now_ms,
            answered_ms: None,
            kind,
        });
        self.history.len() - 1
    }

    /// Starts replica `id` again from what its disk holds.
    pub fn restart(&mut self, id: u64) -> Result<(), Violation> {
        let index = id as usize - 1;
        if self.replicas[index].is_some() {
            return Ok(());
        }
        let mut replica = Replica::new(&self.configs[index], &self.durable[index], &self.logger)
            .map_err(|error| Violation::Raft(error.to_string()))?;
        replica.set_voting(self.voting[index]);
        self.replicas[index] = Some(replica);
        if let Some(snapshot) = self.durable[index].snapshot.clone() {
            self.restore(index, &snapshot)?;
        }
        Ok(())
    }

    /// Crashes replica `id` and loses everything its disk held (log, hard
    /// state, snapshot) but its identity record. With `withhold`, the
    /// record says what was lost, as `actors::raft_replica::log` finds when a log is behind
    /// its record, and the replica withholds its votes until it catches up
    /// with a later term; without, it starts as if new (how a replica
    /// behaved before it had a record: the unsafe way, kept to show that
    /// the simulation catches it).
    pub fn lose_disk(&mut self, id: u64, withhold: bool) {
        let index = id as usize - 1;
        self.crash(id);
        let lost = self.durable[index].position();
        self.durable[index] = Durable::default();
        self.voting[index] = match withhold {
            true => self.voting[index].withhold(lost),
            false => Voting::Allowed,
        };
    }

    /// What replica `id`'s record allows (None while it is down).
    pub fn voting(&self, id: u64) -> Option<Voting> {
        self.replicas[id as usize - 1].as_ref().map(Replica::voting)
    }

    /// Cuts every link between `group` and the other replicas.
    pub fn partition(&mut self, group: &[u64]) {
        for a in 1..=self.count() as u64 {
            for b in 1..=self.count() as u64 {
                if group.contains(&a) != group.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Advances one virtual millisecond.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.now_ms += 1;
        self.deliver();
        self.complete_writes();
        for index in 0..self.count() {
            if self.now_ms % TICK_MS == 0 {
                if let Some(replica) = &mut self.replicas[index] {
                    replica.tick();
                }
            }
            for _ in 0..DRIVES_PER_STEP_MAX {
                let Some(replica) = &mut self.replicas[index] else {
                    break;
                };
                let outputs = replica
                    .drive()
                    .map_err(|error| Violation::Raft(error.to_string()))?;
                if outputs.is_empty() {
                    break;
                }
                self.carry_out(index, outputs)?;
            }
        }
        self.check_leaders()
    }

    /// Runs `milliseconds` steps.
    pub fn run(&mut self, milliseconds: u64) -> Result<(), Violation> {
        for _ in 0..milliseconds {
            self.step()?;
        }
        Ok(())
    }

    /// What each replica has applied (0 while down), for failure reports.
    pub fn applied(&self) -> Vec<u64> {
        self.applied.clone()
    }

    /// Whether every live member of the group (as its leader sees it) has
    /// applied every entry committed anywhere.
    pub fn converged(&self) -> bool {
        let last = self.committed.keys().next_back().copied().unwrap_or(0);
        let members = self.leader().and_then(|leader| self.members(leader));
        let member = |id: u64| {
            members
                .as_ref()
                .is_none_or(|(voters, learners)| voters.contains(&id) || learners.contains(&id))
        };
        self.replicas
            .iter()
            .zip(&self.applied)
            .enumerate()
            .all(|(index, (replica, &applied))| {
                replica.is_none() || !member(index as u64 + 1) || applied >= last
            })
    }

    fn carry_out(&mut self, index: usize, outputs: Outputs) -> Result<(), Violation> {
        for message in outputs.messages {
            self.send(message);
        }
        if let Some(snapshot) = &outputs.snapshot {
            self.restore(index, snapshot)?;
            self.snapshots_installed += 1;
        }
        for read in outputs.read_states {
            let call = u64::from_be_bytes(read.request_ctx[..8].try_into().expect("8 bytes"));
            for pending in &mut self.pending_gets {
                if pending.0 == index && pending.1 as u64 == call {
                    pending.2 = Some(read.index);
                }
            }
        }
        for entry in outputs.committed {
            if entry.get_entry_type() != raft::eraftpb::EntryType::EntryNormal {
                self.apply_membership(index, &entry)?;
            }
            self.apply(index, &entry)?;
        }
        self.answer_gets(index);
        self.maybe_compact(index)?;
        if let Some(persist) = outputs.persist {
            let previous = self.disks[index].back().map_or(self.now_ms, |(at, _)| *at);
            let delay = self.rng.gen_range(0..=self.faults.disk_delay_max_ms);
            let done = previous.max(self.now_ms + delay);
            self.disks[index].push_back((done, persist));
        }
        Ok(())
    }

    /// A committed membership change: applied by raft-rs and made durable
    /// at once (the simulated disk writes configurations synchronously).
    fn apply_membership(
        &mut self,
        index: usize,
        entry: &raft::eraftpb::Entry,
    ) -> Result<(), Violation> {
        let Some(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        let conf_state = replica
            .apply_membership(entry)
            .map_err(|error| Violation::Raft(error.to_string()))?;
        self.durable[index].conf_state = Some(conf_state);
        Ok(())
    }

    fn apply(&mut self, index: usize, entry: &raft::eraftpb::Entry) -> Result<(), Violation> {
        let (term, data) = (entry.term, entry.data.to_vec());
        let normal = entry.get_entry_type() == raft::eraftpb::EntryType::EntryNormal;
        let entry = entry.index;
        let replica = index as u64 + 1;
        if entry != self.applied[index] + 1 {
            return Err(Violation::AppliedOutOfOrder {
                replica,
                index: entry,
                previous: self.applied[index],
            });
        }
        self.applied[index] = entry;
        let machine_data: &[u8] = if normal { &data } else { &[] };
        let applied = self.states[index]
            .apply(entry, machine_data)
            .map_err(|error| Violation::Raft(error.to_string()))?;
        if let Some((request, _)) = applied {
            if let Some(call) = self.pending_puts.remove(&(index, request)) {
                self.history[call].answered_ms = Some(self.now_ms);
            }
        }
        match self.committed.get(&entry) {
            Some((earlier_term, earlier)) if (*earlier_term, earlier) != (term, &data) => {
                Err(Violation::EntryChanged {
                    index: entry,
                    replica,
                    term,
                    earlier_term: *earlier_term,
                })
            }
            Some(_) => Ok(()),
            None => {
                self.committed.insert(entry, (term, data));
                Ok(())
            }
        }
    }

    fn send(&mut self, message: Message) {
        if self.cut.contains(&(message.from, message.to)) || self.rng.gen_bool(self.faults.loss) {
            self.report_snapshot(&message, false);
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_ms + self.rng.gen_range(1..=self.faults.delay_max_ms.max(1));
            self.sent += 1;
            self.network.insert((at, self.sent), message.clone());
        }
    }

    fn deliver(&mut self) {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let message = entry.remove();
            let arrived = !self.cut.contains(&(message.from, message.to))
                && self.replicas[message.to as usize - 1].is_some();
            self.report_snapshot(&message, arrived);
            if !arrived {
                continue;
            }
            if let Some(replica) = &mut self.replicas[message.to as usize - 1] {
                // A stale or unexpected message is refused, not fatal.
                let _ = replica.step(message);
            }
        }
    }

    fn complete_writes(&mut self) {
        for index in 0..self.count() {
            while self.disks[index]
                .front()
                .is_some_and(|(done, _)| *done <= self.now_ms)
            {
                let (_, persist) = self.disks[index].pop_front().expect("just seen");
                self.durable[index].absorb(&persist);
                self.voting[index] = self.voting[index].after(&self.durable[index].position());
                let released = match &mut self.replicas[index] {
                    Some(replica) => replica.persisted(persist.number),
                    None => Vec::new(),
                };
                for message in released {
                    self.send(message);
                }
            }
        }
    }

    fn check_leaders(&mut self) -> Result<(), Violation> {
        for replica in self.replicas.iter().flatten() {
            if !replica.is_leader() {
                continue;
            }
            let (term, id) = (replica.term(), replica.id());
            let first = *self.leaders.entry(term).or_insert(id);
            if first != id {
                return Err(Violation::TwoLeaders {
                    term,
                    first,
                    second: id,
                });
            }
        }
        Ok(())
    }
}

impl RaftSim {
    /// Tells a snapshot's sender whether it arrived.
    fn report_snapshot(&mut self, message: &Message, arrived: bool) {
        if message.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return;
        }
        if let Some(sender) = &mut self.replicas[message.from as usize - 1] {
            sender.report_snapshot(message.to, arrived);
        }
    }

    /// Replica `index`'s state machine becomes `snapshot`'s.
    fn restore(
        &mut self,
        index: usize,
        snapshot: &raft::eraftpb::Snapshot,
    ) -> Result<(), Violation> {
        let at = snapshot.get_metadata().index;
        if at < self.applied[index] {
            return Err(Violation::Raft(format!(
                "replica {} was sent a snapshot at {at}, behind its applied {}",
                index + 1,
                self.applied[index]
            )));
        }
        self.states[index] = ClusterState::restore(&snapshot.data)
            .map_err(|error| Violation::Raft(error.to_string()))?;
        self.applied[index] = at;
        self.compacted[index] = at;
        Ok(())
    }

    /// Snapshots replica `index` every `compact_every` applied entries.
    fn maybe_compact(&mut self, index: usize) -> Result<(), Violation> {
        let applied = self.applied[index];
        if self.compact_every == 0 || applied < self.compacted[index] + self.compact_every {
            return Ok(());
        }
        let Some(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        let snapshot = replica
            .compact(applied, self.states[index].snapshot())
            .map_err(|error| Violation::Raft(error.to_string()))?;
        self.durable[index].compacted(&snapshot);
        self.compacted[index] = applied;
        Ok(())
    }

    /// Answers the gets at replica `index` whose read index it has applied.
    fn answer_gets(&mut self, index: usize) {
        let applied = self.applied[index];
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .pending_gets
            .drain(..)
            .partition(|(at, _, read)| *at == index && read.is_some_and(|read| read <= applied));
        self.pending_gets = waiting;
        for (_, call, _) in ready {
            let value = self.states[index]
                .get(&self.history[call].key)
                .map(<[u8]>::to_vec);
            self.history[call].kind = CallKind::Get(Some(value));
            self.history[call].answered_ms = Some(self.now_ms);
        }
    }
}
