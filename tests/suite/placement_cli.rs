//! `agentmesh place` and `agentmesh bench placement` from the outside: the
//! example config's plan and its rebalancing, a plan that cannot be made,
//! a short benchmark's report fields, and a broken instance file refused
//! naming the file and line. Nothing asserts speed.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn run(arguments: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(arguments)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn place_prints_the_plan_its_rebalancing_and_what_blocks_one() {
    let (code, out, err) = run(&["place", "--config", "config/placement.toml", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["agents"].as_array().unwrap().len(), 11);
    assert_eq!(plan["violations"], Value::Array(Vec::new()));
    assert!(plan["nodes_used"].as_u64() >= plan["nodes_bound"].as_u64());
    // n2 holds web agents: they move, and only they.
    let (code, out, err) = run(&[
        "place",
        "--config",
        "config/placement.toml",
        "--down",
        "n2",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let moved: Value = serde_json::from_str(&out).unwrap();
    let moves = moved["moves"].as_array().unwrap();
    assert!(!moves.is_empty());
    assert!(
        moves.iter().all(|m| m[1] == "n2" && m[2] != "n2"),
        "{moves:?}"
    );
    // Without n1, three database replicas have two SSD zones.
    let (code, _, err) = run(&["place", "--config", "config/placement.toml", "--down", "n1"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("with n1 down, no plan: agent \"db-") && err.contains("fits no node"),
        "{err}"
    );
    let (code, _, err) = run(&["place", "--config", "config/placement.toml", "--down", "n9"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--down n9: no node has that id"), "{err}");
}

#[test]
fn a_short_placement_bench_writes_its_report_and_refuses_a_broken_file() {
    let folder = tempfile::tempdir().unwrap();
    let instances = folder.path().join("two.txt");
    let uniform: Vec<String> = (0..40).map(|i| (20 + (i * 37) % 81).to_string()).collect();
    let text = format!(" 2\n u40_00\n 150 40 0\n{}\n t6_00\n 100.0 6 2\n 33.3\n 33.4\n 33.3\n 40.0\n 30.0\n 30.0\n", uniform.join("\n"));
    std::fs::write(&instances, text).unwrap();
    let out = folder.path().join("out");
    let arguments = [
        "bench",
        "placement",
        "--instances",
        instances.to_str().unwrap(),
        "--repeats",
        "1",
        "--rounds",
        "200",
        "--failover-rounds",
        "2",
    ];
    let (code, _, err) = run(&[&arguments[..], &["--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "placement");
    let failover = &report["failover"];
    assert_eq!(
        failover["rounds"].as_array().unwrap().len(),
        2,
        "{failover}"
    );
    for (victim, summary) in [
        ("plain", &failover["plain"]),
        ("leader", &failover["leader"]),
    ] {
        assert_eq!(summary["rounds"], 1, "{victim}: {failover}");
        let (detected, running) = (
            summary["detected_ms_median"].as_f64().unwrap(),
            summary["running_ms_median"].as_f64().unwrap(),
        );
        assert!(
            detected > 0.0 && running >= detected,
            "{victim}: {failover}"
        );
    }
    for row in report["instances"].as_array().unwrap() {
        for field in [
            "name",
            "class",
            "items",
            "bins",
            "best_known",
            "lower_bound",
            "ffd_bins",
            "ms",
        ] {
            assert!(!row[field].is_null(), "instances[].{field}: {row}");
        }
        assert!(
            row["bins"].as_u64() >= row["lower_bound"].as_u64()
                && row["bins"].as_u64() <= row["ffd_bins"].as_u64(),
            "{row}"
        );
    }
    assert_eq!(
        report["instances"][1]["bins"], 2,
        "the triplets fill two bins exactly"
    );
    for field in [
        "instances",
        "at_best_known",
        "ffd_at_best_known",
        "extra_bins",
    ] {
        assert!(
            !report["classes"]["t6"][field].is_null(),
            "classes.t6.{field}"
        );
    }
    let speed = report["speed"].as_array().unwrap();
    assert_eq!(speed.len(), 4);
    for row in speed
        .iter()
        .chain(report["rebalance"].as_array().unwrap())
        .chain(report["geography"].as_array().unwrap())
    {
        assert_eq!(row["violations"], 0, "{row}");
    }
    assert!(speed
        .iter()
        .all(|row| row["us_per_placement"].as_f64().unwrap() > 0.0 && !row["batch_ms"].is_null()));
    assert!(Path::new(&out.join("quality.svg")).exists() && out.join("report.md").exists());
    std::fs::write(&instances, " 1\n u2_00\n 150 2\n").unwrap();
    let (code, _, err) = run(&[&arguments[..], &["--out", out.to_str().unwrap()]].concat());
    assert_ne!(code, Some(0));
    assert!(err.contains("two.txt") && err.contains("line 3"), "{err}");
}
