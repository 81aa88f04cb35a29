//! `agentmesh place`: the plan a config makes, without starting anything:
//! each agent's node, each node's use of every dimension, the nodes used
//! against the bound, the traffic-weighted latency, the balance and the
//! validator's verdict; with `--down`, what rebalancing does when those
//! nodes die.

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::placement::problem_of;
use crate::protocols::placement::model::Problem;
use crate::protocols::placement::planner::{plan, rebalance, Plan, PlanLimits};
use crate::protocols::placement::validate::violations;

#[derive(Debug, clap::Args)]
pub struct PlaceOptions {
    /// The cluster config.
    #[arg(long)]
    pub config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Nodes to take down (comma-separated ids): shows the rebalancing.
    #[arg(long, value_delimiter = ',')]
    pub down: Vec<String>,
    /// Moves rebalancing may spend on balance beyond the forced ones.
    #[arg(long, default_value_t = 0)]
    pub migrations: usize,
}

#[derive(Serialize)]
struct PlaceReport {
    dimensions: Vec<String>,
    agents: Vec<AgentRow>,
    nodes: Vec<NodeRow>,
    nodes_used: usize,
    nodes_bound: usize,
    latency_cost: f64,
    deviation: f64,
    violations: Vec<String>,
    /// With --down: (agent, from, to) for each move.
    moves: Vec<(String, Option<String>, String)>,
}

#[derive(Serialize)]
struct AgentRow {
    name: String,
    node: String,
    planned: bool,
}

#[derive(Serialize)]
struct NodeRow {
    name: String,
    up: bool,
    agents: usize,
    /// (used, capacity) per dimension.
    use_of: Vec<(f64, f64)>,
}

pub fn place(options: &PlaceOptions) -> anyhow::Result<i32> {
    let config = crate::config::load(&options.config)?;
    let mut problem = problem_of(&config.nodes, &config.agents, &config.placement);
    let planned = plan(&problem, PlanLimits::default())?;
    let mut moves = Vec::new();
    let chosen = if options.down.is_empty() {
        planned
    } else {
        for id in &options.down {
            let node =
                (problem.nodes.iter_mut().find(|node| &node.name == id)).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--down {id}: no node has that id in {}",
                        options.config.display()
                    )
                })?;
            node.up = false;
        }
        let current: Vec<Option<usize>> = planned.node_of.iter().map(|&n| Some(n)).collect();
        let moved = rebalance(&problem, &current, options.migrations).map_err(|error| {
            anyhow::anyhow!("with {} down, no plan: {error}", options.down.join(", "))
        })?;
        let name = |node: usize| problem.nodes[node].name.clone();
        moves = (moved.moves.iter())
            .map(|&(agent, from, to)| {
                (problem.agents[agent].name.clone(), from.map(name), name(to))
            })
            .collect();
        moved.plan
    };
    let report = report(&problem, &chosen, &config.agents, moves);
    if options.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serialises")
        );
    } else {
        print!("{}", to_text(&report));
    }
    Ok(if report.violations.is_empty() { 0 } else { 1 })
}

fn report(
    problem: &Problem,
    chosen: &Plan,
    agents: &[crate::config::AgentConfig],
    moves: Vec<(String, Option<String>, String)>,
) -> PlaceReport {
    let placement: Vec<Option<usize>> = chosen.node_of.iter().map(|&n| Some(n)).collect();
    let nodes = (problem.nodes.iter().enumerate())
        .map(|(index, node)| {
            let here: Vec<usize> = (0..problem.agents.len())
                .filter(|&a| chosen.node_of[a] == index)
                .collect();
            let use_of = (0..problem.dimensions.len())
                .map(|d| {
                    (
                        here.iter().map(|&a| problem.agents[a].demand[d]).sum(),
                        node.capacity[d],
                    )
                })
                .collect();
            NodeRow {
                name: node.name.clone(),
                up: node.up,
                agents: here.len(),
                use_of,
            }
        })
        .collect();
    PlaceReport {
        dimensions: problem.dimensions.clone(),
        agents: (agents.iter().zip(&chosen.node_of))
            .map(|(agent, &node)| AgentRow {
                name: agent.name.clone(),
                node: problem.nodes[node].name.clone(),
                planned: agent.placement.planned,
            })
            .collect(),
        nodes,
        nodes_used: chosen.nodes_used,
        nodes_bound: chosen.nodes_bound,
        latency_cost: chosen.latency_cost,
        deviation: chosen.balance.deviation,
        violations: violations(problem, &placement)
            .iter()
            .map(ToString::to_string)
            .collect(),
        moves,
    }
}

fn to_text(report: &PlaceReport) -> String {
    let mut text = String::from("agent\tnode\thow\n");
    for agent in &report.agents {
        let how = if agent.planned { "planned" } else { "fixed" };
        let _ = writeln!(text, "{}\t{}\t{how}", agent.name, agent.node);
    }
    let _ = writeln!(text, "\nnode\tagents\t{}", report.dimensions.join("\t"));
    for node in &report.nodes {
        let uses: Vec<String> = node
            .use_of
            .iter()
            .map(|(used, capacity)| format!("{used}/{capacity}"))
            .collect();
        let state = if node.up { "" } else { " (down)" };
        let _ = writeln!(
            text,
            "{}{state}\t{}\t{}",
            node.name,
            node.agents,
            uses.join("\t")
        );
    }
    let _ = writeln!(
        text,
        "\nnodes used: {} (no plan can use fewer than {})\ntraffic-weighted latency: {:.1}\nutilisation deviation: {:.3}",
        report.nodes_used, report.nodes_bound, report.latency_cost, report.deviation
    );
    for (agent, from, to) in &report.moves {
        let _ = writeln!(
            text,
            "move {agent}: {} -> {to}",
            from.as_deref().unwrap_or("(none)")
        );
    }
    match report.violations.as_slice() {
        [] => text += "validator: every capacity and required rule holds\n",
        found => found.iter().for_each(|v| {
            let _ = writeln!(text, "violation: {v}");
        }),
    }
    text
}
