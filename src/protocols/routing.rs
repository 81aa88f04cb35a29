//! Routing over the overlay: latency-weighted shortest paths.
//!
//! A link's weight is its latency, measured as the smallest of its recent
//! round-trip samples ([`LinkLatency`]; a sample also holds whatever time
//! the heartbeat waited behind other work, which is noise about the node,
//! not the link), plus [`HOP_COST_MICROS`] for the work every extra hop
//! costs a router. Weights are always at least 1, so every step along a shortest path strictly lowers the
//! remaining distance and following next hops can never loop while nodes
//! agree on the weights. Nodes only measure their own links, so they do
//! not always agree; envelopes therefore carry their path (source routing),
//! and a router that must route around a failed link searches only among
//! nodes the envelope has not visited yet. A path never repeats a node.
//!
//! Ties are broken by hop count, then by the lower node index, so tables are
//! deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::topology::Overlay;

/// Weight of a link in microseconds; never zero.
pub type Weight = u64;

/// What one more hop costs beyond its link's latency: a router decodes,
/// routes, encodes and queues the envelope. Without it, a detour over
/// links a few microseconds faster would win over a direct link.
pub const HOP_COST_MICROS: Weight = 2_000;

/// Round-trip samples a link's latency is the minimum of.
pub const LATENCY_SAMPLES_MAX: usize = 8;

/// A link's latency: the smallest of its last LATENCY_SAMPLES_MAX round
/// trips, in microseconds. The minimum is the link's own delay; what rides
/// on top is queueing at either end, which comes and goes.
#[derive(Clone, Debug, Default)]
pub struct LinkLatency {
    samples: std::collections::VecDeque<Weight>,
}

impl LinkLatency {
    pub fn sample(&mut self, round_trip_micros: Weight) {
        if self.samples.len() == LATENCY_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(round_trip_micros.max(1));
    }

    /// The latency estimate; None before the first sample.
    pub fn estimate(&self) -> Option<Weight> {
        self.samples.iter().copied().min()
    }
}

/// The best known way from the table's source to one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub next_hop: usize,
    pub hops: usize,
    /// Sum of the link weights along the path.
    pub cost: Weight,
    /// Node indices from the source to the destination, both included.
    pub path: Vec<usize>,
}

/// Routes from one source to every reachable node of an overlay, kept as
/// the shortest-path tree: a path is spelled out only when asked for, so a
/// table over a thousand nodes costs one vector, not a thousand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    pub source: usize,
    /// Per node: (cost, hops, predecessor) on the tree; None if unreachable.
    tree: Vec<Option<(Weight, usize, usize)>>,
}

impl RoutingTable {
    /// The best route to `destination`; None for the source itself and for
    /// nodes it cannot reach.
    pub fn route(&self, destination: usize) -> Option<Route> {
        if destination == self.source {
            return None;
        }
        let (cost, hops, _) = (*self.tree.get(destination)?)?;
        let path = path_to(&self.tree, self.source, destination);
        Some(Route {
            next_hop: path[1],
            hops,
            cost,
            path,
        })
    }

    /// How many other nodes the source reaches.
    pub fn reachable(&self) -> usize {
        self.tree.iter().flatten().count().saturating_sub(1)
    }
}

/// Shortest-path tree from `source`, skipping nodes for which `usable` is
/// false (the source itself is always usable). `weight(a, b)` is asked only
/// for overlay edges.
fn shortest_paths(
    graph: &Overlay,
    source: usize,
    weight: &impl Fn(usize, usize) -> Weight,
    usable: &impl Fn(usize) -> bool,
) -> Vec<Option<(Weight, usize, usize)>> {
    // best[node] = (cost, hops, predecessor)
    let mut best: Vec<Option<(Weight, usize, usize)>> = vec![None; graph.node_count()];
    let mut done = vec![false; graph.node_count()];
    let mut heap = BinaryHeap::new();
    best[source] = Some((0, 0, source));
    heap.push(Reverse((0, 0, source)));
    while let Some(Reverse((cost, hops, node))) = heap.pop() {
        if done[node] {
            continue;
        }
        done[node] = true;
        for &next in graph.adjacent(node) {
            if done[next] || !usable(next) {
                continue;
            }
            let step = weight(node, next).max(1);
            let candidate = (cost + step, hops + 1, node);
            let better = match best[next] {
                None => true,
                Some(current) => candidate < current,
            };
            if better {
                best[next] = Some(candidate);
                heap.push(Reverse((candidate.0, candidate.1, next)));
            }
        }
    }
    best
}

fn path_to(best: &[Option<(Weight, usize, usize)>], source: usize, target: usize) -> Vec<usize> {
    let mut path = vec![target];
    let mut node = target;
    while node != source {
        node = best[node]
            .expect("nodes on a found path have a predecessor")
            .2;
        path.push(node);
    }
    path.reverse();
    path
}

/// The routing table of `source` over `graph` with `weight` per link.
pub fn compute(
    graph: &Overlay,
    source: usize,
    weight: impl Fn(usize, usize) -> Weight,
) -> RoutingTable {
    let tree = shortest_paths(graph, source, &weight, &|_| true);
    RoutingTable { source, tree }
}

/// The shortest path from `from` to `to` that avoids every node in
/// `visited` (other than `from`) and every first hop for which `link_up` is
/// false. None if there is none.
pub fn path_avoiding(
    graph: &Overlay,
    from: usize,
    to: usize,
    visited: &[usize],
    weight: impl Fn(usize, usize) -> Weight,
    link_up: impl Fn(usize) -> bool,
) -> Option<Vec<usize>> {
    let usable = |node: usize| !visited.contains(&node);
    let first_hop_weight = |a: usize, b: usize| {
        if a == from && !link_up(b) {
            Weight::MAX / 4
        } else {
            weight(a, b)
        }
    };
    let best = shortest_paths(graph, from, &first_hop_weight, &usable);
    best[to]?;
    let path = path_to(&best, from, to);
    // A path whose only way out is a link that is down is no path.
    if path.len() >= 2 && !link_up(path[1]) {
        return None;
    }
    Some(path)
}

/// What a router does with an envelope that reached it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// This node is the destination.
    Deliver,
    /// Send to `path[hop + 1]`, with this (possibly re-routed) path.
    Forward { path: Vec<usize> },
    /// The envelope may not travel another hop.
    TtlExpired,
    /// No path to the destination avoids the nodes already visited.
    NoRoute,
    /// The envelope's path does not pass through here at its hop count; a
    /// correct router never sends that.
    Misrouted,
}

/// Where an envelope is: at `here`, after `hops` hops along `path` (so
/// `path[hops]` is `here`), going to `destination`, allowed `ttl` hops.
#[derive(Clone, Copy, Debug)]
pub struct Position<'a> {
    pub here: usize,
    pub destination: usize,
    pub path: &'a [usize],
    pub hops: usize,
    pub ttl: usize,
}

/// Decides the next step for an envelope at `position`. Follows the path
/// while its next link is up; otherwise finds a new one through nodes the
/// envelope has not visited.
pub fn next_step(
    graph: &Overlay,
    position: Position<'_>,
    weight: impl Fn(usize, usize) -> Weight,
    link_up: impl Fn(usize) -> bool,
) -> Step {
    let Position {
        here,
        destination,
        path,
        hops,
        ttl,
    } = position;
    if here == destination {
        return Step::Deliver;
    }
    if hops >= ttl {
        return Step::TtlExpired;
    }
    if path.get(hops) != Some(&here) {
        return Step::Misrouted;
    }
    let travelled = &path[..=hops];
    let planned = path.get(hops + 1).copied();
    let still_good = path.last() == Some(&destination)
        && planned.is_some_and(|next| graph.has_edge(here, next) && link_up(next));
    if still_good {
        return Step::Forward {
            path: path.to_vec(),
        };
    }
    match path_avoiding(graph, here, destination, travelled, weight, link_up) {
        Some(detour) if hops + detour.len() - 1 <= ttl => {
            let mut path: Vec<usize> = travelled[..hops].to_vec();
            path.extend(detour);
            Step::Forward { path }
        }
        Some(_) => Step::TtlExpired,
        None => Step::NoRoute,
    }
}
