//! Mesh cores ([`MeshCore`]) on a seeded virtual network, VOPR-style, in
//! virtual milliseconds: a fault phase, then a healed phase that must
//! converge.
//!
//! During the faults the network loses, duplicates, corrupts and delays
//! (so reorders) envelopes; links are cut and mended, and a random half of
//! the nodes is cut from the other; nodes crash (losing everything) and
//! restart as a new incarnation; agents restart and lose what waited in
//! their inboxes. Every node learns of a crash or a restart after a
//! detection delay, and routes by the overlay over the nodes it thinks
//! live. Then every link is mended and every node restarted; agents go on
//! sending for a while, then stop, and the cores must settle.
//!
//! Checked as it goes and at the end ([`Violation`]):
//! - each envelope is consumed at most once per destination node
//!   incarnation, unaltered, by the agent it was sent to;
//! - every delivered envelope travelled within its TTL and visited no
//!   node twice;
//! - every message gets exactly one outcome (unless its origin crashed
//!   first), every acknowledged one was consumed, and the cores' counters
//!   agree with the outcomes seen (every refusal typed and counted);
//! - after healing nothing is unsettled, and every message sent once the
//!   healed network had time to settle is acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::protocols::delivery::SenderConfig;
use crate::protocols::mesh::{
    Event, MeshConfig, MeshCore, MeshCounters, Message, Now, OverlayFrame, Paths, Roster,
    RoutingView, SendError,
};
use crate::protocols::topology::{Shape, Topology};
use crate::protocols::wire::{Authentication, Destination, Envelope, EnvelopeKind};

/// What the network and the nodes do wrong during the fault phase; every
/// probability is per envelope or per virtual millisecond.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// An envelope's payload or sequence is altered on the way.
    pub corrupt: f64,
    /// Envelopes take 1 to this many milliseconds.
    pub delay_max_ms: u64,
    /// Per millisecond: a random overlay link is cut; one cut is mended.
    pub cut: f64,
    pub mend: f64,
    /// Per millisecond: a random half of the nodes is cut from the rest.
    pub split: f64,
    /// Per millisecond: a random node crashes (down 100–2,500 ms).
    pub crash: f64,
    /// Per millisecond: a random agent restarts.
    pub agent_restart: f64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        loss: 0.0,
        duplicate: 0.0,
        corrupt: 0.0,
        delay_max_ms: 1,
        cut: 0.0,
        mend: 0.0,
        split: 0.0,
        crash: 0.0,
        agent_restart: 0.0,
    };

    pub const HARSH: Faults = Faults {
        loss: 0.05,
        duplicate: 0.03,
        corrupt: 0.01,
        delay_max_ms: 30,
        cut: 0.004,
        mend: 0.006,
        split: 0.0004,
        crash: 0.0008,
        agent_restart: 0.0008,
    };
}

/// One run's shape.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    /// Overlay degree.
    pub k: usize,
    pub agents_per_node: usize,
    pub faults: Faults,
    pub fault_ms: u64,
    /// Agents go on sending this long after the faults heal.
    pub healed_ms: u64,
    /// Messages sent this long after healing must all be acknowledged.
    pub settle_ms: u64,
    /// Then the run waits at most this long for the cores to settle.
    pub quiet_ms_max: u64,
    /// Per millisecond, the chance that some agent sends a message.
    pub send_probability: f64,
    /// Deliveries an agent consumes per millisecond, and holds at most.
    pub consume_per_ms: usize,
    pub inbox_max: usize,
    /// When nodes learn of a crash or a restart.
    pub detect_ms: u64,
    /// A broken mesh, to show the checks catch one: each agent restart
    /// also makes its node's core forget what was consumed.
    pub forget_consumed_on_agent_restart: bool,
    /// How cores authenticate the data they originate.
    pub authentication: Authentication,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            nodes: 8,
            k: 3,
            agents_per_node: 2,
            faults: Faults::HARSH,
            fault_ms: 4_000,
            healed_ms: 3_000,
            settle_ms: 1_500,
            quiet_ms_max: 15_000,
            send_probability: 0.5,
            consume_per_ms: 2,
            inbox_max: 8,
            detect_ms: 150,
            forget_consumed_on_agent_restart: false,
            authentication: Authentication::PairKey,
        }
    }
}

/// What a run broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{node} (incarnation {incarnation}) consumed {origin}'s sequence {sequence} twice")]
    ConsumedTwice {
        node: String,
        incarnation: u64,
        origin: String,
        sequence: u64,
    },
    #[error("message {message} reached agent {agent} altered or at the wrong agent")]
    Altered { message: u64, agent: String },
    #[error("an envelope reached {node} after {hops} hops, over its TTL of {ttl}")]
    TtlExceeded { node: String, hops: u8, ttl: u8 },
    #[error("an envelope reached {node} over a path that visits a node twice: {path:?}")]
    Loop { node: String, path: Vec<u16> },
    #[error("message {message} got {outcomes} outcomes")]
    Outcomes { message: u64, outcomes: u32 },
    #[error("message {message} was acknowledged but never consumed")]
    AcknowledgedNotConsumed { message: u64 },
    #[error("message {message} has no outcome after the run settled")]
    NoOutcome { message: u64 },
    #[error("{node} still awaits acknowledgement of {inflight} messages after healing")]
    Unsettled { node: String, inflight: usize },
    #[error("message {message}, sent {after_ms} ms after healing, failed: {error}")]
    HealedFailed {
        message: u64,
        after_ms: u64,
        error: SendError,
    },
    #[error("counters say {counted} {what}, the outcomes {seen}")]
    Counters {
        what: &'static str,
        counted: u64,
        seen: u64,
    },
}

/// What a run did, for the caller to look at.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub acknowledged: u64,
    /// Failed outcomes by error: no_route, inflight_full,
    /// retries_exhausted (any other is a bug the checks catch).
    pub failed: BTreeMap<String, u64>,
    /// Messages whose origin crashed before their outcome.
    pub orphaned: u64,
    pub consumed: u64,
    pub crashes: u64,
    pub corrupted: u64,
    /// Every core's counters, summed over incarnations.
    pub counters: MeshCounters,
    /// Virtual milliseconds the run took to settle after the last send.
    pub quiet_ms: u64,
}

struct SimAgent {
    name: String,
    incarnation: u64,
    inbox: VecDeque<Envelope>,
}

struct SimNode {
    name: String,
    core: Option<MeshCore<u64>>,
    incarnation: u64,
    agents: Vec<SimAgent>,
    view: Arc<RoutingView>,
    restart_at_ms: Option<u64>,
}

struct Record {
    origin: usize,
    origin_incarnation: u64,
    destination_agent: String,
    payload: Vec<u8>,
    sent_at_ms: u64,
    outcomes: u32,
    acknowledged: bool,
    failed: Option<SendError>,
    orphaned: bool,
    consumed: u32,
}

/// Envelopes on the wire and which links are cut.
struct Network {
    /// (arrival ms, order) → (from, to, envelope).
    packets: BTreeMap<(u64, u64), (usize, usize, Envelope)>,
    order: u64,
    cut: BTreeSet<(usize, usize)>,
    up: Vec<bool>,
}

impl Network {
    fn link_up(&self, from: usize, to: usize) -> bool {
        self.up[to] && !self.cut.contains(&(from.min(to), from.max(to)))
    }
}

pub struct MeshSim {
    config: SimConfig,
    rng: ChaCha8Rng,
    now_ms: u64,
    faulty: bool,
    names: Vec<String>,
    index_of: HashMap<String, usize>,
    keys: Vec<SigningKey>,
    roster: Arc<Roster>,
    topology: Topology,
    nodes: Vec<SimNode>,
    network: Network,
    /// Who the nodes think is live, and changes they have yet to learn.
    live_known: BTreeSet<String>,
    live_changes: VecDeque<(u64, String, bool)>,
    records: Vec<Record>,
    /// (node, incarnation, origin, sequence) consumed.
    consumed: BTreeSet<(usize, u64, String, u64)>,
    report: Report,
    failed_events: u64,
}

/// Starts a node's next incarnation on `core`, with its agents started
/// again.
fn boot(node: &mut SimNode, mut core: MeshCore<u64>) {
    node.incarnation += 1;
    for agent in &mut node.agents {
        agent.incarnation += 1;
        agent.inbox.clear();
        core.agent_restarted(&agent.name, agent.incarnation);
    }
    node.core = Some(core);
    node.restart_at_ms = None;
}

/// Runs one seeded simulation.
pub fn run(seed: u64, config: SimConfig) -> Result<Report, Violation> {
    let mut sim = MeshSim::new(seed, config);
    sim.run()
}

impl MeshSim {
    pub fn new(seed: u64, config: SimConfig) -> MeshSim {
        assert!(config.nodes >= 2 && config.agents_per_node >= 1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let names: Vec<String> = (0..config.nodes).map(|i| format!("n{i:02}")).collect();
        let keys: Vec<SigningKey> = names
            .iter()
            .map(|_| SigningKey::from_bytes(&rng.gen()))
            .collect();
        let agent_nodes = names.iter().flat_map(|node| {
            (0..config.agents_per_node).map(move |a| (format!("{node}-a{a}"), node.clone()))
        });
        let roster = Roster::new(
            names.clone(),
            names
                .iter()
                .zip(&keys)
                .map(|(name, key)| (name.clone(), key.verifying_key()))
                .collect(),
            agent_nodes,
        );
        let topology = Topology::new(Shape::PartialMesh { k: config.k }, &names, seed);
        let live_known: BTreeSet<String> = names.iter().cloned().collect();
        let mut sim = MeshSim {
            config,
            rng,
            now_ms: 0,
            faulty: true,
            index_of: names.iter().cloned().zip(0..).collect(),
            keys,
            roster: Arc::new(roster),
            topology,
            nodes: Vec::new(),
            network: Network {
                packets: BTreeMap::new(),
                order: 0,
                cut: BTreeSet::new(),
                up: vec![true; names.len()],
            },
            names,
            live_known,
            live_changes: VecDeque::new(),
            records: Vec::new(),
            consumed: BTreeSet::new(),
            report: Report::default(),
            failed_events: 0,
        };
        for index in 0..sim.names.len() {
            let node = sim.fresh_node(index);
            sim.nodes.push(node);
        }
        sim.refresh_views();
        sim
    }

    fn fresh_node(&self, index: usize) -> SimNode {
        let name = self.names[index].clone();
        let agents = (0..self.config.agents_per_node)
            .map(|a| SimAgent {
                name: format!("{name}-a{a}"),
                incarnation: 0,
                inbox: VecDeque::new(),
            })
            .collect();
        let mut node = SimNode {
            core: None,
            incarnation: 0,
            agents,
            view: Arc::new(self.view_for(&name)),
            restart_at_ms: None,
            name,
        };
        boot(&mut node, self.new_core(index));
        node
    }

    /// A core for node `index` that remembers nothing, with sequences
    /// starting at its boot time.
    fn new_core(&self, index: usize) -> MeshCore<u64> {
        let config = MeshConfig {
            node: self.names[index].clone(),
            ttl: 8,
            authentication: self.config.authentication,
            sender: SenderConfig {
                inflight_max: 512,
                span_max: crate::protocols::wire::duplicate_window::WINDOW_BITS / 2,
                retransmit_timeout_ms: 40,
                retransmit_timeout_max_ms: 800,
                retries_max: 6,
            },
            first_sequence: self.now_ms * 1_000 + 1,
            deliveries_max: self.config.agents_per_node * self.config.inbox_max,
            ack_delay_ms: 5,
        };
        MeshCore::new(config, self.keys[index].clone(), self.roster.clone())
    }

    fn view_for(&self, name: &str) -> RoutingView {
        let overlay = self.topology.overlay_for(&self.live_known);
        let frame = OverlayFrame::new(overlay, name, &self.names);
        RoutingView::new(Arc::new(frame), Default::default(), 1_000)
    }

    fn refresh_views(&mut self) {
        for index in 0..self.nodes.len() {
            let view = Arc::new(self.view_for(&self.names[index]));
            self.nodes[index].view = view;
        }
    }

    fn now(&self) -> Now {
        Now {
            monotonic_ms: self.now_ms,
            unix_micros: self.now_ms * 1_000,
        }
    }

    pub fn run(&mut self) -> Result<Report, Violation> {
        let config = self.config;
        let sending_until = config.fault_ms + config.healed_ms;
        while self.now_ms < sending_until {
            if self.now_ms == config.fault_ms {
                self.heal();
            }
            self.step(true)?;
        }
        let quiet_from = self.now_ms;
        while self.now_ms < sending_until + config.quiet_ms_max && !self.settled() {
            self.step(false)?;
        }
        self.report.quiet_ms = self.now_ms - quiet_from;
        self.check_end()?;
        Ok(std::mem::take(&mut self.report))
    }

    fn step(&mut self, sending: bool) -> Result<(), Violation> {
        if self.faulty {
            self.inject_faults();
        }
        self.restart_due();
        self.learn_live();
        self.arrive()?;
        for index in 0..self.nodes.len() {
            self.timeout(index)?;
        }
        if sending && self.rng.gen_bool(self.config.send_probability) {
            self.send_one()?;
        }
        for index in 0..self.nodes.len() {
            self.consume(index)?;
        }
        self.now_ms += 1;
        Ok(())
    }

    fn settled(&self) -> bool {
        self.network.packets.is_empty()
            && self.nodes.iter().all(|node| {
                node.core
                    .as_ref()
                    .is_some_and(|core| core.inflight() == 0 && core.poll_timeout().is_none())
                    && node.agents.iter().all(|agent| agent.inbox.is_empty())
            })
    }
}

/// Inputs to one node's core and what it decided.
impl MeshSim {
    /// Calls `input` on node `index`'s core, if it runs, with the time and
    /// its paths, then carries out what the core decided.
    fn input(
        &mut self,
        index: usize,
        input: impl FnOnce(&mut MeshCore<u64>, Now, Paths<'_>),
    ) -> Result<(), Violation> {
        let now = self.now();
        let view = self.nodes[index].view.clone();
        let (network, index_of) = (&self.network, &self.index_of);
        let link_up = |peer: &str| {
            index_of
                .get(peer)
                .is_some_and(|&other| network.link_up(index, other))
        };
        let Some(core) = self.nodes[index].core.as_mut() else {
            return Ok(());
        };
        let placed = std::collections::BTreeMap::new();
        let paths = Paths {
            view: &view,
            link_up: &link_up,
            placed: &placed,
        };
        input(core, now, paths);
        self.drain(index)
    }

    fn drain(&mut self, index: usize) -> Result<(), Violation> {
        let Some(core) = self.nodes[index].core.as_mut() else {
            return Ok(());
        };
        let transmits: Vec<_> = std::iter::from_fn(|| core.poll_transmit()).collect();
        let deliveries: Vec<_> = std::iter::from_fn(|| core.poll_deliver()).collect();
        let events: Vec<_> = std::iter::from_fn(|| core.poll_event()).collect();
        self.report.counters.add(&core.take_counters());
        for transmit in transmits {
            let to = self.index_of[&transmit.peer];
            self.put_on_wire(index, to, transmit.envelope);
        }
        for delivery in deliveries {
            self.hand_over(index, delivery)?;
        }
        for event in events {
            self.outcome(event)?;
        }
        Ok(())
    }

    fn put_on_wire(&mut self, from: usize, to: usize, mut envelope: Envelope) {
        if !self.network.link_up(from, to) {
            return;
        }
        let faults = if self.faulty {
            self.config.faults
        } else {
            Faults {
                delay_max_ms: 3,
                ..Faults::NONE
            }
        };
        if self.rng.gen_bool(faults.loss) {
            return;
        }
        if self.rng.gen_bool(faults.corrupt) {
            self.report.corrupted += 1;
            match envelope.signed.payload.len() {
                0 => envelope.signed.sequence ^= 1,
                bytes => envelope.signed.payload[self.rng.gen_range(0..bytes)] ^= 0x20,
            }
        }
        let copies = if self.rng.gen_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_ms + self.rng.gen_range(1..=faults.delay_max_ms.max(1));
            self.network.order += 1;
            let key = (at, self.network.order);
            self.network
                .packets
                .insert(key, (from, to, envelope.clone()));
        }
    }

    /// Puts a delivery in its agent's inbox, or tells the core it could
    /// not; checks the path it came by.
    fn hand_over(
        &mut self,
        index: usize,
        delivery: crate::protocols::mesh::Delivery,
    ) -> Result<(), Violation> {
        let envelope = &delivery.envelope;
        let node = &self.nodes[index].name;
        let (hops, ttl) = (envelope.hop_count, envelope.signed.ttl);
        if hops > ttl {
            return Err(Violation::TtlExceeded {
                node: node.clone(),
                hops,
                ttl,
            });
        }
        let travelled = &envelope.path[..envelope.path.len().min(hops as usize + 1)];
        let distinct: BTreeSet<u16> = travelled.iter().copied().collect();
        if distinct.len() != travelled.len() {
            let path = envelope.path.clone();
            return Err(Violation::Loop {
                node: node.clone(),
                path,
            });
        }
        let inbox_max = self.config.inbox_max;
        let node = &mut self.nodes[index];
        let agent = node
            .agents
            .iter_mut()
            .find(|agent| agent.name == delivery.agent);
        match agent {
            Some(agent)
                if agent.incarnation == delivery.incarnation && agent.inbox.len() < inbox_max =>
            {
                agent.inbox.push_back(delivery.envelope);
            }
            _ => {
                let signed = &delivery.envelope.signed;
                let core = node.core.as_mut().expect("a running node drains");
                core.undelivered(&delivery.agent, &signed.origin_node, signed.sequence);
            }
        }
        Ok(())
    }

    fn outcome(&mut self, event: Event<u64>) -> Result<(), Violation> {
        let (receipt, failed) = match event {
            Event::Acknowledged { receipt, .. } => (receipt, None),
            Event::Failed { receipt, error, .. } => (receipt, Some(error)),
        };
        let message = receipt.expect("every simulated message asks for its outcome");
        let record = &mut self.records[message as usize];
        record.outcomes += 1;
        if record.outcomes > 1 {
            return Err(Violation::Outcomes {
                message,
                outcomes: record.outcomes,
            });
        }
        match failed {
            None => {
                record.acknowledged = true;
                self.report.acknowledged += 1;
            }
            Some(error) => {
                self.failed_events += 1;
                let kind = match &error {
                    SendError::NoRoute(_) => "no_route",
                    SendError::InFlightFull(_) => "inflight_full",
                    SendError::RetriesExhausted(_) => "retries_exhausted",
                    _ => "other",
                };
                *self.report.failed.entry(kind.to_string()).or_default() += 1;
                record.failed = Some(error);
            }
        }
        Ok(())
    }
}

/// The workload: envelopes arriving, timers, agents sending and consuming.
impl MeshSim {
    fn arrive(&mut self) -> Result<(), Violation> {
        let mut batches: BTreeMap<usize, Vec<Envelope>> = BTreeMap::new();
        while let Some(entry) = self.network.packets.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let (from, to, envelope) = entry.remove();
            // A link cut or a node down while the envelope was on its way
            // loses it, as a closing connection does.
            if self.network.link_up(from, to) {
                batches.entry(to).or_default().push(envelope);
            }
        }
        for (to, envelopes) in batches {
            self.input(to, |core, now, paths| {
                core.handle_envelopes(now, paths, envelopes)
            })?;
        }
        Ok(())
    }

    fn timeout(&mut self, index: usize) -> Result<(), Violation> {
        let due = self.nodes[index]
            .core
            .as_ref()
            .and_then(|core| core.poll_timeout())
            .is_some_and(|due| due <= self.now_ms);
        if !due {
            return Ok(());
        }
        self.input(index, |core, now, paths| core.handle_timeout(now, paths))
    }

    /// A random agent of a running node sends to a random agent.
    fn send_one(&mut self) -> Result<(), Violation> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| self.nodes[index].core.is_some())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let origin = running[self.rng.gen_range(0..running.len())];
        let agents = self.config.agents_per_node;
        let source = self.nodes[origin].agents[self.rng.gen_range(0..agents)]
            .name
            .clone();
        let to_node = self.rng.gen_range(0..self.nodes.len());
        let destination = self.nodes[to_node].agents[self.rng.gen_range(0..agents)]
            .name
            .clone();
        let message = self.records.len() as u64;
        let mut payload = message.to_le_bytes().to_vec();
        let extra = self.rng.gen_range(0..24);
        payload.extend((0..extra).map(|_| self.rng.gen::<u8>()));
        self.records.push(Record {
            origin,
            origin_incarnation: self.nodes[origin].incarnation,
            destination_agent: destination.clone(),
            payload: payload.clone(),
            sent_at_ms: self.now_ms,
            outcomes: 0,
            acknowledged: false,
            failed: None,
            orphaned: false,
            consumed: 0,
        });
        self.report.sent += 1;
        let kind = if self.rng.gen_bool(0.5) {
            EnvelopeKind::Data
        } else {
            EnvelopeKind::Reply
        };
        let message = Message {
            source_agent: source,
            destination_agent: destination,
            kind,
            payload,
            receipt: Some(message),
        };
        self.input(origin, |core, now, paths| core.send(now, paths, message))
    }

    /// Each agent of node `index` consumes what it can this millisecond.
    fn consume(&mut self, index: usize) -> Result<(), Violation> {
        let now = self.now();
        let node = &mut self.nodes[index];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        for agent in &mut node.agents {
            for _ in 0..self.config.consume_per_ms {
                let Some(envelope) = agent.inbox.pop_front() else {
                    break;
                };
                let signed = envelope.signed;
                let message = signed
                    .payload
                    .get(..8)
                    .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
                let record = message.and_then(|message| self.records.get_mut(message as usize));
                let intact = record.as_ref().is_some_and(|record| {
                    record.payload == signed.payload
                        && record.destination_agent == agent.name
                        && Destination::Agent(agent.name.clone()) == signed.destination
                });
                let (Some(record), true) = (record, intact) else {
                    return Err(Violation::Altered {
                        message: message.unwrap_or(u64::MAX),
                        agent: agent.name.clone(),
                    });
                };
                let key = (
                    index,
                    node.incarnation,
                    signed.origin_node.clone(),
                    signed.sequence,
                );
                if !self.consumed.insert(key) {
                    return Err(Violation::ConsumedTwice {
                        node: node.name.clone(),
                        incarnation: node.incarnation,
                        origin: signed.origin_node,
                        sequence: signed.sequence,
                    });
                }
                record.consumed += 1;
                self.report.consumed += 1;
                core.consumed(now, &agent.name, &signed.origin_node, signed.sequence);
            }
        }
        Ok(())
    }
}

/// Faults, healing and the final checks.
impl MeshSim {
    fn inject_faults(&mut self) {
        let faults = self.config.faults;
        let edges = self.topology.base().edges();
        if self.rng.gen_bool(faults.cut) && !edges.is_empty() {
            let (a, b) = edges[self.rng.gen_range(0..edges.len())];
            self.network.cut.insert((a.min(b), a.max(b)));
        }
        if self.rng.gen_bool(faults.mend) && !self.network.cut.is_empty() {
            let cut: Vec<_> = self.network.cut.iter().copied().collect();
            let mended = cut[self.rng.gen_range(0..cut.len())];
            self.network.cut.remove(&mended);
        }
        if self.rng.gen_bool(faults.split) {
            let side: Vec<bool> = (0..self.nodes.len())
                .map(|_| self.rng.gen_bool(0.5))
                .collect();
            for (a, b) in edges.iter().copied().filter(|&(a, b)| side[a] != side[b]) {
                self.network.cut.insert((a.min(b), a.max(b)));
            }
        }
        if self.rng.gen_bool(faults.crash) {
            let index = self.rng.gen_range(0..self.nodes.len());
            self.crash(index);
        }
        if self.rng.gen_bool(faults.agent_restart) {
            self.restart_agent();
        }
    }

    /// Node `index` loses everything; the messages its agents await
    /// outcomes of are orphaned.
    fn crash(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let Some(mut core) = node.core.take() else {
            return;
        };
        self.report.counters.add(&core.take_counters());
        self.report.crashes += 1;
        for agent in &mut node.agents {
            agent.inbox.clear();
        }
        for record in &mut self.records {
            let orphan = record.origin == index
                && record.origin_incarnation == node.incarnation
                && record.outcomes == 0;
            if orphan {
                record.orphaned = true;
                self.report.orphaned += 1;
            }
        }
        self.network.up[index] = false;
        node.restart_at_ms = Some(self.now_ms + self.rng.gen_range(100..2_500));
        let change = (
            self.now_ms + self.config.detect_ms,
            node.name.clone(),
            false,
        );
        self.live_changes.push_back(change);
    }

    fn restart_agent(&mut self) {
        let index = self.rng.gen_range(0..self.nodes.len());
        let which = self.rng.gen_range(0..self.config.agents_per_node);
        let node = &mut self.nodes[index];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let agent = &mut node.agents[which];
        agent.incarnation += 1;
        agent.inbox.clear();
        core.agent_restarted(&agent.name, agent.incarnation);
        if self.config.forget_consumed_on_agent_restart {
            core.forget_consumed();
        }
    }

    fn restart_due(&mut self) {
        for index in 0..self.nodes.len() {
            let due = self.nodes[index]
                .restart_at_ms
                .is_some_and(|at| at <= self.now_ms);
            if !due {
                continue;
            }
            let core = self.new_core(index);
            let node = &mut self.nodes[index];
            boot(node, core);
            let change = (self.now_ms + self.config.detect_ms, node.name.clone(), true);
            self.live_changes.push_back(change);
            self.network.up[index] = true;
        }
    }

    /// Nodes learn of crashes and restarts a detection delay after them.
    fn learn_live(&mut self) {
        let mut changed = false;
        while self
            .live_changes
            .front()
            .is_some_and(|(at, _, _)| *at <= self.now_ms)
        {
            let (_, name, live) = self.live_changes.pop_front().expect("just seen");
            changed |= if live {
                self.live_known.insert(name)
            } else {
                self.live_known.remove(&name)
            };
        }
        if changed {
            self.refresh_views();
        }
    }

    /// The faults end: every link mended, every crashed node restarted.
    fn heal(&mut self) {
        self.faulty = false;
        self.network.cut.clear();
        for node in &mut self.nodes {
            if node.core.is_none() {
                node.restart_at_ms = Some(self.now_ms);
            }
        }
    }

    fn check_end(&self) -> Result<(), Violation> {
        for node in &self.nodes {
            let inflight = node.core.as_ref().map_or(0, |core| core.inflight());
            if inflight > 0 {
                let node = node.name.clone();
                return Err(Violation::Unsettled { node, inflight });
            }
        }
        let healed_by = self.config.fault_ms + self.config.settle_ms;
        for (message, record) in self.records.iter().enumerate() {
            let message = message as u64;
            if record.orphaned {
                continue;
            }
            if record.outcomes == 0 {
                return Err(Violation::NoOutcome { message });
            }
            if record.acknowledged && record.consumed == 0 {
                return Err(Violation::AcknowledgedNotConsumed { message });
            }
            if let (true, Some(error)) = (record.sent_at_ms >= healed_by, &record.failed) {
                return Err(Violation::HealedFailed {
                    message,
                    after_ms: record.sent_at_ms - self.config.fault_ms,
                    error: error.clone(),
                });
            }
        }
        self.check_counters()
    }

    /// The cores' counters agree with the outcomes seen: each refusal and
    /// each loss was counted, and each acknowledgement.
    fn check_counters(&self) -> Result<(), Violation> {
        // Every core is drained after every input, and a crashed core's
        // counters are taken before it goes: nothing is left uncounted.
        let live = &self.report.counters;
        let failed =
            live.refused_no_route + live.refused_inflight_full + live.lost_retries_exhausted;
        let pairs = [
            ("acknowledged", live.acknowledged, self.report.acknowledged),
            ("failed", failed, self.failed_events),
        ];
        for (what, counted, seen) in pairs {
            if counted != seen {
                return Err(Violation::Counters {
                    what,
                    counted,
                    seen,
                });
            }
        }
        Ok(())
    }
}
