//! The agent actor: a thin shell around a [`Behaviour`] (see
//! [`crate::agent_api`]). It reads each delivery's frame and hands the
//! behaviour messages, responses, ticks, timers and refusals; carries what
//! the behaviour sends to the router; times out its requests; and keeps
//! its snapshots in the data path, where a restarted incarnation finds
//! them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::agent_api::behaviour::TimerError;
use crate::agent_api::frame::Frame;
use crate::agent_api::{
    Behaviour, Context, ControlAsk, ControlError, ControlOutcome, ControlTicket, Effects, Message,
    Registry, RequestError, RequestId,
};
use crate::clock::unix_micros;
use crate::config::AgentConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::mesh::roster::desk_of;
use crate::protocols::mesh::SendError;
use crate::protocols::wire::{Envelope, EnvelopeKind};

use super::control_ask::{self, ControlAsks};
use super::data_path::{AgentStats, DataPath};
use super::messages::{AgentMsg, OutboundMessage};
use super::router;
use super::shared::{NodeShared, Ticker};

/// Requests one agent may have awaiting responses; more are refused at
/// the send (`agent_requests_refused`).
pub const AGENT_REQUESTS_MAX: usize = 65_536;
/// Timers one agent may have set at once.
pub const AGENT_TIMERS_MAX: usize = 4_096;
/// Largest snapshot an agent's behaviour may keep; a larger one is
/// refused and counted (`agent_snapshots_refused`), keeping the previous.
pub const AGENT_SNAPSHOT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// What an agent (and the agent supervisor) starts from: the node's
/// shared core, the data path its messages go through, and the registry
/// its behaviour is made from.
#[derive(Clone)]
pub struct AgentParts {
    pub shared: Arc<NodeShared>,
    pub data_path: Arc<DataPath>,
    pub registry: Arc<Registry>,
}

impl AgentParts {
    /// The node's core and data path, as a control-plane ask needs them.
    pub fn node(&self) -> control_ask::NodeRefs<'_> {
        (&self.shared, &self.data_path)
    }
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
    /// A sink's node records what it consumed, for the exactly-once checks.
    records: bool,
    myself: ActorRef<AgentMsg>,
    /// Numbers this incarnation's requests (from a random start).
    next_request: u64,
    /// Requests awaiting their responses: id → timeout in ms.
    pending: HashMap<u64, u64>,
    /// Timers set: tag → (which setting of the tag, its timer).
    timers: HashMap<u64, (u64, Ticker)>,
    timer_settings: u64,
    /// Requests sent for clients outside the cluster (a call desk's):
    /// id → (the agent asked, where the response goes). Their timeouts
    /// are in `pending`.
    calls: HashMap<u64, (String, CallReply)>,
    /// This incarnation's asks of the control plane under way.
    asks: ControlAsks,
    /// Asks of agents elsewhere this agent (a desk) serves now.
    serving: usize,
}

/// Where a call's response body (or why there is none) goes.
type CallReply = tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>;

/// What a behaviour's context does, carried out by the agent actor.
struct ActorEffects<'a> {
    parts: &'a AgentParts,
    source: &'a str,
    stats: &'a AgentStats,
    myself: &'a ActorRef<AgentMsg>,
    pending: &'a mut HashMap<u64, u64>,
    timers: &'a mut HashMap<u64, (u64, Ticker)>,
    timer_settings: &'a mut u64,
    asks: &'a mut ControlAsks,
}

impl Effects for ActorEffects<'_> {
    fn send(
        &mut self,
        to: &str,
        frame: Frame,
        answer: bool,
        timeout_ms: Option<u64>,
    ) -> Result<(), SendError> {
        let request = match (&frame, timeout_ms) {
            (Frame::Request { id, .. }, Some(timeout_ms)) => Some((*id, timeout_ms)),
            _ => None,
        };
        if request.is_some() && self.pending.len() >= AGENT_REQUESTS_MAX {
            NodeMetrics::count(&self.parts.shared.metrics.counters.agent_requests_refused);
            return Err(SendError::InFlightFull(self.source.to_string()));
        }
        let message = OutboundMessage {
            source_agent: self.source.to_string(),
            destination_agent: to.to_string(),
            kind: if answer {
                EnvelopeKind::Reply
            } else {
                EnvelopeKind::Data
            },
            payload: frame.encode(),
            receipt: None,
        };
        let result = router::send(&self.parts.shared, &self.parts.data_path, message);
        let counter = if result.is_ok() {
            &self.stats.sent
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let (Ok(()), Some((id, timeout_ms))) = (&result, request) {
            self.pending.insert(id, timeout_ms);
            let after = Duration::from_millis(timeout_ms);
            self.myself
                .send_after(after, move || AgentMsg::RequestTimedOut(id));
        }
        result
    }

    fn set_timer(&mut self, tag: u64, delay_ms: u64) -> Result<(), TimerError> {
        if self.timers.len() >= AGENT_TIMERS_MAX && !self.timers.contains_key(&tag) {
            return Err(TimerError {
                max: AGENT_TIMERS_MAX,
            });
        }
        *self.timer_settings += 1;
        let setting = *self.timer_settings;
        let after = Duration::from_millis(delay_ms);
        let handle = self
            .myself
            .send_after(after, move || AgentMsg::Timer { tag, setting });
        // Replacing a timer drops (and so aborts) the one it replaces.
        self.timers.insert(tag, (setting, Ticker::new(handle)));
        Ok(())
    }

    fn cancel_timer(&mut self, tag: u64) {
        self.timers.remove(&tag);
    }

    fn subscribers(&self, topic: &str) -> Vec<String> {
        let roster = &self.parts.shared.directory.roster;
        roster.subscribers(topic).to_vec()
    }

    fn agents_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.parts
            .shared
            .directory
            .roster
            .agents_with_prefix(prefix)
    }

    fn control(&mut self, ask: ControlAsk) -> Result<u64, ControlError> {
        self.asks
            .ask(self.parts.node(), self.source, self.myself, ask)
    }
}

impl AgentState {
    /// Sends a client's request to `to`; its response (or refusal, or
    /// timeout) goes to `reply`.
    fn call(&mut self, to: &str, body: Vec<u8>, timeout_ms: u64, reply: CallReply) {
        if self.calls.len() >= AGENT_REQUESTS_MAX {
            let _ = reply.send(Err(format!("{AGENT_REQUESTS_MAX} calls wait already")));
            return;
        }
        let (mut effects, _, next_request, _) = self.split();
        *next_request += 1;
        let id = *next_request;
        match effects.send(to, Frame::Request { id, body }, false, Some(timeout_ms)) {
            Ok(()) => {
                self.calls.insert(id, (to.to_string(), reply));
            }
            Err(error) => {
                let _ = reply.send(Err(error.to_string()));
            }
        }
    }

    /// Answers every call waiting on `agent` with `error`.
    fn fail_calls_to(&mut self, agent: &str, error: &SendError) {
        let failed: Vec<u64> = (self.calls.iter())
            .filter(|(_, (to, _))| to == agent)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.pending.remove(&id);
            if let Some((_, reply)) = self.calls.remove(&id) {
                let _ = reply.send(Err(error.to_string()));
            }
        }
    }

    /// The state's parts a behaviour's call needs, borrowed apart: its
    /// effects, the RNG, the request counter and the behaviour.
    fn split(
        &mut self,
    ) -> (
        ActorEffects<'_>,
        &mut ChaCha8Rng,
        &mut u64,
        &mut dyn Behaviour,
    ) {
        let effects = ActorEffects {
            parts: &self.parts,
            source: &self.name,
            stats: &self.stats,
            myself: &self.myself,
            pending: &mut self.pending,
            timers: &mut self.timers,
            timer_settings: &mut self.timer_settings,
            asks: &mut self.asks,
        };
        (
            effects,
            &mut self.rng,
            &mut self.next_request,
            self.behaviour.as_mut(),
        )
    }

    /// Runs `call` on the behaviour with a fresh context, then keeps the
    /// snapshot it gives, if any.
    fn with_behaviour(&mut self, call: impl FnOnce(&mut dyn Behaviour, &mut Context<'_>)) {
        let (mut effects, rng, next_request, behaviour) = self.split();
        let (name, node) = (effects.source, effects.parts.shared.node_id.as_str());
        let mut context = Context::new(name, node, unix_micros(), rng, &mut effects, next_request);
        call(behaviour, &mut context);
        if let Some(snapshot) = self.behaviour.snapshot() {
            self.keep_snapshot(snapshot);
        }
    }

    fn keep_snapshot(&self, snapshot: Vec<u8>) {
        if snapshot.len() > AGENT_SNAPSHOT_BYTES_MAX {
            let counters = &self.parts.shared.metrics.counters;
            NodeMetrics::count(&counters.agent_snapshots_refused);
            tracing::warn!(agent = %self.name, bytes = snapshot.len(), max = AGENT_SNAPSHOT_BYTES_MAX, "snapshot too large; the previous one is kept");
            return;
        }
        let snapshots = &self.parts.data_path.snapshots;
        snapshots.insert(self.name.clone(), Arc::new(snapshot));
    }

    /// Reads one delivery and hands it to the behaviour; then reports it
    /// consumed, whatever it held.
    fn deliver(&mut self, envelope: Envelope) {
        let signed = envelope.signed;
        if !self.stats.count_delivery(&signed, unix_micros()) {
            return;
        }
        let (origin, sequence) = (signed.origin_node, signed.sequence);
        match Frame::decode(&signed.payload) {
            Ok(frame) => {
                if self.records {
                    self.stats.record(&signed.source_agent, frame.body());
                }
                let answer = signed.kind == EnvelopeKind::Reply;
                self.hand_frame(frame, signed.source_agent, signed.sent_at_micros, answer);
            }
            Err(reason) => {
                let counters = &self.parts.shared.metrics.counters;
                NodeMetrics::count(&counters.agent_frames_malformed);
                tracing::debug!(agent = %self.name, from = %signed.source_agent, %reason, "delivery dropped");
            }
        }
        self.parts.data_path.consumed(&self.name, origin, sequence);
    }

    fn hand_frame(&mut self, frame: Frame, from: String, sent_at_micros: u64, answer: bool) {
        let frame = match frame {
            Frame::Control {
                client,
                sequence,
                ask,
            } => return self.serve(from, client, sequence, ask),
            Frame::ControlAnswer {
                client,
                sequence,
                outcome,
            } => return self.control_answered(client, sequence, outcome),
            frame => frame,
        };
        let message = |body, request| Message {
            from,
            body,
            request,
            answer,
            sent_at_micros,
            topic: None,
        };
        match frame {
            Frame::Publish { topic, body } => {
                let message = Message {
                    topic: Some(topic),
                    ..message(body, None)
                };
                self.with_behaviour(|behaviour, context| behaviour.message(context, message));
            }
            Frame::Tell(body) => {
                let message = message(body, None);
                self.with_behaviour(|behaviour, context| behaviour.message(context, message));
            }
            Frame::Request { id, body } => {
                let message = message(body, Some(RequestId(id)));
                self.with_behaviour(|behaviour, context| behaviour.message(context, message));
            }
            Frame::Control { .. } | Frame::ControlAnswer { .. } => {
                unreachable!("handed over above")
            }
            Frame::Response { id, body } => {
                if let Some((_, reply)) = self.calls.remove(&id) {
                    self.pending.remove(&id);
                    let _ = reply.send(Ok(body));
                    return;
                }
                if self.pending.remove(&id).is_none() {
                    let counters = &self.parts.shared.metrics.counters;
                    return NodeMetrics::count(&counters.agent_responses_unmatched);
                }
                let outcome = Ok(message(body, None));
                self.with_behaviour(|behaviour, context| {
                    behaviour.response(context, RequestId(id), outcome)
                });
            }
        }
    }
}

impl AgentState {
    /// Serves, as a desk, an ask of agent `from` on another node; an agent
    /// that is not a desk takes no asks.
    fn serve(&mut self, from: String, client: u64, sequence: u64, ask: ControlAsk) {
        let counters = &self.parts.shared.metrics.counters;
        if self.name != desk_of(&self.parts.shared.node_id) {
            return NodeMetrics::count(&counters.agent_frames_malformed);
        }
        let ask = (from, client, sequence, ask);
        let node = self.parts.node();
        if control_ask::serve(node, &self.name, &self.myself, self.serving, ask) {
            self.serving += 1;
        }
    }

    /// Hands the behaviour the answer to one of its asks, if it waits.
    fn control_answered(&mut self, client: u64, sequence: u64, outcome: ControlOutcome) {
        let Some((ticket, outcome)) = self.asks.answered(client, sequence, outcome) else {
            let counters = &self.parts.shared.metrics.counters;
            return NodeMetrics::count(&counters.agent_responses_unmatched);
        };
        self.hand_control_answer(ticket, outcome);
    }

    fn control_timed_out(&mut self, sequence: u64) {
        let timeout_ms = self.parts.shared.config.control.request_timeout_ms;
        if let Some((ticket, outcome)) = self.asks.timed_out(sequence, timeout_ms) {
            self.hand_control_answer(ticket, outcome);
        }
    }

    /// Sends, as a desk, the answer to an ask it served.
    fn served(&mut self, to: &str, answer: (u64, u64, ControlOutcome)) {
        self.serving -= 1;
        control_ask::answer(self.parts.node(), &self.name, to, answer);
    }

    fn hand_control_answer(&mut self, ticket: ControlTicket, outcome: ControlOutcome) {
        self.with_behaviour(|behaviour, context| {
            behaviour.control_answer(context, ticket, outcome)
        });
    }
}

/// The seed of an agent's RNG: the cluster's seed and the agent's name.
pub(super) fn seed_of(cluster_seed: u64, name: &str) -> u64 {
    cluster_seed ^ crate::protocols::stable_hash(name)
}

/// Makes the behaviour of `config` and gives it the latest snapshot an
/// earlier incarnation left.
fn make_behaviour(
    parts: &AgentParts,
    config: &AgentConfig,
) -> Result<Box<dyn Behaviour>, ActorProcessingErr> {
    let shared = &parts.shared;
    if config.name == desk_of(&config.node) {
        // A call desk only asks on clients' behalf; what it is told it
        // takes, as a sink does.
        return Ok(Box::new(crate::agent_api::builtins::Sink));
    }
    let mut behaviour = parts
        .registry
        .make(config, &shared.config)
        .map_err(|error| format!("agent {}: {error}", config.name))?;
    let snapshot = parts
        .data_path
        .snapshots
        .get(&config.name)
        .map(|entry| entry.value().clone());
    if let Some(snapshot) = snapshot {
        behaviour.restore(&snapshot).map_err(|reason| {
            format!(
                "agent {}: cannot restore its snapshot: {reason}",
                config.name
            )
        })?;
    }
    Ok(behaviour)
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
        let behaviour = make_behaviour(&parts, &config)?;
        let (shared, data_path) = (&parts.shared, &parts.data_path);
        let stats = data_path.stats_of(&config.name);
        let records = config.behaviour == "sink" && config.name != desk_of(&config.node);
        let inbox_max = shared.config.limits.agent_inbox_max;
        data_path.publish_agent(&config.name, myself.clone(), inbox_max);
        let ticker = behaviour
            .tick_interval_ms()
            .map(|every| myself.send_interval(Duration::from_millis(every), || AgentMsg::Tick))
            .map(Ticker::new);
        let rng = ChaCha8Rng::seed_from_u64(seed_of(shared.config.seed, &config.name));
        let name = config.name;
        let mut state = AgentState {
            parts,
            name: name.clone(),
            behaviour,
            rng,
            stats,
            ticker,
            records,
            myself,
            // Each incarnation numbers its requests from a random point,
            // so a response meant for an earlier one matches nothing; below
            // 2^53, since a process agent's msg_id may be a JSON double.
            next_request: u64::from(rand::random::<u32>()) << 20,
            pending: HashMap::new(),
            timers: HashMap::new(),
            timer_settings: 0,
            calls: HashMap::new(),
            asks: ControlAsks::new(&name),
            serving: 0,
        };
        state.with_behaviour(|behaviour, context| behaviour.start(context));
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
                state.deliver(envelope);
            }
            AgentMsg::Tick => state.with_behaviour(|behaviour, context| behaviour.tick(context)),
            AgentMsg::Timer { tag, setting } => {
                // A timer replaced or cancelled after it fired is not due.
                if state.timers.get(&tag).map(|(current, _)| *current) == Some(setting) {
                    state.timers.remove(&tag);
                    state.with_behaviour(|behaviour, context| behaviour.timer(context, tag));
                }
            }
            AgentMsg::RequestTimedOut(id) => {
                let timeout_ms = state.pending.remove(&id);
                if let (Some(timeout_ms), Some((_, reply))) = (timeout_ms, state.calls.remove(&id))
                {
                    let _ = reply.send(Err(format!("no response within {timeout_ms} ms")));
                } else if let Some(timeout_ms) = timeout_ms {
                    let outcome = Err(RequestError::TimedOut { timeout_ms });
                    state.with_behaviour(|behaviour, context| {
                        behaviour.response(context, RequestId(id), outcome)
                    });
                }
            }
            AgentMsg::SendFailed { destination, error } => {
                if let SendError::NoRoute(_) = error {
                    // Refused before it left: every call to that agent is.
                    state.fail_calls_to(&destination, &error);
                }
                state.with_behaviour(|behaviour, context| {
                    behaviour.send_failed(context, &destination, &error)
                })
            }
            AgentMsg::Quiesce => state.ticker = None,
            // Only a process agent's process writes lines.
            AgentMsg::ProcessOutput { .. }
            | AgentMsg::ProcessExited(_)
            | AgentMsg::ProcessInitTimedOut
            | AgentMsg::ProcessPing => {}
            AgentMsg::Call {
                to,
                body,
                timeout_ms,
                reply,
            } => state.call(&to, body, timeout_ms, reply),
            AgentMsg::ControlAnswered {
                client,
                sequence,
                outcome,
            } => state.control_answered(client, sequence, outcome),
            AgentMsg::ControlTimedOut(sequence) => state.control_timed_out(sequence),
            AgentMsg::ControlServed {
                to,
                client,
                sequence,
                outcome,
            } => state.served(&to, (client, sequence, outcome)),
        }
        Ok(())
    }
}
