//! `agentmesh bench storm` at a tiny size: the report parses, carries every
//! field docs/ARCHITECTURE.md section 8 names, accounts for every message, and the
//! plots and Markdown are written. Nothing asserts speed.

use std::process::Command;

use serde_json::Value;

/// Fields of docs/ARCHITECTURE.md section 8, common and storm, as JSON pointers.
const SCHEMA: &[&str] = &[
    "/scenario",
    "/version",
    "/machine/cpus",
    "/machine/os",
    "/config",
    "/duration_s",
    "/ok",
    "/setup/nodes",
    "/setup/edges",
    "/setup/connections",
    "/setup/setup_ms",
    "/graph/diameter",
    "/graph/avg_path_length",
    "/graph/clustering",
    "/graph/components",
    "/graph/degree_min",
    "/graph/degree_max",
    "/messages/sent",
    "/messages/delivered",
    "/messages/lost",
    "/messages/duplicates",
    "/messages/lost_by_cause/ttl_expired",
    "/messages/lost_by_cause/no_route",
    "/messages/lost_by_cause/queue_full",
    "/messages/lost_by_cause/peer_down",
    "/messages/lost_by_cause/retries_exhausted",
    "/throughput_msgs_per_s",
    "/latency_ms/mean",
    "/latency_ms/p50",
    "/latency_ms/p95",
    "/latency_ms/p99",
    "/latency_ms/max",
    "/hops",
    "/latency_ms_by_hops",
    "/resources/rss_bytes",
    "/resources/rss_bytes_per_node",
    "/resources/cpu_seconds",
    "/resources/cpu_percent_per_node",
    "/crypto/sign_us",
    "/crypto/verify_us",
    "/crypto/batch_verify_us",
    "/crypto/ceiling_msgs_per_s",
    "/cpu_us_per_message",
    "/cpu_percent_of_machine",
    "/connections_max",
    "/nodes_declared_dead",
];

#[test]
fn a_tiny_storm_writes_a_complete_report() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("storm");
    let report = run_storm(&out, &[]);
    assert_eq!(report["config"]["processes"], 1);
    for file in [
        "report.md",
        "latency-cdf.svg",
        "hops.svg",
        "throughput.svg",
        "memory.svg",
    ] {
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert!(!bytes.is_empty(), "{file} is empty");
    }
    let summary = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["bench", "summary"])
        .arg(directory.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&summary.stdout);
    assert_eq!(summary.status.code(), Some(0), "{table}");
    let row = "| storm | 5 | partial-mesh | 20 |";
    assert!(table.lines().any(|line| line.starts_with(row)), "{table}");
}

#[test]
fn a_storm_over_two_worker_processes_accounts_for_every_message() {
    let directory = tempfile::tempdir().unwrap();
    let report = run_storm(directory.path(), &["--processes", "2"]);
    assert_eq!(report["config"]["processes"], 2);
    assert!(report["resources"]["rss_bytes"].as_u64().unwrap() > 0);
}

/// Runs a storm of 5 nodes (k = 2, 20 msgs/s per agent, 1 s) with `extra`
/// flags into `out`, and checks what every report must hold.
fn run_storm(out: &std::path::Path, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["bench", "storm", "--nodes", "5", "--k", "2", "--rate", "20"])
        .args(["--duration", "1s", "--warmup", "0s", "--seed", "3", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    for field in SCHEMA {
        assert!(report.pointer(field).is_some(), "report.json lacks {field}");
    }
    assert_eq!(report["scenario"], "storm");
    assert_eq!(report["setup"]["nodes"], 5);
    assert_eq!(report["config"]["rate"], 20.0);
    let messages = &report["messages"];
    let count = |name: &str| messages[name].as_u64().unwrap();
    assert!(count("sent") > 0);
    assert_eq!(
        count("sent"),
        count("delivered") + count("lost"),
        "every message is delivered or counted lost: {messages}"
    );
    let delivered = count("delivered");
    let cpu_us = report["cpu_us_per_message"].as_f64().unwrap();
    let cpu_percent = report["cpu_percent_of_machine"].as_f64().unwrap();
    assert!(
        delivered == 0 || (cpu_us > 0.0 && cpu_percent > 0.0),
        "CPU is measured: {cpu_us} µs per message, {cpu_percent} % of the machine"
    );
    let edges = report["setup"]["edges"].as_u64().unwrap();
    let connections_max = report["connections_max"].as_u64().unwrap();
    assert!(
        connections_max >= edges,
        "every overlay edge is a connection: {connections_max} of {edges}"
    );
    let agents = report["agents_top"].as_array().unwrap();
    assert_eq!(agents.len(), 5, "five agents, all listed");
    for agent in agents {
        let field = |name: &str| agent[name].as_u64().unwrap();
        assert_eq!(field("acknowledged"), field("sent"), "{agent}");
        if field("received") > 0 {
            assert!(agent["latency_mean_ms"].as_f64().unwrap() > 0.0, "{agent}");
        }
    }
    report
}

/// Runs `bench <bench> ARGUMENTS` and checks it fails saying `reason`.
fn assert_refused(bench: &str, arguments: &[&str], reason: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["bench", bench, "--out", "/nonexistent/never-written"])
        .args(arguments)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{arguments:?}");
    assert!(stderr.contains(reason), "{arguments:?}: {stderr}");
}

#[test]
fn impossible_arguments_are_refused_with_the_flag_named() {
    for (arguments, reason) in [
        (&["--nodes", "5", "--k", "5"][..], "--k 5"),
        (&["--nodes", "0"][..], "--nodes 0"),
        (&["--duration", "0s"][..], "longer than zero"),
        (&["--topology", "star"][..], "star"),
        (&["--processes", "0"][..], "--processes 0"),
        (&["--nodes", "3", "--processes", "4"][..], "--processes 4"),
    ] {
        assert_refused("storm", arguments, reason);
    }
}

/// Fields of docs/ARCHITECTURE.md section 8, common and raft.
const RAFT_SCHEMA: &[&str] = &[
    "/scenario",
    "/version",
    "/machine/cpus",
    "/config",
    "/duration_s",
    "/ok",
    "/commits_per_s",
    "/commit_latency_ms/mean",
    "/commit_latency_ms/p50",
    "/commit_latency_ms/p95",
    "/commit_latency_ms/p99",
    "/fsync",
    "/leader_failover_ms",
    "/snapshot/bytes",
    "/snapshot/ms",
    "/snapshot/mb_per_s",
];

#[test]
fn a_tiny_raft_bench_writes_a_complete_report() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("raft");
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args([
            "bench",
            "raft",
            "--replicas",
            "3",
            "--clients",
            "4",
            "--payload",
            "64",
            "--duration",
            "1s",
            "--single-duration",
            "300ms",
            "--warmup",
            "0s",
            "--failovers",
            "1",
            "--snapshot-mb",
            "1",
            "--snapshot-runs",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    for pointer in RAFT_SCHEMA {
        assert!(
            report.pointer(pointer).is_some(),
            "report.json lacks {pointer}: {text}"
        );
    }
    assert_eq!(report["scenario"], "raft");
    assert_eq!(report["fsync"], true, "fsync is on unless --no-fsync");
    assert!(report["clients"]["commits"].as_u64().unwrap() > 0);
    assert_eq!(report["clients"]["failures"], 0);
    assert_eq!(report["leader_failovers_ms"].as_array().unwrap().len(), 1);
    assert!(
        report["snapshot"]["bytes"].as_u64().unwrap() >= 1_000_000,
        "{text}"
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("883 commits/s"),
        "the competitor's figure is beside ours"
    );
    for plot in ["latency-cdf.svg", "throughput.svg"] {
        assert!(out.join(plot).exists(), "{plot} is written");
    }
}

/// Fields of docs/ARCHITECTURE.md section 8, common and pbft.
const PBFT_SCHEMA: &[&str] = &[
    "/scenario",
    "/version",
    "/machine/cpus",
    "/config",
    "/duration_s",
    "/ok",
    "/ops_per_s",
    "/op_latency_ms/p50",
    "/op_latency_ms/p99",
    "/replicas",
    "/faulty",
    "/batch",
    "/view_changes",
    "/view_change_ms",
    "/safety_violations",
];

fn bench_pbft(arguments: &[&str], out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["bench", "pbft"])
        .args(arguments)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_tiny_pbft_bench_with_a_silent_primary_writes_a_complete_report() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("pbft");
    let arguments = [
        "--replicas",
        "4",
        "--faulty",
        "1",
        "--behaviour",
        "silent",
        "--clients",
        "4",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--request-timeout-ms",
        "200",
    ];
    let output = bench_pbft(&arguments, &out);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    for pointer in PBFT_SCHEMA {
        assert!(
            report.pointer(pointer).is_some(),
            "report.json lacks {pointer}: {text}"
        );
    }
    assert_eq!(report["scenario"], "pbft");
    assert_eq!(report["safety_violations"], 0);
    assert!(report["view_changes"].as_u64().unwrap() >= 1, "{text}");
    assert!(report["ops_per_s"].as_f64().unwrap() > 0.0, "{text}");
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("2,930"),
        "the competitor's figure is beside ours"
    );
    // More faulty replicas than f are refused unless forced.
    let refused = bench_pbft(&["--replicas", "4", "--faulty", "2"], &out);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
}

#[test]
fn a_short_agents_bench_measures_both_responders() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args([
            "bench",
            "agents",
            "--rate",
            "200",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
        ])
        .arg("--out")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "no request timed out");
    let text = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["scenario"], "agents");
    let responders = report["responders"].as_array().unwrap();
    let names: Vec<&str> = responders
        .iter()
        .map(|r| r["responder"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rust", "python"]);
    for responder in responders {
        assert!(responder["completed"].as_u64().unwrap() > 0, "{responder}");
        assert_eq!(responder["timeouts"], 0, "{responder}");
        for field in ["p50", "p95", "p99", "mean"] {
            assert!(
                responder["round_trip_ms"][field].is_f64(),
                "{field}: {responder}"
            );
        }
        assert!(responder["cpu_us_per_request"].is_f64(), "{responder}");
    }
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("competitor"), "{markdown}");
}

#[test]
fn a_short_fanout_bench_delivers_every_copy_once() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args([
            "bench", "fanout", "--nodes", "5", "--k", "2", "--rate", "50",
        ])
        .args(["--duration", "500ms", "--warmup", "0s", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "every measured copy arrived once");
    let text = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    let field = |name: &str| report[name].as_u64().unwrap();
    assert!(field("published_measured") > 0, "{report}");
    assert_eq!(
        field("copies_expected"),
        field("published_measured") * 5 - field("refused_measured")
    );
    assert_eq!(field("copies_delivered"), field("copies_expected"));
    assert_eq!(field("duplicates"), 0);
    assert!(report["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("5 subscribers on 5 nodes"), "{markdown}");
}

#[test]
fn impossible_fanout_arguments_are_refused_with_the_flag_named() {
    for (arguments, reason) in [
        (&["--nodes", "1"][..], "--nodes 1"),
        (&["--nodes", "4", "--k", "4"][..], "--k 4"),
        (&["--rate", "0"][..], "--rate 0"),
        (&["--payload", "4"][..], "--payload 4"),
    ] {
        assert_refused("fanout", arguments, reason);
    }
}
