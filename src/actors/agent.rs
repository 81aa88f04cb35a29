//! Agents and their supervisor.
//!
//! An [`Agent`] is a thin shell around a [`Behaviour`]: it feeds the
//! behaviour deliveries, ticks and refusals, and carries its sends to the
//! router. The [`AgentSupervisor`] starts this node's agents from the config,
//! keeps the agent directory current, and restarts an agent that ends under
//! its restart budget; a spent budget fails the agent supervisor, which
//! escalates to the node supervisor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::behaviours::{self, AgentContext, Behaviour, Delivery, Outbox};
use crate::config::AgentConfig;
use crate::protocols::wire::{Envelope, EnvelopeKind};

use super::context::{unix_micros, AgentHandle, AgentReport, NodeContext, SendError, Ticker};
use super::router::{self, OutboundMessage};
use super::supervisor::Children;

/// Deliveries a recording agent keeps (`behaviour = "sink"`); more are
/// counted in `unrecorded`. A ten-minute chaos run records about a million
/// per sink (some 150 bytes each).
pub const RECORDED_MAX: usize = 4_000_000;

/// (from agent, payload) of one recorded delivery.
pub type RecordedDelivery = (String, Vec<u8>);

/// An agent's counters; they outlive the agent's restarts.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub sent: AtomicU64,
    pub refused: AtomicU64,
    pub received_data: AtomicU64,
    pub received_replies: AtomicU64,
    /// Messages this agent sent that their destination acknowledged.
    pub acknowledged: AtomicU64,
    /// Sum over data received of the time from its signing to now, in
    /// microseconds (with `received_data`, the agent's mean latency).
    pub latency_micros_total: AtomicU64,
    pub starts: AtomicU64,
    /// (from agent, payload) of every delivery, for sinks.
    pub recorded: Mutex<Vec<RecordedDelivery>>,
    pub unrecorded: AtomicU64,
}

impl AgentStats {
    /// Keeps what a sink received.
    fn record(&self, delivery: &Delivery) {
        let mut recorded = self.recorded.lock().expect("record lock is never poisoned");
        if recorded.len() < RECORDED_MAX {
            recorded.push((delivery.from_agent.clone(), delivery.payload.clone()));
        } else {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> Vec<RecordedDelivery> {
        self.recorded
            .lock()
            .expect("record lock is never poisoned")
            .clone()
    }
}

pub enum AgentMsg {
    /// A verified, fresh envelope; the permit holds its inbox place.
    Deliver {
        envelope: Envelope,
        permit: OwnedSemaphorePermit,
    },
    Tick,
    /// The router refused a message this agent sent.
    SendFailed {
        destination: String,
        error: SendError,
    },
    /// Stop ticking (the run is draining); still answer deliveries.
    Quiesce,
}

pub struct Agent;

pub struct AgentState {
    context: Arc<NodeContext>,
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
    context: &'a NodeContext,
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
        let result = router::send(self.context, message);
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
            context: &self.context,
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
    cluster_seed ^ super::node::stable_hash(name)
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = (Arc<NodeContext>, AgentConfig);

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (context, config): (Arc<NodeContext>, AgentConfig),
    ) -> Result<AgentState, ActorProcessingErr> {
        let behaviour = behaviours::make(&config, &context.config.agents);
        let stats = context.stats_of(&config.name);
        let records = config.behaviour == crate::config::BehaviourConfig::Sink;
        let incarnation = stats.starts.fetch_add(1, Ordering::Relaxed) + 1;
        let inbox = Arc::new(Semaphore::new(context.config.limits.agent_inbox_max));
        // Reported before the handle is published: the router hands this
        // incarnation only what the core meant for it.
        context.agent_reports.push(AgentReport::Started {
            agent: config.name.clone(),
            incarnation,
        });
        context.agents.insert(
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
        let rng = ChaCha8Rng::seed_from_u64(seed_of(context.config.seed, &config.name));
        let mut state = AgentState {
            context,
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
                state.context.agent_reports.push(AgentReport::Consumed {
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

pub enum AgentSupervisorMsg {
    Restart(String),
    /// Tell every agent to stop ticking.
    Quiesce,
    /// Stop every agent without restarting any; answers when done.
    StopAgents(RpcReplyPort<()>),
}

pub struct AgentSupervisor;

pub struct AgentSupervisorState {
    context: Arc<NodeContext>,
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
            .context
            .config
            .agents
            .iter()
            .find(|agent| agent.name == name)
            .cloned()
        else {
            return Err(format!("agent {name} is not in the config").into());
        };
        let (agent, _) = Actor::spawn_linked(
            None,
            Agent,
            (self.context.clone(), config),
            myself.get_cell(),
        )
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
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentSupervisorMsg>,
        context: Arc<NodeContext>,
    ) -> Result<AgentSupervisorState, ActorProcessingErr> {
        let policy = context.config.supervision.restart_policy();
        let seed = seed_of(context.config.seed, &format!("{}/agents", context.node_id));
        let children = Children::new(
            policy,
            seed,
            format!("{}/agent-supervisor", context.node_id),
        );
        let mut state = AgentSupervisorState {
            context,
            children,
            quiesced: false,
        };
        let names: Vec<String> = state
            .context
            .config
            .agents
            .iter()
            .filter(|agent| agent.node == state.context.node_id)
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
                for entry in state.context.agents.iter() {
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
                    .context
                    .agents
                    .retain(|_, handle| handle.actor.get_id() != id);
            }
        }
        if let Some((name, delay)) = state.children.on_event(&event, &state.context.metrics)? {
            myself.send_after(delay, move || AgentSupervisorMsg::Restart(name));
        }
        Ok(())
    }
}
