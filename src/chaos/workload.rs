//! The chaos run's mixed workload, and what it records for the checks:
//!
//! - storm senders, one per node, send signed messages with receipts to
//!   the sink agents and note each acknowledged id ([`StormLedger`]);
//! - Raft clients put and get keys through the replicas' client API and
//!   record every call with its times ([`Call`]);
//! - PBFT clients put, get and decide through the group and record each
//!   write and each acknowledged decision's place ([`PbftRecord`]).
//!
//! Every loop ends when told to stop, and each has a bounded number of
//! calls in flight. None holds a node alive: nodes are found through
//! [`Running`], which holds them weakly, so a crashed node's endpoint
//! lets go of its address.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checks::{storm_payload, PbftKeyWrites, FINAL_READER};
use super::history::{Function, History, Kind};

/// The history's processes for the reads after the run.
const FINAL_PROCESS_RAFT: &str = "raft-final";
const FINAL_PROCESS_PBFT: &str = "pbft-final";
use crate::actors::node::NodeParts;
use crate::actors::router;
use crate::clients::control::ControlClient;
use crate::clients::pbft::{PbftClient, ReplicaSet};
use crate::config::ClusterConfig;
use crate::protocols::mesh::SendError;
use crate::protocols::pbft::{Operation, OperationResult};
use crate::protocols::stable_hash;
use crate::sim::raft::{Call, CallKind};

/// Storm messages a node's sender awaits receipts for at once, per sink:
/// a sink out of reach holds only its own share, and the sender goes on
/// with the others.
pub const STORM_INFLIGHT_PER_SINK_MAX: usize = 128;
/// Raft calls per second one client makes at most: it keeps each key's
/// history short enough to check.
const RAFT_CALLS_PER_CLIENT_PER_SECOND_MAX: u64 = 100;
/// Raft keys are fresh every this many seconds, this many at a time.
const RAFT_KEY_EPOCH_SECONDS: u64 = 5;
const RAFT_KEYS_PER_EPOCH: u64 = 8;
/// Keys each PBFT client writes in turn.
const PBFT_KEYS_PER_CLIENT: u64 = 4;
/// The decision log PBFT clients append to.
pub const DECISION_LOG: &str = "chaos";

/// The nodes running now, by id, held weakly.
#[derive(Debug, Default)]
pub struct Running {
    nodes: RwLock<BTreeMap<String, Weak<NodeParts>>>,
}

impl Running {
    pub fn get(&self, node: &str) -> Option<Arc<NodeParts>> {
        let nodes = self.nodes.read().expect("never poisoned");
        nodes.get(node).and_then(Weak::upgrade)
    }

    pub fn set(&self, node: &str, context: &Arc<NodeParts>) {
        let mut nodes = self.nodes.write().expect("never poisoned");
        nodes.insert(node.to_string(), Arc::downgrade(context));
    }

    pub fn remove(&self, node: &str) {
        self.nodes.write().expect("never poisoned").remove(node);
    }
}

/// What happened to the storm messages.
#[derive(Debug, Default)]
pub struct StormLedger {
    issued: AtomicU64,
    acknowledged: Mutex<HashSet<u64>>,
    /// Of `acknowledged`, for sampling per second without the lock.
    pub acknowledged_count: AtomicU64,
    /// Sends the router refused at once, by cause.
    refused: Mutex<BTreeMap<String, u64>>,
    /// Receipts that said the message was not delivered, by cause.
    failed: Mutex<BTreeMap<String, u64>>,
    /// Receipts never answered: the sending node stopped first, or the
    /// run ended first.
    pub unsettled: AtomicU64,
    /// From send to acknowledgement, in microseconds.
    latency: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

impl StormLedger {
    /// Ids below this were handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    pub fn acknowledged(&self) -> HashSet<u64> {
        self.acknowledged.lock().expect("never poisoned").clone()
    }

    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.refused.lock().expect("never poisoned").clone()
    }

    pub fn failed(&self) -> BTreeMap<String, u64> {
        self.failed.lock().expect("never poisoned").clone()
    }

    fn issue(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed)
    }

    /// From send to acknowledgement, in microseconds.
    pub fn latency(&self) -> hdrhistogram::Histogram<u64> {
        let latency = self.latency.lock().expect("never poisoned");
        latency.clone().unwrap_or_else(latency_histogram)
    }

    fn settle(&self, (id, sent_at, outcome): Settled) {
        match outcome {
            Ok(Ok(())) => {
                self.acknowledged.lock().expect("never poisoned").insert(id);
                self.acknowledged_count.fetch_add(1, Ordering::Relaxed);
                let mut latency = self.latency.lock().expect("never poisoned");
                let micros = sent_at.elapsed().as_micros() as u64;
                let _ = latency
                    .get_or_insert_with(latency_histogram)
                    .record(micros.max(1));
            }
            Ok(Err(error)) => tally(&self.failed, &error),
            Err(_) => {
                self.unsettled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A storm message's id, when it was sent, and what its receipt said.
type Settled = (
    u64,
    Instant,
    Result<crate::actors::messages::Receipt, tokio::sync::oneshot::error::RecvError>,
);

pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn tally(counts: &Mutex<BTreeMap<String, u64>>, error: &SendError) {
    let debug = format!("{error:?}");
    let cause = debug.split(['(', ' ', '{']).next().unwrap_or("unknown");
    *counts
        .lock()
        .expect("never poisoned")
        .entry(cause.to_string())
        .or_default() += 1;
}

/// When workload loops stop making new calls, and when senders stop
/// waiting for the receipts of those made.
#[derive(Clone, Debug)]
pub struct Stop {
    pub calls: Arc<AtomicBool>,
    pub drain_until: Arc<Mutex<Option<Instant>>>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            calls: Arc::new(AtomicBool::new(false)),
            drain_until: Arc::new(Mutex::new(None)),
        }
    }

    fn stopped(&self) -> bool {
        self.calls.load(Ordering::Relaxed)
    }

    fn drained(&self) -> bool {
        self.drain_until
            .lock()
            .expect("never poisoned")
            .is_some_and(|until| Instant::now() >= until)
    }
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

#[derive(Clone, Debug)]
pub struct StormSettings {
    pub sinks: Vec<String>,
    /// Messages per second from each node; 0: as fast as receipts allow.
    pub rate_per_node: f64,
    pub payload_bytes: usize,
    pub seed: u64,
}

/// Sends storm messages from `node` to random sinks until told to stop,
/// then waits for their receipts until the drain time.
pub async fn storm_sender(
    node: String,
    settings: StormSettings,
    running: Arc<Running>,
    ledger: Arc<StormLedger>,
    stop: Stop,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed ^ stable_hash(&node));
    let source = format!("chaos-{node}");
    let gap = (settings.rate_per_node > 0.0)
        .then(|| Duration::from_secs_f64(1.0 / settings.rate_per_node));
    let mut next_send = Instant::now();
    let mut waiting = FuturesUnordered::new();
    let mut inflight = vec![0usize; settings.sinks.len()];
    let settle = |inflight: &mut Vec<usize>, (sink, settled): (usize, Settled)| {
        inflight[sink] -= 1;
        ledger.settle(settled);
    };
    loop {
        while let Some(Some(done)) = waiting.next().now_or_never() {
            settle(&mut inflight, done);
        }
        if stop.stopped() && (waiting.is_empty() || stop.drained()) {
            break;
        }
        let open: Vec<usize> = (0..inflight.len())
            .filter(|&sink| inflight[sink] < STORM_INFLIGHT_PER_SINK_MAX)
            .collect();
        let due = Instant::now() >= next_send;
        if stop.stopped() || open.is_empty() || !due {
            let wait = if stop.stopped() || open.is_empty() {
                Duration::from_millis(20)
            } else {
                next_send.saturating_duration_since(Instant::now())
            };
            if let Ok(Some(done)) = tokio::time::timeout(wait, waiting.next()).await {
                settle(&mut inflight, done);
            }
            continue;
        }
        let Some(context) = running.get(&node) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let id = ledger.issue();
        let sink = *open.choose(&mut rng).expect("open is not empty");
        let payload = storm_payload(id, settings.payload_bytes);
        let sent_at = Instant::now();
        let to = &settings.sinks[sink];
        let sent =
            router::send_with_receipt(&context.shared, &context.data_path, &source, to, payload);
        drop(context);
        match sent {
            Ok(receipt) => {
                inflight[sink] += 1;
                waiting.push(receipt.map(move |outcome| (sink, (id, sent_at, outcome))));
            }
            Err(error) => {
                tally(&ledger.refused, &error);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        next_send = match gap {
            // Behind by more than one gap: do not burst to catch up.
            Some(gap) => next_send.max(Instant::now().checked_sub(gap).unwrap_or(next_send)) + gap,
            None => Instant::now(),
        };
        tokio::task::yield_now().await;
    }
    ledger
        .unsettled
        .fetch_add(waiting.len() as u64, Ordering::Relaxed);
}

/// Milliseconds since `started`: the history's clock.
fn ms_since(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

/// Puts and gets through the control plane's client API until told to
/// stop, recording every call.
pub async fn raft_client(
    index: u64,
    config: Arc<ClusterConfig>,
    started: Instant,
    history: Arc<Mutex<Vec<Call>>>,
    events: Arc<History>,
    stop: Stop,
) -> anyhow::Result<()> {
    let process = format!("raft-{index}");
    let mut client = ControlClient::from_config(&config)?.with_deadline(Duration::from_secs(2));
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ index.rotate_left(17));
    let pace = Duration::from_millis(1_000 / RAFT_CALLS_PER_CLIENT_PER_SECOND_MAX);
    let mut written = 0u64;
    while !stop.stopped() {
        let begun = Instant::now();
        let epoch = ms_since(started) / 1_000 / RAFT_KEY_EPOCH_SECONDS;
        let key = format!("k{epoch}-{}", rng.gen_range(0..RAFT_KEYS_PER_EPOCH));
        let called_ms = ms_since(started);
        let (kind, answered) = if rng.gen_bool(0.5) {
            written += 1;
            let value = format!("c{index}-{written}").into_bytes();
            events.record(
                &process,
                Kind::Invoke,
                Function::Write,
                &key,
                Some(&value),
                None,
            );
            let answered = client.put(&key, value.clone()).await.is_ok();
            // A put with no answer may still be applied.
            let outcome = if answered { Kind::Ok } else { Kind::Info };
            events.record(&process, outcome, Function::Write, &key, Some(&value), None);
            (CallKind::Put(value), answered)
        } else {
            events.record(&process, Kind::Invoke, Function::Read, &key, None, None);
            match client.get(&key).await {
                Ok(value) => {
                    events.record(
                        &process,
                        Kind::Ok,
                        Function::Read,
                        &key,
                        value.as_deref(),
                        None,
                    );
                    (CallKind::Get(Some(value)), true)
                }
                Err(_) => {
                    events.record(&process, Kind::Fail, Function::Read, &key, None, None);
                    (CallKind::Get(None), false)
                }
            }
        };
        let call = Call {
            client: index,
            key,
            called_ms,
            answered_ms: answered.then(|| ms_since(started)),
            kind,
        };
        history.lock().expect("never poisoned").push(call);
        tokio::time::sleep(pace.saturating_sub(begun.elapsed())).await;
    }
    Ok(())
}

/// Reads every key of `history` once more, after everything else, as
/// [`FINAL_READER`]; each read is tried a few times.
pub async fn raft_final_reads(
    config: &ClusterConfig,
    started: Instant,
    history: &Mutex<Vec<Call>>,
    events: &History,
) -> anyhow::Result<()> {
    let keys: std::collections::BTreeSet<String> = history
        .lock()
        .expect("never poisoned")
        .iter()
        .map(|call| call.key.clone())
        .collect();
    let mut client = ControlClient::from_config(config)?.with_deadline(Duration::from_secs(5));
    for key in keys {
        let called_ms = ms_since(started);
        let mut read = None;
        for _ in 0..4 {
            events.record(
                FINAL_PROCESS_RAFT,
                Kind::Invoke,
                Function::Read,
                &key,
                None,
                None,
            );
            if let Ok(value) = client.get(&key).await {
                events.record(
                    FINAL_PROCESS_RAFT,
                    Kind::Ok,
                    Function::Read,
                    &key,
                    value.as_deref(),
                    None,
                );
                read = Some(value);
                break;
            }
            events.record(
                FINAL_PROCESS_RAFT,
                Kind::Fail,
                Function::Read,
                &key,
                None,
                None,
            );
        }
        let call = Call {
            client: FINAL_READER,
            answered_ms: read.is_some().then(|| ms_since(started)),
            kind: CallKind::Get(read),
            key,
            called_ms,
        };
        history.lock().expect("never poisoned").push(call);
    }
    Ok(())
}

/// What the PBFT clients did.
#[derive(Debug, Default)]
pub struct PbftRecord {
    pub writes: Mutex<BTreeMap<String, PbftKeyWrites>>,
    /// Places acknowledged decisions were given in [`DECISION_LOG`].
    pub decided: Mutex<Vec<u64>>,
    pub operations: AtomicU64,
    pub answered: AtomicU64,
}

/// A PBFT client with a key derived from the run's seed and `index`.
pub fn pbft_client(replicas: &Arc<ReplicaSet>, seed: u64, index: u64) -> PbftClient {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(seed ^ stable_hash("chaos-pbft")).to_le_bytes());
    bytes[8..16].copy_from_slice(&index.to_le_bytes());
    let key = ed25519_dalek::SigningKey::from_bytes(&bytes);
    let mut client = PbftClient::new(replicas.clone(), key, Duration::from_millis(600));
    client.deadline = Duration::from_secs(5);
    client
}

/// Puts, gets and decides through the PBFT group until told to stop.
pub async fn pbft_worker(
    mut client: PbftClient,
    index: u64,
    record: Arc<PbftRecord>,
    events: Arc<History>,
    stop: Stop,
) {
    let process = format!("pbft-{index}");
    let mut count = 0u64;
    while !stop.stopped() {
        count += 1;
        let key = format!("p{index}-{}", (count / 3) % PBFT_KEYS_PER_CLIENT);
        let value = format!("p{index}-{count}").into_bytes();
        let operation = match count % 3 {
            0 => Operation::Put {
                key: key.clone(),
                value: value.clone(),
            },
            1 => Operation::Get { key: key.clone() },
            _ => Operation::Decide {
                log: DECISION_LOG.into(),
                entry: value.clone(),
            },
        };
        let is_put = matches!(operation, Operation::Put { .. });
        if is_put {
            let mut writes = record.writes.lock().expect("never poisoned");
            writes
                .entry(key.clone())
                .or_default()
                .writes
                .push((value, false));
        }
        record.operations.fetch_add(1, Ordering::Relaxed);
        let (function, event_key, event_value) = match &operation {
            Operation::Put { key, value } => (Function::Write, key.clone(), Some(value.clone())),
            Operation::Get { key } => (Function::Read, key.clone(), None),
            Operation::Claim { key, value } => (Function::Claim, key.clone(), Some(value.clone())),
            Operation::Decide { log, entry } => {
                (Function::Decide, log.clone(), Some(entry.clone()))
            }
        };
        events.record(
            &process,
            Kind::Invoke,
            function,
            &event_key,
            event_value.as_deref(),
            None,
        );
        let Ok(result) = client.call(operation).await else {
            // Unanswered: a read changed nothing, a write or decision may yet.
            let outcome = if function == Function::Read {
                Kind::Fail
            } else {
                Kind::Info
            };
            events.record(
                &process,
                outcome,
                function,
                &event_key,
                event_value.as_deref(),
                None,
            );
            continue;
        };
        record.answered.fetch_add(1, Ordering::Relaxed);
        let (read, place) = match &result {
            OperationResult::Value(value) => (value.as_deref(), None),
            OperationResult::Decided { index } => (event_value.as_deref(), Some(*index)),
            OperationResult::Claimed { holder, .. } => (Some(holder.as_slice()), None),
            _ => (event_value.as_deref(), None),
        };
        events.record(&process, Kind::Ok, function, &event_key, read, place);
        match result {
            OperationResult::Done if is_put => {
                let mut writes = record.writes.lock().expect("never poisoned");
                if let Some(last) = writes.get_mut(&key).and_then(|w| w.writes.last_mut()) {
                    last.1 = true;
                }
            }
            OperationResult::Decided { index } => {
                record.decided.lock().expect("never poisoned").push(index)
            }
            _ => {}
        }
    }
}

/// Each written key's final value (None: no answer), read by `client`.
pub async fn pbft_final_reads(
    client: &mut PbftClient,
    record: &PbftRecord,
    events: &History,
) -> BTreeMap<String, Option<Option<Vec<u8>>>> {
    let keys: Vec<String> = record
        .writes
        .lock()
        .expect("never poisoned")
        .keys()
        .cloned()
        .collect();
    let mut finals = BTreeMap::new();
    for key in keys {
        let mut read = None;
        for _ in 0..4 {
            let operation = Operation::Get { key: key.clone() };
            events.record(
                FINAL_PROCESS_PBFT,
                Kind::Invoke,
                Function::Read,
                &key,
                None,
                None,
            );
            if let Ok(OperationResult::Value(value)) = client.call(operation).await {
                events.record(
                    FINAL_PROCESS_PBFT,
                    Kind::Ok,
                    Function::Read,
                    &key,
                    value.as_deref(),
                    None,
                );
                read = Some(value);
                break;
            }
            events.record(
                FINAL_PROCESS_PBFT,
                Kind::Fail,
                Function::Read,
                &key,
                None,
                None,
            );
        }
        finals.insert(key, read);
    }
    finals
}
