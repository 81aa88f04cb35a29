//! The PlacementPlanner actor: the shell of a
//! [`PlannerCore`](crate::protocols::placement::directory::PlannerCore),
//! on every node that holds a control-plane replica. Only the planner
//! beside the leading replica acts, so one planner is active in the
//! cluster and it moves with leadership:
//!
//! ```text
//! RaftReplica ─records leadership, committed overlay─▶ OverlayState
//! Topology ─Committed─▶ PlacementPlanner ◀─Tick─ timer
//! PlacementPlanner ─reads─▶ OverlayState ─PlannerCore::decide─▶ RaftMsg::Propose(Place)
//! ```
//!
//! A directory it proposes is made against the committed overlay's epoch;
//! once committed, every node learns it with the overlay and its agent
//! supervisor starts and stops agents to match. A replica that stops
//! leading forgets what it planned, so the next leader's planner starts
//! afresh from what is committed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::clock::{monotonic_ms, unix_micros};
use crate::config::placement::problem_of;
use crate::metrics::NodeMetrics;
use crate::protocols::cluster_state::{Proposal, RequestId, OVERLAY_CLIENT_BASE};
use crate::protocols::placement::directory::{Committed, Decision, PlannerCore};
use crate::protocols::wire::limits::NODES_MAX;

use super::messages::{PlannerMsg, RaftMsg};
use super::overlay_state::OverlayState;
use super::shared::{NodeShared, Ticker};

/// Directory proposals carry the client id `PLANNER_CLIENT_BASE - i` from
/// the replica node at index `i` of the sorted node list, below every
/// overlay proposer's id.
pub const PLANNER_CLIENT_BASE: u64 = OVERLAY_CLIENT_BASE - NODES_MAX as u64;

pub struct PlacementPlanner;

/// What a planner's incarnation starts from.
pub struct PlannerArgs {
    pub shared: Arc<NodeShared>,
    pub overlay: Arc<OverlayState>,
}

pub struct PlannerState {
    shared: Arc<NodeShared>,
    overlay: Arc<OverlayState>,
    core: PlannerCore,
    client: u64,
    /// The last request sequence used: unix microseconds, so a later
    /// incarnation's requests never repeat an earlier one's.
    sequence: u64,
    leading: bool,
    _ticker: Ticker,
}

impl Actor for PlacementPlanner {
    type Msg = PlannerMsg;
    type State = PlannerState;
    type Arguments = PlannerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PlannerMsg>,
        args: PlannerArgs,
    ) -> Result<PlannerState, ActorProcessingErr> {
        let PlannerArgs { shared, overlay } = args;
        let config = &shared.config;
        let problem = problem_of(&config.nodes, &config.agents, &config.placement);
        let planned = config.agents.iter().map(|a| a.placement.planned).collect();
        let core = PlannerCore::new(problem, planned, config.placement.migrations_max);
        let index = (shared.directory.roster.node_index)
            .get(&shared.node_id)
            .copied()
            .ok_or("this node is not in the roster")?;
        let every = Duration::from_millis(config.membership.heartbeat_interval_ms);
        let ticker = Ticker::new(myself.send_interval(every, || PlannerMsg::Tick));
        shared.mailboxes.planner.set(Some(myself));
        Ok(PlannerState {
            shared,
            overlay,
            core,
            client: PLANNER_CLIENT_BASE - u64::from(index),
            sequence: 0,
            leading: false,
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PlannerMsg>,
        message: PlannerMsg,
        state: &mut PlannerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PlannerMsg::Tick | PlannerMsg::Committed => state.plan(),
        }
        Ok(())
    }
}

impl PlannerState {
    /// Decides on the committed overlay if this node's replica leads, and
    /// proposes the directory the core makes.
    fn plan(&mut self) {
        if !self.core.has_planned_agents() {
            return;
        }
        let leading = self.overlay.replica_leading.load(Ordering::Relaxed);
        if !leading {
            if self.leading {
                self.core.stand_down();
            }
            self.leading = false;
            return;
        }
        self.leading = true;
        let committed = self.overlay.committed();
        let view = Committed {
            epoch: committed.epoch,
            down: &committed.down,
            placed: &committed.placed,
        };
        let node = &self.shared.node_id;
        let counters = &self.shared.metrics.counters;
        match self.core.decide(&view, monotonic_ms()) {
            Decision::Keep => {}
            Decision::Propose(command, replanned) => {
                tracing::info!(%node, epoch = committed.epoch, moves = ?replanned.moves, forced = replanned.forced_moves, "placement: directory proposed");
                NodeMetrics::count(&counters.placement_proposals);
                self.sequence = (self.sequence + 1).max(unix_micros());
                let request = RequestId {
                    client: self.client,
                    sequence: self.sequence,
                };
                // A proposal that cannot be handed over is made again once
                // the core's wait for it runs out.
                if let Some(replica) = self.shared.mailboxes.replica.get() {
                    let _ = replica.cast(RaftMsg::Propose(Proposal { request, command }));
                }
            }
            Decision::Refused(error) => {
                tracing::error!(%node, epoch = committed.epoch, down = ?committed.down, %error, "placement: no plan meets the rules; the directory stays");
                NodeMetrics::count(&counters.placement_refused);
            }
        }
    }
}
