//! Three `agentmesh node` processes, started from a config made with
//! `agentmesh keygen`, find each other over QUIC and exchange signed
//! messages: every storm message reaches an echo on another node and every
//! reply comes back.

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(dead_code)]
use crate::common;
use common::statuses::{connected, forward_statuses, keyed_nodes, wait_for, Latest, Nodes};
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

/// Keys for `ids` and a config naming them on free loopback ports, with
/// `rest` (topology, agents) after the nodes; checked with `agentmesh check`.
fn generated_config(folder: &std::path::Path, ids: &[&str], rest: &str) -> std::path::PathBuf {
    let ports = free_ports(ids.len());
    let mut config = String::from("[cluster]\nname = \"processes\"\n\n");
    config += &keyed_nodes(folder, ids, |index| format!("127.0.0.1:{}", ports[index]));
    config += rest;
    let path = folder.join("cluster.toml");
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
    path
}

/// Starts `agentmesh node` for `id`; its JSON status lines go to `lines`.
fn spawn_node(config: &std::path::Path, id: &str, lines: mpsc::Sender<serde_json::Value>) -> Child {
    let mut child = binary()
        .args(["node", "--status-interval", "200ms", "--config"])
        .arg(config)
        .args(["--id", id])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    forward_statuses(&mut child, lines);
    child
}

/// Starts `agentmesh node` for `id` with `extra` flags, its warnings to
/// `stderr` and its status lines nowhere.
fn spawn_logged_node(config: &std::path::Path, id: &str, stderr: Stdio, extra: &[&str]) -> Child {
    binary()
        .arg("node")
        .args(extra)
        .arg("--config")
        .arg(config)
        .args(["--id", id])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `field` of agent `agent` in `node`'s latest status.
fn agent_field(latest: &Latest, node: &str, agent: &str, field: &str) -> u64 {
    latest.get(node).map_or(0, |status| {
        status["agents"][agent][field].as_u64().unwrap_or(0)
    })
}

#[test]
fn three_node_processes_from_a_generated_config_exchange_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents =
        String::from("[[agents]]\nname = \"echo-{i}\"\ncount = 3\nbehaviour = \"echo\"\n\n");
    agents += "[[agents]]\nname = \"storm-{i}\"\ncount = 3\nbehaviour = \"storm\"\nrate = 100\nmessages_max = 50\ntargets = [\"echo-*\"]\n";
    let path = generated_config(dir.path(), &IDS, &agents);
    let (lines, statuses) = mpsc::channel::<serde_json::Value>();
    let mut children = Nodes(
        IDS.iter()
            .map(|id| spawn_node(&path, id, lines.clone()))
            .collect(),
    );

    let mut latest = Latest::default();
    let agent_sum = |latest: &Latest, prefix: &str, field: &str| -> u64 {
        latest
            .values()
            .flat_map(|status| status["agents"].as_object().cloned().unwrap_or_default())
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, stats)| stats[field].as_u64().unwrap_or(0))
            .sum()
    };
    // Status lines are snapshots taken at different moments on each node:
    // wait until every node's latest one has caught up.
    wait_for(&statuses, &mut latest, |latest| {
        latest.len() == 3
            && IDS.iter().all(|id| connected(latest, id) == 2)
            && agent_sum(latest, "storm", "received_replies") == 150
            && agent_sum(latest, "echo", "received_data") >= 150
    });
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

/// Four node processes in a ring (n1 n2 n3 n4): a storm on n1 sends to an
/// echo on n3, two hops away through n2 or n4. n2 is killed with SIGKILL
/// mid-storm and started again. Every message is still delivered exactly
/// once and answered (those n2 held in transit are retransmitted around
/// it), and the restarted n2 joins its ring neighbours again.
#[test]
fn a_node_process_killed_mid_storm_restarts_and_every_message_arrives_once() {
    const MESSAGES: u64 = 400;
    let ids = ["n1", "n2", "n3", "n4"];
    let dir = tempfile::tempdir().unwrap();
    let mut rest = String::from("[topology]\nkind = \"ring\"\n\n");
    rest += "[membership]\nheartbeat_interval_ms = 100\n\n";
    // n1 holds a connection to the n2 that is killed. Only the restarted
    // n2's stateless reset can end it before this idle timeout, which
    // outlasts the test's wait: n1 dials n2 (the lower id dials).
    rest += "[transport]\nidle_timeout_ms = 300000\n\n";
    rest += "[[agents]]\nname = \"echo-0\"\nnode = \"n3\"\nbehaviour = \"echo\"\n\n";
    rest += &format!("[[agents]]\nname = \"storm-0\"\nnode = \"n1\"\nbehaviour = \"storm\"\nrate = 100\nmessages_max = {MESSAGES}\ntargets = [\"echo-0\"]\n");
    let path = generated_config(dir.path(), &ids, &rest);
    let (lines, statuses) = mpsc::channel::<serde_json::Value>();
    let mut children = Nodes(
        ids.iter()
            .map(|id| spawn_node(&path, id, lines.clone()))
            .collect(),
    );
    let mut latest = Latest::default();
    wait_for(&statuses, &mut latest, |latest| {
        agent_field(latest, "n1", "storm-0", "sent") >= MESSAGES / 4
    });
    let victim = &mut children.0[1];
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    latest.remove("n2");
    std::thread::sleep(Duration::from_millis(500));
    children.0[1] = spawn_node(&path, "n2", lines.clone());
    // A message's acknowledgement may come after its reply (they are
    // batched per tick), so both are waited for. A reply the echo's node
    // refused (its admission window shrinks while routes through n2 time
    // out) is counted there, not sent again.
    wait_for(&statuses, &mut latest, |latest| {
        agent_field(latest, "n1", "storm-0", "received_replies")
            + agent_field(latest, "n3", "echo-0", "refused")
            == MESSAGES
            && agent_field(latest, "n1", "storm-0", "acknowledged") == MESSAGES
            && connected(latest, "n2") == 2
            && connected(latest, "n1") == 2
    });
    // While n2 is down, messages routed through it time out; n1's
    // admission window shrinks, and storm-0 may be refused for a while
    // (typed, counted, and sent later): what it sent all arrives.
    assert_eq!(agent_field(&latest, "n1", "storm-0", "sent"), MESSAGES);
    assert_eq!(
        agent_field(&latest, "n1", "storm-0", "acknowledged"),
        MESSAGES
    );
    wait_for(&statuses, &mut latest, |latest| {
        agent_field(latest, "n3", "echo-0", "received_data") >= MESSAGES
    });
    assert_eq!(
        agent_field(&latest, "n3", "echo-0", "received_data"),
        MESSAGES,
        "every storm message consumed exactly once"
    );
}

/// Retries `kv ARGUMENTS` until it succeeds or the wait runs out.
fn kv_until_done(arguments: &[&str], config: &std::path::Path) -> (Option<i32>, String, String) {
    let deadline = std::time::Instant::now() + common::WAIT_MAX;
    loop {
        let result = common::agentmesh(arguments, config);
        if result.0 != Some(2) || std::time::Instant::now() > deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `status --json` until the three replicas report the same last
/// index and have applied it.
fn wait_until_every_replica_holds_everything(config: &std::path::Path) {
    let deadline = std::time::Instant::now() + common::WAIT_MAX;
    loop {
        let (_, stdout, _) = common::agentmesh(&["status", "--json"], config);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_default();
        let positions: Vec<(u64, u64)> = rows
            .iter()
            .filter_map(|row| Some((row["last_index"].as_u64()?, row["applied_index"].as_u64()?)))
            .collect();
        let agreed = positions.len() == IDS.len()
            && positions
                .iter()
                .all(|&(last, applied)| last == applied && last == positions[0].0);
        if agreed {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas never held the same entries: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A config of three replica nodes (keys from keygen, client APIs on free
/// loopback ports), their logs under `data`.
fn replica_config(
    folder: &std::path::Path,
    data: &std::path::Path,
    request_timeout_ms: u64,
) -> std::path::PathBuf {
    let client_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let path = generated_config(folder, &IDS, "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (index, id) in IDS.iter().enumerate() {
        text = text.replacen(
            &format!("id = \"{id}\"\n"),
            &format!(
                "id = \"{id}\"\nclient_listen = \"127.0.0.1:{}\"\n",
                client_ports[index]
            ),
            1,
        );
    }
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\ndata_dir = {:?}\nrequest_timeout_ms = {request_timeout_ms}\n",
        data.display()
    );
    std::fs::write(&path, &text).unwrap();
    path
}

/// The damage that lost acknowledged writes before replicas kept an
/// identity record: three replica processes, five puts and a delete, every
/// process killed with SIGKILL, two of the three logs overwritten with
/// garbage, the processes started again. The two damaged replicas say
/// they withhold their votes and why, the intact one leads again, and
/// every acknowledged write reads back.
#[test]
fn replica_processes_whose_logs_were_overwritten_withhold_votes_and_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = replica_config(dir.path(), &data, 1000);
    let start = |nodes: &mut Nodes| {
        let (sender, _lines) = mpsc::channel();
        for id in IDS {
            nodes.0.push(spawn_node(&path, id, sender.clone()));
        }
    };
    let mut nodes = Nodes(Vec::new());
    start(&mut nodes);
    for index in 0..5 {
        let (code, _, stderr) = kv_until_done(
            &[
                "kv",
                "put",
                &format!("key{index}"),
                &format!("value{index}"),
            ],
            &path,
        );
        assert_eq!(code, Some(0), "put {index}: {stderr}");
    }
    let (code, _, stderr) = kv_until_done(&["kv", "delete", "key4"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    // A write is acknowledged once a majority holds it, so the replica
    // kept intact may lag and hold less than the two damaged ones had:
    // the group would then rightly refuse to elect it. Kill only once
    // every replica holds every entry.
    wait_until_every_replica_holds_everything(&path);
    drop(nodes); // SIGKILL, every one

    // Which replica led is not known; damage two, keep one.
    for id in ["n2", "n3"] {
        let engine = data.join(id).join("engine");
        for file in std::fs::read_dir(&engine).unwrap() {
            let file = file.unwrap().path();
            if file
                .extension()
                .is_some_and(|extension| extension == "raftlog")
            {
                let length = std::fs::metadata(&file).unwrap().len() as usize;
                std::fs::write(&file, vec![0xa5u8; length.max(4096)]).unwrap();
            }
        }
    }
    let mut nodes = Nodes(Vec::new());
    start(&mut nodes);
    for index in 0..4 {
        let (code, stdout, stderr) = kv_until_done(&["kv", "get", &format!("key{index}")], &path);
        assert_eq!(
            (code, stdout.trim()),
            (Some(0), format!("value{index}").as_str()),
            "key{index}: {stderr}"
        );
    }
    let (code, _, stderr) = kv_until_done(&["kv", "get", "key4"], &path);
    assert_eq!(code, Some(1), "key4 stays deleted: {stderr}");
    let (code, stdout, stderr) = common::agentmesh(&["status"], &path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("n1       leader"),
        "only the intact replica may lead: {stdout}"
    );
    drop(nodes);
}

#[test]
fn a_node_marks_its_last_status_line_final_and_names_a_busy_port_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = generated_config(dir.path(), &["n1"], "");
    let output = binary()
        .args([
            "node",
            "--duration",
            "1s",
            "--status-interval",
            "200ms",
            "--id",
            "n1",
            "--config",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        lines.len() >= 2,
        "periodic lines and a final one: {lines:?}"
    );
    let (last, periodic) = lines.split_last().unwrap();
    assert_eq!(last["final"], true, "{last}");
    assert!(
        periodic.iter().all(|line| line["final"] == false),
        "{periodic:?}"
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let port: u16 = text.split("listen = \"127.0.0.1:").nth(1).unwrap()[..5]
        .trim_end_matches('"')
        .parse()
        .unwrap();
    let _taken = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let output = binary()
        .args(["node", "--duration", "1s", "--id", "n1", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "the OS error once: {stderr}"
    );
}

#[test]
fn up_stops_on_sigterm_as_on_ctrl_c_with_its_summary() {
    let mut child = binary()
        .args(["up", "--duration", "60s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "up did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some(),
        "killed by the signal instead of stopping: {stderr}"
    );
    assert!(
        stderr.contains("interrupted: stopped early and shut down cleanly"),
        "{stderr}"
    );
    assert!(!output.stdout.is_empty(), "a summary");
}

/// A tmpfs mounted by the test; unmounted on drop, also when it fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| format!("mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One replica's disk fills up (its folder is a small tmpfs) while the
/// group takes large writes: that replica stops writing and says why, the
/// other two keep serving, and every write acknowledged reads back.
#[test]
fn a_replica_whose_disk_fills_stops_and_says_so_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmpfs = match Tmpfs::mount(&data.join("n3"), "6m") {
        Ok(tmpfs) => tmpfs,
        Err(error) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: mounting a tmpfs needs root ({error})");
            return;
        }
        Err(error) => panic!("CI must be able to mount a tmpfs: {error}"),
    };
    let path = replica_config(dir.path(), &data, 2000);
    let logs = dir.path().join("n3.log");
    let mut nodes = Nodes(Vec::new());
    for id in IDS {
        let stderr = match id {
            "n3" => Stdio::from(std::fs::File::create(&logs).unwrap()),
            _ => Stdio::null(),
        };
        nodes.0.push(spawn_logged_node(&path, id, stderr, &[]));
    }
    const PUTS: usize = 90;
    // Hex of a pseudo-random stream: raft-engine compresses its batches,
    // and the disk must fill all the same.
    let value_of = |index: usize| {
        let mut state = index as u64 + 1;
        let digits: String = (0..100_000)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from_digit(((state >> 60) & 0xf) as u32, 16).unwrap()
            })
            .collect();
        format!("{index:04}-{digits}")
    };
    for index in 0..PUTS {
        let (code, _, stderr) = kv_until_done(
            &["kv", "put", &format!("big{index}"), &value_of(index)],
            &path,
        );
        assert_eq!(
            code,
            Some(0),
            "put {index} while one replica's disk is full: {stderr}"
        );
    }
    assert!(
        nodes.0[2].try_wait().unwrap().is_none(),
        "only n3's replica stops; the node runs on"
    );
    for index in 0..PUTS {
        let (code, stdout, stderr) = kv_until_done(&["kv", "get", &format!("big{index}")], &path);
        assert_eq!(code, Some(0), "get {index}: {stderr}");
        assert!(
            stdout.trim() == value_of(index),
            "big{index} reads back what was acknowledged"
        );
    }
    drop(nodes);
    let log = std::fs::read_to_string(&logs).unwrap();
    assert!(
        log.contains("the disk is full (no space left on device)"),
        "the full replica says why it stopped writing: {log}"
    );
    drop(tmpfs);
}

/// A replica whose disk fails its syncs (`[[disk_faults]]` makes them
/// return EIO, as a dying disk's writeback does) closes its log and says
/// why, naming the file, without a panic's report; the other two keep
/// acknowledging writes; restarted on a sound disk, it reads its log anew
/// and catches up with everything the group acknowledged meanwhile.
#[test]
fn a_replica_whose_fsync_fails_stops_and_says_so_then_catches_up_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = replica_config(dir.path(), &data, 2000);
    let sound = std::fs::read_to_string(&path).unwrap();
    let failing = format!("{sound}\n[[disk_faults]]\nnode = \"n2\"\nfail_syncs_after = 3\n");
    let logs = dir.path().join("n2.log");
    let spawn = |id: &str| {
        let stderr = match id {
            "n2" => Stdio::from(std::fs::File::create(&logs).unwrap()),
            _ => Stdio::null(),
        };
        spawn_logged_node(&path, id, stderr, &["--status-interval", "200ms"])
    };
    let restart_n2 = |nodes: &mut Nodes, config: &str| {
        std::fs::write(&path, config).unwrap();
        nodes.0[1].kill().unwrap();
        nodes.0[1].wait().unwrap();
        nodes.0[1] = spawn("n2");
    };
    let put = |index: usize| {
        let key = format!("key{index}");
        let (code, _, stderr) =
            kv_until_done(&["kv", "put", &key, &format!("value{index}")], &path);
        if code != Some(0) {
            let (_, status, _) = common::agentmesh(&["status"], &path);
            let log = std::fs::read_to_string(&logs).unwrap_or_default();
            panic!("put {index}: {stderr}\n{status}\nn2's log:\n{log}");
        }
    };
    // Every replica first holds entries: one that never held any votes
    // only for candidates holding none either (`Voting::Fresh`), and the
    // group would then wait for n2.
    let mut nodes = Nodes(IDS.iter().map(|id| spawn(id)).collect());
    let mut puts = 0;
    while puts < 5 {
        put(puts);
        puts += 1;
    }
    wait_until_every_replica_holds_everything(&path);

    restart_n2(&mut nodes, &failing);
    let deadline = std::time::Instant::now() + common::WAIT_MAX;
    while !std::fs::read_to_string(&logs)
        .unwrap()
        .contains("fsync of ")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "n2's syncs never failed after {puts} puts"
        );
        put(puts);
        puts += 1;
    }
    for _ in 0..10 {
        put(puts);
        puts += 1;
    }
    let log = std::fs::read_to_string(&logs).unwrap();
    assert!(
        log.contains(".raftlog failed: Input/output error (os error 5)"),
        "n2 names the file whose sync failed, and the error: {log}"
    );
    assert!(!log.contains("panicked"), "no panic's report: {log}");
    // A node whose supervisor failed ends at its next status line.
    std::thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(&logs).unwrap();
    assert!(
        nodes.0[1].try_wait().unwrap().is_none(),
        "only n2's replica stops; the node runs on: {log}"
    );
    assert!(
        log.contains("the raft replica stays down until the node restarts"),
        "{log}"
    );

    restart_n2(&mut nodes, &sound);
    wait_until_every_replica_holds_everything(&path);
    for index in 0..puts {
        let (code, stdout, stderr) = kv_until_done(&["kv", "get", &format!("key{index}")], &path);
        assert_eq!(
            (code, stdout.trim()),
            (Some(0), format!("value{index}").as_str()),
            "key{index}: {stderr}"
        );
    }
    drop(nodes);
}
