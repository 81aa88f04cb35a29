//! PBFT replicas over real QUIC in one process: an equivocating primary is
//! voted out and the group keeps executing, correct replicas execute the
//! same batches, concurrent claims on one key have one winner, and bad
//! `[pbft]` sections are refused naming the key.

#[allow(dead_code)]
use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentmesh::actors::messages::PbftStatus;
use agentmesh::clients::pbft::PbftClient;
use agentmesh::cluster::LocalCluster;
use agentmesh::config::ClusterConfig;
use agentmesh::protocols::pbft::{Operation, OperationResult};

fn config_text(extra: &str) -> String {
    let mut text = String::from("[cluster]\nname = \"pbft\"\nseed = 4\n");
    for id in ["n1", "n2", "n3", "n4"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += "[pbft]\nreplicas = [\"n1\", \"n2\", \"n3\", \"n4\"]\nrequest_timeout_ms = 300\nretransmit_ms = 50\n";
    text += extra;
    text
}

fn parse(text: &str) -> Result<ClusterConfig, String> {
    agentmesh::config::parse(text, "pbft.toml", Path::new(".")).map_err(|e| e.to_string())
}

fn client(cluster: &LocalCluster, seed: u8) -> PbftClient {
    let contexts: Vec<_> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|id| Arc::clone(&cluster.node(id).unwrap().parts))
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    PbftClient::new(
        agentmesh::clients::pbft::ReplicaSet::new(&contexts),
        key,
        Duration::from_millis(500),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_primary_is_voted_out_and_the_group_keeps_executing() {
    let text = config_text("[pbft.behaviours]\nn1 = \"equivocate\"\n");
    let cluster = LocalCluster::start(parse(&text).unwrap()).await.unwrap();
    let tasks = (1..=4u8).map(|seed| {
        let mut client = client(&cluster, seed);
        tokio::spawn(async move {
            let mut results = Vec::new();
            for call in 0..30 {
                let operation = if call == 0 {
                    Operation::Claim {
                        key: "leader".into(),
                        value: vec![seed],
                    }
                } else {
                    Operation::Put {
                        key: format!("k{seed}-{call}"),
                        value: vec![seed; 64],
                    }
                };
                results.push(client.call(operation).await.unwrap());
            }
            results
        })
    });
    let mut winners = 0;
    for task in futures::future::join_all(tasks).await {
        let results = task.unwrap();
        match &results[0] {
            OperationResult::Claimed { won: true, .. } => winners += 1,
            OperationResult::Claimed { won: false, holder } => assert_eq!(holder.len(), 1),
            other => panic!("a claim gave {other:?}"),
        }
        assert!(results[1..].iter().all(|r| *r == OperationResult::Done));
    }
    assert_eq!(winners, 1, "one claim wins");
    // The correct replicas left view 0 and agree on every sequence number.
    let mut logs = Vec::new();
    for id in ["n2", "n3", "n4"] {
        let context = &cluster.node(id).unwrap().parts;
        let (entered, executed) = {
            let log = context.pbft.executed.lock().unwrap();
            let entered: Vec<u64> = log.views_entered.iter().map(|(view, _)| *view).collect();
            (entered, log.executed.clone())
        };
        assert!(!entered.is_empty(), "{id} entered no new view");
        logs.push(executed);
    }
    for (sequence, digest) in &logs[0] {
        for other in &logs[1..] {
            if let Some(theirs) = other.get(sequence) {
                assert_eq!(theirs, digest, "sequence {sequence}");
            }
        }
    }
    let counters = cluster.counters();
    assert!(counters.pbft_view_changes_started >= 3, "{counters:?}");
    assert!(counters.pbft_requests_executed >= 3 * 120, "{counters:?}");
    cluster.shutdown().await;
}

#[test]
fn a_pbft_section_with_errors_is_refused_naming_each_key() {
    let cases = [
        (
            "[pbft.behaviours]\nn1 = \"silent\"\nn2 = \"delay\"\n",
            "pbft.behaviours",
        ),
        ("[pbft.behaviours]\nn1 = \"sneaky\"\n", "pbft.behaviours.n1"),
        ("[pbft.behaviours]\nn9 = \"silent\"\n", "pbft.behaviours.n9"),
        ("batch = \"big\"\n", "pbft.batch"),
        ("batch = 0\n", "pbft.batch"),
        ("window = 4\n", "pbft.window"),
    ];
    for (extra, key) in cases {
        let text = if extra.starts_with("[pbft.") {
            config_text(extra)
        } else {
            config_text("").replace(
                "retransmit_ms = 50\n",
                &format!("retransmit_ms = 50\n{extra}"),
            )
        };
        let error = parse(&text).expect_err(extra);
        assert!(error.contains(key), "{extra}: {error}");
    }
    let three = config_text("").replace(", \"n4\"]", "]");
    assert!(parse(&three).unwrap_err().contains("pbft.replicas"));
    let forced = config_text(
        "beyond_f_allowed = true\n[pbft.behaviours]\nn1 = \"silent\"\nn2 = \"silent\"\n",
    );
    // beyond_f_allowed belongs to [pbft]; written after the table header
    // above it would land in [pbft.behaviours].
    let forced = forced.replace(
        "beyond_f_allowed = true\n[pbft.behaviours]",
        "beyond_f_allowed = true\n\n[pbft.behaviours]",
    );
    assert!(parse(&forced).is_ok(), "{:?}", parse(&forced));
}

async fn executed_by(cluster: &LocalCluster, id: &str) -> Option<u64> {
    let context = &cluster.node(id)?.parts;
    let status = PbftStatus::of(&context.shared, Duration::from_secs(5)).await?;
    Some(status.executed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_comes_back_empty_and_catches_up_while_the_group_goes_on() {
    // Checkpoints every 8 batches, so the restarted replica fetches state.
    let text = config_text("checkpoint_interval = 8\nwindow = 16\n");
    let cluster = LocalCluster::start(parse(&text).unwrap()).await.unwrap();
    let mut writer = client(&cluster, 9);
    for call in 0..20 {
        let put = Operation::Put {
            key: format!("before{call}"),
            value: vec![1],
        };
        writer.call(put).await.unwrap();
    }
    cluster
        .node("n4")
        .unwrap()
        .parts
        .shared
        .mailboxes
        .pbft
        .get()
        .unwrap()
        .kill();
    for call in 0..40 {
        let put = Operation::Put {
            key: format!("after{call}"),
            value: vec![2],
        };
        writer.call(put).await.unwrap();
    }
    let target = executed_by(&cluster, "n1").await.unwrap();
    common::wait_until_async("n4 catches up", || async {
        executed_by(&cluster, "n4")
            .await
            .is_some_and(|executed| executed >= target)
    })
    .await;
    assert!(cluster.counters().actor_restarts >= 1);
    let counters = cluster
        .node("n4")
        .unwrap()
        .parts
        .shared
        .metrics
        .counters
        .values();
    assert!(counters.pbft_states_fetched >= 1, "{counters:?}");
    cluster.shutdown().await;
}
