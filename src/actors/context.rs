//! What one node's actors share: identity, peers' keys and addresses, the
//! live connection table, the agent directory, the mesh core's state (the
//! router's, kept across its restarts), agents' reports to the router and
//! the metrics. The node supervisor creates it once; restarts reuse it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use ed25519_dalek::SigningKey;
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::ClusterConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::delivery::TokenBucket;
use crate::protocols::mesh::MeshCore;
pub use crate::protocols::mesh::{
    LinkWeights, OverlayCommit, OverlayFrame, RoutingView, SendError,
};
use crate::protocols::wire::TrafficClass;

use super::agent::{AgentMsg, AgentStats};
use super::node::NodeMsg;
use super::raft_replica::{RaftMsg, ReplicaDisk};
use super::router::RouterMsg;
use super::topology::TopologyMsg;
use super::transport::TransportMsg;

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
pub struct Ticker(ractor::concurrency::JoinHandle<()>);

impl Ticker {
    pub fn new(handle: ractor::concurrency::JoinHandle<()>) -> Ticker {
        Ticker(handle)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
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
    /// For streams of their own (snapshot transfers).
    pub connection: quinn::Connection,
    pub queue: mpsc::Sender<OutboundFrame>,
    /// Heartbeats and membership frames, written before anything waiting
    /// in `queue`: a backlog of data must not make this node look dead.
    pub control: mpsc::Sender<OutboundFrame>,
    pub activity: Arc<LinkActivity>,
}

/// When a link last carried traffic each way, in monotonic microseconds
/// (0: never). The topology actor counts any frame received as a sign of
/// life, and heartbeats only links that carried no traffic lately.
#[derive(Default)]
pub struct LinkActivity {
    pub sent_micros: AtomicU64,
    pub received_micros: AtomicU64,
}

impl LinkActivity {
    pub fn sent_now(&self) {
        self.sent_micros
            .store(monotonic_micros(), Ordering::Relaxed);
    }

    pub fn received_now(&self) {
        self.received_micros
            .store(monotonic_micros(), Ordering::Relaxed);
    }
}

/// Live connections by peer node id.
#[derive(Default)]
pub struct PeerTable {
    links: DashMap<String, PeerLink>,
}

impl PeerTable {
    /// Queues a frame of traffic for `peer` without waiting; it tells the
    /// peer this node is alive, so the link needs no heartbeat for a while.
    pub fn try_send(&self, peer: &str, frame: OutboundFrame) -> Result<(), SendError> {
        self.queue(peer, frame, true)
    }

    /// Queues a heartbeat or membership frame for `peer` without waiting,
    /// on the link's control queue, which is written first; unlike
    /// [`PeerTable::try_send`], it does not count as traffic.
    pub fn try_send_control(&self, peer: &str, frame: OutboundFrame) -> Result<(), SendError> {
        self.queue(peer, frame, false)
    }

    /// Never waits, so holding the table's read guard meanwhile is fine.
    fn queue(&self, peer: &str, frame: OutboundFrame, traffic: bool) -> Result<(), SendError> {
        let link = self
            .links
            .get(peer)
            .ok_or_else(|| SendError::PeerDown(peer.to_string()))?;
        let queue = if traffic { &link.queue } else { &link.control };
        queue.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_string()),
            mpsc::error::TrySendError::Closed(_) => SendError::PeerDown(peer.to_string()),
        })?;
        if traffic {
            link.activity.sent_now();
        }
        Ok(())
    }

    /// Queues `frames` for `peer` all or none, without waiting: the parts
    /// of one message must not be cut short by a full queue.
    pub fn try_send_all(&self, peer: &str, frames: Vec<OutboundFrame>) -> Result<(), SendError> {
        let link = self
            .links
            .get(peer)
            .ok_or_else(|| SendError::PeerDown(peer.to_string()))?;
        let permits = link
            .queue
            .try_reserve_many(frames.len())
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_string()),
                mpsc::error::TrySendError::Closed(_) => SendError::PeerDown(peer.to_string()),
            })?;
        for (permit, frame) in permits.zip(frames) {
            permit.send(frame);
        }
        link.activity.sent_now();
        Ok(())
    }

    /// The connection to `peer`, if it is up.
    pub fn connection(&self, peer: &str) -> Option<quinn::Connection> {
        self.links.get(peer).map(|link| link.connection.clone())
    }

    pub fn insert(&self, peer: &str, link: PeerLink) {
        self.links.insert(peer.to_string(), link);
    }

    /// Removes `peer`'s link only if it is still `connection_id`.
    pub fn remove_if_current(&self, peer: &str, connection_id: usize) {
        self.links
            .remove_if(peer, |_, link| link.connection_id == connection_id);
    }

    /// Frames the send queue to `peer` has room for, if connected.
    pub fn queue_room(&self, peer: &str) -> Option<usize> {
        self.links.get(peer).map(|link| link.queue.capacity())
    }

    pub fn is_connected(&self, peer: &str) -> bool {
        self.links
            .get(peer)
            .is_some_and(|link| !link.queue.is_closed())
    }

    pub fn activity(&self, peer: &str) -> Option<Arc<LinkActivity>> {
        self.links.get(peer).map(|link| link.activity.clone())
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
    /// Which start of the agent this is (1 for the first); deliveries
    /// the mesh core meant for another are not handed to this one.
    pub incarnation: u64,
}

/// The sender's side of a message's receipt.
pub type ReceiptSender = oneshot::Sender<Result<(), SendError>>;

/// What a local agent tells the router. Kept in order, so a consumption
/// before an agent's restart is taken before the restart.
#[derive(Debug)]
pub enum AgentReport {
    Started {
        agent: String,
        incarnation: u64,
    },
    Consumed {
        agent: String,
        origin: String,
        sequence: u64,
    },
}

/// Agents' reports, waiting for the router to take them (on each message
/// it handles, every `delivery.tick_ms` at the latest). Bounded by what
/// is handed over: one consumption per delivery, and deliveries waiting
/// in inboxes are limited by `agent_inbox_max` per agent.
#[derive(Default)]
pub struct AgentReports(Mutex<Vec<AgentReport>>);

impl AgentReports {
    pub fn push(&self, report: AgentReport) {
        self.0
            .lock()
            .expect("agent reports lock is never poisoned")
            .push(report);
    }

    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .expect("agent reports lock is never poisoned")
            .is_empty()
    }

    pub fn take(&self) -> Vec<AgentReport> {
        std::mem::take(&mut *self.0.lock().expect("agent reports lock is never poisoned"))
    }
}

/// The mesh core's admission as the router last left it, so a sender is
/// refused on its own task without waiting for the router.
pub struct AdmissionGauge {
    pub inflight: AtomicUsize,
    pub window: AtomicUsize,
}

impl AdmissionGauge {
    /// Nothing in flight yet, with the core's first window.
    pub fn new(window: usize) -> AdmissionGauge {
        AdmissionGauge {
            inflight: AtomicUsize::new(0),
            window: AtomicUsize::new(window),
        }
    }
}

pub struct NodeContext {
    pub config: Arc<ClusterConfig>,
    pub node_id: String,
    /// This life of the node: its boot time in unix microseconds.
    pub incarnation: u64,
    /// Names, wire indices, keys and addresses of every node, which node
    /// hosts each agent, and the base overlay.
    pub directory: Arc<super::directory::Directory>,
    pub key: SigningKey,
    pub agents_start: super::node::AgentsStart,
    /// Set when the node shuts down for good: connections then close
    /// telling peers it is leaving.
    pub leaving: std::sync::atomic::AtomicBool,
    pub metrics: Arc<NodeMetrics>,
    pub peers: PeerTable,
    pub agents: DashMap<String, AgentHandle>,
    pub agent_stats: DashMap<String, Arc<AgentStats>>,
    /// The neighbours the topology chose; the transport connects to these.
    pub neighbours: RwLock<Vec<String>>,
    pub node: Slot<NodeMsg>,
    pub router: Slot<RouterMsg>,
    pub transport: Slot<TransportMsg>,
    pub topology: Slot<TopologyMsg>,
    /// The control-plane replica, on nodes that hold one.
    pub replica: Slot<RaftMsg>,
    /// Whether this node's replica leads the control plane: its topology
    /// actor then proposes the overlay.
    pub replica_leading: std::sync::atomic::AtomicBool,
    /// The committed overlay this node applies (epoch 0, nobody down,
    /// until it learns one); kept here so a restarted topology actor
    /// starts from it.
    pub committed_overlay: RwLock<Arc<OverlayCommit>>,
    /// The PBFT replica, on nodes that hold one.
    pub pbft: Slot<super::pbft_replica::PbftMsg>,
    /// Bounds the PBFT replica's mailbox of packets from peers.
    pub pbft_queue: Arc<Semaphore>,
    /// What this node's PBFT replica executed, for checks across replicas.
    pub pbft_executed: Mutex<super::pbft_replica::ExecutedLog>,
    /// The behaviour the PBFT replica was last told to take on at run
    /// time (None: the config's); a restarted replica keeps it.
    pub pbft_behaviour: Mutex<Option<crate::protocols::pbft::Behaviour>>,
    /// The replica's log, shared by its incarnations.
    pub raft_disk: Option<Arc<ReplicaDisk>>,
    /// Bounds the replica's mailbox of messages from peers.
    pub raft_queue: Arc<Semaphore>,
    /// Bounds the topology actor's mailbox of frames from peers.
    pub control_queue: Arc<Semaphore>,
    pub routing: RwLock<Arc<RoutingView>>,
    /// Token buckets of this node's agents, when rate limits are on.
    pub rate_limits: DashMap<String, TokenBucket>,
    /// Bounds the router's mailbox: one permit per queued message.
    pub router_queue: Arc<Semaphore>,
    /// The data path's state. Owned by the router (the only one to lock
    /// it, beside tests that inspect it) and kept here so it outlives the
    /// router's restarts: what awaits acknowledgement and what was
    /// consumed must not be forgotten.
    pub mesh: Mutex<MeshCore<ReceiptSender>>,
    pub agent_reports: AgentReports,
    pub admission: AdmissionGauge,
    pub endpoint: quinn::Endpoint,
    pub certificate: crate::tls::NodeCertificate,
    /// Bounds this node's dials that are still handshaking; nodes sharing
    /// a process may share one, since they share its CPU.
    pub handshakes: Arc<Semaphore>,
}

impl NodeContext {
    /// Records `commit` as the committed overlay if it is newer than the
    /// one recorded.
    pub fn record_overlay(&self, commit: &Arc<OverlayCommit>) {
        let mut recorded = self
            .committed_overlay
            .write()
            .expect("committed overlay lock is never poisoned");
        if commit.epoch > recorded.epoch {
            *recorded = commit.clone();
        }
    }

    /// Takes a router queue slot without waiting.
    pub fn try_reserve_router(&self) -> Result<OwnedSemaphorePermit, SendError> {
        self.router_queue.clone().try_acquire_owned().map_err(|_| {
            NodeMetrics::count(&self.metrics.counters.refused_router_busy);
            SendError::RouterBusy
        })
    }

    pub fn routing_view(&self) -> Arc<RoutingView> {
        self.routing
            .read()
            .expect("routing lock is never poisoned")
            .clone()
    }

    pub fn mesh_core(&self) -> std::sync::MutexGuard<'_, MeshCore<ReceiptSender>> {
        self.mesh.lock().expect("mesh core lock is never poisoned")
    }

    pub fn stats_of(&self, agent: &str) -> Arc<AgentStats> {
        self.agent_stats
            .entry(agent.to_string())
            .or_default()
            .clone()
    }
}

/// Microseconds on a clock that never goes back, shared by the process
/// (for timers and round trips, never sent as a time of day).
pub fn monotonic_micros() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

/// Milliseconds on the same clock (for timers).
pub fn monotonic_ms() -> u64 {
    monotonic_micros() / 1_000
}

/// Wall-clock microseconds since the Unix epoch (for envelope timestamps,
/// which are compared across nodes).
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
