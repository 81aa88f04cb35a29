//! The topology actor: the shell of this node's
//! [`TopologyCore`](crate::protocols::mesh::TopologyCore).
//!
//! It feeds the core a tick every `membership.heartbeat_interval_ms`,
//! the control frames neighbours send (heartbeats, membership records,
//! committed overlays), links coming up, peers leaving and the overlays
//! this node's replica commits, with the time and the peer table's view
//! of the links. Then it does what the core decided: sends control frames
//! on each link's control queue, tells the transport which neighbours to
//! hold and probe, publishes the routing view for the router, proposes
//! overlay changes to the replica, records the applied overlay, and
//! schedules the next spread of membership changes. Every decision is the
//! core's; see `protocols::mesh::topology`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::metrics::NodeMetrics;
use crate::protocols::mesh::topology::{Links, TopologyConfig};
use crate::protocols::mesh::{TopologyCore, TopologyEvent};
use crate::protocols::wire::{encode_frame, Frame, TrafficClass};

use crate::clock::monotonic_micros;
use crate::net::peers::PeerTable;

use super::messages::{AgentSupervisorMsg, PlannerMsg, RaftMsg, TopologyMsg, TransportMsg};
use super::overlay_state::OverlayState;
use super::shared::{NodeShared, Ticker};

pub struct TopologyActor;

/// What a topology actor's incarnation starts from: the node's shared
/// core and the overlay state it keeps there across its restarts.
pub struct TopologyArgs {
    pub shared: Arc<NodeShared>,
    pub overlay: Arc<OverlayState>,
}

pub struct TopologyState {
    shared: Arc<NodeShared>,
    overlay: Arc<OverlayState>,
    core: TopologyCore,
    myself: ActorRef<TopologyMsg>,
    _ticker: Ticker,
}

/// The links as the peer table has them.
struct PeerLinks<'a>(&'a PeerTable);

impl Links for PeerLinks<'_> {
    fn connected(&self) -> Vec<String> {
        self.0.connected()
    }

    fn activity(&self, peer: &str) -> Option<(u64, u64)> {
        let activity = self.0.activity(peer)?;
        Some((
            activity.sent_micros.load(Ordering::Relaxed),
            activity.received_micros.load(Ordering::Relaxed),
        ))
    }
}

impl Actor for TopologyActor {
    type Msg = TopologyMsg;
    type State = TopologyState;
    type Arguments = TopologyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TopologyMsg>,
        args: TopologyArgs,
    ) -> Result<TopologyState, ActorProcessingErr> {
        let TopologyArgs { shared, overlay } = args;
        shared.mailboxes.topology.set(Some(myself.clone()));
        let config = &shared.config;
        let every = Duration::from_millis(config.membership.heartbeat_interval_ms);
        let ticker = Ticker::new(myself.send_interval(every, || TopologyMsg::Tick));
        let committed = overlay
            .committed_overlay
            .read()
            .expect("committed overlay lock is never poisoned")
            .clone();
        let core_config = TopologyConfig {
            node: shared.node_id.clone(),
            incarnation: shared.incarnation,
            detector: config.membership,
            replicated: !config.control.replicas.is_empty(),
        };
        let core = TopologyCore::new(
            monotonic_micros(),
            core_config,
            shared.directory.roster.clone(),
            shared.directory.topology.clone(),
            committed,
        );
        let mut state = TopologyState {
            shared,
            overlay,
            core,
            myself: myself.clone(),
            _ticker: ticker,
        };
        state.carry_out();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TopologyMsg>,
        message: TopologyMsg,
        state: &mut TopologyState,
    ) -> Result<(), ActorProcessingErr> {
        let core = &mut state.core;
        let links = PeerLinks(&state.shared.peers);
        let now = monotonic_micros();
        core.set_leading(state.overlay.replica_leading.load(Ordering::Relaxed));
        match message {
            TopologyMsg::Tick => core.tick(now, &links),
            TopologyMsg::Spread => core.spread_due(&links),
            TopologyMsg::PeerLeft(peer) => core.peer_left(now, &peer),
            TopologyMsg::Control {
                from,
                frame,
                permit,
            } => {
                drop(permit);
                core.handle_frame(now, &from, frame, &links);
            }
            TopologyMsg::Committed(commit) => core.committed(now, commit, &links),
            TopologyMsg::LinkUp(peer) => core.link_up(now, &peer),
        }
        state.carry_out();
        Ok(())
    }
}

impl TopologyState {
    /// Does what the core decided, frames first.
    fn carry_out(&mut self) {
        while let Some((peer, frame)) = self.core.poll_transmit() {
            self.send(&peer, &frame);
        }
        while let Some(event) = self.core.poll_event() {
            self.apply(event);
        }
        let counters = self.core.take_counters();
        self.shared.metrics.counters.add_moved(counters.moved());
    }

    fn apply(&self, event: TopologyEvent) {
        let (shared, overlay) = (&self.shared, &self.overlay);
        match event {
            TopologyEvent::Neighbours { neighbours, probes } => {
                *overlay
                    .neighbours
                    .write()
                    .expect("neighbours lock is never poisoned") = neighbours.clone();
                if let Some(transport) = shared.mailboxes.transport.get() {
                    let _ = transport.cast(TransportMsg::SetNeighbours { neighbours, probes });
                }
            }
            TopologyEvent::Routes(view) => {
                *overlay
                    .routing
                    .write()
                    .expect("routing lock is never poisoned") = view;
            }
            // A proposal that cannot be handed over is made again later.
            TopologyEvent::Propose(proposal) => {
                if let Some(replica) = shared.mailboxes.replica.get() {
                    let _ = replica.cast(RaftMsg::Propose(proposal));
                }
            }
            // The agents this node runs may change with the directory.
            TopologyEvent::Applied(commit) => {
                overlay.record_overlay(&commit);
                if let Some(agents) = shared.mailboxes.agents.get() {
                    let _ = agents.cast(AgentSupervisorMsg::Reconcile);
                }
                if let Some(planner) = shared.mailboxes.planner.get() {
                    let _ = planner.cast(PlannerMsg::Committed);
                }
            }
            TopologyEvent::SpreadAfter(delay_ms) => {
                let delay = Duration::from_millis(delay_ms);
                self.myself.send_after(delay, || TopologyMsg::Spread);
            }
        }
    }

    fn send(&self, peer: &str, frame: &Frame) {
        let bytes = encode_frame(frame);
        // A full control queue drops this frame (counted); the next
        // heartbeat or digest exchange makes up for it.
        let sent = self
            .shared
            .peers
            .try_send_control(peer, (TrafficClass::Control, bytes.into()));
        if sent.is_err() {
            NodeMetrics::count(&self.shared.metrics.counters.control_frames_unsent);
        }
    }
}
