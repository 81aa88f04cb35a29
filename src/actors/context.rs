//! What one node's actors share: identity, peers' keys and addresses, the
//! live connection table, the agent directory, the router's memory and the
//! metrics. The node supervisor creates it once; restarts reuse it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use ed25519_dalek::{SigningKey, VerifyingKey};
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::ClusterConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::delivery::{ReliableSender, TokenBucket};
use crate::protocols::routing::RoutingTable;
use crate::protocols::topology::metrics::hops_from;
use crate::protocols::topology::Overlay;
use crate::protocols::wire::envelope::OriginKeys;
use crate::protocols::wire::pair_key::PairKey;
use crate::protocols::wire::{DuplicateWindow, Envelope, TrafficClass};

use super::agent::{AgentMsg, AgentStats};
use super::node::NodeMsg;
use super::raft_replica::{RaftMsg, ReplicaDisk};
use super::router::RouterMsg;
use super::topology::TopologyMsg;
use super::transport::TransportMsg;

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
    /// (origin node, sequence) of deliveries in this incarnation's mailbox,
    /// not consumed yet: a retransmission of one of these is not handed
    /// over twice. Lost with the incarnation, so a restarted agent gets
    /// them again.
    pub in_inbox: Arc<Mutex<HashSet<(String, u64)>>>,
}

/// A message awaiting acknowledgement.
pub struct InFlight {
    pub envelope: Envelope,
    /// Told the outcome, if the sender asked.
    pub receipt: Option<oneshot::Sender<Result<(), SendError>>>,
}

/// What the router remembers across its own restarts.
pub struct RouterMemory {
    /// Per origin node: sequences its agents consumed here.
    pub windows: HashMap<String, DuplicateWindow>,
    /// Per origin node: consumed sequences not yet acknowledged.
    pub acks_due: HashMap<String, Vec<u64>>,
    pub sender: ReliableSender<InFlight>,
}

impl RouterMemory {
    /// Records that a local agent consumed `sequence` from `origin`, so it
    /// is acknowledged and never handed over again.
    pub fn consumed(&mut self, origin: &str, sequence: u64) {
        self.windows
            .entry(origin.to_string())
            .or_default()
            .admit(sequence);
        self.acks_due
            .entry(origin.to_string())
            .or_default()
            .push(sequence);
    }
}

/// Link weights in microseconds by overlay indices (lower first). A fast
/// hasher: a routing table looks up every overlay edge.
pub type LinkWeights = rustc_hash::FxHashMap<(usize, usize), u64>;

/// The live overlay and what follows from it alone, from this node: its
/// index, hop counts, and the map between overlay and wire indices.
/// Computed when the overlay changes and shared by every routing view
/// published until the next change.
#[derive(Debug)]
pub struct OverlayFrame {
    pub overlay: Overlay,
    /// This node's index in `overlay`.
    pub me: Option<usize>,
    /// Fewest hops from this node to each overlay node (usize::MAX: none).
    pub hops_from_me: Vec<usize>,
    /// Overlay index of each node index on the wire (sorted node list).
    pub overlay_of_wire: Vec<Option<usize>>,
    /// Wire index of each overlay index.
    pub wire_of_overlay: Vec<u16>,
}

impl OverlayFrame {
    pub fn new(overlay: Overlay, me: &str, node_names: &[String]) -> OverlayFrame {
        let overlay_of_wire = node_names
            .iter()
            .map(|name| overlay.index_of(name))
            .collect();
        let wire_of_overlay = overlay
            .names()
            .iter()
            .map(|name| {
                let index = node_names
                    .binary_search(name)
                    .expect("overlay nodes are configured nodes");
                u16::try_from(index).expect("NODES_MAX fits u16")
            })
            .collect();
        let me = overlay.index_of(me);
        let hops_from_me = me.map_or_else(Vec::new, |me| hops_from(&overlay, me));
        OverlayFrame {
            overlay,
            me,
            hops_from_me,
            overlay_of_wire,
            wire_of_overlay,
        }
    }
}

/// The live overlay and link weights the router routes by.
pub struct RoutingView {
    pub frame: Arc<OverlayFrame>,
    pub table: Option<RoutingTable>,
    /// Link weights in microseconds, by overlay indices (lower first).
    pub weights: LinkWeights,
    /// Weight of a link nobody has measured yet.
    pub default_weight: u64,
}

impl RoutingView {
    /// Routes over `frame`'s overlay with `weights` by overlay indices.
    pub fn new(frame: Arc<OverlayFrame>, weights: LinkWeights, default_weight: u64) -> RoutingView {
        let mut view = RoutingView {
            frame,
            table: None,
            weights,
            default_weight: default_weight.max(1),
        };
        if let Some(me) = view.frame.me {
            view.table = Some(crate::protocols::routing::compute(
                &view.frame.overlay,
                me,
                |a, b| view.weight(a, b),
            ));
        }
        view
    }

    /// The routing weight of link a–b: its latency plus the cost of a hop.
    pub fn weight(&self, a: usize, b: usize) -> u64 {
        let latency = self
            .weights
            .get(&(a.min(b), a.max(b)))
            .unwrap_or(&self.default_weight);
        latency + crate::protocols::routing::HOP_COST_MICROS
    }
}

impl OriginKeys for NodeContext {
    fn verifying_key(&self, origin: &str) -> Option<&VerifyingKey> {
        self.directory.node_keys.get(origin)
    }

    fn pair_key(&self, origin: &str) -> Option<Arc<PairKey>> {
        if let Some(key) = self.pair_keys.get(origin) {
            return Some(key.clone());
        }
        let other = self.directory.node_keys.get(origin)?;
        let key = Arc::new(PairKey::derive(&self.key, &self.node_id, other, origin));
        self.pair_keys.insert(origin.to_string(), key.clone());
        Some(key)
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
    /// Keys this node shares with others, derived on first use (a
    /// Diffie–Hellman each), for acknowledgement MACs.
    pub pair_keys: DashMap<String, Arc<PairKey>>,
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
    pub router_memory: Mutex<RouterMemory>,
    pub endpoint: quinn::Endpoint,
    pub certificate: crate::tls::NodeCertificate,
    /// Bounds this node's dials that are still handshaking; nodes sharing
    /// a process may share one, since they share its CPU.
    pub handshakes: Arc<Semaphore>,
}

/// A committed overlay: its epoch and the nodes it leaves out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayCommit {
    pub epoch: u64,
    pub down: BTreeSet<String>,
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

    pub fn memory(&self) -> std::sync::MutexGuard<'_, RouterMemory> {
        self.router_memory
            .lock()
            .expect("router memory lock is never poisoned")
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
