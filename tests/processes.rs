//! Three `agentmesh node` processes, started from a config made with
//! `agentmesh keygen`, find each other over QUIC and exchange signed
//! messages: every storm message reaches an echo on another node and every
//! reply comes back.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT_MAX: Duration = Duration::from_secs(90);
const IDS: [&str; 3] = ["n1", "n2", "n3"];

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agentmesh"))
}

/// Ports free right now on 127.0.0.1 (UDP).
fn free_ports(count: usize) -> Vec<u16> {
    let sockets: Vec<_> = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    sockets
        .iter()
        .map(|socket| socket.local_addr().unwrap().port())
        .collect()
}

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn three_node_processes_from_a_generated_config_exchange_messages() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keygen = binary()
        .args(["keygen", "--out"])
        .arg(&keys)
        .args(IDS)
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let entries = String::from_utf8(keygen.stdout).unwrap();
    let ports = free_ports(IDS.len());
    let mut config = String::from("[cluster]\nname = \"processes\"\n\n");
    for (entry, port) in entries
        .split("[[nodes]]")
        .filter(|entry| !entry.trim().is_empty())
        .zip(&ports)
    {
        config += &format!(
            "[[nodes]]{}listen = \"127.0.0.1:{port}\"\n\n",
            entry.trim_end_matches('\n').to_string() + "\n"
        );
    }
    config += "[[agents]]\nname = \"echo-{i}\"\ncount = 3\nbehaviour = \"echo\"\n\n";
    config += "[[agents]]\nname = \"storm-{i}\"\ncount = 3\nbehaviour = \"storm\"\nrate = 100\nmessages_max = 50\ntargets = [\"echo-*\"]\n";
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, &config).unwrap();
    let check = binary()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{config}",
        String::from_utf8_lossy(&check.stderr)
    );

    let (lines, statuses) = mpsc::channel::<serde_json::Value>();
    let mut children = Nodes(Vec::new());
    for id in IDS {
        let mut child = binary()
            .args(["node", "--status-interval", "200ms", "--config"])
            .arg(&path)
            .args(["--id", id])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(status) = serde_json::from_str(&line) {
                    let _ = lines.send(status);
                }
            }
        });
        children.0.push(child);
    }

    let deadline = Instant::now() + WAIT_MAX;
    let mut latest: std::collections::HashMap<String, serde_json::Value> = Default::default();
    let agent_sum = |latest: &std::collections::HashMap<String, serde_json::Value>,
                     prefix: &str,
                     field: &str|
     -> u64 {
        latest
            .values()
            .flat_map(|status| status["agents"].as_object().cloned().unwrap_or_default())
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, stats)| stats[field].as_u64().unwrap_or(0))
            .sum()
    };
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "timed out; last statuses: {latest:#?}"
        );
        if let Ok(status) = statuses.recv_timeout(remaining.min(Duration::from_secs(1))) {
            assert_eq!(status["running"], true, "a node failed: {status}");
            latest.insert(status["node"].as_str().unwrap().to_string(), status);
        }
        let connected_everywhere = latest.len() == 3
            && latest
                .values()
                .all(|status| status["connected"].as_array().unwrap().len() == 2);
        // Status lines are snapshots taken at different moments on each
        // node: wait until every node's latest one has caught up.
        if connected_everywhere
            && agent_sum(&latest, "storm", "received_replies") == 150
            && agent_sum(&latest, "echo", "received_data") >= 150
        {
            break;
        }
    }
    assert_eq!(agent_sum(&latest, "storm", "sent"), 150);
    assert_eq!(
        agent_sum(&latest, "echo", "received_data"),
        150,
        "every storm message delivered once"
    );
    assert_eq!(agent_sum(&latest, "storm", "refused"), 0);
    let received_over_quic: u64 = latest
        .values()
        .map(|status| status["counters"]["frames_received"].as_u64().unwrap())
        .sum();
    assert!(received_over_quic > 0);
    for child in &children.0 {
        // SIGTERM: each node shuts down cleanly and exits 0.
        terminate(child.id());
    }
    for child in &mut children.0 {
        let status = child.wait().unwrap();
        assert!(status.success(), "a node exited with {status}");
    }
}

fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
