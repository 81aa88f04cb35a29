//! Clients of the cluster's two replicated services: the Raft control
//! plane's key-value and membership API (`control`), and the PBFT group
//! (`pbft`, in process).

pub mod control;
pub mod pbft;
