//! Starting nodes from a config: all of them in this process (`agentmesh
//! up`, tests, benchmarks) or one of them (`agentmesh node`), and reading
//! their combined figures.

use crate::agent_api::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::actors::directory::Directory;
use crate::actors::messages::NodeMsg;
use crate::actors::node::{start_node, AgentsStart, NodeHandle, NodeSpec};
use crate::config::ClusterConfig;
use crate::identity;
use crate::metrics::{CounterValues, LatencySummary};
use crate::net::faulty_socket::FaultNet;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node {node}: cannot listen on {address}: {cause}")]
    Bind {
        node: String,
        address: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error("node {node}: {reason}")]
    Key { node: String, reason: String },
    #[error("no node has id {0:?} in the config")]
    UnknownNode(String),
    #[error("node {node}: listen port 0 only works when every node runs in one process (agentmesh up); give node {node} a fixed port")]
    PortZero { node: String },
    #[error("node {node} holds a control-plane replica, which keeps its log on disk: set control.data_dir in the config")]
    NoDataDir { node: String },
    #[error("cannot make a temporary folder for the replicas' logs: {0}")]
    TemporaryFolder(std::io::Error),
    #[error(transparent)]
    Start(#[from] crate::actors::node::StartError),
    /// An agent's behaviour is not registered, or its parameters are bad.
    #[error(transparent)]
    Behaviours(#[from] crate::config::ConfigError),
}

/// Where each replica of a cluster in this process keeps its log: below
/// `control.data_dir` when the config sets one, otherwise in a temporary
/// folder that lasts as long as the cluster.
pub struct RaftDirectories {
    root: std::path::PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl RaftDirectories {
    pub fn for_config(config: &ClusterConfig) -> Result<RaftDirectories, ClusterError> {
        if let Some(root) = &config.control.data_dir {
            return Ok(RaftDirectories {
                root: root.clone(),
                _temporary: None,
            });
        }
        if config.control.replica_nodes().next().is_none() {
            return Ok(RaftDirectories {
                root: std::path::PathBuf::new(),
                _temporary: None,
            });
        }
        let temporary = tempfile::Builder::new()
            .prefix("agentmesh-raft-")
            .tempdir()
            .map_err(ClusterError::TemporaryFolder)?;
        tracing::info!(folder = %temporary.path().display(), "control.data_dir is not set: the replicas' logs last for this run only");
        Ok(RaftDirectories {
            root: temporary.path().to_path_buf(),
            _temporary: Some(temporary),
        })
    }

    pub fn of(&self, node: &str) -> std::path::PathBuf {
        self.root.join(node)
    }
}

/// Private keys for every node: read from their key files when the config
/// lists keys, otherwise made in memory for this run.
fn keys_for_all(config: &ClusterConfig) -> Result<HashMap<String, SigningKey>, ClusterError> {
    config
        .nodes
        .iter()
        .map(|node| {
            let key = match (&node.public_key, &node.key_file) {
                (None, _) => identity::generate_key(),
                (Some(public), Some(path)) => read_matching_key(&node.id, path, public)?,
                (Some(_), None) => {
                    let reason = "the config lists public keys, so running every node here needs each node's key_file".to_string();
                    return Err(ClusterError::Key { node: node.id.clone(), reason });
                }
            };
            Ok((node.id.clone(), key))
        })
        .collect()
}

fn read_matching_key(
    node: &str,
    path: &std::path::Path,
    public: &VerifyingKey,
) -> Result<SigningKey, ClusterError> {
    let key = identity::read_key_file(path).map_err(|error| ClusterError::Key {
        node: node.into(),
        reason: error.to_string(),
    })?;
    if key.verifying_key() != *public {
        let reason = format!(
            "the key in {} does not match the node's public_key in the config",
            path.display()
        );
        return Err(ClusterError::Key {
            node: node.into(),
            reason,
        });
    }
    Ok(key)
}

fn bind(node: &str, address: std::net::SocketAddr) -> Result<std::net::UdpSocket, ClusterError> {
    std::net::UdpSocket::bind(address).map_err(|source| ClusterError::Bind {
        node: node.into(),
        address,
        cause: source,
    })
}

/// How long a restarted node waits for its address to be free again.
const REBIND_WAIT: Duration = Duration::from_secs(15);

/// Binds an address a node that just stopped held: its endpoint lets go of
/// the socket once its last tasks have ended.
async fn bind_again(
    node: &str,
    address: std::net::SocketAddr,
) -> Result<std::net::UdpSocket, ClusterError> {
    let deadline = Instant::now() + REBIND_WAIT;
    loop {
        match bind(node, address) {
            Err(ClusterError::Bind { cause: source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => {
                if let Err(ClusterError::Bind { cause: source, .. }) = &result {
                    tracing::warn!(%node, %address, %source, "cannot bind the stopped node's address again");
                }
                return result;
            }
        }
    }
}

/// What nodes started together know of each other: the directory, and
/// the keys of those started here.
struct Identities {
    directory: Arc<Directory>,
    keys: HashMap<String, SigningKey>,
}

/// Every node of a config, running in this process.
pub struct LocalCluster {
    pub config: Arc<ClusterConfig>,
    pub nodes: Vec<NodeHandle>,
    pub started: Instant,
    directory: Arc<Directory>,
    keys: HashMap<String, SigningKey>,
    raft_directories: RaftDirectories,
    /// The fault layer every node's socket sends through, when the config
    /// has `[faults]`.
    pub faults: Option<Arc<FaultNet>>,
    /// The behaviours the agents are made from.
    registry: Arc<Registry>,
}

impl LocalCluster {
    /// Binds every node's socket (learning the ports of `:0` addresses), then
    /// starts every node, its agents made from the built-in behaviours.
    pub async fn start(config: ClusterConfig) -> Result<LocalCluster, ClusterError> {
        LocalCluster::start_with(config, Registry::with_builtins()).await
    }

    /// Like [`LocalCluster::start`], the agents made from `registry`'s
    /// behaviours (checked against the config first).
    pub async fn start_with(
        config: ClusterConfig,
        registry: Registry,
    ) -> Result<LocalCluster, ClusterError> {
        registry.check(&config)?;
        let registry = Arc::new(registry);
        let started = Instant::now();
        let keys = keys_for_all(&config)?;
        let mut sockets = Vec::with_capacity(config.nodes.len());
        let mut addresses = HashMap::new();
        for node in &config.nodes {
            let socket = bind(&node.id, node.listen)?;
            let local = socket.local_addr().map_err(|source| ClusterError::Bind {
                node: node.id.clone(),
                address: node.listen,
                cause: source,
            })?;
            addresses.insert(node.id.clone(), local);
            sockets.push(socket);
        }
        let node_keys: HashMap<String, VerifyingKey> = keys
            .iter()
            .map(|(id, key)| (id.clone(), key.verifying_key()))
            .collect();
        let directory = Arc::new(Directory::new(&config, node_keys, addresses));
        let ids: Vec<String> = config.nodes.iter().map(|node| node.id.clone()).collect();
        let own = ids.into_iter().zip(sockets).collect();
        let identities = Identities { directory, keys };
        let cluster = LocalCluster::start_nodes(config, identities, own, started, registry).await?;
        cluster.start_agents_when_links_up().await;
        Ok(cluster)
    }

    /// Starts the nodes `own` of `config` in this process, the others
    /// running elsewhere: every node needs a public key and a fixed listen
    /// address in the config, and the nodes started here their key_file.
    /// Agents wait for [`LocalCluster::start_agents`].
    pub async fn start_part(
        config: ClusterConfig,
        own: &[String],
    ) -> Result<LocalCluster, ClusterError> {
        let registry = Registry::with_builtins();
        registry.check(&config)?;
        let started = Instant::now();
        let mut node_keys = HashMap::new();
        let mut keys = HashMap::new();
        let mut sockets = Vec::new();
        for node in &config.nodes {
            let public = node.public_key.ok_or_else(|| ClusterError::Key {
                node: node.id.clone(),
                reason: "a cluster over several processes needs every node's public_key".into(),
            })?;
            node_keys.insert(node.id.clone(), public);
            if !own.contains(&node.id) {
                continue;
            }
            let path = node.key_file.as_ref().ok_or_else(|| ClusterError::Key {
                node: node.id.clone(),
                reason: "no key_file for a node started here".into(),
            })?;
            keys.insert(node.id.clone(), read_matching_key(&node.id, path, &public)?);
            sockets.push((node.id.clone(), bind(&node.id, node.listen)?));
        }
        if let Some(missing) = own.iter().find(|id| !keys.contains_key(*id)) {
            let reason = "not a node of the config".to_string();
            return Err(ClusterError::Key {
                node: missing.clone(),
                reason,
            });
        }
        let addresses = config
            .nodes
            .iter()
            .map(|node| (node.id.clone(), node.listen))
            .collect();
        let directory = Arc::new(Directory::new(&config, node_keys, addresses));
        let identities = Identities { directory, keys };
        let registry = Arc::new(registry);
        LocalCluster::start_nodes(config, identities, sockets, started, registry).await
    }

    async fn start_nodes(
        config: ClusterConfig,
        identities: Identities,
        own: Vec<(String, std::net::UdpSocket)>,
        started: Instant,
        registry: Arc<Registry>,
    ) -> Result<LocalCluster, ClusterError> {
        let Identities { directory, keys } = identities;
        let raft_directories = RaftDirectories::for_config(&config)?;
        let faults = fault_net(&config, &directory);
        let config = Arc::new(config);
        let mut cluster = LocalCluster {
            config,
            nodes: Vec::with_capacity(own.len()),
            started,
            directory,
            keys,
            raft_directories,
            faults,
            registry,
        };
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_PROCESS_MAX));
        for (node_id, socket) in own {
            let node = cluster
                .start_one(node_id, socket, handshakes.clone())
                .await?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    async fn start_one(
        &self,
        node_id: String,
        socket: std::net::UdpSocket,
        handshakes: Arc<tokio::sync::Semaphore>,
    ) -> Result<NodeHandle, ClusterError> {
        let spec = NodeSpec {
            config: self.config.clone(),
            key: self.keys[&node_id].clone(),
            raft_directory: Some(self.raft_directories.of(&node_id)),
            node_id,
            directory: self.directory.clone(),
            socket,
            agents_start: AgentsStart::WhenTold,
            handshakes: Some(handshakes),
            faults: self.faults.clone(),
            registry: self.registry.clone(),
        };
        Ok(start_node(spec).await?)
    }

    /// Starts node `id` again after it stopped, on the same address, with
    /// the same key and the same replica log; its agents start at once.
    pub async fn restart_node(&mut self, id: &str) -> Result<(), ClusterError> {
        if self.node(id).is_some() || !self.keys.contains_key(id) {
            return Err(ClusterError::UnknownNode(id.into()));
        }
        let socket = bind_again(id, self.directory.node_addresses[id]).await?;
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_PROCESS_MAX));
        let node = self.start_one(id.to_string(), socket, handshakes).await?;
        let _ = node.supervisor.cast(NodeMsg::StartAgents);
        self.nodes.push(node);
        Ok(())
    }

    /// Forgets delivery latencies recorded so far (a benchmark's warm-up).
    pub fn reset_latency(&self) {
        for node in &self.nodes {
            let mut histograms = node
                .parts
                .shared
                .metrics
                .histograms
                .lock()
                .expect("metrics lock is never poisoned");
            histograms.reset_latency();
        }
    }

    /// Tells every node to start its agents.
    pub fn start_agents(&self) {
        for node in &self.nodes {
            let _ = node.supervisor.cast(NodeMsg::StartAgents);
        }
    }

    /// Seeing every node, a cluster in one process starts the agents only
    /// when every link is up (or `supervision.agents_start_timeout_ms` has
    /// passed), so no load meets a half-built overlay.
    async fn start_agents_when_links_up(&self) {
        let wait = Duration::from_millis(self.config.supervision.agents_start_timeout_ms);
        if self.wait_for_links(wait).await.is_none() {
            tracing::warn!("not every link came up within {wait:?}; starting the agents anyway");
        }
        self.start_agents();
    }

    pub fn node(&self, id: &str) -> Option<&NodeHandle> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// True when every node holds a connection to every neighbour.
    pub fn all_links_up(&self) -> bool {
        self.nodes.iter().all(node_links_up)
    }

    /// Waits until every link is up, at most `limit`. Returns how long it took.
    /// Polls every 5 ms, or less often when one look at every node costs
    /// more than a twentieth of that: the look shares the CPU with the
    /// handshakes it waits for.
    pub async fn wait_for_links(&self, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let look = Instant::now();
            if self.all_links_up() {
                return Some(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                return None;
            }
            let pause = Duration::from_millis(5).max(look.elapsed() * 20);
            tokio::time::sleep(pause).await;
        }
    }

    pub fn failed_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|node| !node.is_running())
            .map(|node| node.id.clone())
            .collect()
    }

    /// Agents stop generating load; in-flight messages are still delivered.
    pub fn quiesce(&self) {
        for node in &self.nodes {
            let _ = node.supervisor.cast(NodeMsg::Quiesce);
        }
    }

    /// Counters summed over the running nodes: [`LocalCluster::totals`]
    /// without merging every node's histograms, cheap enough to poll.
    pub fn counters(&self) -> CounterValues {
        let mut counters = CounterValues::default();
        for node in &self.nodes {
            counters.add(&node.parts.shared.metrics.counters.values());
        }
        counters
    }

    /// Deliveries by hops travelled, summed over the running nodes.
    pub fn hops(&self) -> Vec<u64> {
        let mut hops = Vec::new();
        for node in &self.nodes {
            add_hops(&mut hops, node.parts.shared.metrics.hop_values());
        }
        hops
    }

    /// Waits until everything sent was acknowledged or given up, or
    /// `limit` passes. Messages to the nodes `departed` are not waited for.
    pub async fn drain(&self, limit: Duration, departed: &[String]) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let counters = self.counters();
            if counters.settled() + self.unsettled_to(departed) >= counters.envelopes_sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn totals(&self) -> Totals {
        Totals::of(self.nodes.iter())
    }

    /// Asks the replica actor of node `id` directly (no client API),
    /// waiting at most `wait`; None if it runs no replica or did not answer.
    pub async fn ask_replica(
        &self,
        id: &str,
        request: crate::protocols::control::ClientRequest,
        wait: Duration,
    ) -> Option<crate::protocols::control::ClientReply> {
        let replica = self.node(id)?.parts.shared.mailboxes.replica.get()?;
        let call = |reply| crate::actors::messages::RaftMsg::Client { request, reply };
        match replica.call(call, Some(wait)).await {
            Ok(ractor::rpc::CallResult::Success(reply)) => Some(reply),
            _ => None,
        }
    }

    /// What the replica of node `id` knows of the group.
    pub async fn replica_status(
        &self,
        id: &str,
    ) -> Option<crate::protocols::control::ReplicaStatus> {
        use crate::protocols::control::{ClientReply, ClientRequest, Operation};
        let request = ClientRequest {
            request: crate::protocols::cluster_state::RequestId {
                client: 0,
                sequence: 0,
            },
            operation: Operation::Status,
        };
        match self
            .ask_replica(id, request, Duration::from_secs(1))
            .await?
        {
            ClientReply::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The control plane as its leader sees it (or, with no leader, the
    /// first running replica); None without replicas.
    pub async fn control_status(&self) -> Option<crate::protocols::control::ReplicaStatus> {
        let mut first = None;
        for node in &self.nodes {
            let Some(status) = self.replica_status(&node.id).await else {
                continue;
            };
            if status.role == "leader" {
                return Some(status);
            }
            first.get_or_insert(status);
        }
        first
    }

    /// The nodes here that run agent `name` now.
    pub fn nodes_running(&self, name: &str) -> Vec<&str> {
        (self.nodes.iter())
            .filter(|node| node.parts.data_path.agents.contains_key(name))
            .map(|node| node.id.as_str())
            .collect()
    }

    /// The committed directory of planned agents, if every node here
    /// applies the same one, it places every planned agent, and each runs
    /// on the node it names and on no other; otherwise what differs.
    pub fn placement_settled(&self) -> Result<BTreeMap<String, String>, String> {
        let mut directories = BTreeSet::new();
        for node in &self.nodes {
            directories.insert(node.parts.overlay.committed().placed.clone());
        }
        let directory = directories.pop_first().unwrap_or_default();
        if !directories.is_empty() {
            return Err(format!(
                "the nodes apply {} directories",
                directories.len() + 1
            ));
        }
        for agent in self.config.agents.iter().filter(|a| a.placement.planned) {
            let running = self.nodes_running(&agent.name);
            let placed = directory.get(&agent.name).map(String::as_str);
            if placed.is_none() || running != placed.into_iter().collect::<Vec<_>>() {
                return Err(format!(
                    "{} runs on {running:?}, placed on {placed:?}",
                    agent.name
                ));
            }
        }
        Ok(directory)
    }

    /// Takes node `id` out of the cluster without stopping it, so the
    /// caller can stop it on a task of its own (a benchmark times what
    /// the others do meanwhile).
    pub fn detach_node(&mut self, id: &str) -> Option<NodeHandle> {
        let index = self.nodes.iter().position(|node| node.id == id)?;
        Some(self.nodes.remove(index))
    }

    /// Stops node `id` as `how` says. False if no such node runs.
    pub async fn stop_node(&mut self, id: &str, how: Departure) -> bool {
        self.stop_nodes(&[id.to_string()], how).await > 0
    }

    /// Stops the nodes `ids` at once, as `how` says. Returns how many were
    /// running.
    pub async fn stop_nodes(&mut self, ids: &[String], how: Departure) -> usize {
        let (stopping, staying): (Vec<NodeHandle>, Vec<NodeHandle>) =
            std::mem::take(&mut self.nodes)
                .into_iter()
                .partition(|node| ids.contains(&node.id));
        self.nodes = staying;
        let count = stopping.len();
        let stops = stopping.into_iter().map(|node| async move {
            match how {
                Departure::Leave => node.shutdown().await,
                Departure::Crash => node.crash().await,
            }
        });
        futures::future::join_all(stops).await;
        count
    }

    /// `percent` of the running nodes (at least one, never all), chosen
    /// by the config's seed.
    pub fn choose_victims(&self, percent: f64) -> Vec<String> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let running = self.nodes.len();
        let count = ((running as f64 * percent / 100.0).round() as usize).clamp(1, running - 1);
        let mut ids: Vec<String> = self.nodes.iter().map(|node| node.id.clone()).collect();
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(self.config.seed);
        ids.shuffle(&mut random);
        ids.truncate(count);
        ids.sort();
        ids
    }

    /// Whether every running node's routing view leaves out every node of
    /// `departed`, and all of them hold the same overlay.
    pub fn routes_converged(&self, departed: &[String]) -> bool {
        let views: Vec<_> = self
            .nodes
            .iter()
            .map(|node| node.parts.overlay.routing_view())
            .collect();
        let excluded = views.iter().all(|view| {
            view.frame.me.is_some()
                && departed
                    .iter()
                    .all(|node| view.frame.overlay.index_of(node).is_none())
        });
        excluded
            && views
                .windows(2)
                .all(|pair| pair[0].frame.overlay == pair[1].frame.overlay)
    }

    /// Messages the running nodes still await acknowledgement of from
    /// the nodes `departed`.
    pub fn unsettled_to(&self, departed: &[String]) -> u64 {
        self.nodes
            .iter()
            .map(|node| {
                let core = node.parts.data_path.mesh_core();
                departed
                    .iter()
                    .map(|id| core.inflight_to(id) as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    pub async fn shutdown(self) {
        let stops = self.nodes.into_iter().map(|node| node.shutdown());
        futures::future::join_all(stops).await;
    }
}

pub fn node_links_up(node: &NodeHandle) -> bool {
    let neighbours = node
        .parts
        .overlay
        .neighbours
        .read()
        .expect("neighbours lock is never poisoned")
        .clone();
    !neighbours.is_empty()
        && neighbours
            .iter()
            .all(|peer| node.parts.shared.peers.is_connected(peer))
        || node.parts.shared.config.nodes.len() == 1
}

/// What running one node of `config` in this process needs, found before
/// anything starts: what `agentmesh node` refuses, `agentmesh check`
/// finds too.
pub struct SingleNodePlan {
    pub raft_directory: Option<std::path::PathBuf>,
    pub key: SigningKey,
    pub node_keys: HashMap<String, VerifyingKey>,
}

/// Checks that `node_id` can run alone in this process: every node has a
/// fixed port and a public key, a replica node has `control.data_dir`, and
/// its private key (`key_file`, or `key_file_given`) exists, is the
/// owner's alone and matches its public key.
pub fn plan_single(
    config: &ClusterConfig,
    node_id: &str,
    key_file_given: Option<&std::path::Path>,
) -> Result<SingleNodePlan, ClusterError> {
    let (raft_directory, node_keys) = single_node_needs(config, node_id)?;
    let path = key_file_given
        .map(std::path::Path::to_path_buf)
        .or_else(|| key_file_of(config, node_id))
        .ok_or_else(|| ClusterError::Key {
            node: node_id.into(),
            reason: "no private key: pass --key FILE or set key_file for this node".into(),
        })?;
    let key = read_matching_key(node_id, &path, &node_keys[node_id])?;
    Ok(SingleNodePlan {
        raft_directory,
        key,
        node_keys,
    })
}

/// `node_id`'s `key_file` in the config, resolved from the config's folder.
pub fn key_file_of(config: &ClusterConfig, node_id: &str) -> Option<std::path::PathBuf> {
    config
        .nodes
        .iter()
        .find(|node| node.id == node_id)
        .and_then(|node| node.key_file.clone())
}

/// What running `node_id` alone needs of the config, but its private key:
/// its replica folder, if any, and every node's public key.
pub fn single_node_needs(
    config: &ClusterConfig,
    node_id: &str,
) -> Result<(Option<std::path::PathBuf>, HashMap<String, VerifyingKey>), ClusterError> {
    if !config.nodes.iter().any(|node| node.id == node_id) {
        return Err(ClusterError::UnknownNode(node_id.into()));
    }
    if let Some(zero) = config.nodes.iter().find(|node| node.listen.port() == 0) {
        return Err(ClusterError::PortZero {
            node: zero.id.clone(),
        });
    }
    let raft_directory = match (&config.control.data_dir, config.control.replica_id(node_id)) {
        (Some(root), _) => Some(root.join(node_id)),
        (None, Some(_)) => {
            return Err(ClusterError::NoDataDir {
                node: node_id.into(),
            })
        }
        (None, None) => None,
    };
    let mut node_keys = HashMap::new();
    for peer in &config.nodes {
        let public = peer.public_key.ok_or_else(|| ClusterError::Key {
            node: peer.id.clone(),
            reason: "every node needs a public_key in the config to run as a separate process (see agentmesh keygen)".into(),
        })?;
        node_keys.insert(peer.id.clone(), public);
    }
    Ok((raft_directory, node_keys))
}

/// Every private key `agentmesh up` would read for `config` (none when
/// the config lists no keys: it makes them in memory), checked as it
/// checks them.
pub fn check_keys_for_all(config: &ClusterConfig) -> Result<(), ClusterError> {
    keys_for_all(config).map(|_| ())
}

/// Starts node `node_id` of `config` in this process (see [`plan_single`]).
pub async fn start_single(
    config: ClusterConfig,
    node_id: &str,
    key_file: Option<&std::path::Path>,
) -> Result<NodeHandle, ClusterError> {
    let registry = Registry::with_builtins();
    registry.check(&config)?;
    let SingleNodePlan {
        raft_directory,
        key,
        node_keys,
    } = plan_single(&config, node_id, key_file)?;
    let node = config
        .nodes
        .iter()
        .find(|node| node.id == node_id)
        .expect("plan_single found it");
    let node_addresses = config
        .nodes
        .iter()
        .map(|node| (node.id.clone(), node.listen))
        .collect();
    let socket = bind(node_id, node.listen)?;
    let directory = Arc::new(Directory::new(&config, node_keys, node_addresses));
    let faults = fault_net(&config, &directory);
    let spec = NodeSpec {
        faults,
        raft_directory,
        config: Arc::new(config),
        node_id: node_id.into(),
        key,
        directory,
        socket,
        agents_start: AgentsStart::WhenNeighboursUp,
        handshakes: None,
        registry: Arc::new(registry),
    };
    Ok(start_node(spec).await?)
}

/// The fault layer `[faults]` asks for, knowing every node's address.
fn fault_net(config: &ClusterConfig, directory: &Directory) -> Option<Arc<FaultNet>> {
    let net = FaultNet::new(config.faults.as_ref()?);
    for (node, address) in &directory.node_addresses {
        net.learn(node, *address);
    }
    Some(net)
}

/// Handshakes in progress at once across every node of a cluster in one
/// process: they share its cores, and a few dozen keep them busy.
const HANDSHAKES_IN_PROCESS_MAX: usize = 32;

/// How a node stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Departure {
    /// It tells its peers it leaves; they count it dead at once.
    Leave,
    /// It goes without a word, as a crash would; its peers' failure
    /// detectors find out.
    Crash,
}

/// Counters and histograms summed over nodes.
pub struct Totals {
    pub counters: CounterValues,
    /// Deliveries by hops travelled: index h counts those of h hops.
    pub hops: Vec<u64>,
    /// Delivery latency by hops travelled.
    pub latency_by_hops: Vec<Histogram<u64>>,
    pub latency: Histogram<u64>,
    pub connection_setup: Histogram<u64>,
}

/// Adds latency histograms by hop count to `total`'s.
fn add_by_hops(total: &mut Vec<Histogram<u64>>, other: &[Histogram<u64>]) {
    for (hops, histogram) in other.iter().enumerate() {
        match total.get_mut(hops) {
            Some(sum) => {
                let _ = sum.add(histogram);
            }
            None => total.push(histogram.clone()),
        }
    }
}

/// Adds one node's (or one process's) deliveries by hops to `total`.
pub fn add_hops(total: &mut Vec<u64>, hops: Vec<u64>) {
    total.resize(total.len().max(hops.len()), 0);
    for (total, count) in total.iter_mut().zip(hops) {
        *total += count;
    }
}

impl Totals {
    pub fn of<'n>(nodes: impl Iterator<Item = &'n NodeHandle>) -> Totals {
        let mut totals = Totals {
            counters: CounterValues::default(),
            hops: Vec::new(),
            latency_by_hops: Vec::new(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static bounds are valid"),
            connection_setup: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static bounds are valid"),
        };
        for node in nodes {
            totals
                .counters
                .add(&node.parts.shared.metrics.counters.values());
            add_hops(&mut totals.hops, node.parts.shared.metrics.hop_values());
            let histograms = node
                .parts
                .shared
                .metrics
                .histograms
                .lock()
                .expect("metrics lock is never poisoned");
            let _ = totals.latency.add(&histograms.delivery_latency_micros);
            add_by_hops(
                &mut totals.latency_by_hops,
                &histograms.latency_by_hops_micros,
            );
            let _ = totals
                .connection_setup
                .add(&histograms.connection_setup_micros);
        }
        totals
    }

    /// Adds another part's totals (a cluster over several processes).
    pub fn merge(&mut self, other: &Totals) {
        self.counters.add(&other.counters);
        add_hops(&mut self.hops, other.hops.clone());
        let _ = self.latency.add(&other.latency);
        let _ = self.connection_setup.add(&other.connection_setup);
        add_by_hops(&mut self.latency_by_hops, &other.latency_by_hops);
    }

    /// Transmissions dropped on the way, each with a counted cause; the
    /// origin retransmits every one of them until it is acknowledged or its
    /// retries run out.
    pub fn dropped_in_transit(&self) -> u64 {
        let counters = &self.counters;
        counters.dropped_agent_inbox_full
            + counters.dropped_agent_missing
            + counters.dropped_bad_signature
            + counters.dropped_misrouted
            + counters.dropped_unknown_origin
            + counters.dropped_ttl_expired
            + counters.dropped_no_route
            + counters.dropped_queue_full
            + counters.dropped_peer_down
    }

    pub fn refused(&self) -> u64 {
        let counters = &self.counters;
        counters.refused_router_busy
            + counters.refused_no_route
            + counters.refused_payload_too_large
            + counters.refused_rate_limited
            + counters.refused_inflight_full
    }
}

/// The end-of-run figures of `agentmesh up`.
#[derive(Clone, Debug, Serialize)]
pub struct UpSummary {
    pub cluster: String,
    pub nodes: usize,
    pub agents: usize,
    pub topology: String,
    pub duration_s: f64,
    /// From start until every overlay link was up.
    pub links_up_ms: Option<f64>,
    /// QUIC connections dialed and established (one per overlay link).
    pub connections: u64,
    pub connection_setup_ms: LatencySummary,
    pub sent: u64,
    pub delivered: u64,
    /// Messages the destination acknowledged consuming.
    pub acknowledged: u64,
    /// Messages given up after every retry.
    pub lost: u64,
    /// Messages neither acknowledged nor given up when the run ended.
    pub unsettled: u64,
    /// Transmissions dropped on the way (each retried), by counted causes.
    pub dropped: u64,
    pub retransmissions: u64,
    pub refused: u64,
    pub duplicates_dropped: u64,
    pub delivered_per_s: f64,
    /// Deliveries by hops travelled, up to the longest seen.
    pub hops: Vec<u64>,
    pub hops_mean: f64,
    /// Deliveries over as few hops as the overlay allowed, in percent.
    pub shortest_path_percent: f64,
    pub latency_ms: LatencySummary,
    pub restarts: u64,
    pub failed_nodes: Vec<String>,
    /// Set when part of the cluster was stopped mid-run.
    pub kill: Option<KillReport>,
    /// The control plane at the end of the run, as its leader (or, with
    /// none, the first replica that answered) saw it.
    pub control: Option<crate::protocols::control::ReplicaStatus>,
    pub counters: CounterValues,
}

/// What happened when `up --kill` stopped part of the cluster mid-run.
#[derive(Clone, Debug, Serialize)]
pub struct KillReport {
    pub killed: Vec<String>,
    pub how: Departure,
    /// Seconds into the load when the nodes were stopped.
    pub at_s: f64,
    /// How long the stopped nodes took to shut down.
    pub stop_ms: f64,
    /// From the stop until every other node's overlay and routes left the
    /// stopped nodes out, and all of them agreed.
    pub routes_converged_ms: Option<f64>,
    /// From the stop until every other node held every link of its new
    /// overlay.
    pub links_up_ms: Option<f64>,
    /// Messages to the stopped nodes not acknowledged when the run ended
    /// (still retried: a node may come back).
    pub unsettled_to_departed: u64,
}

impl UpSummary {
    pub fn new(
        cluster: &LocalCluster,
        totals: &Totals,
        links_up: Option<Duration>,
        active: Duration,
    ) -> UpSummary {
        let counters = totals.counters.clone();
        let dropped = totals.dropped_in_transit();
        let settled = counters.settled();
        UpSummary {
            cluster: cluster.config.name.clone(),
            nodes: cluster.nodes.len(),
            agents: cluster.config.agents.len(),
            topology: cluster.config.topology.kind.name().into(),
            duration_s: active.as_secs_f64(),
            links_up_ms: links_up.map(|elapsed| elapsed.as_secs_f64() * 1e3),
            connections: totals.connection_setup.len(),
            connection_setup_ms: LatencySummary::of(&totals.connection_setup),
            sent: counters.envelopes_sent,
            delivered: counters.envelopes_delivered,
            acknowledged: counters.acknowledged,
            lost: counters.lost_retries_exhausted,
            unsettled: counters.envelopes_sent.saturating_sub(settled),
            dropped,
            retransmissions: counters.retransmissions,
            refused: totals.refused(),
            duplicates_dropped: counters.dropped_duplicate,
            delivered_per_s: counters.envelopes_delivered as f64 / active.as_secs_f64().max(1e-9),
            hops: hops_seen(&totals.hops),
            hops_mean: mean_hops(&totals.hops),
            shortest_path_percent: percent(
                counters.delivered_on_shortest_path,
                counters.envelopes_delivered,
            ),
            latency_ms: LatencySummary::of(&totals.latency),
            restarts: counters.actor_restarts,
            failed_nodes: cluster.failed_nodes(),
            kill: None,
            control: None,
            counters,
        }
    }

    /// Everything sent was delivered and acknowledged (except, after a
    /// kill, what was sent to the stopped nodes), and no node failed.
    pub fn clean(&self) -> bool {
        let (lost_allowed, unsettled_allowed) = self.kill.as_ref().map_or((0, 0), |kill| {
            (self.counters.lost_to_departed, kill.unsettled_to_departed)
        });
        self.lost == lost_allowed
            && self.unsettled == unsettled_allowed
            && self.failed_nodes.is_empty()
    }

    pub fn to_text(&self) -> String {
        let percent = percent(self.delivered, self.sent);
        let links = self.links_up_ms.map_or("not all up".to_string(), |ms| {
            format!("all up {ms:.0} ms after start")
        });
        let c = &self.counters;
        let l = &self.latency_ms;
        let s = &self.connection_setup_ms;
        let mut text = String::new();
        text += &format!(
            "agentmesh up: cluster {:?}, {} nodes, {}, {} agents, {:.1} s of load\n",
            self.cluster, self.nodes, self.topology, self.agents, self.duration_s
        );
        text += &format!(
            "  links      {} QUIC connections, {links}; set-up p50 {:.2} ms, p99 {:.2} ms\n",
            self.connections, s.p50, s.p99
        );
        // The stopped nodes' own counters left with them; what they sent
        // before may still be delivered here.
        let from_stopped = if self.kill.is_some() {
            ", with some from the stopped nodes"
        } else {
            ""
        };
        text += &format!(
            "  messages   sent {}  delivered {} ({percent:.2} %{from_stopped})  acknowledged {}  lost {}  unsettled {}\n",
            self.sent, self.delivered, self.acknowledged, self.lost, self.unsettled
        );
        text += &format!(
            "  on the way {} dropped and retransmitted (ttl {}, no route {}, queue full {}, peer down {}, inbox full {}); {} retransmissions; {} duplicates dropped\n",
            self.dropped,
            c.dropped_ttl_expired,
            c.dropped_no_route,
            c.dropped_queue_full,
            c.dropped_peer_down,
            c.dropped_agent_inbox_full,
            self.retransmissions,
            self.duplicates_dropped
        );
        text += &format!(
            "  refused    {} (router busy {}, in flight full {}, rate limited {}, no route {})\n",
            self.refused,
            c.refused_router_busy,
            c.refused_inflight_full,
            c.refused_rate_limited,
            c.refused_no_route
        );
        text += &format!(
            "  rate       {:.0} messages/s delivered\n",
            self.delivered_per_s
        );
        let hops: Vec<String> = self
            .hops
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(hops, count)| format!("{hops}: {count}"))
            .collect();
        text += &format!(
            "  routes     deliveries by hops {{{}}}, mean {:.2}; {:.1} % over a shortest path\n",
            hops.join(", "),
            self.hops_mean,
            self.shortest_path_percent
        );
        text += &format!(
            "  latency    mean {:.3} ms  p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3} ms\n",
            l.mean, l.p50, l.p95, l.p99, l.max
        );
        if let Some(kill) = &self.kill {
            let within = |ms: Option<f64>| {
                ms.map_or("not within the wait".into(), |ms| format!("{ms:.0} ms"))
            };
            text += &format!(
                "  kill       stopped {} nodes ({:?}) at {:.1} s {:?} (shut down in {:.0} ms); routes converged on the others after {}, their links all up after {}; to the stopped nodes: {} given up, {} unsettled\n",
                kill.killed.len(),
                kill.how,
                kill.at_s,
                kill.killed,
                kill.stop_ms,
                within(kill.routes_converged_ms),
                within(kill.links_up_ms),
                c.lost_to_departed,
                kill.unsettled_to_departed
            );
        }
        if let Some(control) = &self.control {
            text += &format!(
                "  control    leader {}, term {}, commit {}, {} keys, voters {}\n",
                control.leader.as_deref().unwrap_or("NONE"),
                control.term,
                control.commit_index,
                control.keys,
                control.voters.join(",")
            );
        }
        text += &format!(
            "  restarts   {}  failed nodes {:?}\n",
            self.restarts, self.failed_nodes
        );
        text += if self.clean() {
            "  result     every message to a running node was delivered and acknowledged\n"
        } else {
            "  result     MESSAGES LOST OR NODES FAILED\n"
        };
        text
    }
}

/// `part` of `whole` in percent; 100 when there is nothing to count.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The counts up to the last nonzero one.
fn hops_seen(hops: &[u64]) -> Vec<u64> {
    let seen = hops
        .iter()
        .rposition(|&count| count > 0)
        .map_or(0, |last| last + 1);
    hops[..seen].to_vec()
}

fn mean_hops(hops: &[u64]) -> f64 {
    let count: u64 = hops.iter().sum();
    let total: u64 = hops
        .iter()
        .enumerate()
        .map(|(hops, &count)| hops as u64 * count)
        .sum();
    total as f64 / count.max(1) as f64
}
