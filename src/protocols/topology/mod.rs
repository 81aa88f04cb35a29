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
    build_live(shape, names, seed, None, &|_| true)
}

/// Builds `shape` over the names `alive` accepts, placing them by their
/// position among all `names`. `mesh` is the partial mesh over all names
/// when the caller has it already.
fn build_live(
    shape: Shape,
    names: &[String],
    seed: u64,
    mesh: Option<&Overlay>,
    alive: builders::Alive<'_>,
) -> Overlay {
    let live: Vec<String> = names.iter().filter(|name| alive(name)).cloned().collect();
    match shape {
        Shape::FullMesh => builders::full_mesh(&live),
        Shape::Ring => builders::ring(&live),
        Shape::PartialMesh { k } => {
            let built;
            let mesh = match mesh {
                Some(mesh) => mesh,
                None => {
                    built = builders::partial_mesh(names, k, seed);
                    &built
                }
            };
            repair::without_dead(mesh, k, seed, alive)
        }
        Shape::Hierarchical { fanout } => builders::hierarchical(names, fanout, alive),
        Shape::HubSpoke { hubs } => builders::hub_spoke(names, hubs, alive),
        Shape::Sharded { shard_size, k } => builders::sharded(names, shard_size, k, seed, alive),
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
    /// The overlay with every configured node alive.
    base: Overlay,
}

impl Topology {
    pub fn new(shape: Shape, names: &[String], seed: u64) -> Topology {
        Topology {
            shape,
            seed,
            base: build(shape, names, seed),
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
        let names = self.base.names();
        if names.iter().all(|name| live.contains(name)) {
            return self.base.clone();
        }
        let alive = |name: &str| live.contains(name);
        build_live(self.shape, names, self.seed, Some(&self.base), &alive)
    }
}
