//! A PBFT group of [`Replica`]s and its clients over a simulated network,
//! in virtual ticks. The network loses, duplicates and delays (so
//! reorders) messages and can be partitioned; chosen replicas behave
//! Byzantine ([`Behaviour`]). The simulation checks, as it goes:
//!
//! - no two correct replicas execute different batches at one sequence
//!   number;
//! - correct replicas give the same result for the same client request;
//! - a client accepts a result only once f + 1 replicas gave it, and it is
//!   the result correct replicas gave.
//!
//! Clients send each request to the primary they believe in, and to every
//! replica when no answer comes in time, again and again.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::protocols::pbft::keys::SimKeys;
use crate::protocols::pbft::messages::Digest;
use crate::protocols::pbft::{
    ClientKey, Operation, OperationResult, Outgoing, PbftConfig, Replica, ReplicaId, Reply,
    Request, Signed, Target,
};

pub use crate::protocols::pbft::Behaviour;

#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Messages take 1 to this many ticks.
    pub delay_max_ticks: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        delay_max_ticks: 1,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(
        "sequence {sequence}: replica {replica} executed a batch other than replica {other} did"
    )]
    Diverged {
        sequence: u64,
        replica: ReplicaId,
        other: ReplicaId,
    },
    #[error("correct replicas gave different results for one request of a client at {timestamp}")]
    ResultsDiffer { timestamp: u64 },
    #[error(
        "a client accepted {accepted:?} at {timestamp}, but correct replicas gave {correct:?}"
    )]
    WrongResult {
        timestamp: u64,
        accepted: OperationResult,
        correct: OperationResult,
    },
}

#[derive(Clone)]
enum Packet {
    Message(Signed),
    Request(Request),
    Reply(Reply),
}

#[derive(Clone, Copy)]
enum Address {
    Replica(ReplicaId),
    Client(usize),
}

struct Client {
    keys: SimKeys,
    key: ClientKey,
    timestamp: u64,
    /// The request waiting for answers, when it was first and last sent,
    /// and the answers so far.
    outstanding: Option<(Request, u64, u64, BTreeMap<ReplicaId, OperationResult>)>,
    /// The view the client thinks is current.
    view: u64,
    /// When it sends its next request.
    next_at: u64,
    /// Requests accepted.
    pub accepted: u64,
}

pub struct PbftSim {
    rng: ChaCha8Rng,
    pub seed: u64,
    pub now: u64,
    pub faults: Faults,
    pub config: PbftConfig,
    replicas: Vec<Replica<SimKeys>>,
    keys: Vec<SimKeys>,
    pub behaviours: Vec<Behaviour>,
    clients: Vec<Client>,
    network: BTreeMap<(u64, u64), (Address, Packet)>,
    sent: u64,
    /// Replicas cut off from the others (both ways).
    isolated: BTreeSet<ReplicaId>,
    /// Links cut one way: (from, to).
    cut_links: BTreeSet<(ReplicaId, ReplicaId)>,
    /// What correct replicas executed at each sequence number, and who.
    executed: BTreeMap<u64, (Digest, ReplicaId)>,
    /// What correct replicas answered per (client, timestamp).
    results: BTreeMap<(ClientKey, u64), OperationResult>,
    /// Old messages a replaying replica has seen.
    seen: Vec<Signed>,
    /// Ticks a client waits for answers before it asks every replica.
    pub client_timeout: u64,
    /// Clients stop sending new requests from this tick on.
    pub clients_stop_at: u64,
    pub view_changes: u64,
}

impl PbftSim {
    pub fn new(seed: u64, config: PbftConfig, clients: usize, faults: Faults) -> PbftSim {
        config.check().expect("a valid config");
        let n = config.replicas;
        let keys: Vec<SimKeys> = (0..n).map(|id| SimKeys::replica(seed, id)).collect();
        let replicas = (0..n)
            .map(|id| Replica::new(config.clone(), id, keys[id as usize].clone()))
            .collect();
        let clients = (0..clients as u64)
            .map(|index| Client {
                keys: SimKeys::client(seed, index),
                key: SimKeys::client_key(index),
                timestamp: 0,
                outstanding: None,
                view: 0,
                next_at: index,
                accepted: 0,
            })
            .collect();
        PbftSim {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            now: 0,
            faults,
            behaviours: vec![Behaviour::Correct; n as usize],
            client_timeout: config.request_timeout_ticks * 2,
            config,
            replicas,
            keys,
            clients,
            network: BTreeMap::new(),
            sent: 0,
            isolated: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            executed: BTreeMap::new(),
            results: BTreeMap::new(),
            seen: Vec::new(),
            clients_stop_at: u64::MAX,
            view_changes: 0,
        }
    }

    pub fn set_behaviour(&mut self, replica: ReplicaId, behaviour: Behaviour) {
        self.behaviours[replica as usize] = behaviour;
    }

    fn correct(&self, replica: ReplicaId) -> bool {
        self.behaviours[replica as usize] == Behaviour::Correct
    }

    pub fn isolate(&mut self, replica: ReplicaId) {
        self.isolated.insert(replica);
    }

    /// Messages from `from` to `to` are lost until healed; the other way
    /// still works.
    pub fn cut(&mut self, from: ReplicaId, to: ReplicaId) {
        self.cut_links.insert((from, to));
    }

    pub fn heal(&mut self, faults: Faults) {
        self.isolated.clear();
        self.cut_links.clear();
        self.faults = faults;
    }

    /// Replica `id` starts again with nothing: what it voted for is
    /// forgotten, which a correct replica may not do, so only a faulty
    /// one may be restarted.
    pub fn restart(&mut self, id: ReplicaId) {
        assert!(
            !self.correct(id),
            "replica {id} is correct; restarting it empty is a fault"
        );
        let keys = self.keys[id as usize].clone();
        self.replicas[id as usize] = Replica::new(self.config.clone(), id, keys);
    }

    pub fn replica(&self, id: ReplicaId) -> &Replica<SimKeys> {
        &self.replicas[id as usize]
    }

    /// Requests every client has had accepted.
    pub fn accepted(&self) -> Vec<u64> {
        self.clients.iter().map(|client| client.accepted).collect()
    }

    /// Whether any client waits on a request sent before `tick`.
    pub fn waiting_since(&self, tick: u64) -> bool {
        self.clients.iter().any(|c| {
            c.outstanding
                .as_ref()
                .is_some_and(|(_, first, _, _)| *first < tick)
        })
    }

    /// The highest sequence number correct replicas executed.
    pub fn executed_max(&self) -> u64 {
        self.executed.keys().last().copied().unwrap_or(0)
    }

    pub fn run(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks {
            self.step()?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        self.clients_act();
        let due: Vec<(u64, u64)> = self
            .network
            .range(..(self.now + 1, 0))
            .map(|(k, _)| *k)
            .collect();
        let mut inboxes: BTreeMap<ReplicaId, Vec<Signed>> = BTreeMap::new();
        for key in due {
            let (to, packet) = self.network.remove(&key).expect("listed");
            match (to, packet) {
                (Address::Replica(id), Packet::Message(message)) => {
                    inboxes.entry(id).or_default().push(message)
                }
                (Address::Replica(id), Packet::Request(request)) => {
                    let _ = self.replicas[id as usize].request(request);
                }
                (Address::Client(index), Packet::Reply(reply)) => {
                    self.client_heard(index, reply)?
                }
                _ => unreachable!("packets go where they belong"),
            }
        }
        for (id, messages) in inboxes {
            if self.behaviours[id as usize] == Behaviour::Replay {
                self.seen.extend(messages.iter().cloned());
                if self.seen.len() > 4_096 {
                    self.seen.drain(..2_048);
                }
            }
            self.replicas[id as usize].receive(messages);
        }
        for id in 0..self.config.replicas {
            self.replicas[id as usize].tick();
            self.carry_out(id)?;
        }
        Ok(())
    }

    fn clients_act(&mut self) {
        let n = self.config.replicas;
        for index in 0..self.clients.len() {
            let now = self.now;
            let client = &mut self.clients[index];
            match &mut client.outstanding {
                Some((request, _, sent, _)) if now >= *sent + self.client_timeout => {
                    *sent = now;
                    let request = request.clone();
                    for id in 0..n {
                        self.send(Address::Replica(id), Packet::Request(request.clone()), 0);
                    }
                }
                Some(_) => {}
                None if now >= client.next_at && now < self.clients_stop_at => {
                    client.timestamp += 1;
                    let operation = pick_operation(&mut self.rng, index);
                    let request =
                        Request::new(client.key, client.timestamp, operation, &client.keys);
                    let primary = self.config.primary_of(client.view);
                    client.outstanding = Some((request.clone(), now, now, BTreeMap::new()));
                    self.send(Address::Replica(primary), Packet::Request(request), 0);
                }
                None => {}
            }
        }
    }

    /// A reply reaches a client: with f + 1 matching, it accepts.
    fn client_heard(&mut self, index: usize, reply: Reply) -> Result<(), Violation> {
        let needed = self.config.faults() as usize + 1;
        let client = &mut self.clients[index];
        let Some((request, _, _, answers)) = &mut client.outstanding else {
            return Ok(());
        };
        if reply.timestamp != request.timestamp || reply.client != client.key {
            return Ok(());
        }
        answers.insert(reply.replica, reply.result.clone());
        let agreeing = answers.values().filter(|r| **r == reply.result).count();
        if agreeing < needed {
            return Ok(());
        }
        let timestamp = request.timestamp;
        if let Some(correct) = self.results.get(&(client.key, timestamp)) {
            if *correct != reply.result {
                return Err(Violation::WrongResult {
                    timestamp,
                    accepted: reply.result,
                    correct: correct.clone(),
                });
            }
        }
        client.view = client.view.max(reply.view);
        client.outstanding = None;
        client.accepted += 1;
        client.next_at = self.now + 1 + self.rng.gen_range(0..3);
        Ok(())
    }

    /// Takes a replica's outputs: checks what a correct one executed and
    /// answered, applies its behaviour, and sends.
    fn carry_out(&mut self, id: ReplicaId) -> Result<(), Violation> {
        let outputs = self.replicas[id as usize].take_outputs();
        if outputs.entered_view.is_some() && self.correct(id) {
            self.view_changes += 1;
        }
        if self.correct(id) {
            for (sequence, digest, _) in &outputs.executed {
                match self.executed.get(sequence) {
                    Some((held, other)) if held != digest => {
                        return Err(Violation::Diverged {
                            sequence: *sequence,
                            replica: id,
                            other: *other,
                        })
                    }
                    Some(_) => {}
                    None => {
                        self.executed.insert(*sequence, (*digest, id));
                    }
                }
            }
            for reply in &outputs.replies {
                let key = (reply.client, reply.timestamp);
                match self.results.get(&key) {
                    Some(held) if *held != reply.result => {
                        return Err(Violation::ResultsDiffer {
                            timestamp: reply.timestamp,
                        })
                    }
                    Some(_) => {}
                    None => {
                        self.results.insert(key, reply.result.clone());
                    }
                }
            }
        }
        let behaviour = self.behaviours[id as usize];
        if behaviour == Behaviour::Silent {
            return Ok(());
        }
        for reply in outputs
            .replies
            .into_iter()
            .filter_map(|r| behaviour.reply(r))
        {
            let Some(index) = self.clients.iter().position(|c| c.key == reply.client) else {
                continue;
            };
            self.send(
                Address::Client(index),
                Packet::Reply(reply),
                self.extra_delay(id),
            );
        }
        for (target, outgoing) in outputs.sends {
            self.send_from(id, behaviour, target, outgoing);
        }
        if behaviour == Behaviour::Replay && !self.seen.is_empty() && self.rng.gen_bool(0.3) {
            let old = self.seen[self.rng.gen_range(0..self.seen.len())].clone();
            let to = self.rng.gen_range(0..self.config.replicas);
            self.send(Address::Replica(to), Packet::Message(old), 0);
        }
        Ok(())
    }

    fn extra_delay(&self, id: ReplicaId) -> u64 {
        match self.behaviours[id as usize] {
            Behaviour::Delay => self.config.request_timeout_ticks / 2,
            _ => 0,
        }
    }

    fn send_from(
        &mut self,
        id: ReplicaId,
        behaviour: Behaviour,
        target: Target,
        outgoing: Outgoing,
    ) {
        let targets: Vec<ReplicaId> = match target {
            Target::All => (0..self.config.replicas).filter(|&to| to != id).collect(),
            Target::Replica(to) => vec![to],
        };
        let delay = self.extra_delay(id);
        for (place, to) in targets.into_iter().enumerate() {
            let split = self.isolated.contains(&id) != self.isolated.contains(&to);
            if split || self.cut_links.contains(&(id, to)) {
                continue;
            }
            let packet = match &outgoing {
                Outgoing::Request(request) => Packet::Request(request.clone()),
                Outgoing::Message(message) => {
                    Packet::Message(behaviour.message(message, place, &self.keys[id as usize]))
                }
            };
            self.send(Address::Replica(to), packet, delay);
        }
    }

    fn send(&mut self, to: Address, packet: Packet, extra_delay: u64) {
        if self.rng.gen_bool(self.faults.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(1..=self.faults.delay_max_ticks.max(1)) + extra_delay;
            self.sent += 1;
            self.network
                .insert((self.now + delay, self.sent), (to, packet.clone()));
        }
    }
}

/// A mix of operations on a few shared keys, so concurrent claims and
/// puts conflict.
fn pick_operation(rng: &mut ChaCha8Rng, client: usize) -> Operation {
    let key = format!("k{}", rng.gen_range(0..4));
    let value = format!("c{client}-{}", rng.gen_range(0..1_000)).into_bytes();
    match rng.gen_range(0..4) {
        0 => Operation::Put { key, value },
        1 => Operation::Get { key },
        2 => Operation::Claim { key, value },
        _ => Operation::Decide {
            log: "decisions".into(),
            entry: value,
        },
    }
}
