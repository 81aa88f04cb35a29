//! The agent supervisor: starts this node's agents (those the config puts
//! here, and the planned agents the committed directory places here),
//! starts and stops planned agents as new directories move them, and
//! restarts an agent that ends under its restart budget; a spent budget
//! fails the agent supervisor, which escalates to the node supervisor.
//!
//! In a cluster with a control plane, planned agents wait for the first
//! committed directory: a node that restarts after its agents moved must
//! not start them again from the config's plan. Without one, they run
//! where the config's plan puts them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::agent_api::registry::PROCESS;
use crate::config::AgentConfig;
use crate::protocols::mesh::roster::desk_of;

use super::agent::{seed_of, Agent, AgentParts};
use super::messages::{AgentMsg, AgentSupervisorMsg};
use super::overlay_state::OverlayState;
use super::process_agent::ProcessAgent;
use super::supervisor::Children;
use crate::metrics::NodeMetrics;

pub struct AgentSupervisor;

/// What the agent supervisor starts from: what its agents are given, and
/// the overlay state that holds the committed directory.
pub struct AgentSupervisorArgs {
    pub parts: AgentParts,
    pub overlay: Arc<OverlayState>,
}

pub struct AgentSupervisorState {
    parts: AgentParts,
    overlay: Arc<OverlayState>,
    children: Children<String>,
    quiesced: bool,
}

impl AgentSupervisorState {
    /// The agents this node should run now: configured ones placed here,
    /// planned ones where the directory (or, without a control plane, the
    /// config's plan) places them, and its call desk when it has one.
    fn wanted(&self) -> BTreeSet<String> {
        let shared = &self.parts.shared;
        let config = &shared.config;
        let committed = self.overlay.committed();
        let replicated = !config.control.replicas.is_empty();
        let here = |agent: &AgentConfig| match (agent.placement.planned, replicated) {
            (true, true) => committed.placed.get(&agent.name) == Some(&shared.node_id),
            _ => agent.node == shared.node_id,
        };
        let mut names: BTreeSet<String> = (config.agents.iter())
            .filter(|agent| here(agent))
            .map(|agent| agent.name.clone())
            .collect();
        // A desk serves the calls of clients, and the control-plane asks
        // of agents on nodes without a replica.
        let serves_clients = (config.nodes.iter())
            .any(|node| node.id == shared.node_id && node.client_listen.is_some());
        let holds_replica = config.control.replicas.contains(&shared.node_id);
        if serves_clients || holds_replica {
            names.insert(desk_of(&shared.node_id));
        }
        names
    }

    /// Stops the agents running here that are no longer wanted (a new
    /// directory placed them elsewhere) and starts the wanted ones that
    /// are not running.
    async fn reconcile(
        &mut self,
        myself: &ActorRef<AgentSupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if self.children.stopping {
            return Ok(());
        }
        let wanted = self.wanted();
        let unwanted: Vec<String> = (self.children.running())
            .filter(|name| !wanted.contains(*name))
            .cloned()
            .collect();
        let counters = &self.parts.shared.metrics.counters;
        for name in &unwanted {
            self.children.forget(|child| child == name);
            if let Some(handle) = self.parts.data_path.agents.get(name) {
                handle.actor.stop(Some("placed on another node".into()));
            }
            NodeMetrics::count(&counters.placed_agents_stopped);
            tracing::info!(node = %self.parts.shared.node_id, agent = %name, "agent placed elsewhere; stopped");
        }
        for name in wanted {
            if !self.children.contains(|child| *child == name) {
                self.spawn(myself, &name).await?;
                if !self.is_configured_here(&name) {
                    NodeMetrics::count(&self.parts.shared.metrics.counters.placed_agents_started);
                }
            }
        }
        Ok(())
    }

    /// Whether the config itself (not a directory) puts `name` here.
    fn is_configured_here(&self, name: &str) -> bool {
        let shared = &self.parts.shared;
        (shared.config.agents.iter())
            .any(|agent| agent.name == name && agent.node == shared.node_id)
    }

    /// The config of agent `name`: a configured agent, or this node's call
    /// desk (on a node that serves clients).
    fn config_of(&self, name: &str) -> Option<AgentConfig> {
        let shared = &self.parts.shared;
        if name == desk_of(&shared.node_id) {
            return Some(AgentConfig {
                name: name.to_string(),
                node: shared.node_id.clone(),
                behaviour: "sink".into(),
                params: Default::default(),
                entry: usize::MAX,
                subscribe: Vec::new(),
                placement: Default::default(),
            });
        }
        let agents = &shared.config.agents;
        agents.iter().find(|agent| agent.name == name).cloned()
    }

    async fn spawn(
        &mut self,
        myself: &ActorRef<AgentSupervisorMsg>,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut config) = self.config_of(name) else {
            return Err(format!("agent {name} is not in the config").into());
        };
        // A planned agent runs where the directory placed it, which may
        // not be where the config's plan did.
        config.node = self.parts.shared.node_id.clone();
        let arguments = (self.parts.clone(), config);
        let supervisor = myself.get_cell();
        let (agent, _) = if arguments.1.behaviour == PROCESS {
            Actor::spawn_linked(None, ProcessAgent, arguments, supervisor).await?
        } else {
            Actor::spawn_linked(None, Agent, arguments, supervisor).await?
        };
        if self.quiesced {
            let _ = agent.cast(AgentMsg::Quiesce);
        }
        self.children.insert(agent.get_id(), name.to_string());
        Ok(())
    }
}

impl Actor for AgentSupervisor {
    type Msg = AgentSupervisorMsg;
    type State = AgentSupervisorState;
    type Arguments = AgentSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        args: AgentSupervisorArgs,
    ) -> Result<AgentSupervisorState, ActorProcessingErr> {
        let AgentSupervisorArgs { parts, overlay } = args;
        let shared = &parts.shared;
        let policy = shared.config.supervision.restart_policy();
        let seed = seed_of(shared.config.seed, &format!("{}/agents", shared.node_id));
        let children = Children::new(policy, seed, format!("{}/agent-supervisor", shared.node_id));
        // Taken before the first reconcile: a directory committed meanwhile
        // is reconciled again.
        shared.mailboxes.agents.set(Some(myself.clone()));
        let mut state = AgentSupervisorState {
            parts,
            overlay,
            children,
            quiesced: false,
        };
        state.reconcile(&myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        message: AgentSupervisorMsg,
        state: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // An agent a directory moved away meanwhile stays stopped.
            AgentSupervisorMsg::Restart(name) => {
                let running = state.children.contains(|child| *child == name);
                if !state.children.stopping && !running && state.wanted().contains(&name) {
                    state.spawn(&myself, &name).await?;
                }
            }
            AgentSupervisorMsg::Reconcile => state.reconcile(&myself).await?,
            AgentSupervisorMsg::Quiesce => {
                state.quiesced = true;
                for entry in state.parts.data_path.agents.iter() {
                    let _ = entry.actor.cast(AgentMsg::Quiesce);
                }
            }
            AgentSupervisorMsg::StopAgents(reply) => {
                state.children.stopping = true;
                myself
                    .stop_children_and_wait(None, Some(Duration::from_secs(5)))
                    .await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(cell) = event.actor_cell() {
            if !matches!(event, SupervisionEvent::ActorStarted(_)) {
                let id = cell.get_id();
                state
                    .parts
                    .data_path
                    .agents
                    .retain(|_, handle| handle.actor.get_id() != id);
            }
        }
        if let Some((name, delay)) = state
            .children
            .on_event(&event, &state.parts.shared.metrics)?
        {
            myself.send_after(delay, move || AgentSupervisorMsg::Restart(name));
        }
        Ok(())
    }
}
