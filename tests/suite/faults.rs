//! The fault-injecting transport over real QUIC in one process: lossy,
//! duplicating, reordering, delaying links still deliver every message
//! exactly once; a link cut one way in the config never connects, and
//! messages go around it; a link cut at run time, then healed, carries
//! traffic again. And `[faults]` errors name their key.

#[allow(dead_code)]
use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use agentmesh::actors::router::send_with_receipt;
use agentmesh::cluster::LocalCluster;
use agentmesh::config::{self, ClusterConfig};

const NODES: usize = 4;

fn config_text(faults: &str) -> String {
    let mut text = String::from("[cluster]\nname = \"faults\"\nseed = 5\n");
    for index in 1..=NODES {
        text += &format!("[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += "[membership]\nheartbeat_interval_ms = 100\n";
    text += "[delivery]\nretransmit_timeout_ms = 200\nretries_max = 30\n";
    text += "[supervision]\nagents_start_timeout_ms = 3000\n";
    text += &format!("[[agents]]\nname = \"sink-{{i}}\"\ncount = {NODES}\nbehaviour = \"sink\"\n");
    text + faults
}

fn config(faults: &str) -> ClusterConfig {
    config::parse(
        &config_text(faults),
        "faults.toml",
        std::path::Path::new("."),
    )
    .unwrap()
}

/// Sends `rounds` messages from every sink to every other and waits for
/// each receipt; panics on any that is not "delivered".
async fn send_everywhere(cluster: &LocalCluster, rounds: usize, tag: &str) {
    let mut receipts = Vec::new();
    for round in 0..rounds {
        for from in 0..NODES {
            let node = cluster.node(&format!("n{}", from + 1)).unwrap();
            for to in (0..NODES).filter(|&to| to != from) {
                let payload = format!("{tag}:{round}:{from}->{to}");
                let receipt = send_with_receipt(
                    &node.parts.shared,
                    &node.parts.data_path,
                    &format!("sink-{from}"),
                    &format!("sink-{to}"),
                    payload.clone().into_bytes(),
                )
                .unwrap();
                receipts.push((payload, receipt));
            }
        }
    }
    for (payload, receipt) in receipts {
        let outcome = tokio::time::timeout(common::WAIT_MAX, receipt)
            .await
            .unwrap_or_else(|_| panic!("no receipt for {payload} in time"))
            .unwrap();
        assert_eq!(outcome, Ok(()), "{payload}");
    }
}

/// How often each payload starting with `tag` was consumed.
fn consumed(cluster: &LocalCluster, tag: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for node in &cluster.nodes {
        for entry in node.parts.data_path.agent_stats.iter() {
            for (_, payload) in entry.value().recorded() {
                let payload = String::from_utf8(payload).unwrap();
                if payload.starts_with(tag) {
                    *seen.entry(payload).or_insert(0) += 1;
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_duplicating_reordering_links_deliver_every_message_exactly_once() {
    let faults = "[faults]\nloss = 0.05\nduplicate = 0.05\nreorder = 0.05\ndelay_ms_min = 0\ndelay_ms_max = 3\n";
    let cluster = LocalCluster::start(config(faults)).await.unwrap();
    send_everywhere(&cluster, 20, "lossy").await;
    let seen = consumed(&cluster, "lossy");
    assert_eq!(
        seen.len(),
        20 * NODES * (NODES - 1),
        "every message arrived"
    );
    assert!(
        seen.values().all(|&count| count == 1),
        "exactly once: {seen:?}"
    );
    let counters = &cluster.faults.as_ref().expect("[faults] is set").counters;
    for (name, counter) in [
        ("lost", &counters.dropped_loss),
        ("duplicated", &counters.duplicated),
        ("delayed", &counters.delayed),
    ] {
        assert!(
            counter.load(Ordering::Relaxed) > 0,
            "no datagram was {name}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_one_way_never_connects_and_messages_go_around_it() {
    let cut = "[faults]\n[[faults.links]]\nfrom = \"n1\"\nto = \"n2\"\ncut = true\n";
    let cluster = LocalCluster::start(config(cut)).await.unwrap();
    send_everywhere(&cluster, 3, "around").await;
    let n1 = cluster.node("n1").unwrap();
    assert!(
        !n1.parts.shared.peers.is_connected("n2"),
        "the cut link connected"
    );
    assert!(n1.parts.shared.peers.is_connected("n3"));
    let counters = &cluster.faults.as_ref().unwrap().counters;
    assert!(counters.dropped_cut.load(Ordering::Relaxed) > 0);
    let seen = consumed(&cluster, "around");
    assert!(
        seen.values().all(|&count| count == 1),
        "exactly once: {seen:?}"
    );
    let hops = cluster.hops();
    assert!(
        hops.get(2).is_some_and(|&two| two > 0),
        "none went around: {hops:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_at_run_time_gets_its_messages_once_healed() {
    let cluster = LocalCluster::start(config("[faults]\n")).await.unwrap();
    common::wait_until("every link is up", || cluster.all_links_up()).await;
    let net = cluster.faults.clone().unwrap();
    let all: Vec<String> = (1..=NODES).map(|index| format!("n{index}")).collect();
    net.partition(&all[..1], &all);
    assert_eq!(net.cut_links().len(), 2 * (NODES - 1));
    // Sent at once, before n2's failure detector could think n1 dead (a
    // message for a node thought dead is refused at once): it is taken
    // and retransmitted until the cut heals.
    let n2 = cluster.node("n2").unwrap();
    let receipt = send_with_receipt(
        &n2.parts.shared,
        &n2.parts.data_path,
        "sink-1",
        "sink-0",
        b"cut:while-cut".to_vec(),
    )
    .unwrap();
    common::wait_until("n2 sees n1's link go", || {
        !n2.parts.shared.peers.is_connected("n1")
    })
    .await;
    assert!(
        consumed(&cluster, "cut").is_empty(),
        "a message crossed the cut"
    );
    net.heal();
    let outcome = tokio::time::timeout(common::WAIT_MAX, receipt)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Ok(()));
    assert_eq!(consumed(&cluster, "cut").get("cut:while-cut"), Some(&1));
    cluster.shutdown().await;
}

#[test]
fn fault_settings_errors_name_their_key() {
    for (faults, key, reason) in [
        ("[faults]\nloss = 1.5\n", "faults.loss", "chance"),
        (
            "[faults]\ndelay_ms_min = 5\ndelay_ms_max = 2\n",
            "faults.delay_ms_max",
            "range",
        ),
        (
            "[faults]\n[[faults.links]]\nfrom = \"n1\"\nto = \"n9\"\n",
            "faults.links[0].to",
            "n9",
        ),
        (
            "[faults]\n[[faults.links]]\nfrom = \"n1\"\nto = \"n1\"\n",
            "faults.links[0]",
            "both",
        ),
        ("[faults]\nlose = 0.1\n", "faults", "lose"),
    ] {
        let text = config_text(faults);
        let error = config::parse(&text, "faults.toml", std::path::Path::new("."))
            .expect_err(faults)
            .to_string();
        assert!(
            error.contains(key) && error.contains(reason),
            "{faults}: {error}"
        );
    }
}
