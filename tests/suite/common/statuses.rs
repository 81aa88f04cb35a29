//! Helpers for tests that run `agentmesh node` processes and read their
//! JSON status lines.

// Only the binaries that run node processes use these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::WAIT_MAX;

/// `[[nodes]]` entries for `ids` with keys from `agentmesh keygen` (kept
/// in `folder/keys`), node `i` listening on `listen(i)`.
pub fn keyed_nodes(
    folder: &std::path::Path,
    ids: &[&str],
    listen: impl Fn(usize) -> String,
) -> String {
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["keygen", "--out"])
        .arg(folder.join("keys"))
        .args(ids)
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let entries = String::from_utf8(keygen.stdout).unwrap();
    let entries = entries
        .split("[[nodes]]")
        .filter(|entry| !entry.trim().is_empty());
    entries
        .enumerate()
        .map(|(index, entry)| {
            format!(
                "[[nodes]]\n{}\nlisten = \"{}\"\n\n",
                entry.trim(),
                listen(index)
            )
        })
        .collect()
}

/// Node processes; killed (and reaped) on drop.
pub struct Nodes(pub Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends every JSON status line `child` prints to `lines`, from a thread
/// of its own.
pub fn forward_statuses(child: &mut Child, lines: mpsc::Sender<serde_json::Value>) {
    let stdout = child.stdout.take().expect("the node's stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(status) = serde_json::from_str(&line) {
                let _ = lines.send(status);
            }
        }
    });
}

/// The latest status line of each node.
pub type Latest = std::collections::HashMap<String, serde_json::Value>;

/// Takes status lines until `done` holds for the latest ones; every node
/// must still be running.
pub fn wait_for(
    statuses: &mpsc::Receiver<serde_json::Value>,
    latest: &mut Latest,
    done: impl Fn(&Latest) -> bool,
) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done(latest) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "timed out; last statuses: {latest:#?}"
        );
        if let Ok(status) = statuses.recv_timeout(remaining.min(Duration::from_secs(1))) {
            assert_eq!(status["running"], true, "a node failed: {status}");
            latest.insert(status["node"].as_str().unwrap().to_string(), status);
        }
    }
}

/// How many peers `node` was connected to in its latest status.
pub fn connected(latest: &Latest, node: &str) -> usize {
    latest.get(node).map_or(0, |status| {
        status["connected"].as_array().map_or(0, Vec::len)
    })
}
