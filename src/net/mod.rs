//! The network below the actors: QUIC endpoints' configuration and the
//! framing of a link's streams, mutual TLS with pinned Ed25519 keys, the
//! table of live links and their bounded send queues, snapshot transfers
//! on streams of their own, and the fault-injecting socket. Nothing here
//! knows an actor: the transport actor (`actors::transport`) accepts and
//! dials, and decides where each frame read goes.

pub mod faulty_socket;
pub mod peers;
pub mod quic;
pub mod tls;
pub mod transfer;
