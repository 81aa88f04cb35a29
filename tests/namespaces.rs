//! Nodes on separate hosts: three `agentmesh node` processes, each in a
//! network namespace of its own that this test creates, joined through
//! veth pairs to a bridge in a fourth ("switch") namespace. One host is cut
//! off by bringing its link down, then healed: its peers see it go, it
//! comes back, and every message the storm sent is acknowledged and
//! consumed exactly once. The namespaces are removed afterwards, also when
//! the test fails (by a guard's Drop).
//!
//! Needs root and iproute2. Without them the test says so and passes,
//! except under CI (`CI` set), where it fails.

use std::process::{Command, Stdio};
use std::sync::mpsc;

#[allow(dead_code)]
mod common;
use common::statuses::{connected, forward_statuses, keyed_nodes, wait_for, Latest, Nodes};
const HOSTS: usize = 3;
const PORT: u16 = 7400;
const MESSAGES: u64 = 600;

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("ip: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespaces of one test run; removed on drop.
struct Network {
    switch: String,
    hosts: Vec<String>,
}

impl Network {
    fn address(host: usize) -> String {
        format!("10.201.{}.{}", std::process::id() % 200, host + 1)
    }

    fn create() -> Result<Network, String> {
        let tag = format!("am{}", std::process::id());
        let network = Network {
            switch: format!("{tag}s"),
            hosts: (0..HOSTS).map(|host| format!("{tag}h{host}")).collect(),
        };
        ip(&["netns", "add", &network.switch])?;
        let switch = network.switch.as_str();
        ip(&["-n", switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", switch, "link", "set", "br0", "up"])?;
        for (index, host) in network.hosts.iter().enumerate() {
            let port = format!("p{index}");
            ip(&["netns", "add", host])?;
            ip(&[
                "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                switch,
            ])?;
            let address = format!("{}/24", Network::address(index));
            ip(&["-n", host, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", host, "link", "set", "eth0", "up"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
            ip(&["-n", switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", switch, "link", "set", &port, "up"])?;
        }
        Ok(network)
    }

    /// Brings host `index`'s link to the switch down (`up` false) or up.
    fn set_link(&self, index: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &format!("p{index}"),
            state,
        ])
        .unwrap();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for name in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A config for the hosts' nodes, with keys from `agentmesh keygen`.
fn config(folder: &std::path::Path) -> std::path::PathBuf {
    let ids: Vec<String> = (1..=HOSTS).map(|index| format!("n{index}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut text = String::from("[cluster]\nname = \"hosts\"\n\n");
    text += &keyed_nodes(folder, &ids, |index| {
        format!("{}:{PORT}", Network::address(index))
    });
    text += "[membership]\nheartbeat_interval_ms = 100\n\n";
    text += "[[agents]]\nname = \"echo-{i}\"\ncount = 3\nbehaviour = \"echo\"\nplacement = \"spread\"\n\n";
    text += &format!("[[agents]]\nname = \"storm-0\"\nnode = \"n1\"\nbehaviour = \"storm\"\nrate = 100\nmessages_max = {MESSAGES}\ntargets = [\"echo-*\"]\n");
    let path = folder.join("hosts.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn counter(latest: &Latest, node: &str, name: &str) -> u64 {
    latest
        .get(node)
        .map_or(0, |status| status["counters"][name].as_u64().unwrap_or(0))
}

fn agents_field(latest: &Latest, prefix: &str, field: &str) -> u64 {
    latest
        .values()
        .flat_map(|status| status["agents"].as_object().cloned().unwrap_or_default())
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, stats)| stats[field].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn a_host_cut_off_by_its_link_going_down_rejoins_and_nothing_acknowledged_is_lost() {
    let network = match Network::create() {
        Ok(network) => network,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: network namespaces need root and iproute2 ({error})");
            return;
        }
        Err(error) => panic!("CI must be able to make network namespaces: {error}"),
    };
    let folder = tempfile::tempdir().unwrap();
    let path = config(folder.path());
    let (lines, statuses) = mpsc::channel::<serde_json::Value>();
    let mut nodes = Nodes(Vec::new());
    for (index, host) in network.hosts.iter().enumerate() {
        let mut child = Command::new("ip")
            .args(["netns", "exec", host])
            .arg(env!("CARGO_BIN_EXE_agentmesh"))
            .args(["node", "--status-interval", "200ms", "--config"])
            .arg(&path)
            .args(["--id", &format!("n{}", index + 1)])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        forward_statuses(&mut child, lines.clone());
        nodes.0.push(child);
    }
    let mut latest = Latest::default();
    wait_for(&statuses, &mut latest, |latest| {
        (1..=HOSTS).all(|index| connected(latest, &format!("n{index}")) == HOSTS - 1)
            && agents_field(latest, "storm", "sent") >= MESSAGES / 6
    });
    network.set_link(2, false);
    wait_for(&statuses, &mut latest, |latest| {
        connected(latest, "n1") == 1
    });
    network.set_link(2, true);
    // Every message the storm sent is settled: acknowledged, refused for
    // a node thought dead during the cut, or (not expected in a cut this
    // short) given up after every retry.
    wait_for(&statuses, &mut latest, |latest| {
        let settled = agents_field(latest, "storm", "acknowledged")
            + counter(latest, "n1", "refused_no_route")
            + counter(latest, "n1", "lost_retries_exhausted");
        connected(latest, "n3") == HOSTS - 1
            && connected(latest, "n1") == HOSTS - 1
            && agents_field(latest, "storm", "sent") == MESSAGES
            && settled == MESSAGES
            && agents_field(latest, "echo", "received_data")
                >= agents_field(latest, "storm", "acknowledged")
    });
    assert_eq!(counter(&latest, "n1", "lost_retries_exhausted"), 0);
    let acknowledged = agents_field(&latest, "storm", "acknowledged");
    assert!(acknowledged > MESSAGES / 2, "few acknowledged: {latest:#?}");
    assert_eq!(
        agents_field(&latest, "echo", "received_data"),
        acknowledged,
        "every acknowledged message consumed exactly once"
    );
    drop(nodes);
    drop(network);
}
