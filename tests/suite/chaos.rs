//! `agentmesh chaos` in the suite: short runs with fixed seeds kill actors
//! of every kind, crash nodes, partition links and turn a PBFT replica
//! hostile, and must report nothing acknowledged lost, nothing committed
//! lost, a linearizable history and no invariant broken.

#[allow(dead_code)]
use crate::common;

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
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        check_history(&out.join("history.jsonl"), &report, seed);
        return report;
    }
    panic!("no free client ports in five tries");
}

/// The history other checkers read: every line an event, each process
/// invoking one operation at a time and completing it with the same
/// function and key, times never falling, and as many acknowledged Raft
/// writes as the report counts.
fn check_history(path: &Path, report: &serde_json::Value, seed: u64) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("seed {seed}: {error}: {line}"))
        })
        .collect();
    assert_eq!(
        report["history"]["events"].as_u64(),
        Some(events.len() as u64),
        "seed {seed}"
    );
    assert_eq!(report["history"]["dropped"], 0, "seed {seed}");
    let mut open = std::collections::HashMap::<String, serde_json::Value>::new();
    let mut last_time = 0;
    let mut raft_writes_ok = 0;
    for event in &events {
        let time = event["time"].as_u64().unwrap();
        assert!(time >= last_time, "seed {seed}: time falls at {event}");
        last_time = time;
        let process = event["process"].as_str().unwrap().to_string();
        match event["type"].as_str().unwrap() {
            "invoke" => assert!(
                open.insert(process, event.clone()).is_none(),
                "seed {seed}: a second invocation before the first completed: {event}"
            ),
            "ok" | "fail" | "info" => {
                let invoked = open
                    .remove(&process)
                    .unwrap_or_else(|| panic!("seed {seed}: completed but never invoked: {event}"));
                assert_eq!(
                    (&invoked["f"], &invoked["key"]),
                    (&event["f"], &event["key"]),
                    "seed {seed}"
                );
                if event["type"] == "ok" && event["f"] == "write" && process.starts_with("raft-") {
                    raft_writes_ok += 1;
                }
            }
            other => panic!("seed {seed}: event type {other}"),
        }
    }
    assert!(
        events.iter().any(|event| event["process"] == "pbft-0"),
        "seed {seed}: no PBFT events"
    );
    assert_eq!(
        report["raft"]["puts_acknowledged"].as_u64(),
        Some(raft_writes_ok),
        "seed {seed}: acknowledged Raft writes in the history and the report"
    );
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
        // The planned agents settled where the last directory says, and
        // every directory seen on the way held the rules.
        let placement = &report["placement"];
        assert_eq!(placement["settled"], true, "seed {seed}: {placement}");
        assert!(
            placement["epochs_seen"].as_u64().unwrap() >= 1,
            "{placement}"
        );
        let directory = placement["final_directory"].as_object().unwrap();
        assert_eq!(directory.len(), 6, "seed {seed}: {placement}");
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
