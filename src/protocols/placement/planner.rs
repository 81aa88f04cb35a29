//! Plans: a batch placement (pinned agents first, then the rest largest
//! first through the filter → score pipeline, then a local search that
//! moves agents to cut traffic-weighted latency within every filter),
//! and rebalancing (keep every agent that may stay where it is, move the
//! rest, then spend a migration budget on balance). Every plan reports
//! what it costs and how far it may be from the fewest nodes; nothing is
//! half-applied: a problem that cannot be met is an error naming the
//! agent and what blocked it on each node.

use super::model::Problem;
use super::pipeline::{Blocked, Refusal, State};

/// A complete placement and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `node_of[agent]`: the agent's node.
    pub node_of: Vec<usize>,
    pub nodes_used: usize,
    /// The fewest nodes any placement could use: per dimension, the
    /// fewest up nodes whose capacities cover the demand (the largest
    /// first); the most of these.
    pub nodes_bound: usize,
    /// Σ over traffic of weight × latency between the two agents' nodes.
    pub latency_cost: f64,
    pub balance: Balance,
    /// Agents moved by the latency search.
    pub search_moves: usize,
}

/// How evenly the up nodes are used: each node's utilisation is the
/// mean over dimensions of used over capacity.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Balance {
    pub utilisation_min: f64,
    pub utilisation_max: f64,
    /// Standard deviation of the utilisations.
    pub deviation: f64,
}

/// A rebalancing: the plan, and who moves.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebalance {
    pub plan: Plan,
    /// (agent, from, to): `from` is `None` for an agent that had no node.
    pub moves: Vec<(usize, Option<usize>, usize)>,
    /// Of the moves, those the rules forced (a down node, a capacity or
    /// a rule now broken), and those spent on balance.
    pub forced_moves: usize,
    pub balance_before: Balance,
}

/// Why no plan.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("agent {agent:?} fits no node: {}", describe(blocked))]
    Unplaceable {
        agent: String,
        /// Each filter that refused it, and on how many nodes.
        blocked: Vec<(Blocked, usize)>,
    },
    #[error("agent {agent:?} is pinned to node {node:?}, which refuses it: {blocked}")]
    PinnedRefused {
        agent: String,
        node: String,
        blocked: Blocked,
    },
}

fn describe(blocked: &[(Blocked, usize)]) -> String {
    let parts: Vec<String> = (blocked.iter())
        .map(|(why, nodes)| {
            format!(
                "{why} on {nodes} node{}",
                if *nodes == 1 { "" } else { "s" }
            )
        })
        .collect();
    parts.join("; ")
}

/// How much the latency search may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    /// Passes over the agents, at most.
    pub search_passes_max: u32,
}

impl Default for PlanLimits {
    fn default() -> PlanLimits {
        PlanLimits {
            search_passes_max: 8,
        }
    }
}

/// Places every agent of `problem`.
pub fn plan(problem: &Problem, limits: PlanLimits) -> Result<Plan, PlanError> {
    let mut state = State::new(problem);
    place_pinned(&mut state)?;
    let unplaced: Vec<usize> = (0..problem.agents.len())
        .filter(|&a| state.node_of[a].is_none())
        .collect();
    for agent in largest_first(problem, unplaced) {
        let node = choose(&state, agent)?;
        state.place(agent, node);
    }
    let search_moves = search_latency(&mut state, limits);
    Ok(summarise(&state, search_moves))
}

fn place_pinned(state: &mut State) -> Result<(), PlanError> {
    let problem = state.problem;
    for (agent, spec) in problem.agents.iter().enumerate() {
        let Some(node) = spec.pinned else { continue };
        if let Some(refusal) = state.filter(agent, node) {
            return Err(PlanError::PinnedRefused {
                agent: spec.name.clone(),
                node: problem.nodes[node].name.clone(),
                blocked: state.explain(agent, refusal),
            });
        }
        state.place(agent, node);
    }
    Ok(())
}

/// The agents by their size, largest first: the sum over dimensions of
/// the demand over the up nodes' total capacity (ties by index).
fn largest_first(problem: &Problem, mut agents: Vec<usize>) -> Vec<usize> {
    let totals: Vec<f64> = (0..problem.dimensions.len())
        .map(|d| {
            problem
                .nodes
                .iter()
                .filter(|n| n.up)
                .map(|n| n.capacity[d])
                .sum()
        })
        .collect();
    let size = |agent: usize| -> f64 {
        let demand = &problem.agents[agent].demand;
        (demand.iter().zip(&totals))
            .map(|(need, total)| if *total > 0.0 { need / total } else { 0.0 })
            .sum()
    };
    agents.sort_by(|&a, &b| size(b).total_cmp(&size(a)).then(a.cmp(&b)));
    agents
}

/// The best node for `agent` (not placed), or what blocked it.
fn choose(state: &State, agent: usize) -> Result<usize, PlanError> {
    let problem = state.problem;
    let mut refused: Vec<(Refusal, usize)> = Vec::new();
    let mut candidates: Vec<(usize, f64, f64)> = Vec::new();
    for node in 0..problem.nodes.len() {
        match state.filter(agent, node) {
            Some(why) => match refused.iter_mut().find(|(seen, _)| *seen == why) {
                Some((_, count)) => *count += 1,
                None => refused.push((why, 1)),
            },
            None => {
                let latency = state.latency_cost(agent, node);
                candidates.push((node, state.score(agent, node, &problem.weights), latency));
            }
        }
    }
    if candidates.is_empty() {
        // Named only now: the filters run on every node, the names once.
        let mut blocked: Vec<(Blocked, usize)> = Vec::new();
        for (why, count) in refused {
            let why = state.explain(agent, why);
            match blocked.iter_mut().find(|(seen, _)| *seen == why) {
                Some((_, total)) => *total += count,
                None => blocked.push((why, count)),
            }
        }
        blocked.sort();
        return Err(PlanError::Unplaceable {
            agent: problem.agents[agent].name.clone(),
            blocked,
        });
    }
    let (low, high) = (candidates.iter()).fold((f64::MAX, f64::MIN), |(low, high), c| {
        (low.min(c.2), high.max(c.2))
    });
    let latency_score = |cost: f64| {
        if high > low {
            100.0 * (high - cost) / (high - low)
        } else {
            100.0
        }
    };
    let total = |c: &(usize, f64, f64)| c.1 + problem.weights.latency * latency_score(c.2);
    let best = (candidates.iter()).fold(None::<(usize, f64)>, |best, c| match best {
        Some((_, score)) if score >= total(c) => best,
        _ => Some((c.0, total(c))),
    });
    Ok(best.expect("candidates are not empty").0)
}

/// Moves agents, one at a time, to the node (passing every filter) that
/// cuts their traffic-weighted latency most; each move lowers the total,
/// so it ends. Pinned agents stay.
fn search_latency(state: &mut State, limits: PlanLimits) -> usize {
    let problem = state.problem;
    if problem.weights.latency <= 0.0 || problem.traffic.is_empty() {
        return 0;
    }
    let regions = Regions::of(problem);
    let talkers: Vec<usize> = (0..problem.agents.len())
        .filter(|&a| problem.agents[a].pinned.is_none())
        .filter(|&a| !state.peers_of(a).is_empty())
        .collect();
    let mut moves = 0;
    for _ in 0..limits.search_passes_max {
        let mut moved = false;
        for &agent in &talkers {
            let from = state.node_of[agent].expect("every agent is placed");
            state.remove(agent);
            let to = closer_node(state, &regions, agent, from).unwrap_or(from);
            state.place(agent, to);
            if to != from {
                moves += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    moves
}

/// The nodes of each region (the last list: nodes without a region,
/// which are 0 ms from everything).
struct Regions {
    of_node: Vec<usize>,
    nodes: Vec<Vec<usize>>,
}

impl Regions {
    fn of(problem: &Problem) -> Regions {
        let known = problem.latency.regions.len();
        let of_node: Vec<usize> = (problem.nodes.iter())
            .map(|node| {
                let region = node.labels.get(super::model::REGION_LABEL);
                region
                    .and_then(|r| problem.latency.regions.iter().position(|k| k == r))
                    .unwrap_or(known)
            })
            .collect();
        let mut nodes = vec![Vec::new(); known + 1];
        for (node, &region) in of_node.iter().enumerate() {
            nodes[region].push(node);
        }
        Regions { of_node, nodes }
    }
}

/// A node where `agent` (taken off `from`) talks to its placed peers at
/// less latency than on `from`: in the cheapest region with a node that
/// takes it, that region's best-scoring such node (within a region
/// every node costs the same, so the other scores choose).
fn closer_node(state: &State, regions: &Regions, agent: usize, from: usize) -> Option<usize> {
    let problem = state.problem;
    let here = state.latency_cost(agent, from);
    let peers: Vec<(usize, f64)> = (state.peers_of(agent).iter())
        .filter(|&&(peer, _)| peer != agent)
        .filter_map(|&(peer, weight)| {
            state.node_of[peer].map(|node| (regions.of_node[node], weight))
        })
        .collect();
    let known = problem.latency.regions.len();
    let region_cost = |region: usize| -> f64 {
        (peers.iter())
            .map(|&(other, weight)| match region == known || other == known {
                true => 0.0,
                false => weight * problem.latency.milliseconds[region * known + other],
            })
            .sum()
    };
    let mut order: Vec<(usize, f64)> = (0..=known)
        .map(|region| (region, region_cost(region)))
        .collect();
    order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    for (region, cost) in order {
        if cost >= here - 1e-9 {
            return None;
        }
        let takers = regions.nodes[region]
            .iter()
            .copied()
            .filter(|&node| state.filter(agent, node).is_none());
        let scored = takers.map(|node| (node, state.score(agent, node, &problem.weights)));
        let best = scored.fold(None::<(usize, f64)>, |best, (node, score)| match best {
            Some((_, top)) if top >= score => best,
            _ => Some((node, score)),
        });
        if let Some((node, _)) = best {
            return Some(node);
        }
    }
    None
}

/// Rebalances `current` (each agent's node now, if any) after nodes or
/// loads changed: agents that may stay, stay (the smallest first, so
/// that the most stay); the rest are placed; then up to `migrations_max`
/// more moves, each from the most used node, while they improve balance.
pub fn rebalance(
    problem: &Problem,
    current: &[Option<usize>],
    migrations_max: usize,
) -> Result<Rebalance, PlanError> {
    assert_eq!(current.len(), problem.agents.len(), "one node per agent");
    let balance_before = balance_of(problem, current);
    let mut state = State::new(problem);
    place_pinned(&mut state)?;
    let staying: Vec<usize> = (0..problem.agents.len())
        .filter(|&a| state.node_of[a].is_none())
        .collect();
    let mut displaced = Vec::new();
    for agent in largest_first(problem, staying).into_iter().rev() {
        match current[agent].filter(|&node| node < problem.nodes.len()) {
            Some(node) if state.filter(agent, node).is_none() => state.place(agent, node),
            _ => displaced.push(agent),
        }
    }
    let mut moves = Vec::new();
    for agent in largest_first(problem, displaced) {
        let node = choose(&state, agent)?;
        state.place(agent, node);
        moves.push((agent, current[agent], node));
    }
    let mut forced_moves = moves.len();
    // An agent moved twice migrates once, to where it ends; the attempts
    // are bounded too, since moves may undo each other.
    let mut attempts = 0;
    while moves.len() - forced_moves < migrations_max && attempts < migrations_max.saturating_mul(4)
    {
        attempts += 1;
        let Some((agent, from, to)) = balancing_move(&mut state) else {
            break;
        };
        match moves.iter().position(|(moved, _, _)| *moved == agent) {
            Some(at) if moves[at].1 == Some(to) => {
                moves.remove(at);
                forced_moves -= usize::from(at < forced_moves);
            }
            Some(at) => moves[at].2 = to,
            None => moves.push((agent, Some(from), to)),
        }
    }
    Ok(Rebalance {
        plan: summarise(&state, 0),
        moves,
        forced_moves,
        balance_before,
    })
}

/// Moves one agent off the most used node to where the deviation of the
/// utilisations falls most, if any move lowers it. Only two nodes'
/// utilisations change, so each candidate costs O(1) after one pass.
fn balancing_move(state: &mut State) -> Option<(usize, usize, usize)> {
    let problem = state.problem;
    let shares = utilisations(problem, &state.node_of);
    let up: Vec<usize> = (0..problem.nodes.len())
        .filter(|&n| problem.nodes[n].up)
        .collect();
    let count = up.len() as f64;
    let sum: f64 = up.iter().map(|&n| shares[n]).sum();
    let squares: f64 = up.iter().map(|&n| shares[n].powi(2)).sum();
    let deviation =
        |sum: f64, squares: f64| (squares / count - (sum / count).powi(2)).max(0.0).sqrt();
    let before = deviation(sum, squares);
    let busiest = *up
        .iter()
        .max_by(|&&a, &&b| shares[a].total_cmp(&shares[b]).then(b.cmp(&a)))?;
    let mut best: Option<(usize, usize, f64)> = None;
    let on_busiest: Vec<usize> = (0..problem.agents.len())
        .filter(|&a| state.node_of[a] == Some(busiest))
        .collect();
    for agent in on_busiest
        .into_iter()
        .filter(|&a| problem.agents[a].pinned.is_none())
    {
        state.remove(agent);
        let from_after = shares[busiest] - share_of(problem, agent, busiest);
        for &node in up.iter().filter(|&&n| n != busiest) {
            if state.filter(agent, node).is_some() {
                continue;
            }
            let to_after = shares[node] + share_of(problem, agent, node);
            let moved_sum = sum - shares[busiest] - shares[node] + from_after + to_after;
            let moved_squares = squares - shares[busiest].powi(2) - shares[node].powi(2)
                + from_after.powi(2)
                + to_after.powi(2);
            let after = deviation(moved_sum, moved_squares);
            if after < before - 1e-9 && best.is_none_or(|b| after < b.2) {
                best = Some((agent, node, after));
            }
        }
        state.place(agent, busiest);
    }
    let (agent, to, _) = best?;
    state.remove(agent);
    state.place(agent, to);
    Some((agent, busiest, to))
}

/// What `agent` adds to `node`'s utilisation.
fn share_of(problem: &Problem, agent: usize, node: usize) -> f64 {
    let capacity = &problem.nodes[node].capacity;
    let dimensions: Vec<usize> = (0..capacity.len()).filter(|&d| capacity[d] > 0.0).collect();
    let total: f64 = dimensions
        .iter()
        .map(|&d| problem.agents[agent].demand[d] / capacity[d])
        .sum();
    if dimensions.is_empty() {
        0.0
    } else {
        total / dimensions.len() as f64
    }
}

/// Each node's utilisation under `node_of` (0 for down nodes).
fn utilisations(problem: &Problem, node_of: &[Option<usize>]) -> Vec<f64> {
    let dimensions = problem.dimensions.len();
    let mut used = vec![vec![0.0; dimensions]; problem.nodes.len()];
    for (agent, node) in node_of.iter().enumerate() {
        if let Some(node) = node.filter(|&n| n < problem.nodes.len()) {
            for (d, demand) in problem.agents[agent].demand.iter().enumerate() {
                used[node][d] += demand;
            }
        }
    }
    (problem.nodes.iter().zip(&used))
        .map(|(node, used)| {
            let shares: Vec<f64> = (0..dimensions)
                .filter(|&d| node.capacity[d] > 0.0)
                .map(|d| used[d] / node.capacity[d])
                .collect();
            if !node.up || shares.is_empty() {
                0.0
            } else {
                shares.iter().sum::<f64>() / shares.len() as f64
            }
        })
        .collect()
}

/// The balance of the up nodes under `node_of`.
pub fn balance_of(problem: &Problem, node_of: &[Option<usize>]) -> Balance {
    let all = utilisations(problem, node_of);
    let up: Vec<f64> = (all.iter().zip(&problem.nodes))
        .filter(|(_, n)| n.up)
        .map(|(u, _)| *u)
        .collect();
    if up.is_empty() {
        return Balance::default();
    }
    let mean = up.iter().sum::<f64>() / up.len() as f64;
    let variance = up.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / up.len() as f64;
    Balance {
        utilisation_min: up.iter().copied().fold(f64::MAX, f64::min),
        utilisation_max: up.iter().copied().fold(f64::MIN, f64::max),
        deviation: variance.sqrt(),
    }
}

/// Σ over traffic of weight × latency under `node_of`.
pub fn latency_cost_of(problem: &Problem, node_of: &[usize]) -> f64 {
    (problem.traffic.iter())
        .map(|t| {
            t.weight
                * problem.latency.between(
                    &problem.nodes[node_of[t.first]],
                    &problem.nodes[node_of[t.second]],
                )
        })
        .sum()
}

/// The fewest up nodes that could hold the demand, by the largest-first
/// cover of each dimension.
pub fn nodes_bound(problem: &Problem) -> usize {
    (0..problem.dimensions.len())
        .map(|d| {
            let demand: f64 = problem.agents.iter().map(|a| a.demand[d]).sum();
            let mut capacities: Vec<f64> = problem
                .nodes
                .iter()
                .filter(|n| n.up)
                .map(|n| n.capacity[d])
                .collect();
            capacities.sort_by(|a, b| b.total_cmp(a));
            let mut covered = 0.0;
            let taken = capacities.iter().take_while(|&&c| {
                let short = covered < demand - 1e-9;
                covered += c;
                short
            });
            taken.count()
        })
        .max()
        .unwrap_or(0)
        .max(usize::from(!problem.agents.is_empty()))
}

fn summarise(state: &State, search_moves: usize) -> Plan {
    let problem = state.problem;
    let node_of: Vec<usize> = state
        .node_of
        .iter()
        .map(|n| n.expect("every agent is placed"))
        .collect();
    let mut used = vec![false; problem.nodes.len()];
    node_of.iter().for_each(|&n| used[n] = true);
    Plan {
        nodes_used: used.iter().filter(|&&u| u).count(),
        nodes_bound: nodes_bound(problem),
        latency_cost: latency_cost_of(problem, &node_of),
        balance: balance_of(problem, &state.node_of),
        search_moves,
        node_of,
    }
}
