//! A seeded simulation of placement over a cluster's life: nodes die and
//! come back and agents' demands change, and after each event the
//! planner rebalances the directory it left, as the planner of a cluster
//! would. Every directory is checked: each agent on exactly one up node,
//! no capacity exceeded and no required rule broken (the independent
//! validator); agents whose node survives stay unless a balance migration
//! moves them, within the budget; each move starts where the directory
//! had the agent; and an event with no plan leaves the directory as it
//! was (nothing half-applied).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::protocols::placement::model::*;
use crate::protocols::placement::planner::{plan, rebalance, PlanLimits};
use crate::protocols::placement::validate::violations;

/// What one run saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementRun {
    pub events: usize,
    pub replans: usize,
    /// Events after which no plan existed (the directory was kept).
    pub refused: usize,
    pub moves: usize,
    pub forced_moves: usize,
    /// Broken invariants, described; empty when the run is clean.
    pub failures: Vec<String>,
}

/// Runs `events` events on a cluster made from `seed`, with a budget of
/// `migrations_max` balance moves per re-plan.
pub fn run(seed: u64, events: usize, migrations_max: usize) -> PlacementRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut problem = cluster(&mut rng);
    let mut outcome = PlacementRun::default();
    let mut directory: Vec<usize> = match plan(&problem, PlanLimits::default()) {
        Ok(planned) => planned.node_of,
        Err(error) => {
            outcome.failures.push(format!("the first plan: {error}"));
            return outcome;
        }
    };
    check(&problem, &directory, "the first plan", &mut outcome);
    for event in 0..events {
        let what = change(&mut problem, &mut rng);
        outcome.events += 1;
        let current: Vec<Option<usize>> = directory.iter().map(|&n| Some(n)).collect();
        let Ok(moved) = rebalance(&problem, &current, migrations_max) else {
            outcome.refused += 1;
            continue;
        };
        outcome.replans += 1;
        outcome.moves += moved.moves.len();
        outcome.forced_moves += moved.forced_moves;
        let at = format!("event {event} ({what})");
        if moved.moves.len() - moved.forced_moves > migrations_max {
            outcome.failures.push(format!(
                "{at}: {} moves for balance, beyond {migrations_max}",
                moved.moves.len() - moved.forced_moves
            ));
        }
        for (agent, &node) in moved.plan.node_of.iter().enumerate() {
            let moved_here = moved.moves.iter().find(|m| m.0 == agent);
            match moved_here {
                Some(&(_, from, to)) if from != Some(directory[agent]) || to != node => {
                    outcome.failures.push(format!(
                        "{at}: agent {agent}'s move {from:?} → {to} is not {} → {node}",
                        directory[agent]
                    ));
                }
                None if node != directory[agent] => {
                    outcome.failures.push(format!(
                        "{at}: agent {agent} went {} → {node} without a move",
                        directory[agent]
                    ));
                }
                _ => {}
            }
        }
        directory = moved.plan.node_of;
        check(&problem, &directory, &at, &mut outcome);
    }
    outcome
}

fn check(problem: &Problem, directory: &[usize], at: &str, outcome: &mut PlacementRun) {
    if directory.len() != problem.agents.len() {
        outcome.failures.push(format!(
            "{at}: {} entries for {} agents",
            directory.len(),
            problem.agents.len()
        ));
        return;
    }
    let placement: Vec<Option<usize>> = directory.iter().map(|&n| Some(n)).collect();
    for violation in violations(problem, &placement) {
        outcome.failures.push(format!("{at}: {violation}"));
    }
}

/// One event: a node dies (while four stay up), a dead one returns, or
/// an agent's demand changes by up to half.
fn change(problem: &mut Problem, rng: &mut ChaCha8Rng) -> String {
    let up: Vec<usize> = (0..problem.nodes.len())
        .filter(|&n| problem.nodes[n].up)
        .collect();
    let down: Vec<usize> = (0..problem.nodes.len())
        .filter(|&n| !problem.nodes[n].up)
        .collect();
    match rng.gen_range(0..3) {
        0 if up.len() > 4 => {
            let node = up[rng.gen_range(0..up.len())];
            problem.nodes[node].up = false;
            format!("{} down", problem.nodes[node].name)
        }
        1 if !down.is_empty() => {
            let node = down[rng.gen_range(0..down.len())];
            problem.nodes[node].up = true;
            format!("{} up", problem.nodes[node].name)
        }
        _ => {
            let agent = rng.gen_range(0..problem.agents.len());
            let factor = rng.gen_range(0.5..1.5);
            problem.agents[agent]
                .demand
                .iter_mut()
                .for_each(|demand| *demand *= factor);
            format!("{}'s demand × {factor:.2}", problem.agents[agent].name)
        }
    }
}

/// 8 to 15 nodes in 3 zones and 2 regions; 20 to 49 agents in groups of
/// four whose members refuse to share a node, spread over zones and talk
/// to each other; every fifth group only on `ssd` nodes when it can.
fn cluster(rng: &mut ChaCha8Rng) -> Problem {
    let nodes = rng.gen_range(8..16);
    let agents = rng.gen_range(20..50);
    let mut problem = Problem {
        dimensions: vec!["cpu".into(), "memory_mb".into()],
        ..Problem::default()
    };
    problem.nodes = (0..nodes)
        .map(|n| {
            let mut labels: std::collections::BTreeMap<String, String> = [
                ("zone", format!("z{}", n % 3)),
                (REGION_LABEL, format!("r{}", n % 2)),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into();
            if n % 2 == 0 {
                labels.insert("disk".into(), "ssd".into());
            }
            NodeSpec {
                name: format!("n{n}"),
                capacity: vec![rng.gen_range(4..=8) as f64, 8192.0],
                labels,
                up: true,
            }
        })
        .collect();
    problem.agents = (0..agents).map(|a| agent(a, rng)).collect();
    problem.latency = LatencyMatrix {
        regions: vec!["r0".into(), "r1".into()],
        milliseconds: vec![1.0, 40.0, 40.0, 1.0],
    };
    problem.traffic = (0..agents)
        .filter(|a| a % 4 != 3 && a + 1 < agents)
        .map(|a| Traffic {
            first: a,
            second: a + 1,
            weight: rng.gen_range(1..=5) as f64,
        })
        .collect();
    problem
}

fn agent(index: usize, rng: &mut ChaCha8Rng) -> AgentSpec {
    let group = format!("g{}", index / 4);
    let apart = AgentRule {
        anti: true,
        selector: AgentSelector::Group(group.clone()),
        topology_key: NODE_TOPOLOGY.into(),
        strength: Strength::Required,
    };
    let spread = SpreadRule {
        topology_key: "zone".into(),
        max_skew: 2,
        when_unsatisfiable: Unsatisfiable::ScheduleAnyway,
    };
    let ssd = NodeRule {
        matches: vec![LabelMatch {
            key: "disk".into(),
            operator: MatchOperator::In(vec!["ssd".into()]),
        }],
        strength: Strength::Preferred(50),
    };
    AgentSpec {
        name: format!("a{index}"),
        group: Some(group),
        demand: vec![
            rng.gen_range(1..=4) as f64 * 0.25,
            rng.gen_range(1..=4) as f64 * 256.0,
        ],
        node_rules: if (index / 4) % 5 == 0 {
            vec![ssd]
        } else {
            Vec::new()
        },
        agent_rules: vec![apart],
        spread: vec![spread],
        pinned: None,
    }
}
