//! The behaviour trait a user implements, and the [`Context`] each of its
//! calls is given: who the agent is, the time, a seeded RNG, and what it
//! may do (send, request, reply, set timers, ask the control plane). A
//! behaviour is plain logic: it never touches a clock, a socket or an
//! actor itself, so it can be driven by the agent actor on a node or by a
//! test directly.

use rand_chacha::ChaCha8Rng;

use crate::protocols::mesh::SendError;

use super::control::{ControlAsk, ControlError, ControlOutcome, ControlTicket};
use super::frame::Frame;

/// Identifies one request an agent sent, in its [`Behaviour::response`].
/// Unique per agent incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why a request got no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No response within the timeout the request was sent with: it may
    /// have been lost, refused on its way, or answered too late.
    #[error("no response within {timeout_ms} ms")]
    TimedOut {
        /// The timeout the request was sent with.
        timeout_ms: u64,
    },
}

/// Why a timer was not set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{max} timers are set already")]
pub struct TimerError {
    /// Timers one agent may have set at once.
    pub max: usize,
}

/// Why a message meant for several agents (a topic's subscribers, or the
/// agents of a prefix) did not go to all of them. Those not named took it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} of {} refused it; the first, {}: {}", refused.len(), accepted + refused.len(), refused[0].0, refused[0].1)]
pub struct FanOutError {
    /// How many took it.
    pub accepted: usize,
    /// Each agent that did not, and why (never empty).
    pub refused: Vec<(String, SendError)>,
}

/// A message handed to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The agent that sent it.
    pub from: String,
    /// What it carries.
    pub body: Vec<u8>,
    /// Set when the sender awaits a response ([`Context::reply`] sends it).
    pub request: Option<RequestId>,
    /// True when the sender sent it with [`Context::reply`]: an answer,
    /// which a behaviour should not answer again (two echoes would
    /// otherwise answer each other for ever).
    pub answer: bool,
    /// The sender's wall clock when it was sent, in microseconds since the
    /// Unix epoch.
    pub sent_at_micros: u64,
    /// The topic it was published on, when it came through one
    /// ([`Context::publish`]).
    pub topic: Option<String>,
}

/// What a behaviour's context does on its behalf. The agent actor
/// implements it over the mesh and its timers; a test may implement it to
/// record what a behaviour does.
pub trait Effects {
    /// Sends `frame` to agent `to`; `answer` says whether it answers the
    /// destination (it then travels as a reply envelope). A
    /// [`Frame::Request`] comes with its `timeout_ms`: unless its response
    /// comes first, [`Behaviour::response`] is then told it timed out.
    fn send(
        &mut self,
        to: &str,
        frame: Frame,
        answer: bool,
        timeout_ms: Option<u64>,
    ) -> Result<(), SendError>;
    /// Calls [`Behaviour::timer`] with `tag` after `delay_ms`, replacing a
    /// timer of the same tag.
    fn set_timer(&mut self, tag: u64, delay_ms: u64) -> Result<(), TimerError>;
    /// Forgets the timer of `tag`, if one is set.
    fn cancel_timer(&mut self, tag: u64);
    /// The subscribers of `topic`, sorted (the default knows none).
    fn subscribers(&self, _topic: &str) -> Vec<String> {
        Vec::new()
    }
    /// The agents whose names start with `prefix`, sorted (the default
    /// knows none).
    fn agents_with_prefix(&self, _prefix: &str) -> Vec<String> {
        Vec::new()
    }
    /// Carries `ask` to the control plane; [`Behaviour::control_answer`]
    /// is then called once with the ticket's number and its outcome. The
    /// default reaches no control plane.
    fn control(&mut self, _ask: ControlAsk) -> Result<u64, ControlError> {
        Err(ControlError::Unavailable(
            "this context reaches no control plane".into(),
        ))
    }
}

/// What a behaviour may see and do during one call.
pub struct Context<'a> {
    pub(crate) name: &'a str,
    pub(crate) node: &'a str,
    pub(crate) now_micros: u64,
    pub(crate) rng: &'a mut ChaCha8Rng,
    pub(crate) effects: &'a mut dyn Effects,
    pub(crate) next_request: &'a mut u64,
}

impl<'a> Context<'a> {
    /// A context over `effects`, for driving a behaviour outside a node
    /// (tests, simulations). `next_request` numbers the requests sent; keep
    /// it across calls.
    pub fn new(
        name: &'a str,
        node: &'a str,
        now_micros: u64,
        rng: &'a mut ChaCha8Rng,
        effects: &'a mut dyn Effects,
        next_request: &'a mut u64,
    ) -> Context<'a> {
        Context {
            name,
            node,
            now_micros,
            rng,
            effects,
            next_request,
        }
    }

    /// This agent's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The node this agent runs on.
    pub fn node(&self) -> &str {
        self.node
    }

    /// Wall-clock microseconds since the Unix epoch, as of this call.
    pub fn now_micros(&self) -> u64 {
        self.now_micros
    }

    /// The agent's RNG, seeded from the cluster seed and its name.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }

    /// Sends `body` to agent `to`, expecting no answer. `Ok` means the node
    /// took it: the mesh delivers it exactly once unless it fails, which
    /// [`Behaviour::send_failed`] is told.
    pub fn send(&mut self, to: &str, body: Vec<u8>) -> Result<(), SendError> {
        self.effects.send(to, Frame::Tell(body), false, None)
    }

    /// Sends `body` to agent `to` as a request: [`Behaviour::response`] is
    /// called once with its response, or with [`RequestError::TimedOut`]
    /// after `timeout_ms`. Refused with [`SendError::InFlightFull`] when
    /// the agent has too many requests awaiting responses.
    pub fn request(
        &mut self,
        to: &str,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<RequestId, SendError> {
        *self.next_request += 1;
        let id = RequestId(*self.next_request);
        let frame = Frame::Request { id: id.0, body };
        self.effects.send(to, frame, false, Some(timeout_ms))?;
        Ok(id)
    }

    /// Answers `message`: with a response to its request if it is one,
    /// otherwise with a plain message back to its sender.
    pub fn reply(&mut self, message: &Message, body: Vec<u8>) -> Result<(), SendError> {
        let frame = match message.request {
            Some(id) => Frame::Response { id: id.0, body },
            None => Frame::Tell(body),
        };
        self.effects.send(&message.from, frame, true, None)
    }

    /// Publishes `body` on `topic`: each of the topic's subscribers (as
    /// the config's `subscribe` lists them, the same on every node) gets
    /// it once, as reliably as a message sent to it with
    /// [`Context::send`], with [`Message::topic`] set. Returns how many
    /// subscribers took it (0 for a topic nobody subscribes to).
    pub fn publish(&mut self, topic: &str, body: Vec<u8>) -> Result<usize, FanOutError> {
        let subscribers = self.effects.subscribers(topic);
        self.fan_out(
            subscribers,
            |body| Frame::Publish {
                topic: topic.to_string(),
                body,
            },
            body,
        )
    }

    /// Sends `body` to every agent whose name starts with `prefix` (a
    /// group such as `worker-`), other than this one. Returns how many
    /// took it.
    pub fn send_to_prefix(&mut self, prefix: &str, body: Vec<u8>) -> Result<usize, FanOutError> {
        let mut agents = self.effects.agents_with_prefix(prefix);
        agents.retain(|agent| agent != self.name);
        self.fan_out(agents, Frame::Tell, body)
    }

    /// The subscribers of `topic`, sorted.
    pub fn subscribers(&self, topic: &str) -> Vec<String> {
        self.effects.subscribers(topic)
    }

    /// The agents whose names start with `prefix`, sorted (this one too,
    /// if its name does).
    pub fn agents_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.effects.agents_with_prefix(prefix)
    }

    fn fan_out(
        &mut self,
        agents: Vec<String>,
        frame: impl Fn(Vec<u8>) -> Frame,
        body: Vec<u8>,
    ) -> Result<usize, FanOutError> {
        let mut accepted = 0;
        let mut refused = Vec::new();
        for agent in agents {
            match self.effects.send(&agent, frame(body.clone()), false, None) {
                Ok(()) => accepted += 1,
                Err(error) => refused.push((agent, error)),
            }
        }
        match refused.is_empty() {
            true => Ok(accepted),
            false => Err(FanOutError { accepted, refused }),
        }
    }

    /// Asks the control plane (the Raft group's key-value space, the one
    /// `agentmesh kv` uses) without waiting: [`Behaviour::control_answer`]
    /// is called once with the returned ticket and the answer, or why
    /// there is none. Refused at once, changing nothing, when the ask is
    /// invalid or the agent has too many asks waiting.
    pub fn control(&mut self, ask: ControlAsk) -> Result<ControlTicket, ControlError> {
        self.effects.control(ask).map(ControlTicket)
    }

    /// Calls [`Behaviour::timer`] with `tag` after `delay_ms` (replacing a
    /// timer already set with that tag). Refused when the agent has too
    /// many timers set.
    pub fn set_timer(&mut self, tag: u64, delay_ms: u64) -> Result<(), TimerError> {
        self.effects.set_timer(tag, delay_ms)
    }

    /// Forgets the timer of `tag`, if one is set.
    pub fn cancel_timer(&mut self, tag: u64) {
        self.effects.cancel_timer(tag);
    }
}

/// An agent's logic. Every method but [`Behaviour::message`] has a default
/// that does nothing. Calls come one at a time, in the agent's own actor:
/// a behaviour needs no locks.
pub trait Behaviour: Send + 'static {
    /// Milliseconds between calls to [`Behaviour::tick`], or None for a
    /// behaviour that only reacts (the default). Asked once, at start.
    fn tick_interval_ms(&self) -> Option<u64> {
        None
    }

    /// The agent started (first, or again after a restart: then
    /// [`Behaviour::restore`] came first).
    fn start(&mut self, _context: &mut Context<'_>) {}

    /// A message for this agent. Once this returns, the message counts as
    /// consumed: it is acknowledged to its sender's node and never handed
    /// over again.
    fn message(&mut self, context: &mut Context<'_>, message: Message);

    /// The outcome of a request this agent sent, exactly once per request.
    fn response(
        &mut self,
        _context: &mut Context<'_>,
        _request: RequestId,
        _outcome: Result<Message, RequestError>,
    ) {
    }

    /// The outcome of an ask of the control plane
    /// ([`Context::control`]), exactly once per ask.
    fn control_answer(
        &mut self,
        _context: &mut Context<'_>,
        _ticket: ControlTicket,
        _outcome: ControlOutcome,
    ) {
    }

    /// The periodic tick (see [`Behaviour::tick_interval_ms`]).
    fn tick(&mut self, _context: &mut Context<'_>) {}

    /// A timer set with [`Context::set_timer`] is due.
    fn timer(&mut self, _context: &mut Context<'_>, _tag: u64) {}

    /// A message this agent sent failed: it was refused on its way or its
    /// retries ran out. Not called for messages refused at the send itself
    /// (that `send` returned the error).
    fn send_failed(&mut self, _context: &mut Context<'_>, _destination: &str, _error: &SendError) {}

    /// The state to keep if the agent is killed or restarted, asked after
    /// every call. Return Some only when the state changed since the last
    /// snapshot (the default keeps nothing).
    fn snapshot(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Takes back the state of the agent's latest snapshot, before
    /// [`Behaviour::start`], when an earlier incarnation left one. An
    /// `Err` fails the start (the supervisor counts it and tries again).
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), String> {
        Ok(())
    }
}
