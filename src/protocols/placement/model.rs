//! What a placement is asked: nodes with capacities in named dimensions
//! and labels, agents with demands and rules (Kubernetes scheduler
//! semantics: node affinity, inter-agent affinity and anti-affinity over
//! a topology key, topology spread), the weights of the scores, and the
//! geography (latency between regions, who talks to whom). Built from
//! the config by `config::placement`; indices, not names, from here on.

use std::collections::BTreeMap;

/// The label that names a node's region, and the topology key under
/// which every node is a domain of its own.
pub const REGION_LABEL: &str = "region";
pub const NODE_TOPOLOGY: &str = "node";

/// A placement problem.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problem {
    /// The dimensions' names (`cpu`, `memory_mb`, …), in the order every
    /// capacity and demand lists them.
    pub dimensions: Vec<String>,
    pub nodes: Vec<NodeSpec>,
    pub agents: Vec<AgentSpec>,
    pub weights: ScoreWeights,
    pub latency: LatencyMatrix,
    /// Who talks to whom, and how much.
    pub traffic: Vec<Traffic>,
}

/// A node as placement sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// Per dimension; a dimension the node does not name has 0.
    pub capacity: Vec<f64>,
    /// `region`, `zone` and free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Down nodes take no agents.
    pub up: bool,
}

/// An agent as placement sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentSpec {
    pub name: String,
    /// The agent's group, which rules and spread constraints select.
    pub group: Option<String>,
    /// Per dimension; 0 where the agent names none.
    pub demand: Vec<f64>,
    pub node_rules: Vec<NodeRule>,
    pub agent_rules: Vec<AgentRule>,
    pub spread: Vec<SpreadRule>,
    /// A node the agent must run on (the config's `node = "..."`).
    pub pinned: Option<usize>,
}

/// Whether a rule must hold or only counts towards the score (with a
/// weight from 1 to 100, as Kubernetes has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    Required,
    Preferred(u32),
}

/// A test of one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMatch {
    pub key: String,
    pub operator: MatchOperator,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchOperator {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// Node affinity: every match must hold on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRule {
    pub matches: Vec<LabelMatch>,
    pub strength: Strength,
}

/// Which agents an inter-agent rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AgentSelector {
    Name(String),
    Group(String),
}

/// Inter-agent affinity (share a domain of `topology_key` with one of
/// the selected agents) or anti-affinity (share it with none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRule {
    pub anti: bool,
    pub selector: AgentSelector,
    pub topology_key: String,
    pub strength: Strength,
}

/// What a spread rule does when no node keeps the skew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsatisfiable {
    Refuse,
    ScheduleAnyway,
}

/// Topology spread of the agent's group over the domains of
/// `topology_key`: the most agents of the group in a domain less the
/// fewest stays within `max_skew`. The rule is the group's: every member
/// is held to the rules any member gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpreadRule {
    pub topology_key: String,
    pub max_skew: u32,
    pub when_unsatisfiable: Unsatisfiable,
}

/// How much each score counts (0: not at all).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreWeights {
    pub least_allocated: f64,
    pub most_allocated: f64,
    pub balanced: f64,
    pub node_affinity: f64,
    pub agent_affinity: f64,
    pub spread: f64,
    pub latency: f64,
}

impl Default for ScoreWeights {
    /// Kubernetes' defaults in spirit: spread load, honour preferences,
    /// and keep talkers close.
    fn default() -> ScoreWeights {
        ScoreWeights {
            least_allocated: 1.0,
            most_allocated: 0.0,
            balanced: 1.0,
            node_affinity: 2.0,
            agent_affinity: 2.0,
            spread: 2.0,
            latency: 1.0,
        }
    }
}

/// Latency (or cost) between regions, in milliseconds; symmetric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyMatrix {
    pub regions: Vec<String>,
    /// `milliseconds[a * regions.len() + b]`; the diagonal is the latency
    /// between two nodes of one region.
    pub milliseconds: Vec<f64>,
}

/// Two agents that talk, and how much (messages a second, bytes, any
/// unit as long as it is one unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    pub first: usize,
    pub second: usize,
    pub weight: f64,
}

impl NodeSpec {
    /// The node's domain under `key`: its own name under `node`, else
    /// the label's value (none when it lacks the label).
    pub fn domain<'a>(&'a self, key: &str) -> Option<&'a str> {
        if key == NODE_TOPOLOGY {
            return Some(&self.name);
        }
        self.labels.get(key).map(String::as_str)
    }

    pub fn matches(&self, rule: &NodeRule) -> bool {
        rule.matches.iter().all(|test| {
            let value = self.labels.get(&test.key);
            match &test.operator {
                MatchOperator::In(values) => value.is_some_and(|value| values.contains(value)),
                MatchOperator::NotIn(values) => value.is_none_or(|value| !values.contains(value)),
                MatchOperator::Exists => value.is_some(),
                MatchOperator::DoesNotExist => value.is_none(),
            }
        })
    }
}

impl AgentSpec {
    pub fn is_selected_by(&self, selector: &AgentSelector) -> bool {
        match selector {
            AgentSelector::Name(name) => &self.name == name,
            AgentSelector::Group(group) => self.group.as_ref() == Some(group),
        }
    }
}

impl LatencyMatrix {
    /// Latency between the regions of two nodes (the diagonal within one
    /// region, on one node too: geography is by region, and within one
    /// the other scores choose); 0 when either has no region the matrix
    /// knows (or the matrix is empty).
    pub fn between(&self, first: &NodeSpec, second: &NodeSpec) -> f64 {
        let index = |node: &NodeSpec| {
            let region = node.labels.get(REGION_LABEL)?;
            self.regions.iter().position(|known| known == region)
        };
        match (index(first), index(second)) {
            (Some(a), Some(b)) => self.milliseconds[a * self.regions.len() + b],
            _ => 0.0,
        }
    }
}

impl Problem {
    /// Agents that talk to each agent, with the weight: `peers[a]` lists
    /// (b, weight) once for each traffic entry naming a.
    pub fn peers(&self) -> Vec<Vec<(usize, f64)>> {
        let mut peers = vec![Vec::new(); self.agents.len()];
        for traffic in &self.traffic {
            peers[traffic.first].push((traffic.second, traffic.weight));
            peers[traffic.second].push((traffic.first, traffic.weight));
        }
        peers
    }
}
