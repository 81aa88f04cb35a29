//! Placement in the config: nodes' `capacity` and `labels`, agents'
//! `placement = "planned"` with `group`, `demand` and rules, and the
//! `[placement]` table (score weights, latency between regions, traffic
//! between agents). Turns them into a `protocols::placement::Problem`;
//! the planned agents' nodes come from the plan, which every node
//! computes alike from the same file.

use super::*;
use crate::protocols::placement::model::{self as model, Problem};
use crate::protocols::placement::planner::{plan, PlanLimits};

/// Most dimensions a cluster's capacities and demands may name, and most
/// rules of each kind one agent entry may give.
pub const DIMENSIONS_MAX: usize = 16;
pub const RULES_PER_AGENT_MAX: usize = 32;

/// What an agent entry says about where it may go.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentPlacement {
    /// True for `placement = "planned"`.
    pub planned: bool,
    pub group: Option<String>,
    pub demand: BTreeMap<String, f64>,
    pub node_rules: Vec<model::NodeRule>,
    pub agent_rules: Vec<model::AgentRule>,
    pub spread: Vec<model::SpreadRule>,
}

/// An agent entry's placement keys, as written (on the entry itself).
#[derive(Clone, Debug, Default)]
pub(super) struct RawAgentPlacement {
    pub group: Option<String>,
    pub demand: BTreeMap<String, f64>,
    pub node_affinity: Vec<RawNodeRule>,
    pub affinity: Vec<RawAgentRule>,
    pub anti_affinity: Vec<RawAgentRule>,
    pub spread: Vec<RawSpread>,
}

/// `{ key = "region", operator = "in", values = ["eu"], weight = 10 }`;
/// no weight: required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNodeRule {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
    weight: Option<u32>,
}

/// `{ group = "db", topology_key = "zone", weight = 10 }` (or `agent =
/// "db0"`); no weight: required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentRule {
    group: Option<String>,
    agent: Option<String>,
    #[serde(default = "node_topology")]
    topology_key: String,
    weight: Option<u32>,
}

fn node_topology() -> String {
    model::NODE_TOPOLOGY.into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpread {
    topology_key: String,
    #[serde(default = "one_u32")]
    max_skew: u32,
    #[serde(default = "refuse")]
    when_unsatisfiable: String,
}

fn one_u32() -> u32 {
    1
}

fn refuse() -> String {
    "refuse".into()
}

/// The `[placement]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlacement {
    #[serde(default)]
    weights: Option<RawWeights>,
    #[serde(default)]
    latency: Vec<RawLatency>,
    #[serde(default)]
    traffic: Vec<RawTraffic>,
    /// Moves a re-plan may spend on balance, beyond those it must make.
    #[serde(default = "default_migrations_max")]
    migrations_max: usize,
}

impl Default for RawPlacement {
    fn default() -> RawPlacement {
        RawPlacement {
            weights: None,
            latency: Vec::new(),
            traffic: Vec::new(),
            migrations_max: DEFAULT_MIGRATIONS_MAX,
        }
    }
}

fn default_migrations_max() -> usize {
    DEFAULT_MIGRATIONS_MAX
}

/// Balance moves per re-plan when the config names none: enough to give a
/// returning node some agents back, few enough that a return does not
/// stop and start much of the cluster.
pub const DEFAULT_MIGRATIONS_MAX: usize = 4;
/// Most balance moves per re-plan a config may ask for.
pub const MIGRATIONS_MAX: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    least_allocated: Option<f64>,
    most_allocated: Option<f64>,
    balanced: Option<f64>,
    node_affinity: Option<f64>,
    agent_affinity: Option<f64>,
    spread: Option<f64>,
    latency: Option<f64>,
}

/// `{ between = ["eu", "us"], ms = 80.0 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    between: [String; 2],
    ms: f64,
}

/// `{ between = ["db0", "web0"], weight = 10.0 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    between: [String; 2],
    #[serde(default = "one_f64")]
    weight: f64,
}

fn one_f64() -> f64 {
    1.0
}

/// The cluster-wide placement settings, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementConfig {
    pub weights: model::ScoreWeights,
    /// (region, region, ms), both ways.
    pub latency: Vec<(String, String, f64)>,
    /// (agent, agent, weight).
    pub traffic: Vec<(String, String, f64)>,
    /// Moves a running cluster's re-plan may spend on balance, beyond the
    /// moves off down nodes.
    pub migrations_max: usize,
}

pub(super) fn validate_agent_placement(
    raw: RawAgentPlacement,
    planned: bool,
    at: &dyn Fn(&str) -> String,
    checker: &mut Checker,
) -> AgentPlacement {
    let rules =
        raw.node_affinity.len() + raw.affinity.len() + raw.anti_affinity.len() + raw.spread.len();
    if rules > RULES_PER_AGENT_MAX {
        checker.fail(
            at("affinity"),
            format!("{rules} rules; an entry gives at most {RULES_PER_AGENT_MAX}"),
        );
    }
    if !planned && (rules > 0 || raw.group.is_some() || !raw.demand.is_empty()) {
        checker.fail(
            at("placement"),
            "group, demand and rules need placement = \"planned\"",
        );
    }
    for (dimension, amount) in &raw.demand {
        checker.name(&at("demand"), dimension);
        if !(amount.is_finite() && *amount >= 0.0) {
            checker.fail(
                at(&format!("demand.{dimension}")),
                format!("{amount} is not a non-negative amount"),
            );
        }
    }
    if let Some(group) = &raw.group {
        checker.name(&at("group"), group);
    }
    let node_rules = (raw.node_affinity.into_iter().enumerate())
        .filter_map(|(index, rule)| {
            node_rule(rule, &at(&format!("node_affinity[{index}]")), checker)
        })
        .collect();
    let mut agent_rules = Vec::new();
    for (anti, rules, key) in [
        (false, raw.affinity, "affinity"),
        (true, raw.anti_affinity, "anti_affinity"),
    ] {
        for (index, rule) in rules.into_iter().enumerate() {
            agent_rules.extend(agent_rule(
                rule,
                anti,
                &at(&format!("{key}[{index}]")),
                checker,
            ));
        }
    }
    let spread = (raw.spread.into_iter().enumerate())
        .filter_map(|(index, rule)| spread_rule(rule, &at(&format!("spread[{index}]")), checker))
        .collect::<Vec<_>>();
    if !spread.is_empty() && raw.group.is_none() {
        checker.fail(
            at("spread"),
            "a spread rule spreads the agent's group: give group too",
        );
    }
    AgentPlacement {
        planned,
        group: raw.group,
        demand: raw.demand,
        node_rules,
        agent_rules,
        spread,
    }
}

fn strength(weight: Option<u32>, at: &str, checker: &mut Checker) -> model::Strength {
    match weight {
        None => model::Strength::Required,
        Some(weight) => {
            checker.range(&format!("{at}.weight"), weight, 1, 100);
            model::Strength::Preferred(weight)
        }
    }
}

fn node_rule(rule: RawNodeRule, at: &str, checker: &mut Checker) -> Option<model::NodeRule> {
    let operator = match (rule.operator.as_str(), rule.values.is_empty()) {
        ("in", false) => model::MatchOperator::In(rule.values),
        ("not_in", false) => model::MatchOperator::NotIn(rule.values),
        ("exists", true) => model::MatchOperator::Exists,
        ("does_not_exist", true) => model::MatchOperator::DoesNotExist,
        ("in" | "not_in", true) => {
            checker.fail(
                format!("{at}.values"),
                format!("operator {:?} needs values", rule.operator),
            );
            return None;
        }
        ("exists" | "does_not_exist", false) => {
            checker.fail(
                format!("{at}.values"),
                format!("operator {:?} takes no values", rule.operator),
            );
            return None;
        }
        (other, _) => {
            let reason = format!(
                "unknown operator {other:?}; available: in, not_in, exists, does_not_exist"
            );
            checker.fail(format!("{at}.operator"), reason);
            return None;
        }
    };
    let strength = strength(rule.weight, at, checker);
    Some(model::NodeRule {
        matches: vec![model::LabelMatch {
            key: rule.key,
            operator,
        }],
        strength,
    })
}

fn agent_rule(
    rule: RawAgentRule,
    anti: bool,
    at: &str,
    checker: &mut Checker,
) -> Option<model::AgentRule> {
    let selector = match (rule.group, rule.agent) {
        (Some(group), None) => model::AgentSelector::Group(group),
        (None, Some(agent)) => model::AgentSelector::Name(agent),
        _ => {
            checker.fail(at, "give either group or agent");
            return None;
        }
    };
    let strength = strength(rule.weight, at, checker);
    Some(model::AgentRule {
        anti,
        selector,
        topology_key: rule.topology_key,
        strength,
    })
}

fn spread_rule(rule: RawSpread, at: &str, checker: &mut Checker) -> Option<model::SpreadRule> {
    let when_unsatisfiable = match rule.when_unsatisfiable.as_str() {
        "refuse" => model::Unsatisfiable::Refuse,
        "schedule-anyway" => model::Unsatisfiable::ScheduleAnyway,
        other => {
            let reason = format!("unknown {other:?}; available: refuse, schedule-anyway");
            checker.fail(format!("{at}.when_unsatisfiable"), reason);
            return None;
        }
    };
    if rule.max_skew == 0 {
        checker.fail(format!("{at}.max_skew"), "max_skew must be at least 1");
    }
    Some(model::SpreadRule {
        topology_key: rule.topology_key,
        max_skew: rule.max_skew,
        when_unsatisfiable,
    })
}

pub(super) fn validate_placement(
    raw: RawPlacement,
    agents: &[AgentConfig],
    checker: &mut Checker,
) -> PlacementConfig {
    let weights = validate_weights(raw.weights, checker);
    let mut latency = Vec::new();
    for (index, entry) in raw.latency.into_iter().enumerate() {
        if !(entry.ms.is_finite() && entry.ms >= 0.0) {
            checker.fail(
                format!("placement.latency[{index}].ms"),
                format!("{} is not a non-negative time", entry.ms),
            );
        }
        let [first, second] = entry.between;
        latency.push((first, second, entry.ms));
    }
    let names: BTreeSet<&str> = agents.iter().map(|agent| agent.name.as_str()).collect();
    let mut traffic = Vec::new();
    for (index, entry) in raw.traffic.into_iter().enumerate() {
        for name in &entry.between {
            if !names.contains(name.as_str()) {
                checker.fail(
                    format!("placement.traffic[{index}].between"),
                    format!("no agent is named {name:?}"),
                );
            }
        }
        if !(entry.weight.is_finite() && entry.weight >= 0.0) {
            checker.fail(
                format!("placement.traffic[{index}].weight"),
                format!("{} is not a non-negative weight", entry.weight),
            );
        }
        let [first, second] = entry.between;
        traffic.push((first, second, entry.weight));
    }
    if raw.migrations_max > MIGRATIONS_MAX {
        checker.fail(
            "placement.migrations_max",
            format!("{}; at most {MIGRATIONS_MAX}", raw.migrations_max),
        );
    }
    PlacementConfig {
        weights,
        latency,
        traffic,
        migrations_max: raw.migrations_max.min(MIGRATIONS_MAX),
    }
}

/// The default weights, with those given in `placement.weights`.
fn validate_weights(given: Option<RawWeights>, checker: &mut Checker) -> model::ScoreWeights {
    let mut weights = model::ScoreWeights::default();
    if let Some(given) = given {
        for (key, value, slot) in [
            (
                "least_allocated",
                given.least_allocated,
                &mut weights.least_allocated,
            ),
            (
                "most_allocated",
                given.most_allocated,
                &mut weights.most_allocated,
            ),
            ("balanced", given.balanced, &mut weights.balanced),
            (
                "node_affinity",
                given.node_affinity,
                &mut weights.node_affinity,
            ),
            (
                "agent_affinity",
                given.agent_affinity,
                &mut weights.agent_affinity,
            ),
            ("spread", given.spread, &mut weights.spread),
            ("latency", given.latency, &mut weights.latency),
        ] {
            let Some(value) = value else { continue };
            if !(value.is_finite() && (0.0..=1000.0).contains(&value)) {
                checker.fail(
                    format!("placement.weights.{key}"),
                    format!("{value} is outside 0 to 1000"),
                );
            }
            *slot = value;
        }
    }
    weights
}

/// The placement problem of a config: every node (up) and every agent,
/// fixed agents pinned to their node.
pub fn problem_of(
    nodes: &[NodeConfig],
    agents: &[AgentConfig],
    settings: &PlacementConfig,
) -> Problem {
    let dimensions: Vec<String> = (nodes.iter().flat_map(|node| node.capacity.keys()))
        .chain(
            agents
                .iter()
                .flat_map(|agent| agent.placement.demand.keys()),
        )
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let amounts = |given: &BTreeMap<String, f64>| {
        dimensions
            .iter()
            .map(|d| given.get(d).copied().unwrap_or(0.0))
            .collect()
    };
    let node_specs = (nodes.iter())
        .map(|node| model::NodeSpec {
            name: node.id.clone(),
            capacity: amounts(&node.capacity),
            labels: node.all_labels(),
            up: true,
        })
        .collect();
    let agent_specs = (agents.iter())
        .map(|agent| model::AgentSpec {
            name: agent.name.clone(),
            group: agent.placement.group.clone(),
            demand: amounts(&agent.placement.demand),
            node_rules: agent.placement.node_rules.clone(),
            agent_rules: agent.placement.agent_rules.clone(),
            spread: agent.placement.spread.clone(),
            pinned: (!agent.placement.planned)
                .then(|| nodes.iter().position(|node| node.id == agent.node))
                .flatten(),
        })
        .collect();
    Problem {
        latency: latency_matrix(nodes, &settings.latency),
        traffic: (settings.traffic.iter())
            .filter_map(|(first, second, weight)| {
                let index = |name: &str| agents.iter().position(|agent| agent.name == name);
                Some(model::Traffic {
                    first: index(first)?,
                    second: index(second)?,
                    weight: *weight,
                })
            })
            .collect(),
        dimensions,
        nodes: node_specs,
        agents: agent_specs,
        weights: settings.weights,
    }
}

/// The regions the nodes name, with the latencies given (0 where none is).
fn latency_matrix(nodes: &[NodeConfig], given: &[(String, String, f64)]) -> model::LatencyMatrix {
    let regions: Vec<String> = (nodes.iter().filter_map(|node| node.region.clone()))
        .chain(given.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let count = regions.len();
    let mut milliseconds = vec![0.0; count * count];
    for (first, second, ms) in given {
        let index = |name: &String| {
            regions
                .iter()
                .position(|region| region == name)
                .expect("collected above")
        };
        let (a, b) = (index(first), index(second));
        milliseconds[a * count + b] = *ms;
        milliseconds[b * count + a] = *ms;
    }
    model::LatencyMatrix {
        regions,
        milliseconds,
    }
}

/// Whether every rule names what exists: agents and groups that some
/// agent has, topology keys some node has (or `node`), and regions some
/// node is in. A misspelt name would otherwise hold vacuously.
fn references_hold(
    nodes: &[NodeConfig],
    agents: &[AgentConfig],
    settings: &PlacementConfig,
    checker: &mut Checker,
) -> bool {
    let names: BTreeSet<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    let groups: BTreeSet<&str> = agents
        .iter()
        .filter_map(|a| a.placement.group.as_deref())
        .collect();
    let mut keys: BTreeSet<String> = nodes
        .iter()
        .flat_map(|n| n.all_labels().into_keys())
        .collect();
    keys.insert(model::NODE_TOPOLOGY.into());
    let regions: BTreeSet<&str> = nodes.iter().filter_map(|n| n.region.as_deref()).collect();
    let mut problems: BTreeSet<(String, String)> = BTreeSet::new();
    for agent in agents {
        let at = |key: &str| format!("agents[{}].{key}", agent.entry);
        for rule in &agent.placement.agent_rules {
            let key = if rule.anti {
                "anti_affinity"
            } else {
                "affinity"
            };
            match &rule.selector {
                model::AgentSelector::Name(name) if !names.contains(name.as_str()) => {
                    problems.insert((at(key), format!("no agent is named {name:?}")));
                }
                model::AgentSelector::Group(group) if !groups.contains(group.as_str()) => {
                    problems.insert((at(key), format!("no agent is in group {group:?}")));
                }
                _ => {}
            }
            if !keys.contains(&rule.topology_key) {
                problems.insert((
                    at(key),
                    format!("no node has the topology key {:?}", rule.topology_key),
                ));
            }
        }
        for rule in agent
            .placement
            .spread
            .iter()
            .filter(|rule| !keys.contains(&rule.topology_key))
        {
            problems.insert((
                at("spread"),
                format!("no node has the topology key {:?}", rule.topology_key),
            ));
        }
    }
    for (index, (first, second, _)) in settings.latency.iter().enumerate() {
        for region in [first, second]
            .into_iter()
            .filter(|r| !regions.contains(r.as_str()))
        {
            problems.insert((
                format!("placement.latency[{index}].between"),
                format!("no node is in region {region:?}"),
            ));
        }
    }
    let clean = problems.is_empty();
    for (key_path, reason) in problems {
        checker.fail(key_path, reason);
    }
    clean
}

/// Gives each planned agent its node from the plan; a plan that cannot
/// be made is the config's problem, naming the agent's entry.
pub(super) fn place_planned(
    nodes: &[NodeConfig],
    agents: &mut [AgentConfig],
    settings: &PlacementConfig,
    checker: &mut Checker,
) {
    if !agents.iter().any(|agent| agent.placement.planned) {
        return;
    }
    if !references_hold(nodes, agents, settings, checker) {
        return;
    }
    let problem = problem_of(nodes, agents, settings);
    if problem.dimensions.len() > DIMENSIONS_MAX {
        let reason = format!(
            "{} dimensions; at most {DIMENSIONS_MAX}",
            problem.dimensions.len()
        );
        checker.fail("nodes.capacity", reason);
        return;
    }
    match plan(&problem, PlanLimits::default()) {
        Ok(planned) => {
            let placement: Vec<Option<usize>> = planned.node_of.iter().map(|&n| Some(n)).collect();
            // The planner's own check, independent of it: a plan that
            // breaks a rule is refused rather than run.
            for violation in crate::protocols::placement::validate::violations(&problem, &placement)
            {
                checker.fail("agents", format!("the plan breaks a rule: {violation}"));
            }
            for (agent, node) in agents.iter_mut().zip(planned.node_of) {
                agent.node = nodes[node].id.clone();
            }
        }
        Err(error) => {
            let entry = match &error {
                crate::protocols::placement::planner::PlanError::Unplaceable { agent, .. }
                | crate::protocols::placement::planner::PlanError::PinnedRefused {
                    agent, ..
                } => agents
                    .iter()
                    .find(|a| &a.name == agent)
                    .map_or(0, |a| a.entry),
            };
            checker.fail(
                format!("agents[{entry}].placement"),
                format!("no plan: {error}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/placement.toml");

    fn problems(text: &str) -> Vec<String> {
        let error = super::super::parse(text, "test.toml", Path::new(".")).unwrap_err();
        error
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key_path, p.reason))
            .collect()
    }

    #[test]
    fn the_example_plans_every_agent_within_its_rules() {
        let config = super::super::parse(EXAMPLE, "placement.toml", Path::new(".")).unwrap();
        let node = |id: &str| config.nodes.iter().find(|node| node.id == id).unwrap();
        let databases: Vec<_> = config
            .agents
            .iter()
            .filter(|a| a.name.starts_with("db-"))
            .collect();
        let zones: BTreeSet<_> = databases
            .iter()
            .map(|a| node(&a.node).zone.clone())
            .collect();
        assert_eq!(zones.len(), 3, "one replica a zone");
        assert!(databases
            .iter()
            .all(|a| node(&a.node).labels.get("disk").is_some_and(|d| d == "ssd")));
        let problem = problem_of(&config.nodes, &config.agents, &config.placement);
        let placement: Vec<Option<usize>> = (config.agents.iter())
            .map(|a| config.nodes.iter().position(|n| n.id == a.node))
            .collect();
        assert_eq!(
            crate::protocols::placement::validate::violations(&problem, &placement),
            vec![]
        );
    }

    #[test]
    fn bad_rules_and_impossible_plans_are_refused_naming_the_entry() {
        let broken = EXAMPLE
            .replace(
                "operator = \"in\", values = [\"ssd\"]",
                "operator = \"near\", values = [\"ssd\"]",
            )
            .replace("max_skew = 1", "max_skew = 0");
        let found = problems(&broken);
        assert!(
            found
                .iter()
                .any(|p| p
                    .starts_with("agents[0].node_affinity[0].operator: unknown operator \"near\"")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("agents[1].spread[0].max_skew")),
            "{found:?}"
        );
        // Four replicas cannot be in three SSD zones.
        let crowded = EXAMPLE.replace(
            "name = \"db-{i}\"\ncount = 3",
            "name = \"db-{i}\"\ncount = 4",
        );
        let found = problems(&crowded);
        assert!(
            found.iter().any(|p| p.starts_with("agents[0].placement: no plan: agent \"db-3\" fits no node")),
            "{found:?}"
        );
        let misspelt = EXAMPLE
            .replace(
                "anti_affinity = [{ group = \"db\", topology_key = \"zone\" }]",
                "anti_affinity = [{ group = \"dbs\", topology_key = \"rack\" }]",
            )
            .replace(
                "{ between = [\"eu\", \"us\"], ms = 80.0 }",
                "{ between = [\"eu\", \"asia\"], ms = 80.0 }",
            );
        let found = problems(&misspelt);
        for expected in [
            "agents[0].anti_affinity: no agent is in group \"dbs\"",
            "agents[0].anti_affinity: no node has the topology key \"rack\"",
            "placement.latency[2].between: no node is in region \"asia\"",
        ] {
            assert!(found.iter().any(|p| p == expected), "{expected}: {found:?}");
        }
        let unplanned = EXAMPLE.replace(
            "placement = \"planned\"\ngroup = \"load\"",
            "placement = \"spread\"\ngroup = \"load\"",
        );
        assert!(problems(&unplanned)
            .iter()
            .any(|p| p.contains("need placement = \"planned\"")));
    }
}
