//! What an agent may ask the control plane (the Raft group's key-value
//! space) with [`Context::control`](super::Context::control), and what it
//! is answered. An ask never blocks the agent: its outcome comes later, in
//! [`Behaviour::control_answer`](super::Behaviour::control_answer), once.
//!
//! Every ask is linearizable: a read sees every write acknowledged before
//! it was asked, and a compare-and-set takes effect at most once, however
//! often it is carried again after a lost answer. The keys are the ones
//! `agentmesh kv` reads and writes.

use bincode::{Decode, Encode};

/// One question for the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ControlAsk {
    /// The value under `key`.
    Read {
        /// The key (at most `KEY_BYTES_MAX` bytes).
        key: String,
    },
    /// Writes `value` under `key`.
    Write {
        /// The key.
        key: String,
        /// The value (at most `VALUE_BYTES_MAX` bytes).
        value: Vec<u8>,
    },
    /// Writes `to` under `key` if it holds `from` now, or, with
    /// `create_if_missing`, if the key is not there.
    CompareAndSet {
        /// The key.
        key: String,
        /// What the key must hold.
        from: Vec<u8>,
        /// What it then holds.
        to: Vec<u8>,
        /// Whether a missing key counts as holding `from`.
        create_if_missing: bool,
    },
}

/// What the control plane answered an ask that it served.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ControlAnswer {
    /// A read's value.
    Value(Vec<u8>),
    /// The key is not there (a read, or a compare-and-set without
    /// `create_if_missing`); nothing changed.
    NotFound,
    /// The write or compare-and-set is committed.
    Written,
    /// The compare-and-set found something other than `from`; nothing
    /// changed.
    Mismatch,
}

/// Why an ask was not served. Only [`ControlError::Indeterminate`] may
/// leave a write done; the others changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum ControlError {
    /// Not now (no leader, the replica is busy or restarting, too many
    /// asks wait): nothing changed; ask again.
    #[error("the control plane cannot serve it now: {0}")]
    Unavailable(String),
    /// No answer in time, or the replica stopped while the ask was under
    /// way: a write may or may not have taken effect.
    #[error("no answer, and a write may have taken effect: {0}")]
    Indeterminate(String),
    /// The ask breaks a limit (a key or value too long).
    #[error("invalid ask: {0}")]
    Invalid(String),
}

/// Identifies one ask in its answer
/// ([`Behaviour::control_answer`](super::Behaviour::control_answer)).
/// Unique per agent incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControlTicket(pub u64);

/// What an ask's answer is: the answer, or why there is none.
pub type ControlOutcome = Result<ControlAnswer, ControlError>;

impl ControlAsk {
    /// The key it is about.
    pub fn key(&self) -> &str {
        match self {
            ControlAsk::Read { key }
            | ControlAsk::Write { key, .. }
            | ControlAsk::CompareAndSet { key, .. } => key,
        }
    }

    /// Whether it may change the state (and so whether a lost answer
    /// leaves its effect unknown).
    pub fn writes(&self) -> bool {
        !matches!(self, ControlAsk::Read { .. })
    }
}
