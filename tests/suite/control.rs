//! The Raft control plane over real QUIC in one process: the key-value API
//! through every replica, a killed leader replica, a replica far behind
//! catching up from a snapshot, every node restarted from its raft-engine
//! log, concurrent client histories checked for linearizability, and the
//! `agentmesh kv` and `agentmesh status` commands.

#[allow(dead_code)]
use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use agentmesh::clients::control::ControlClient;
use agentmesh::cluster::{Departure, LocalCluster};
use agentmesh::config::ClusterConfig;
use agentmesh::protocols::control::ReplicaStatus;
use agentmesh::sim::linearizability;
use agentmesh::sim::raft::{Call, CallKind};

use common::{agentmesh, free_port};

/// Starts a cluster from the config text `make` writes (fresh ports each
/// time), again when a client port it picked was taken meanwhile.
async fn start_cluster(make: impl Fn() -> String) -> (LocalCluster, ClusterConfig, String) {
    for _ in 0..5 {
        let text = make();
        let config = parse(&text);
        match LocalCluster::start(config.clone()).await {
            Ok(cluster) => return (cluster, config, text),
            Err(error) if error.to_string().contains("in use") => continue,
            Err(error) => panic!("{error}"),
        }
    }
    panic!("no free client ports in five tries");
}

/// Three replica nodes, a standby replica (n4) and a plain node (n5),
/// logs under `data`.
fn config_text(data: &Path, extra: &str) -> String {
    let mut text = String::from("[cluster]\nname = \"control\"\nseed = 3\n");
    for (index, id) in ["n1", "n2", "n3", "n4", "n5"].iter().enumerate() {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
        if index < 4 {
            text += &format!("client_listen = \"127.0.0.1:{}\"\n", free_port());
        }
    }
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\nstandby = [\"n4\"]\ndata_dir = {:?}\nrequest_timeout_ms = 1000\n{extra}",
        data.display()
    );
    text
}

fn parse(text: &str) -> ClusterConfig {
    agentmesh::config::parse(text, "control.toml", Path::new(".")).unwrap()
}

async fn statuses(client: &mut ControlClient) -> Vec<ReplicaStatus> {
    client
        .statuses()
        .await
        .into_iter()
        .filter_map(|(_, status)| status.ok())
        .collect()
}

/// Waits until a replica is leader and every member follows it; returns it.
async fn settled_leader(client: &mut ControlClient) -> ReplicaStatus {
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        let statuses = statuses(client).await;
        let leader = statuses.iter().find(|status| status.role == "leader");
        if let Some(leader) = leader {
            let members: Vec<&ReplicaStatus> = statuses
                .iter()
                .filter(|status| {
                    leader.voters.contains(&status.node) || leader.learners.contains(&status.node)
                })
                .collect();
            let agreed = members
                .iter()
                .all(|status| status.leader.as_deref() == Some(&leader.node));
            if members.len() == leader.voters.len() + leader.learners.len() && agreed {
                return leader.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no settled leader: {:?}",
            client.statuses().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_killed_leader_replica_and_histories_are_linearizable() {
    let data = tempfile::tempdir().unwrap();
    let (cluster, config, _) = start_cluster(|| config_text(data.path(), "")).await;
    let mut client = ControlClient::from_config(&config).unwrap();
    let leader = settled_leader(&mut client).await;
    for index in 0..50 {
        client
            .put(&format!("k{index}"), format!("v{index}").into_bytes())
            .await
            .unwrap();
    }
    assert_eq!(client.get("k7").await.unwrap(), Some(b"v7".to_vec()));
    assert_eq!(client.get("absent").await.unwrap(), None);
    assert!(client.delete("k49").await.unwrap());
    assert!(!client.delete("k49").await.unwrap(), "deleted twice");

    // Kill the leader's replica actor; its supervisor restarts it from its
    // log, and the group elects a leader in a later term.
    let replica = cluster
        .node(&leader.node)
        .unwrap()
        .parts
        .shared
        .mailboxes
        .replica
        .get();
    replica.expect("the leader runs a replica").kill();
    let history = concurrent_history(&config, 4, 40).await;
    let after = settled_leader(&mut client).await;
    assert!(after.term > leader.term, "{leader:?} then {after:?}");
    for index in 0..49 {
        let value = client.get(&format!("k{index}")).await.unwrap();
        assert_eq!(value, Some(format!("v{index}").into_bytes()), "k{index}");
    }
    let answered = history
        .iter()
        .filter(|call| call.answered_ms.is_some())
        .count();
    assert!(answered > 0, "some calls were answered");
    linearizability::check(&history).unwrap_or_else(|error| panic!("{error}: {history:?}"));
    let restarts: u64 = cluster.counters().actor_restarts;
    assert!(restarts >= 1, "the killed replica was restarted");
    cluster.shutdown().await;
}

/// `clients` clients each put and get `calls` times on a few shared keys
/// at once; returns every call with its times (microseconds since the
/// start) and what it saw.
async fn concurrent_history(config: &ClusterConfig, clients: u64, calls: u64) -> Vec<Call> {
    let started = Instant::now();
    let tasks = (0..clients).map(|client_index| {
        let config = config.clone();
        tokio::spawn(async move {
            let mut client = ControlClient::from_config(&config).unwrap();
            let mut history = Vec::new();
            for call in 0..calls {
                let key = format!("shared{}", call % 3);
                let called = started.elapsed().as_micros() as u64;
                let (kind, answered) = if (call + client_index) % 2 == 0 {
                    let value = format!("{client_index}-{call}").into_bytes();
                    let done = client.put(&key, value.clone()).await.is_ok();
                    (CallKind::Put(value), done)
                } else {
                    match client.get(&key).await {
                        Ok(value) => (CallKind::Get(Some(value)), true),
                        Err(_) => (CallKind::Get(None), false),
                    }
                };
                history.push(Call {
                    client: client_index,
                    key,
                    called_ms: called,
                    answered_ms: answered.then(|| started.elapsed().as_micros() as u64),
                    kind,
                });
            }
            history
        })
    });
    let mut history = Vec::new();
    for task in futures::future::join_all(tasks).await {
        history.extend(task.unwrap());
    }
    history
}

/// `bytes` bytes that zstd cannot shrink, different for each `seed`.
fn noise(seed: u64, bytes: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_far_behind_gets_a_snapshot_and_restarted_nodes_keep_their_state() {
    let data = tempfile::tempdir().unwrap();
    let (mut cluster, config, _) =
        start_cluster(|| config_text(data.path(), "compact_every = 40\n")).await;
    let mut client = ControlClient::from_config(&config).unwrap();
    let leader = settled_leader(&mut client).await;
    let behind = ["n1", "n2", "n3"]
        .into_iter()
        .find(|node| *node != leader.node)
        .unwrap();
    assert!(cluster.stop_node(behind, Departure::Crash).await);
    // Values that do not compress make the snapshot large enough to cross
    // on several streams at once.
    for index in 0..6 {
        client
            .put(&format!("blob{index}"), noise(index, 1 << 20))
            .await
            .unwrap();
    }
    for index in 0..300 {
        client
            .put(&format!("key{}", index % 120), vec![index as u8; 100])
            .await
            .unwrap();
    }
    cluster.restart_node(behind).await.unwrap();
    // It catches up: from a snapshot, since the others compacted the log.
    let deadline = Instant::now() + common::WAIT_MAX;
    let caught_up = loop {
        let statuses = statuses(&mut client).await;
        let commit = statuses
            .iter()
            .map(|status| status.commit_index)
            .max()
            .unwrap_or(0);
        if let Some(status) = statuses.iter().find(|status| status.node == behind) {
            if status.applied_index >= commit && commit > 300 {
                break status.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{behind} never caught up: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(caught_up.snapshot_index > 0, "{caught_up:?}");
    assert_eq!(caught_up.keys, 126, "{caught_up:?}");
    let counters = &cluster.node(behind).unwrap().parts.shared.metrics.counters;
    let installed = counters
        .raft_snapshot_bytes_installed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(installed > 5 << 20, "{installed} snapshot bytes installed");

    // Every node stops; started again from their logs, they hold it all.
    let ids: Vec<String> = cluster.nodes.iter().map(|node| node.id.clone()).collect();
    cluster.stop_nodes(&ids, Departure::Leave).await;
    for id in &ids {
        cluster.restart_node(id).await.unwrap();
    }
    settled_leader(&mut client).await;
    for index in 180..300 {
        let value = client.get(&format!("key{}", index % 120)).await.unwrap();
        assert_eq!(value, Some(vec![index as u8; 100]), "key{}", index % 120);
    }
    // The replica that caught up from the snapshot answers for the blobs.
    client.prefer(behind);
    for index in 0..6 {
        let value = client.get(&format!("blob{index}")).await.unwrap();
        assert!(value == Some(noise(index, 1 << 20)), "blob{index}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_joins_as_a_learner_is_promoted_and_a_voter_can_leave() {
    let data = tempfile::tempdir().unwrap();
    let (cluster, config, _) = start_cluster(|| config_text(data.path(), "")).await;
    let mut client = ControlClient::from_config(&config).unwrap();
    settled_leader(&mut client).await;
    for index in 0..100 {
        client
            .put(&format!("before{index}"), vec![1; 64])
            .await
            .unwrap();
    }
    let error = client.change_membership("n5", true).await.unwrap_err();
    assert!(error.to_string().contains("runs no replica"), "{error}");
    client.change_membership("n4", true).await.unwrap();
    let error = client.change_membership("n4", true).await.unwrap_err();
    assert!(
        error.to_string().contains("already in the group")
            || error.to_string().contains("under way"),
        "{error}"
    );
    // The leader promotes the learner once it has caught up.
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        let leader = settled_leader(&mut client).await;
        if leader.voters.contains(&"n4".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n4 never became a voter: {leader:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.change_membership("n1", false).await.unwrap();
    // The answer comes once the removal is applied where it was asked; the
    // leader may apply it a moment later.
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        let leader = settled_leader(&mut client).await;
        if leader.voters == ["n2", "n3", "n4"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n1 was never removed: {leader:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.put("after", b"removal".to_vec()).await.unwrap();
    assert_eq!(client.get("before42").await.unwrap(), Some(vec![1; 64]));
    let n4 = statuses(&mut client)
        .await
        .into_iter()
        .find(|status| status.node == "n4")
        .unwrap();
    assert_eq!(n4.keys, 101, "the new voter holds the whole state: {n4:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_and_status_commands_work_and_say_when_a_quorum_is_missing() {
    let data = tempfile::tempdir().unwrap();
    let (mut cluster, config, text) = start_cluster(|| config_text(data.path(), "")).await;
    let path = data.path().join("cluster.toml");
    std::fs::write(&path, &text).unwrap();
    settled_leader(&mut ControlClient::from_config(&config).unwrap()).await;
    let path_for = |arguments: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || agentmesh(arguments, &path))
    };
    let (code, _, stderr) = path_for(&["kv", "put", "colour", "blue"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = path_for(&["kv", "get", "colour"]).await.unwrap();
    assert_eq!((code, stdout.as_str()), (Some(0), "blue\n"), "{stderr}");
    let (code, _, stderr) = path_for(&["kv", "get", "size"]).await.unwrap();
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no key \"size\""), "{stderr}");
    let (code, stdout, stderr) = path_for(&["status"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("leader") && stdout.contains("n1,n2,n3"),
        "{stdout}"
    );
    let (code, _, stderr) = path_for(&["kv", "cas", "colour", "red", "green"])
        .await
        .unwrap();
    assert_eq!(code, Some(3), "it holds blue: {stderr}");
    let (code, _, stderr) = path_for(&["kv", "cas", "colour", "blue", "green"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, _) = path_for(&["kv", "cas", "shape", "x", "round"])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "absent");
    let (code, _, _) = path_for(&["kv", "cas", "shape", "x", "round", "--create"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "created");
    let (code, _, _) = path_for(&["kv", "delete", "colour"]).await.unwrap();
    assert_eq!(code, Some(0));
    let (code, _, _) = path_for(&["kv", "delete", "colour"]).await.unwrap();
    assert_eq!(code, Some(1), "already deleted");

    // Two of three replicas gone: no majority, and the command says so.
    cluster
        .stop_nodes(&["n1".to_string(), "n2".to_string()], Departure::Crash)
        .await;
    let (code, _, stderr) = path_for(&["kv", "put", "colour", "red"]).await.unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("majority"), "{stderr}");
    assert!(stderr.contains("n1: cannot connect"), "{stderr}");
    let (code, stdout, _) = path_for(&["status"]).await.unwrap();
    assert_eq!(code, Some(2), "no replica knows a leader: {stdout}");
    assert!(stdout.contains("n1       unreachable"), "{stdout}");
    cluster.shutdown().await;
}

#[test]
fn a_control_section_with_errors_is_refused_naming_each_key() {
    let text = "[cluster]\nname = \"t\"\n[[nodes]]\nid = \"a\"\nlisten = \"127.0.0.1:0\"\nclient_listen = \"10.0.0.1:7481\"\n[[nodes]]\nid = \"b\"\nlisten = \"127.0.0.1:0\"\nclient_listen = \"127.0.0.1:7482\"\n[control]\nreplicas = [\"a\", \"a\", \"zz\"]\nelection_ticks = 2\nheartbeat_ticks = 4\n";
    let error = agentmesh::config::parse(text, "bad.toml", Path::new("."))
        .unwrap_err()
        .to_string();
    for expected in [
        "control.replicas[1]: \"a\" is named twice",
        "control.replicas[2]: \"zz\" is not the id of a [[nodes]] entry",
        "nodes[0].client_listen: 10.0.0.1:7481 is not a loopback address",
        "control.election_ticks: 2 is outside the allowed range 5 to 10000",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
}

#[test]
fn a_node_process_holding_a_replica_needs_a_data_dir() {
    let text = "[cluster]\nname = \"t\"\n[[nodes]]\nid = \"a\"\nlisten = \"127.0.0.1:7999\"\n[control]\nreplicas = [\"a\"]\n";
    let config = agentmesh::config::parse(text, "t.toml", Path::new(".")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let error = runtime
        .block_on(agentmesh::cluster::start_single(config, "a", None))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("set control.data_dir"), "{error}");
}

#[test]
fn up_reports_the_control_plane_in_its_summary() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("cluster.toml");
    std::fs::write(&path, config_text(data.path(), "")).unwrap();
    let (code, stdout, stderr) = agentmesh(&["up", "--duration", "3s", "--json"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let control = &summary["control"];
    assert_eq!(
        control["voters"],
        serde_json::json!(["n1", "n2", "n3"]),
        "{control}"
    );
    assert!(
        control["leader"].is_string(),
        "a leader by the end of the run: {control}"
    );
    assert_eq!(control["fsync"], true);
}

/// Seven nodes on a ring, three of them replicas: nodes n4 to n7 hold no
/// replica and n5 has none as a neighbour.
fn ring_config(data: &Path) -> String {
    let mut text = String::from("[cluster]\nname = \"overlay\"\nseed = 5\n");
    for index in 1..=7 {
        text += &format!("[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\n");
        if index <= 3 {
            text += &format!("client_listen = \"127.0.0.1:{}\"\n", free_port());
        }
    }
    text += "[topology]\nkind = \"ring\"\n";
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\ndata_dir = {:?}\n",
        data.display()
    );
    text
}

/// Whether every node of `cluster` but those `down` applies the same
/// committed overlay, which leaves out exactly `down`, from an epoch past
/// `after`, and holds the neighbours that overlay gives it.
fn overlay_agreed(cluster: &LocalCluster, down: &[&str], after: u64) -> Option<u64> {
    let down: std::collections::BTreeSet<String> = down.iter().map(|n| n.to_string()).collect();
    let mut epochs = std::collections::BTreeSet::new();
    for node in cluster.nodes.iter().filter(|node| !down.contains(&node.id)) {
        let context = &node.parts;
        let commit = context.overlay.committed_overlay.read().unwrap().clone();
        let members = context
            .shared
            .directory
            .roster
            .node_names
            .iter()
            .filter(|name| !down.contains(*name))
            .cloned()
            .collect();
        let expected = context.shared.directory.topology.overlay_for(&members);
        let neighbours = context.overlay.neighbours.read().unwrap().clone();
        if commit.down != down || neighbours != expected.neighbours_of(&node.id) {
            return None;
        }
        epochs.insert(commit.epoch);
    }
    let epoch = *epochs.first()?;
    (epochs.len() == 1 && epoch > after).then_some(epoch)
}

async fn wait_for_overlay(cluster: &LocalCluster, down: &[&str], after: u64) -> u64 {
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        if let Some(epoch) = overlay_agreed(cluster, down, after) {
            return epoch;
        }
        let views: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                (
                    node.id.clone(),
                    node.parts.overlay.committed_overlay.read().unwrap().clone(),
                )
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on an overlay without {down:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_applies_the_overlay_the_control_plane_commits() {
    let data = tempfile::tempdir().unwrap();
    let (mut cluster, config, _) = start_cluster(|| ring_config(data.path())).await;
    let mut client = ControlClient::from_config(&config).unwrap();
    settled_leader(&mut client).await;

    // A node without a replica crashes: the leader's node proposes the
    // overlay without it, and every node, replica or not, applies it.
    assert!(cluster.stop_node("n5", Departure::Crash).await);
    let without = wait_for_overlay(&cluster, &["n5"], 0).await;
    let status = settled_leader(&mut client).await;
    assert_eq!(status.overlay_down, vec!["n5".to_string()], "{status:?}");
    assert!(status.overlay_epoch >= without, "{status:?}");

    // It comes back: a later epoch takes it in again, on every node.
    cluster.restart_node("n5").await.unwrap();
    let with = wait_for_overlay(&cluster, &[], without).await;

    // The leader's own node crashes: the next leader's node proposes.
    let leader = settled_leader(&mut client).await;
    let leader_node = leader.node.clone();
    assert!(cluster.stop_node(&leader_node, Departure::Crash).await);
    wait_for_overlay(&cluster, &[leader_node.as_str()], with).await;
    let plain = cluster.node("n6").unwrap();
    let counters = &plain.parts.shared.metrics.counters;
    let applied = counters
        .overlay_commits_applied
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(applied >= 3, "n6 applied {applied} committed overlays");
    let proposals: u64 = cluster.counters().overlay_proposals;
    assert!(proposals >= 1, "{proposals} overlay proposals");
    cluster.shutdown().await;
}
