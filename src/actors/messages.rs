//! What a node's actors say to each other: every actor's message type, and
//! the small types those messages carry. They live here, below the actors,
//! so that an actor can reach a sibling (through its mailbox in
//! [`super::shared::Mailboxes`]) without importing the sibling's module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::RpcReplyPort;
use raft::eraftpb::Message as RaftMessage;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::protocols::cluster_state::Proposal;
use crate::protocols::control::{ClientReply, ClientRequest};
use crate::protocols::mesh::{ControlFrame, Message, OverlayCommit, SendError};
use crate::protocols::pbft::messages::Packet;
use crate::protocols::pbft::{Behaviour, ReplicaId, Reply, Request};
use crate::protocols::wire::Envelope;

/// The sender's side of a message's receipt.
pub type ReceiptSender = oneshot::Sender<Result<(), SendError>>;

/// The node supervisor's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildKind {
    Transport,
    Topology,
    Router,
    RaftReplica,
    PbftReplica,
    /// Beside the control-plane replica.
    PlacementPlanner,
    AgentSupervisor,
}

/// What the node supervisor is told: by its children, the process
/// running it, and timers.
pub enum NodeMsg {
    /// Every neighbour is connected.
    NeighboursUp,
    /// The wait for neighbours is over: start the agents unless they wait
    /// to be told.
    NeighboursWaitOver,
    /// Start the agents if they are not running yet.
    StartAgents,
    Restart(ChildKind),
    /// Agents stop generating load; deliveries continue.
    Quiesce,
    /// Stop everything in order, telling peers the node leaves; answers
    /// when done.
    Shutdown(RpcReplyPort<()>),
    /// Stop without telling peers the node leaves, as a crash would:
    /// they see links close and learn it is dead from their detectors.
    Crash(RpcReplyPort<()>),
}

/// What a sender learns about one message: delivered (acknowledged by the
/// destination) or why not.
pub type Receipt = Result<(), SendError>;

/// A message an agent asks the router to carry; the receipt, if any, is
/// told when the destination acknowledges or the router gives up.
pub type OutboundMessage = Message<ReceiptSender>;

/// A local agent's message's place in the router's queue: the queue's
/// permit and one of the sender's queued messages (its agent statistics'
/// `queued`), both given back when the router has handled it (or when
/// the message is dropped).
pub struct QueuedPlace {
    _permit: OwnedSemaphorePermit,
    sender_queued: Arc<AtomicU64>,
}

impl QueuedPlace {
    pub fn new(permit: OwnedSemaphorePermit, sender_queued: Arc<AtomicU64>) -> QueuedPlace {
        sender_queued.fetch_add(1, Ordering::Relaxed);
        QueuedPlace {
            _permit: permit,
            sender_queued,
        }
    }
}

impl Drop for QueuedPlace {
    fn drop(&mut self) {
        self.sender_queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the router is told: agents' messages and peers' envelopes.
pub enum RouterMsg {
    /// From a local agent. The place holds the message's room in the
    /// router's bounded queue, and counts it as its sender's, until it is
    /// handled.
    Send {
        message: OutboundMessage,
        place: QueuedPlace,
    },
    /// Decoded envelopes for this node from one peer connection.
    Inbound {
        envelopes: Vec<Envelope>,
        permit: OwnedSemaphorePermit,
    },
    /// Send due acknowledgements and retransmissions.
    Tick,
}

/// What an agent is told.
pub enum AgentMsg {
    /// A verified, fresh envelope; the permit holds its inbox place.
    Deliver {
        envelope: Envelope,
        permit: OwnedSemaphorePermit,
    },
    Tick,
    /// The timer of `tag` set `setting` is due (unless set again since).
    Timer {
        tag: u64,
        setting: u64,
    },
    /// The request `id` has waited its timeout.
    RequestTimedOut(u64),
    /// The router refused a message this agent sent.
    SendFailed {
        destination: String,
        error: SendError,
    },
    /// Stop ticking (the run is draining); still answer deliveries.
    Quiesce,
    /// A line a process agent's process wrote (or why it could not be
    /// read); the permit bounds the lines waiting.
    ProcessOutput {
        line: Result<String, String>,
        permit: OwnedSemaphorePermit,
    },
    /// A process agent's process ended, or closed its output.
    ProcessExited(String),
    /// A process agent's process has had its time to answer `init`.
    ProcessInitTimedOut,
    /// Time to ping a process agent's process (and to judge the last ping).
    ProcessPing,
    /// Ask agent `to` with `body` as a request for a client outside the
    /// cluster (sent to a node's call desk); `reply` gets the response's
    /// body, or why there is none.
    Call {
        to: String,
        body: Vec<u8>,
        timeout_ms: u64,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    /// The node's replica answered the agent's control ask
    /// `(client, sequence)` (see [`super::control_ask`]).
    ControlAnswered {
        client: u64,
        sequence: u64,
        outcome: crate::agent_api::ControlOutcome,
    },
    /// The agent's control ask `sequence` has waited as long as it may.
    ControlTimedOut(u64),
    /// A desk's replica answered the control ask of agent `to`, on
    /// another node: the desk sends the answer back.
    ControlServed {
        to: String,
        client: u64,
        sequence: u64,
        outcome: crate::agent_api::ControlOutcome,
    },
}

/// What the agent supervisor is told.
pub enum AgentSupervisorMsg {
    Restart(String),
    /// The committed directory may have changed: start the planned agents
    /// it places here and stop those it moved away.
    Reconcile,
    /// Tell every agent to stop ticking.
    Quiesce,
    /// Stop every agent without restarting any; answers when done.
    StopAgents(RpcReplyPort<()>),
}

/// What the placement planner is told.
pub enum PlannerMsg {
    /// Look at the committed overlay again.
    Tick,
    /// A committed overlay was applied: look at it now.
    Committed,
}

/// What the topology actor is told.
pub enum TopologyMsg {
    /// Heartbeat the neighbours and judge them.
    Tick,
    /// A frame from neighbour `from`; the permit bounds the queue.
    Control {
        from: String,
        frame: ControlFrame,
        permit: OwnedSemaphorePermit,
    },
    /// A connection to this neighbour came up.
    LinkUp(String),
    /// Pass queued membership changes on.
    Spread,
    /// This neighbour closed its connection saying it leaves the cluster.
    PeerLeft(String),
    /// This node's replica applied an overlay change.
    Committed(OverlayCommit),
}

/// What the transport actor is told.
pub enum TransportMsg {
    /// The overlay neighbours to hold connections to, and nodes to keep
    /// dialing although they are thought dead (base-overlay neighbours, so
    /// a node that comes back is heard from).
    SetNeighbours {
        neighbours: Vec<String>,
        probes: Vec<String>,
    },
    PeerUp(String),
    PeerDown(String),
    ConnectedPeers(RpcReplyPort<Vec<String>>),
}

/// What the control-plane replica is told.
pub enum RaftMsg {
    Tick,
    /// Take what the core has ready. Sent to itself behind the inputs
    /// already queued, so that a burst of proposals and messages becomes
    /// one Ready: one disk write and one append per follower.
    Drive,
    /// A message from another replica; the permit bounds the queue.
    Peer {
        message: Box<RaftMessage>,
        permit: OwnedSemaphorePermit,
    },
    /// The writer made every job up to persist `number` durable.
    Persisted {
        generation: u64,
        number: u64,
    },
    /// The writer could not write: the replica stops, and its supervisor
    /// restarts it from what is durable.
    DiskFailed(String),
    Client {
        request: ClientRequest,
        reply: RpcReplyPort<ClientReply>,
    },
    /// Snapshot the state now (for benchmarks and operators); answers once
    /// the snapshot is durable.
    CompactNow(RpcReplyPort<()>),
    /// This node's topology actor proposes an overlay change, or its
    /// placement planner a directory; only a leader takes it (the proposer
    /// proposes again if it is lost).
    Propose(Proposal),
}

/// What a replica tells a client.
#[derive(Clone, Debug)]
pub enum ClientEvent {
    Reply(Reply),
    /// The replica holds `pbft.pending_max` requests already, or the
    /// request is invalid.
    Refused {
        replica: ReplicaId,
        reason: String,
    },
}

/// What the PBFT replica is told.
pub enum PbftMsg {
    Tick,
    Drive,
    Peer {
        packet: Box<Packet>,
        permit: OwnedSemaphorePermit,
    },
    Request {
        request: Request,
        replies: mpsc::Sender<ClientEvent>,
    },
    Status(RpcReplyPort<PbftStatus>),
    /// From now on behave as this (a chaos run turning a replica hostile,
    /// or back).
    Behave(Behaviour),
}

#[derive(Clone, Debug)]
pub struct PbftStatus {
    pub replica: ReplicaId,
    pub view: u64,
    /// The view it is changing to, during a view change.
    pub moving_to: Option<u64>,
    /// Per replica, the view its latest view change heard here moves to.
    pub view_changes_heard: Vec<(ReplicaId, u64)>,
    pub executed: u64,
    pub stable_checkpoint: u64,
    pub batch_size: usize,
}
