//! The cluster configuration: the TOML schema, its defaults and its
//! validation.
//!
//! Parsing goes in two steps. Serde reads the file into `raw` structs that
//! refuse unknown keys; [`validate`] then checks every rule that spans keys
//! (unique ids, known behaviours, k against the node count, ...) and builds
//! the [`ClusterConfig`] the rest of the program uses. Every problem found is
//! reported, each naming the file, the key path and the reason; nothing
//! starts from a config with any error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::identity;
use crate::protocols::membership::DetectorConfig;
use crate::protocols::supervision::RestartPolicy;
use crate::protocols::topology::{KRule, Shape};
use crate::protocols::wire::limits::{FRAME_BYTES_MAX, NAME_BYTES_MAX, PAYLOAD_BYTES_MAX, TTL_MAX};
use crate::protocols::wire::Authentication;

pub mod faults;
pub mod pbft;
pub use faults::{DiskFault, FaultsConfig};
pub use pbft::PbftSettings;

/// The example cluster that `agentmesh up` runs when given no file.
pub const EMBEDDED_LOCAL: &str = include_str!("../../config/local.toml");
pub const EMBEDDED_LOCAL_NAME: &str = "config/local.toml (embedded)";
pub const EMBEDDED_CHAOS: &str = include_str!("../../config/chaos.toml");
pub const EMBEDDED_CHAOS_NAME: &str = "config/chaos.toml (embedded)";

/// Most agents one config may declare, all entries' counts together.
pub const AGENTS_MAX: usize = 100_000;
/// Most nodes one config may declare.
pub use crate::protocols::wire::limits::NODES_MAX;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the key is, as `section[index].key`.
    pub key_path: String,
    pub reason: String,
}

/// Everything wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            formatter,
            "{}: {count} problem{}",
            self.file,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(
                formatter,
                "\n  {}: {}: {}",
                self.file, problem.key_path, problem.reason
            )?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where this config came from, for messages.
    pub source: String,
    pub name: String,
    /// Every random choice in the cluster derives from this.
    pub seed: u64,
    pub nodes: Vec<NodeConfig>,
    pub topology: TopologyConfig,
    pub transport: TransportConfig,
    pub limits: LimitsConfig,
    pub supervision: SupervisionConfig,
    pub membership: MembershipConfig,
    pub delivery: DeliveryConfig,
    pub control: ControlConfig,
    pub pbft: PbftSettings,
    /// None: sockets carry datagrams as they are.
    pub faults: Option<FaultsConfig>,
    /// Replicas whose disks are made to fail, by node id.
    pub disk_faults: BTreeMap<String, DiskFault>,
    pub agents: Vec<AgentConfig>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: String,
    pub listen: SocketAddr,
    /// None in local runs, where identities are made in memory.
    pub public_key: Option<VerifyingKey>,
    /// The private key, for `agentmesh node`; relative paths are resolved
    /// against the config file's folder.
    pub key_file: Option<PathBuf>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Where this node answers `agentmesh kv` and `agentmesh status`
    /// (control-plane replicas only; loopback only).
    pub client_listen: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    FullMesh,
    PartialMesh,
    Ring,
    Hierarchical,
    HubSpoke,
    Sharded,
}

impl TopologyKind {
    pub const ALL: [TopologyKind; 6] = [
        TopologyKind::FullMesh,
        TopologyKind::PartialMesh,
        TopologyKind::Ring,
        TopologyKind::Hierarchical,
        TopologyKind::HubSpoke,
        TopologyKind::Sharded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::FullMesh => "full-mesh",
            TopologyKind::PartialMesh => "partial-mesh",
            TopologyKind::Ring => "ring",
            TopologyKind::Hierarchical => "hierarchical",
            TopologyKind::HubSpoke => "hub-spoke",
            TopologyKind::Sharded => "sharded",
        }
    }

    /// The kind named `name`, or a message listing the names.
    pub fn parse(name: &str) -> Result<TopologyKind, String> {
        TopologyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = TopologyKind::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown topology {name:?}; available: {}", names.join(", "))
            })
    }
}

#[derive(Clone, Debug)]
pub struct TopologyConfig {
    pub kind: TopologyKind,
    /// Neighbours per node for partial-mesh and inside shards; None picks k
    /// from the node count with `k_rule`.
    pub k: Option<usize>,
    pub k_rule: KRule,
    /// Children per node of the hierarchical tree.
    pub fanout: usize,
    /// Hubs of the hub-spoke shape.
    pub hubs: usize,
    /// Nodes per shard of the sharded shape.
    pub shard_size: usize,
}

impl TopologyConfig {
    /// The k the partial mesh uses for `nodes` nodes.
    pub fn k_for(&self, nodes: usize) -> usize {
        self.k.unwrap_or_else(|| self.k_rule.k_for(nodes))
    }

    /// The overlay shape for a cluster of `nodes` nodes.
    pub fn shape(&self, nodes: usize) -> Shape {
        match self.kind {
            TopologyKind::FullMesh => Shape::FullMesh,
            TopologyKind::PartialMesh => Shape::PartialMesh {
                k: self.k_for(nodes),
            },
            TopologyKind::Ring => Shape::Ring,
            TopologyKind::Hierarchical => Shape::Hierarchical {
                fanout: self.fanout,
            },
            TopologyKind::HubSpoke => Shape::HubSpoke { hubs: self.hubs },
            TopologyKind::Sharded => Shape::Sharded {
                shard_size: self.shard_size,
                k: self.k_for(self.shard_size.min(nodes)),
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// QUIC keep-alive interval; quinn sends none unless told.
    pub keep_alive_ms: u64,
    /// A connection silent this long is closed.
    pub idle_timeout_ms: u64,
    /// A dial that has not completed its handshake by then is abandoned.
    pub connect_timeout_ms: u64,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Frames waiting for one peer's connection; a full queue refuses sends.
    pub peer_send_queue_max: usize,
    pub frame_bytes_max: usize,
    /// Decoded frames handed to the router in one message.
    pub receive_batch_max: usize,
    /// Envelopes per second one peer connection may hand this node (0: no
    /// limit); beyond it they are dropped before any signature is checked
    /// and counted, so a flooding peer cannot starve the others. The
    /// senders' retransmissions make good what an honest peer loses.
    pub peer_envelopes_per_second_max: f64,
    /// Envelopes a peer may send at once above that rate.
    pub peer_envelope_burst_max: u32,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            keep_alive_ms: 1_000,
            idle_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 5_000,
            peer_send_queue_max: 8_192,
            frame_bytes_max: FRAME_BYTES_MAX,
            receive_batch_max: 128,
            peer_envelopes_per_second_max: 200_000.0,
            peer_envelope_burst_max: 50_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages waiting in a router's mailbox, from agents and the network.
    pub router_queue_max: usize,
    /// Deliveries waiting in one agent's mailbox.
    pub agent_inbox_max: usize,
    pub payload_bytes_max: usize,
    /// Hops an envelope may travel.
    pub ttl: u8,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            router_queue_max: 16_384,
            agent_inbox_max: 4_096,
            payload_bytes_max: 64 * 1024,
            ttl: 8,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts a supervisor allows within `restart_window_ms`; one more
    /// failure escalates to its own supervisor.
    pub restarts_max: u32,
    pub restart_window_ms: u64,
    pub restart_backoff_min_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Agents start when every neighbour is connected, or after this long.
    pub agents_start_timeout_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> SupervisionConfig {
        SupervisionConfig {
            restarts_max: 5,
            restart_window_ms: 10_000,
            restart_backoff_min_ms: 10,
            restart_backoff_max_ms: 1_000,
            agents_start_timeout_ms: 10_000,
        }
    }
}

impl SupervisionConfig {
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            restarts_max: self.restarts_max,
            window_ms: self.restart_window_ms,
            backoff_min_ms: self.restart_backoff_min_ms,
            backoff_max_ms: self.restart_backoff_max_ms,
        }
    }
}

/// Heartbeats and the phi-accrual failure detector: the `[membership]`
/// section is the detector's settings.
pub type MembershipConfig = DetectorConfig;

/// End-to-end acknowledgements, retransmission and per-source rate limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How often the router sends acknowledgements and checks for
    /// retransmissions.
    pub tick_ms: u64,
    pub retransmit_timeout_ms: u64,
    pub retransmit_timeout_max_ms: u64,
    /// Retransmissions before a message is given up (retries_exhausted).
    pub retries_max: u32,
    /// Messages a node keeps awaiting acknowledgement.
    pub inflight_max: usize,
    /// Messages per second one agent may send; 0 means no limit.
    pub source_rate_max: f64,
    /// Messages one agent may send at once above its rate.
    pub source_burst_max: u32,
    /// How a node authenticates the data envelopes it originates:
    /// "pair-key" (a MAC only the destination node can check, about a
    /// microsecond) or "signature" (Ed25519, which anyone holding the
    /// config can check, at tens of microseconds per envelope).
    pub authentication: Authentication,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            tick_ms: 20,
            retransmit_timeout_ms: 500,
            retransmit_timeout_max_ms: 4_000,
            retries_max: 8,
            inflight_max: 65_536,
            source_rate_max: 0.0,
            source_burst_max: 1_000,
            authentication: Authentication::PairKey,
        }
    }
}

/// The Raft control plane: which nodes hold replicas of the cluster state,
/// where they keep it, and its timing.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Nodes whose replicas vote from the start, in raft id order (the
    /// first is id 1). Empty: no control plane.
    pub replicas: Vec<String>,
    /// Nodes that run a replica outside the group until `agentmesh members
    /// add` makes it a learner (it then catches up and is promoted to
    /// voter); their raft ids follow the replicas'.
    pub standby: Vec<String>,
    /// Each replica keeps its log in `data_dir/<node id>`; None: a
    /// temporary folder for the run (`agentmesh up` only).
    pub data_dir: Option<PathBuf>,
    /// Force every write to disk before it counts (fdatasync). Off only
    /// for benchmarks: a machine crash may then lose acknowledged writes.
    pub fsync: bool,
    pub tick_ms: u64,
    /// Ticks without a leader before a replica stands for election (each
    /// replica adds a few of its own, so they rarely stand together).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Entries applied between two snapshots of the state.
    pub compact_every: u64,
    /// Bytes of entries applied since the last snapshot that also call
    /// for one: the log is held in memory until it is compacted.
    pub compact_bytes: u64,
    /// A client request not answered by then fails with a timeout.
    pub request_timeout_ms: u64,
    /// Client requests one replica holds awaiting their answers; more are
    /// refused as busy.
    pub pending_requests_max: usize,
    /// Largest batch of entries in one append message, in bytes.
    pub message_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub inflight_messages_max: usize,
}

impl ControlConfig {
    /// Every node that runs a replica, voting or standing by, in raft id
    /// order.
    pub fn replica_nodes(&self) -> impl Iterator<Item = &String> {
        self.replicas.iter().chain(&self.standby)
    }

    /// The raft id of `node`, if it runs a replica.
    pub fn replica_id(&self, node: &str) -> Option<u64> {
        self.replica_nodes()
            .position(|replica| replica == node)
            .map(|index| index as u64 + 1)
    }

    /// The node running replica `id`.
    pub fn replica_node(&self, id: u64) -> Option<&str> {
        let index = usize::try_from(id.checked_sub(1)?).ok()?;
        self.replica_nodes().nth(index).map(String::as_str)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawControl {
    replicas: Vec<String>,
    standby: Vec<String>,
    data_dir: Option<PathBuf>,
    fsync: bool,
    tick_ms: u64,
    election_ticks: usize,
    heartbeat_ticks: usize,
    compact_every: u64,
    compact_bytes: u64,
    request_timeout_ms: u64,
    pending_requests_max: usize,
    message_bytes_max: u64,
    inflight_messages_max: usize,
}

impl Default for RawControl {
    fn default() -> RawControl {
        RawControl {
            replicas: Vec::new(),
            standby: Vec::new(),
            data_dir: None,
            fsync: true,
            tick_ms: 10,
            election_ticks: 20,
            heartbeat_ticks: 4,
            compact_every: 10_000,
            compact_bytes: 64 * 1024 * 1024,
            request_timeout_ms: 5_000,
            pending_requests_max: 16_384,
            message_bytes_max: 1024 * 1024,
            inflight_messages_max: 256,
        }
    }
}

/// Most replicas a control plane may have: each write waits for a majority.
pub const REPLICAS_MAX: usize = 9;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Cluster-unique name, after `{i}` expansion.
    pub name: String,
    pub node: String,
    pub behaviour: BehaviourConfig,
}

/// A behaviour by name, with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum BehaviourConfig {
    /// Answers every data message with a reply carrying the same payload.
    Echo,
    Storm(StormConfig),
    /// Records what it receives (up to a million deliveries) and answers
    /// nothing: for tests and checks of exactly-once delivery.
    Sink,
}

impl BehaviourConfig {
    pub const NAMES: [&'static str; 3] = ["echo", "storm", "sink"];

    pub fn name(&self) -> &'static str {
        match self {
            BehaviourConfig::Echo => "echo",
            BehaviourConfig::Storm(_) => "storm",
            BehaviourConfig::Sink => "sink",
        }
    }
}

/// Sends signed messages at a steady rate.
#[derive(Clone, Debug, PartialEq)]
pub struct StormConfig {
    /// Messages per second; 0 sends nothing.
    pub rate: f64,
    pub payload_bytes: usize,
    /// Agents to send to, chosen at random for each message. Empty: every
    /// other agent in the cluster.
    pub targets: Vec<String>,
    /// Stop after this many messages (None: until the run ends).
    pub messages_max: Option<u64>,
    pub tick_ms: u64,
}

// ---------------------------------------------------------------------------
// The raw, serde-facing schema.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: RawCluster,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default)]
    transport: TransportConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    supervision: SupervisionConfig,
    #[serde(default)]
    membership: MembershipConfig,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    pbft: pbft::RawPbft,
    faults: Option<faults::RawFaults>,
    #[serde(default)]
    disk_faults: Vec<faults::RawDiskFault>,
    #[serde(default)]
    agents: Vec<RawAgent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(default)]
    seed: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    listen: String,
    public_key: Option<String>,
    key_file: Option<PathBuf>,
    region: Option<String>,
    zone: Option<String>,
    client_listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopology {
    kind: TopologyKind,
    k: Option<usize>,
    k_factor: f64,
    k_min: usize,
    k_max: usize,
    fanout: usize,
    hubs: usize,
    shard_size: usize,
}

impl Default for RawTopology {
    fn default() -> RawTopology {
        let rule = KRule::default();
        RawTopology {
            kind: TopologyKind::FullMesh,
            k: None,
            k_factor: rule.factor,
            k_min: rule.min,
            k_max: rule.max,
            fanout: 4,
            hubs: 1,
            shard_size: 250,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    #[serde(default = "one")]
    count: usize,
    behaviour: String,
    node: Option<String>,
    placement: Option<String>,
    rate: Option<f64>,
    payload_bytes: Option<usize>,
    targets: Option<Vec<String>>,
    messages_max: Option<u64>,
    tick_ms: Option<u64>,
}

fn one() -> usize {
    1
}

// ---------------------------------------------------------------------------
// Loading.

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        file: file.clone(),
        problems: vec![ConfigProblem {
            key_path: "(file)".into(),
            reason: error.to_string(),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &file, &base)
}

/// The embedded example cluster.
pub fn embedded_local() -> ClusterConfig {
    parse(EMBEDDED_LOCAL, EMBEDDED_LOCAL_NAME, Path::new("."))
        .expect("the embedded config is valid; a test checks it")
}

/// The embedded cluster `agentmesh chaos` runs by default.
pub fn embedded_chaos() -> ClusterConfig {
    parse(EMBEDDED_CHAOS, EMBEDDED_CHAOS_NAME, Path::new("."))
        .expect("the embedded chaos config is valid; a test checks it")
}

/// Parses and validates config text. `file` names it in messages; relative
/// key files are resolved against `base`.
pub fn parse(text: &str, file: &str, base: &Path) -> Result<ClusterConfig, ConfigError> {
    let deserializer = toml::Deserializer::new(text);
    let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let position = inner
            .span()
            .map(|span| line_and_column_of(text, span.start));
        let key_path = match path {
            // No key was reached: the text itself does not parse.
            path if path == "." || path.is_empty() => match position {
                Some(_) => "(syntax)".to_string(),
                None => "(top level)".to_string(),
            },
            path => path,
        };
        let mut reason = inner.message().trim().to_string();
        if let Some((line, column)) = position {
            reason.push_str(&format!(" (line {line}, column {column})"));
        }
        ConfigError {
            file: file.to_string(),
            problems: vec![ConfigProblem { key_path, reason }],
        }
    })?;
    let mut checker = Checker::default();
    let config = validate(raw, file, base, &mut checker);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            file: file.to_string(),
            problems: checker.problems,
        })
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column_of(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[derive(Default)]
struct Checker {
    problems: Vec<ConfigProblem>,
}

impl Checker {
    fn fail(&mut self, key_path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(ConfigProblem {
            key_path: key_path.into(),
            reason: reason.into(),
        });
    }

    /// Fails unless `value` lies in `low..=high`.
    fn range<T: PartialOrd + fmt::Display>(&mut self, key_path: &str, value: T, low: T, high: T) {
        if value < low || value > high {
            self.fail(
                key_path,
                format!("{value} is outside the allowed range {low} to {high}"),
            );
        }
    }

    /// `node`, named at `key_path`, must be a node's id, named once
    /// among those in `seen`.
    fn node_once<'n>(
        &mut self,
        key_path: &str,
        node: &'n String,
        nodes: &[NodeConfig],
        seen: &mut BTreeSet<&'n String>,
    ) {
        if !nodes.iter().any(|entry| entry.id == *node) {
            self.fail(
                key_path,
                format!("{node:?} is not the id of a [[nodes]] entry"),
            );
        }
        if !seen.insert(node) {
            self.fail(key_path, format!("{node:?} is named twice"));
        }
    }

    fn name(&mut self, key_path: &str, name: &str) {
        if let Some(problem) = name_problem(name) {
            self.fail(key_path, problem);
        }
    }
}

/// Why `name` cannot name a cluster, node or agent (and so a file:
/// `keygen` writes `<id>.key`), or None if it can.
pub fn name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let only_dots = name.chars().all(|c| c == '.');
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.chars().all(allowed) || only_dots {
        return Some(format!(
            "{name:?} is not a valid name: use 1 to {NAME_BYTES_MAX} letters, digits, '-', '_' or '.', not only dots"
        ));
    }
    None
}

fn validate(raw: RawConfig, file: &str, base: &Path, checker: &mut Checker) -> ClusterConfig {
    checker.name("cluster.name", &raw.cluster.name);
    let nodes = validate_nodes(&raw.nodes, base, checker);
    let topology = validate_topology(&raw.topology, nodes.len(), checker);
    validate_transport(&raw.transport, checker);
    validate_limits(&raw.limits, checker);
    validate_supervision(&raw.supervision, checker);
    validate_membership(&raw.membership, checker);
    validate_delivery(&raw.delivery, checker);
    let agents = validate_agents(&raw.agents, &nodes, &raw.limits, checker);
    let control = validate_control(raw.control, &nodes, base, checker);
    let pbft = pbft::validate_pbft(raw.pbft, &nodes, checker);
    let faults = faults::validate_faults(raw.faults, raw.cluster.seed, &nodes, checker);
    let replicas: Vec<String> = control
        .replicas
        .iter()
        .chain(&control.standby)
        .cloned()
        .collect();
    let disk_faults = faults::validate_disk_faults(raw.disk_faults, &replicas, checker);
    if checker.problems.is_empty() {
        validate_reach(&nodes, &topology, raw.cluster.seed, raw.limits.ttl, checker);
    }
    ClusterConfig {
        source: file.to_string(),
        name: raw.cluster.name,
        seed: raw.cluster.seed,
        nodes,
        topology,
        transport: raw.transport,
        limits: raw.limits,
        supervision: raw.supervision,
        membership: raw.membership,
        delivery: raw.delivery,
        control,
        pbft,
        faults,
        disk_faults,
        agents,
    }
}

fn validate_control(
    raw: RawControl,
    nodes: &[NodeConfig],
    base: &Path,
    checker: &mut Checker,
) -> ControlConfig {
    if raw.replicas.len() + raw.standby.len() > REPLICAS_MAX {
        checker.fail(
            "control.replicas",
            format!(
                "{} replicas and {} on standby exceed the limit of {REPLICAS_MAX}",
                raw.replicas.len(),
                raw.standby.len()
            ),
        );
    }
    if raw.replicas.is_empty() && !raw.standby.is_empty() {
        checker.fail(
            "control.standby",
            "standby replicas need a group to join: list control.replicas",
        );
    }
    let mut seen = BTreeSet::new();
    let named = raw.replicas.iter().map(|replica| ("replicas", replica));
    let standing_by = raw.standby.iter().map(|replica| ("standby", replica));
    for (index, (list, replica)) in named.chain(standing_by).enumerate() {
        let index = if list == "replicas" {
            index
        } else {
            index - raw.replicas.len()
        };
        let at = format!("control.{list}[{index}]");
        checker.node_once(&at, replica, nodes, &mut seen);
    }
    for (index, node) in nodes.iter().enumerate() {
        let Some(client) = node.client_listen else {
            continue;
        };
        let at = format!("nodes[{index}].client_listen");
        if !raw.replicas.contains(&node.id) && !raw.standby.contains(&node.id) {
            checker.fail(&at, format!("node {:?} holds no control replica (control.replicas or control.standby), so it has no client API to offer", node.id));
        }
        if !client.ip().is_loopback() {
            checker.fail(&at, format!("{client} is not a loopback address: the client API does not authenticate its callers, so it listens on this host only (127.0.0.1 or [::1])"));
        }
        if client.port() == 0 {
            checker.fail(
                &at,
                "give the client API a fixed port, so agentmesh kv can find it",
            );
        }
    }
    checker.range("control.tick_ms", raw.tick_ms, 1, 1_000);
    checker.range("control.heartbeat_ticks", raw.heartbeat_ticks, 1, 1_000);
    checker.range(
        "control.election_ticks",
        raw.election_ticks,
        raw.heartbeat_ticks + 1,
        10_000,
    );
    checker.range("control.compact_every", raw.compact_every, 1, 100_000_000);
    checker.range(
        "control.compact_bytes",
        raw.compact_bytes,
        1024,
        16 * 1024 * 1024 * 1024,
    );
    checker.range(
        "control.request_timeout_ms",
        raw.request_timeout_ms,
        10,
        600_000,
    );
    checker.range(
        "control.pending_requests_max",
        raw.pending_requests_max,
        1,
        1_000_000,
    );
    checker.range(
        "control.message_bytes_max",
        raw.message_bytes_max,
        1_024,
        64 * 1024 * 1024,
    );
    checker.range(
        "control.inflight_messages_max",
        raw.inflight_messages_max,
        1,
        65_536,
    );
    ControlConfig {
        replicas: raw.replicas,
        standby: raw.standby,
        data_dir: raw.data_dir.map(|path| base.join(path)),
        fsync: raw.fsync,
        tick_ms: raw.tick_ms,
        election_ticks: raw.election_ticks,
        heartbeat_ticks: raw.heartbeat_ticks,
        compact_every: raw.compact_every,
        compact_bytes: raw.compact_bytes,
        request_timeout_ms: raw.request_timeout_ms,
        pending_requests_max: raw.pending_requests_max,
        message_bytes_max: raw.message_bytes_max,
        inflight_messages_max: raw.inflight_messages_max,
    }
}

/// An overlay whose diameter exceeds the TTL cannot carry a message
/// between its farthest nodes: refused before anything starts.
fn validate_reach(
    nodes: &[NodeConfig],
    topology: &TopologyConfig,
    seed: u64,
    ttl: u8,
    checker: &mut Checker,
) {
    let mut names: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    names.sort();
    let shape = topology.shape(names.len());
    let overlay = crate::protocols::topology::build(shape, &names, seed);
    let diameter = crate::protocols::topology::GraphMetrics::of(&overlay).diameter;
    if diameter > ttl as usize {
        let remedy = if diameter <= TTL_MAX as usize {
            format!("raise limits.ttl to {diameter} or more, or choose")
        } else {
            format!("limits.ttl goes up to {TTL_MAX} only: choose")
        };
        checker.fail(
            "limits.ttl",
            format!(
                "the {} overlay of {} nodes has a diameter of {diameter} hops, more than ttl = {ttl} lets a message travel; {remedy} a shape with shorter paths",
                topology.kind.name(),
                names.len()
            ),
        );
    }
}

fn validate_nodes(raw: &[RawNode], base: &Path, checker: &mut Checker) -> Vec<NodeConfig> {
    if raw.is_empty() {
        checker.fail("nodes", "the cluster needs at least one [[nodes]] entry");
    }
    if raw.len() > NODES_MAX {
        checker.fail(
            "nodes",
            format!("{} nodes exceed the limit of {NODES_MAX}", raw.len()),
        );
    }
    let mut ids = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut keys = BTreeMap::new();
    let mut nodes = Vec::with_capacity(raw.len());
    for (index, node) in raw.iter().enumerate() {
        let at = |key: &str| format!("nodes[{index}].{key}");
        checker.name(&at("id"), &node.id);
        if let Some(first) = ids.insert(node.id.clone(), index) {
            checker.fail(
                at("id"),
                format!("duplicate node id {:?} (also nodes[{first}])", node.id),
            );
        }
        let listen = match node.listen.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                let reason = format!("{:?} is not an address like 127.0.0.1:7401", node.listen);
                checker.fail(at("listen"), reason);
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if listen.port() != 0 {
            if let Some(first) = addresses.insert(listen, index) {
                let reason = format!("duplicate address {listen} (also nodes[{first}])");
                checker.fail(at("listen"), reason);
            }
        }
        let public_key =
            node.public_key
                .as_deref()
                .and_then(|text| match identity::parse_public_key(text) {
                    Ok(key) => {
                        if let Some(first) = keys.insert(key.to_bytes(), index) {
                            let reason = format!("the same public key as nodes[{first}]");
                            checker.fail(at("public_key"), reason);
                        }
                        Some(key)
                    }
                    Err(error) => {
                        checker.fail(at("public_key"), error.to_string());
                        None
                    }
                });
        if node.key_file.is_some() && node.public_key.is_none() {
            checker.fail(
                at("key_file"),
                "a key_file needs the node's public_key beside it",
            );
        }
        let client_listen = node.client_listen.as_deref().and_then(|text| {
            let parsed = text.parse::<SocketAddr>();
            if parsed.is_err() {
                let reason = format!("{text:?} is not an address like 127.0.0.1:7481");
                checker.fail(at("client_listen"), reason);
            }
            parsed.ok()
        });
        nodes.push(NodeConfig {
            client_listen,
            id: node.id.clone(),
            listen,
            public_key,
            key_file: node.key_file.as_ref().map(|path| base.join(path)),
            region: node.region.clone(),
            zone: node.zone.clone(),
        });
    }
    let keyed = raw.iter().filter(|node| node.public_key.is_some()).count();
    if keyed != 0 && keyed != raw.len() {
        checker.fail(
            "nodes",
            format!("{keyed} of {} nodes have a public_key: give every node one, or none (identities are then made in memory)", raw.len()),
        );
    }
    nodes
}

fn validate_topology(
    raw: &RawTopology,
    node_count: usize,
    checker: &mut Checker,
) -> TopologyConfig {
    if let Some(k) = raw.k {
        if k == 0 {
            checker.fail("topology.k", "k must be at least 1");
        } else if k >= node_count.max(1) {
            checker.fail(
                "topology.k",
                format!(
                    "k = {k} is larger than {node_count} nodes allow (at most {})",
                    node_count.saturating_sub(1)
                ),
            );
        }
    }
    if !(raw.k_factor.is_finite() && (0.1..=100.0).contains(&raw.k_factor)) {
        checker.fail(
            "topology.k_factor",
            format!("{} is outside the allowed range 0.1 to 100", raw.k_factor),
        );
    }
    checker.range("topology.k_min", raw.k_min, 1, 1_000);
    checker.range("topology.k_max", raw.k_max, raw.k_min, 1_000);
    checker.range("topology.fanout", raw.fanout, 1, 1_000);
    checker.range("topology.hubs", raw.hubs, 1, node_count.max(1));
    checker.range("topology.shard_size", raw.shard_size, 2, NODES_MAX);
    TopologyConfig {
        kind: raw.kind,
        k: raw.k,
        k_rule: KRule {
            factor: raw.k_factor,
            min: raw.k_min,
            max: raw.k_max,
        },
        fanout: raw.fanout,
        hubs: raw.hubs,
        shard_size: raw.shard_size,
    }
}

fn validate_transport(transport: &TransportConfig, checker: &mut Checker) {
    if !(transport.peer_envelopes_per_second_max >= 0.0
        && transport.peer_envelopes_per_second_max.is_finite())
    {
        checker.fail(
            "transport.peer_envelopes_per_second_max",
            format!(
                "{}: give envelopes per second, or 0 for no limit",
                transport.peer_envelopes_per_second_max
            ),
        );
    }
    checker.range(
        "transport.peer_envelope_burst_max",
        transport.peer_envelope_burst_max,
        1,
        10_000_000,
    );
    checker.range(
        "transport.keep_alive_ms",
        transport.keep_alive_ms,
        10,
        60_000,
    );
    checker.range(
        "transport.idle_timeout_ms",
        transport.idle_timeout_ms,
        100,
        600_000,
    );
    if transport.idle_timeout_ms <= transport.keep_alive_ms {
        checker.fail(
            "transport.idle_timeout_ms",
            format!(
                "{} must exceed keep_alive_ms ({}), or live connections time out",
                transport.idle_timeout_ms, transport.keep_alive_ms
            ),
        );
    }
    checker.range(
        "transport.connect_timeout_ms",
        transport.connect_timeout_ms,
        10,
        600_000,
    );
    checker.range(
        "transport.reconnect_backoff_min_ms",
        transport.reconnect_backoff_min_ms,
        1,
        60_000,
    );
    checker.range(
        "transport.reconnect_backoff_max_ms",
        transport.reconnect_backoff_max_ms,
        transport.reconnect_backoff_min_ms,
        600_000,
    );
    checker.range(
        "transport.peer_send_queue_max",
        transport.peer_send_queue_max,
        1,
        1_000_000,
    );
    checker.range(
        "transport.frame_bytes_max",
        transport.frame_bytes_max,
        1_024,
        FRAME_BYTES_MAX,
    );
    checker.range(
        "transport.receive_batch_max",
        transport.receive_batch_max,
        1,
        4_096,
    );
}

fn validate_limits(limits: &LimitsConfig, checker: &mut Checker) {
    checker.range(
        "limits.router_queue_max",
        limits.router_queue_max,
        1,
        1_000_000,
    );
    checker.range(
        "limits.agent_inbox_max",
        limits.agent_inbox_max,
        1,
        1_000_000,
    );
    checker.range(
        "limits.payload_bytes_max",
        limits.payload_bytes_max,
        0,
        PAYLOAD_BYTES_MAX,
    );
    checker.range("limits.ttl", limits.ttl, 1, TTL_MAX);
}

fn validate_supervision(supervision: &SupervisionConfig, checker: &mut Checker) {
    checker.range(
        "supervision.restarts_max",
        supervision.restarts_max,
        0,
        1_000,
    );
    checker.range(
        "supervision.restart_window_ms",
        supervision.restart_window_ms,
        1,
        3_600_000,
    );
    checker.range(
        "supervision.restart_backoff_min_ms",
        supervision.restart_backoff_min_ms,
        1,
        60_000,
    );
    checker.range(
        "supervision.restart_backoff_max_ms",
        supervision.restart_backoff_max_ms,
        supervision.restart_backoff_min_ms,
        600_000,
    );
    checker.range(
        "supervision.agents_start_timeout_ms",
        supervision.agents_start_timeout_ms,
        0,
        600_000,
    );
}

fn validate_membership(membership: &MembershipConfig, checker: &mut Checker) {
    checker.range(
        "membership.heartbeat_interval_ms",
        membership.heartbeat_interval_ms,
        10,
        60_000,
    );
    let phi_ok = |phi: f64| phi.is_finite() && (0.5..=100.0).contains(&phi);
    if !phi_ok(membership.suspect_phi) {
        checker.fail(
            "membership.suspect_phi",
            format!("{} is outside 0.5 to 100", membership.suspect_phi),
        );
    }
    if !phi_ok(membership.dead_phi) || membership.dead_phi < membership.suspect_phi {
        checker.fail(
            "membership.dead_phi",
            format!(
                "{} must be from suspect_phi ({}) to 100",
                membership.dead_phi, membership.suspect_phi
            ),
        );
    }
    checker.range(
        "membership.acceptable_pause_ms",
        membership.acceptable_pause_ms,
        0,
        600_000,
    );
    checker.range(
        "membership.min_std_deviation_ms",
        membership.min_std_deviation_ms,
        1,
        60_000,
    );
    checker.range(
        "membership.first_heartbeat_grace_ms",
        membership.first_heartbeat_grace_ms,
        0,
        600_000,
    );
}

fn validate_delivery(delivery: &DeliveryConfig, checker: &mut Checker) {
    checker.range("delivery.tick_ms", delivery.tick_ms, 1, 1_000);
    checker.range(
        "delivery.retransmit_timeout_ms",
        delivery.retransmit_timeout_ms,
        delivery.tick_ms,
        600_000,
    );
    checker.range(
        "delivery.retransmit_timeout_max_ms",
        delivery.retransmit_timeout_max_ms,
        delivery.retransmit_timeout_ms,
        3_600_000,
    );
    checker.range("delivery.retries_max", delivery.retries_max, 0, 60);
    checker.range(
        "delivery.inflight_max",
        delivery.inflight_max,
        1,
        10_000_000,
    );
    if !(delivery.source_rate_max.is_finite() && delivery.source_rate_max >= 0.0) {
        checker.fail(
            "delivery.source_rate_max",
            format!(
                "{} is not a rate (0 for no limit)",
                delivery.source_rate_max
            ),
        );
    }
    checker.range(
        "delivery.source_burst_max",
        delivery.source_burst_max,
        1,
        10_000_000,
    );
}

fn validate_agents(
    raw: &[RawAgent],
    nodes: &[NodeConfig],
    limits: &LimitsConfig,
    checker: &mut Checker,
) -> Vec<AgentConfig> {
    let total: usize = raw.iter().map(|agent| agent.count).sum();
    if total > AGENTS_MAX {
        checker.fail(
            "agents",
            format!("{total} agents exceed the limit of {AGENTS_MAX}"),
        );
        return Vec::new();
    }
    let node_ids: BTreeSet<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
    let mut agents = Vec::with_capacity(total);
    let mut names = BTreeMap::new();
    for (index, agent) in raw.iter().enumerate() {
        let at = |key: &str| format!("agents[{index}].{key}");
        let Some(behaviour) = validate_behaviour(agent, index, limits, checker) else {
            continue;
        };
        if agent.count == 0 {
            checker.fail(at("count"), "count must be at least 1");
        }
        if agent.count > 1 && !agent.name.contains("{i}") {
            checker.fail(
                at("name"),
                format!(
                    "{:?} needs \"{{i}}\" in it when count > 1, so names stay unique",
                    agent.name
                ),
            );
            continue;
        }
        if let Some(node) = &agent.node {
            if !node_ids.contains(node.as_str()) {
                checker.fail(at("node"), format!("no node has id {node:?}"));
            }
            if agent.placement.is_some() {
                checker.fail(at("placement"), "give either node or placement, not both");
            }
        }
        if let Some(placement) = &agent.placement {
            if placement != "spread" {
                checker.fail(
                    at("placement"),
                    format!("unknown placement {placement:?}; available: spread"),
                );
            }
        }
        for instance in 0..agent.count {
            let name = agent.name.replace("{i}", &instance.to_string());
            checker.name(&at("name"), &name);
            if let Some(first) = names.insert(name.clone(), index) {
                checker.fail(
                    at("name"),
                    format!("agent name {name:?} is also made by agents[{first}]"),
                );
            }
            let node = match &agent.node {
                Some(node) => node.clone(),
                None if nodes.is_empty() => continue,
                None => nodes[instance % nodes.len()].id.clone(),
            };
            agents.push(AgentConfig {
                name,
                node,
                behaviour: behaviour.clone(),
            });
        }
    }
    check_targets(raw, &agents, checker);
    agents
}

fn validate_behaviour(
    agent: &RawAgent,
    index: usize,
    limits: &LimitsConfig,
    checker: &mut Checker,
) -> Option<BehaviourConfig> {
    let at = |key: &str| format!("agents[{index}].{key}");
    match agent.behaviour.as_str() {
        "echo" | "sink" => {
            let storm_keys = [
                ("rate", agent.rate.is_some()),
                ("payload_bytes", agent.payload_bytes.is_some()),
                ("targets", agent.targets.is_some()),
                ("messages_max", agent.messages_max.is_some()),
                ("tick_ms", agent.tick_ms.is_some()),
            ];
            for (key, given) in storm_keys {
                if given {
                    let reason = format!("not used by behaviour {:?}", agent.behaviour);
                    checker.fail(at(key), reason);
                }
            }
            if agent.behaviour == "sink" {
                return Some(BehaviourConfig::Sink);
            }
            Some(BehaviourConfig::Echo)
        }
        "storm" => {
            let storm = StormConfig {
                rate: agent.rate.unwrap_or(100.0),
                payload_bytes: agent.payload_bytes.unwrap_or(64),
                targets: agent.targets.clone().unwrap_or_default(),
                messages_max: agent.messages_max,
                tick_ms: agent.tick_ms.unwrap_or(10),
            };
            if storm.rate == 0.0 {
                // A storm of rate 0 would start, say nothing and send nothing.
                checker.fail(
                    at("rate"),
                    "0 would send nothing: give messages/s above 0, up to 1000000 (to send as fast as the nodes accept, give 1000000, which is what `bench storm --rate 0` does)".to_string(),
                );
            } else if !storm.rate.is_finite() || storm.rate < 0.0 || storm.rate > 1_000_000.0 {
                checker.fail(
                    at("rate"),
                    format!(
                        "{} is not a rate above 0 and up to 1000000 messages/s",
                        storm.rate
                    ),
                );
            }
            if storm.payload_bytes > limits.payload_bytes_max {
                checker.fail(
                    at("payload_bytes"),
                    format!(
                        "{} exceeds limits.payload_bytes_max ({})",
                        storm.payload_bytes, limits.payload_bytes_max
                    ),
                );
            }
            checker.range(&at("tick_ms"), storm.tick_ms, 1, 1_000);
            Some(BehaviourConfig::Storm(storm))
        }
        other => {
            checker.fail(
                at("behaviour"),
                format!(
                    "unknown behaviour {other:?}; available: {}",
                    BehaviourConfig::NAMES.join(", ")
                ),
            );
            None
        }
    }
}

/// True if `pattern` (an agent name, or a prefix ending in `*`) names `agent`.
pub fn target_matches(pattern: &str, agent: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => agent.starts_with(prefix),
        None => pattern == agent,
    }
}

fn check_targets(raw: &[RawAgent], agents: &[AgentConfig], checker: &mut Checker) {
    for (index, agent) in raw.iter().enumerate() {
        for (position, pattern) in agent.targets.iter().flatten().enumerate() {
            if !agents
                .iter()
                .any(|candidate| target_matches(pattern, &candidate.name))
            {
                checker.fail(
                    format!("agents[{index}].targets[{position}]"),
                    format!("{pattern:?} names no agent (use a name, or a prefix ending in '*')"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_local_config_is_valid() {
        let config = parse(EMBEDDED_LOCAL, EMBEDDED_LOCAL_NAME, Path::new(".")).unwrap();
        assert!(config.nodes.len() >= 3);
        assert!(config
            .agents
            .iter()
            .any(|agent| agent.behaviour.name() == "storm"));
        assert!(config
            .agents
            .iter()
            .any(|agent| agent.behaviour.name() == "echo"));
    }

    #[test]
    fn spread_placement_is_round_robin() {
        let text = r#"
            [cluster]
            name = "t"
            [[nodes]]
            id = "a"
            listen = "127.0.0.1:0"
            [[nodes]]
            id = "b"
            listen = "127.0.0.1:0"
            [[agents]]
            name = "e-{i}"
            count = 3
            behaviour = "echo"
        "#;
        let config = parse(text, "t.toml", Path::new(".")).unwrap();
        let placed: Vec<_> = config
            .agents
            .iter()
            .map(|a| (a.name.as_str(), a.node.as_str()))
            .collect();
        assert_eq!(placed, [("e-0", "a"), ("e-1", "b"), ("e-2", "a")]);
    }
}
