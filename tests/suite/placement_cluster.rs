//! Planned agents in a running cluster: the leader's placement planner
//! commits the directory, every node runs exactly the planned agents the
//! directory places on it, they move when their node dies and answer
//! calls where they went, and the rules hold in every directory seen.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agentmesh::clients::control::ControlClient;
use agentmesh::cluster::{Departure, LocalCluster};
use agentmesh::config::ClusterConfig;

use crate::common::{self, free_port};

/// Six nodes of two CPUs in three zones, replicas on n1–n3; eight planned
/// agents of one CPU each, spread over the zones, and `primary` kept off
/// `backup`'s node.
fn planned_config(data: &Path) -> String {
    let mut text = String::from("[cluster]\nname = \"planned\"\nseed = 9\n");
    for index in 1..=6 {
        text += &format!(
            "[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\nzone = \"z{}\"\ncapacity = {{ cpu = 2.0 }}\n",
            index % 3
        );
        if index <= 3 {
            text += &format!("client_listen = \"127.0.0.1:{}\"\n", free_port());
        }
    }
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\ndata_dir = {:?}\nrequest_timeout_ms = 1000\n",
        data.display()
    );
    for name in ["primary", "backup", "w1", "w2", "w3", "w4", "w5", "w6"] {
        text += &format!(
            "[[agents]]\nname = \"{name}\"\nbehaviour = \"echo\"\nplacement = \"planned\"\ngroup = \"service\"\ndemand = {{ cpu = 1.0 }}\nspread = [{{ topology_key = \"zone\", max_skew = 1 }}]\n"
        );
        if name == "primary" {
            text += "anti_affinity = [{ agent = \"backup\" }]\n";
        }
    }
    text
}

async fn start(data: &Path) -> (LocalCluster, ClusterConfig, String) {
    for _ in 0..5 {
        let text = planned_config(data);
        let config = agentmesh::config::parse(&text, "planned.toml", Path::new(".")).unwrap();
        match LocalCluster::start(config.clone()).await {
            Ok(cluster) => return (cluster, config, text),
            Err(error) if error.to_string().contains("in use") => continue,
            Err(error) => panic!("{error}"),
        }
    }
    panic!("no free client ports in five tries");
}

async fn wait_settled(cluster: &LocalCluster, down: &[&str]) -> BTreeMap<String, String> {
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        match cluster.placement_settled() {
            Ok(directory)
                if directory
                    .values()
                    .all(|node| !down.contains(&node.as_str())) =>
            {
                return directory;
            }
            Ok(directory) => assert!(
                Instant::now() < deadline,
                "still on {down:?}: {directory:?}"
            ),
            Err(why) => assert!(Instant::now() < deadline, "never settled: {why}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rules: at most two agents per node, `primary` and `backup` apart,
/// and zones within one agent of each other over the up nodes' zones.
fn assert_rules(directory: &BTreeMap<String, String>, down: &[&str]) {
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_zone: BTreeMap<u32, usize> = BTreeMap::new();
    for node in (1..=6)
        .map(|i| format!("n{i}"))
        .filter(|n| !down.contains(&n.as_str()))
    {
        per_zone
            .entry(node[1..].parse::<u32>().unwrap() % 3)
            .or_default();
    }
    for node in directory.values() {
        *per_node.entry(node).or_default() += 1;
        *per_zone
            .entry(node[1..].parse::<u32>().unwrap() % 3)
            .or_default() += 1;
    }
    assert!(
        per_node.values().all(|&n| n <= 2),
        "capacity: {directory:?}"
    );
    assert_ne!(directory["primary"], directory["backup"], "anti-affinity");
    let (low, high) = (
        per_zone.values().min().unwrap(),
        per_zone.values().max().unwrap(),
    );
    assert!(
        high - low <= 1,
        "spread over zones {per_zone:?}: {directory:?}"
    );
}

async fn call(client: &mut ControlClient, agent: &str) -> Vec<u8> {
    let deadline = Instant::now() + common::WAIT_MAX;
    loop {
        match client.call_agent(agent, b"ping".to_vec(), 1_000).await {
            Ok(body) => return body,
            Err(error) => assert!(Instant::now() < deadline, "{agent} never answered: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_agents_run_where_the_directory_says_and_move_when_their_node_dies() {
    let data = tempfile::tempdir().unwrap();
    let (mut cluster, config, text) = start(data.path()).await;
    let first = wait_settled(&cluster, &[]).await;
    assert_rules(&first, &[]);
    // `agentmesh status` shows the committed directory.
    let path = data.path().join("planned.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || common::agentmesh(&["status"], &path))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("placements: 8 planned agents"), "{out}");
    let primary_line = format!("  {:<8} ", first["primary"]);
    assert!(
        out.lines()
            .any(|line| line.starts_with(&primary_line) && line.contains("primary")),
        "{out}"
    );
    let mut client = ControlClient::for_calls(&config).unwrap();
    assert_eq!(call(&mut client, "primary").await, b"ping");

    // The node holding `primary` crashes: its agents start on the
    // survivors, the others stay, and `primary` answers where it went.
    let victim = first["primary"].clone();
    assert!(cluster.stop_node(&victim, Departure::Crash).await);
    let moved = wait_settled(&cluster, &[&victim]).await;
    assert_rules(&moved, &[&victim]);
    for (agent, node) in &first {
        if node != &victim {
            assert_eq!(&moved[agent], node, "{agent} had no reason to move");
        }
    }
    assert_eq!(call(&mut client, "primary").await, b"ping");

    // It comes back: the rules still hold, every agent runs once, and
    // the balance moves stay within the budget.
    cluster.restart_node(&victim).await.unwrap();
    let deadline = Instant::now() + common::WAIT_MAX;
    let back = loop {
        let directory = wait_settled(&cluster, &[]).await;
        if directory.values().any(|node| node == &victim) || Instant::now() > deadline {
            break directory;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_rules(&back, &[]);
    assert!(
        back.values().any(|node| node == &victim),
        "{victim} got nothing back: {back:?}"
    );
    let moves = back
        .iter()
        .filter(|(agent, node)| &moved[*agent] != *node)
        .count();
    assert!(moves <= config.placement.migrations_max, "{moves} moves");
    // Each balance move stopped the agent where it was, on a live node.
    let stopped = cluster.counters().placed_agents_stopped;
    assert!(
        stopped >= moves as u64,
        "{stopped} stopped for {moves} moves"
    );
    cluster.shutdown().await;
}
