//! Graph metrics of an overlay: sizes, degrees, distances, clustering and
//! components. Distances come from a breadth-first search from every node
//! (exact), or from a seeded sample of sources on graphs too large for that.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::graph::Overlay;

/// Above this many nodes, distances are estimated from a sample of sources.
pub const EXACT_NODES_MAX: usize = 2_000;
/// Breadth-first searches run when sampling.
pub const SAMPLED_SOURCES: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphMetrics {
    pub nodes: usize,
    pub edges: usize,
    pub degree_min: usize,
    pub degree_max: usize,
    pub degree_mean: f64,
    /// Degree → how many nodes have it.
    pub degree_histogram: BTreeMap<usize, usize>,
    /// Longest shortest path in hops within a component (0 without edges).
    pub diameter: usize,
    /// Mean shortest path in hops over every connected ordered pair.
    pub avg_path_length: f64,
    /// Mean local clustering coefficient (nodes of degree < 2 count as 0).
    pub clustering: f64,
    pub components: usize,
    /// True when distances were estimated from a sample of sources.
    pub sampled: bool,
}

impl GraphMetrics {
    pub fn of(graph: &Overlay) -> GraphMetrics {
        let count = graph.node_count();
        let degrees: Vec<usize> = (0..count).map(|n| graph.degree(n)).collect();
        let mut degree_histogram = BTreeMap::new();
        for &degree in &degrees {
            *degree_histogram.entry(degree).or_insert(0) += 1;
        }
        let sampled = count > EXACT_NODES_MAX;
        let mut sources: Vec<usize> = (0..count).collect();
        if sampled {
            sources.shuffle(&mut ChaCha8Rng::seed_from_u64(count as u64));
            sources.truncate(SAMPLED_SOURCES);
        }
        let (diameter, avg_path_length) = distances(graph, &sources);
        GraphMetrics {
            nodes: count,
            edges: graph.edge_count(),
            degree_min: degrees.iter().copied().min().unwrap_or(0),
            degree_max: degrees.iter().copied().max().unwrap_or(0),
            degree_mean: if count == 0 {
                0.0
            } else {
                degrees.iter().sum::<usize>() as f64 / count as f64
            },
            degree_histogram,
            diameter,
            avg_path_length,
            clustering: clustering(graph),
            components: graph.components().1,
            sampled,
        }
    }
}

/// Hop distances from `source` to every node (`usize::MAX` if unreachable).
pub fn hops_from(graph: &Overlay, source: usize) -> Vec<usize> {
    let mut distance = vec![usize::MAX; graph.node_count()];
    let mut queue = std::collections::VecDeque::new();
    distance[source] = 0;
    queue.push_back(source);
    while let Some(node) = queue.pop_front() {
        for &next in graph.adjacent(node) {
            if distance[next] == usize::MAX {
                distance[next] = distance[node] + 1;
                queue.push_back(next);
            }
        }
    }
    distance
}

fn distances(graph: &Overlay, sources: &[usize]) -> (usize, f64) {
    let mut diameter = 0;
    let mut total = 0u64;
    let mut pairs = 0u64;
    for &source in sources {
        for (target, &hops) in hops_from(graph, source).iter().enumerate() {
            if target != source && hops != usize::MAX {
                diameter = diameter.max(hops);
                total += hops as u64;
                pairs += 1;
            }
        }
    }
    let average = if pairs == 0 {
        0.0
    } else {
        total as f64 / pairs as f64
    };
    (diameter, average)
}

fn clustering(graph: &Overlay) -> f64 {
    let count = graph.node_count();
    if count == 0 {
        return 0.0;
    }
    let mut sum = 0.0;
    for node in 0..count {
        let around = graph.adjacent(node);
        let degree = around.len();
        if degree < 2 {
            continue;
        }
        let mut links = 0usize;
        for (position, &a) in around.iter().enumerate() {
            links += around[position + 1..]
                .iter()
                .filter(|&&b| graph.has_edge(a, b))
                .count();
        }
        sum += 2.0 * links as f64 / (degree * (degree - 1)) as f64;
    }
    sum / count as f64
}
