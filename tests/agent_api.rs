//! Agents written against `agent_api` by a user: behaviours registered
//! from here, picked by the config with typed parameters, asking each other
//! with timeouts, and keeping their state across a kill.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use agentmesh::actors::router::send_with_receipt;
use agentmesh::agent_api::{
    Behaviour, Context, Message, ParamError, Registry, RequestError, RequestId,
};
use agentmesh::cluster::{ClusterError, LocalCluster};
use agentmesh::config::{self, ClusterConfig};
use serde::Deserialize;

mod common;
use common::wait_until;

/// What the asker learnt: each request's counter and outcome.
type Answers = Arc<Mutex<Vec<(String, Result<u64, RequestError>)>>>;

fn config(agents: &str) -> ClusterConfig {
    let mut text = String::from("[cluster]\nname = \"agents\"\nseed = 3\n");
    for id in ["n1", "n2"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[delivery]\nretransmit_timeout_ms = 100\n";
    text += agents;
    config::parse(&text, "agents.toml", std::path::Path::new(".")).unwrap()
}

/// Counts what it is told (`step` at a time), answers requests with the
/// count, and keeps the count across restarts.
struct Counter {
    step: u64,
    count: u64,
    changed: bool,
}

impl Behaviour for Counter {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        self.count += self.step;
        self.changed = true;
        if message.request.is_some() {
            let _ = context.reply(&message, self.count.to_be_bytes().to_vec());
        }
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.changed).then(|| self.count.to_be_bytes().to_vec())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "not 8 bytes")?;
        self.count = u64::from_be_bytes(bytes);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterParams {
    step: u64,
}

/// Asks every one of `targets` once, 50 ms after it starts (on a timer)
/// and whenever it is told "ask".
struct Asker {
    targets: Vec<String>,
    timeout_ms: u64,
    asked: std::collections::HashMap<RequestId, String>,
    answers: Answers,
}

impl Asker {
    fn ask(&mut self, context: &mut Context<'_>) {
        for target in &self.targets {
            let request = context
                .request(target, b"count?".to_vec(), self.timeout_ms)
                .expect("the node takes the request");
            self.asked.insert(request, target.clone());
        }
    }
}

impl Behaviour for Asker {
    fn start(&mut self, context: &mut Context<'_>) {
        context.set_timer(1, 50).expect("one timer is allowed");
    }

    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        if message.body == b"ask" {
            self.ask(context);
        }
    }

    fn timer(&mut self, context: &mut Context<'_>, tag: u64) {
        assert_eq!(tag, 1);
        self.ask(context);
    }

    fn response(
        &mut self,
        _context: &mut Context<'_>,
        request: RequestId,
        outcome: Result<Message, RequestError>,
    ) {
        let target = self.asked.remove(&request).expect("a request of ours");
        let outcome = outcome.map(|answer| u64::from_be_bytes(answer.body.try_into().unwrap()));
        self.answers.lock().unwrap().push((target, outcome));
    }
}

/// The built-ins, `counter`, and an `asker` that reports to `answers`.
fn registry(answers: &Answers) -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("counter", |spec| {
        let params: CounterParams = spec.params.parse()?;
        if params.step == 0 {
            return Err(ParamError::new("step", "0 would count nothing"));
        }
        let counter = Counter {
            step: params.step,
            count: 0,
            changed: false,
        };
        Ok(Box::new(counter))
    });
    let answers = answers.clone();
    registry.register("asker", move |_spec| {
        Ok(Box::new(Asker {
            targets: vec!["counter".into(), "silent".into()],
            timeout_ms: 300,
            asked: Default::default(),
            answers: answers.clone(),
        }))
    });
    registry
}

const AGENTS: &str = "[[agents]]\nname = \"counter\"\nbehaviour = \"counter\"\nnode = \"n2\"\n[agents.params]\nstep = 10\n\
    [[agents]]\nname = \"silent\"\nbehaviour = \"sink\"\nnode = \"n2\"\n\
    [[agents]]\nname = \"asker\"\nbehaviour = \"asker\"\nnode = \"n1\"\n";

/// Waits until the asker has `count` answers.
async fn answered(answers: &Answers, count: usize) {
    wait_until("the requests are answered", || {
        answers.lock().unwrap().len() >= count
    })
    .await;
}

/// Tells the asker (from the silent agent, on n2) to ask again.
async fn ask_again(cluster: &LocalCluster) {
    let n2 = &cluster.node("n2").unwrap().parts;
    let receipt = send_with_receipt(
        &n2.shared,
        &n2.data_path,
        "silent",
        "asker",
        b"ask".to_vec(),
    )
    .expect("the node takes it");
    assert_eq!(receipt.await, Ok(Ok(())), "the asker consumed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_behaviour_answers_requests_and_a_silent_agent_times_out() {
    let answers = Answers::default();
    let cluster = LocalCluster::start_with(config(AGENTS), registry(&answers))
        .await
        .unwrap();
    // The asker's first asks come from its timer.
    answered(&answers, 2).await;
    let mut got = answers.lock().unwrap().clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("counter".to_string(), Ok(10)),
            (
                "silent".to_string(),
                Err(RequestError::TimedOut { timeout_ms: 300 })
            ),
        ]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_comes_back_with_its_snapshot() {
    let answers = Answers::default();
    let cluster = LocalCluster::start_with(config(AGENTS), registry(&answers))
        .await
        .unwrap();
    answered(&answers, 2).await;
    let n2 = &cluster.node("n2").unwrap().parts.data_path;
    let stats = n2.stats_of("counter");
    n2.agents.get("counter").unwrap().actor.kill();
    wait_until("the counter runs again", || {
        stats.starts.load(Ordering::Relaxed) == 2 && n2.agents.contains_key("counter")
    })
    .await;
    ask_again(&cluster).await;
    answered(&answers, 4).await;
    let counted: Vec<_> = answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(target, _)| target == "counter")
        .map(|(_, outcome)| outcome.clone())
        .collect();
    assert_eq!(counted, [Ok(10), Ok(20)], "the count survived the kill");
    cluster.shutdown().await;
}

#[tokio::test]
async fn unknown_behaviours_and_bad_parameters_are_refused_naming_the_entry_and_key() {
    let answers = Answers::default();
    let unknown = config("[[agents]]\nname = \"a\"\nbehaviour = \"dance\"\nnode = \"n1\"\n");
    let Err(ClusterError::Behaviours(error)) =
        LocalCluster::start_with(unknown, registry(&answers)).await
    else {
        panic!("an unknown behaviour must be refused");
    };
    let text = error.to_string();
    assert!(text.contains("agents[0].behaviour: unknown behaviour \"dance\"; available: asker, counter, echo, process, sink, storm"), "{text}");
    let zero = AGENTS.replace("step = 10", "step = 0");
    let Err(ClusterError::Behaviours(error)) =
        LocalCluster::start_with(config(&zero), registry(&answers)).await
    else {
        panic!("a step of 0 must be refused");
    };
    let text = error.to_string();
    assert!(
        text.contains("agents[0].params.step: 0 would count nothing"),
        "{text}"
    );
    let wrong_type = AGENTS.replace("step = 10", "step = \"ten\"");
    let Err(ClusterError::Behaviours(error)) =
        LocalCluster::start_with(config(&wrong_type), registry(&answers)).await
    else {
        panic!("a step that is not a number must be refused");
    };
    let text = error.to_string();
    assert!(
        text.contains("agents[0].params.step: invalid type: string \"ten\""),
        "{text}"
    );
}
