//! Writing agents: the API a user's agent is written against, the same one
//! the built-in `echo`, `sink` and `storm` use.
//!
//! An agent's logic is a [`Behaviour`]: the node calls it with each
//! [`Message`] for the agent, with its ticks and timers, with the outcome
//! of each request it sent, and asks it for a snapshot of its state after
//! every call. Each call gets a [`Context`] to send, request, reply and set
//! timers, and to ask the control plane's key-value space
//! ([`Context::control`], answered in [`Behaviour::control_answer`]). A
//! [`Registry`] maps behaviour names to factories; the config
//! picks one per agent (`behaviour = "..."`) and gives it parameters
//! (`[agents.params]`, read with [`Params::parse`]).
//!
//! ```no_run
//! use agentmesh::agent_api::{Behaviour, Context, Message, Registry};
//!
//! /// Counts what it is told and answers with the count.
//! #[derive(Default)]
//! struct Counter {
//!     count: u64,
//! }
//!
//! impl Behaviour for Counter {
//!     fn message(&mut self, context: &mut Context<'_>, message: Message) {
//!         self.count += 1;
//!         let _ = context.reply(&message, self.count.to_be_bytes().to_vec());
//!     }
//! }
//!
//! let mut registry = Registry::with_builtins();
//! registry.register("counter", |_spec| Ok(Box::new(Counter::default())));
//! ```
//!
//! `examples/` has whole programs: a node binary with its own behaviour,
//! and agents asking each other with timeouts.
#![warn(missing_docs)]

pub mod behaviour;
pub mod builtins;
pub mod control;
pub mod frame;
pub mod maelstrom;
pub mod registry;

pub use crate::config::{ParamError, Params};
pub use crate::protocols::mesh::SendError;
pub use behaviour::{
    Behaviour, Context, Effects, FanOutError, Message, RequestError, RequestId, TimerError,
};
pub use control::{ControlAnswer, ControlAsk, ControlError, ControlOutcome, ControlTicket};
pub use registry::{AgentSpec, Factory, MakeError, Registry};
