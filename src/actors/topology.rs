//! The topology actor: membership, the overlay, and the routing view.
//!
//! It heartbeats overlay neighbours on the control stream (each link that
//! carried nothing else since the last tick, and every link once a second
//! for round trips and digests), feeds what it hears, and any other frame's
//! arrival, to the phi-accrual detector ([`Membership`]), spreads
//! membership changes to its neighbours (and reconciles whole views when
//! heartbeat digests differ), and derives the overlay from the live set
//! with [`Topology::overlay_for`] — a pure function, so nodes that agree on
//! who is alive agree on the overlay. It tells the transport which
//! neighbours to hold connections to (overlay edges only, plus base-overlay
//! neighbours thought dead, which it keeps probing so a node that comes back
//! is heard), and publishes a fresh [`RoutingView`] (overlay plus smoothed
//! link latencies, its own and those its neighbours report) for the
//! router after every overlay change and every ROUTES_REFRESH_MS.
//!
//! With a control plane (`[control] replicas`), the overlay comes from the
//! Raft log instead of each node's own view: the topology actor of the
//! node whose replica leads proposes the set of nodes its view holds down
//! ([`Command::Overlay`], one change at a time, each from the epoch it
//! saw), every replica tells its topology actor what was committed, and
//! nodes pass committed overlays on to their neighbours (heartbeats carry
//! the epoch, so a neighbour that lags is sent the newer one). A node
//! adopts only a newer epoch, so every node applies the same overlays in
//! the same order. While the control plane has no quorum, the overlay
//! stays as last committed and routers route around links that are down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::NodeMetrics;
use crate::protocols::cluster_state::{Command, Proposal, RequestId, OVERLAY_CLIENT_BASE};
use crate::protocols::membership::{MemberRecord, Membership, Status};
use crate::protocols::routing::LinkLatency;
use crate::protocols::topology::Overlay;
use crate::protocols::wire::codec::CommittedOverlay;
use crate::protocols::wire::codec::MEMBER_RECORDS_MAX;
use crate::protocols::wire::{encode_frame, Frame, Heartbeat, TrafficClass};

use super::context::{
    monotonic_micros, monotonic_ms, LinkWeights, NodeContext, OverlayCommit, OverlayFrame,
    RoutingView, Ticker,
};
use super::node::DEFAULT_LINK_WEIGHT_MICROS;
use super::raft_replica::RaftMsg;
use super::transport::TransportMsg;

/// How often routes follow drifting round trips when the overlay stays the
/// same. Round trips are smoothed and move slowly; a fresh table costs a
/// Dijkstra per node, and tables that change on every heartbeat would only
/// make routes flap.
const ROUTES_REFRESH_MS: u64 = 1_000;

/// How often each neighbour gets a heartbeat even when other traffic shows
/// it this node is alive: heartbeats carry round-trip samples, link reports
/// and view digests.
const ROUND_TRIP_SAMPLE_MS: u64 = 1_000;

/// How far a link's weight must move before the routes are computed
/// again: an eighth of the weight, and at least this much. Smaller moves
/// change no route that matters next to HOP_COST_MICROS, and skipping them
/// keeps a thousand nodes in one process from spending a core on tables
/// that come out the same.
const WEIGHT_CHANGE_MIN_MICROS: u64 = 200;

/// How long membership changes wait to be passed on with others.
const SPREAD_DELAY_MS: u64 = 20;

/// How long the leader waits for its overlay proposal to commit before it
/// proposes again (a proposal can be lost when leadership moves).
const OVERLAY_PROPOSAL_WAIT_MS: u64 = 1_000;

/// A control frame from a neighbour.
pub enum ControlFrame {
    Heartbeat(Heartbeat),
    Members(Vec<MemberRecord>),
    Overlay(CommittedOverlay),
}

pub enum TopologyMsg {
    /// Heartbeat the neighbours and judge them.
    Tick,
    /// A frame from neighbour `from`; the permit bounds the queue.
    Control {
        from: String,
        frame: ControlFrame,
        permit: OwnedSemaphorePermit,
    },
    /// A connection to this neighbour came up.
    LinkUp(String),
    /// Pass queued membership changes on.
    Spread,
    /// This neighbour closed its connection saying it leaves the cluster.
    PeerLeft(String),
    /// This node's replica applied an overlay change.
    Committed(OverlayCommit),
}

pub struct TopologyActor;

pub struct TopologyState {
    context: Arc<NodeContext>,
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
    /// When the routing view was last looked at for a refresh.
    routes_published_ms: Option<u64>,
    /// What the current overlay alone determines for routing; None when
    /// the overlay changed since it was made (the published routing view
    /// shares it until then).
    frame: Option<Arc<OverlayFrame>>,
    /// Per neighbour: when this node last heartbeat it.
    heartbeat_sent_micros: HashMap<String, u64>,
    /// Per neighbour: the last frame arrival already taken as evidence.
    evidence_seen_micros: HashMap<String, u64>,
    last_tick_micros: u64,
    /// Membership changes not passed on yet, by member, with the
    /// neighbour each came from. A Spread message is due while not empty.
    unspread: BTreeMap<String, (MemberRecord, Option<String>)>,
    /// Whether the overlay comes from the control plane's log.
    replicated: bool,
    /// The committed overlay this node applies.
    committed: Arc<OverlayCommit>,
    /// The epoch the last overlay proposal was made from, and when.
    proposed: Option<(u64, u64)>,
    /// Per neighbour: when it was last sent the committed overlay.
    overlay_sent_micros: HashMap<String, u64>,
    /// Where the next overlay proposal's request sequence starts: past
    /// every earlier life's, so none is taken for a retry.
    proposal_sequence: u64,
    myself: ActorRef<TopologyMsg>,
    _ticker: Ticker,
}

impl Actor for TopologyActor {
    type Msg = TopologyMsg;
    type State = TopologyState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<TopologyMsg>,
        context: Arc<NodeContext>,
    ) -> Result<TopologyState, ActorProcessingErr> {
        context.topology.set(Some(myself.clone()));
        let config = &context.config;
        let names = &context.directory.roster.node_names;
        let detector = config.membership;
        let membership = Membership::new(&context.node_id, context.incarnation, names, detector);
        let every = Duration::from_millis(config.membership.heartbeat_interval_ms);
        let ticker = Ticker::new(myself.send_interval(every, || TopologyMsg::Tick));
        let replicated = !config.control.replicas.is_empty();
        let committed = context
            .committed_overlay
            .read()
            .expect("committed overlay lock is never poisoned")
            .clone();
        let proposal_sequence = context.incarnation;
        let mut state = TopologyState {
            live: names.iter().cloned().collect(),
            overlay: context.directory.topology.base().clone(),
            membership,
            context,
            published: None,
            round_trips: HashMap::new(),
            reported: HashMap::new(),
            last_heard: HashMap::new(),
            view_sent_micros: HashMap::new(),
            linked: BTreeSet::new(),
            routes_published_ms: None,
            frame: None,
            heartbeat_sent_micros: HashMap::new(),
            evidence_seen_micros: HashMap::new(),
            last_tick_micros: 0,
            unspread: BTreeMap::new(),
            replicated,
            committed,
            proposed: None,
            overlay_sent_micros: HashMap::new(),
            proposal_sequence,
            myself: myself.clone(),
            _ticker: ticker,
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TopologyMsg>,
        message: TopologyMsg,
        state: &mut TopologyState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TopologyMsg::Tick => state.tick(),
            TopologyMsg::Spread => state.flush_spread(),
            TopologyMsg::PeerLeft(peer) => {
                let changed = state.membership.left(&peer);
                state.spread(&changed.into_iter().collect::<Vec<_>>(), None);
            }
            TopologyMsg::Control {
                from,
                frame,
                permit,
            } => {
                drop(permit);
                match frame {
                    ControlFrame::Heartbeat(heartbeat) => state.heard(&from, heartbeat),
                    ControlFrame::Members(records) => {
                        let changed = state.membership.merge(&records);
                        state.spread(&changed, Some(&from));
                    }
                    ControlFrame::Overlay(overlay) => state.overlay_heard(&from, overlay),
                }
            }
            // Only a link's first coming up matters here: from then on its
            // neighbour is judged. The routing view does not depend on which
            // links are up; the router asks the peer table when it sends.
            TopologyMsg::Committed(commit) => state.adopt(commit, None),
            TopologyMsg::LinkUp(peer) => {
                if state.linked.insert(peer) {
                    state.publish();
                }
            }
        }
        Ok(())
    }
}

impl TopologyState {
    fn tick(&mut self) {
        let now = monotonic_micros();
        self.take_traffic_evidence();
        let changed = self.membership.tick(now / 1_000);
        self.spread(&changed, None);
        let digest = self.membership.digest();
        let links = self.own_links();
        for peer in self.context.peers.connected() {
            if !self.heartbeat_due(&peer, now) {
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
                links: links.clone(),
                overlay_epoch: self.committed.epoch,
            };
            self.send(&peer, &Frame::Heartbeat(heartbeat));
            self.heartbeat_sent_micros.insert(peer, now);
        }
        self.last_tick_micros = now;
        self.propose_overlay();
        let due = self
            .routes_published_ms
            .is_none_or(|last| (now / 1_000).saturating_sub(last) >= ROUTES_REFRESH_MS);
        if due {
            self.publish_routes();
        }
    }

    /// Any frame a neighbour sent since the last tick shows it alive.
    fn take_traffic_evidence(&mut self) {
        for peer in &self.linked {
            let Some(activity) = self.context.peers.activity(peer) else {
                continue;
            };
            let received = activity.received_micros.load(Ordering::Relaxed);
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
    fn heartbeat_due(&self, peer: &str, now: u64) -> bool {
        let last_heartbeat = self.heartbeat_sent_micros.get(peer).copied();
        let sample_due = last_heartbeat
            .is_none_or(|last| now.saturating_sub(last) >= ROUND_TRIP_SAMPLE_MS * 1_000);
        let quiet = self.context.peers.activity(peer).is_none_or(|activity| {
            activity.sent_micros.load(Ordering::Relaxed) <= self.last_tick_micros
        });
        sample_due || quiet
    }

    /// A heartbeat from a neighbour: liveness, round trip, its links, and
    /// whether our views differ.
    fn heard(&mut self, from: &str, heartbeat: Heartbeat) {
        let now = monotonic_micros();
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
            let interval = self.context.config.membership.heartbeat_interval_ms * 1_000;
            let last = self.view_sent_micros.get(from).copied().unwrap_or(0);
            if last == 0 || now.saturating_sub(last) >= interval {
                self.view_sent_micros.insert(from.to_string(), now);
                let records = self.membership.records();
                for chunk in records.chunks(MEMBER_RECORDS_MAX) {
                    self.send(from, &Frame::Members(chunk.to_vec()));
                }
            }
        }
        if let Some(record) = changed {
            self.spread(&[record], Some(from));
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
    fn spread(&mut self, changed: &[MemberRecord], source: Option<&str>) {
        if changed.is_empty() {
            return;
        }
        let counters = &self.context.metrics.counters;
        let schedule_spread = self.unspread.is_empty();
        for record in changed {
            NodeMetrics::count(&counters.membership_changes);
            if source.is_none() && record.status == Status::Dead {
                NodeMetrics::count(&counters.members_declared_dead);
            }
            if record.status == Status::Dead {
                self.linked.remove(&record.node);
            }
            let node = &self.context.node_id;
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
            let delay = Duration::from_millis(SPREAD_DELAY_MS);
            self.myself.send_after(delay, || TopologyMsg::Spread);
        }
        self.publish();
    }

    /// Sends the queued membership changes, one frame per neighbour.
    fn flush_spread(&mut self) {
        let unspread = std::mem::take(&mut self.unspread);
        for peer in self.context.peers.connected() {
            let records: Vec<MemberRecord> = unspread
                .values()
                .filter(|(_, source)| source.as_deref() != Some(peer.as_str()))
                .map(|(record, _)| record.clone())
                .collect();
            for chunk in records.chunks(MEMBER_RECORDS_MAX) {
                self.send(&peer, &Frame::Members(chunk.to_vec()));
            }
        }
    }

    fn send(&self, peer: &str, frame: &Frame) {
        let bytes = encode_frame(frame);
        // A full control queue drops this frame (counted); the next
        // heartbeat or digest exchange makes up for it.
        let sent = self
            .context
            .peers
            .try_send_control(peer, (TrafficClass::Control, bytes.into()));
        if sent.is_err() {
            NodeMetrics::count(&self.context.metrics.counters.control_frames_unsent);
        }
    }

    /// This node's link latencies, by wire index.
    fn own_links(&self) -> Vec<(u16, u32)> {
        let mut links: Vec<(u16, u32)> = self
            .round_trips
            .iter()
            .filter_map(|(peer, latency)| {
                let index = *self.context.directory.roster.node_index.get(peer)?;
                let micros = latency.estimate()?;
                Some((index, micros.min(u32::MAX as u64) as u32))
            })
            .collect();
        links.sort_unstable();
        links
    }

    /// The nodes the overlay is made of: those the committed overlay does
    /// not leave out, or, without a control plane, those this node's view
    /// holds alive.
    fn overlay_members(&self) -> BTreeSet<String> {
        if !self.replicated {
            return self.membership.live();
        }
        let names = &self.context.directory.roster.node_names;
        names
            .iter()
            .filter(|name| !self.committed.down.contains(*name))
            .cloned()
            .collect()
    }

    /// Recomputes the overlay if its members changed, and tells the
    /// transport and router.
    fn publish(&mut self) {
        self.propose_overlay();
        let live = self.overlay_members();
        let overlay_changed = live != self.live;
        if overlay_changed {
            self.overlay = self.context.directory.topology.overlay_for(&live);
            self.live = live;
            self.frame = None;
        }
        let me = self.context.node_id.clone();
        let neighbours = self.overlay.neighbours_of(&me);
        let probes: Vec<String> = self
            .context
            .directory
            .topology
            .base()
            .neighbours_of(&me)
            .into_iter()
            .filter(|peer| !self.live.contains(peer))
            .collect();
        let watched: BTreeSet<String> = neighbours
            .iter()
            .filter(|peer| self.linked.contains(*peer))
            .cloned()
            .collect();
        self.membership.monitor(monotonic_ms(), &watched);
        let now_published = (neighbours.clone(), probes.clone());
        if self.published.as_ref() != Some(&now_published) {
            if self.published.is_some() {
                NodeMetrics::count(&self.context.metrics.counters.overlay_changes);
                tracing::info!(node = %me, neighbours = ?neighbours, "overlay changed");
            }
            self.published = Some(now_published);
            *self
                .context
                .neighbours
                .write()
                .expect("neighbours lock is never poisoned") = neighbours.clone();
            if let Some(transport) = self.context.transport.get() {
                let _ = transport.cast(TransportMsg::SetNeighbours { neighbours, probes });
            }
        }
        if overlay_changed || self.routes_published_ms.is_none() {
            self.publish_routes();
        }
    }

    /// A fresh routing view from the overlay and every known round trip.
    fn publish_routes(&mut self) {
        self.routes_published_ms = Some(monotonic_ms());
        let overlay = &self.overlay;
        let me = &self.context.node_id;
        let mut weights = LinkWeights::default();
        let mut own: Vec<u64> = Vec::new();
        let mut put = |a: &str, b: &str, micros: u64| {
            if let (Some(a), Some(b)) = (overlay.index_of(a), overlay.index_of(b)) {
                weights.insert((a.min(b), a.max(b)), micros.max(1));
            }
        };
        for (reporter, links) in &self.reported {
            for &(index, micros) in links {
                if let Some(other) = self.context.directory.roster.node_names.get(index as usize) {
                    put(reporter, other, u64::from(micros));
                }
            }
        }
        for (peer, latency) in &self.round_trips {
            let Some(micros) = latency.estimate() else {
                continue;
            };
            put(me, peer, micros);
            own.push(micros);
        }
        own.sort_unstable();
        let default_weight = own
            .get(own.len() / 2)
            .copied()
            .unwrap_or(DEFAULT_LINK_WEIGHT_MICROS);
        let published = self.context.routing_view();
        let same_overlay = self
            .frame
            .as_ref()
            .is_some_and(|frame| Arc::ptr_eq(frame, &published.frame));
        if same_overlay && !weights_moved(&published, &weights, default_weight) {
            return;
        }
        let frame = self
            .frame
            .get_or_insert_with(|| {
                let names = &self.context.directory.roster.node_names;
                Arc::new(OverlayFrame::new(self.overlay.clone(), me, names))
            })
            .clone();
        let view = RoutingView::new(frame, weights, default_weight);
        *self
            .context
            .routing
            .write()
            .expect("routing lock is never poisoned") = Arc::new(view);
    }
}

/// The committed overlay: proposed by the leader's node, adopted when
/// newer, passed on.
impl TopologyState {
    /// On the leader's node: proposes the nodes this node's view holds
    /// down, when they differ from the committed overlay's and no earlier
    /// proposal from the same epoch is still on its way.
    fn propose_overlay(&mut self) {
        let leading = self.context.replica_leading.load(Ordering::Relaxed);
        if !self.replicated || !leading {
            return;
        }
        let live = self.membership.live();
        let names = &self.context.directory.roster.node_names;
        let down: BTreeSet<String> = names
            .iter()
            .filter(|name| !live.contains(*name))
            .cloned()
            .collect();
        if down == self.committed.down {
            return;
        }
        let (now, epoch) = (monotonic_ms(), self.committed.epoch);
        let waiting = self.proposed.is_some_and(|(from, at)| {
            from == epoch && now.saturating_sub(at) < OVERLAY_PROPOSAL_WAIT_MS
        });
        if waiting {
            return;
        }
        let Some(replica) = self.context.replica.get() else {
            return;
        };
        let index = self.context.directory.roster.node_index[&self.context.node_id];
        self.proposal_sequence += 1;
        let request = RequestId {
            client: OVERLAY_CLIENT_BASE - u64::from(index),
            sequence: self.proposal_sequence,
        };
        let command = Command::Overlay {
            after_epoch: epoch,
            down,
        };
        if replica
            .cast(RaftMsg::ProposeOverlay(Proposal { request, command }))
            .is_ok()
        {
            self.proposed = Some((epoch, now));
            NodeMetrics::count(&self.context.metrics.counters.overlay_proposals);
        }
    }

    /// Applies a committed overlay newer than the one applied, and passes
    /// it on at once to every neighbour but the one it came from.
    fn adopt(&mut self, commit: OverlayCommit, source: Option<&str>) {
        if commit.epoch <= self.committed.epoch {
            return;
        }
        let node = &self.context.node_id;
        tracing::info!(%node, epoch = commit.epoch, down = ?commit.down, "committed overlay applied");
        NodeMetrics::count(&self.context.metrics.counters.overlay_commits_applied);
        self.committed = Arc::new(commit);
        self.context.record_overlay(&self.committed);
        self.proposed = None;
        let now = monotonic_micros();
        for peer in self.context.peers.connected() {
            if source != Some(peer.as_str()) {
                self.send_overlay(&peer, now);
            }
        }
        self.publish();
    }

    /// A committed overlay from a neighbour.
    fn overlay_heard(&mut self, from: &str, overlay: CommittedOverlay) {
        let names = &self.context.directory.roster.node_names;
        let down: Option<BTreeSet<String>> = overlay
            .down
            .iter()
            .map(|&index| names.get(usize::from(index)).cloned())
            .collect();
        match down {
            Some(down) if self.replicated => {
                let commit = OverlayCommit {
                    epoch: overlay.epoch,
                    down,
                };
                self.adopt(commit, Some(from));
            }
            _ => NodeMetrics::count(&self.context.metrics.counters.overlay_frames_refused),
        }
    }

    /// Sends `peer` the committed overlay, at most once a heartbeat
    /// interval when asked by its heartbeats.
    fn send_overlay(&mut self, peer: &str, now: u64) {
        let index = &self.context.directory.roster.node_index;
        let down = self
            .committed
            .down
            .iter()
            .filter_map(|name| index.get(name).copied())
            .collect();
        let overlay = CommittedOverlay {
            epoch: self.committed.epoch,
            down,
        };
        self.overlay_sent_micros.insert(peer.to_string(), now);
        self.send(peer, &Frame::Overlay(overlay));
    }

    /// A neighbour's heartbeat showed an older overlay epoch: it is sent
    /// the committed overlay, unless it was within a heartbeat interval.
    fn overlay_lags(&mut self, peer: &str, now: u64) {
        let interval = self.context.config.membership.heartbeat_interval_ms * 1_000;
        let last = self.overlay_sent_micros.get(peer).copied();
        if last.is_none_or(|last| now.saturating_sub(last) >= interval) {
            self.send_overlay(peer, now);
        }
    }
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
    before.abs_diff(now) > (before / 8).max(WEIGHT_CHANGE_MIN_MICROS)
}
