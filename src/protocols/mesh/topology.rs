//! The topology core: membership, the overlay and the routing view of one
//! node, sans-I/O.
//!
//! It heartbeats overlay neighbours (each link that carried nothing else
//! since the last tick, and every link once a second for round trips and
//! digests), feeds what it hears, and any other frame's arrival, to the
//! phi-accrual detector ([`Membership`]), spreads membership changes to
//! its neighbours (and reconciles whole views when heartbeat digests
//! differ), and derives the overlay from the live set with
//! [`Topology::overlay_for`], a pure function, so nodes that agree on who
//! is alive agree on the overlay. It says which neighbours to hold
//! connections to (overlay edges only, plus base-overlay neighbours
//! thought dead, which are probed so a node that comes back is heard), and
//! makes a fresh [`RoutingView`] (overlay plus smoothed link latencies,
//! its own and those its neighbours report) after every overlay change and
//! every ROUTES_REFRESH_MS.
//!
//! With a control plane, the overlay comes from the Raft log instead of
//! each node's own view: the core of the node whose replica leads proposes
//! the set of nodes its view holds down ([`Command::Overlay`], one change
//! at a time, each from the epoch it saw), every replica reports what was
//! committed, and nodes pass committed overlays on to their neighbours
//! (heartbeats carry the epoch, so a neighbour that lags is sent the newer
//! one). A node adopts only a newer epoch, so every node applies the same
//! overlays in the same order.
//!
//! Inputs: [`TopologyCore::tick`], [`TopologyCore::handle_frame`],
//! [`TopologyCore::link_up`], [`TopologyCore::peer_left`],
//! [`TopologyCore::committed`], [`TopologyCore::spread_due`]. Outputs:
//! [`TopologyCore::poll_transmit`] (control frames to neighbours), then
//! [`TopologyCore::poll_event`]. Time is monotonic microseconds; which
//! links are connected and when they last carried traffic come in as
//! [`Links`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::protocols::cluster_state::{Command, Proposal, RequestId, OVERLAY_CLIENT_BASE};
use crate::protocols::membership::{DetectorConfig, MemberRecord, Membership, Status};
use crate::protocols::routing::LinkLatency;
use crate::protocols::topology::{Overlay, Topology};
use crate::protocols::wire::codec::{CommittedOverlay, MEMBER_RECORDS_MAX};
use crate::protocols::wire::{Frame, Heartbeat};

use super::counters::MeshCounters;
use super::roster::Roster;
use super::view::{LinkWeights, OverlayFrame, RoutingView};

/// How often routes follow drifting round trips when the overlay stays the
/// same, per ROUTES_REFRESH_NODES nodes in the cluster. Round trips are
/// smoothed and move slowly; a fresh table costs a Dijkstra over the whole
/// overlay, and tables that change on every heartbeat would only make
/// routes flap. Stretching the interval with the cluster's size keeps what
/// each node spends on it about the same at 1,000 nodes as at 100 (where
/// it was a tenth of the machine). Overlay changes recompute at once.
const ROUTES_REFRESH_MS: u64 = 1_000;
const ROUTES_REFRESH_NODES: usize = 100;

/// How often each neighbour gets a heartbeat even when other traffic shows
/// it this node is alive: heartbeats carry round-trip samples, link reports
/// and view digests.
const ROUND_TRIP_SAMPLE_MS: u64 = 1_000;

/// How far a link's weight must move before the routes are computed
/// again: a quarter of the weight, and at least half a hop's cost.
/// Smaller moves change no route that matters next to HOP_COST_MICROS,
/// and skipping them keeps a thousand nodes in one process, whose round
/// trips jitter by a millisecond when the machine is busy, from spending
/// a core on tables that come out the same.
const WEIGHT_CHANGE_MIN_MICROS: u64 = crate::protocols::routing::HOP_COST_MICROS / 2;

/// How long membership changes wait to be passed on with others.
pub const SPREAD_DELAY_MS: u64 = 20;

/// How long the leader waits for its overlay proposal to commit before it
/// proposes again (a proposal can be lost when leadership moves).
const OVERLAY_PROPOSAL_WAIT_MS: u64 = 1_000;

/// Weight of a link nobody has measured yet, in microseconds.
pub const DEFAULT_LINK_WEIGHT_MICROS: u64 = 1_000;

/// A committed overlay: its epoch, the nodes it leaves out, and the
/// directory of planned agents (agent → node; empty until the placement
/// planner commits one, and then planned agents run where it says).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayCommit {
    pub epoch: u64,
    pub down: BTreeSet<String>,
    pub placed: BTreeMap<String, String>,
}

/// A control frame from a neighbour.
pub enum ControlFrame {
    Heartbeat(Heartbeat),
    Members(Vec<MemberRecord>),
    Overlay(CommittedOverlay),
}

/// The links as the shell sees them now.
pub trait Links {
    /// Neighbours with a connection up.
    fn connected(&self) -> Vec<String>;
    /// When this node last sent to and received from `peer`, in monotonic
    /// microseconds, if a connection is up.
    fn activity(&self, peer: &str) -> Option<(u64, u64)>;
}

/// What the shell must do besides sending frames.
pub enum TopologyEvent {
    /// Hold connections to these neighbours and probe these others.
    Neighbours {
        neighbours: Vec<String>,
        probes: Vec<String>,
    },
    /// Route by this from now on.
    Routes(Arc<RoutingView>),
    /// Propose this overlay change to the control plane.
    Propose(Proposal),
    /// This committed overlay is applied now.
    Applied(Arc<OverlayCommit>),
    /// Call [`TopologyCore::spread_due`] after this many milliseconds.
    SpreadAfter(u64),
}

/// The core's settings.
#[derive(Clone, Debug)]
pub struct TopologyConfig {
    pub node: String,
    /// This life of the node (its boot time), for membership and for
    /// numbering overlay proposals past every earlier life's.
    pub incarnation: u64,
    pub detector: DetectorConfig,
    /// Whether the overlay comes from the control plane's log.
    pub replicated: bool,
}

pub struct TopologyCore {
    config: TopologyConfig,
    roster: Arc<Roster>,
    topology: Topology,
    membership: Membership,
    live: BTreeSet<String>,
    overlay: Overlay,
    published: Option<(Vec<String>, Vec<String>)>,
    /// Latency of the link to each neighbour.
    round_trips: HashMap<String, LinkLatency>,
    /// What each neighbour reports of its own links.
    reported: HashMap<String, Vec<(u16, u32)>>,
    /// Per neighbour: its last heartbeat's send time and when it arrived.
    last_heard: HashMap<String, (u64, u64)>,
    /// When this node last sent its whole view to each neighbour.
    view_sent_micros: HashMap<String, u64>,
    /// Neighbours whose link has come up since they were last thought
    /// dead: only these are judged, so a link still being set up on a
    /// loaded machine is not mistaken for a dead node.
    linked: BTreeSet<String>,
    /// The routing view last made, and when it was last looked at.
    routes: Option<Arc<RoutingView>>,
    routes_published_ms: Option<u64>,
    /// What the current overlay alone determines for routing; None when
    /// the overlay changed since it was made.
    frame: Option<Arc<OverlayFrame>>,
    /// Per neighbour: when this node last heartbeat it.
    heartbeat_sent_micros: HashMap<String, u64>,
    /// Per neighbour: the last frame arrival already taken as evidence.
    evidence_seen_micros: HashMap<String, u64>,
    last_tick_micros: u64,
    /// Membership changes not passed on yet, by member, with the
    /// neighbour each came from. A spread is due while not empty.
    unspread: BTreeMap<String, (MemberRecord, Option<String>)>,
    /// The committed overlay this node applies.
    committed: Arc<OverlayCommit>,
    /// Whether this node's replica leads the control plane.
    leading: bool,
    /// The epoch the last overlay proposal was made from, and when.
    proposed: Option<(u64, u64)>,
    /// Per neighbour: when it was last sent the committed overlay.
    overlay_sent_micros: HashMap<String, u64>,
    proposal_sequence: u64,
    transmits: VecDeque<(String, Frame)>,
    events: VecDeque<TopologyEvent>,
    counters: MeshCounters,
}

impl TopologyCore {
    /// A core that starts from the base overlay over every node and from
    /// `committed`, the overlay last applied on this node.
    pub fn new(
        now_micros: u64,
        config: TopologyConfig,
        roster: Arc<Roster>,
        topology: Topology,
        committed: Arc<OverlayCommit>,
    ) -> TopologyCore {
        let names = &roster.node_names;
        let membership = Membership::new(&config.node, config.incarnation, names, config.detector);
        let mut core = TopologyCore {
            live: names.iter().cloned().collect(),
            overlay: topology.base().clone(),
            proposal_sequence: config.incarnation,
            config,
            membership,
            topology,
            published: None,
            round_trips: HashMap::new(),
            reported: HashMap::new(),
            last_heard: HashMap::new(),
            view_sent_micros: HashMap::new(),
            linked: BTreeSet::new(),
            routes: None,
            routes_published_ms: None,
            frame: None,
            heartbeat_sent_micros: HashMap::new(),
            evidence_seen_micros: HashMap::new(),
            last_tick_micros: 0,
            unspread: BTreeMap::new(),
            committed,
            leading: false,
            proposed: None,
            overlay_sent_micros: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: MeshCounters::default(),
            roster,
        };
        core.publish(now_micros);
        core
    }

    pub fn poll_transmit(&mut self) -> Option<(String, Frame)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TopologyEvent> {
        self.events.pop_front()
    }

    /// The counters moved since the last call.
    pub fn take_counters(&mut self) -> MeshCounters {
        std::mem::take(&mut self.counters)
    }

    /// The routing view last made.
    pub fn routes(&self) -> Option<&Arc<RoutingView>> {
        self.routes.as_ref()
    }

    /// Whether this node's replica leads the control plane now.
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
    }

    /// Heartbeats the neighbours that need one, judges them, and refreshes
    /// the routes when due.
    pub fn tick(&mut self, now: u64, links: &dyn Links) {
        self.take_traffic_evidence(links);
        let changed = self.membership.tick(now / 1_000);
        self.spread(now, &changed, None);
        let digest = self.membership.digest();
        let own_links = self.own_links();
        for peer in links.connected() {
            if !self.heartbeat_due(&peer, now, links) {
                continue;
            }
            let (echo_micros, held_micros) = self
                .last_heard
                .get(&peer)
                .map_or((0, 0), |&(sent, arrived)| {
                    (sent, now.saturating_sub(arrived))
                });
            let heartbeat = Heartbeat {
                incarnation: self.membership.incarnation(),
                sent_micros: now,
                echo_micros,
                held_micros,
                view_digest: digest,
                links: own_links.clone(),
                overlay_epoch: self.committed.epoch,
            };
            self.transmits
                .push_back((peer.clone(), Frame::Heartbeat(heartbeat)));
            self.heartbeat_sent_micros.insert(peer, now);
        }
        self.last_tick_micros = now;
        self.propose_overlay(now);
        let every_ms = ROUTES_REFRESH_MS
            * self
                .roster
                .node_names
                .len()
                .div_ceil(ROUTES_REFRESH_NODES)
                .max(1) as u64;
        let due = self
            .routes_published_ms
            .is_none_or(|last| (now / 1_000).saturating_sub(last) >= every_ms);
        if due {
            self.publish_routes(now);
        }
    }

    /// Any frame a neighbour sent since the last tick shows it alive.
    fn take_traffic_evidence(&mut self, links: &dyn Links) {
        for peer in &self.linked {
            let Some((_, received)) = links.activity(peer) else {
                continue;
            };
            let seen = self.evidence_seen_micros.entry(peer.clone()).or_default();
            if received > *seen {
                *seen = received;
                self.membership.evidence(received / 1_000, peer);
            }
        }
    }

    /// Whether `peer` needs a heartbeat now: it does when this node sent it
    /// nothing since the last tick (it would have no sign of life), and at
    /// least every ROUND_TRIP_SAMPLE_MS for round trips, links and digests.
    fn heartbeat_due(&self, peer: &str, now: u64, links: &dyn Links) -> bool {
        let last_heartbeat = self.heartbeat_sent_micros.get(peer).copied();
        let sample_due = last_heartbeat
            .is_none_or(|last| now.saturating_sub(last) >= ROUND_TRIP_SAMPLE_MS * 1_000);
        let quiet = links
            .activity(peer)
            .is_none_or(|(sent, _)| sent <= self.last_tick_micros);
        sample_due || quiet
    }

    /// A control frame from neighbour `from`.
    pub fn handle_frame(&mut self, now: u64, from: &str, frame: ControlFrame, links: &dyn Links) {
        match frame {
            ControlFrame::Heartbeat(heartbeat) => self.heard(now, from, heartbeat),
            ControlFrame::Members(records) => {
                let changed = self.membership.merge(&records);
                self.spread(now, &changed, Some(from));
            }
            ControlFrame::Overlay(overlay) => self.overlay_heard(now, from, overlay, links),
        }
    }

    /// A connection to `peer` came up. Only a link's first coming up
    /// matters: from then on its neighbour is judged. The routing view
    /// does not depend on which links are up; the router asks when it
    /// sends.
    pub fn link_up(&mut self, now: u64, peer: &str) {
        if self.linked.insert(peer.to_string()) {
            self.publish(now);
        }
    }

    /// `peer` closed its connection saying it leaves the cluster.
    pub fn peer_left(&mut self, now: u64, peer: &str) {
        let changed = self.membership.left(peer);
        self.spread(now, &changed.into_iter().collect::<Vec<_>>(), None);
    }
}

/// Membership: what neighbours say, and passing changes on.
impl TopologyCore {
    /// A heartbeat from a neighbour: liveness, round trip, its links, and
    /// whether our views differ.
    fn heard(&mut self, now: u64, from: &str, heartbeat: Heartbeat) {
        let changed = self
            .membership
            .heartbeat(now / 1_000, from, heartbeat.incarnation);
        if heartbeat.echo_micros != 0 {
            let sample = now
                .saturating_sub(heartbeat.echo_micros)
                .saturating_sub(heartbeat.held_micros)
                .max(1);
            self.round_trips
                .entry(from.to_string())
                .or_default()
                .sample(sample);
        }
        self.last_heard
            .insert(from.to_string(), (heartbeat.sent_micros, now));
        self.reported.insert(from.to_string(), heartbeat.links);
        if heartbeat.view_digest != self.membership.digest() {
            let interval = self.config.detector.heartbeat_interval_ms * 1_000;
            let last = self.view_sent_micros.get(from).copied().unwrap_or(0);
            if last == 0 || now.saturating_sub(last) >= interval {
                self.view_sent_micros.insert(from.to_string(), now);
                let records = self.membership.records();
                for chunk in records.chunks(MEMBER_RECORDS_MAX) {
                    let frame = Frame::Members(chunk.to_vec());
                    self.transmits.push_back((from.to_string(), frame));
                }
            }
        }
        if let Some(record) = changed {
            self.spread(now, &[record], Some(from));
        }
        if heartbeat.overlay_epoch < self.committed.epoch {
            self.overlay_lags(from, now);
        }
    }

    /// Takes membership changes heard from `source` (None: this node's
    /// own verdicts): recomputes the overlay at once, and queues them to
    /// pass on to every neighbour but their source within SPREAD_DELAY_MS,
    /// batched: when a hundred nodes learn each other's incarnations at
    /// start, one frame per neighbour carries what one record each would.
    fn spread(&mut self, now: u64, changed: &[MemberRecord], source: Option<&str>) {
        if changed.is_empty() {
            return;
        }
        let schedule_spread = self.unspread.is_empty();
        for record in changed {
            self.counters.membership_changes += 1;
            if source.is_none() && record.status == Status::Dead {
                self.counters.members_declared_dead += 1;
            }
            if record.status == Status::Dead {
                self.linked.remove(&record.node);
            }
            let node = &self.config.node;
            let (member, status, incarnation) = (&record.node, record.status, record.incarnation);
            if status == Status::Alive {
                tracing::debug!(%node, %member, ?status, incarnation, "membership change");
            } else {
                tracing::info!(%node, %member, ?status, incarnation, "membership change");
            }
            // A later change of the same member replaces an unsent one.
            let source = source.map(str::to_string);
            self.unspread
                .insert(record.node.clone(), (record.clone(), source));
        }
        if schedule_spread {
            self.events
                .push_back(TopologyEvent::SpreadAfter(SPREAD_DELAY_MS));
        }
        self.publish(now);
    }

    /// Sends the queued membership changes, one frame per neighbour.
    pub fn spread_due(&mut self, links: &dyn Links) {
        let unspread = std::mem::take(&mut self.unspread);
        for peer in links.connected() {
            let records: Vec<MemberRecord> = unspread
                .values()
                .filter(|(_, source)| source.as_deref() != Some(peer.as_str()))
                .map(|(record, _)| record.clone())
                .collect();
            for chunk in records.chunks(MEMBER_RECORDS_MAX) {
                let frame = Frame::Members(chunk.to_vec());
                self.transmits.push_back((peer.clone(), frame));
            }
        }
    }

    /// This node's link latencies, by wire index.
    fn own_links(&self) -> Vec<(u16, u32)> {
        let mut links: Vec<(u16, u32)> = self
            .round_trips
            .iter()
            .filter_map(|(peer, latency)| {
                let index = *self.roster.node_index.get(peer)?;
                let micros = latency.estimate()?;
                Some((index, micros.min(u32::MAX as u64) as u32))
            })
            .collect();
        links.sort_unstable();
        links
    }
}

/// The overlay and the routes.
impl TopologyCore {
    /// The nodes the overlay is made of: those the committed overlay does
    /// not leave out, or, without a control plane, those this node's view
    /// holds alive.
    fn overlay_members(&self) -> BTreeSet<String> {
        if !self.config.replicated {
            return self.membership.live();
        }
        let names = &self.roster.node_names;
        names
            .iter()
            .filter(|name| !self.committed.down.contains(*name))
            .cloned()
            .collect()
    }

    /// Recomputes the overlay if its members changed, and says so.
    fn publish(&mut self, now: u64) {
        self.propose_overlay(now);
        let live = self.overlay_members();
        let overlay_changed = live != self.live;
        if overlay_changed {
            self.overlay = self.topology.overlay_for(&live);
            self.live = live;
            self.frame = None;
        }
        let me = &self.config.node;
        let neighbours = self.overlay.neighbours_of(me);
        let probes: Vec<String> = self
            .topology
            .base()
            .neighbours_of(me)
            .into_iter()
            .filter(|peer| !self.live.contains(peer))
            .collect();
        let watched: BTreeSet<String> = neighbours
            .iter()
            .filter(|peer| self.linked.contains(*peer))
            .cloned()
            .collect();
        self.membership.monitor(now / 1_000, &watched);
        let now_published = (neighbours.clone(), probes.clone());
        if self.published.as_ref() != Some(&now_published) {
            if self.published.is_some() {
                self.counters.overlay_changes += 1;
                tracing::info!(node = %me, neighbours = ?neighbours, "overlay changed");
            }
            self.published = Some(now_published);
            let event = TopologyEvent::Neighbours { neighbours, probes };
            self.events.push_back(event);
        }
        if overlay_changed || self.routes_published_ms.is_none() {
            self.publish_routes(now);
        }
    }

    /// Every link weight known, own and reported, by overlay indices, and
    /// the median of this node's own (the weight of unmeasured links).
    fn weights(&self) -> (LinkWeights, u64) {
        let overlay = &self.overlay;
        let mut weights = LinkWeights::default();
        let mut own: Vec<u64> = Vec::new();
        let mut put = |a: &str, b: &str, micros: u64| {
            if let (Some(a), Some(b)) = (overlay.index_of(a), overlay.index_of(b)) {
                weights.insert((a.min(b), a.max(b)), micros.max(1));
            }
        };
        for (reporter, links) in &self.reported {
            for &(index, micros) in links {
                if let Some(other) = self.roster.node_names.get(index as usize) {
                    put(reporter, other, u64::from(micros));
                }
            }
        }
        for (peer, latency) in &self.round_trips {
            let Some(micros) = latency.estimate() else {
                continue;
            };
            put(&self.config.node, peer, micros);
            own.push(micros);
        }
        own.sort_unstable();
        let default_weight = own
            .get(own.len() / 2)
            .copied()
            .unwrap_or(DEFAULT_LINK_WEIGHT_MICROS);
        (weights, default_weight)
    }

    /// A fresh routing view from the overlay and every known round trip,
    /// unless neither moved enough to change a route.
    fn publish_routes(&mut self, now: u64) {
        self.routes_published_ms = Some(now / 1_000);
        let (weights, default_weight) = self.weights();
        let unchanged = self.routes.as_ref().is_some_and(|published| {
            let same_overlay = self
                .frame
                .as_ref()
                .is_some_and(|frame| Arc::ptr_eq(frame, &published.frame));
            same_overlay && !weights_moved(published, &weights, default_weight)
        });
        if unchanged {
            return;
        }
        let (overlay, me, names) = (&self.overlay, &self.config.node, &self.roster.node_names);
        let frame = self
            .frame
            .get_or_insert_with(|| Arc::new(OverlayFrame::new(overlay.clone(), me, names)))
            .clone();
        let view = Arc::new(RoutingView::new(frame, weights, default_weight));
        self.counters.routes_computed += 1;
        self.routes = Some(view.clone());
        self.events.push_back(TopologyEvent::Routes(view));
    }
}

/// The committed overlay: proposed by the leader's node, adopted when
/// newer, passed on.
impl TopologyCore {
    /// On the leader's node: proposes the nodes this node's view holds
    /// down, when they differ from the committed overlay's and no earlier
    /// proposal from the same epoch is still on its way.
    fn propose_overlay(&mut self, now: u64) {
        if !self.config.replicated || !self.leading {
            return;
        }
        let live = self.membership.live();
        let down: BTreeSet<String> = self
            .roster
            .node_names
            .iter()
            .filter(|name| !live.contains(*name))
            .cloned()
            .collect();
        if down == self.committed.down {
            return;
        }
        let (now_ms, epoch) = (now / 1_000, self.committed.epoch);
        let waiting = self.proposed.is_some_and(|(from, at)| {
            from == epoch && now_ms.saturating_sub(at) < OVERLAY_PROPOSAL_WAIT_MS
        });
        if waiting {
            return;
        }
        let index = self.roster.node_index[&self.config.node];
        self.proposal_sequence += 1;
        let request = RequestId {
            client: OVERLAY_CLIENT_BASE - u64::from(index),
            sequence: self.proposal_sequence,
        };
        let command = Command::Overlay {
            after_epoch: epoch,
            down,
        };
        // If the proposal is lost on its way, it is made again after
        // OVERLAY_PROPOSAL_WAIT_MS.
        self.proposed = Some((epoch, now_ms));
        self.counters.overlay_proposals += 1;
        let proposal = Proposal { request, command };
        self.events.push_back(TopologyEvent::Propose(proposal));
    }

    /// This node's replica applied an overlay change.
    pub fn committed(&mut self, now: u64, commit: OverlayCommit, links: &dyn Links) {
        self.adopt(now, commit, None, links);
    }

    /// Applies a committed overlay newer than the one applied, and passes
    /// it on at once to every neighbour but the one it came from.
    fn adopt(&mut self, now: u64, commit: OverlayCommit, source: Option<&str>, links: &dyn Links) {
        if commit.epoch <= self.committed.epoch {
            return;
        }
        let node = &self.config.node;
        tracing::info!(%node, epoch = commit.epoch, down = ?commit.down, "committed overlay applied");
        self.counters.overlay_commits_applied += 1;
        self.committed = Arc::new(commit);
        self.events
            .push_back(TopologyEvent::Applied(self.committed.clone()));
        self.proposed = None;
        for peer in links.connected() {
            if source != Some(peer.as_str()) {
                self.send_overlay(&peer, now);
            }
        }
        self.publish(now);
    }

    /// A committed overlay from a neighbour.
    fn overlay_heard(
        &mut self,
        now: u64,
        from: &str,
        overlay: CommittedOverlay,
        links: &dyn Links,
    ) {
        match decode_overlay(&self.roster, &overlay) {
            Some(commit) if self.config.replicated => self.adopt(now, commit, Some(from), links),
            _ => self.counters.overlay_frames_refused += 1,
        }
    }

    /// Sends `peer` the committed overlay.
    fn send_overlay(&mut self, peer: &str, now: u64) {
        let index = &self.roster.node_index;
        let down = self
            .committed
            .down
            .iter()
            .filter_map(|name| index.get(name).copied())
            .collect();
        let agent_index = &self.roster.agent_index;
        let placed = (self.committed.placed.iter())
            .filter_map(|(agent, node)| Some((*agent_index.get(agent)?, *index.get(node)?)))
            .collect();
        let overlay = CommittedOverlay {
            epoch: self.committed.epoch,
            down,
            placed,
        };
        self.overlay_sent_micros.insert(peer.to_string(), now);
        self.transmits
            .push_back((peer.to_string(), Frame::Overlay(overlay)));
    }

    /// A neighbour's heartbeat showed an older overlay epoch: it is sent
    /// the committed overlay, unless it was within a heartbeat interval.
    fn overlay_lags(&mut self, peer: &str, now: u64) {
        let interval = self.config.detector.heartbeat_interval_ms * 1_000;
        let last = self.overlay_sent_micros.get(peer).copied();
        if last.is_none_or(|last| now.saturating_sub(last) >= interval) {
            self.send_overlay(peer, now);
        }
    }
}

/// The committed overlay a neighbour's frame names by indices, if every
/// index names a node or agent of the roster.
fn decode_overlay(roster: &Roster, overlay: &CommittedOverlay) -> Option<OverlayCommit> {
    let node = |index: u16| roster.node_names.get(usize::from(index)).cloned();
    let down: Option<BTreeSet<String>> = overlay.down.iter().map(|&index| node(index)).collect();
    let placed: Option<BTreeMap<String, String>> = (overlay.placed.iter())
        .map(|&(agent, index)| {
            let agent = roster.agent_names.get(usize::try_from(agent).ok()?)?;
            Some((agent.clone(), node(index)?))
        })
        .collect();
    Some(OverlayCommit {
        epoch: overlay.epoch,
        down: down?,
        placed: placed?,
    })
}

/// Whether `weights` (and the default weight) differ from those `published`
/// was computed with by enough to compute the routes again.
fn weights_moved(published: &RoutingView, weights: &LinkWeights, default_weight: u64) -> bool {
    weight_moved(published.default_weight, default_weight.max(1))
        || published.weights.len() != weights.len()
        || weights.iter().any(|(link, &micros)| {
            published
                .weights
                .get(link)
                .is_none_or(|&before| weight_moved(before, micros))
        })
}

/// Whether a link weight moved enough from `before` to `now` to compute
/// the routes again.
fn weight_moved(before: u64, now: u64) -> bool {
    before.abs_diff(now) > (before / 4).max(WEIGHT_CHANGE_MIN_MICROS)
}
