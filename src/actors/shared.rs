//! The small core of one node that its actors share and that outlives
//! their restarts: who the node is (config, id, incarnation, key,
//! certificate, endpoint), what it knows of the cluster (the directory),
//! its counters, its live links, and every actor's mailbox. What an actor
//! keeps across its own restarts is its own (see [`super::data_path`],
//! [`super::overlay_state`], and the replicas' modules); the node
//! supervisor holds it and hands it to each incarnation.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use ed25519_dalek::SigningKey;
use ractor::ActorRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ClusterConfig;
use crate::metrics::NodeMetrics;
use crate::net::peers::PeerTable;
use crate::net::tls::NodeCertificate;
use crate::protocols::mesh::SendError;

use super::directory::Directory;
use super::messages::{
    AgentSupervisorMsg, NodeMsg, PbftMsg, PlannerMsg, RaftMsg, RouterMsg, TopologyMsg, TransportMsg,
};

/// A reference to the current incarnation of a sibling actor.
pub struct Slot<M> {
    current: RwLock<Option<ActorRef<M>>>,
}

impl<M> Default for Slot<M> {
    fn default() -> Slot<M> {
        Slot {
            current: RwLock::new(None),
        }
    }
}

impl<M> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.current
            .read()
            .expect("slot lock is never poisoned")
            .clone()
    }

    pub fn set(&self, actor: Option<ActorRef<M>>) {
        *self.current.write().expect("slot lock is never poisoned") = actor;
    }
}

/// A periodic message to an actor (from `send_interval`), stopped when
/// dropped — so it ends with the state of the actor that owns it, however
/// the actor ends.
pub struct Ticker(tokio::task::AbortHandle);

impl Ticker {
    pub fn new<T>(handle: ractor::concurrency::JoinHandle<T>) -> Ticker {
        Ticker(handle.abort_handle())
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every actor's mailbox on this node: the current incarnation of each,
/// and the bounds on what peers' frames may queue for those that take
/// them (a full queue drops the frame and counts it, or, for the router,
/// pushes back on the peer).
pub struct Mailboxes {
    pub node: Slot<NodeMsg>,
    pub router: Slot<RouterMsg>,
    pub transport: Slot<TransportMsg>,
    pub topology: Slot<TopologyMsg>,
    /// The control-plane replica, on nodes that hold one.
    pub replica: Slot<RaftMsg>,
    /// The PBFT replica, on nodes that hold one.
    pub pbft: Slot<PbftMsg>,
    /// The placement planner, on nodes that hold a control-plane replica.
    pub planner: Slot<PlannerMsg>,
    /// The agent supervisor, once the node starts its agents.
    pub agents: Slot<AgentSupervisorMsg>,
    /// Bounds the router's mailbox: one permit per queued message.
    pub router_queue: Arc<Semaphore>,
    /// Bounds the topology actor's mailbox of frames from peers.
    pub control_queue: Arc<Semaphore>,
    /// Bounds the control-plane replica's mailbox of messages from peers.
    pub raft_queue: Arc<Semaphore>,
    /// Bounds the PBFT replica's mailbox of packets from peers.
    pub pbft_queue: Arc<Semaphore>,
}

impl Mailboxes {
    /// No actor yet, and queues of the given bounds.
    pub fn new(
        router_queue_max: usize,
        control_queue_max: usize,
        raft_queue_max: usize,
        pbft_queue_max: usize,
    ) -> Mailboxes {
        Mailboxes {
            node: Slot::default(),
            router: Slot::default(),
            transport: Slot::default(),
            topology: Slot::default(),
            replica: Slot::default(),
            pbft: Slot::default(),
            planner: Slot::default(),
            agents: Slot::default(),
            router_queue: Arc::new(Semaphore::new(router_queue_max)),
            control_queue: Arc::new(Semaphore::new(control_queue_max)),
            raft_queue: Arc::new(Semaphore::new(raft_queue_max)),
            pbft_queue: Arc::new(Semaphore::new(pbft_queue_max)),
        }
    }
}

/// What one node's actors share.
pub struct NodeShared {
    pub config: Arc<ClusterConfig>,
    pub node_id: String,
    /// This life of the node: its boot time in unix microseconds.
    pub incarnation: u64,
    /// Names, wire indices, keys and addresses of every node, which node
    /// hosts each agent, and the base overlay.
    pub directory: Arc<Directory>,
    pub key: SigningKey,
    pub certificate: NodeCertificate,
    pub endpoint: quinn::Endpoint,
    /// Bounds this node's dials that are still handshaking; nodes sharing
    /// a process may share one, since they share its CPU.
    pub handshakes: Arc<Semaphore>,
    /// Set when the node shuts down for good: connections then close
    /// telling peers it is leaving.
    pub leaving: AtomicBool,
    pub metrics: Arc<NodeMetrics>,
    pub peers: PeerTable,
    pub mailboxes: Mailboxes,
}

impl NodeShared {
    /// Takes a router queue slot without waiting.
    pub fn try_reserve_router(&self) -> Result<OwnedSemaphorePermit, SendError> {
        self.mailboxes
            .router_queue
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                NodeMetrics::count(&self.metrics.counters.refused_router_busy);
                SendError::RouterBusy
            })
    }
}
