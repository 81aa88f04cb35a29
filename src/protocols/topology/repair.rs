//! Incremental repair of a partial mesh when nodes leave or join, changing
//! as few edges as it can, and the component join every builder relies on.
//!
//! After a change, [`rebalance`] restores the partial mesh's degree rule
//! (every degree k, one node k + 1 when the node count times k is odd) with
//! local moves: link two nodes that lack a link; split an existing edge x–y
//! into u–x, u–y for a node u short of two; hand an edge over from the one
//! node above k. Then [`join_components`] reconnects the graph if the moves
//! split it. Every move keeps the graph simple.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::builders;
use super::graph::Overlay;

/// Random edges tried before a move gives up and rebalancing falls back to
/// a rebuild (only ever reached on tiny, nearly complete graphs).
const EDGE_TRIES_MAX: usize = 2_000;

/// Why a rebalance could not finish with local moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stuck;

/// The target degree of every node and whether one node may have one more.
fn targets(graph: &Overlay, k: usize) -> (usize, bool) {
    let k = builders::effective_k(graph.node_count(), k);
    (k, graph.node_count() * k % 2 == 1)
}

/// Restores the degree rule with local moves. Returns the moves' edge
/// changes applied to `graph`, or `Stuck` (with `graph` partly changed) when
/// no local move fits.
pub fn rebalance(graph: &mut Overlay, k: usize, rng: &mut ChaCha8Rng) -> Result<(), Stuck> {
    let (k, odd) = targets(graph, k);
    let count = graph.node_count();
    if k + 1 >= count {
        *graph = builders::full_mesh(graph.names());
        return Ok(());
    }
    for _ in 0..count * k + 16 {
        shed_excess(graph, k, odd, rng)?;
        let mut short: Vec<usize> = (0..count).filter(|&n| graph.degree(n) < k).collect();
        if short.is_empty() {
            return Ok(());
        }
        short.shuffle(rng);
        if link_two_short(graph, &short) {
            continue;
        }
        let u = short[0];
        if k - graph.degree(u) >= 2 {
            split_edge(graph, u, u, rng)?;
        } else if short.len() >= 2 {
            split_edge(graph, u, short[1], rng)?;
        } else {
            top_up_single(graph, u, k, odd, rng)?;
        }
    }
    Err(Stuck)
}

/// Adds an edge between two short nodes that are not linked yet.
fn link_two_short(graph: &mut Overlay, short: &[usize]) -> bool {
    for (position, &a) in short.iter().enumerate() {
        for &b in &short[position + 1..] {
            if graph.add_edge(a, b) {
                return true;
            }
        }
    }
    false
}

/// Replaces a random edge x–y, with x not linked to `u` and y not linked to
/// `v`, by u–x and v–y. With u = v this gives u two new links; otherwise one
/// each. Nobody else's degree changes.
fn split_edge(graph: &mut Overlay, u: usize, v: usize, rng: &mut ChaCha8Rng) -> Result<(), Stuck> {
    let edges = graph.edges();
    for _ in 0..EDGE_TRIES_MAX.min(edges.len() * 4 + 8) {
        let (mut x, mut y) = edges[rng.gen_range(0..edges.len())];
        if rng.gen_bool(0.5) {
            std::mem::swap(&mut x, &mut y);
        }
        let touches = [u, v].contains(&x) || [u, v].contains(&y);
        if touches || graph.has_edge(u, x) || graph.has_edge(v, y) {
            continue;
        }
        graph.remove_edge(x, y);
        graph.add_edge(u, x);
        graph.add_edge(v, y);
        return Ok(());
    }
    Err(Stuck)
}

/// One node is one short. Take a link over from the node above k if there
/// is one; otherwise (count · k odd) link to a node at k, which becomes the
/// one node at k + 1.
fn top_up_single(
    graph: &mut Overlay,
    u: usize,
    k: usize,
    odd: bool,
    rng: &mut ChaCha8Rng,
) -> Result<(), Stuck> {
    let count = graph.node_count();
    if let Some(w) = (0..count).find(|&n| graph.degree(n) > k) {
        return move_edge(graph, w, u, rng);
    }
    if !odd {
        return Err(Stuck);
    }
    let mut candidates: Vec<usize> = (0..count)
        .filter(|&x| x != u && graph.degree(x) == k && !graph.has_edge(u, x))
        .collect();
    candidates.shuffle(rng);
    match candidates.first() {
        Some(&x) => {
            graph.add_edge(u, x);
            Ok(())
        }
        None => Err(Stuck),
    }
}

/// Moves one of `from`'s links to `to`: from–y becomes to–y.
fn move_edge(
    graph: &mut Overlay,
    from: usize,
    to: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(), Stuck> {
    let mut candidates: Vec<usize> = graph
        .adjacent(from)
        .iter()
        .copied()
        .filter(|&y| y != to && !graph.has_edge(to, y))
        .collect();
    candidates.shuffle(rng);
    let Some(&y) = candidates.first() else {
        // `to` is linked to all of `from`'s neighbours: link the two directly
        // and drop one of `from`'s other links, which keeps every degree.
        return Err(Stuck);
    };
    graph.remove_edge(from, y);
    graph.add_edge(to, y);
    Ok(())
}

/// Brings the node count above k + 1 back: only one node may exceed k, and
/// only by one, and only when count · k is odd.
fn shed_excess(
    graph: &mut Overlay,
    k: usize,
    odd: bool,
    rng: &mut ChaCha8Rng,
) -> Result<(), Stuck> {
    let count = graph.node_count();
    let allowed = usize::from(odd);
    let mut over: Vec<usize> = (0..count).filter(|&n| graph.degree(n) > k).collect();
    let excess =
        |graph: &Overlay, over: &[usize]| over.iter().map(|&n| graph.degree(n) - k).sum::<usize>();
    while excess(graph, &over) > allowed {
        let w = over[0];
        let short: Vec<usize> = (0..count).filter(|&n| graph.degree(n) < k).collect();
        match short.first() {
            Some(&u) => move_edge(graph, w, u, rng)?,
            None => {
                // Two nodes above k and none below: drop a link between two
                // nodes above k if there is one.
                let partner = over
                    .iter()
                    .copied()
                    .find(|&v| v != w && graph.has_edge(w, v));
                match partner {
                    Some(v) => {
                        graph.remove_edge(w, v);
                    }
                    None => return Err(Stuck),
                }
            }
        }
        over.retain(|&n| graph.degree(n) > k);
    }
    Ok(())
}

/// Joins the graph's components without changing any degree: for each
/// extra component, an edge a–b on a cycle of the first component and any
/// edge c–d of the other become a–c and b–d. Because a–b lies on a cycle,
/// the first component stays connected without it, and both halves of the
/// other component hang off it. Components without an edge (isolated nodes)
/// are linked directly.
pub fn join_components(graph: &mut Overlay, rng: &mut ChaCha8Rng) {
    loop {
        let (label, count) = graph.components();
        if count <= 1 {
            return;
        }
        let in_component = |c: usize| -> Vec<usize> {
            (0..graph.node_count()).filter(|&n| label[n] == c).collect()
        };
        let first = in_component(0);
        let other = in_component(1);
        let cycle_edge = edge_on_cycle(graph, &first, rng);
        let other_edge = other
            .iter()
            .find_map(|&c| graph.adjacent(c).first().map(|&d| (c, d)));
        match (cycle_edge, other_edge) {
            (Some((a, b)), Some((c, d))) => {
                graph.remove_edge(a, b);
                graph.remove_edge(c, d);
                graph.add_edge(a, c);
                graph.add_edge(b, d);
            }
            _ => {
                // A tree or a lone node: no degree-preserving join exists,
                // so link the components directly.
                graph.add_edge(first[0], other[0]);
            }
        }
    }
}

/// A random edge of `members` whose removal leaves its ends connected.
fn edge_on_cycle(
    graph: &mut Overlay,
    members: &[usize],
    rng: &mut ChaCha8Rng,
) -> Option<(usize, usize)> {
    let mut edges: Vec<(usize, usize)> = members
        .iter()
        .flat_map(|&a| {
            graph
                .adjacent(a)
                .iter()
                .filter(move |&&b| b > a)
                .map(move |&b| (a, b))
        })
        .collect();
    edges.shuffle(rng);
    edges.into_iter().find(|&(a, b)| {
        graph.remove_edge(a, b);
        let connected = super::metrics::hops_from(graph, a)[b] != usize::MAX;
        graph.add_edge(a, b);
        connected
    })
}

/// `mesh` without every node `alive` rejects, removed in name order, each
/// removal repaired with a generator seeded by `seed` and the removed
/// node's name, so the result depends only on which nodes are dead.
pub fn without_dead(mesh: &Overlay, k: usize, seed: u64, alive: builders::Alive<'_>) -> Overlay {
    let mut graph = mesh.clone();
    for name in mesh.names() {
        if !alive(name) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ crate::protocols::stable_hash(name));
            graph = remove_node(&graph, name, k, &mut rng);
        }
    }
    graph
}

/// A partial mesh without `name`, repaired. Falls back to a fresh build of
/// the remaining nodes if local moves get stuck (tiny graphs only).
pub fn remove_node(graph: &Overlay, name: &str, k: usize, rng: &mut ChaCha8Rng) -> Overlay {
    let mut repaired = graph.without_node(name);
    finish(&mut repaired, k, rng);
    repaired
}

/// A partial mesh with `name` added and linked in.
pub fn add_node(graph: &Overlay, name: &str, k: usize, rng: &mut ChaCha8Rng) -> Overlay {
    let mut grown = graph.with_node(name);
    finish(&mut grown, k, rng);
    grown
}

fn finish(graph: &mut Overlay, k: usize, rng: &mut ChaCha8Rng) {
    if rebalance(graph, k, rng).is_err() {
        *graph = builders::partial_mesh(graph.names(), k, rng.gen());
    }
    join_components(graph, rng);
}
