//! The data path, sans-I/O: what one node decides about the envelopes it
//! originates, passes on and receives.
//!
//! - [`core`]: [`MeshCore`], the reliable, end-to-end signed delivery of
//!   one node (numbering, signing, routing, the duplicate window,
//!   acknowledgements, retransmission, admission), driven by inputs and
//!   drained through `poll_*` outputs.
//! - [`route`]: the path an origin gives an envelope and the hop a transit
//!   node passes it on to; pure functions the connection readers call too.
//! - [`topology`]: [`TopologyCore`], membership, the overlay and the
//!   routing view of one node, with the committed overlay when a control
//!   plane holds it.
//! - [`view`]: the overlay and link weights routed by.
//! - [`roster`]: the cluster's nodes, keys and agents.
//! - [`counters`]: what the core counts, by the node metrics' names.
//!
//! The router and topology actors are the shells that do the I/O
//! (`actors::router`, `actors::topology`);
//! `sim::mesh` drives many cores over a seeded virtual network.

pub mod core;
pub mod counters;
pub mod roster;
pub mod route;
pub mod send_error;
pub mod topology;
pub mod view;

pub use self::core::{Delivery, Event, MeshConfig, MeshCore, Message, Now, Paths, Transmit};
pub use counters::MeshCounters;
pub use roster::Roster;
pub use send_error::SendError;
pub use topology::{ControlFrame, OverlayCommit, TopologyCore, TopologyEvent};
pub use view::{LinkWeights, OverlayFrame, RoutingView};
