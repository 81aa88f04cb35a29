//! The agent supervisor: starts this node's agents from the config, keeps
//! the agent directory current, and restarts an agent that ends under its
//! restart budget; a spent budget fails the agent supervisor, which
//! escalates to the node supervisor.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::agent_api::registry::PROCESS;
use crate::config::AgentConfig;
use crate::protocols::mesh::roster::desk_of;

use super::agent::{seed_of, Agent, AgentParts};
use super::messages::{AgentMsg, AgentSupervisorMsg};
use super::process_agent::ProcessAgent;
use super::supervisor::Children;

pub struct AgentSupervisor;

pub struct AgentSupervisorState {
    parts: AgentParts,
    children: Children<String>,
    quiesced: bool,
}

impl AgentSupervisorState {
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
        let Some(config) = self.config_of(name) else {
            return Err(format!("agent {name} is not in the config").into());
        };
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
    type Arguments = AgentParts;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        parts: AgentParts,
    ) -> Result<AgentSupervisorState, ActorProcessingErr> {
        let shared = &parts.shared;
        let policy = shared.config.supervision.restart_policy();
        let seed = seed_of(shared.config.seed, &format!("{}/agents", shared.node_id));
        let children = Children::new(policy, seed, format!("{}/agent-supervisor", shared.node_id));
        let mut state = AgentSupervisorState {
            parts,
            children,
            quiesced: false,
        };
        let shared = &state.parts.shared;
        let mut names: Vec<String> = shared
            .config
            .agents
            .iter()
            .filter(|agent| agent.node == shared.node_id)
            .map(|agent| agent.name.clone())
            .collect();
        // A desk serves the calls of clients, and the control-plane asks
        // of agents on nodes without a replica.
        let serves_clients = (shared.config.nodes.iter())
            .any(|node| node.id == shared.node_id && node.client_listen.is_some());
        let holds_replica = shared.config.control.replicas.contains(&shared.node_id);
        if serves_clients || holds_replica {
            names.push(desk_of(&shared.node_id));
        }
        for name in names {
            state.spawn(&myself, &name).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        message: AgentSupervisorMsg,
        state: &mut AgentSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentSupervisorMsg::Restart(name) => {
                if !state.children.stopping && !state.children.contains(|child| *child == name) {
                    state.spawn(&myself, &name).await?;
                }
            }
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
