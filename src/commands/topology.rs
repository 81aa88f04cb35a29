//! `agentmesh topology`: builds an overlay from a config or from flags and
//! prints it with its metrics, and optionally how it repairs after nodes
//! fail.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{self, TopologyConfig, TopologyKind};
use crate::protocols::topology::{export, GraphMetrics, KRule, Overlay, Shape, Topology};

/// Most nodes `--nodes` accepts (the config's node limit).
const NODES_MAX: usize = config::NODES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TopologyFormat {
    Stats,
    Json,
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct TopologyOptions {
    /// Take nodes, shape and seed from this cluster config.
    #[arg(long, conflicts_with_all = ["nodes", "kind"])]
    pub config: Option<PathBuf>,
    /// Number of nodes (named n0, n1, ...).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Neighbours per node (partial-mesh, and inside shards); default ⌈2·ln N⌉ clamped to 3..=32.
    #[arg(long)]
    pub k: Option<usize>,
    /// full-mesh, partial-mesh, ring, hierarchical, hub-spoke or sharded.
    #[arg(long, default_value = "partial-mesh")]
    pub kind: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Children per node (hierarchical).
    #[arg(long, default_value_t = 4)]
    pub fanout: usize,
    /// Hub count (hub-spoke).
    #[arg(long, default_value_t = 1)]
    pub hubs: usize,
    /// Nodes per shard (sharded).
    #[arg(long, default_value_t = 250)]
    pub shard_size: usize,
    /// Fail this many nodes (chosen by the seed) and show the repaired overlay.
    #[arg(long, default_value_t = 0)]
    pub fail: usize,
    #[arg(long, value_enum, default_value_t = TopologyFormat::Stats)]
    pub format: TopologyFormat,
}

/// The node names, shape and seed the options describe.
fn resolve(options: &TopologyOptions) -> anyhow::Result<(Vec<String>, Shape, u64)> {
    if let Some(path) = &options.config {
        anyhow::ensure!(
            options.nodes.is_none() && options.k.is_none(),
            "give either --config or --nodes/--k, not both"
        );
        let config = config::load(path)?;
        let names: Vec<String> = config.nodes.iter().map(|node| node.id.clone()).collect();
        let shape = config.topology.shape(names.len());
        return Ok((names, shape, config.seed));
    }
    let Some(count) = options.nodes else {
        anyhow::bail!("give --config FILE, or --nodes N (with --k, --kind, --seed)");
    };
    anyhow::ensure!(
        (1..=NODES_MAX).contains(&count),
        "--nodes {count}: give 1 to {NODES_MAX} nodes"
    );
    let kind =
        TopologyKind::parse(&options.kind).map_err(|reason| anyhow::anyhow!("--kind: {reason}"))?;
    if let Some(k) = options.k {
        anyhow::ensure!(
            k >= 1 && k < count,
            "--k {k}: k must be from 1 to {} for {count} nodes",
            count.saturating_sub(1)
        );
    }
    anyhow::ensure!(options.fanout >= 1, "--fanout must be at least 1");
    anyhow::ensure!(
        (1..=count).contains(&options.hubs),
        "--hubs {}: give 1 to {count}",
        options.hubs
    );
    anyhow::ensure!(options.shard_size >= 2, "--shard-size must be at least 2");
    let width = count.saturating_sub(1).to_string().len();
    let names = (0..count)
        .map(|index| format!("n{index:0width$}"))
        .collect();
    let topology = TopologyConfig {
        kind,
        k: options.k,
        k_rule: KRule::default(),
        fanout: options.fanout,
        hubs: options.hubs,
        shard_size: options.shard_size,
    };
    let shape = topology.shape(count);
    Ok((names, shape, options.seed))
}

pub fn topology(options: &TopologyOptions) -> anyhow::Result<i32> {
    let (names, shape, seed) = resolve(options)?;
    anyhow::ensure!(
        options.fail < names.len(),
        "--fail {}: leave at least one of {} nodes",
        options.fail,
        names.len()
    );
    let started = Instant::now();
    let topology = Topology::new(shape, &names, seed);
    let build_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut overlay = topology.base().clone();
    let mut repair = None;
    if options.fail > 0 {
        let mut failed = names.clone();
        failed.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed));
        failed.truncate(options.fail);
        let live: BTreeSet<String> = names
            .iter()
            .filter(|name| !failed.contains(name))
            .cloned()
            .collect();
        let started = Instant::now();
        let repaired = topology.overlay_for(&live);
        let repair_ms = started.elapsed().as_secs_f64() * 1e3;
        repair = Some(RepairFigures::new(&overlay, &repaired, &failed, repair_ms));
        overlay = repaired;
    }
    match options.format {
        TopologyFormat::Dot => print!("{}", export::to_dot(&overlay, shape.name())),
        TopologyFormat::Json => println!("{}", export::to_json(&overlay, shape.name())),
        TopologyFormat::Stats => {
            print!("{}", stats_text(&overlay, shape, seed, build_ms));
            if let Some(repair) = repair {
                print!("{}", repair.to_text());
            }
        }
    }
    Ok(0)
}

fn shape_text(shape: Shape) -> String {
    match shape {
        Shape::PartialMesh { k } => format!("partial-mesh, k = {k}"),
        Shape::Hierarchical { fanout } => format!("hierarchical, fan-out {fanout}"),
        Shape::HubSpoke { hubs } => format!("hub-spoke, {hubs} hub(s)"),
        Shape::Sharded { shard_size, k } => format!("sharded, shards of {shard_size}, k = {k}"),
        other => other.name().to_string(),
    }
}

fn stats_text(overlay: &Overlay, shape: Shape, seed: u64, build_ms: f64) -> String {
    let metrics = GraphMetrics::of(overlay);
    let histogram: Vec<String> = metrics
        .degree_histogram
        .iter()
        .map(|(degree, count)| format!("{degree}×{count}"))
        .collect();
    let estimated = if metrics.sampled { " (sampled)" } else { "" };
    format!(
        "overlay       {}, seed {seed}\n\
         nodes         {}\n\
         edges         {}\n\
         degree        min {}, max {}, mean {:.2} (degree×nodes: {})\n\
         diameter      {} hops{estimated}\n\
         average path  {:.3} hops{estimated}\n\
         clustering    {:.4}\n\
         components    {}\n\
         built in      {build_ms:.1} ms\n",
        shape_text(shape),
        metrics.nodes,
        metrics.edges,
        metrics.degree_min,
        metrics.degree_max,
        metrics.degree_mean,
        histogram.join(" "),
        metrics.diameter,
        metrics.avg_path_length,
        metrics.clustering,
        metrics.components,
    )
}

struct RepairFigures {
    failed: usize,
    /// Edges that ended at a failed node.
    lost_with_nodes: usize,
    added: usize,
    /// Edges between surviving nodes that the repair removed.
    removed_between_survivors: usize,
    repair_ms: f64,
}

impl RepairFigures {
    fn new(before: &Overlay, after: &Overlay, failed: &[String], repair_ms: f64) -> RepairFigures {
        let diff = after.diff_from(before);
        let touches_failed = |(a, b): &(String, String)| failed.contains(a) || failed.contains(b);
        let lost_with_nodes = diff
            .removed
            .iter()
            .filter(|edge| touches_failed(edge))
            .count();
        RepairFigures {
            failed: failed.len(),
            lost_with_nodes,
            added: diff.added.len(),
            removed_between_survivors: diff.removed.len() - lost_with_nodes,
            repair_ms,
        }
    }

    fn to_text(&self) -> String {
        format!(
            "repair        after {} node(s) failed (chosen by the seed), shown above:\n\
             \x20             {} edge(s) went with them; the repair added {} and removed {} between survivors ({} changed) in {:.1} ms\n",
            self.failed,
            self.lost_with_nodes,
            self.added,
            self.removed_between_survivors,
            self.added + self.removed_between_survivors,
            self.repair_ms
        )
    }
}
