//! The `[control]` section: which nodes hold the Raft replicas of the
//! cluster state, where they keep it, and its timing.

use super::*;

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
pub(super) struct RawControl {
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

pub(super) fn validate_control(
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
