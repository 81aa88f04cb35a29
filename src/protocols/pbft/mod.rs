//! PBFT (Castro and Liskov, OSDI 1999) as a sans-I/O core: a [`Replica`]
//! takes client requests, replica messages and ticks, and leaves what it
//! must send and answer in [`Outputs`]. It does no I/O, keeps no clock and
//! draws no random numbers; signing and checking go through [`Keys`].
//!
//! - Normal case: the primary of view v (replica v mod n) orders a batch
//!   at a sequence number with a pre-prepare; backups accept it and send a
//!   prepare; a replica with the pre-prepare and 2f matching prepares has
//!   prepared it and sends a commit; with 2f + 1 matching commits it has
//!   committed it, and executes batches in sequence order.
//! - Batching: the primary keeps at most `inflight_batches_max` batches
//!   ordered but not executed; requests arriving meanwhile wait and go out
//!   together. With `batch_fixed` unset the batch size adapts: it doubles
//!   while full batches leave requests waiting and halves when batches go
//!   out less than half full, from 1 to `batch_max`.
//! - Checkpoints every `checkpoint_interval` sequence numbers; 2f + 1
//!   matching ones make it stable, which moves the low watermark (sequence
//!   numbers are accepted up to `window` above it) and drops the log below.
//!   A replica that sees a stable checkpoint above what it executed
//!   fetches the state and checks it against the certified digest.
//! - View change: a replica that knows of a request not executed within
//!   `request_timeout_ticks` (the primary too) moves to the next view,
//!   sending its stable checkpoint's proof and its prepared certificates;
//!   f + 1 view changes for higher views make a replica join. Once 2f + 1
//!   replicas move to its target or beyond, a view change whose new view
//!   does not come in time moves on (waiting twice as long for each
//!   further view, up to 8 timeouts). The new primary, with 2f + 1 view
//!   changes, sends a new view carrying them and the pre-prepares they
//!   determine (null batches in the gaps); every replica checks it by
//!   computing the same pre-prepares.
//! - Lost messages: every `retransmit_ticks` a replica sends again its own
//!   messages for what it has not executed, its checkpoint vote, and its
//!   view change; a replica that hears from one in an older view sends it
//!   the new view that started its own.
//! - Clients: a request is executed once per client timestamp; a retry of
//!   the latest is answered again. A client accepts a result once f + 1
//!   replicas give the same one.

pub mod byzantine;
pub mod keys;
pub mod machine;
pub mod messages;
mod replica;
mod view_change;

pub use byzantine::Behaviour;
pub use machine::{Executed, Machine};
pub use messages::{
    Body, ClientKey, Digest, Keys, MessageError, Operation, OperationResult, PreparedProof,
    ReplicaId, Request, Signed, Signer,
};
pub use replica::{Counters, Outgoing, Outputs, Replica, Reply, Target};

/// How a PBFT group is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbftConfig {
    /// Replicas in the group: n ≥ 3f + 1.
    pub replicas: u32,
    /// A checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// How far above the low watermark a sequence number may be.
    pub window: u64,
    /// The adaptive batch size's ceiling.
    pub batch_max: usize,
    /// A fixed batch size instead of the adaptive one.
    pub batch_fixed: Option<usize>,
    /// Batches the primary orders before the first of them is executed.
    pub inflight_batches_max: u64,
    /// Requests a replica holds waiting, at most.
    pub pending_max: usize,
    pub request_timeout_ticks: u64,
    pub retransmit_ticks: u64,
}

impl PbftConfig {
    /// Castro and Liskov's checkpoint interval and window, for `replicas`.
    pub fn new(replicas: u32) -> PbftConfig {
        PbftConfig {
            replicas,
            checkpoint_interval: 128,
            window: 256,
            batch_max: 256,
            batch_fixed: None,
            inflight_batches_max: 1,
            pending_max: 16_384,
            request_timeout_ticks: 50,
            retransmit_ticks: 20,
        }
    }

    /// The faults tolerated: f = (n - 1) / 3.
    pub fn faults(&self) -> u32 {
        (self.replicas.saturating_sub(1)) / 3
    }

    /// 2f + 1.
    pub fn quorum(&self) -> usize {
        2 * self.faults() as usize + 1
    }

    pub fn primary_of(&self, view: u64) -> ReplicaId {
        (view % u64::from(self.replicas)) as ReplicaId
    }

    pub fn check(&self) -> Result<(), String> {
        if self.replicas < 4 {
            return Err(format!(
                "{} replicas; PBFT needs at least 4 (3f + 1 with f = 1)",
                self.replicas
            ));
        }
        if self.checkpoint_interval == 0 || self.window < self.checkpoint_interval {
            return Err(format!(
                "window {} must be at least the checkpoint interval {} (and that above 0)",
                self.window, self.checkpoint_interval
            ));
        }
        let batch = self.batch_fixed.unwrap_or(self.batch_max);
        if batch == 0 || batch > messages::BATCH_REQUESTS_MAX {
            return Err(format!(
                "batch of {batch}; give 1 to {}",
                messages::BATCH_REQUESTS_MAX
            ));
        }
        if self.inflight_batches_max == 0 || self.inflight_batches_max > self.window {
            return Err(format!(
                "inflight_batches_max {} must be from 1 to the window",
                self.inflight_batches_max
            ));
        }
        Ok(())
    }
}
