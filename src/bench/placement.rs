//! `agentmesh bench placement`: how good and how fast the planner is.
//!
//! - Quality: one-dimensional bin packing on the standard instances
//!   (OR-Library's files, read from `--instances FILE`, never shipped) or,
//!   without them, on instances generated like Falkenauer's (uniform
//!   sizes 20–100 in bins of 150; triplets that fill bins of 1000
//!   exactly). Per instance: first fit decreasing, then the local search
//!   (and, for small ones, the exact search), against the best known and
//!   the L2 bound.
//! - Speed: batch plans at the competitor's sizes (10/5, 50/20, 100/50
//!   agents/nodes) and at 10,000/1,000, with anti-affinity, spread and
//!   traffic, and rebalancing 100 and 1,000 nodes after 5 % die; each
//!   plan passes the validator.
//! - Geography: traffic-weighted latency of the plan against random and
//!   round-robin placement, over 3, 5 and 10 regions.
//!
//! Writes report.json, report.md and quality.svg.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::failover::{summarise, FailoverRound, FailoverSummary};
use super::report::{write_report_texts, ReportHeader};
use super::resources;
use crate::protocols::placement::bin_packing::{first_fit_decreasing, lower_bound_l2};
use crate::protocols::placement::exact::fewest_bins;
use crate::protocols::placement::improve::{improve, SearchLimits};
use crate::protocols::placement::instances::{self, class_of, Instance};
use crate::protocols::placement::model::*;
use crate::protocols::placement::planner::{latency_cost_of, plan, rebalance, PlanLimits};
use crate::protocols::placement::validate::violations;

/// The competitor's published placement times (µs per batch) and its
/// rebalancing of 100 hosts (ms).
const COMPETITOR_US: [(usize, usize, f64); 3] = [(10, 5, 1.51), (50, 20, 9.47), (100, 50, 19.98)];
const COMPETITOR_REBALANCE_100_MS: f64 = 10.29;
/// Instances at most this many items also get the exact search.
const EXACT_ITEMS_MAX: usize = 150;
const EXACT_NODES_MAX: u64 = 2_000_000;

#[derive(clap::Args, Clone, Debug)]
pub struct PlacementOptions {
    /// OR-Library bin-packing files (binpack1.txt …); give it once per
    /// file. Without it, instances like theirs are generated.
    #[arg(long)]
    pub instances: Vec<PathBuf>,
    /// Where report.json, report.md and the plots go.
    #[arg(long, default_value = "bench-results/placement")]
    pub out: PathBuf,
    /// Seeds the local search and the generated problems.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The local search's rounds per instance.
    #[arg(long, default_value_t = SearchLimits::default().rounds_max)]
    pub rounds: u32,
    /// Repetitions of each timed plan (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Node crashes in the failover measurement, half of them the leader's
    /// node (0 skips it).
    #[arg(long, default_value_t = 6)]
    pub failover_rounds: usize,
}

#[derive(Serialize)]
struct InstanceRow {
    name: String,
    class: String,
    items: usize,
    bins: usize,
    /// 0 where unknown (generated uniform instances).
    best_known: usize,
    lower_bound: usize,
    ffd_bins: usize,
    /// Whether the exact search proved `bins` the fewest.
    proven: bool,
    ms: f64,
}

#[derive(Serialize, Default)]
struct ClassRow {
    instances: usize,
    at_best_known: usize,
    ffd_at_best_known: usize,
    /// Bins beyond the best known, summed.
    extra_bins: usize,
    within_one_of_best_known: usize,
    at_lower_bound: usize,
}

#[derive(Serialize)]
struct SpeedRow {
    agents: usize,
    nodes: usize,
    us_per_placement: f64,
    batch_ms: f64,
    cpu_us_per_placement: f64,
    nodes_used: usize,
    nodes_bound: usize,
    violations: usize,
    /// The competitor's time for the same batch, where published.
    competitor_batch_us: Option<f64>,
}

#[derive(Serialize)]
struct RebalanceRow {
    nodes: usize,
    agents: usize,
    nodes_down: usize,
    ms: f64,
    moves: usize,
    forced_moves: usize,
    deviation_before: f64,
    deviation_after: f64,
    violations: usize,
    competitor_ms: Option<f64>,
}

#[derive(Serialize)]
struct GeographyRow {
    regions: usize,
    nodes: usize,
    agents: usize,
    planned_cost: f64,
    random_cost: f64,
    round_robin_cost: f64,
    violations: usize,
}

#[derive(Serialize)]
struct PlacementReport {
    #[serde(flatten)]
    header: ReportHeader,
    instances: Vec<InstanceRow>,
    classes: BTreeMap<String, ClassRow>,
    speed: Vec<SpeedRow>,
    rebalance: Vec<RebalanceRow>,
    geography: Vec<GeographyRow>,
    failover: FailoverReport,
    cpu_percent_of_machine: f64,
}

#[derive(Serialize)]
struct FailoverReport {
    nodes: usize,
    rounds: Vec<FailoverRound>,
    plain: FailoverSummary,
    leader: FailoverSummary,
}

pub async fn placement(options: PlacementOptions) -> anyhow::Result<i32> {
    anyhow::ensure!(options.repeats > 0, "--repeats must be at least 1");
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot make {}", options.out.display()))?;
    let started = (Instant::now(), resources::cpu_time());
    let instances = load_instances(&options)?;
    let progress = indicatif::ProgressBar::new(instances.len() as u64);
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    progress.set_message("bin-packing instances");
    let mut rows = Vec::with_capacity(instances.len());
    for instance in &instances {
        rows.push(pack(instance, &options));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let classes = classes(&rows);
    let speed = [(10, 5), (50, 20), (100, 50), (10_000, 1_000)]
        .map(|(agents, nodes)| speed(agents, nodes, &options))
        .into();
    let rebalance = [100, 1_000]
        .map(|nodes| rebalancing(nodes, &options))
        .into();
    let geography = [3, 5, 10]
        .map(|regions| geography(regions, options.seed))
        .into();
    // Measured before the machine share is taken: a cluster's CPU counts.
    let rounds = super::failover::failover(options.failover_rounds).await?;
    let failover = FailoverReport {
        nodes: super::failover::FAILOVER_NODES,
        plain: summarise(&rounds, "plain"),
        leader: summarise(&rounds, "leader"),
        rounds,
    };
    let report = PlacementReport {
        header: ReportHeader::new("placement", options_json(&options)),
        cpu_percent_of_machine: machine_share(started),
        instances: rows,
        classes,
        speed,
        rebalance,
        geography,
        failover,
    };
    let markdown = to_markdown(&report);
    write_report_texts(&options.out, &report, &markdown)?;
    quality_plot(&options.out.join("quality.svg"), &report.classes)
        .map_err(|error| anyhow::anyhow!("cannot draw quality.svg: {error}"))?;
    print!("{markdown}");
    println!("report: {}", options.out.join("report.json").display());
    Ok(0)
}

fn options_json(options: &PlacementOptions) -> serde_json::Value {
    serde_json::json!({
        "instances": options.instances, "seed": options.seed,
        "rounds": options.rounds, "repeats": options.repeats,
        "failover_rounds": options.failover_rounds,
    })
}

fn machine_share(started: (Instant, Option<Duration>)) -> f64 {
    let wall = started.0.elapsed().as_secs_f64();
    let cpu = match (started.1, resources::cpu_time()) {
        (Some(before), Some(after)) => (after - before).as_secs_f64(),
        _ => 0.0,
    };
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    100.0 * cpu / (wall * cores as f64).max(1e-9)
}

fn load_instances(options: &PlacementOptions) -> anyhow::Result<Vec<Instance>> {
    if options.instances.is_empty() {
        let mut generated = Vec::new();
        for number in 0..10 {
            let seed = options.seed.wrapping_mul(1_000).wrapping_add(number as u64);
            generated.push(instances::generate_uniform(seed, 120, number));
            generated.push(instances::generate_uniform(seed, 250, number));
            generated.push(instances::generate_triplets(seed, 20, number));
            generated.push(instances::generate_triplets(seed, 83, number));
        }
        return Ok(generated);
    }
    let mut all = Vec::new();
    for path in &options.instances {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let read = instances::parse(&text).with_context(|| format!("{}", path.display()))?;
        all.extend(read);
    }
    Ok(all)
}

fn pack(instance: &Instance, options: &PlacementOptions) -> InstanceRow {
    let (sizes, capacity) = (&instance.sizes, instance.capacity);
    let started = Instant::now();
    let first = first_fit_decreasing(sizes, capacity);
    let lower_bound = lower_bound_l2(sizes, capacity);
    let (ffd_bins, bins, proven) = match first {
        Ok(first) => {
            let limits = SearchLimits {
                rounds_max: options.rounds,
                ..SearchLimits::default()
            };
            let found = improve(sizes, capacity, &first, lower_bound, limits, options.seed).packing;
            let mut proven = found.bins == lower_bound;
            let mut bins = found.bins;
            if !proven && sizes.len() <= EXACT_ITEMS_MAX {
                let exact = fewest_bins(sizes, capacity, &found, lower_bound, EXACT_NODES_MAX);
                (bins, proven) = (exact.packing.bins, exact.proven);
            }
            (first.bins, bins, proven)
        }
        // An item larger than a bin: nothing packs (the row says 0).
        Err(_) => (0, 0, false),
    };
    InstanceRow {
        name: instance.name.clone(),
        class: class_of(&instance.name).to_string(),
        items: sizes.len(),
        bins,
        best_known: instance.best_known,
        lower_bound,
        ffd_bins,
        proven,
        ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

fn classes(rows: &[InstanceRow]) -> BTreeMap<String, ClassRow> {
    let mut classes: BTreeMap<String, ClassRow> = BTreeMap::new();
    for row in rows {
        let class = classes.entry(row.class.clone()).or_default();
        // Unknown best: the bound stands in (a bin count at it is best).
        let best = if row.best_known > 0 {
            row.best_known
        } else {
            row.lower_bound
        };
        class.instances += 1;
        class.at_best_known += usize::from(row.bins <= best);
        class.ffd_at_best_known += usize::from(row.ffd_bins <= best);
        class.extra_bins += row.bins.saturating_sub(best);
        class.within_one_of_best_known += usize::from(row.bins <= best + 1);
        class.at_lower_bound += usize::from(row.bins == row.lower_bound);
    }
    classes
}

/// A cluster of `nodes` nodes in 3 zones and `nodes / 5 + 1` regions,
/// with `agents` agents in groups of 5 (replicas refuse to share a node,
/// and spread over zones) whose members talk.
fn cluster_problem(agents: usize, nodes: usize, seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let regions = (nodes / 5).clamp(1, 10);
    let mut problem = Problem {
        dimensions: vec!["cpu".into(), "memory_mb".into()],
        ..Problem::default()
    };
    problem.nodes = (0..nodes)
        .map(|n| NodeSpec {
            name: format!("n{n}"),
            capacity: vec![
                rng.gen_range(8..=16) as f64,
                rng.gen_range(16..=32) as f64 * 1024.0,
            ],
            labels: [
                ("zone", format!("z{}", n % 3)),
                (REGION_LABEL, format!("r{}", n % regions)),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into(),
            up: true,
        })
        .collect();
    let spread = SpreadRule {
        topology_key: "zone".into(),
        max_skew: 1,
        when_unsatisfiable: Unsatisfiable::ScheduleAnyway,
    };
    problem.agents = (0..agents)
        .map(|a| {
            let group = format!("g{}", a / 5);
            let apart = AgentRule {
                anti: true,
                selector: AgentSelector::Group(group.clone()),
                topology_key: NODE_TOPOLOGY.into(),
                strength: if nodes >= 5 {
                    Strength::Required
                } else {
                    Strength::Preferred(50)
                },
            };
            AgentSpec {
                name: format!("a{a}"),
                group: Some(group),
                demand: vec![
                    rng.gen_range(1..=4) as f64 * 0.25,
                    rng.gen_range(1..=8) as f64 * 256.0,
                ],
                agent_rules: vec![apart],
                spread: vec![spread.clone()],
                ..AgentSpec::default()
            }
        })
        .collect();
    problem.latency = region_latencies(regions, &mut rng);
    problem.traffic = (0..agents)
        .filter(|a| a % 5 != 4)
        .map(|a| Traffic {
            first: a,
            second: a + 1,
            weight: rng.gen_range(1..=10) as f64,
        })
        .filter(|t| t.second < agents)
        .collect();
    problem
}

/// Regions at random points of a 100 × 100 ms plane: latency is the
/// distance, and 0.5 ms inside a region.
fn region_latencies(regions: usize, rng: &mut ChaCha8Rng) -> LatencyMatrix {
    let points: Vec<(f64, f64)> = (0..regions)
        .map(|_| (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0)))
        .collect();
    let mut milliseconds = Vec::with_capacity(regions * regions);
    for a in &points {
        for b in &points {
            let distance = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
            milliseconds.push(if distance == 0.0 { 0.5 } else { distance + 0.5 });
        }
    }
    LatencyMatrix {
        regions: (0..regions).map(|r| format!("r{r}")).collect(),
        milliseconds,
    }
}

/// Runs `work` at least `repeats` times and until `SPAN_MIN` has passed
/// (so that the CPU clock, which ticks in milliseconds, sees it), at
/// most `REPEATS_MAX` times; gives its last result, the median time and
/// the CPU time per run.
fn timed<T>(repeats: usize, mut work: impl FnMut() -> T) -> (T, Duration, Duration) {
    const SPAN_MIN: Duration = Duration::from_millis(200);
    const REPEATS_MAX: usize = 100_000;
    let mut times = Vec::new();
    let started = Instant::now();
    let cpu_before = resources::cpu_time();
    let mut last = None;
    while times.len() < repeats.max(1)
        || (started.elapsed() < SPAN_MIN && times.len() < REPEATS_MAX)
    {
        let one = Instant::now();
        last = Some(work());
        times.push(one.elapsed());
    }
    let cpu = match (cpu_before, resources::cpu_time()) {
        (Some(before), Some(after)) => (after - before) / times.len() as u32,
        _ => Duration::ZERO,
    };
    times.sort();
    (
        last.expect("at least one repeat"),
        times[times.len() / 2],
        cpu,
    )
}

fn speed(agents: usize, nodes: usize, options: &PlacementOptions) -> SpeedRow {
    let problem = cluster_problem(agents, nodes, options.seed);
    let (planned, median, cpu) = timed(options.repeats, || plan(&problem, PlanLimits::default()));
    let planned = planned.expect("the generated problems have room for every agent");
    let placement: Vec<Option<usize>> = planned.node_of.iter().map(|&n| Some(n)).collect();
    SpeedRow {
        agents,
        nodes,
        us_per_placement: median.as_secs_f64() * 1e6 / agents as f64,
        batch_ms: median.as_secs_f64() * 1e3,
        cpu_us_per_placement: cpu.as_secs_f64() * 1e6 / agents as f64,
        nodes_used: planned.nodes_used,
        nodes_bound: planned.nodes_bound,
        violations: violations(&problem, &placement).len(),
        competitor_batch_us: COMPETITOR_US
            .iter()
            .find(|c| c.0 == agents && c.1 == nodes)
            .map(|c| c.2),
    }
}

fn rebalancing(nodes: usize, options: &PlacementOptions) -> RebalanceRow {
    let agents = nodes * 5;
    let problem = cluster_problem(agents, nodes, options.seed);
    let planned = plan(&problem, PlanLimits::default()).expect("the generated problems have room");
    let current: Vec<Option<usize>> = planned.node_of.iter().map(|&n| Some(n)).collect();
    let mut after = problem.clone();
    let nodes_down = nodes / 20;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    for _ in 0..nodes_down {
        let node = loop {
            let node = rng.gen_range(0..nodes);
            if after.nodes[node].up {
                break node;
            }
        };
        after.nodes[node].up = false;
    }
    let budget = nodes / 10;
    let (moved, median, _) = timed(options.repeats, || rebalance(&after, &current, budget));
    let moved = moved.expect("the survivors have room");
    let placement: Vec<Option<usize>> = moved.plan.node_of.iter().map(|&n| Some(n)).collect();
    RebalanceRow {
        nodes,
        agents,
        nodes_down,
        ms: median.as_secs_f64() * 1e3,
        moves: moved.moves.len(),
        forced_moves: moved.forced_moves,
        deviation_before: moved.balance_before.deviation,
        deviation_after: moved.plan.balance.deviation,
        violations: violations(&after, &placement).len(),
        competitor_ms: (nodes == 100).then_some(COMPETITOR_REBALANCE_100_MS),
    }
}

fn geography(regions: usize, seed: u64) -> GeographyRow {
    let nodes = regions * 10;
    let agents = nodes * 4;
    let mut problem = cluster_problem(agents, nodes, seed ^ regions as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    problem.latency = region_latencies(regions, &mut rng);
    for (n, node) in problem.nodes.iter_mut().enumerate() {
        node.labels
            .insert(REGION_LABEL.into(), format!("r{}", n % regions));
    }
    problem.weights.latency = 10.0;
    let planned = plan(&problem, PlanLimits::default()).expect("the generated problems have room");
    let random: Vec<usize> = (0..agents).map(|_| rng.gen_range(0..nodes)).collect();
    let round_robin: Vec<usize> = (0..agents).map(|a| a % nodes).collect();
    let placement: Vec<Option<usize>> = planned.node_of.iter().map(|&n| Some(n)).collect();
    GeographyRow {
        regions,
        nodes,
        agents,
        planned_cost: planned.latency_cost,
        random_cost: latency_cost_of(&problem, &random),
        round_robin_cost: latency_cost_of(&problem, &round_robin),
        violations: violations(&problem, &placement).len(),
    }
}

fn to_markdown(report: &PlacementReport) -> String {
    use std::fmt::Write;
    let mut text = String::from("# Placement\n\n## Bin packing (bins against the best known)\n\n");
    text += "| class | instances | at best known | first fit decreasing at best known | within 1 | extra bins |\n|---|---|---|---|---|---|\n";
    for (name, class) in &report.classes {
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {} |",
            class.instances,
            class.at_best_known,
            class.ffd_at_best_known,
            class.within_one_of_best_known,
            class.extra_bins
        );
    }
    text += "\n## Speed (median batch; every plan validated)\n\n| agents/nodes | µs per placement | batch ms | CPU µs per placement | nodes used (bound) | violations | competitor batch µs |\n|---|---|---|---|---|---|---|\n";
    for row in &report.speed {
        let competitor = row
            .competitor_batch_us
            .map_or("—".into(), |us| format!("{us}"));
        let _ = writeln!(
            text,
            "| {}/{} | {:.2} | {:.3} | {:.2} | {} ({}) | {} | {competitor} |",
            row.agents,
            row.nodes,
            row.us_per_placement,
            row.batch_ms,
            row.cpu_us_per_placement,
            row.nodes_used,
            row.nodes_bound,
            row.violations
        );
    }
    text += "\n## Rebalancing after 5 % of nodes die\n\n| nodes | agents | down | ms | moves (forced) | deviation before → after | violations | competitor ms |\n|---|---|---|---|---|---|---|---|\n";
    for row in &report.rebalance {
        let competitor = row.competitor_ms.map_or("—".into(), |ms| format!("{ms}"));
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.2} | {} ({}) | {:.3} → {:.3} | {} | {competitor} |",
            row.nodes,
            row.agents,
            row.nodes_down,
            row.ms,
            row.moves,
            row.forced_moves,
            row.deviation_before,
            row.deviation_after,
            row.violations
        );
    }
    text += "\n## Geography (traffic-weighted latency, lower is better)\n\n| regions | nodes | agents | planned | random | round robin |\n|---|---|---|---|---|---|\n";
    for row in &report.geography {
        let _ = writeln!(
            text,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            row.regions,
            row.nodes,
            row.agents,
            row.planned_cost,
            row.random_cost,
            row.round_robin_cost
        );
    }
    failover_markdown(&mut text, &report.failover);
    let _ = writeln!(
        text,
        "\nCPU: {:.0} % of the machine over the run.",
        report.cpu_percent_of_machine
    );
    text
}

fn failover_markdown(text: &mut String, failover: &FailoverReport) {
    use std::fmt::Write;
    let _ = writeln!(
        text,
        "\n## Failover ({} nodes; ms from a node's crash, medians)\n\n| victim | rounds | overlay without it | directory without it | its agents running elsewhere | slowest |\n|---|---|---|---|---|---|",
        failover.nodes
    );
    for (victim, summary) in [
        ("no replica", &failover.plain),
        ("the leader's node", &failover.leader),
    ] {
        let _ = writeln!(
            text,
            "| {victim} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            summary.rounds,
            summary.detected_ms_median,
            summary.replanned_ms_median,
            summary.running_ms_median,
            summary.running_ms_max
        );
    }
}

/// Per class, the share of instances at the best known: ours beside first
/// fit decreasing.
fn quality_plot(path: &Path, classes: &BTreeMap<String, ClassRow>) -> super::plots::PlotResult {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let names: Vec<&String> = classes.keys().collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("Instances at the best known bin count", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..names.len().max(1) as f64, 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_labels(names.len().max(1))
        .x_label_formatter(&|x| {
            names
                .get(*x as usize)
                .map_or(String::new(), |n| n.to_string())
        })
        .y_desc("% of the class")
        .draw()?;
    let share =
        |count: usize, class: &ClassRow| 100.0 * count as f64 / class.instances.max(1) as f64;
    for (index, class) in classes.values().enumerate() {
        let x = index as f64;
        let ours = share(class.at_best_known, class);
        let ffd = share(class.ffd_at_best_known, class);
        chart.draw_series([Rectangle::new(
            [(x + 0.1, 0.0), (x + 0.45, ours)],
            BLUE.filled(),
        )])?;
        chart.draw_series([Rectangle::new(
            [(x + 0.55, 0.0), (x + 0.9, ffd)],
            RED.mix(0.6).filled(),
        )])?;
    }
    root.present()?;
    Ok(())
}
