//! `agentmesh chaos`: runs a cluster in this process under a mixed
//! workload while breaking it, then checks that nothing acknowledged was
//! lost.
//!
//! ```text
//! storm senders ─signed messages─▶ routers ─▶ sink agents (record)
//! Raft clients ─TCP client API─▶ replicas     (history → linearizability)
//! PBFT clients ─requests─▶ PBFT replicas      (writes, decisions)
//! FaultDriver ─kill / crash / partition / hostile─▶ the cluster
//! ```
//!
//! The run has three phases: the faults (for `--duration`), the end of the
//! faults (links healed, stopped nodes started again, no new calls, storm
//! receipts awaited for up to `--settle`), and the checks
//! ([`checks`]). The seed fixes the fault schedule and the workload's
//! choices; thread timing does not replay.

pub mod checks;
pub mod faults;
pub mod history;
pub mod placement;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::actors::messages::PbftStatus;
use crate::actors::node::NodeParts;
use crate::bench::report::{write_report_files, PlotTitles, ReportHeader};
use crate::clients::pbft::ReplicaSet;
use crate::cluster::LocalCluster;
use crate::config::{ClusterConfig, FaultsConfig};
use crate::metrics::LatencySummary;
use faults::{FaultDriver, FaultSettings};
use report::{ChaosReport, Datagrams, HistorySummary, PbftSection, StormSection};
use workload::{PbftRecord, Running, Stop, StormLedger, StormSettings};

/// Longest run the command accepts.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3_600);
/// Kills per second, at most.
const KILL_RATE_MAX: f64 = 100.0;
/// How long the cluster may take to be ready before the faults start.
const READY_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ChaosOptions {
    /// The cluster (default: the embedded config/chaos.toml). It needs sink
    /// agents; a [control] group with client_listen addresses and a [pbft]
    /// group are used when present.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seeds the fault schedule and the workload's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long the faults last.
    #[arg(long, allow_hyphen_values = true, default_value = "60s", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "bench-results/chaos")]
    pub out: PathBuf,
    /// Actor kills per second, over every kind (agents, routers, topology,
    /// transport, Raft and PBFT replicas). 0 with --node-kill-every 0,
    /// --partitions off and --byzantine off: a calm run to compare with.
    #[arg(long, default_value_t = 1.0)]
    pub kill_rate: f64,
    /// Mean time between whole-node crashes; each node is started again 1
    /// to 4 s later (0: none).
    #[arg(long, allow_hyphen_values = true, default_value = "20s", value_parser = crate::commands::parse_duration_or_zero)]
    pub node_kill_every: Duration,
    /// Partitions: one node cut off, or the nodes split in two, for 2 to
    /// 5 s each.
    #[arg(long, value_enum, default_value = "on")]
    pub partitions: Switch,
    /// Mean time between partitions.
    #[arg(long, allow_hyphen_values = true, default_value = "20s", value_parser = crate::commands::parse_duration)]
    pub partition_every: Duration,
    /// Makes the one PBFT replica allowed to fail hostile.
    #[arg(long, value_enum, default_value = "on")]
    pub byzantine: Switch,
    /// Storm messages per second over the cluster (0: as fast as the
    /// receipts come back, 128 awaited per node and sink at most).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Bytes of each storm message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    #[arg(long, default_value_t = 3)]
    pub raft_clients: u64,
    #[arg(long, default_value_t = 2)]
    pub pbft_clients: u64,
    /// How long, after the faults end, storm senders wait for receipts.
    #[arg(long, allow_hyphen_values = true, default_value = "45s", value_parser = crate::commands::parse_duration)]
    pub settle: Duration,
}

impl ChaosOptions {
    fn check(&self) -> anyhow::Result<()> {
        if !(0.0..=KILL_RATE_MAX).contains(&self.kill_rate) {
            anyhow::bail!(
                "--kill-rate {}: give 0 to {KILL_RATE_MAX} kills per second",
                self.kill_rate
            );
        }
        if self.duration > DURATION_MAX {
            anyhow::bail!("--duration {:?}: at most 24 h", self.duration);
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate {}: give messages per second, 0 or more", self.rate);
        }
        if !(12..=1_000_000).contains(&self.payload) {
            anyhow::bail!("--payload {}: give 12 to 1000000 bytes", self.payload);
        }
        if self.raft_clients > 64 || self.pbft_clients > 64 {
            anyhow::bail!("--raft-clients and --pbft-clients: at most 64 each");
        }
        Ok(())
    }

    fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "config": self.config.as_ref().map(|path| path.display().to_string()),
            "seed": self.seed,
            "duration_s": self.duration.as_secs_f64(),
            "kill_rate": self.kill_rate,
            "node_kill_every_s": self.node_kill_every.as_secs_f64(),
            "partitions": self.partitions == Switch::On,
            "partition_every_s": self.partition_every.as_secs_f64(),
            "byzantine": self.byzantine == Switch::On,
            "rate": self.rate,
            "payload": self.payload,
            "raft_clients": self.raft_clients,
            "pbft_clients": self.pbft_clients,
            "settle_s": self.settle.as_secs_f64(),
        })
    }

    fn replay(&self) -> String {
        let config = self
            .config
            .as_ref()
            .map(|path| format!(" --config {}", path.display()))
            .unwrap_or_default();
        let switch = |on: Switch| if on == Switch::On { "on" } else { "off" };
        format!(
            "agentmesh chaos{config} --seed {} --duration {}s --kill-rate {} --node-kill-every {}s --partitions {} --partition-every {}s --byzantine {} --rate {} --out DIR",
            self.seed,
            self.duration.as_secs_f64(),
            self.kill_rate,
            self.node_kill_every.as_secs_f64(),
            switch(self.partitions),
            self.partition_every.as_secs_f64(),
            switch(self.byzantine),
            self.rate
        )
    }
}

/// The sink agents of `config`: where storm messages go.
fn sinks_of(config: &ClusterConfig) -> anyhow::Result<Vec<String>> {
    let sinks: Vec<String> = config
        .agents
        .iter()
        .filter(|agent| agent.behaviour == "sink")
        .map(|agent| agent.name.clone())
        .collect();
    if sinks.is_empty() {
        anyhow::bail!(
            "{}: agents: a chaos run needs agents with behaviour = \"sink\" to send its storm to",
            config.source
        );
    }
    Ok(sinks)
}

/// The client history beside the report (see [`history`]).
pub const HISTORY_FILE: &str = "history.jsonl";

/// What the workload tasks share.
struct Workload {
    started: Instant,
    stop: Stop,
    running: Arc<Running>,
    ledger: Arc<StormLedger>,
    storm: Vec<tokio::task::JoinHandle<()>>,
    raft_history: Arc<Mutex<Vec<crate::sim::raft::Call>>>,
    /// Every client operation, for checkers of our own and others'.
    events: Arc<history::History>,
    raft: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pbft_record: Arc<PbftRecord>,
    pbft: Vec<tokio::task::JoinHandle<()>>,
    replicas: Option<Arc<ReplicaSet>>,
}

pub async fn chaos(options: ChaosOptions) -> anyhow::Result<i32> {
    options.check()?;
    let mut config = match &options.config {
        Some(path) => crate::config::load(path)?,
        None => crate::config::embedded_chaos(),
    };
    let sinks = sinks_of(&config)?;
    if config.faults.is_none() {
        config.faults = Some(FaultsConfig::quiet(options.seed));
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let cluster = LocalCluster::start(config.clone()).await?;
    let config = cluster.config.clone();
    let workload = start_workload(&options, &cluster, &sinks).await?;
    let settings = FaultSettings {
        kill_rate: options.kill_rate,
        node_kill_every: options.node_kill_every,
        partition_every: match options.partitions {
            Switch::On => options.partition_every,
            Switch::Off => Duration::ZERO,
        },
        byzantine: options.byzantine == Switch::On && !config.pbft.replicas.is_empty(),
        seed: options.seed,
    };
    let mut driver = FaultDriver::new(
        cluster,
        workload.running.clone(),
        workload.replicas.clone(),
        settings,
        sinks.clone(),
    );
    eprintln!(
        "chaos: {} nodes, {:.1} kills/s for {:?}, seed {}",
        config.nodes.len(),
        options.kill_rate,
        options.duration,
        options.seed
    );
    let faults_start = Instant::now();
    let faults_end = faults_start + options.duration;
    let measuring = AtomicBool::new(false);
    let (over_time, ()) = tokio::join!(
        crate::bench::report::count_per_second(
            faults_start,
            faults_end,
            &measuring,
            &workload.ledger.acknowledged_count
        ),
        driver.run(faults_end)
    );
    let acknowledged_during = workload.ledger.acknowledged_count.load(Ordering::Relaxed);
    let faults_seconds = faults_start.elapsed().as_secs_f64();
    eprintln!("chaos: faults over; healing, starting stopped nodes, settling");
    driver.end().await;
    let mut outcome = finish(&options, &config, &mut driver, workload, &sinks).await?;
    let latency = std::mem::replace(&mut outcome.latency, workload::latency_histogram());
    let throughput = acknowledged_during as f64 / faults_seconds.max(1e-9);
    let run = Run {
        seconds: faults_seconds,
        throughput,
        over_time,
    };
    let history_path = options.out.join(HISTORY_FILE);
    outcome
        .events
        .write_jsonl(&history_path)
        .with_context(|| format!("cannot write {}", history_path.display()))?;
    let report = build_report(&options, &driver, outcome, run);
    driver.cluster.shutdown().await;
    let titles = PlotTitles {
        latency: "Storm messages: send to acknowledgement under chaos",
        latency_axis: "fraction of messages",
        throughput: "Storm messages acknowledged per second under chaos",
        throughput_axis: "messages per second",
    };
    let markdown = report.to_markdown();
    write_report_files(
        &options.out,
        &report,
        &markdown,
        &latency,
        &report.over_time,
        &titles,
    )?;
    print!("{markdown}");
    Ok(if report.ok { 0 } else { 1 })
}

/// Starts the workload once the cluster serves: links up, a Raft leader
/// answering, the PBFT group executing.
async fn start_workload(
    options: &ChaosOptions,
    cluster: &LocalCluster,
    sinks: &[String],
) -> anyhow::Result<Workload> {
    let config = cluster.config.clone();
    if cluster.wait_for_links(READY_WAIT).await.is_none() {
        anyhow::bail!("the overlay's links were not all up within {READY_WAIT:?}");
    }
    let running = Arc::new(Running::default());
    for node in &cluster.nodes {
        running.set(&node.id, &node.parts);
    }
    let replicas = (!config.pbft.replicas.is_empty()).then(|| {
        let contexts: Vec<Arc<NodeParts>> = config
            .pbft
            .replicas
            .iter()
            .map(|id| cluster.node(id).expect("started").parts.clone())
            .collect();
        ReplicaSet::new(&contexts)
    });
    wait_until_serving(&config, replicas.as_ref(), options.seed).await?;
    let stop = Stop::new();
    let started = Instant::now();
    let ledger = Arc::new(StormLedger::default());
    let storm_settings = StormSettings {
        sinks: sinks.to_vec(),
        rate_per_node: options.rate / config.nodes.len() as f64,
        payload_bytes: options.payload,
        seed: options.seed,
    };
    let storm = config
        .nodes
        .iter()
        .map(|node| {
            let sender = workload::storm_sender(
                node.id.clone(),
                storm_settings.clone(),
                running.clone(),
                ledger.clone(),
                stop.clone(),
            );
            tokio::spawn(sender)
        })
        .collect();
    let raft_history = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(history::History::new(started));
    let raft_clients = if has_raft_clients(&config) {
        options.raft_clients
    } else {
        0
    };
    let raft = (0..raft_clients)
        .map(|index| {
            let client = workload::raft_client(
                index,
                config.clone(),
                started,
                raft_history.clone(),
                events.clone(),
                stop.clone(),
            );
            tokio::spawn(client)
        })
        .collect();
    let pbft_record = Arc::new(PbftRecord::default());
    let pbft = match &replicas {
        Some(replicas) => (0..options.pbft_clients)
            .map(|index| {
                let client = workload::pbft_client(replicas, options.seed, index);
                let worker = workload::pbft_worker(
                    client,
                    index,
                    pbft_record.clone(),
                    events.clone(),
                    stop.clone(),
                );
                tokio::spawn(worker)
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(Workload {
        started,
        stop,
        running,
        ledger,
        storm,
        raft_history,
        events,
        raft,
        pbft_record,
        pbft,
        replicas,
    })
}

fn has_raft_clients(config: &ClusterConfig) -> bool {
    config.control.replicas.iter().any(|id| {
        config
            .nodes
            .iter()
            .any(|n| &n.id == id && n.client_listen.is_some())
    })
}

/// Waits until a Raft write commits and a PBFT operation executes.
async fn wait_until_serving(
    config: &ClusterConfig,
    replicas: Option<&Arc<ReplicaSet>>,
    seed: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    if has_raft_clients(config) {
        let mut client = crate::clients::control::ControlClient::from_config(config)?;
        while let Err(error) = client.put("chaos-ready", b"1".to_vec()).await {
            if Instant::now() > deadline {
                anyhow::bail!("the control plane took no write within {READY_WAIT:?}: {error}");
            }
        }
    }
    if let Some(replicas) = replicas {
        let mut client = workload::pbft_client(replicas, seed, u64::MAX);
        let operation = || crate::protocols::pbft::Operation::Get {
            key: "chaos-ready".into(),
        };
        while let Err(error) = client.call(operation()).await {
            if Instant::now() > deadline {
                anyhow::bail!("the PBFT group executed nothing within {READY_WAIT:?}: {error}");
            }
        }
    }
    Ok(())
}

/// What the checks found.
struct Outcome {
    storm: StormSection,
    events: Arc<history::History>,
    latency: hdrhistogram::Histogram<u64>,
    raft: Option<checks::RaftCheck>,
    pbft: Option<PbftSection>,
    placement: Option<placement::PlacementSection>,
    violations: Vec<String>,
}

/// Least time planned agents get to settle after the faults: a node that
/// came back is taken into the overlay after a few heartbeats, and the
/// planner's balance moves follow.
const PLACEMENT_SETTLE_MIN: Duration = Duration::from_secs(10);

/// The faulted window's figures.
struct Run {
    seconds: f64,
    throughput: f64,
    over_time: Vec<(f64, f64)>,
}

/// Stops the workload, waits for what is still owed, reads the final
/// state and checks it.
async fn finish(
    options: &ChaosOptions,
    config: &ClusterConfig,
    driver: &mut FaultDriver,
    workload: Workload,
    sinks: &[String],
) -> anyhow::Result<Outcome> {
    workload.stop.calls.store(true, Ordering::Relaxed);
    *workload.stop.drain_until.lock().expect("never poisoned") =
        Some(Instant::now() + options.settle);
    for task in workload.storm {
        task.await?;
    }
    for task in workload.raft {
        task.await??;
    }
    for task in workload.pbft {
        task.await?;
    }
    eprintln!("chaos: workload stopped; reading every key back");
    let mut violations = driver.tally.errors.clone();
    let storm = storm_section(&workload.ledger, driver, sinks, &mut violations);
    let raft = if has_raft_clients(config) {
        workload::raft_final_reads(
            config,
            workload.started,
            &workload.raft_history,
            &workload.events,
        )
        .await?;
        let history = workload
            .raft_history
            .lock()
            .expect("never poisoned")
            .clone();
        let check = checks::check_raft(&history);
        raft_violations(&check, &mut violations);
        Some(check)
    } else {
        None
    };
    let pbft = match &workload.replicas {
        Some(replicas) => Some(
            pbft_section(
                options,
                driver,
                replicas,
                &workload.pbft_record,
                &workload.events,
                &mut violations,
            )
            .await,
        ),
        None => None,
    };
    let placement = placement_section(options, driver, &mut violations).await;
    Ok(Outcome {
        storm,
        events: workload.events.clone(),
        latency: workload.ledger.latency(),
        raft,
        pbft,
        placement,
        violations,
    })
}

/// With planned agents, what the samples of the directory found and
/// whether the agents settled.
async fn placement_section(
    options: &ChaosOptions,
    driver: &mut FaultDriver,
    violations: &mut Vec<String>,
) -> Option<placement::PlacementSection> {
    let watch = driver.placement.take()?;
    let wait = options.settle.max(PLACEMENT_SETTLE_MIN);
    let (section, found) = watch.finish(&driver.cluster, wait).await;
    violations.extend(found);
    Some(section)
}

fn storm_section(
    ledger: &StormLedger,
    driver: &FaultDriver,
    sinks: &[String],
    violations: &mut Vec<String>,
) -> StormSection {
    let mut incarnations: Vec<Vec<Arc<crate::actors::data_path::AgentStats>>> = driver
        .retired_sinks
        .iter()
        .map(|(_, stats)| stats.clone())
        .collect();
    for node in &driver.cluster.nodes {
        incarnations.push(faults::sink_stats(&node.parts, sinks));
    }
    let mut unrecorded = 0;
    let consumed: Vec<Vec<u64>> = incarnations
        .iter()
        .map(|stats| {
            stats
                .iter()
                .flat_map(|sink| {
                    unrecorded += sink.unrecorded.load(Ordering::Relaxed);
                    sink.recorded()
                })
                .map(|(_, payload)| checks::storm_id(&payload).unwrap_or(u64::MAX))
                .collect()
        })
        .collect();
    let check = checks::check_storm(&ledger.acknowledged(), ledger.issued(), &consumed);
    if check.acknowledged == 0 {
        violations.push("no storm message was acknowledged: the run checked nothing".into());
    }
    for (count, what) in [
        (
            check.acked_lost,
            "acknowledged storm messages no sink consumed",
        ),
        (
            check.duplicates_within_incarnation,
            "storm messages one node incarnation consumed twice",
        ),
        (
            check.invented,
            "storm messages consumed that were never sent",
        ),
        (
            unrecorded,
            "deliveries the sinks could not record (limit reached), so unchecked",
        ),
    ] {
        if count > 0 {
            violations.push(format!("{count} {what}"));
        }
    }
    StormSection {
        issued: ledger.issued(),
        check,
        refused: ledger.refused(),
        failed: ledger.failed(),
        unsettled: ledger.unsettled.load(Ordering::Relaxed),
        latency_ms: LatencySummary::of(&ledger.latency()),
    }
}

fn raft_violations(check: &checks::RaftCheck, violations: &mut Vec<String>) {
    if let Some(why) = &check.not_linearizable {
        violations.push(format!("the Raft history is not linearizable: {why}"));
    }
    if check.committed_lost > 0 {
        violations.push(format!(
            "{} Raft keys lost an acknowledged write",
            check.committed_lost
        ));
    }
    if !check.unread.is_empty() {
        violations.push(format!(
            "the control plane answered no final read of {} keys after the faults ended",
            check.unread.len()
        ));
    }
}

async fn pbft_section(
    options: &ChaosOptions,
    driver: &FaultDriver,
    replicas: &Arc<ReplicaSet>,
    record: &PbftRecord,
    events: &history::History,
    violations: &mut Vec<String>,
) -> PbftSection {
    let mut client = workload::pbft_client(replicas, options.seed, u64::MAX - 1);
    let finals = workload::pbft_final_reads(&mut client, record, events).await;
    let writes = record.writes.lock().expect("never poisoned").clone();
    let decided = record.decided.lock().expect("never poisoned").clone();
    let mut check = checks::check_pbft(&writes, &finals, &decided);
    check.operations = record.operations.load(Ordering::Relaxed);
    check.answered = record.answered.load(Ordering::Relaxed);
    let correct: Vec<Arc<NodeParts>> = driver
        .cluster
        .nodes
        .iter()
        .filter(|node| driver.cluster.config.pbft.replica_id(&node.id).is_some())
        .filter(|node| driver.faulty_node.as_deref() != Some(node.id.as_str()))
        .map(|node| node.parts.clone())
        .collect();
    let safety_violations = crate::bench::pbft::safety_violations(&correct);
    let view_changes = correct
        .iter()
        .map(|context| {
            context
                .pbft
                .executed
                .lock()
                .expect("never poisoned")
                .views_entered
                .len()
        })
        .max()
        .unwrap_or(0);
    for (count, what) in [
        (
            safety_violations,
            "sequence numbers at which correct PBFT replicas executed different batches",
        ),
        (check.committed_lost, "PBFT keys lost an acknowledged write"),
        (
            check.decisions_sharing_a_place,
            "PBFT decision places given to two acknowledged decisions",
        ),
    ] {
        if count > 0 {
            violations.push(format!("{count} {what}"));
        }
    }
    if !check.unread.is_empty() {
        violations.push(format!(
            "{} PBFT keys whose final read got no answer after the faults ended; replicas: {}",
            check.unread.len(),
            replica_states(driver).await
        ));
    }
    PbftSection {
        faulty_node: driver.faulty_node.clone(),
        check,
        safety_violations,
        view_changes,
    }
}

/// Where each PBFT replica stands, for a report whose group fell silent.
async fn replica_states(driver: &FaultDriver) -> String {
    let mut states = Vec::new();
    for node in &driver.cluster.nodes {
        if driver.cluster.config.pbft.replica_id(&node.id).is_none() {
            continue;
        }
        let context = &node.parts;
        let status = PbftStatus::of(&context.shared, Duration::from_secs(2)).await;
        let counters = context.shared.metrics.counters.values();
        let send_queues: Vec<(&String, Option<usize>)> =
            (context.shared.config.pbft.replicas.iter())
                .filter(|peer| **peer != node.id)
                .map(|peer| (peer, context.shared.peers.queue_room(peer)))
                .collect();
        let counts = format!(
            "room in send queues {send_queues:?}, in the router queue {}, {} packets sent and {} unsent, rejected {} invalid and {} badly signed, dropped {} queue full and {} misaddressed",
            context.shared.mailboxes.router_queue.available_permits(),
            counters.pbft_packets_sent,
            counters.pbft_packets_unsent,
            counters.pbft_rejected_invalid,
            counters.pbft_rejected_signature,
            counters.pbft_dropped_queue_full,
            counters.pbft_dropped_misaddressed,
        );
        states.push(match status {
            Some(status) => format!(
                "{} view {} moving to {:?}, executed {}, view changes heard {:?}, {counts}",
                node.id, status.view, status.moving_to, status.executed, status.view_changes_heard
            ),
            None => format!("{} not answering, {counts}", node.id),
        });
    }
    states.join("; ")
}

fn build_report(
    options: &ChaosOptions,
    driver: &FaultDriver,
    outcome: Outcome,
    run: Run,
) -> ChaosReport {
    let counters = &driver
        .cluster
        .faults
        .as_ref()
        .expect("a chaos run has a fault layer")
        .counters;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let datagrams = Datagrams {
        sent: load(&counters.datagrams_sent),
        dropped_cut: load(&counters.dropped_cut),
        dropped_loss: load(&counters.dropped_loss),
        duplicated: load(&counters.duplicated),
        delayed: load(&counters.delayed),
        dropped_held: load(&counters.dropped_held),
    };
    let kills = driver.tally.kills.clone();
    let kills_total: u64 = kills.values().sum();
    let committed_lost = outcome.raft.as_ref().map_or(0, |raft| raft.committed_lost)
        + outcome
            .pbft
            .as_ref()
            .map_or(0, |pbft| pbft.check.committed_lost);
    let history = HistorySummary {
        file: HISTORY_FILE,
        events: outcome.events.len() as u64,
        dropped: outcome.events.dropped(),
    };
    ChaosReport {
        history,
        header: ReportHeader::new("chaos", options.as_json()),
        duration_s: run.seconds,
        ok: outcome.violations.is_empty(),
        seed: options.seed,
        replay: options.replay(),
        kills_per_s: kills_total as f64 / run.seconds.max(1e-9),
        kills,
        partitions: driver.tally.partitions,
        acked_lost: outcome.storm.check.acked_lost,
        duplicates_delivered: outcome.storm.check.duplicates_delivered,
        committed_lost,
        linearizable: outcome.raft.as_ref().is_none_or(|raft| raft.linearizable),
        invariant_violations: outcome.violations,
        throughput_msgs_per_s: run.throughput,
        messages: outcome.storm,
        raft: outcome.raft,
        pbft: outcome.pbft,
        placement: outcome.placement,
        faults: driver.tally.clone(),
        datagrams,
        over_time: run.over_time,
    }
}
