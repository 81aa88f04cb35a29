//! An independent check of a placement: written apart from the planner
//! (it shares only the model), so that a planner's mistake is not also
//! the checker's. It finds every agent without a node or on a down one,
//! every capacity exceeded, and every required rule broken.

use super::model::{AgentSelector, Problem, Strength, Unsatisfiable};

/// One thing wrong with a placement.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("agent {agent:?} is placed nowhere")]
    Unplaced { agent: String },
    #[error("agent {agent:?} is on node {node:?}, which is down or unknown")]
    OnDownNode { agent: String, node: String },
    #[error("node {node:?} holds {used} of {dimension} and has {capacity}")]
    OverCapacity {
        node: String,
        dimension: String,
        used: f64,
        capacity: f64,
    },
    #[error("agent {agent:?} is on node {node:?}, against its required node affinity")]
    NodeAffinity { agent: String, node: String },
    #[error("agent {agent:?} shares no {topology_key} with {selector:?}, which it requires")]
    AgentAffinity {
        agent: String,
        selector: String,
        topology_key: String,
    },
    #[error("agent {agent:?} shares a {topology_key} with {other:?}, against an anti-affinity")]
    AntiAffinity {
        agent: String,
        other: String,
        topology_key: String,
    },
    #[error("group {group:?} is spread over {topology_key} with skew {skew}, beyond {max_skew}")]
    Spread {
        group: String,
        topology_key: String,
        skew: u32,
        max_skew: u32,
    },
}

/// A tolerance for sums of decimal demands.
const SLACK: f64 = 1e-9;

/// Every violation of `node_of` (each agent's node) against `problem`.
pub fn violations(problem: &Problem, node_of: &[Option<usize>]) -> Vec<Violation> {
    assert_eq!(node_of.len(), problem.agents.len(), "one node per agent");
    let mut found = Vec::new();
    let mut used = vec![vec![0.0; problem.dimensions.len()]; problem.nodes.len()];
    for (agent, spec) in problem.agents.iter().enumerate() {
        let Some(node) = node_of[agent] else {
            found.push(Violation::Unplaced {
                agent: spec.name.clone(),
            });
            continue;
        };
        let Some(node_spec) = problem.nodes.get(node).filter(|node| node.up) else {
            let node = problem.nodes.get(node).map_or("?", |n| &n.name).to_string();
            found.push(Violation::OnDownNode {
                agent: spec.name.clone(),
                node,
            });
            continue;
        };
        for (dimension, demand) in spec.demand.iter().enumerate() {
            used[node][dimension] += demand;
        }
        let required = |rule: &&super::model::NodeRule| rule.strength == Strength::Required;
        if spec
            .node_rules
            .iter()
            .filter(required)
            .any(|r| !node_spec.matches(r))
        {
            found.push(Violation::NodeAffinity {
                agent: spec.name.clone(),
                node: node_spec.name.clone(),
            });
        }
        found.extend(agent_rule_violations(problem, node_of, agent));
    }
    for (node, spec) in problem.nodes.iter().enumerate() {
        for (dimension, name) in problem.dimensions.iter().enumerate() {
            if used[node][dimension] > spec.capacity[dimension] + SLACK {
                found.push(Violation::OverCapacity {
                    node: spec.name.clone(),
                    dimension: name.clone(),
                    used: used[node][dimension],
                    capacity: spec.capacity[dimension],
                });
            }
        }
    }
    found.extend(spread_violations(problem, node_of));
    found
}

fn same_domain(problem: &Problem, key: &str, first: usize, second: usize) -> bool {
    let first = problem.nodes[first].domain(key);
    first.is_some() && first == problem.nodes[second].domain(key)
}

/// The agent's required inter-agent rules that its place breaks. An
/// affinity with agents none of which is placed (the first of a group)
/// holds anywhere, as in Kubernetes.
fn agent_rule_violations(
    problem: &Problem,
    node_of: &[Option<usize>],
    agent: usize,
) -> Vec<Violation> {
    let spec = &problem.agents[agent];
    let node = node_of[agent].expect("placed");
    let mut found = Vec::new();
    for rule in spec
        .agent_rules
        .iter()
        .filter(|r| r.strength == Strength::Required)
    {
        let targets: Vec<(usize, usize)> = (problem.agents.iter().enumerate())
            .filter(|(other, other_spec)| {
                *other != agent && other_spec.is_selected_by(&rule.selector)
            })
            .filter_map(|(other, _)| node_of[other].map(|at| (other, at)))
            .collect();
        let near = |&&(_, at): &&(usize, usize)| same_domain(problem, &rule.topology_key, node, at);
        if rule.anti {
            if let Some(&(other, _)) = targets.iter().find(near) {
                found.push(Violation::AntiAffinity {
                    agent: spec.name.clone(),
                    other: problem.agents[other].name.clone(),
                    topology_key: rule.topology_key.clone(),
                });
            }
        } else if !targets.is_empty() && !targets.iter().any(|t| near(&t)) {
            let selector = match &rule.selector {
                AgentSelector::Name(name) => format!("agent {name}"),
                AgentSelector::Group(group) => format!("group {group}"),
            };
            found.push(Violation::AgentAffinity {
                agent: spec.name.clone(),
                selector,
                topology_key: rule.topology_key.clone(),
            });
        }
    }
    found
}

/// Refusing spread rules whose group's final skew is beyond them; the
/// domains are the up nodes' values of the key.
fn spread_violations(problem: &Problem, node_of: &[Option<usize>]) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut checked: Vec<(String, super::model::SpreadRule)> = Vec::new();
    for spec in &problem.agents {
        let Some(group) = &spec.group else { continue };
        for rule in &spec.spread {
            let pair = (group.clone(), rule.clone());
            if rule.when_unsatisfiable != Unsatisfiable::Refuse || checked.contains(&pair) {
                continue;
            }
            checked.push(pair);
            let mut counts: std::collections::BTreeMap<&str, u32> = (problem.nodes.iter())
                .filter(|node| node.up)
                .filter_map(|node| node.domain(&rule.topology_key))
                .map(|domain| (domain, 0))
                .collect();
            for (agent, other) in problem.agents.iter().enumerate() {
                let node = node_of[agent].and_then(|node| problem.nodes.get(node));
                let domain = node.and_then(|node| node.domain(&rule.topology_key));
                if let (Some(domain), true) = (domain, other.group.as_ref() == Some(group)) {
                    *counts.entry(domain).or_default() += 1;
                }
            }
            let most = counts.values().max().copied().unwrap_or(0);
            let fewest = counts.values().min().copied().unwrap_or(0);
            if most - fewest > rule.max_skew {
                found.push(Violation::Spread {
                    group: group.clone(),
                    topology_key: rule.topology_key.clone(),
                    skew: most - fewest,
                    max_skew: rule.max_skew,
                });
            }
        }
    }
    found
}
