//! Overlay builders, repair and metrics: invariants over many sizes, shapes
//! and seeds, and the partial mesh against the competitor's algorithm.

use std::collections::BTreeSet;

use agentmesh::protocols::topology::builders::effective_k;
use agentmesh::protocols::topology::{
    build, export, repair, GraphMetrics, KRule, Overlay, Shape, Topology,
};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn names(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("n{index:04}")).collect()
}

fn degrees(graph: &Overlay) -> Vec<usize> {
    (0..graph.node_count()).map(|n| graph.degree(n)).collect()
}

/// Every degree k, except exactly one k + 1 when count · k is odd.
fn assert_partial_mesh_degrees(graph: &Overlay, k: usize) {
    let count = graph.node_count();
    let k = effective_k(count, k);
    let degrees = degrees(graph);
    let above = degrees.iter().filter(|&&d| d == k + 1).count();
    assert!(
        degrees.iter().all(|&d| d == k || d == k + 1),
        "degrees {degrees:?}, k {k}"
    );
    let expected_above = if k + 1 >= count { 0 } else { count * k % 2 };
    assert_eq!(above, expected_above, "degrees {degrees:?}, k {k}");
}

fn assert_sound(graph: &Overlay) {
    graph.check_invariants().unwrap();
    assert!(graph.is_connected(), "{} components", graph.components().1);
}

fn all_shapes(k: usize) -> Vec<Shape> {
    vec![
        Shape::FullMesh,
        Shape::PartialMesh { k },
        Shape::Ring,
        Shape::Hierarchical { fanout: 3 },
        Shape::HubSpoke { hubs: 2 },
        Shape::Sharded { shard_size: 7, k },
    ]
}

/// The documented degree bound of `shape` with every node alive.
fn degree_bound(shape: Shape, count: usize) -> usize {
    match shape {
        Shape::FullMesh => count.saturating_sub(1),
        Shape::PartialMesh { k } => effective_k(count, k) + 1,
        Shape::Ring => 2,
        Shape::Hierarchical { fanout } => fanout + 1,
        Shape::HubSpoke { hubs } => {
            let hubs = hubs.min(count);
            hubs - 1 + (count - hubs).div_ceil(hubs)
        }
        Shape::Sharded { shard_size, k } => {
            let shards = count.div_ceil(shard_size);
            effective_k(shard_size + 1, k) + 1 + shards - 1
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_shape_is_connected_simple_and_within_its_degree_bound(
        count in 1usize..60, k in 1usize..12, seed in any::<u64>()
    ) {
        for shape in all_shapes(k) {
            let graph = build(shape, &names(count), seed);
            prop_assert_eq!(graph.node_count(), count);
            assert_sound(&graph);
            let bound = degree_bound(shape, count);
            prop_assert!(degrees(&graph).iter().all(|&d| d <= bound), "{:?}: bound {}", shape, bound);
            prop_assert_eq!(&graph, &build(shape, &names(count), seed), "deterministic per seed");
        }
    }

    #[test]
    fn partial_mesh_is_as_regular_as_count_times_k_allows(
        count in 1usize..80, k in 1usize..20, seed in any::<u64>()
    ) {
        let graph = build(Shape::PartialMesh { k }, &names(count), seed);
        assert_sound(&graph);
        assert_partial_mesh_degrees(&graph, k);
    }

    #[test]
    fn repair_after_random_removals_keeps_every_invariant(
        count in 2usize..70, k in 2usize..12, removals in 1usize..20, seed in any::<u64>()
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let all = names(count);
        for shape in all_shapes(k) {
            let topology = Topology::new(shape, &all, seed);
            let mut live: BTreeSet<String> = all.iter().cloned().collect();
            for _ in 0..removals.min(count - 1) {
                let gone = live.iter().nth(rng.gen_range(0..live.len())).unwrap().clone();
                live.remove(&gone);
                let graph = topology.overlay_for(&live);
                prop_assert_eq!(graph.node_count(), live.len());
                assert_sound(&graph);
                if let Shape::PartialMesh { k } = shape {
                    assert_partial_mesh_degrees(&graph, k);
                }
            }
            let everyone: BTreeSet<String> = all.iter().cloned().collect();
            prop_assert_eq!(&topology.overlay_for(&everyone), topology.base(), "rejoin restores the base");
        }
    }

    #[test]
    fn joining_nodes_are_linked_in_with_few_changes(
        count in 3usize..60, k in 2usize..10, joins in 1usize..6, seed in any::<u64>()
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut graph = build(Shape::PartialMesh { k }, &names(count), seed);
        for join in 0..joins {
            let before = graph.clone();
            graph = repair::add_node(&before, &format!("z{join}"), k, &mut rng);
            assert_sound(&graph);
            assert_partial_mesh_degrees(&graph, k);
            // A join needs about k new links, each made by splitting an edge.
            let changed = graph.diff_from(&before).changed();
            prop_assert!(changed <= 3 * k + 6, "{} edges changed for one join at k {}", changed, k);
        }
    }
}

#[test]
fn overlay_for_a_live_set_does_not_depend_on_the_order_nodes_left() {
    let all = names(40);
    let topology = Topology::new(Shape::PartialMesh { k: 5 }, &all, 9);
    let live: BTreeSet<String> = all.iter().skip(3).cloned().collect();
    let again: BTreeSet<String> = all.iter().rev().take(37).cloned().collect();
    assert_eq!(topology.overlay_for(&live), topology.overlay_for(&again));
}

#[test]
fn one_failure_in_a_partial_mesh_changes_few_edges_between_survivors() {
    let all = names(100);
    let topology = Topology::new(Shape::PartialMesh { k: 20 }, &all, 1);
    let mut live: BTreeSet<String> = all.iter().cloned().collect();
    live.remove("n0042");
    let repaired = topology.overlay_for(&live);
    let diff = repaired.diff_from(topology.base());
    let lost = diff
        .removed
        .iter()
        .filter(|(a, b)| a == "n0042" || b == "n0042")
        .count();
    assert_eq!(lost, 20);
    // Twenty orphaned links pair up into ten new edges; a few more moves
    // are allowed where two orphans were already linked.
    assert!(diff.added.len() <= 14, "{diff:?}");
    assert!(diff.removed.len() - lost <= 4, "{diff:?}");
}

/// The competitor's k-neighbours algorithm as its report describes it:
/// every agent links to random peers with spare degree, components are
/// bridged by DFS, then degrees are rebalanced.
fn competitor_mesh(count: usize, k: usize, seed: u64) -> Overlay {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut graph = Overlay::with_nodes(names(count));
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut rng);
    for &node in &order {
        let mut peers: Vec<usize> = (0..count)
            .filter(|&peer| peer != node && graph.degree(peer) < k && !graph.has_edge(node, peer))
            .collect();
        peers.shuffle(&mut rng);
        for peer in peers {
            if graph.degree(node) >= k {
                break;
            }
            graph.add_edge(node, peer);
        }
    }
    let (label, components) = graph.components();
    for component in 1..components {
        let a = label.iter().position(|&l| l == component - 1).unwrap();
        let b = label.iter().position(|&l| l == component).unwrap();
        graph.add_edge(a, b);
    }
    graph
}

#[test]
fn partial_mesh_beats_the_competitor_on_diameter_and_average_path() {
    let (count, k) = (100, 20);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for seed in 0..5 {
        let mesh = GraphMetrics::of(&build(Shape::PartialMesh { k }, &names(count), seed));
        assert_eq!((mesh.degree_min, mesh.degree_max), (20, 20));
        assert!(mesh.diameter <= 3, "diameter {}", mesh.diameter);
        assert!(
            mesh.avg_path_length <= 2.0,
            "average {}",
            mesh.avg_path_length
        );
        ours.push(mesh.avg_path_length);
        theirs.push(GraphMetrics::of(&competitor_mesh(count, k, seed)).avg_path_length);
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    // The competitor published diameter 5 and average 2.8 for this case;
    // its algorithm as described does better than that here, and ours
    // still does better than both.
    assert!(
        mean(&ours) < mean(&theirs),
        "ours {ours:?}, theirs {theirs:?}"
    );
    assert!(mean(&ours) < 2.8);
}

#[test]
fn metrics_of_known_graphs() {
    let ring = build(Shape::Ring, &names(6), 0);
    let metrics = GraphMetrics::of(&ring);
    assert_eq!(
        (metrics.edges, metrics.diameter, metrics.components),
        (6, 3, 1)
    );
    assert!((metrics.avg_path_length - 1.8).abs() < 1e-9, "{metrics:?}");
    assert_eq!(metrics.clustering, 0.0);
    let full = GraphMetrics::of(&build(Shape::FullMesh, &names(5), 0));
    assert_eq!((full.edges, full.diameter, full.clustering), (10, 1, 1.0));
    let mut split = Overlay::with_nodes(names(4));
    split.add_edge(0, 1);
    split.add_edge(2, 3);
    assert_eq!(GraphMetrics::of(&split).components, 2);
}

#[test]
fn exports_name_every_node_and_edge() {
    let graph = build(Shape::Ring, &names(3), 0);
    let dot = export::to_dot(&graph, "ring");
    assert!(dot.starts_with("graph \"ring\" {"));
    assert_eq!(dot.matches(" -- ").count(), 3);
    let json: serde_json::Value = serde_json::from_str(&export::to_json(&graph, "ring")).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(json["edges"].as_array().unwrap().len(), 3);
    assert_eq!(json["metrics"]["diameter"], 1);
}

#[test]
fn k_rule_follows_log_n_within_bounds_and_reacts_to_latency() {
    let rule = KRule::default();
    assert_eq!(rule.k_for(100), 10);
    assert_eq!(rule.k_for(10), 5);
    assert_eq!(rule.k_for(3), 2, "never more than n - 1");
    assert_eq!(rule.k_for(1_000_000), 28);
    assert_eq!(rule.adjust_for_latency(10, 12.0, 10.0), 11);
    assert_eq!(rule.adjust_for_latency(10, 4.0, 10.0), 9);
    assert_eq!(rule.adjust_for_latency(10, 7.0, 10.0), 10);
    assert_eq!(rule.adjust_for_latency(32, 99.0, 10.0), 32);
    assert_eq!(rule.adjust_for_latency(3, 0.1, 10.0), 3);
}
