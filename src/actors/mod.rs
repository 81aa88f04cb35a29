//! Thin ractor shells around the pure protocols: I/O, timers, supervision.
//!
//! One node's actor tree and its data path:
//!
//! ```text
//! NodeSupervisor ──┬─ Transport ─ quinn endpoint, one connection per neighbour
//!                  ├─ Topology  ─ membership, the overlay, the routing view
//!                  ├─ Router    ─ the shell of protocols::mesh::MeshCore
//!                  ├─ RaftReplica ─ control-plane replica (nodes in [control] replicas)
//!                  ├─ PlacementPlanner ─ beside it; acts while it leads
//!                  ├─ PbftReplica ─ PBFT replica (nodes in [pbft] replicas)
//!                  └─ AgentSupervisor ─ Agent × n (behaviour chosen by name)
//!
//! agent ─router::send─▶ router ─MeshCore::send (sign, route)─▶ PeerTable queue ─▶ writer task ─QUIC─▶
//! reader task ─decode, pass transit on─▶ router ─MeshCore (verify, window)─▶ agent inbox
//! ```
//!
//! Each child owns its state. What must survive a child's restart is held
//! by the node supervisor ([`node::NodeParts`]) and handed to each
//! incarnation: the small core every actor shares
//! ([`shared::NodeShared`]: identity, directory, counters, the live links'
//! queues, every actor's mailbox), and what each actor keeps of its own
//! (the router's and agents' [`data_path::DataPath`], the topology's
//! [`overlay_state::OverlayState`], the PBFT replica's
//! [`pbft_replica::PbftMemory`], the Raft replica's
//! [`raft_replica::disk::ReplicaDisk`]). Actors speak to each other in the
//! types of [`messages`], which sits below them all, so no actor imports a
//! sibling's module to reach it.

pub mod agent;
pub mod agent_supervisor;
pub mod client_api;
pub mod control_ask;
pub mod data_path;
pub mod directory;
pub mod messages;
pub mod node;
pub mod overlay_state;
pub mod pbft_replica;
pub mod placement_planner;
pub mod process_agent;
pub mod raft_replica;
pub mod router;
pub mod shared;
pub mod supervisor;
pub mod topology;
pub mod transport;
