//! The wire: what crosses a QUIC stream between two nodes.
//!
//! - [`limits`]: every size bound on the wire, checked at compile time where
//!   bounds relate to each other.
//! - [`envelope`]: the end-to-end signed unit a router carries.
//! - [`codec`]: the only place that knows the byte encoding (bincode 2.0.1),
//!   so it can change without touching callers.
//! - [`pair_key`]: the secret two nodes share, for acknowledgement MACs.
//! - [`duplicate_window`]: drops replays per origin with a sliding bitmap.
//! - [`transfer`]: snapshots on streams of their own, several at once.

pub mod codec;
pub mod duplicate_window;
pub mod envelope;
pub mod limits;
pub mod pair_key;
pub mod transfer;

pub use codec::{
    decode_frame, encode_frame, encode_raft_message, DecodeError, Frame, Heartbeat, RaftAssembler,
    RaftPart, StreamHeader, TrafficClass,
};
pub use duplicate_window::{Admission, DuplicateWindow};
pub use envelope::{
    Authentication, Authenticator, Destination, Envelope, EnvelopeKind, SignedFields, VerifyError,
};
