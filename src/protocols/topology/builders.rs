//! Builders for the six overlay shapes. Each is a pure function of the node
//! names, the shape's parameters and a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::graph::Overlay;
use super::repair;

/// Double-edge swaps per edge when randomising the partial mesh: enough to
/// mix a circulant graph into a random regular one (mixing is empirically
/// fast, a few swaps per edge).
const SWAPS_PER_EDGE: usize = 10;

pub fn full_mesh(names: &[String]) -> Overlay {
    let mut graph = Overlay::with_nodes(names);
    let count = graph.node_count();
    for a in 0..count {
        for b in a + 1..count {
            graph.add_edge(a, b);
        }
    }
    graph
}

/// The degree a partial mesh of `count` nodes actually gets for a requested
/// `k`: at most `count - 1`, and at least 2 when there are more than two
/// nodes, because a connected graph of more than two nodes cannot have
/// every degree 1.
pub fn effective_k(count: usize, k: usize) -> usize {
    let k = k.min(count.saturating_sub(1));
    if count > 2 {
        k.max(2)
    } else {
        k
    }
}

/// A connected graph where every node has degree k, except one node with
/// k + 1 when count · k is odd. Starts from a circulant graph (connected and
/// k-regular by construction), randomises it with degree-preserving
/// double-edge swaps into a random regular graph (diameter and average path
/// close to the theoretical minimum), then joins any components the swaps
/// split, again without changing a degree.
pub fn partial_mesh(names: &[String], k: usize, seed: u64) -> Overlay {
    let mut graph = Overlay::with_nodes(names);
    let count = graph.node_count();
    let k = effective_k(count, k);
    if k + 1 >= count {
        return full_mesh(graph.names());
    }
    circulant(&mut graph, k);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    randomise(&mut graph, &mut rng);
    repair::join_components(&mut graph, &mut rng);
    graph
}

/// Offsets 1..=k/2 around a ring, plus, when k is odd, chords across it.
fn circulant(graph: &mut Overlay, k: usize) {
    let count = graph.node_count();
    for node in 0..count {
        for offset in 1..=k / 2 {
            graph.add_edge(node, (node + offset) % count);
        }
    }
    if k % 2 == 0 {
        return;
    }
    let half = count / 2;
    if count % 2 == 0 {
        for node in 0..half {
            graph.add_edge(node, node + half);
        }
    } else {
        // Pair 0..count-1 across the ring; the last node links to the
        // middle one, which is the single node of degree k + 1.
        for node in 0..half {
            graph.add_edge(node, node + half);
        }
        graph.add_edge(count - 1, half);
    }
}

fn randomise(graph: &mut Overlay, rng: &mut ChaCha8Rng) {
    let mut edges = graph.edges();
    if edges.len() < 2 {
        return;
    }
    for _ in 0..edges.len() * SWAPS_PER_EDGE {
        let first = rng.gen_range(0..edges.len());
        let second = rng.gen_range(0..edges.len());
        let (a, b) = edges[first];
        let (mut c, mut d) = edges[second];
        if rng.gen_bool(0.5) {
            std::mem::swap(&mut c, &mut d);
        }
        // a–b, c–d becomes a–c, b–d.
        let distinct = a != c && a != d && b != c && b != d;
        if !distinct || graph.has_edge(a, c) || graph.has_edge(b, d) {
            continue;
        }
        graph.remove_edge(a, b);
        graph.remove_edge(c, d);
        graph.add_edge(a, c);
        graph.add_edge(b, d);
        edges[first] = (a.min(c), a.max(c));
        edges[second] = (b.min(d), b.max(d));
    }
}

/// A cycle through the nodes in name order.
pub fn ring(names: &[String]) -> Overlay {
    let mut graph = Overlay::with_nodes(names);
    let count = graph.node_count();
    if count >= 2 {
        for node in 0..count {
            graph.add_edge(node, (node + 1) % count);
        }
    }
    graph
}

/// Which nodes are alive, by name.
pub type Alive<'a> = &'a dyn Fn(&str) -> bool;

/// Adds the edge between two named nodes of `graph`.
fn link(graph: &mut Overlay, a: &str, b: &str) {
    let a = graph.index_of(a).expect("a node of the graph");
    let b = graph.index_of(b).expect("a node of the graph");
    graph.add_edge(a, b);
}

/// A tree in name order over every configured name: node i's parent is
/// (i - 1) / fanout, so the root is the first name and every node has at
/// most `fanout` children. Only live nodes are in the result: a node whose
/// parent is dead links to its nearest live ancestor, and orphans of a dead
/// root to the first live node.
pub fn hierarchical(names: &[String], fanout: usize, alive: Alive<'_>) -> Overlay {
    let fanout = fanout.max(1);
    let all = Overlay::with_nodes(names);
    let all = all.names();
    let live = |index: usize| alive(&all[index]);
    let mut graph = Overlay::with_nodes(all.iter().filter(|name| alive(name)));
    let Some(root) = (0..all.len()).find(|&index| live(index)) else {
        return graph;
    };
    for index in (0..all.len()).filter(|&index| live(index) && index != root) {
        let mut parent = (index - 1) / fanout;
        while !live(parent) && parent != 0 {
            parent = (parent - 1) / fanout;
        }
        if !live(parent) {
            parent = root;
        }
        link(&mut graph, &all[index], &all[parent]);
    }
    graph
}

/// The first `hubs` live names are hubs, linked to each other; every other
/// live node links to one hub, chosen by its position among every
/// configured name, so a spoke keeps its hub while others come and go.
pub fn hub_spoke(names: &[String], hubs: usize, alive: Alive<'_>) -> Overlay {
    let all = Overlay::with_nodes(names);
    let live: Vec<(usize, &String)> = all
        .names()
        .iter()
        .enumerate()
        .filter(|(_, name)| alive(name))
        .collect();
    let mut graph = Overlay::with_nodes(live.iter().map(|(_, name)| name.as_str()));
    let hub_count = hubs.clamp(1, live.len().max(1)).min(live.len());
    for a in 0..hub_count {
        for b in a + 1..hub_count {
            graph.add_edge(a, b);
        }
    }
    for (spoke, &(position, _)) in live.iter().enumerate().skip(hub_count) {
        graph.add_edge(spoke, position % hub_count);
    }
    graph
}

/// The nodes in name order, cut into shards of about `shard_size`; the
/// shard of each name. Shards differ in size by at most one.
pub fn shard_of_each(count: usize, shard_size: usize) -> Vec<usize> {
    let shards = count.div_ceil(shard_size.max(1)).max(1);
    (0..count)
        .map(|index| index * shards / count.max(1))
        .collect()
}

/// Every configured name, in name order, cut into shards of about
/// `shard_size`; a partial mesh of degree k inside each (repaired around
/// dead members), and each shard's first live member a hub linked to every
/// other shard's hub.
pub fn sharded(
    names: &[String],
    shard_size: usize,
    k: usize,
    seed: u64,
    alive: Alive<'_>,
) -> Overlay {
    let all = Overlay::with_nodes(names);
    let all = all.names();
    let shard = shard_of_each(all.len(), shard_size);
    let shard_count = shard.last().map_or(0, |last| last + 1);
    let mut graph = Overlay::with_nodes(all.iter().filter(|name| alive(name)));
    let mut hubs = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let members: Vec<String> = (0..all.len())
            .filter(|&node| shard[node] == index)
            .map(|node| all[node].clone())
            .collect();
        let inner = partial_mesh(&members, k, seed ^ index as u64);
        let inner = repair::without_dead(&inner, k, seed, alive);
        for (a, b) in inner.named_edges() {
            link(&mut graph, &a, &b);
        }
        if let Some(hub) = members.iter().find(|name| alive(name)) {
            hubs.push(graph.index_of(hub).expect("a live member"));
        }
    }
    for (position, &a) in hubs.iter().enumerate() {
        for &b in &hubs[position + 1..] {
            graph.add_edge(a, b);
        }
    }
    graph
}
