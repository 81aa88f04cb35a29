//! The `[[agents]]` entries: names, counts, placement, and each
//! behaviour's settings.

use super::*;

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
pub(super) struct RawAgent {
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

pub(super) fn one() -> usize {
    1
}

// ---------------------------------------------------------------------------
// Loading.

pub(super) fn validate_agents(
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

pub(super) fn validate_behaviour(
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

pub(super) fn check_targets(raw: &[RawAgent], agents: &[AgentConfig], checker: &mut Checker) {
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
