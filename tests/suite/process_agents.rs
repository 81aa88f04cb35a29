//! Agents that are Python processes speaking Maelstrom's protocol
//! (`behaviour = "process"`), beside Rust agents, across two nodes; and the
//! Python helper's own tests.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use agentmesh::agent_api::{Behaviour, Context, Message, Registry, RequestError, RequestId};
use agentmesh::cluster::{Departure, LocalCluster};
use agentmesh::config::{self, ClusterConfig};

use crate::common;
use common::wait_until;

/// The answers the asker got, as JSON bodies (or why none came).
type Answers = Arc<Mutex<Vec<Result<serde_json::Value, RequestError>>>>;

fn config(agents: &str) -> ClusterConfig {
    let mut text = String::from("[cluster]\nname = \"processes\"\nseed = 5\n");
    for id in ["n1", "n2"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[delivery]\nretransmit_timeout_ms = 100\n";
    text += "[supervision]\nrestart_backoff_min_ms = 10\nrestart_backoff_max_ms = 50\n";
    text += agents;
    config::parse(&text, "processes.toml", std::path::Path::new(".")).unwrap()
}

/// Asks `target` to echo "hi" (JSON, Maelstrom's echo) when told "ask".
struct Asker {
    target: String,
    answers: Answers,
}

impl Behaviour for Asker {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        if message.body == b"ask" {
            let body = serde_json::json!({"type": "echo", "echo": "hi"}).to_string();
            let _ = context.request(&self.target, body.into_bytes(), 2_000);
        }
    }

    fn response(
        &mut self,
        _context: &mut Context<'_>,
        _request: RequestId,
        outcome: Result<Message, RequestError>,
    ) {
        let answer = outcome.map(|message| serde_json::from_slice(&message.body).unwrap());
        self.answers.lock().unwrap().push(answer);
    }
}

fn registry(target: &str, answers: &Answers) -> Registry {
    let mut registry = Registry::with_builtins();
    let (target, answers) = (target.to_string(), answers.clone());
    registry.register("asker", move |_spec| {
        Ok(Box::new(Asker {
            target: target.clone(),
            answers: answers.clone(),
        }))
    });
    registry
}

fn agents(script: &str) -> String {
    format!(
        "[[agents]]\nname = \"py\"\nbehaviour = \"process\"\nnode = \"n2\"\n[agents.params]\ncommand = [\"python3\", \"python/examples/{script}\"]\n\
         [[agents]]\nname = \"asker\"\nbehaviour = \"asker\"\nnode = \"n1\"\n\
         [[agents]]\nname = \"poker\"\nbehaviour = \"sink\"\nnode = \"n2\"\n"
    )
}

/// Tells the asker (from the poker, on n2) to ask once.
async fn ask(cluster: &LocalCluster) {
    let n2 = &cluster.node("n2").unwrap().parts;
    let send = agentmesh::actors::router::send_with_receipt;
    let receipt = send(&n2.shared, &n2.data_path, "poker", "asker", b"ask".to_vec()).unwrap();
    assert_eq!(receipt.await, Ok(Ok(())));
}

async fn answered(answers: &Answers, count: usize) {
    wait_until("the process answers", || {
        answers.lock().unwrap().len() >= count
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_answers_a_rust_agent_on_another_node() {
    let answers = Answers::default();
    let cluster = LocalCluster::start_with(config(&agents("echo.py")), registry("py", &answers))
        .await
        .unwrap();
    let n2 = cluster.node("n2").unwrap().parts.data_path.clone();
    wait_until("the process answered init", || n2.agents.contains_key("py")).await;
    ask(&cluster).await;
    answered(&answers, 1).await;
    let answer = answers.lock().unwrap()[0]
        .clone()
        .expect("an answer, not a timeout");
    assert_eq!(answer["type"], "echo_ok");
    assert_eq!(answer["echo"], "hi");
    assert!(answer["in_reply_to"].is_u64(), "{answer}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_writes_garbage_and_exits_is_restarted_and_the_node_serves_on() {
    let answers = Answers::default();
    let cluster = LocalCluster::start_with(config(&agents("flaky.py")), registry("py", &answers))
        .await
        .unwrap();
    let n2 = cluster.node("n2").unwrap().parts.clone();
    let stats = n2.data_path.stats_of("py");
    for round in 1..=2 {
        wait_until("the process is up", || {
            stats.starts.load(Ordering::Relaxed) >= round && n2.data_path.agents.contains_key("py")
        })
        .await;
        ask(&cluster).await;
        answered(&answers, round as usize).await;
    }
    let malformed = n2.shared.metrics.counters.values().process_lines_malformed;
    assert!(
        malformed >= 2,
        "garbage and a line in another's name: {malformed}"
    );
    assert!(
        answers.lock().unwrap().iter().all(Result::is_ok),
        "each incarnation answered before it exited"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_process_agent_without_a_command_is_refused_naming_the_key() {
    let answers = Answers::default();
    let bad = agents("echo.py").replace(
        "command = [\"python3\", \"python/examples/echo.py\"]",
        "command = []",
    );
    let error = LocalCluster::start_with(config(&bad), registry("py", &answers))
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(
        text.contains("agents[0].params.command: give the program to run"),
        "{text}"
    );
}

#[test]
fn the_python_helper_passes_its_own_tests() {
    let output = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "python/tests"])
        .output()
        .expect("python3 runs (it is needed for process agents)");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_process_is_found_by_its_pings_and_restarted() {
    let answers = Answers::default();
    let hung = agents("hung.py").replace(
        "hung.py\"]\n",
        "hung.py\"]\nping_every_ms = 100\nping_timeout_ms = 300\n",
    );
    let cluster = LocalCluster::start_with(config(&hung), registry("py", &answers))
        .await
        .unwrap();
    let n2 = cluster.node("n2").unwrap().parts.clone();
    let stats = n2.data_path.stats_of("py");
    wait_until(
        "the hung process is restarted and answers init again",
        || stats.starts.load(Ordering::Relaxed) >= 2,
    )
    .await;
    let restarts = n2.shared.metrics.counters.values().actor_restarts;
    assert!(
        restarts >= 1,
        "the agent supervisor restarted it: {restarts}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentmesh_call_asks_python_and_rust_agents_from_outside_the_cluster() {
    let port = common::free_port();
    let mut text = String::from("[cluster]\nname = \"calls\"\nseed = 5\n");
    text += &format!(
        "[[nodes]]\nid = \"n1\"\nlisten = \"127.0.0.1:0\"\nclient_listen = \"127.0.0.1:{port}\"\n"
    );
    text += "[[nodes]]\nid = \"n2\"\nlisten = \"127.0.0.1:0\"\n";
    text += &agents("echo.py");
    text += "[[agents]]\nname = \"echo\"\nbehaviour = \"echo\"\nnode = \"n2\"\n";
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("calls.toml");
    std::fs::write(&path, &text).unwrap();
    let config = config::load(&path).unwrap();
    let answers = Answers::default();
    let cluster = LocalCluster::start_with(config, registry("py", &answers))
        .await
        .unwrap();
    let n1 = cluster.node("n1").unwrap().parts.data_path.clone();
    let n2 = cluster.node("n2").unwrap().parts.data_path.clone();
    wait_until("the desk and the process are up", || {
        n1.agents.contains_key("call@n1") && n2.agents.contains_key("py")
    })
    .await;
    let call = |agent: &str, body: &str| {
        let arguments = ["call", agent, body, "--timeout", "3s"];
        common::agentmesh(&arguments, &path)
    };
    let (code, out, err) =
        tokio::task::block_in_place(|| call("py", r#"{"type":"echo","echo":"from outside"}"#));
    assert_eq!(code, Some(0), "{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (answer["type"].as_str(), answer["echo"].as_str()),
        (Some("echo_ok"), Some("from outside"))
    );
    let (code, out, err) = tokio::task::block_in_place(|| call("echo", "plain text"));
    assert_eq!((code, out.trim()), (Some(0), "plain text"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| call("nobody", "{}"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no route to agent nobody"), "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| call("poker", "{}"));
    assert_eq!(code, Some(2), "a sink never answers: {err}");
    assert!(err.contains("no response within 3000 ms"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maelstrom_broadcast_program_converges_on_every_node_driven_by_agentmesh_call() {
    const NODES: usize = 5;
    let port = common::free_port();
    let mut text = String::from("[cluster]\nname = \"gossip\"\nseed = 8\n");
    for index in 0..NODES {
        let client = match index {
            0 => format!("client_listen = \"127.0.0.1:{port}\"\n"),
            _ => String::new(),
        };
        text += &format!("[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\n{client}");
    }
    text += "[topology]\nkind = \"partial-mesh\"\nk = 2\n";
    text += &format!(
        "[[agents]]\nname = \"b-{{i}}\"\ncount = {NODES}\nbehaviour = \"process\"\nplacement = \"spread\"\n[agents.params]\ncommand = [\"python3\", \"python/examples/broadcast.py\"]\n"
    );
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("gossip.toml");
    std::fs::write(&path, &text).unwrap();
    let cluster = LocalCluster::start(config::load(&path).unwrap())
        .await
        .unwrap();
    wait_until("every broadcast agent answered init", || {
        (0..NODES).all(|index| {
            let node = cluster.node(&format!("n{index}")).unwrap();
            node.parts
                .data_path
                .agents
                .contains_key(&format!("b-{index}"))
        })
    })
    .await;
    let call = |agent: String, body: String| {
        let arguments = ["call", &agent, &body, "--timeout", "5s"];
        tokio::task::block_in_place(|| common::agentmesh(&arguments, &path))
    };
    for value in 0..10 {
        let agent = format!("b-{}", value % NODES);
        let (code, out, err) = call(
            agent,
            format!(r#"{{"type":"broadcast","message":{value}}}"#),
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("broadcast_ok"), "{out}");
    }
    let everything: Vec<u64> = (0..10).collect();
    for index in 0..NODES {
        let deadline = std::time::Instant::now() + common::WAIT_MAX;
        loop {
            let (code, out, err) = call(format!("b-{index}"), r#"{"type":"read"}"#.into());
            assert_eq!(code, Some(0), "{err}");
            let answer: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
            let messages: Vec<u64> = serde_json::from_value(answer["messages"].clone()).unwrap();
            if messages == everything {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "b-{index} has {messages:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    cluster.shutdown().await;
}

/// Publishes 20 stories on topic `news` when told "ask".
struct Announcer;

impl Behaviour for Announcer {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        if message.body != b"ask" {
            return;
        }
        for number in 0..20 {
            let story = serde_json::json!({"type": "story", "n": number}).to_string();
            assert_eq!(context.publish("news", story.into_bytes()), Ok(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_agent_takes_a_rust_agents_topic_and_publishes_on_its_own() {
    let agents = "[[agents]]\nname = \"py\"\nbehaviour = \"process\"\nnode = \"n2\"\nsubscribe = [\"news\"]\n[agents.params]\ncommand = [\"python3\", \"python/examples/republish.py\", \"echoes\"]\n\
         [[agents]]\nname = \"asker\"\nbehaviour = \"announcer\"\nnode = \"n1\"\n\
         [[agents]]\nname = \"listener\"\nbehaviour = \"sink\"\nnode = \"n1\"\nsubscribe = [\"echoes\"]\n\
         [[agents]]\nname = \"poker\"\nbehaviour = \"sink\"\nnode = \"n2\"\n";
    let mut registry = Registry::with_builtins();
    registry.register("announcer", |_spec| Ok(Box::new(Announcer)));
    let cluster = LocalCluster::start_with(config(agents), registry)
        .await
        .unwrap();
    let n2 = cluster.node("n2").unwrap().parts.data_path.clone();
    wait_until("the process answered init", || n2.agents.contains_key("py")).await;
    ask(&cluster).await;
    let n1 = cluster.node("n1").unwrap().parts.data_path.clone();
    let listener = n1.stats_of("listener");
    wait_until("the listener has every story back", || {
        listener.recorded().len() >= 20
    })
    .await;
    let mut numbers = Vec::new();
    for (from, body) in listener.recorded() {
        assert_eq!(from, "py");
        let story: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(story["relayed_by"], "py", "{story}");
        assert!(story.get("agentmesh_topic").is_none(), "{story}");
        numbers.push(story["n"].as_u64().unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>(), "each story once");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agents_count_in_lin_kv_across_the_leaders_crash_driven_by_agentmesh_call() {
    const NODES: usize = 5;
    let data = tempfile::tempdir().unwrap();
    let mut text = String::from("[cluster]\nname = \"counting\"\nseed = 5\n");
    for index in 1..=NODES {
        // Calls and `agentmesh kv` go to any node that is up.
        let client = format!("client_listen = \"127.0.0.1:{}\"\n", common::free_port());
        text += &format!("[[nodes]]\nid = \"n{index}\"\nlisten = \"127.0.0.1:0\"\n{client}");
    }
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\ndata_dir = {:?}\nrequest_timeout_ms = 1000\n",
        data.path().display()
    );
    // One counter a node: those on n1 to n3 ask their own replica, those on
    // n4 and n5 ask through a replica's desk.
    text += &format!("[[agents]]\nname = \"counter-{{i}}\"\ncount = {NODES}\nbehaviour = \"process\"\nplacement = \"spread\"\n[agents.params]\ncommand = [\"python3\", \"python/examples/kv_counter.py\"]\n");
    let path = data.path().join("counting.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cluster = LocalCluster::start(config::load(&path).unwrap())
        .await
        .unwrap();
    let homes: std::collections::BTreeMap<String, String> =
        (cluster.nodes[0].parts.shared.config.agents.iter())
            .map(|agent| (agent.name.clone(), agent.node.clone()))
            .collect();
    let up = |cluster: &LocalCluster, agent: &str| {
        (cluster.nodes.iter()).any(|node| node.parts.data_path.agents.contains_key(agent))
    };
    wait_until("every counter answered init", || {
        (0..NODES).all(|index| up(&cluster, &format!("counter-{index}")))
    })
    .await;
    let call = |agent: &str, body: &str| {
        let arguments = ["call", agent, body, "--timeout", "8s"];
        let (code, out, err) = tokio::task::block_in_place(|| common::agentmesh(&arguments, &path));
        assert_eq!(code, Some(0), "{agent}: {err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    // Adds answered add_ok, and those answered "may have happened".
    let (mut done, mut unknown) = (0u64, Vec::new());
    let mut add = |agent: &str, delta: u64| {
        let answer = call(agent, &format!(r#"{{"type":"add","delta":{delta}}}"#));
        match (answer["type"].as_str(), answer["code"].as_u64()) {
            (Some("add_ok"), _) => done += delta,
            (Some("error"), Some(0)) => unknown.push(delta),
            _ => panic!("{agent}: {answer}"),
        }
    };
    for delta in 1..=NODES as u64 {
        add(&format!("counter-{}", delta - 1), delta);
    }
    let leader = cluster
        .control_status()
        .await
        .and_then(|status| status.leader);
    let leader = leader.expect("a leader, since adds were committed");
    assert!(cluster.stop_node(&leader, Departure::Crash).await);
    let survivors: Vec<String> = (0..NODES)
        .map(|index| format!("counter-{index}"))
        .filter(|agent| homes[agent] != leader)
        .collect();
    for delta in 6..=10 {
        add(&survivors[delta as usize % survivors.len()], delta);
    }
    cluster.restart_node(&leader).await.unwrap();
    wait_until("every counter is up again", || {
        (0..NODES).all(|index| up(&cluster, &format!("counter-{index}")))
    })
    .await;
    let subset_sums = (0..1u64 << unknown.len()).map(|mask| {
        let picked = unknown
            .iter()
            .enumerate()
            .filter(|(bit, _)| mask >> bit & 1 == 1);
        done + picked.map(|(_, delta)| delta).sum::<u64>()
    });
    let possible: Vec<u64> = subset_sums.collect();
    let mut values = Vec::new();
    for index in 0..NODES {
        let deadline = std::time::Instant::now() + common::WAIT_MAX;
        loop {
            // The restarted node's counter may ask before its replica
            // knows the leader: it is told 11, and asked again.
            let answer = call(&format!("counter-{index}"), r#"{"type":"read"}"#);
            if answer["type"] == "read_ok" {
                values.push(answer["value"].as_u64().unwrap());
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "counter-{index}: {answer}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    eprintln!("{leader} crashed; {done} added, {unknown:?} unknown; counters read {values:?}");
    assert!(
        values.windows(2).all(|pair| pair[0] == pair[1]),
        "every counter reads the same: {values:?}"
    );
    assert!(
        possible.contains(&values[0]),
        "{} is no sum of {done} and some of {unknown:?}",
        values[0]
    );
    let (code, out, err) = common::agentmesh(&["kv", "get", "maelstrom/lin-kv/\"counter\""], &path);
    assert_eq!(
        (code, out.trim()),
        (Some(0), values[0].to_string().as_str()),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_floods_and_stops_reading_is_cut_off_and_the_node_serves_on() {
    let answers = Answers::default();
    let mut agents = agents("flood.py");
    agents += "[[agents]]\nname = \"steady\"\nbehaviour = \"process\"\nnode = \"n2\"\n[agents.params]\ncommand = [\"python3\", \"python/examples/echo.py\"]\n";
    let cluster = LocalCluster::start_with(config(&agents), registry("steady", &answers))
        .await
        .unwrap();
    let n2 = cluster.node("n2").unwrap().parts.clone();
    let flooder = n2.data_path.stats_of("py");
    wait_until("both processes answered init", || {
        n2.data_path.agents.contains_key("py") && n2.data_path.agents.contains_key("steady")
    })
    .await;
    // The flood is under way: the other process on the node still answers.
    for round in 1..=3 {
        ask(&cluster).await;
        answered(&answers, round).await;
    }
    wait_until("the flooder is cut off and started again", || {
        flooder.starts.load(Ordering::Relaxed) >= 2
    })
    .await;
    let counters = n2.shared.metrics.counters.values();
    assert!(counters.actor_restarts >= 1, "{}", counters.actor_restarts);
    let refused = flooder.refused.load(Ordering::Relaxed);
    assert!(refused >= 1, "its sends to nobody were refused: {refused}");
    ask(&cluster).await;
    answered(&answers, 4).await;
    assert!(
        answers.lock().unwrap().iter().all(Result::is_ok),
        "every ask of the steady process was answered"
    );
    cluster.shutdown().await;
}
