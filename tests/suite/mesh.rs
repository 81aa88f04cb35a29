//! Twenty nodes in a partial mesh (k = 4) over real QUIC in this process:
//! multi-hop delivery between every ordered pair exactly once, then one
//! node stops, the overlay repairs, routes converge, and every message
//! acknowledged is delivered exactly once. And rate limits refuse one
//! sender while another goes on. Waits are bounded; nothing asserts speed.

use std::collections::HashMap;

use agentmesh::actors::messages::Receipt;
use agentmesh::actors::router::send_with_receipt;
use agentmesh::cluster::{node_links_up, Departure, LocalCluster};
use agentmesh::config::{self, ClusterConfig};
use agentmesh::protocols::mesh::SendError;
use tokio::sync::oneshot;

use crate::common;
use common::{wait_until, WAIT_MAX};
const NODES: usize = 20;
const STOPPED: &str = "n07";

fn config(extra: &str) -> ClusterConfig {
    let mut text = String::from("[cluster]\nname = \"mesh\"\nseed = 11\n");
    for index in 0..NODES {
        text += &format!("[[nodes]]\nid = \"n{index:02}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[topology]\nkind = \"partial-mesh\"\nk = 4\n";
    text += "[membership]\nheartbeat_interval_ms = 100\n";
    text += "[delivery]\nretransmit_timeout_ms = 200\nretries_max = 12\n";
    text += extra;
    text += &format!("[[agents]]\nname = \"sink-{{i}}\"\ncount = {NODES}\nbehaviour = \"sink\"\n");
    config::parse(&text, "mesh.toml", std::path::Path::new(".")).unwrap()
}

fn sink(index: usize) -> String {
    format!("sink-{index}")
}

fn node_of(index: usize) -> String {
    format!("n{index:02}")
}

/// Sends one message from every listed sink to every other, each with a
/// payload naming the round and the pair. Returns the receipts.
fn send_all_pairs(
    cluster: &LocalCluster,
    indices: &[usize],
    round: &str,
) -> Vec<(String, oneshot::Receiver<Receipt>)> {
    let mut receipts = Vec::new();
    for &from in indices {
        let node = cluster.node(&node_of(from)).expect("live node");
        for &to in indices.iter().filter(|&&to| to != from) {
            let payload = format!("{round}:{from}->{to}");
            let receipt = send_with_receipt(
                &node.parts.shared,
                &node.parts.data_path,
                &sink(from),
                &sink(to),
                payload.clone().into_bytes(),
            )
            .expect("the router accepts the message");
            receipts.push((payload, receipt));
        }
    }
    receipts
}

/// How often each payload was recorded by any sink on a live node.
fn recorded(cluster: &LocalCluster) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for node in &cluster.nodes {
        for entry in node.parts.data_path.agent_stats.iter() {
            for (_, payload) in entry.value().recorded() {
                *seen.entry(String::from_utf8(payload).unwrap()).or_insert(0) += 1;
            }
        }
    }
    seen
}

async fn outcomes(receipts: Vec<(String, oneshot::Receiver<Receipt>)>) -> Vec<(String, Receipt)> {
    let mut outcomes = Vec::new();
    for (payload, receipt) in receipts {
        let outcome = tokio::time::timeout(WAIT_MAX, receipt)
            .await
            .unwrap_or_else(|_| panic!("no outcome for {payload} in time"))
            .unwrap_or_else(|_| panic!("the router dropped the receipt of {payload}"));
        outcomes.push((payload, outcome));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_deliver_every_pair_exactly_once_and_survive_a_node_leaving() {
    every_pair_exactly_once_then_lose_a_node(Departure::Leave).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_deliver_every_pair_exactly_once_and_survive_a_node_crashing() {
    every_pair_exactly_once_then_lose_a_node(Departure::Crash).await;
}

async fn every_pair_exactly_once_then_lose_a_node(departure: Departure) {
    let mut cluster = LocalCluster::start(config("")).await.unwrap();
    wait_until("every overlay link is up", || cluster.all_links_up()).await;
    for node in &cluster.nodes {
        let degree = node.parts.overlay.neighbours.read().unwrap().len();
        assert_eq!(
            degree, 4,
            "{} holds connections to its overlay neighbours only",
            node.id
        );
        assert_eq!(node.parts.shared.peers.connected().len(), 4, "{}", node.id);
    }

    let everyone: Vec<usize> = (0..NODES).collect();
    for (payload, outcome) in outcomes(send_all_pairs(&cluster, &everyone, "one")).await {
        assert_eq!(outcome, Ok(()), "{payload}");
    }
    let seen = recorded(&cluster);
    assert_eq!(
        seen.len(),
        NODES * (NODES - 1),
        "every ordered pair arrived"
    );
    assert!(
        seen.values().all(|&count| count == 1),
        "exactly once: {seen:?}"
    );
    let totals = cluster.totals();
    let multi_hop: u64 = cluster.hops().iter().skip(2).sum();
    assert!(multi_hop > 0, "some messages travelled more than one hop");
    assert_eq!(totals.counters.lost_retries_exhausted, 0);

    // Stop one node and, at once, send between every pair of survivors;
    // some of these are routed through the stopped node.
    assert!(cluster.stop_node(STOPPED, departure).await);
    let survivors: Vec<usize> = everyone
        .iter()
        .copied()
        .filter(|&i| node_of(i) != STOPPED)
        .collect();
    let receipts = send_all_pairs(&cluster, &survivors, "two");
    wait_until(
        "every survivor dropped the stopped node from its overlay",
        || {
            cluster.nodes.iter().all(|node| {
                let view = node.parts.overlay.routing_view();
                !view.frame.overlay.contains(STOPPED)
                    && view.frame.overlay.node_count() == NODES - 1
            })
        },
    )
    .await;
    wait_until("the repaired overlay's links are all up", || {
        cluster.nodes.iter().all(node_links_up)
    })
    .await;
    for node in &cluster.nodes {
        let view = node.parts.overlay.routing_view();
        let table = view.table.as_ref().expect("a live node routes");
        let reachable = table.reachable();
        assert_eq!(
            reachable,
            NODES - 2,
            "{} reaches every other survivor",
            node.id
        );
        let degree = node.parts.overlay.neighbours.read().unwrap().len();
        assert!((4..=5).contains(&degree), "{} has degree {degree}", node.id);
    }

    let outcomes = outcomes(receipts).await;
    let seen = recorded(&cluster);
    for (payload, outcome) in &outcomes {
        assert_eq!(*outcome, Ok(()), "{payload} reached a live destination");
        assert_eq!(
            seen.get(payload),
            Some(&1),
            "{payload} acknowledged, so delivered once"
        );
    }
    assert!(
        seen.values().all(|&count| count == 1),
        "no duplicates anywhere"
    );
    let counters = cluster.totals().counters;
    eprintln!(
        "after the {departure:?}: {} retransmissions, drops peer down {} / no route {} / queue full {}, {} duplicates dropped, hops {:?}",
        counters.retransmissions,
        counters.dropped_peer_down,
        counters.dropped_no_route,
        counters.dropped_queue_full,
        counters.dropped_duplicate,
        cluster.hops()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_past_its_rate_limit_is_refused_and_others_are_not() {
    // One token per 1000 s after a burst of 5: the limit, not the clock,
    // decides what passes.
    let cluster = LocalCluster::start(config("source_rate_max = 0.001\nsource_burst_max = 5\n"))
        .await
        .unwrap();
    wait_until("every overlay link is up", || cluster.all_links_up()).await;
    let node = cluster.node("n00").unwrap();
    let send = |from: &str| {
        send_with_receipt(
            &node.parts.shared,
            &node.parts.data_path,
            from,
            "sink-3",
            b"x".to_vec(),
        )
    };
    let results: Vec<_> = (0..20).map(|_| send("sink-0")).collect();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 5);
    for refused in results.iter().skip(5) {
        assert!(matches!(refused, Err(SendError::RateLimited(agent)) if agent == "sink-0"));
    }
    let other: Vec<_> = (0..5).map(|_| send("sink-1")).collect();
    assert!(
        other.iter().all(Result::is_ok),
        "another sender is unaffected"
    );
    for receipt in results.into_iter().chain(other).flatten() {
        assert_eq!(receipt.await.unwrap(), Ok(()));
    }
    assert_eq!(cluster.totals().counters.refused_rate_limited, 15);
    cluster.shutdown().await;
}

#[test]
fn up_with_kill_stops_nodes_mid_run_and_reports_convergence() {
    let mut text = String::from("[cluster]\nname = \"kill\"\nseed = 5\n");
    for index in 0..8 {
        text += &format!("[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[topology]\nkind = \"partial-mesh\"\nk = 3\n";
    text += "[[agents]]\nname = \"storm-{i}\"\ncount = 8\nbehaviour = \"storm\"\nrate = 20\ntargets = [\"storm-*\"]\n";
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("kill.toml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args([
            "up",
            "--duration",
            "3s",
            "--kill",
            "25",
            "--json",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let kill = &summary["kill"];
    assert_eq!(kill["killed"].as_array().unwrap().len(), 2, "{kill}");
    assert!(kill["routes_converged_ms"].is_number(), "{kill}");
    assert_eq!(summary["nodes"], 6);
    assert!(summary["acknowledged"].as_u64().unwrap() > 0);
}
