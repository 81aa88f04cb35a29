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

mod agents;
mod control;
mod delivery;
pub mod faults;
mod limits;
mod membership;
mod nodes;
pub mod pbft;
pub mod placement;
mod supervision;
mod topology;
mod transport;

pub use agents::*;
use agents::{validate_agents, RawAgent};
pub use control::*;
use control::{validate_control, RawControl};
use delivery::validate_delivery;
pub use delivery::*;
pub use faults::{DiskFault, FaultsConfig};
use limits::validate_limits;
pub use limits::*;
use membership::validate_membership;
pub use membership::*;
pub use nodes::*;
use nodes::{validate_nodes, RawNode};
pub use pbft::PbftSettings;
use placement::validate_agent_placement;
pub use placement::{AgentPlacement, PlacementConfig};
use supervision::validate_supervision;
pub use supervision::*;
pub use topology::*;
use topology::{validate_reach, validate_topology, RawTopology};
use transport::validate_transport;
pub use transport::*;

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
    /// Score weights, region latencies and agents' traffic, for planned
    /// placement.
    pub placement: PlacementConfig,
}

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
    #[serde(default)]
    placement: placement::RawPlacement,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(default)]
    seed: u64,
}

/// Finds what is wrong with the agents' behaviours of a config otherwise
/// read: an unknown name, a bad parameter (`agent_api::Registry::problems`
/// is one; the config itself knows no behaviour).
pub type BehaviourCheck<'a> = &'a dyn Fn(&ClusterConfig) -> Vec<ConfigProblem>;

/// Reads and validates the config file at `path`, its behaviours checked
/// by `check`, every problem reported at once.
pub fn load_checked(path: &Path, check: BehaviourCheck<'_>) -> Result<ClusterConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
        file: file.clone(),
        problems: vec![ConfigProblem {
            key_path: "(file)".into(),
            reason: error.to_string(),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_checked(&text, &file, &base, check)
}

/// Reads and validates the config file at `path` (the behaviours are
/// checked when a cluster starts, against its registry).
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    load_checked(path, &|_| Vec::new())
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
    parse_checked(text, file, base, &|_| Vec::new())
}

/// Like [`parse`], with the behaviours checked by `check`.
pub fn parse_checked(
    text: &str,
    file: &str,
    base: &Path,
    check: BehaviourCheck<'_>,
) -> Result<ClusterConfig, ConfigError> {
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
    checker.problems.extend(check(&config));
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
    let mut agents = validate_agents(&raw.agents, &nodes, checker);
    let placement = placement::validate_placement(raw.placement, &agents, checker);
    if checker.problems.is_empty() {
        placement::place_planned(&nodes, &mut agents, &placement, checker);
    }
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
        placement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_local_config_is_valid() {
        let config = parse(EMBEDDED_LOCAL, EMBEDDED_LOCAL_NAME, Path::new(".")).unwrap();
        assert!(config.nodes.len() >= 3);
        assert!(config.agents.iter().any(|agent| agent.behaviour == "storm"));
        assert!(config.agents.iter().any(|agent| agent.behaviour == "echo"));
        crate::agent_api::Registry::with_builtins()
            .check(&config)
            .expect("the built-ins take the embedded config's parameters");
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
