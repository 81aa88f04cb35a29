//! What one node's actors share: identity, peers' keys and addresses, the
//! live connection table, the agent directory, the router's memory and the
//! metrics. The node supervisor creates it once; restarts reuse it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use ed25519_dalek::{SigningKey, VerifyingKey};
use ractor::ActorRef;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::config::ClusterConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::wire::{DuplicateWindow, TrafficClass};

use super::agent::{AgentMsg, AgentStats};
use super::node::NodeMsg;
use super::router::RouterMsg;
use super::transport::TransportMsg;

/// Why a message was not accepted for sending. The caller always gets one
/// of these back, and a counter moves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The router's queue is full; try again later.
    #[error("router queue full")]
    RouterBusy,
    /// The connection's send queue to the destination node is full.
    #[error("send queue to node {0} is full")]
    QueueFull(String),
    /// There is no live connection to the destination node.
    #[error("no connection to node {0}")]
    PeerDown(String),
    /// No agent of that name is known.
    #[error("no route to agent {0}")]
    NoRoute(String),
    /// The payload is larger than limits.payload_bytes_max.
    #[error("payload of {bytes} bytes exceeds {max}")]
    PayloadTooLarge { bytes: usize, max: usize },
}

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

/// One frame queued for a peer: its class and its encoded bytes.
pub type OutboundFrame = (TrafficClass, Bytes);

/// The sending side of one live connection.
#[derive(Clone)]
pub struct PeerLink {
    /// Distinguishes this connection from an earlier or later one to the
    /// same peer, so a closing connection never unregisters its successor.
    pub connection_id: usize,
    pub queue: mpsc::Sender<OutboundFrame>,
}

/// Live connections by peer node id.
#[derive(Default)]
pub struct PeerTable {
    links: DashMap<String, PeerLink>,
}

impl PeerTable {
    /// Queues a frame for `peer` without waiting.
    pub fn try_send(&self, peer: &str, frame: OutboundFrame) -> Result<(), SendError> {
        let queue = match self.links.get(peer) {
            Some(link) => link.queue.clone(),
            None => return Err(SendError::PeerDown(peer.to_string())),
        };
        queue.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_string()),
            mpsc::error::TrySendError::Closed(_) => SendError::PeerDown(peer.to_string()),
        })
    }

    pub fn insert(&self, peer: &str, link: PeerLink) {
        self.links.insert(peer.to_string(), link);
    }

    /// Removes `peer`'s link only if it is still `connection_id`.
    pub fn remove_if_current(&self, peer: &str, connection_id: usize) {
        self.links
            .remove_if(peer, |_, link| link.connection_id == connection_id);
    }

    pub fn is_connected(&self, peer: &str) -> bool {
        self.links
            .get(peer)
            .is_some_and(|link| !link.queue.is_closed())
    }

    pub fn connected(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.links.iter().map(|entry| entry.key().clone()).collect();
        peers.sort();
        peers
    }
}

/// A running agent as the router sees it.
#[derive(Clone)]
pub struct AgentHandle {
    pub actor: ActorRef<AgentMsg>,
    /// One permit per delivery waiting in the agent's mailbox.
    pub inbox: Arc<Semaphore>,
}

/// What the router remembers across its own restarts.
pub struct RouterMemory {
    /// Next sequence number this node stamps on an envelope.
    pub next_sequence: u64,
    pub windows: HashMap<String, DuplicateWindow>,
}

pub struct NodeContext {
    pub config: Arc<ClusterConfig>,
    pub node_id: String,
    pub key: SigningKey,
    /// Every node's key, this one's included.
    pub node_keys: HashMap<String, VerifyingKey>,
    /// Where every node listens, this one's included.
    pub node_addresses: HashMap<String, SocketAddr>,
    /// Which node hosts each agent.
    pub agent_nodes: HashMap<String, String>,
    pub metrics: Arc<NodeMetrics>,
    pub peers: PeerTable,
    pub agents: DashMap<String, AgentHandle>,
    pub agent_stats: DashMap<String, Arc<AgentStats>>,
    /// The neighbours the topology chose; the transport connects to these.
    pub neighbours: RwLock<Vec<String>>,
    pub node: Slot<NodeMsg>,
    pub router: Slot<RouterMsg>,
    pub transport: Slot<TransportMsg>,
    /// Bounds the router's mailbox: one permit per queued message.
    pub router_queue: Arc<Semaphore>,
    pub router_memory: Mutex<RouterMemory>,
    pub endpoint: quinn::Endpoint,
    pub certificate: crate::tls::NodeCertificate,
    /// Every node's key by id, as the TLS verifiers check them.
    pub pinned: crate::tls::PinnedKeys,
}

impl NodeContext {
    /// Takes a router queue slot without waiting.
    pub fn try_reserve_router(&self) -> Result<OwnedSemaphorePermit, SendError> {
        self.router_queue.clone().try_acquire_owned().map_err(|_| {
            NodeMetrics::count(&self.metrics.counters.refused_router_busy);
            SendError::RouterBusy
        })
    }

    pub fn stats_of(&self, agent: &str) -> Arc<AgentStats> {
        self.agent_stats
            .entry(agent.to_string())
            .or_default()
            .clone()
    }
}

/// Wall-clock microseconds since the Unix epoch (for envelope timestamps,
/// which are compared across nodes).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
