//! Thin ractor shells around the pure protocols: I/O, timers, supervision.
//!
//! One node's actor tree and its data path:
//!
//! ```text
//! NodeSupervisor ──┬─ Transport ─ quinn endpoint, one connection per neighbour
//!                  ├─ Topology  ─ membership, the overlay, the routing view
//!                  ├─ Router    ─ the shell of protocols::mesh::MeshCore
//!                  ├─ RaftReplica ─ control-plane replica (nodes in [control] replicas)
//!                  ├─ PbftReplica ─ PBFT replica (nodes in [pbft] replicas)
//!                  └─ AgentSupervisor ─ Agent × n (behaviour chosen by name)
//!
//! agent ─router::send─▶ router ─MeshCore::send (sign, route)─▶ PeerTable queue ─▶ writer task ─QUIC─▶
//! reader task ─decode, pass transit on─▶ router ─MeshCore (verify, window)─▶ agent inbox
//! ```
//!
//! State that must survive a child's restart (peer queues, the mesh core,
//! the agent directory, counters) lives in the node's
//! [`context::NodeContext`], which the supervisor owns and hands to every
//! incarnation of every child.

pub mod agent;
pub mod client_api;
pub mod context;
pub mod directory;
pub mod faulty_socket;
pub mod node;
pub mod pbft_replica;
pub mod raft_replica;
pub mod router;
pub mod supervisor;
pub mod topology;
pub mod transfer;
pub mod transport;
