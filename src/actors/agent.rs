//! Agents and their supervisor.
//!
//! An [`Agent`] is a thin shell around a [`Behaviour`]: it feeds the
//! behaviour deliveries, ticks and refusals, and carries its sends to the
//! router. The [`AgentSupervisor`] starts this node's agents from the config,
//! keeps the agent directory current, and restarts an agent that ends under
//! its restart budget; a spent budget fails the agent supervisor, which
//! escalates to the node supervisor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::Semaphore;

use crate::behaviours::{self, AgentContext, Behaviour, Delivery, Outbox};
use crate::config::AgentConfig;
use crate::protocols::wire::EnvelopeKind;

use crate::clock::unix_micros;
use crate::protocols::mesh::SendError;

use super::data_path::{AgentHandle, AgentReport, AgentStats, DataPath};
use super::messages::{AgentMsg, AgentSupervisorMsg, OutboundMessage};
use super::router;
use super::shared::{NodeShared, Ticker};
use super::supervisor::Children;

/// What an agent (and the agent supervisor) starts from: the node's
/// shared core, and the data path its messages go through.
#[derive(Clone)]
pub struct AgentParts {
    pub shared: Arc<NodeShared>,
    pub data_path: Arc<DataPath>,
}

pub struct Agent;

pub struct AgentState {
    parts: AgentParts,
    name: String,
    behaviour: Box<dyn Behaviour>,
    rng: ChaCha8Rng,
    stats: Arc<AgentStats>,
    /// Dropped (and stopped) on quiesce.
    ticker: Option<Ticker>,
    /// A sink keeps what it receives in its stats.
    records: bool,
}

/// Carries a behaviour's sends to the router and counts them.
struct RouterOutbox<'a> {
    parts: &'a AgentParts,
    source: &'a str,
    stats: &'a AgentStats,
}

impl Outbox for RouterOutbox<'_> {
    fn send(&mut self, to: &str, kind: EnvelopeKind, payload: Vec<u8>) -> Result<(), SendError> {
        let message = OutboundMessage {
            source_agent: self.source.to_string(),
            destination_agent: to.to_string(),
            kind,
            payload,
            receipt: None,
        };
        let result = router::send(&self.parts.shared, &self.parts.data_path, message);
        let counter = if result.is_ok() {
            &self.stats.sent
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }
}

impl AgentState {
    /// Runs `call` on the behaviour with a fresh context.
    fn with_behaviour(&mut self, call: impl FnOnce(&mut dyn Behaviour, &mut AgentContext<'_>)) {
        let mut outbox = RouterOutbox {
            parts: &self.parts,
            source: &self.name,
            stats: &self.stats,
        };
        let mut agent_context = AgentContext {
            name: &self.name,
            now_micros: unix_micros(),
            rng: &mut self.rng,
            outbox: &mut outbox,
        };
        call(self.behaviour.as_mut(), &mut agent_context);
    }
}

fn seed_of(cluster_seed: u64, name: &str) -> u64 {
    cluster_seed ^ crate::protocols::stable_hash(name)
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = (AgentParts, AgentConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (parts, config): (AgentParts, AgentConfig),
    ) -> Result<AgentState, ActorProcessingErr> {
        let (shared, data_path) = (&parts.shared, &parts.data_path);
        let behaviour = behaviours::make(&config, &shared.config.agents);
        let stats = data_path.stats_of(&config.name);
        let records = config.behaviour == crate::config::BehaviourConfig::Sink;
        let incarnation = stats.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let inbox = Arc::new(Semaphore::new(shared.config.limits.agent_inbox_max));
        // Reported before the handle is published: the router hands this
        // incarnation only what the core meant for it.
        data_path.agent_reports.push(AgentReport::Started {
            agent: config.name.clone(),
            incarnation,
        });
        data_path.agents.insert(
            config.name.clone(),
            AgentHandle {
                actor: myself.clone(),
                inbox,
                incarnation,
            },
        );
        let ticker = behaviour
            .tick_interval_ms()
            .map(|every| myself.send_interval(Duration::from_millis(every), || AgentMsg::Tick))
            .map(Ticker::new);
        let rng = ChaCha8Rng::seed_from_u64(seed_of(shared.config.seed, &config.name));
        let mut state = AgentState {
            parts,
            name: config.name,
            behaviour,
            rng,
            stats,
            ticker,
            records,
        };
        state.with_behaviour(|behaviour, agent_context| behaviour.start(agent_context));
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Deliver { envelope, permit } => {
                drop(permit);
                let signed = envelope.signed;
                let counter = match signed.kind {
                    EnvelopeKind::Data => &state.stats.received_data,
                    EnvelopeKind::Reply => &state.stats.received_replies,
                    EnvelopeKind::Ack => return Ok(()),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if signed.kind == EnvelopeKind::Data {
                    let latency = unix_micros().saturating_sub(signed.sent_at_micros);
                    let total = &state.stats.latency_micros_total;
                    total.fetch_add(latency, Ordering::Relaxed);
                }
                let (origin, sequence) = (signed.origin_node, signed.sequence);
                let delivery = Delivery {
                    from_agent: signed.source_agent,
                    kind: signed.kind,
                    payload: signed.payload,
                    sent_at_micros: signed.sent_at_micros,
                };
                if state.records {
                    state.stats.record(&delivery);
                }
                state.with_behaviour(|behaviour, agent_context| {
                    behaviour.message(agent_context, delivery)
                });
                // Consumed: the router acknowledges it, and never hands it
                // over again.
                state
                    .parts
                    .data_path
                    .agent_reports
                    .push(AgentReport::Consumed {
                        agent: state.name.clone(),
                        origin,
                        sequence,
                    });
            }
            AgentMsg::Tick => {
                state.with_behaviour(|behaviour, agent_context| behaviour.tick(agent_context))
            }
            AgentMsg::SendFailed { destination, error } => {
                state.with_behaviour(|behaviour, agent_context| {
                    behaviour.send_failed(agent_context, &destination, &error)
                })
            }
            AgentMsg::Quiesce => state.ticker = None,
        }
        Ok(())
    }
}

pub struct AgentSupervisor;

pub struct AgentSupervisorState {
    parts: AgentParts,
    children: Children<String>,
    quiesced: bool,
}

impl AgentSupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<AgentSupervisorMsg>,
        name: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(config) = self
            .parts
            .shared
            .config
            .agents
            .iter()
            .find(|agent| agent.name == name)
            .cloned()
        else {
            return Err(format!("agent {name} is not in the config").into());
        };
        let (agent, _) =
            Actor::spawn_linked(None, Agent, (self.parts.clone(), config), myself.get_cell())
                .await?;
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
        let names: Vec<String> = shared
            .config
            .agents
            .iter()
            .filter(|agent| agent.node == shared.node_id)
            .map(|agent| agent.name.clone())
            .collect();
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
