//! `agentmesh chaos` in the suite: short runs with fixed seeds kill actors
//! of every kind, crash nodes, partition links and turn a PBFT replica
//! hostile, and must report nothing acknowledged lost, nothing committed
//! lost, a linearizable history and no invariant broken.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The embedded chaos cluster with client ports free now.
fn config_with_free_ports(folder: &Path) -> PathBuf {
    let mut text = agentmesh::config::EMBEDDED_CHAOS.to_string();
    for port in 7581..=7583 {
        let free = common::free_port();
        text = text.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{free}"));
    }
    let path = folder.join("chaos.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a short chaos run with `seed`; its report.
fn chaos(seed: u64) -> serde_json::Value {
    let folder = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let config = config_with_free_ports(folder.path());
        let out = folder.path().join("out");
        let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
            .args(["chaos", "--config"])
            .arg(&config)
            .args(["--seed", &seed.to_string(), "--duration", "15s"])
            .args(["--kill-rate", "3", "--node-kill-every", "5s"])
            .args(["--partition-every", "5s", "--settle", "30s"])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("in use") {
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "seed {seed}: exit {:?}\n{stdout}\n{stderr}",
            output.status
        );
        for file in ["report.md", "latency-cdf.svg", "throughput.svg"] {
            assert!(out.join(file).exists(), "seed {seed}: no {file}");
        }
        let report = std::fs::read_to_string(out.join("report.json")).unwrap();
        return serde_json::from_str(&report).unwrap();
    }
    panic!("no free client ports in five tries");
}

#[test]
fn short_chaos_runs_with_fixed_seeds_lose_nothing_acknowledged() {
    for seed in [1, 2] {
        let report = chaos(seed);
        let show = serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(report["ok"], true, "seed {seed}: {show}");
        assert_eq!(report["acked_lost"], 0, "seed {seed}");
        assert_eq!(report["committed_lost"], 0, "seed {seed}");
        assert_eq!(report["linearizable"], true, "seed {seed}");
        let violations = report["invariant_violations"].as_array().unwrap();
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
        // The run did what it claims: work was checked under faults.
        assert!(report["messages"]["acknowledged"].as_u64().unwrap() > 0);
        assert!(report["raft"]["puts_acknowledged"].as_u64().unwrap() > 0);
        assert!(report["pbft"]["answered"].as_u64().unwrap() > 0);
        let kills = report["kills"].as_object().unwrap();
        assert!(
            kills.len() >= 4,
            "seed {seed}: kills of few kinds: {kills:?}"
        );
        assert!(
            kills.contains_key("node"),
            "seed {seed}: no node crashed: {kills:?}"
        );
        assert!(report["partitions"].as_u64().unwrap() >= 1, "seed {seed}");
        assert_eq!(report["seed"], seed);
        assert!(report["replay"]
            .as_str()
            .unwrap()
            .contains(&format!("--seed {seed}")));
    }
}

#[test]
fn bad_chaos_flags_are_refused_before_anything_starts() {
    for (flags, reason) in [
        (vec!["--kill-rate=-1"], "--kill-rate"),
        (vec!["--kill-rate", "1000"], "--kill-rate"),
        (vec!["--payload", "4"], "--payload"),
        (vec!["--duration", "0s"], "longer than zero"),
        (vec!["--partitions", "maybe"], "maybe"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
            .arg("chaos")
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_config_without_sinks_is_refused_naming_what_is_missing() {
    let folder = tempfile::tempdir().unwrap();
    let text =
        agentmesh::config::EMBEDDED_CHAOS.replace("behaviour = \"sink\"", "behaviour = \"echo\"");
    let path = folder.path().join("no-sinks.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["chaos", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("sink") && stderr.contains("no-sinks.toml"),
        "{stderr}"
    );
}
