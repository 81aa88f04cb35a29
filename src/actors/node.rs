//! A node's root supervisor and the function that starts a node.
//!
//! [`start_node`] binds nothing itself: it is given a bound UDP socket, makes
//! the QUIC endpoint and the node's [`NodeParts`] (the shared core and what
//! each actor keeps across its restarts), and spawns the
//! [`NodeSupervisor`], which starts Transport, Topology and Router at once
//! and the AgentSupervisor as [`AgentsStart`] says: by default when every
//! neighbour is connected (or after `supervision.agents_start_timeout_ms`,
//! whichever comes first).
//!
//! Escalation: a child that ends unexpectedly is restarted after a jittered
//! backoff while the node's restart budget lasts (`[supervision]` in the
//! config; by default 5 restarts in 10 s). The AgentSupervisor has a budget of
//! its own for agents; when that is spent it fails, and the node supervisor
//! restarts it (with all its agents) from the node's budget. When the node's
//! budget is spent, the node supervisor fails and the node stops; the process
//! running it reports the failure and exits non-zero.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;

use crate::agent_api::Registry;
use crate::clock::unix_micros;
use crate::config::ClusterConfig;
use crate::metrics::NodeMetrics;
use crate::net::peers::PeerTable;
use crate::net::quic::{quic_server_config, CLOSE_LEAVING, CLOSE_SHUTDOWN};
use crate::net::tls::NodeCertificate;
use crate::protocols::delivery::SenderConfig;
use crate::protocols::mesh::{MeshConfig, MeshCore, OverlayFrame, RoutingView};

use super::agent::AgentParts;
use super::agent_supervisor::{AgentSupervisor, AgentSupervisorArgs};
use super::data_path::DataPath;
use super::directory::Directory;
use super::messages::{AgentSupervisorMsg, ChildKind, NodeMsg, ReceiptSender};
use super::overlay_state::OverlayState;
use super::pbft_replica::{PbftMemory, PbftReplica, PbftReplicaArgs};
use super::placement_planner::{PlacementPlanner, PlannerArgs};
use super::raft_replica::disk::ReplicaDisk;
use super::raft_replica::{RaftReplica, RaftReplicaArgs};
use super::router::{Router, RouterParts};
use super::shared::{Mailboxes, NodeShared};
use super::supervisor::Children;
use super::topology::{TopologyActor, TopologyArgs};
use super::transport::{Transport, TransportArgs};

/// Frames from peers waiting for the topology actor (heartbeats and
/// membership records); more are dropped and counted.
pub const CONTROL_QUEUE_MAX: usize = 4_096;

pub use crate::protocols::mesh::topology::DEFAULT_LINK_WEIGHT_MICROS;

/// What a node needs to start.
pub struct NodeSpec {
    pub config: Arc<ClusterConfig>,
    pub node_id: String,
    pub key: SigningKey,
    /// What this node knows of the whole cluster; nodes of one process
    /// share it.
    pub directory: Arc<Directory>,
    /// Already bound to this node's listen address.
    pub socket: std::net::UdpSocket,
    pub agents_start: AgentsStart,
    /// Limits handshakes in progress across every node given the same one
    /// (None: this node's own limit of HANDSHAKES_PER_NODE_MAX).
    pub handshakes: Option<Arc<Semaphore>>,
    /// Where the node's control-plane replica keeps its log (needed when
    /// the node holds one).
    pub raft_directory: Option<std::path::PathBuf>,
    /// Injects faults into what the node's socket sends (None: no layer).
    pub faults: Option<Arc<crate::net::faulty_socket::FaultNet>>,
    /// The behaviours the node's agents are made from.
    pub registry: Arc<Registry>,
}

/// Dials one node keeps handshaking at once when it has the CPU to itself.
pub const HANDSHAKES_PER_NODE_MAX: usize = 16;

/// When a node starts its agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentsStart {
    /// When every neighbour is connected, or after
    /// `supervision.agents_start_timeout_ms`.
    WhenNeighboursUp,
    /// When sent [`NodeMsg::StartAgents`]: a cluster in one process starts
    /// the load once every node's links are up.
    WhenTold,
}

/// One node's state, as its supervisor holds it and as code outside the
/// node (the cluster, benches, chaos runs, tests) looks at it: the shared
/// core, and what each actor keeps across its restarts. Each child is
/// handed only its own part and the shared core.
pub struct NodeParts {
    pub shared: Arc<NodeShared>,
    /// The router's and the agents'.
    pub data_path: Arc<DataPath>,
    /// The topology actor's, recorded in by the control-plane replica.
    pub overlay: Arc<OverlayState>,
    /// The PBFT replica's.
    pub pbft: Arc<PbftMemory>,
    /// The control-plane replica's log, on nodes that hold one.
    pub raft_disk: Option<Arc<ReplicaDisk>>,
    pub agents_start: AgentsStart,
    /// The behaviours the agents are made from.
    pub registry: Arc<Registry>,
}

/// A running node.
pub struct NodeHandle {
    pub id: String,
    pub supervisor: ActorRef<NodeMsg>,
    pub join: JoinHandle<()>,
    pub parts: Arc<NodeParts>,
    /// Ends the client API's listener when the handle goes.
    _client_api: Option<tokio_util::sync::DropGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
}

pub async fn start_node(spec: NodeSpec) -> Result<NodeHandle, StartError> {
    let node = spec.node_id.clone();
    let fail = |reason: String| StartError::Node {
        node: node.clone(),
        reason,
    };
    crate::net::tls::install_crypto_provider();
    let certificate = NodeCertificate::new(&spec.key).map_err(|error| fail(error.to_string()))?;
    let pinned = spec.directory.pinned.clone();
    let server = quic_server_config(&certificate, pinned, &spec.config.transport)
        .map_err(|error| fail(error.to_string()))?;
    let raft_disk = open_raft_disk(&spec).map_err(fail)?;
    let socket: Arc<dyn quinn::AsyncUdpSocket> = match &spec.faults {
        Some(faults) => faults.wrap(&spec.node_id, spec.socket),
        None => quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, spec.socket),
    }
    .map_err(|error| fail(format!("cannot use the UDP socket: {error}")))?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        crate::net::tls::endpoint_config(&spec.key),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|error| fail(format!("cannot open the QUIC endpoint: {error}")))?;
    // Empty until the topology actor, which starts before the transport and
    // the agents, publishes the overlay.
    let frame = OverlayFrame::new(
        crate::protocols::topology::Overlay::default(),
        &spec.node_id,
        &spec.directory.roster.node_names,
    );
    let routing = RoutingView::new(
        Arc::new(frame),
        Default::default(),
        DEFAULT_LINK_WEIGHT_MICROS,
    );
    // Starting at the wall clock keeps a restarted process's incarnation and
    // sequence numbers above those it used before, so peers' windows admit
    // them (as long as it sent fewer than one envelope per microsecond).
    let incarnation = unix_micros();
    let mesh = mesh_core(
        &spec.config,
        &spec.node_id,
        &spec.key,
        &spec.directory,
        incarnation,
    );
    let client_listener =
        match spec
            .config
            .nodes
            .iter()
            .find(|node| node.id == spec.node_id)
            .and_then(|node| node.client_listen)
        {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(
                |error| fail(format!("cannot listen for clients on {address}: {error}")),
            )?),
            None => None,
        };
    let mailboxes = Mailboxes::new(
        spec.config.limits.router_queue_max,
        CONTROL_QUEUE_MAX,
        super::raft_replica::RAFT_QUEUE_MAX,
        super::pbft_replica::PBFT_QUEUE_MAX,
    );
    let shared = Arc::new(NodeShared {
        config: spec.config,
        node_id: spec.node_id,
        incarnation,
        directory: spec.directory,
        key: spec.key,
        certificate,
        endpoint,
        handshakes: spec
            .handshakes
            .unwrap_or_else(|| Arc::new(Semaphore::new(HANDSHAKES_PER_NODE_MAX))),
        leaving: AtomicBool::new(false),
        metrics: Arc::new(NodeMetrics::default()),
        peers: PeerTable::default(),
        mailboxes,
    });
    let parts = Arc::new(NodeParts {
        shared: shared.clone(),
        data_path: Arc::new(DataPath::new(mesh)),
        overlay: Arc::new(OverlayState::new(routing)),
        pbft: Arc::default(),
        raft_disk,
        agents_start: spec.agents_start,
        registry: spec.registry,
    });
    let (supervisor, join) = Actor::spawn(None, NodeSupervisor, parts.clone())
        .await
        .map_err(|error| fail(format!("cannot start the node supervisor: {error}")))?;
    let client_api = client_listener.map(|listener| {
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(super::client_api::serve(
            (shared.clone(), parts.data_path.clone()),
            listener,
            token.clone(),
        ));
        token.drop_guard()
    });
    Ok(NodeHandle {
        id: node,
        supervisor,
        join,
        parts,
        _client_api: client_api,
    })
}

/// The mesh core of node `node_id`, whose sequence numbers start at its
/// `incarnation` (its boot time, so a restarted process stays ahead of
/// what its peers' windows saw).
fn mesh_core(
    config: &ClusterConfig,
    node_id: &str,
    key: &SigningKey,
    directory: &Directory,
    incarnation: u64,
) -> MeshCore<ReceiptSender> {
    let delivery = &config.delivery;
    // Any planned agent may come here when a directory moves it (every
    // one of them when the other nodes are down).
    let replicated = !config.control.replicas.is_empty();
    let agents_here = (config.agents.iter())
        .filter(|agent| agent.node == node_id || (replicated && agent.placement.planned))
        .count();
    let mesh = MeshConfig {
        node: node_id.to_string(),
        ttl: config.limits.ttl,
        authentication: delivery.authentication,
        sender: SenderConfig {
            inflight_max: delivery.inflight_max,
            span_max: crate::protocols::wire::duplicate_window::WINDOW_BITS / 2,
            retransmit_timeout_ms: delivery.retransmit_timeout_ms,
            retransmit_timeout_max_ms: delivery.retransmit_timeout_max_ms,
            retries_max: delivery.retries_max,
        },
        first_sequence: incarnation,
        deliveries_max: (agents_here * config.limits.agent_inbox_max).max(1),
        // The router's tick is the delay: every tick sends what is due.
        ack_delay_ms: 0,
    };
    MeshCore::new(mesh, key.clone(), directory.roster.clone())
}

/// Opens the replica's log when this node holds one.
fn open_raft_disk(spec: &NodeSpec) -> Result<Option<Arc<ReplicaDisk>>, String> {
    let control = &spec.config.control;
    if control.replica_id(&spec.node_id).is_none() {
        return Ok(None);
    }
    let directory = spec.raft_directory.as_ref().ok_or(
        "the node holds a control-plane replica but has no log directory (set control.data_dir)",
    )?;
    let owner = crate::actors::raft_replica::identity::Owner {
        cluster: spec.config.name.clone(),
        node: spec.node_id.clone(),
        raft_id: control.replica_id(&spec.node_id).expect("checked above"),
    };
    let fail_syncs_after = spec
        .config
        .disk_faults
        .get(&spec.node_id)
        .map(|fault| fault.fail_syncs_after);
    let disk = ReplicaDisk::open(directory, &owner, control.fsync, fail_syncs_after)
        .map_err(|error| error.to_string())?;
    Ok(Some(Arc::new(disk)))
}

impl NodeHandle {
    /// Stops the node in order, telling peers it leaves, and waits for it.
    pub async fn shutdown(self) {
        self.stop_with(NodeMsg::Shutdown).await;
    }

    /// Stops the node as a crash would (see [`NodeMsg::Crash`]).
    pub async fn crash(self) {
        self.stop_with(NodeMsg::Crash).await;
    }

    async fn stop_with(self, message: fn(RpcReplyPort<()>) -> NodeMsg) {
        let wait = Duration::from_secs(10);
        let _ = self.supervisor.call(message, Some(wait)).await;
        let _ = tokio::time::timeout(wait, self.join).await;
    }

    /// True while the node supervisor runs (false after an escalation).
    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }
}

pub struct NodeSupervisor;

pub struct NodeState {
    parts: Arc<NodeParts>,
    children: Children<ChildKind>,
    agent_supervisor: Option<ActorRef<AgentSupervisorMsg>>,
    quiesced: bool,
}

impl NodeState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<NodeMsg>,
        kind: ChildKind,
    ) -> Result<(), ActorProcessingErr> {
        let parts = &self.parts;
        let shared = parts.shared.clone();
        let supervisor = myself.get_cell();
        let id = match kind {
            ChildKind::Transport => {
                let overlay = parts.overlay.clone();
                let args = TransportArgs { shared, overlay };
                Actor::spawn_linked(None, Transport, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::Topology => {
                let overlay = parts.overlay.clone();
                let args = TopologyArgs { shared, overlay };
                Actor::spawn_linked(None, TopologyActor, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::Router => {
                let args = RouterParts {
                    shared,
                    data_path: parts.data_path.clone(),
                    overlay: parts.overlay.clone(),
                };
                Actor::spawn_linked(None, Router, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::PbftReplica => {
                let memory = parts.pbft.clone();
                let args = PbftReplicaArgs { shared, memory };
                Actor::spawn_linked(None, PbftReplica, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::RaftReplica => {
                let disk = parts.raft_disk.clone().ok_or("the replica has no log")?;
                let overlay = parts.overlay.clone();
                let args = RaftReplicaArgs {
                    shared,
                    overlay,
                    disk,
                };
                Actor::spawn_linked(None, RaftReplica, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::PlacementPlanner => {
                let overlay = parts.overlay.clone();
                let args = PlannerArgs { shared, overlay };
                Actor::spawn_linked(None, PlacementPlanner, args, supervisor)
                    .await?
                    .0
                    .get_id()
            }
            ChildKind::AgentSupervisor => self.spawn_agent_supervisor(supervisor).await?,
        };
        self.children.insert(id, kind);
        Ok(())
    }

    async fn spawn_agent_supervisor(
        &mut self,
        supervisor: ractor::ActorCell,
    ) -> Result<ractor::ActorId, ActorProcessingErr> {
        let parts = &self.parts;
        let args = AgentSupervisorArgs {
            parts: AgentParts {
                shared: parts.shared.clone(),
                data_path: parts.data_path.clone(),
                registry: parts.registry.clone(),
            },
            overlay: parts.overlay.clone(),
        };
        let (agents, _) = Actor::spawn_linked(None, AgentSupervisor, args, supervisor).await?;
        if self.quiesced {
            let _ = agents.cast(AgentSupervisorMsg::Quiesce);
        }
        let id = agents.get_id();
        self.agent_supervisor = Some(agents);
        Ok(id)
    }

    /// A child that cannot start again. A Raft replica whose log failed
    /// refuses to start until the node restarts (what reached its disk is
    /// unknown), and the rest of the node (routing, agents, PBFT) serves
    /// on without it; any other child's failure stops the node, saying why.
    fn restart_failed(
        &self,
        kind: ChildKind,
        error: &ActorProcessingErr,
    ) -> Result<(), ActorProcessingErr> {
        let node = &self.parts.shared.node_id;
        let reason = match error.downcast_ref::<ractor::SpawnErr>() {
            Some(ractor::SpawnErr::StartupFailed(inner)) => inner.to_string(),
            _ => error.to_string(),
        };
        if kind == ChildKind::RaftReplica {
            tracing::error!(%node, "the raft replica stays down until the node restarts: {reason}");
            return Ok(());
        }
        tracing::error!(%node, child = ?kind, "cannot start again, so the node stops: {reason}");
        Err(reason.into())
    }

    async fn stop(&mut self, myself: &ActorRef<NodeMsg>, reply: RpcReplyPort<()>, leaving: bool) {
        self.parts.shared.leaving.store(leaving, Ordering::Relaxed);
        self.shutdown(myself).await;
        let _ = reply.send(());
        myself.stop(None);
    }

    /// Stops the node. A node leaving for good closes its connections
    /// first, saying so, so its peers route around it at once instead of
    /// sending it work while its agents and actors wind down.
    async fn shutdown(&mut self, myself: &ActorRef<NodeMsg>) {
        self.children.stopping = true;
        if self.parts.shared.leaving.load(Ordering::Relaxed) {
            self.close_endpoint(CLOSE_LEAVING, b"leaving");
        }
        if let Some(agents) = self.agent_supervisor.take() {
            let _ = agents
                .call(AgentSupervisorMsg::StopAgents, Some(Duration::from_secs(5)))
                .await;
        }
        myself
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.close_endpoint(CLOSE_SHUTDOWN, b"shutdown");
        if let Some(disk) = &self.parts.raft_disk {
            disk.close();
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.parts.shared.endpoint.wait_idle(),
        )
        .await;
    }

    /// Closes every connection (a second close changes nothing).
    fn close_endpoint(&self, code: u32, reason: &[u8]) {
        self.parts
            .shared
            .endpoint
            .close(quinn::VarInt::from_u32(code), reason);
    }
}

impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = Arc<NodeParts>;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeMsg>,
        parts: Arc<NodeParts>,
    ) -> Result<NodeState, ActorProcessingErr> {
        let shared = &parts.shared;
        shared.mailboxes.node.set(Some(myself.clone()));
        let policy = shared.config.supervision.restart_policy();
        let seed = shared.config.seed ^ crate::protocols::stable_hash(&shared.node_id);
        let children = Children::new(policy, seed, format!("{}/node-supervisor", shared.node_id));
        let mut state = NodeState {
            parts,
            children,
            agent_supervisor: None,
            quiesced: false,
        };
        for kind in [ChildKind::Router, ChildKind::Topology, ChildKind::Transport] {
            state.spawn(&myself, kind).await?;
        }
        if state.parts.raft_disk.is_some() {
            state.spawn(&myself, ChildKind::RaftReplica).await?;
            state.spawn(&myself, ChildKind::PlacementPlanner).await?;
        }
        let shared = state.parts.shared.clone();
        if shared.config.pbft.replica_id(&shared.node_id).is_some() {
            state.spawn(&myself, ChildKind::PbftReplica).await?;
        }
        let wait = Duration::from_millis(shared.config.supervision.agents_start_timeout_ms);
        myself.send_after(wait, || NodeMsg::NeighboursWaitOver);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeMsg>,
        message: NodeMsg,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::NeighboursUp | NodeMsg::NeighboursWaitOver
                if state.parts.agents_start == AgentsStart::WhenTold => {}
            NodeMsg::NeighboursUp | NodeMsg::NeighboursWaitOver | NodeMsg::StartAgents => {
                if state.agent_supervisor.is_none() && !state.children.stopping {
                    tracing::info!(node = %state.parts.shared.node_id, "starting agents");
                    state.spawn(&myself, ChildKind::AgentSupervisor).await?;
                }
            }
            NodeMsg::Restart(kind) => {
                if !state.children.stopping && !state.children.contains(|child| *child == kind) {
                    if let Err(error) = state.spawn(&myself, kind).await {
                        state.restart_failed(kind, &error)?;
                    }
                }
            }
            NodeMsg::Quiesce => {
                state.quiesced = true;
                if let Some(agents) = &state.agent_supervisor {
                    let _ = agents.cast(AgentSupervisorMsg::Quiesce);
                }
            }
            NodeMsg::Shutdown(reply) => state.stop(&myself, reply, true).await,
            NodeMsg::Crash(reply) => state.stop(&myself, reply, false).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeMsg>,
        event: SupervisionEvent,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((kind, delay)) = state
            .children
            .on_event(&event, &state.parts.shared.metrics)?
        {
            if kind == ChildKind::AgentSupervisor {
                state.agent_supervisor = None;
            }
            myself.send_after(delay, move || NodeMsg::Restart(kind));
        }
        Ok(())
    }
}
