//! The `[[agents]]` entries: names, counts, placement, the behaviour each
//! runs and its parameters. Which behaviours exist, and what parameters
//! each takes, the node's registry says (`agent_api::Registry::check`).

use serde::de::DeserializeOwned;

use super::*;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Cluster-unique name, after `{i}` expansion.
    pub name: String,
    pub node: String,
    /// The behaviour's name, as registered on the node (`echo`, `sink`
    /// and `storm` are built in).
    pub behaviour: String,
    pub params: Params,
    /// Which `[[agents]]` entry made this agent, for messages.
    pub entry: usize,
    /// The topics the agent subscribes to (`subscribe = [...]`): every
    /// node reads them from the same file, so every publisher knows each
    /// topic's subscribers.
    pub subscribe: Vec<String>,
    /// Where it may go (`placement = "planned"` and its rules).
    pub placement: AgentPlacement,
}

/// Topics one agent may subscribe to.
pub const SUBSCRIPTIONS_PER_AGENT_MAX: usize = 64;

/// Names every node serves as agents of its own (Maelstrom's key-value
/// services), which no configured agent may take.
pub const SERVICE_NAMES: [&str; 3] = ["lin-kv", "seq-kv", "lww-kv"];

/// An agent's parameters as the config gives them: its `[agents.params]`
/// table (and, for the built-in storm, the keys of its own entry).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    table: toml::Table,
    /// Keys given on the agent's entry itself rather than under `params`,
    /// so that problems name them where they were written.
    on_entry: Vec<String>,
}

/// A problem with one parameter: its key (empty for the table as a whole)
/// and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ParamError {
    /// The key under `params`, or "" for the whole table.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ParamError {
    /// A problem with the key `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> ParamError {
        ParamError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl Params {
    /// Parameters from a table, as written under `params`.
    pub fn new(table: toml::Table) -> Params {
        Params {
            table,
            on_entry: Vec::new(),
        }
    }

    /// Parameters from `table`, whose keys `on_entry` were written on the
    /// agent's entry itself.
    pub(super) fn with_keys_on_entry(table: toml::Table, on_entry: Vec<String>) -> Params {
        Params { table, on_entry }
    }

    /// The table itself.
    pub fn table(&self) -> &toml::Table {
        &self.table
    }

    /// True if no parameter is given.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The parameters as `T` (a serde struct with the behaviour's keys and
    /// defaults). A wrong type, a missing key or, with
    /// `#[serde(deny_unknown_fields)]`, an unknown one is an error naming
    /// the key.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ParamError> {
        let value = toml::Value::Table(self.table.clone());
        serde_path_to_error::deserialize(value).map_err(|error| {
            let key = error.path().to_string();
            let key = if key == "." { String::new() } else { key };
            ParamError::new(key, error.into_inner().to_string())
        })
    }

    /// Where `key` was written in the config, under agent entry `entry`.
    pub fn key_path(&self, entry: usize, key: &str) -> String {
        let top = key.split(['.', '[']).next().unwrap_or(key);
        match key {
            "" => format!("agents[{entry}].params"),
            _ if self.on_entry.iter().any(|given| given == top) => {
                format!("agents[{entry}].{key}")
            }
            _ => format!("agents[{entry}].params.{key}"),
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

// ---------------------------------------------------------------------------
// The raw, serde-facing schema.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    name: String,
    #[serde(default = "one")]
    count: usize,
    behaviour: String,
    node: Option<String>,
    placement: Option<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    subscribe: Vec<String>,
    group: Option<String>,
    #[serde(default)]
    demand: BTreeMap<String, f64>,
    #[serde(default)]
    node_affinity: Vec<placement::RawNodeRule>,
    #[serde(default)]
    affinity: Vec<placement::RawAgentRule>,
    #[serde(default)]
    anti_affinity: Vec<placement::RawAgentRule>,
    #[serde(default)]
    spread: Vec<placement::RawSpread>,
    // The storm's keys, also accepted on the entry itself.
    rate: Option<toml::Value>,
    payload_bytes: Option<toml::Value>,
    targets: Option<toml::Value>,
    messages_max: Option<toml::Value>,
    tick_ms: Option<toml::Value>,
}

impl RawAgent {
    fn raw_placement(&self) -> placement::RawAgentPlacement {
        placement::RawAgentPlacement {
            group: self.group.clone(),
            demand: self.demand.clone(),
            node_affinity: self.node_affinity.clone(),
            affinity: self.affinity.clone(),
            anti_affinity: self.anti_affinity.clone(),
            spread: self.spread.clone(),
        }
    }
}

pub(super) fn one() -> usize {
    1
}

// ---------------------------------------------------------------------------
// Loading.

pub(super) fn validate_agents(
    raw: &[RawAgent],
    nodes: &[NodeConfig],
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
        let Some(params) = entry_params(agent, index, checker) else {
            continue;
        };
        checker.name(&at("behaviour"), &agent.behaviour);
        check_subscriptions(&agent.subscribe, &at("subscribe"), checker);
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
            if placement != "spread" && placement != "planned" {
                checker.fail(
                    at("placement"),
                    format!("unknown placement {placement:?}; available: spread, planned"),
                );
            }
        }
        let planned = agent.placement.as_deref() == Some("planned");
        let placement = validate_agent_placement(agent.raw_placement(), planned, &at, checker);
        for instance in 0..agent.count {
            let name = agent.name.replace("{i}", &instance.to_string());
            checker.name(&at("name"), &name);
            if SERVICE_NAMES.contains(&name.as_str()) {
                checker.fail(
                    at("name"),
                    format!("{name:?} is a service every node serves; name the agent otherwise"),
                );
            }
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
                behaviour: agent.behaviour.clone(),
                params: params.clone(),
                entry: index,
                subscribe: agent.subscribe.clone(),
                placement: placement.clone(),
            });
        }
    }
    agents
}

/// Checks an entry's topics: valid names, each once, within the limit.
fn check_subscriptions(topics: &[String], key_path: &str, checker: &mut Checker) {
    if topics.len() > SUBSCRIPTIONS_PER_AGENT_MAX {
        checker.fail(
            key_path,
            format!(
                "{} topics; an agent subscribes to at most {SUBSCRIPTIONS_PER_AGENT_MAX}",
                topics.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for topic in topics {
        checker.name(key_path, topic);
        if !seen.insert(topic) {
            checker.fail(key_path, format!("topic {topic:?} is given twice"));
        }
    }
}

/// The entry's parameters: its `params` table, with the storm's keys
/// given on the entry itself folded in (giving one both ways is an error).
fn entry_params(agent: &RawAgent, index: usize, checker: &mut Checker) -> Option<Params> {
    let mut table = agent.params.clone();
    let mut on_entry = Vec::new();
    let given = [
        ("rate", &agent.rate),
        ("payload_bytes", &agent.payload_bytes),
        ("targets", &agent.targets),
        ("messages_max", &agent.messages_max),
        ("tick_ms", &agent.tick_ms),
    ];
    let mut good = true;
    for (key, value) in given {
        let Some(value) = value else { continue };
        if table.contains_key(key) {
            checker.fail(
                format!("agents[{index}].{key}"),
                format!("also given as params.{key}: give it once"),
            );
            good = false;
        }
        table.insert(key.to_string(), value.clone());
        on_entry.push(key.to_string());
    }
    good.then(|| Params::with_keys_on_entry(table, on_entry))
}
