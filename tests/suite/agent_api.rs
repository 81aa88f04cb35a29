//! Agents written against `agent_api` by a user: behaviours registered
//! from here, picked by the config with typed parameters, asking each other
//! with timeouts, keeping their state across a kill, and counting in the
//! control plane with compare-and-set across a leader's crash.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use agentmesh::actors::router::send_with_receipt;
use agentmesh::agent_api::{
    Behaviour, Context, ControlAnswer, ControlAsk, ControlError, ControlOutcome, ControlTicket,
    Message, ParamError, Registry, RequestError, RequestId,
};
use agentmesh::cluster::{ClusterError, Departure, LocalCluster};
use agentmesh::config::{self, ClusterConfig};
use agentmesh::sim::linearizability;
use agentmesh::sim::raft::{Call, CallKind};
use serde::Deserialize;

use crate::common;
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

/// What the publisher did: how many it published, and each (subscriber,
/// message number) that was refused or failed on its way.
#[derive(Default)]
struct Published {
    count: std::sync::atomic::AtomicU64,
    failed: Mutex<Vec<(String, u64)>>,
}

/// Publishes `m0`, `m1`, ... on topic `news`, one per tick, `total` in
/// all, noting what did not reach a subscriber.
struct Publisher {
    total: u64,
    published: Arc<Published>,
    /// How many it has published.
    last_sent: u64,
}

impl Behaviour for Publisher {
    fn tick_interval_ms(&self) -> Option<u64> {
        Some(15)
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn tick(&mut self, context: &mut Context<'_>) {
        if self.last_sent == self.total {
            return;
        }
        let number = self.last_sent;
        self.last_sent += 1;
        let body = format!("m{number}").into_bytes();
        if let Err(error) = context.publish("news", body) {
            let mut failed = self.published.failed.lock().unwrap();
            failed.extend(error.refused.into_iter().map(|(agent, _)| (agent, number)));
        }
        self.published
            .count
            .store(self.last_sent, Ordering::Relaxed);
    }

    fn send_failed(
        &mut self,
        _context: &mut Context<'_>,
        destination: &str,
        _error: &agentmesh::agent_api::SendError,
    ) {
        // Which message failed is not told; u64::MAX marks "some message".
        let mut failed = self.published.failed.lock().unwrap();
        failed.push((destination.to_string(), u64::MAX));
    }
}

/// How often each subscriber recorded each message, on the nodes running.
fn deliveries(cluster: &LocalCluster) -> std::collections::BTreeMap<(String, String), usize> {
    let mut seen = std::collections::BTreeMap::new();
    for node in &cluster.nodes {
        for entry in node.parts.data_path.agent_stats.iter() {
            for (from, body) in entry.value().recorded() {
                assert_eq!(from, "publisher");
                let key = (entry.key().clone(), String::from_utf8(body).unwrap());
                *seen.entry(key).or_insert(0) += 1;
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_reaches_each_subscriber_once_across_a_node_crash() {
    const TOTAL: u64 = 60;
    let mut text = String::from("[cluster]\nname = \"topics\"\nseed = 4\n");
    for id in ["n1", "n2", "n3", "n4", "n5"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[delivery]\nretransmit_timeout_ms = 100\nretries_max = 30\n\
        [[agents]]\nname = \"publisher\"\nbehaviour = \"publisher\"\nnode = \"n1\"\n\
        [[agents]]\nname = \"reader-{i}\"\ncount = 5\nbehaviour = \"sink\"\nplacement = \"spread\"\nsubscribe = [\"news\"]\n\
        [[agents]]\nname = \"bystander\"\nbehaviour = \"sink\"\nnode = \"n2\"\n";
    let config = config::parse(&text, "topics.toml", std::path::Path::new(".")).unwrap();
    let mut registry = Registry::with_builtins();
    let published = Arc::new(Published::default());
    let shared = published.clone();
    registry.register("publisher", move |_spec| {
        Ok(Box::new(Publisher {
            total: TOTAL,
            published: shared.clone(),
            last_sent: 0,
        }))
    });
    let mut cluster = LocalCluster::start_with(config, registry).await.unwrap();
    let count = || published.count.load(Ordering::Relaxed);
    wait_until("a third is published", || count() >= TOTAL / 3).await;
    // reader-2 lives on n3, which crashes and comes back.
    assert!(cluster.stop_node("n3", Departure::Crash).await);
    wait_until("two thirds are published", || count() >= 2 * TOTAL / 3).await;
    cluster.restart_node("n3").await.unwrap();
    let restarted_at = count();
    wait_until("everything is published", || count() == TOTAL).await;
    let failed = published.failed.lock().unwrap().clone();
    let expected = |reader: &str, number: u64| {
        !failed
            .iter()
            .any(|(agent, failed)| agent == reader && (*failed == number || *failed == u64::MAX))
    };
    wait_until("every subscriber has what reached it", || {
        let seen = deliveries(&cluster);
        (0..5).all(|reader| {
            let reader = format!("reader-{reader}");
            let from = if reader == "reader-2" {
                restarted_at
            } else {
                0
            };
            (from..TOTAL).all(|number| {
                !expected(&reader, number)
                    || seen.contains_key(&(reader.clone(), format!("m{number}")))
            })
        })
    })
    .await;
    let seen = deliveries(&cluster);
    let reader_2 = seen.keys().filter(|(agent, _)| agent == "reader-2").count();
    eprintln!(
        "{} deliveries; n3 came back after m{restarted_at}; reader-2's new incarnation took {reader_2}; failures {failed:?}",
        seen.len()
    );
    assert!(
        seen.values().all(|&times| times == 1),
        "each subscriber took each message at most once: {seen:?}"
    );
    assert!(
        !seen.keys().any(|(agent, _)| agent == "bystander"),
        "an agent that did not subscribe gets nothing"
    );
    for reader in ["reader-0", "reader-1", "reader-3", "reader-4"] {
        for number in 0..TOTAL {
            let key = (reader.to_string(), format!("m{number}"));
            assert_eq!(seen.get(&key), Some(&1), "{reader} took m{number} once");
        }
    }
    let after_restart = (restarted_at..TOTAL).filter(|&number| expected("reader-2", number));
    for number in after_restart {
        let key = ("reader-2".to_string(), format!("m{number}"));
        assert_eq!(seen.get(&key), Some(&1), "reader-2 took m{number} once");
    }
    assert!(
        failed.iter().all(|(agent, _)| agent == "reader-2"),
        "only the crashed node's subscriber may have missed any: {failed:?}"
    );
    cluster.shutdown().await;
}

/// Every read and compare-and-set the incrementers asked, as the
/// linearizability check reads them, and each agent's increments.
#[derive(Default)]
struct Ledger {
    calls: Mutex<Vec<Call>>,
    written: Mutex<std::collections::BTreeMap<String, u64>>,
    indeterminate: std::sync::atomic::AtomicU64,
}

impl Ledger {
    fn written_by(&self, agent: &str) -> u64 {
        self.written
            .lock()
            .unwrap()
            .get(agent)
            .copied()
            .unwrap_or(0)
    }

    fn written(&self) -> u64 {
        self.written.lock().unwrap().values().sum()
    }
}

const COUNTER_KEY: &str = "test/counter";

/// Adds one to a counter in the control plane, by reading it and
/// compare-and-setting it, until it has added `goal`.
struct Incrementer {
    ledger: Arc<Ledger>,
    goal: u64,
    /// The ask under way: its ticket and its call in the ledger.
    asked: Option<(ControlTicket, usize)>,
}

impl Incrementer {
    fn ask(&mut self, context: &mut Context<'_>, ask: ControlAsk, kind: CallKind) {
        let call = Call {
            client: agentmesh::protocols::stable_hash(context.name()),
            key: COUNTER_KEY.into(),
            called_ms: context.now_micros(),
            answered_ms: None,
            kind,
        };
        match context.control(ask) {
            Ok(ticket) => {
                let mut calls = self.ledger.calls.lock().unwrap();
                calls.push(call);
                self.asked = Some((ticket, calls.len() - 1));
            }
            Err(_) => {
                let _ = context.set_timer(0, 20);
            }
        }
    }

    fn read(&mut self, context: &mut Context<'_>) {
        if self.ledger.written_by(context.name()) >= self.goal {
            return;
        }
        let ask = ControlAsk::Read {
            key: COUNTER_KEY.into(),
        };
        self.ask(context, ask, CallKind::Get(None));
    }

    fn increment(&mut self, context: &mut Context<'_>, from: Option<Vec<u8>>) {
        let count: u64 = (from.as_ref())
            .map(|bytes| String::from_utf8_lossy(bytes).parse().unwrap())
            .unwrap_or(0);
        let (from, create_if_missing) = match from {
            Some(from) => (from, false),
            None => (b"absent".to_vec(), true),
        };
        let to = (count + 1).to_string().into_bytes();
        let kind = CallKind::CompareAndSet {
            from: from.clone(),
            to: to.clone(),
            create_if_missing,
            written: None,
        };
        let ask = ControlAsk::CompareAndSet {
            key: COUNTER_KEY.into(),
            from,
            to,
            create_if_missing,
        };
        self.ask(context, ask, kind);
    }
}

impl Behaviour for Incrementer {
    fn start(&mut self, context: &mut Context<'_>) {
        self.read(context);
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn timer(&mut self, context: &mut Context<'_>, _tag: u64) {
        self.read(context);
    }

    fn control_answer(
        &mut self,
        context: &mut Context<'_>,
        ticket: ControlTicket,
        outcome: ControlOutcome,
    ) {
        let Some((asked, index)) = self.asked.take() else {
            panic!("an answer to {ticket:?}, which was not asked");
        };
        assert_eq!(asked, ticket, "one ask at a time");
        let mut calls = self.ledger.calls.lock().unwrap();
        let call = &mut calls[index];
        let read = match (&mut call.kind, outcome) {
            (CallKind::Get(seen), Ok(ControlAnswer::Value(value))) => {
                *seen = Some(Some(value.clone()));
                Some(Some(value))
            }
            (CallKind::Get(seen), Ok(ControlAnswer::NotFound)) => {
                *seen = Some(None);
                Some(None)
            }
            (CallKind::CompareAndSet { written, .. }, Ok(answer)) => {
                *written = Some(answer == ControlAnswer::Written);
                if answer == ControlAnswer::Written {
                    let mut counts = self.ledger.written.lock().unwrap();
                    *counts.entry(context.name().to_string()).or_default() += 1;
                }
                None
            }
            (_, Ok(answer)) => panic!("{answer:?} answers no read"),
            (_, Err(ControlError::Indeterminate(_))) => {
                self.ledger.indeterminate.fetch_add(1, Ordering::Relaxed);
                // Left unanswered: it may have taken effect, or not.
                drop(calls);
                return self.read(context);
            }
            (_, Err(error)) => {
                // Refused: it changed nothing, so the check leaves it out
                // (an unanswered read never counts).
                call.kind = CallKind::Get(None);
                assert!(matches!(error, ControlError::Unavailable(_)), "{error}");
                drop(calls);
                let _ = context.set_timer(0, 20);
                return;
            }
        };
        call.answered_ms = Some(context.now_micros());
        drop(calls);
        match read {
            Some(value) => self.increment(context, value),
            None => self.read(context),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_from_agents_stays_linearizable_across_a_leader_crash() {
    const GOAL: u64 = 8;
    let data = tempfile::tempdir().unwrap();
    let mut text = String::from("[cluster]\nname = \"counting\"\nseed = 6\n");
    for id in ["n1", "n2", "n3", "n4"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[delivery]\nretransmit_timeout_ms = 100\nretries_max = 30\n";
    text += &format!(
        "[control]\nreplicas = [\"n1\", \"n2\", \"n3\"]\ndata_dir = {:?}\nrequest_timeout_ms = 1000\n",
        data.path().display()
    );
    // One incrementer a node; n4's holds no replica and asks through the
    // replicas' desks.
    for id in ["n1", "n2", "n3", "n4"] {
        text += &format!(
            "[[agents]]\nname = \"inc-{id}\"\nbehaviour = \"incrementer\"\nnode = \"{id}\"\n"
        );
    }
    let config = config::parse(&text, "counting.toml", std::path::Path::new(".")).unwrap();
    let ledger = Arc::new(Ledger::default());
    let mut registry = Registry::with_builtins();
    let shared = ledger.clone();
    registry.register("incrementer", move |_spec| {
        Ok(Box::new(Incrementer {
            ledger: shared.clone(),
            goal: GOAL,
            asked: None,
        }))
    });
    let mut cluster = LocalCluster::start_with(config, registry).await.unwrap();
    wait_until("a quarter is counted", || ledger.written() >= GOAL).await;
    let leader = cluster
        .control_status()
        .await
        .and_then(|status| status.leader);
    let leader = leader.expect("a leader, since increments were committed");
    assert!(cluster.stop_node(&leader, Departure::Crash).await);
    wait_until("half is counted", || ledger.written() >= 2 * GOAL).await;
    cluster.restart_node(&leader).await.unwrap();
    wait_until("every agent counted its share", || {
        ["n1", "n2", "n3", "n4"]
            .iter()
            .all(|id| ledger.written_by(&format!("inc-{id}")) >= GOAL)
    })
    .await;
    let written = ledger.written();
    let calls = ledger.calls.lock().unwrap().clone();
    // Answered indeterminate, or lost with the crashed node's agent.
    let unknown = (calls.iter())
        .filter(|call| call.answered_ms.is_none())
        .filter(|call| matches!(call.kind, CallKind::CompareAndSet { .. }))
        .count() as u64;
    let indeterminate = ledger.indeterminate.load(Ordering::Relaxed);
    eprintln!(
        "{} calls, {written} increments, {unknown} compare-and-sets without an answer ({indeterminate} answered indeterminate); {leader} crashed",
        calls.len()
    );
    linearizability::check(&calls).unwrap_or_else(|error| panic!("{error}: {calls:?}"));
    let request = agentmesh::protocols::control::ClientRequest {
        request: agentmesh::protocols::cluster_state::RequestId {
            client: 1,
            sequence: 1,
        },
        operation: agentmesh::protocols::control::Operation::Get {
            key: COUNTER_KEY.into(),
        },
    };
    let survivor = ["n1", "n2", "n3"]
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let reply = cluster
        .ask_replica(survivor, request, std::time::Duration::from_secs(5))
        .await;
    let Some(agentmesh::protocols::control::ClientReply::Value(value)) = reply else {
        panic!("the counter cannot be read: {reply:?}");
    };
    let count: u64 = String::from_utf8(value).unwrap().parse().unwrap();
    assert!(
        (written..=written + unknown).contains(&count),
        "the counter holds {count}: {written} increments and {unknown} that may have happened"
    );
    cluster.shutdown().await;
}
