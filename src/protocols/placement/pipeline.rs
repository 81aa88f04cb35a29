//! The planner's filter → score pipeline, one agent at a time, with
//! Kubernetes scheduler semantics. Filters: the node is up, every
//! dimension fits, required node affinity holds, required inter-agent
//! affinity and anti-affinity hold (both ways: an agent already placed
//! may refuse the newcomer), and refusing spread rules keep their skew.
//! Scores, each from 0 to 100 and weighted by [`ScoreWeights`]: least
//! and most allocated, balanced allocation, preferred node and agent
//! affinity, spread, and latency to the agent's placed peers. The best
//! score wins, the lowest node index on ties, so a plan is a function of
//! its problem. Placed agents are tallied per domain, so a check costs
//! the agent's rules, not the cluster's agents.

use std::collections::HashMap;

use super::model::{
    AgentSelector, AgentSpec, Problem, ScoreWeights, SpreadRule, Strength, Unsatisfiable,
};

/// Why a node was filtered out for an agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocked {
    Down,
    Capacity(String),
    NodeAffinity,
    AgentAffinity(String),
    AntiAffinity(String),
    Spread(String),
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::Down => write!(formatter, "down"),
            Blocked::Capacity(dimension) => write!(formatter, "not enough {dimension}"),
            Blocked::NodeAffinity => write!(formatter, "its required node affinity"),
            Blocked::AgentAffinity(what) => write!(formatter, "its required affinity with {what}"),
            Blocked::AntiAffinity(what) => write!(formatter, "anti-affinity with {what}"),
            Blocked::Spread(what) => write!(formatter, "the spread of {what}"),
        }
    }
}

/// Why a filter refused an agent, by index (cheap to make and compare
/// on every node tried); [`State::explain`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    Down,
    Capacity(usize),
    NodeAffinity,
    /// The agent's own required rule, by its place in `agent_rules`.
    AgentAffinity {
        rule: usize,
    },
    AntiAffinity {
        rule: usize,
    },
    /// A placed agent's anti-affinity selects it.
    RefusedBy,
    /// A placed agent whose affinity it alone could meet is elsewhere.
    NeededNear {
        holder: usize,
    },
    /// Its group's spread rule, by its place in the group's rules.
    Spread {
        rule: usize,
    },
}

/// Agents placed so far and what they use, with the tallies the rules
/// read. Its fields are the plan's; `place` and `remove` keep them true.
#[derive(Clone)]
pub struct State<'p> {
    pub problem: &'p Problem,
    pub node_of: Vec<Option<usize>>,
    /// `used[node][dimension]`.
    pub used: Vec<Vec<f64>>,
    topology: Topology,
    /// Agents per domain for each (selector, key) some rule reads.
    tallies: Vec<Tally>,
    /// For each agent, the tallies that count it: those that select it,
    /// and the holder tallies of its own required anti-affinities.
    counted_in: Vec<Vec<usize>>,
    /// For each agent, the holder tallies that select it: placed agents
    /// counted there refuse it in their domains.
    refused_by: Vec<Vec<usize>>,
    /// For each tally, the agents whose required affinity reads it: one
    /// placed with no other selected agent in its domain holds the rule
    /// only while every selected agent placed later joins it there.
    affine_to: Vec<Vec<usize>>,
    /// For each agent, the tally each of its agent rules reads.
    rule_tallies: Vec<Vec<usize>>,
    /// For each agent, the tally each of its spread rules reads (none
    /// without a group).
    spread_tallies: Vec<Vec<Option<usize>>>,
    /// For each agent, its group's spread rules: those any member gives
    /// (a spread is the group's, so every member is held to it).
    spread: Vec<Vec<SpreadRule>>,
    /// Who each agent talks to, and how much.
    peers: Vec<Vec<(usize, f64)>>,
    /// Each node's region in the latency matrix.
    region_of: Vec<Option<usize>>,
}

/// Each topology key's domains: `of_node[key][node]`, and how many.
#[derive(Clone, Default)]
struct Topology {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    of_node: Vec<Vec<Option<usize>>>,
    domains: Vec<usize>,
    /// Whether some up node is in the domain (`live[key][domain]`).
    live: Vec<Vec<bool>>,
}

#[derive(Clone)]
struct Tally {
    /// What it counts: agents its selector (the key it is filed under
    /// while `State::new` builds) selects, or (for `holders`) agents
    /// holding a required anti-affinity with the selector.
    holders: bool,
    key: usize,
    counts: Vec<u32>,
    /// All it counts, on nodes with the key or without.
    placed: u32,
}

/// A tolerance for sums of decimal demands.
const SLACK: f64 = 1e-9;

/// The tallies the rules read, and an index of them by selector.
type Tallies = (Vec<Tally>, HashMap<AgentSelector, Vec<usize>>);

impl<'p> State<'p> {
    /// Nothing placed yet.
    pub fn new(problem: &'p Problem) -> State<'p> {
        let topology = Topology::of(problem);
        let (tallies, tallies_of) = make_tallies(problem, &topology);
        let spread = group_spreads(problem);
        let mut index = AgentIndex::default();
        for (agent, spec) in problem.agents.iter().enumerate() {
            let lookup = Lookup {
                topology: &topology,
                tallies: &tallies,
                tallies_of: &tallies_of,
            };
            index.add(spec, &spread[agent], &lookup);
        }
        let mut affine_to: Vec<Vec<usize>> = vec![Vec::new(); tallies.len()];
        for (agent, spec) in problem.agents.iter().enumerate() {
            for (rule, &tally) in spec.agent_rules.iter().zip(&index.rule_tallies[agent]) {
                if !rule.anti && rule.strength == Strength::Required {
                    affine_to[tally].push(agent);
                }
            }
        }
        State {
            problem,
            affine_to,
            node_of: vec![None; problem.agents.len()],
            used: vec![vec![0.0; problem.dimensions.len()]; problem.nodes.len()],
            topology,
            tallies,
            counted_in: index.counted_in,
            refused_by: index.refused_by,
            rule_tallies: index.rule_tallies,
            spread_tallies: index.spread_tallies,
            spread,
            peers: problem.peers(),
            region_of: (problem.nodes.iter())
                .map(|node| {
                    let region = node.labels.get(super::model::REGION_LABEL)?;
                    problem
                        .latency
                        .regions
                        .iter()
                        .position(|known| known == region)
                })
                .collect(),
        }
    }

    /// Puts `agent` on `node` (filters are the caller's business).
    pub fn place(&mut self, agent: usize, node: usize) {
        assert!(self.node_of[agent].is_none(), "agent placed twice");
        self.node_of[agent] = Some(node);
        self.count(agent, node, true);
    }

    /// Takes `agent` off its node.
    pub fn remove(&mut self, agent: usize) {
        let node = self.node_of[agent].take().expect("agent not placed");
        self.count(agent, node, false);
    }

    fn count(&mut self, agent: usize, node: usize, add: bool) {
        let spec = &self.problem.agents[agent];
        for (dimension, demand) in spec.demand.iter().enumerate() {
            let used = &mut self.used[node][dimension];
            *used = if add { *used + demand } else { *used - demand };
        }
        let touched = std::mem::take(&mut self.counted_in[agent]);
        for &index in &touched {
            let tally = &mut self.tallies[index];
            tally.placed = if add {
                tally.placed + 1
            } else {
                tally.placed - 1
            };
            if let Some(domain) = self.topology.of_node[tally.key][node] {
                let count = &mut tally.counts[domain];
                *count = if add { *count + 1 } else { *count - 1 };
            }
        }
        self.counted_in[agent] = touched;
    }

    /// The first filter that refuses `agent` (not placed) on `node`, if
    /// one does.
    pub fn filter(&self, agent: usize, node: usize) -> Option<Refusal> {
        assert!(
            self.node_of[agent].is_none(),
            "filters judge unplaced agents"
        );
        let (problem, spec) = (self.problem, &self.problem.agents[agent]);
        let node_spec = &problem.nodes[node];
        if !node_spec.up {
            return Some(Refusal::Down);
        }
        for (dimension, demand) in spec.demand.iter().enumerate() {
            if self.used[node][dimension] + demand > node_spec.capacity[dimension] + SLACK {
                return Some(Refusal::Capacity(dimension));
            }
        }
        let required = |strength: &Strength| *strength == Strength::Required;
        if spec
            .node_rules
            .iter()
            .any(|rule| required(&rule.strength) && !node_spec.matches(rule))
        {
            return Some(Refusal::NodeAffinity);
        }
        self.filter_agent_rules(agent, node)
            .or_else(|| self.filter_spread(agent, node))
    }

    /// What `refusal` (of `agent`) means, in names.
    pub fn explain(&self, agent: usize, refusal: Refusal) -> Blocked {
        let spec = &self.problem.agents[agent];
        match refusal {
            Refusal::Down => Blocked::Down,
            Refusal::Capacity(dimension) => {
                Blocked::Capacity(self.problem.dimensions[dimension].clone())
            }
            Refusal::NodeAffinity => Blocked::NodeAffinity,
            Refusal::AgentAffinity { rule } => {
                Blocked::AgentAffinity(describe(&spec.agent_rules[rule].selector))
            }
            Refusal::AntiAffinity { rule } => {
                Blocked::AntiAffinity(describe(&spec.agent_rules[rule].selector))
            }
            Refusal::RefusedBy => {
                Blocked::AntiAffinity(format!("agents that refuse {}", spec.name))
            }
            Refusal::NeededNear { holder } => Blocked::AgentAffinity(format!(
                "{}, which needs it near",
                self.problem.agents[holder].name
            )),
            Refusal::Spread { rule } => {
                let group = spec.group.as_deref().unwrap_or("");
                Blocked::Spread(format!(
                    "group {group} over {}",
                    self.spread[agent][rule].topology_key
                ))
            }
        }
    }

    /// Placed agents in the node's domain that tally `index` counts.
    fn near(&self, node: usize, index: usize) -> u32 {
        let tally = &self.tallies[index];
        match self.topology.of_node[tally.key][node] {
            Some(domain) => tally.counts[domain],
            None => 0,
        }
    }

    fn filter_agent_rules(&self, agent: usize, node: usize) -> Option<Refusal> {
        let spec = &self.problem.agents[agent];
        let rules = spec.agent_rules.iter().enumerate();
        for ((at, rule), &index) in rules.zip(&self.rule_tallies[agent]) {
            if rule.strength != Strength::Required {
                continue;
            }
            let near = self.near(node, index);
            if rule.anti && near > 0 {
                return Some(Refusal::AntiAffinity { rule: at });
            }
            // A required affinity needs a domain: a node without the key
            // is outside every one, as in Kubernetes.
            let keyless = self.topology.of_node[self.tallies[index].key][node].is_none();
            if !rule.anti && (keyless || near == 0 && self.placed_anywhere(index)) {
                return Some(Refusal::AgentAffinity { rule: at });
            }
        }
        // Agents already placed whose anti-affinity selects this one.
        for &index in &self.refused_by[agent] {
            if self.near(node, index) > 0 {
                return Some(Refusal::RefusedBy);
            }
        }
        self.filter_lone_affinity(agent, node)
    }

    /// Refuses `node` if a placed agent whose required affinity selects
    /// `agent` has no other selected agent in its domain and `node` is
    /// outside that domain: the rule holds there only while it stays
    /// alone. (Kubernetes checks affinity once, at scheduling; the plan's
    /// rules hold in the end state, which the validator checks.)
    fn filter_lone_affinity(&self, agent: usize, node: usize) -> Option<Refusal> {
        for &index in &self.counted_in[agent] {
            let tally = &self.tallies[index];
            if tally.holders {
                continue;
            }
            for &holder in &self.affine_to[index] {
                let Some(at) = self.node_of[holder].filter(|_| holder != agent) else {
                    continue;
                };
                let itself = u32::from(self.counted_in[holder].binary_search(&index).is_ok());
                let domain = self.topology.of_node[tally.key][at];
                if self.near(at, index) == itself
                    && (domain.is_none() || domain != self.topology.of_node[tally.key][node])
                {
                    return Some(Refusal::NeededNear { holder });
                }
            }
        }
        None
    }

    /// Whether tally `index` counts an agent in some domain (the first
    /// of a group may go anywhere, as in Kubernetes).
    fn placed_anywhere(&self, index: usize) -> bool {
        self.tallies[index].placed > 0
    }

    /// Skew of the agent's group over `key` if the agent were added on
    /// `node`: the most in a live domain less the fewest. (Kubernetes
    /// looks only at the node's own domain, which is the same while the
    /// skew holds; the whole is checked because a search that takes an
    /// agent off may have lowered the fewest.)
    fn skew_with(&self, agent: usize, node: usize, rule: usize) -> Option<u32> {
        let tally = &self.tallies[self.spread_tallies[agent][rule]?];
        let domain = self.topology.of_node[tally.key][node]?;
        let live = &self.topology.live[tally.key];
        let counts = (0..tally.counts.len())
            .filter(|&other| live[other])
            .map(|other| tally.counts[other] + u32::from(other == domain));
        let (fewest, most) = counts.fold((u32::MAX, 0), |(low, high), c| (low.min(c), high.max(c)));
        Some(most.saturating_sub(fewest))
    }

    fn filter_spread(&self, agent: usize, node: usize) -> Option<Refusal> {
        for (index, rule) in self.spread[agent].iter().enumerate() {
            if rule.when_unsatisfiable != Unsatisfiable::Refuse {
                continue;
            }
            let skew = self.skew_with(agent, node, index);
            // A node without the key is outside every domain: refused, as
            // Kubernetes does.
            if skew.is_none_or(|skew| skew > rule.max_skew) {
                return Some(Refusal::Spread { rule: index });
            }
        }
        None
    }

    /// The agent's score on `node` (which passes the filters), but for
    /// latency, which the caller normalises over the candidates.
    pub fn score(&self, agent: usize, node: usize, weights: &ScoreWeights) -> f64 {
        let (problem, spec) = (self.problem, &self.problem.agents[agent]);
        let node_spec = &problem.nodes[node];
        let fractions = (spec.demand.iter().enumerate())
            .filter(|(dimension, _)| node_spec.capacity[*dimension] > 0.0)
            .map(|(d, demand)| ((self.used[node][d] + demand) / node_spec.capacity[d]).min(1.0));
        // One pass: the count, the sum and the sum of squares.
        let (count, sum, squares) =
            fractions.fold((0.0, 0.0, 0.0), |(n, s, q), f| (n + 1.0, s + f, q + f * f));
        let mean = if count > 0.0 { sum / count } else { 0.0 };
        let deviation = if count > 0.0 {
            (squares / count - mean * mean).max(0.0).sqrt()
        } else {
            0.0
        };
        let mut total = weights.least_allocated * 100.0 * (1.0 - mean)
            + weights.most_allocated * 100.0 * mean
            + weights.balanced * 100.0 * (1.0 - deviation);
        total += weights.node_affinity * self.node_affinity_score(agent, node);
        total += weights.agent_affinity * self.agent_affinity_score(agent, node);
        total += weights.spread * self.spread_score(agent, node);
        total
    }

    fn node_affinity_score(&self, agent: usize, node: usize) -> f64 {
        let spec = &self.problem.agents[agent];
        let (mut matched, mut possible) = (0.0, 0.0);
        for rule in &spec.node_rules {
            if let Strength::Preferred(weight) = rule.strength {
                possible += weight as f64;
                if self.problem.nodes[node].matches(rule) {
                    matched += weight as f64;
                }
            }
        }
        if possible == 0.0 {
            0.0
        } else {
            100.0 * matched / possible
        }
    }

    fn agent_affinity_score(&self, agent: usize, node: usize) -> f64 {
        let spec = &self.problem.agents[agent];
        let (mut earned, mut possible) = (0.0, 0.0);
        for (rule, &index) in spec.agent_rules.iter().zip(&self.rule_tallies[agent]) {
            let Strength::Preferred(weight) = rule.strength else {
                continue;
            };
            possible += weight as f64;
            let near = self.near(node, index) > 0;
            if near != rule.anti {
                earned += weight as f64;
            }
        }
        if possible == 0.0 {
            0.0
        } else {
            100.0 * earned / possible
        }
    }

    /// Higher where adding the agent leaves its group's skew lower.
    fn spread_score(&self, agent: usize, node: usize) -> f64 {
        let rules = self.spread[agent].len();
        if rules == 0 {
            return 0.0;
        }
        let skews: f64 = (0..rules)
            .map(|rule| self.skew_with(agent, node, rule).map_or(10.0, f64::from))
            .sum();
        100.0 / (1.0 + skews / rules as f64)
    }

    /// Who `agent` talks to, and how much (once per traffic entry).
    pub fn peers_of(&self, agent: usize) -> &[(usize, f64)] {
        &self.peers[agent]
    }

    /// Traffic-weighted latency from `agent` on `node` to its placed
    /// peers.
    pub fn latency_cost(&self, agent: usize, node: usize) -> f64 {
        (self.peers[agent].iter())
            .filter_map(|&(peer, weight)| {
                let at = self.node_of[peer].filter(|_| peer != agent)?;
                Some(weight * self.latency_between(node, at))
            })
            .sum()
    }

    /// The latency matrix's entry for two nodes' regions
    /// ([`super::model::LatencyMatrix::between`]).
    pub fn latency_between(&self, first: usize, second: usize) -> f64 {
        let regions = self.problem.latency.regions.len();
        match (self.region_of[first], self.region_of[second]) {
            (Some(a), Some(b)) => self.problem.latency.milliseconds[a * regions + b],
            _ => 0.0,
        }
    }
}

/// The tallies, to look one up by selector, holders and key.
struct Lookup<'a> {
    topology: &'a Topology,
    tallies: &'a [Tally],
    tallies_of: &'a HashMap<AgentSelector, Vec<usize>>,
}

impl Lookup<'_> {
    /// The selector's tallies of holders or not.
    fn of(&self, selector: &AgentSelector, holders: bool) -> Vec<usize> {
        (self.tallies_of.get(selector).into_iter().flatten().copied())
            .filter(|&index| self.tallies[index].holders == holders)
            .collect()
    }

    /// The selector's tally (not of holders) under `key`.
    fn under(&self, selector: &AgentSelector, key: &str) -> usize {
        let key = self.topology.key(key);
        let found = self
            .of(selector, false)
            .into_iter()
            .find(|&t| self.tallies[t].key == key);
        found.expect("every rule's tally is made in make_tallies")
    }
}

/// Per agent, the tallies its placing changes and its rules read (the
/// `State` fields of the same names).
#[derive(Default)]
struct AgentIndex {
    counted_in: Vec<Vec<usize>>,
    refused_by: Vec<Vec<usize>>,
    rule_tallies: Vec<Vec<usize>>,
    spread_tallies: Vec<Vec<Option<usize>>>,
}

impl AgentIndex {
    fn add(&mut self, agent: &AgentSpec, spread: &[SpreadRule], lookup: &Lookup) {
        let name = AgentSelector::Name(agent.name.clone());
        let group = agent.group.clone().map(AgentSelector::Group);
        let selecting: Vec<&AgentSelector> = std::iter::once(&name).chain(group.as_ref()).collect();
        let mut counted: Vec<usize> = selecting.iter().flat_map(|s| lookup.of(s, false)).collect();
        let anti = agent
            .agent_rules
            .iter()
            .filter(|r| r.anti && r.strength == Strength::Required);
        for rule in anti {
            let key = lookup.topology.key(&rule.topology_key);
            let holders = lookup.of(&rule.selector, true).into_iter();
            counted.extend(holders.filter(|&t| lookup.tallies[t].key == key));
        }
        counted.sort_unstable();
        counted.dedup();
        self.counted_in.push(counted);
        self.refused_by
            .push(selecting.iter().flat_map(|s| lookup.of(s, true)).collect());
        let rules = agent.agent_rules.iter();
        self.rule_tallies.push(
            rules
                .map(|rule| lookup.under(&rule.selector, &rule.topology_key))
                .collect(),
        );
        let spreads = spread
            .iter()
            .map(|rule| group.as_ref().map(|g| lookup.under(g, &rule.topology_key)));
        self.spread_tallies.push(spreads.collect());
    }
}

/// One tally for each (selector, key) a rule reads, and one of holders
/// for each required anti-affinity.
fn make_tallies(problem: &Problem, topology: &Topology) -> Tallies {
    let mut tallies: Vec<Tally> = Vec::new();
    let mut tallies_of: HashMap<AgentSelector, Vec<usize>> = HashMap::new();
    let mut tally = |selector: &AgentSelector, holders: bool, key: &str| {
        let key = topology.key(key);
        let known = tallies_of.entry(selector.clone()).or_default();
        if !known
            .iter()
            .any(|&t| tallies[t].holders == holders && tallies[t].key == key)
        {
            known.push(tallies.len());
            let counts = vec![0; topology.domains[key]];
            tallies.push(Tally {
                holders,
                key,
                counts,
                placed: 0,
            });
        }
    };
    for agent in &problem.agents {
        for rule in &agent.agent_rules {
            tally(&rule.selector, false, &rule.topology_key);
            if rule.anti && rule.strength == Strength::Required {
                tally(&rule.selector, true, &rule.topology_key);
            }
        }
        if let Some(group) = &agent.group {
            let selector = AgentSelector::Group(group.clone());
            for rule in &agent.spread {
                tally(&selector, false, &rule.topology_key);
            }
        }
    }
    (tallies, tallies_of)
}

/// Each agent's group's spread rules, gathered from every member.
fn group_spreads(problem: &Problem) -> Vec<Vec<SpreadRule>> {
    let mut of_group: HashMap<&str, Vec<SpreadRule>> = HashMap::new();
    for agent in &problem.agents {
        let Some(group) = &agent.group else { continue };
        let rules = of_group.entry(group).or_default();
        for rule in &agent.spread {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    (problem.agents.iter())
        .map(|agent| {
            agent
                .group
                .as_deref()
                .and_then(|g| of_group.get(g))
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn describe(selector: &AgentSelector) -> String {
    match selector {
        AgentSelector::Name(name) => format!("agent {name}"),
        AgentSelector::Group(group) => format!("group {group}"),
    }
}

impl Topology {
    fn of(problem: &Problem) -> Topology {
        let mut topology = Topology::default();
        let keys = (problem.agents.iter()).flat_map(|agent| {
            (agent
                .agent_rules
                .iter()
                .map(|rule| rule.topology_key.clone()))
            .chain(agent.spread.iter().map(|rule| rule.topology_key.clone()))
        });
        for key in keys {
            if topology.keys.contains(&key) {
                continue;
            }
            let mut names: HashMap<&str, usize> = HashMap::new();
            let mut live = Vec::new();
            let of_node: Vec<Option<usize>> = (problem.nodes.iter())
                .map(|node| {
                    let value = node.domain(&key)?;
                    let next = names.len();
                    let domain = *names.entry(value).or_insert(next);
                    if domain == live.len() {
                        live.push(false);
                    }
                    live[domain] |= node.up;
                    Some(domain)
                })
                .collect();
            topology.domains.push(names.len());
            topology.index.insert(key.clone(), topology.keys.len());
            topology.keys.push(key);
            topology.of_node.push(of_node);
            topology.live.push(live);
        }
        topology
    }

    fn key(&self, key: &str) -> usize {
        *self.index.get(key).expect("every rule's key is indexed")
    }
}
