//! `agentmesh check` rejects each kind of broken config with a message that
//! names the file, the key path and the reason, and exits non-zero.

use std::process::Command;

const GOOD: &str = r#"
[cluster]
name = "t"
[[nodes]]
id = "n1"
listen = "127.0.0.1:7401"
[[nodes]]
id = "n2"
listen = "127.0.0.1:7402"
[[agents]]
name = "echo-{i}"
count = 2
behaviour = "echo"
"#;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn assert_rejected(text: &str, key_path: &str, reason: &str) {
    let (code, output) = check(text);
    assert_ne!(code, 0, "accepted:\n{text}");
    assert!(output.contains("cluster.toml"), "names no file: {output}");
    assert!(
        output.contains(key_path),
        "names no key path {key_path:?}: {output}"
    );
    assert!(
        output.contains(reason),
        "gives no reason {reason:?}: {output}"
    );
}

#[test]
fn a_good_config_passes() {
    let (code, output) = check(GOOD);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("ok"));
}

#[test]
fn unknown_keys_are_errors() {
    assert_rejected(
        &GOOD.replace("name = \"t\"", "name = \"t\"\ncolour = \"red\""),
        "cluster",
        "unknown field `colour`",
    );
    assert_rejected(
        &GOOD.replace("id = \"n2\"", "id = \"n2\"\nlisten_on = 1"),
        "nodes[1]",
        "unknown field `listen_on`",
    );
}

#[test]
fn duplicate_node_ids_and_addresses_are_errors() {
    assert_rejected(
        &GOOD.replace("id = \"n2\"", "id = \"n1\""),
        "nodes[1].id",
        "duplicate node id",
    );
    assert_rejected(
        &GOOD.replace("7402", "7401"),
        "nodes[1].listen",
        "duplicate address",
    );
}

#[test]
fn bad_addresses_are_errors() {
    assert_rejected(
        &GOOD.replace("127.0.0.1:7402", "localhost"),
        "nodes[1].listen",
        "not an address",
    );
}

#[test]
fn unknown_behaviours_are_errors() {
    assert_rejected(
        &GOOD.replace("behaviour = \"echo\"", "behaviour = \"dance\""),
        "agents[0].behaviour",
        "unknown behaviour \"dance\"",
    );
}

#[test]
fn k_larger_than_the_node_count_allows_is_an_error() {
    assert_rejected(
        &format!("{GOOD}\n[topology]\nkind = \"full-mesh\"\nk = 5\n"),
        "topology.k",
        "larger than 2 nodes allow",
    );
}

#[test]
fn unknown_topology_kinds_and_bad_shape_parameters_are_errors() {
    assert_rejected(
        &format!("{GOOD}\n[topology]\nkind = \"star\"\n"),
        "topology.kind",
        "unknown variant `star`",
    );
    assert_rejected(
        &format!("{GOOD}\n[topology]\nkind = \"hub-spoke\"\nhubs = 3\n"),
        "topology.hubs",
        "outside the allowed range 1 to 2",
    );
    assert_rejected(
        &format!("{GOOD}\n[topology]\nkind = \"partial-mesh\"\nk_min = 8\nk_max = 4\n"),
        "topology.k_max",
        "outside the allowed range 8 to 1000",
    );
}

#[test]
fn agent_errors_name_the_agent_entry() {
    assert_rejected(
        &GOOD.replace("count = 2", "count = 2\nnode = \"n9\""),
        "agents[0].node",
        "no node has id \"n9\"",
    );
    assert_rejected(
        &GOOD.replace("echo-{i}", "echo"),
        "agents[0].name",
        "needs \"{i}\"",
    );
    assert_rejected(
        &GOOD.replace("count = 2", "count = 2\nrate = 5"),
        "agents[0].rate",
        "not used by behaviour \"echo\"",
    );
    let storm = "\n[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\ntargets = [\"nobody\"]\n";
    assert_rejected(
        &format!("{GOOD}{storm}"),
        "agents[1].targets[0]",
        "names no agent",
    );
}

#[test]
fn bad_keys_and_limits_are_errors() {
    assert_rejected(
        &GOOD.replace("id = \"n2\"", "id = \"n2\"\npublic_key = \"xyz\""),
        "nodes[1].public_key",
        "not base64",
    );
    assert_rejected(
        &format!("{GOOD}\n[limits]\nttl = 0\n"),
        "limits.ttl",
        "outside the allowed range",
    );
    assert_rejected(
        &format!("{GOOD}\n[transport]\nkeep_alive_ms = 5000\nidle_timeout_ms = 1000\n"),
        "transport.idle_timeout_ms",
        "must exceed keep_alive_ms",
    );
}

#[test]
fn toml_syntax_errors_give_a_line_and_column_and_type_errors_their_key() {
    assert_rejected(
        &GOOD.replace("[cluster]", "[cluster"),
        "(syntax)",
        "line 2, column ",
    );
    assert_rejected(
        &GOOD.replace("count = 2", "count = \"two\""),
        "agents[0].count",
        "(line 12, column 9)",
    );
}

#[test]
fn a_storm_of_rate_zero_is_refused_naming_the_key() {
    let storm = "[[agents]]\nname = \"storm-{i}\"\ncount = 1\nbehaviour = \"storm\"\nrate = 0\n";
    assert_rejected(
        &format!("{GOOD}{storm}"),
        "agents[1].rate",
        "0 would send nothing",
    );
}

#[test]
fn a_disk_fault_must_name_a_replica_once() {
    let control = "[control]\nreplicas = [\"n1\"]\n";
    let fault = "[[disk_faults]]\nnode = \"n2\"\nfail_syncs_after = 3\n";
    assert_rejected(
        &format!("{GOOD}{control}{fault}"),
        "disk_faults[0].node",
        "\"n2\" runs no replica",
    );
    let twice = "[[disk_faults]]\nnode = \"n1\"\nfail_syncs_after = 3\n";
    assert_rejected(
        &format!("{GOOD}{control}{twice}{twice}"),
        "disk_faults[1]",
        "\"n1\" is named twice",
    );
}

#[test]
fn a_negative_duration_is_refused_as_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["up", "--duration", "-5s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be negative"), "{stderr}");
}

fn keygen(out: &std::path::Path, ids: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .arg("keygen")
        .arg("--out")
        .arg(out)
        .args(ids)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn keygen_refuses_ids_that_are_not_names_and_writes_nothing_unless_it_writes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kd");
    let (code, stdout, stderr) = keygen(&out, &["../escape"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("not a valid name"), "{stderr}");
    assert!(stdout.is_empty() && !dir.path().join("escape.key").exists());

    let (code, _, stderr) = keygen(&out, &["n1"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr) = keygen(&out, &["n2", "n1"]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("n1.key exists already"), "{stderr}");
    assert!(stdout.is_empty(), "no entry printed: {stdout}");
    assert!(
        !out.join("n2.key").exists(),
        "nothing written when one cannot be"
    );
}

fn keyed(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let (code, entries, stderr) = keygen(&dir.join("keys"), &["n1", "n2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut text = String::from("[cluster]\nname = \"t\"\n");
    for (index, entry) in entries
        .split("[[nodes]]")
        .filter(|e| !e.trim().is_empty())
        .enumerate()
    {
        text += &format!(
            "[[nodes]]\n{}\nlisten = \"127.0.0.1:{}\"\n",
            entry.trim(),
            7501 + index
        );
    }
    text += extra;
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_path(path: &std::path::Path, flags: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["check", "--config"])
        .arg(path)
        .args(flags)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[test]
fn check_finds_what_node_would_refuse_key_files_modes_and_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = keyed(dir.path(), "");
    let (code, output) = check_path(&path, &[]);
    assert_eq!(
        code,
        Some(0),
        "keys listed: checked for agentmesh node: {output}"
    );
    assert!(output.contains("ok for agentmesh node"), "{output}");

    let key = dir.path().join("keys").join("n2.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, output) = check_path(&path, &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("may be read by others") && output.contains("chmod 600"),
        "{output}"
    );
    let (code, output) = check_path(&path, &["--id", "n1"]);
    assert_eq!(code, Some(0), "n1's host checks n1's key only: {output}");

    std::fs::remove_file(&key).unwrap();
    let (code, output) = check_path(&path, &["--id", "n2"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("n2.key"),
        "the missing key file is named: {output}"
    );
    let (code, output) = check_path(&path, &[]);
    assert_eq!(
        code,
        Some(0),
        "a key on another host is noted, not refused: {output}"
    );
    assert!(output.contains("n2.key is not on this machine"), "{output}");

    let dir = tempfile::tempdir().unwrap();
    let path = keyed(dir.path(), "[control]\nreplicas = [\"n1\", \"n2\"]\n");
    let (code, output) = check_path(&path, &[]);
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("control.data_dir"), "{output}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let broken = GOOD
        .replace("id = \"n2\"", "id = \"n1\"")
        .replace("behaviour = \"echo\"", "behaviour = \"dance\"");
    let (code, output) = check(&broken);
    assert_ne!(code, 0);
    assert!(output.contains("2 problems"), "{output}");
}

#[test]
fn a_missing_file_is_an_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["check", "--config", "/nonexistent/c.toml"])
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/c.toml"));
}

#[test]
fn the_embedded_default_and_shipped_examples_pass() {
    let (code, output) = check(include_str!("../../config/local.toml"));
    assert_eq!(code, 0, "{output}");
}

#[test]
fn bad_kill_percentages_are_refused_before_anything_starts() {
    for (value, reason) in [
        ("0", "above 0 and below 100"),
        ("100", "above 0 and below 100"),
        ("ten", "not a percentage"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
            .args(["up", "--duration", "1s", "--kill", value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--kill {value}: {stderr}");
        assert!(stderr.contains(reason), "--kill {value}: {stderr}");
    }
}

#[test]
fn an_overlay_wider_than_the_ttl_is_an_error() {
    let mut text = String::from("[cluster]\nname = \"t\"\n");
    for index in 0..20 {
        text += &format!(
            "[[nodes]]\nid = \"n{index:02}\"\nlisten = \"127.0.0.1:{}\"\n",
            7400 + index
        );
    }
    let ring = format!("{text}[topology]\nkind = \"ring\"\n");
    assert_rejected(
        &ring,
        "limits.ttl",
        "diameter of 10 hops, more than ttl = 8",
    );
    let (code, output) = check(&format!("{ring}[limits]\nttl = 10\n"));
    assert_eq!(code, 0, "a ttl that spans the ring is accepted: {output}");
}

#[test]
fn kv_says_at_once_that_no_replica_runs_when_every_one_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        })
        .collect();
    let text =
        GOOD.replace(
            "listen = \"127.0.0.1:7401\"",
            &format!(
                "listen = \"127.0.0.1:7401\"\nclient_listen = \"127.0.0.1:{}\"",
                ports[0]
            ),
        )
        .replace(
            "listen = \"127.0.0.1:7402\"",
            &format!(
                "listen = \"127.0.0.1:7402\"\nclient_listen = \"127.0.0.1:{}\"",
                ports[1]
            ),
        ) + "[control]\nreplicas = [\"n1\", \"n2\"]\n";
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_agentmesh"))
        .args(["kv", "get", "colour", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no replica is running"), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        2,
        "each replica once: {stderr}"
    );
}
