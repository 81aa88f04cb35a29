//! Overlays: which node links to which. Pure and deterministic — the same
//! names, shape and seed always give the same graph, so every node that
//! holds the same membership view computes the same overlay without talking
//! to the others.
//!
//! - [`graph`]: the undirected simple graph over node names.
//! - [`builders`]: full mesh, partial mesh (k-regular random graph),
//!   ring, hierarchical tree, hub-and-spoke, sharded.
//! - [`repair`]: incremental repair when nodes leave or join.
//! - [`metrics`]: degrees, diameter, average path, clustering, components.
//! - [`export`]: DOT and JSON.
//!
//! [`Topology`] ties them together: it builds the base overlay over every
//! configured node once, and derives the overlay for any set of live nodes
//! from it, so a node that leaves changes few edges and a node that comes
//! back restores the base overlay.
//!
//! Degree bounds, with every node alive (n nodes):
//! - full mesh: n - 1;
//! - partial mesh: k everywhere, except one node with k + 1 when n · k is
//!   odd (k is at most n - 1, and at least 2 when n > 2);
//! - ring: 2 (1 when n = 2);
//! - hierarchical: at most fanout + 1;
//! - hub-spoke: spokes 1, hubs at most (hubs - 1) + ⌈(n - hubs) / hubs⌉;
//! - sharded: the partial-mesh bound inside a shard, plus shards - 1 on
//!   each shard's hub.

pub mod builders;
pub mod export;
pub mod graph;
pub mod metrics;
pub mod repair;

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use graph::{EdgeDiff, Overlay};
pub use metrics::GraphMetrics;

/// An overlay shape with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    FullMesh,
    PartialMesh { k: usize },
    Ring,
    Hierarchical { fanout: usize },
    HubSpoke { hubs: usize },
    Sharded { shard_size: usize, k: usize },
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::FullMesh => "full-mesh",
            Shape::PartialMesh { .. } => "partial-mesh",
            Shape::Ring => "ring",
            Shape::Hierarchical { .. } => "hierarchical",
            Shape::HubSpoke { .. } => "hub-spoke",
            Shape::Sharded { .. } => "sharded",
        }
    }
}

/// Builds `shape` over `names`.
pub fn build(shape: Shape, names: &[String], seed: u64) -> Overlay {
    match shape {
        Shape::FullMesh => builders::full_mesh(names),
        Shape::PartialMesh { k } => builders::partial_mesh(names, k, seed),
        Shape::Ring => builders::ring(names),
        Shape::Hierarchical { fanout } => builders::hierarchical(names, fanout),
        Shape::HubSpoke { hubs } => builders::hub_spoke(names, hubs),
        Shape::Sharded { shard_size, k } => builders::sharded(names, shard_size, k, seed),
    }
}

/// The rule that picks k from the node count: ⌈factor · ln n⌉, clamped to
/// `min..=max` and to n - 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KRule {
    pub factor: f64,
    pub min: usize,
    pub max: usize,
}

impl Default for KRule {
    fn default() -> KRule {
        KRule {
            factor: 2.0,
            min: 3,
            max: 32,
        }
    }
}

impl KRule {
    pub fn k_for(&self, nodes: usize) -> usize {
        let ideal = (self.factor * (nodes.max(1) as f64).ln()).ceil() as usize;
        ideal
            .clamp(self.min, self.max.max(self.min))
            .min(nodes.saturating_sub(1))
    }

    /// The next k given a measured latency and its target: one more
    /// neighbour (fewer hops) when latency is over target, one fewer (fewer
    /// connections to keep) when it is under half the target, within the
    /// rule's bounds.
    pub fn adjust_for_latency(&self, k: usize, measured_ms: f64, target_ms: f64) -> usize {
        if measured_ms > target_ms {
            (k + 1).min(self.max)
        } else if measured_ms < target_ms / 2.0 {
            k.saturating_sub(1).max(self.min)
        } else {
            k
        }
    }
}

/// A shape over a fixed set of configured nodes, and the overlay for any
/// subset of them that is alive.
#[derive(Clone, Debug)]
pub struct Topology {
    shape: Shape,
    seed: u64,
    /// Every configured node, in name order.
    names: Vec<String>,
    base: Overlay,
}

impl Topology {
    pub fn new(shape: Shape, names: &[String], seed: u64) -> Topology {
        let base = build(shape, names, seed);
        Topology {
            shape,
            seed,
            names: base.names().to_vec(),
            base,
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The overlay with every node alive.
    pub fn base(&self) -> &Overlay {
        &self.base
    }

    /// The overlay over the live nodes. Nodes not in the configuration are
    /// ignored. A pure function of the live set, so nodes that agree on
    /// who is alive agree on the overlay, whatever order they learnt it in.
    pub fn overlay_for(&self, live: &BTreeSet<String>) -> Overlay {
        let alive: Vec<String> = self
            .names
            .iter()
            .filter(|name| live.contains(*name))
            .cloned()
            .collect();
        if alive.len() == self.names.len() {
            return self.base.clone();
        }
        match self.shape {
            Shape::FullMesh => builders::full_mesh(&alive),
            Shape::Ring => builders::ring(&alive),
            Shape::PartialMesh { k } => self.repaired_mesh(&self.base, k, live),
            Shape::Hierarchical { fanout } => self.adopted_tree(fanout, live),
            Shape::HubSpoke { hubs } => self.hub_spoke_for(hubs, live),
            Shape::Sharded { shard_size, k } => self.sharded_for(shard_size, k, live),
        }
    }

    /// `mesh` with every node not in `live` removed in name order, each
    /// removal repaired with a generator seeded by the removed node's name.
    fn repaired_mesh(&self, mesh: &Overlay, k: usize, live: &BTreeSet<String>) -> Overlay {
        let mut graph = mesh.clone();
        for name in mesh.names() {
            if !live.contains(name) {
                let seed = self.seed ^ crate::protocols::stable_hash(name);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                graph = repair::remove_node(&graph, name, k, &mut rng);
            }
        }
        graph
    }

    /// Each live node links to its nearest live ancestor in the base tree;
    /// orphans of a dead root link to the first live node.
    fn adopted_tree(&self, fanout: usize, live: &BTreeSet<String>) -> Overlay {
        let fanout = fanout.max(1);
        let alive = |index: usize| live.contains(&self.names[index]);
        let mut graph = Overlay::with_nodes(self.names.iter().filter(|n| live.contains(*n)));
        let Some(root) = (0..self.names.len()).find(|&index| alive(index)) else {
            return graph;
        };
        for index in (0..self.names.len()).filter(|&index| alive(index) && index != root) {
            let mut parent = (index - 1) / fanout;
            while !alive(parent) && parent != 0 {
                parent = (parent - 1) / fanout;
            }
            if !alive(parent) {
                parent = root;
            }
            let a = graph.index_of(&self.names[index]).expect("live node");
            let b = graph.index_of(&self.names[parent]).expect("live node");
            graph.add_edge(a, b);
        }
        graph
    }

    /// Hubs are the first live nodes; each spoke keeps the hub slot its
    /// position in the configuration gives it.
    fn hub_spoke_for(&self, hubs: usize, live: &BTreeSet<String>) -> Overlay {
        let mut graph = Overlay::with_nodes(self.names.iter().filter(|n| live.contains(*n)));
        let positions: Vec<usize> = (0..self.names.len())
            .filter(|&index| live.contains(&self.names[index]))
            .collect();
        let hub_count = hubs.clamp(1, positions.len().max(1)).min(positions.len());
        let hub_nodes: Vec<usize> = (0..hub_count).collect();
        for (slot, &a) in hub_nodes.iter().enumerate() {
            for &b in &hub_nodes[slot + 1..] {
                graph.add_edge(a, b);
            }
        }
        for (live_index, &position) in positions.iter().enumerate().skip(hub_count) {
            graph.add_edge(live_index, hub_nodes[position % hub_count]);
        }
        graph
    }

    /// Shards keep their configured members; each shard's mesh is repaired
    /// like a partial mesh, and its hub is its first live member.
    fn sharded_for(&self, shard_size: usize, k: usize, live: &BTreeSet<String>) -> Overlay {
        let shard = builders::shard_of_each(self.names.len(), shard_size);
        let shard_count = shard.last().map_or(0, |last| last + 1);
        let mut graph = Overlay::with_nodes(self.names.iter().filter(|n| live.contains(*n)));
        let mut hubs = Vec::new();
        for index in 0..shard_count {
            let members: Vec<String> = (0..self.names.len())
                .filter(|&node| shard[node] == index)
                .map(|node| self.names[node].clone())
                .collect();
            let inner = builders::partial_mesh(&members, k, self.seed ^ index as u64);
            let inner = self.repaired_mesh(&inner, k, live);
            for (a, b) in inner.named_edges() {
                let a = graph.index_of(&a).expect("live member");
                let b = graph.index_of(&b).expect("live member");
                graph.add_edge(a, b);
            }
            if let Some(hub) = members.iter().find(|name| live.contains(*name)) {
                hubs.push(graph.index_of(hub).expect("live member"));
            }
        }
        for (position, &a) in hubs.iter().enumerate() {
            for &b in &hubs[position + 1..] {
                graph.add_edge(a, b);
            }
        }
        graph
    }
}
