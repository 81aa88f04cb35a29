//! The typed answer a sender gets when its message is refused or lost.

/// Why a message was not accepted for sending. The caller always gets one
/// of these back, and a counter moves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The router's queue is full; try again later.
    #[error("router queue full")]
    RouterBusy,
    /// The sending agent is past its rate limit (delivery.source_rate_max).
    #[error("agent {0} is past its rate limit")]
    RateLimited(String),
    /// Too many messages await acknowledgement (to this destination node,
    /// or in all); try again when some are acknowledged.
    #[error("too many unacknowledged messages to node {0}")]
    InFlightFull(String),
    /// The message was retransmitted delivery.retries_max times and never
    /// acknowledged.
    #[error("no acknowledgement from node {0} after every retry")]
    RetriesExhausted(String),
    /// No agent of that name is known.
    #[error("no route to agent {0}")]
    NoRoute(String),
    /// The connection's send queue to a node is full.
    #[error("send queue to node {0} is full")]
    QueueFull(String),
    /// There is no live connection to a node.
    #[error("no connection to node {0}")]
    PeerDown(String),
    /// The payload is larger than limits.payload_bytes_max.
    #[error("payload of {bytes} bytes exceeds {max}")]
    PayloadTooLarge { bytes: usize, max: usize },
}
