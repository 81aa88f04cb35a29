//! The mesh core: one node's end of reliable, end-to-end authenticated
//! delivery, sans-I/O in quinn-proto's shape.
//!
//! Inputs: [`MeshCore::send`] (a local agent's message),
//! [`MeshCore::handle_envelopes`] (envelopes a peer sent), a local
//! agent's [`MeshCore::consumed`] (or [`MeshCore::undelivered`] when the
//! shell could not hand one over), [`MeshCore::agent_restarted`], and
//! [`MeshCore::handle_timeout`]. Outputs, drained by the caller after
//! each input in this order: [`MeshCore::poll_transmit`] (envelopes to
//! peers), [`MeshCore::poll_deliver`] (to local agents),
//! [`MeshCore::poll_event`] (each message's outcome, exactly once), and
//! [`MeshCore::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Outbound, the core numbers a message per destination node, seals it
//! with the pair key it shares with that node (or signs it, as
//! [`MeshConfig::authentication`] says), keeps it until the destination
//! acknowledges it and retransmits it on timeout ([`ReliableSender`]),
//! sending it along the best path whose first link is up. Inbound, it
//! drops what was taken already before paying for verification, checks
//! the rest (signatures as one batch), hands fresh data to its agent once
//! per agent incarnation, and acknowledges what agents consumed, in
//! batches per origin sealed with the pair key the two nodes share.
//! Transit envelopes are passed on ([`route::pass_on`]).
//!
//! Time comes in as [`Now`]; the routing view and which links are up come
//! in as [`Paths`] with every call that may route.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::protocols::delivery::{to_ranges, Polled, ReliableSender, SenderConfig, ACK_RANGES_MAX};
use crate::protocols::wire::codec::{decode_acks, encode_acks};
use crate::protocols::wire::envelope::{authenticate, OriginKeys};
use crate::protocols::wire::limits::ENVELOPE_VERSION;
use crate::protocols::wire::pair_key::PairKey;
use crate::protocols::wire::{
    Admission, Authentication, Destination, DuplicateWindow, Envelope, EnvelopeKind, SignedFields,
    VerifyError,
};

use super::counters::MeshCounters;
use super::roster::Roster;
use super::route::{self, LinkUp};
use super::send_error::SendError;
use super::view::RoutingView;

/// Retransmissions handled per timeout; the rest wait for the next one.
pub const RETRANSMIT_BATCH_MAX: usize = 4_096;

/// The core's settings.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// This node's id.
    pub node: String,
    /// Hops an envelope this node originates may travel.
    pub ttl: u8,
    /// How data envelopes this node originates are authenticated.
    pub authentication: Authentication,
    pub sender: SenderConfig,
    /// Where sequence numbers start: above any this node's id used before
    /// (the shell uses its boot time), so peers' windows admit them.
    pub first_sequence: u64,
    /// Deliveries that may wait unconsumed in all local agents' inboxes.
    pub deliveries_max: usize,
    /// How long a consumed sequence may wait for its acknowledgement to
    /// be sent (acknowledgements of one origin go in one envelope).
    pub ack_delay_ms: u64,
}

/// The time of a call: a monotonic clock for timers and the wall clock
/// (stamped on envelopes, for latency across nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    pub monotonic_ms: u64,
    pub unix_micros: u64,
}

/// The routing view and which links are up, as the shell sees them now.
#[derive(Clone, Copy)]
pub struct Paths<'a> {
    pub view: &'a RoutingView,
    pub link_up: LinkUp<'a>,
    /// The committed directory of planned agents (agent → node), which
    /// overrides where the config has them.
    pub placed: &'a BTreeMap<String, String>,
}

/// A message a local agent asks the mesh to carry. `receipt` is whatever
/// the caller wants back with the message's outcome.
#[derive(Debug)]
pub struct Message<R> {
    pub source_agent: String,
    pub destination_agent: String,
    pub kind: EnvelopeKind,
    pub payload: Vec<u8>,
    pub receipt: Option<R>,
}

/// An envelope to send one hop, to `peer`.
#[derive(Debug)]
pub struct Transmit {
    pub peer: String,
    pub envelope: Envelope,
}

/// A verified, fresh envelope for a local agent.
#[derive(Debug)]
pub struct Delivery {
    pub agent: String,
    /// The agent's incarnation it is meant for (0 before the agent's
    /// first start was reported).
    pub incarnation: u64,
    pub envelope: Envelope,
    /// It came over as few hops as this node's overlay allows.
    pub shortest_path: bool,
}

/// A message's outcome; every message given to [`MeshCore::send`] gets
/// exactly one.
#[derive(Debug)]
pub enum Event<R> {
    /// The destination acknowledged consuming it.
    Acknowledged {
        source_agent: String,
        receipt: Option<R>,
    },
    /// Refused at once, or given up after the last retry.
    Failed {
        source_agent: String,
        destination_agent: String,
        error: SendError,
        receipt: Option<R>,
    },
}

#[derive(Default)]
struct AgentInbox {
    incarnation: u64,
    /// (origin, sequence).
    waiting: HashSet<(String, u64)>,
}

struct InFlight<R> {
    envelope: Envelope,
    receipt: Option<R>,
}

/// What this node's key derives and the cluster's keys, for
/// authenticating envelopes.
struct Keys {
    node: String,
    signing: SigningKey,
    roster: Arc<Roster>,
    /// Derived on first use (a Diffie–Hellman each).
    pair_keys: std::cell::RefCell<HashMap<String, Arc<PairKey>>>,
}

impl OriginKeys for Keys {
    fn verifying_key(&self, origin: &str) -> Option<&VerifyingKey> {
        self.roster.node_keys.get(origin)
    }

    fn pair_key(&self, origin: &str) -> Option<Arc<PairKey>> {
        if let Some(key) = self.pair_keys.borrow().get(origin) {
            return Some(key.clone());
        }
        let other = self.roster.node_keys.get(origin)?;
        let key = Arc::new(PairKey::derive(&self.signing, &self.node, other, origin));
        self.pair_keys
            .borrow_mut()
            .insert(origin.to_string(), key.clone());
        Some(key)
    }
}

impl Keys {
    /// `signed`, made checkable by `node`: sealed with their pair key or
    /// signed, as `authentication` says; neither when it never leaves this
    /// node (a local agent's message, which no peer ever sees).
    fn authenticate(
        &self,
        signed: SignedFields,
        node: &str,
        authentication: Authentication,
    ) -> Envelope {
        if node == self.node {
            return Envelope::local(signed);
        }
        let pair_key = match authentication {
            Authentication::PairKey => self.pair_key(node),
            Authentication::Signature => None,
        };
        match pair_key {
            Some(key) => Envelope::seal(signed, &key),
            // Signed as asked, or for a node the roster lacks (which has no
            // pair key, and refuses the envelope anyway).
            None => Envelope::sign(signed, &self.signing),
        }
    }
}

pub struct MeshCore<R> {
    config: MeshConfig,
    keys: Keys,
    sender: ReliableSender<InFlight<R>>,
    /// Per origin node: sequences local agents consumed.
    windows: HashMap<String, DuplicateWindow>,
    /// Per origin node: consumed sequences not yet acknowledged, and when
    /// the oldest of them was consumed.
    acks_due: HashMap<String, Vec<u64>>,
    acks_due_since_ms: Option<u64>,
    /// Per agent: what its current incarnation was handed and has not
    /// consumed yet; a copy of one of these is not handed over.
    in_inbox: HashMap<String, AgentInbox>,
    in_inbox_count: usize,
    transmits: VecDeque<Transmit>,
    deliveries: VecDeque<Delivery>,
    events: VecDeque<Event<R>>,
    counters: MeshCounters,
}

impl<R> MeshCore<R> {
    pub fn new(config: MeshConfig, signing: SigningKey, roster: Arc<Roster>) -> MeshCore<R> {
        assert!(config.deliveries_max > 0 && config.ttl > 0);
        MeshCore {
            sender: ReliableSender::new(config.sender, config.first_sequence),
            keys: Keys {
                node: config.node.clone(),
                signing,
                roster,
                pair_keys: Default::default(),
            },
            config,
            windows: HashMap::new(),
            acks_due: HashMap::new(),
            acks_due_since_ms: None,
            in_inbox: HashMap::new(),
            in_inbox_count: 0,
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            counters: MeshCounters::default(),
        }
    }

    /// Messages awaiting acknowledgement.
    pub fn inflight(&self) -> usize {
        self.sender.inflight()
    }

    /// How many may await acknowledgement now (the admission window).
    pub fn window(&self) -> usize {
        self.sender.window()
    }

    /// Messages to `node` awaiting acknowledgement.
    pub fn inflight_to(&self, node: &str) -> usize {
        self.sender.inflight_to(node)
    }

    /// Deliveries waiting unconsumed in local agents' inboxes.
    pub fn deliveries_waiting(&self) -> usize {
        self.in_inbox_count
    }

    /// The counters moved since the last call.
    pub fn take_counters(&mut self) -> MeshCounters {
        std::mem::take(&mut self.counters)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_deliver(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event<R>> {
        self.events.pop_front()
    }

    /// When [`MeshCore::handle_timeout`] has work next: acknowledgements
    /// to send or a retransmission due.
    pub fn poll_timeout(&self) -> Option<u64> {
        let acks = self
            .acks_due_since_ms
            .map(|since| since + self.config.ack_delay_ms);
        match (acks, self.sender.next_due_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Numbers, authenticates and sends a local agent's message, or
    /// refuses it (an [`Event::Failed`] says why).
    pub fn send(&mut self, now: Now, paths: Paths<'_>, mut message: Message<R>) {
        let placed = paths.placed.get(&message.destination_agent);
        let node = match placed {
            Some(node) => Some(node.as_str()),
            None => (self.keys.roster).configured_node(&message.destination_agent),
        };
        let node = node
            .filter(|node| paths.view.thinks_live(node))
            .map(str::to_string);
        let Some(node) = node else {
            self.counters.refused_no_route += 1;
            let error = SendError::NoRoute(message.destination_agent.clone());
            return self.refuse(message, error);
        };
        let destination = match placed {
            Some(_) => Destination::Placed {
                agent: message.destination_agent.clone(),
                node: node.clone(),
            },
            None => Destination::Agent(message.destination_agent.clone()),
        };
        // Taken by the closure only if the sender takes the message.
        let mut payload = Some(std::mem::take(&mut message.payload));
        let mut receipt = message.receipt.take();
        let keys = &self.keys;
        let (ttl, sent_at_micros) = (self.config.ttl, now.unix_micros);
        let authentication = self.config.authentication;
        let (kind, source) = (message.kind, &message.source_agent);
        let sent = self.sender.send(now.monotonic_ms, &node, |sequence| {
            let signed = SignedFields {
                version: ENVELOPE_VERSION,
                kind,
                origin_node: keys.node.clone(),
                source_agent: source.clone(),
                destination: destination.clone(),
                sequence,
                ttl,
                sent_at_micros,
                payload: payload.take().unwrap_or_default(),
            };
            InFlight {
                envelope: keys.authenticate(signed, &node, authentication),
                receipt: receipt.take(),
            }
        });
        match sent {
            Ok(sequence) => {
                self.counters.envelopes_sent += 1;
                let in_flight = self.sender.get(&node, sequence).expect("just sent");
                let envelope = in_flight.envelope.clone();
                self.transmit(now, paths, envelope, &node);
            }
            Err(_) => {
                self.counters.refused_inflight_full += 1;
                message.receipt = receipt;
                self.refuse(message, SendError::InFlightFull(node));
            }
        }
    }

    fn refuse(&mut self, message: Message<R>, error: SendError) {
        self.events.push_back(Event::Failed {
            source_agent: message.source_agent,
            destination_agent: message.destination_agent,
            error,
            receipt: message.receipt,
        });
    }

    /// Sends an envelope this node originates toward `node`, or loops it
    /// back when that is this node.
    fn transmit(&mut self, now: Now, paths: Paths<'_>, mut envelope: Envelope, node: &str) {
        if node == self.config.node {
            return self.arrive(now, paths, vec![envelope], false);
        }
        match route::plan(paths.view, &mut envelope, node, paths.link_up) {
            Ok(next) => self.push_transmit(paths.view, next, envelope),
            Err(dropped) => dropped.count(&mut self.counters),
        }
    }

    fn push_transmit(&mut self, view: &RoutingView, next: usize, envelope: Envelope) {
        let peer = view.frame.overlay.name(next).to_string();
        self.transmits.push_back(Transmit { peer, envelope });
    }

    /// Envelopes from peers: passes on those for other nodes and takes
    /// those for this node.
    pub fn handle_envelopes(&mut self, now: Now, paths: Paths<'_>, envelopes: Vec<Envelope>) {
        let mut passed = Vec::new();
        let here = route::pass_on(
            &self.config.node,
            &self.keys.roster,
            paths.view,
            envelopes,
            paths.link_up,
            &mut self.counters,
            |next, envelope| passed.push((next, envelope)),
        );
        for (next, envelope) in passed {
            self.push_transmit(paths.view, next, envelope);
        }
        self.arrive(now, paths, here, true);
    }

    /// Envelopes for this node: drops what was taken already (cheap,
    /// before paying for verification: under loss most retransmissions
    /// are such), authenticates the rest unless they never left this node,
    /// then takes acknowledgements and hands data to agents.
    fn arrive(
        &mut self,
        now: Now,
        paths: Paths<'_>,
        mut envelopes: Vec<Envelope>,
        from_peer: bool,
    ) {
        envelopes.retain(|envelope| !self.taken_already(now, envelope));
        let verdicts = if from_peer {
            authenticate(&envelopes, &self.keys)
        } else {
            vec![Ok(()); envelopes.len()]
        };
        for (envelope, verdict) in envelopes.into_iter().zip(verdicts) {
            match verdict {
                Err(VerifyError::UnknownOrigin(_)) => self.counters.dropped_unknown_origin += 1,
                Err(VerifyError::BadSignature) => self.counters.dropped_bad_signature += 1,
                Ok(()) if envelope.signed.kind == EnvelopeKind::Ack => {
                    self.take_acks(now, &envelope)
                }
                Ok(()) => self.hand_over(paths.view, envelope),
            }
        }
    }

    /// Whether a data envelope's sequence was consumed already, waits in
    /// its agent's inbox, or is too old to admit; counts the drop, and
    /// acknowledges a consumed one again (its acknowledgement must have
    /// been lost). Safe before verifying: the answer depends only on the
    /// origin and sequence, and acknowledging what was consumed is true
    /// whoever asks.
    fn taken_already(&mut self, now: Now, envelope: &Envelope) -> bool {
        let Some(agent) = envelope.signed.destination.agent() else {
            return false;
        };
        let (origin, sequence) = (&envelope.signed.origin_node, envelope.signed.sequence);
        let admission = self
            .windows
            .get(origin)
            .map_or(Admission::Fresh, |window| window.check(sequence));
        match admission {
            Admission::Fresh => {}
            Admission::Duplicate => {
                self.counters.dropped_duplicate += 1;
                return self.ack_later(origin, sequence, now.monotonic_ms);
            }
            Admission::TooOld => {
                self.counters.dropped_too_old += 1;
                return true;
            }
        }
        let waiting = self
            .in_inbox
            .get(agent)
            .is_some_and(|inbox| inbox.waiting.contains(&(origin.clone(), sequence)));
        if waiting {
            self.counters.dropped_duplicate += 1;
        }
        waiting
    }

    /// Queues an acknowledgement of `sequence` to `origin`; returns true
    /// (the envelope was taken).
    fn ack_later(&mut self, origin: &str, sequence: u64, now_ms: u64) -> bool {
        self.acks_due
            .entry(origin.to_string())
            .or_default()
            .push(sequence);
        if self.acks_due_since_ms.is_none() {
            self.acks_due_since_ms = Some(now_ms);
        }
        true
    }

    /// Hands a verified, fresh data envelope to its agent.
    fn hand_over(&mut self, view: &RoutingView, envelope: Envelope) {
        let Some(agent) = envelope.signed.destination.agent() else {
            self.counters.dropped_misrouted += 1;
            return;
        };
        let agent = agent.to_string();
        let key = (
            envelope.signed.origin_node.clone(),
            envelope.signed.sequence,
        );
        let inbox = self.in_inbox.entry(agent.clone()).or_default();
        // Two copies in one batch both pass `taken_already`.
        if inbox.waiting.contains(&key) {
            self.counters.dropped_duplicate += 1;
            return;
        }
        if self.in_inbox_count >= self.config.deliveries_max {
            self.counters.dropped_agent_inbox_full += 1;
            return;
        }
        inbox.waiting.insert(key);
        let incarnation = inbox.incarnation;
        self.in_inbox_count += 1;
        let shortest_path = view
            .frame
            .overlay
            .index_of(&envelope.signed.origin_node)
            .and_then(|origin| view.frame.hops_from_me.get(origin))
            == Some(&(envelope.hop_count as usize));
        self.deliveries.push_back(Delivery {
            agent,
            incarnation,
            envelope,
            shortest_path,
        });
    }

    /// An acknowledgement from a destination node: settles what it covers.
    fn take_acks(&mut self, now: Now, envelope: &Envelope) {
        let Ok(ranges) = decode_acks(&envelope.signed.payload) else {
            self.counters.frames_malformed += 1;
            return;
        };
        let origin = &envelope.signed.origin_node;
        let settled = self.sender.acknowledge(now.monotonic_ms, origin, &ranges);
        for (_, in_flight) in settled {
            self.counters.acknowledged += 1;
            self.events.push_back(Event::Acknowledged {
                source_agent: in_flight.envelope.signed.source_agent,
                receipt: in_flight.receipt,
            });
        }
    }

    /// A local agent consumed a delivery: acknowledge it, and never hand
    /// it over again (even if the agent restarted since).
    pub fn consumed(&mut self, now: Now, agent: &str, origin: &str, sequence: u64) {
        self.forget_waiting(agent, origin, sequence);
        self.windows
            .entry(origin.to_string())
            .or_default()
            .admit(sequence);
        self.ack_later(origin, sequence, now.monotonic_ms);
    }

    /// The shell could not hand a delivery over (the agent's inbox was
    /// full, it had stopped, or it is of another incarnation): forget it,
    /// so a retransmission is handed over again.
    pub fn undelivered(&mut self, agent: &str, origin: &str, sequence: u64) {
        self.forget_waiting(agent, origin, sequence);
    }

    /// An agent started (again) as `incarnation`: what its last one held
    /// unconsumed is handed to the new one when retransmitted. Reports of
    /// older incarnations than the one known are ignored.
    pub fn agent_restarted(&mut self, agent: &str, incarnation: u64) {
        let inbox = self.in_inbox.entry(agent.to_string()).or_default();
        if incarnation <= inbox.incarnation {
            return;
        }
        self.in_inbox_count -= inbox.waiting.len();
        *inbox = AgentInbox {
            incarnation,
            waiting: HashSet::new(),
        };
    }

    /// Forgets every duplicate window, as a core that kept nothing across
    /// a restart would: only for the simulation, to show that its checks
    /// catch a mesh that hands a message over twice.
    #[doc(hidden)]
    pub fn forget_consumed(&mut self) {
        self.windows.clear();
    }

    fn forget_waiting(&mut self, agent: &str, origin: &str, sequence: u64) {
        let Some(inbox) = self.in_inbox.get_mut(agent) else {
            return;
        };
        if inbox.waiting.remove(&(origin.to_string(), sequence)) {
            self.in_inbox_count -= 1;
        }
    }

    /// Sends due acknowledgements, retransmits what timed out and gives up
    /// on what ran out of retries.
    pub fn handle_timeout(&mut self, now: Now, paths: Paths<'_>) {
        let acks_due = self
            .acks_due_since_ms
            .is_some_and(|since| since + self.config.ack_delay_ms <= now.monotonic_ms);
        if acks_due {
            self.flush_acks(now, paths);
        }
        self.retransmit_due(now, paths);
    }

    /// One sealed envelope per origin node (per ACK_RANGES_MAX ranges).
    fn flush_acks(&mut self, now: Now, paths: Paths<'_>) {
        self.acks_due_since_ms = None;
        for (origin, mut sequences) in std::mem::take(&mut self.acks_due) {
            let ranges = to_ranges(&mut sequences);
            for chunk in ranges.chunks(ACK_RANGES_MAX) {
                let envelope = self.seal_acks(now, &origin, chunk);
                self.transmit(now, paths, envelope, &origin);
            }
        }
    }

    fn seal_acks(
        &mut self,
        now: Now,
        origin: &str,
        ranges: &[crate::protocols::delivery::AckRange],
    ) -> Envelope {
        let signed = SignedFields {
            version: ENVELOPE_VERSION,
            kind: EnvelopeKind::Ack,
            origin_node: self.config.node.clone(),
            source_agent: self.config.node.clone(),
            destination: Destination::Node(origin.to_string()),
            sequence: 0,
            ttl: self.config.ttl,
            sent_at_micros: now.unix_micros,
            payload: encode_acks(ranges),
        };
        let envelope = self
            .keys
            .authenticate(signed, origin, Authentication::PairKey);
        if origin != self.config.node {
            self.counters.acks_sent += 1;
        }
        envelope
    }

    fn retransmit_due(&mut self, now: Now, paths: Paths<'_>) {
        let Polled {
            retransmit,
            exhausted,
        } = self.sender.poll_due(now.monotonic_ms, RETRANSMIT_BATCH_MAX);
        for (node, _, in_flight) in exhausted {
            self.counters.lost_retries_exhausted += 1;
            if !paths.view.thinks_live(&node) {
                self.counters.lost_to_departed += 1;
            }
            let signed = in_flight.envelope.signed;
            let destination_agent = match signed.destination {
                Destination::Agent(agent) | Destination::Placed { agent, .. } => agent,
                Destination::Node(node) => node,
                Destination::Broadcast => String::new(),
            };
            self.events.push_back(Event::Failed {
                source_agent: signed.source_agent,
                destination_agent,
                error: SendError::RetriesExhausted(node),
                receipt: in_flight.receipt,
            });
        }
        for (node, sequence) in retransmit {
            let Some(in_flight) = self.sender.get(&node, sequence) else {
                continue;
            };
            let envelope = in_flight.envelope.clone();
            self.counters.retransmissions += 1;
            self.transmit(now, paths, envelope, &node);
        }
    }
}
