//! The planner against its rules, its validator and random problems.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::model::*;
use super::planner::{plan, rebalance, PlanError, PlanLimits};
use super::validate::violations;

fn node(name: &str, cpu: f64, labels: &[(&str, &str)]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        capacity: vec![cpu],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        up: true,
    }
}

fn agent(name: &str, group: &str, cpu: f64) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        group: Some(group.into()),
        demand: vec![cpu],
        ..AgentSpec::default()
    }
}

fn problem(nodes: Vec<NodeSpec>, agents: Vec<AgentSpec>) -> Problem {
    Problem {
        dimensions: vec!["cpu".into()],
        nodes,
        agents,
        ..Problem::default()
    }
}

fn zones(count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| node(&format!("n{i}"), 4.0, &[("zone", &format!("z{}", i % 3))]))
        .collect()
}

fn node_of(plan: &super::planner::Plan) -> Vec<Option<usize>> {
    plan.node_of.iter().map(|&n| Some(n)).collect()
}

#[test]
fn anti_affinity_puts_replicas_in_different_zones_and_refuses_a_fourth() {
    let rule = AgentRule {
        anti: true,
        selector: AgentSelector::Group("db".into()),
        topology_key: "zone".into(),
        strength: Strength::Required,
    };
    let replicas: Vec<AgentSpec> = (0..3)
        .map(|i| AgentSpec {
            agent_rules: vec![rule.clone()],
            ..agent(&format!("db{i}"), "db", 1.0)
        })
        .collect();
    let mut asked = problem(zones(6), replicas.clone());
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    assert!(violations(&asked, &node_of(&placed)).is_empty());
    let zones_used: std::collections::BTreeSet<&str> = placed
        .node_of
        .iter()
        .map(|&n| asked.nodes[n].labels["zone"].as_str())
        .collect();
    assert_eq!(zones_used.len(), 3);
    asked.agents.push(AgentSpec {
        agent_rules: vec![rule],
        ..agent("db3", "db", 1.0)
    });
    let refused = plan(&asked, PlanLimits::default()).unwrap_err();
    let PlanError::Unplaceable { agent, blocked } = &refused else {
        panic!("{refused}")
    };
    assert_eq!(agent, "db3");
    assert_eq!(blocked.iter().map(|(_, nodes)| nodes).sum::<usize>(), 6);
    assert!(
        refused.to_string().contains("anti-affinity with group db"),
        "{refused}"
    );
}

#[test]
fn affinity_follows_the_first_of_a_group_and_capacity_is_never_exceeded() {
    let follow = AgentRule {
        anti: false,
        selector: AgentSelector::Group("cache".into()),
        topology_key: "node".into(),
        strength: Strength::Required,
    };
    let mut agents = vec![agent("cache", "cache", 2.0)];
    agents.extend((0..2).map(|i| AgentSpec {
        agent_rules: vec![follow.clone()],
        ..agent(&format!("w{i}"), "web", 1.0)
    }));
    let asked = problem(zones(4), agents);
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    assert!(placed.node_of.iter().all(|&n| n == placed.node_of[0]));
    let mut crowded = asked.clone();
    crowded.agents.push(AgentSpec {
        agent_rules: vec![follow],
        ..agent("w2", "web", 1.0)
    });
    let refused = plan(&crowded, PlanLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("w2") && refused.contains("not enough cpu on 1 node"),
        "{refused}"
    );
}

#[test]
fn a_refusing_spread_keeps_the_skew_and_a_pinned_agent_stays() {
    let spread = SpreadRule {
        topology_key: "zone".into(),
        max_skew: 1,
        when_unsatisfiable: Unsatisfiable::Refuse,
    };
    let mut agents: Vec<AgentSpec> = (0..7)
        .map(|i| AgentSpec {
            spread: vec![spread.clone()],
            ..agent(&format!("s{i}"), "s", 0.5)
        })
        .collect();
    agents[0].pinned = Some(0);
    let mut asked = problem(zones(3), agents);
    // Packing would put them all together; the spread must win.
    asked.weights = ScoreWeights {
        most_allocated: 10.0,
        least_allocated: 0.0,
        ..ScoreWeights::default()
    };
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    assert!(violations(&asked, &node_of(&placed)).is_empty());
    assert_eq!(placed.node_of[0], 0);
    let mut counts = [0; 3];
    placed.node_of.iter().for_each(|&n| counts[n] += 1);
    counts.sort();
    assert_eq!(counts, [2, 2, 3]);
}

/// Two regions 80 ms apart, four nodes each; pairs of agents that talk.
fn two_regions(pairs: usize) -> Problem {
    let nodes = (0..8)
        .map(|i| {
            node(
                &format!("n{i}"),
                8.0,
                &[("region", if i < 4 { "east" } else { "west" })],
            )
        })
        .collect();
    let agents = (0..2 * pairs)
        .map(|i| agent(&format!("a{i}"), "talk", 1.0))
        .collect();
    let mut asked = problem(nodes, agents);
    asked.latency = LatencyMatrix {
        regions: vec!["east".into(), "west".into()],
        milliseconds: vec![1.0, 80.0, 80.0, 1.0],
    };
    asked.traffic = (0..pairs)
        .map(|p| Traffic {
            first: 2 * p,
            second: 2 * p + 1,
            weight: 10.0,
        })
        .collect();
    asked
}

#[test]
fn talkers_end_up_in_one_region() {
    let asked = two_regions(6);
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    assert!(violations(&asked, &node_of(&placed)).is_empty());
    for pair in asked.traffic.iter() {
        let region = |a: usize| &asked.nodes[placed.node_of[a]].labels["region"];
        assert_eq!(region(pair.first), region(pair.second));
    }
    // Each pair within a region: 6 pairs × 10 × 1 ms, the least possible.
    assert_eq!(placed.latency_cost, 60.0);
    let apart: Vec<usize> = (0..asked.agents.len())
        .map(|a| (a % 2) * 4 + (a / 2) % 4)
        .collect();
    assert_eq!(
        super::planner::latency_cost_of(&asked, &apart),
        6.0 * 10.0 * 80.0
    );
}

#[test]
fn a_dead_node_moves_only_its_agents() {
    let asked = problem(
        zones(4),
        (0..8).map(|i| agent(&format!("a{i}"), "g", 1.0)).collect(),
    );
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    let mut after = asked.clone();
    let dead = placed.node_of[0];
    after.nodes[dead].up = false;
    let before: Vec<Option<usize>> = node_of(&placed);
    let moved = rebalance(&after, &before, 0).unwrap();
    assert!(violations(&after, &node_of(&moved.plan)).is_empty());
    let on_dead = before.iter().filter(|&&n| n == Some(dead)).count();
    assert_eq!(moved.moves.len(), on_dead);
    assert_eq!(moved.forced_moves, on_dead);
    for (agent, &was) in before.iter().enumerate() {
        if was != Some(dead) {
            assert_eq!(
                Some(moved.plan.node_of[agent]),
                was,
                "agent {agent} moved needlessly"
            );
        }
    }
}

#[test]
fn a_migration_budget_buys_balance() {
    let asked = problem(
        zones(4),
        (0..8).map(|i| agent(&format!("a{i}"), "g", 0.5)).collect(),
    );
    // Everyone on node 0: legal, but lopsided.
    let crowded = vec![Some(0); 8];
    let balanced = rebalance(&asked, &crowded, 6).unwrap();
    assert_eq!(balanced.forced_moves, 0);
    assert_eq!(balanced.moves.len(), 6);
    assert!(balanced.plan.balance.deviation < balanced.balance_before.deviation);
    assert!(balanced.plan.balance.utilisation_max <= 0.25 + 1e-9);
}

fn random_problem() -> impl Strategy<Value = Problem> {
    let nodes = proptest::collection::vec((1u32..8, 0usize..3, 0usize..2, any::<bool>()), 1..8);
    let agents = proptest::collection::vec((1u32..5, 0usize..3, 0u8..6), 0..16);
    (nodes, agents).prop_map(|(nodes, agents)| {
        let nodes = (nodes.iter().enumerate())
            .map(|(i, &(cpu, zone, region, down))| NodeSpec {
                up: !(down && i % 3 == 0),
                ..node(
                    &format!("n{i}"),
                    cpu as f64,
                    &[
                        ("zone", &format!("z{zone}")),
                        ("region", &format!("r{region}")),
                    ],
                )
            })
            .collect();
        let agents = (agents.iter().enumerate())
            .map(|(i, &(cpu, group, rule))| random_agent(i, cpu, group, rule))
            .collect();
        let mut asked = problem(nodes, agents);
        asked.latency = LatencyMatrix {
            regions: vec!["r0".into(), "r1".into()],
            milliseconds: vec![1.0, 30.0, 30.0, 2.0],
        };
        let count = asked.agents.len();
        asked.traffic = (1..count)
            .map(|a| Traffic {
                first: a - 1,
                second: a,
                weight: a as f64,
            })
            .collect();
        asked
    })
}

fn random_agent(index: usize, cpu: u32, group: usize, rule: u8) -> AgentSpec {
    let group_name = format!("g{group}");
    let mut spec = agent(&format!("a{index}"), &group_name, cpu as f64 / 2.0);
    let selector = AgentSelector::Group(group_name);
    let key = if rule % 2 == 0 { "zone" } else { "node" };
    match rule {
        0 | 1 => spec.agent_rules.push(AgentRule {
            anti: true,
            selector,
            topology_key: key.into(),
            strength: Strength::Required,
        }),
        2 => spec.agent_rules.push(AgentRule {
            anti: false,
            selector,
            topology_key: key.into(),
            strength: Strength::Required,
        }),
        3 => spec.spread.push(SpreadRule {
            topology_key: "zone".into(),
            max_skew: 1,
            when_unsatisfiable: Unsatisfiable::Refuse,
        }),
        4 => spec.node_rules.push(NodeRule {
            matches: vec![LabelMatch {
                key: "region".into(),
                operator: MatchOperator::In(vec!["r0".into()]),
            }],
            strength: Strength::Required,
        }),
        _ => {}
    }
    spec
}

proptest! {
    #[test]
    fn every_plan_passes_the_validator(asked in random_problem(), dead in 0usize..8) {
        let Ok(placed) = plan(&asked, PlanLimits::default()) else { return Ok(()) };
        let placement = node_of(&placed);
        prop_assert_eq!(violations(&asked, &placement), vec![]);
        prop_assert!(placed.nodes_used >= placed.nodes_bound);
        let mut after = asked.clone();
        if let Some(node) = after.nodes.get_mut(dead) { node.up = false; }
        if let Ok(moved) = rebalance(&after, &placement, 3) {
            prop_assert_eq!(violations(&after, &node_of(&moved.plan)), vec![]);
            let on_dead = placement.iter().filter(|&&n| n == Some(dead)).count();
            prop_assert!(moved.forced_moves >= on_dead);
        }
    }
}

#[test]
fn a_required_affinity_never_lands_outside_every_domain() {
    // n1 has no zone: an agent that must share a zone cannot go there,
    // and its target cannot follow it onto another zone-less node.
    let nodes = vec![
        node("n0", 4.0, &[("zone", "a")]),
        node("n1", 8.0, &[]),
        node("n2", 8.0, &[]),
    ];
    let follow = AgentRule {
        anti: false,
        selector: AgentSelector::Group("cache".into()),
        topology_key: "zone".into(),
        strength: Strength::Required,
    };
    let web = AgentSpec {
        agent_rules: vec![follow],
        ..agent("web", "web", 2.0)
    };
    let asked = problem(nodes, vec![web, agent("cache", "cache", 1.0)]);
    let placed = plan(&asked, PlanLimits::default()).unwrap();
    assert_eq!(violations(&asked, &node_of(&placed)), vec![]);
    assert_eq!(placed.node_of, vec![0, 0], "both in zone a");
}
