//! `agentmesh bench raft`: the control plane measured end to end over its
//! client API (TCP on loopback → replica actor → raft-rs → raft-engine with
//! fsync → QUIC to the other replicas → commit → apply → answer).
//!
//! Four parts, each on replicas that all run in this process:
//! 1. one client writing as fast as it is answered: commit latency alone;
//! 2. `--clients` clients writing at once: commits per second;
//! 3. leader failover, `--failovers` times: the leader's node crashes, and
//!    the time until a write commits at a new leader is measured;
//! 4. snapshot transfer, for each size in `--snapshot-mb`: a replica whose
//!    log is wiped rejoins a group whose log is compacted into a snapshot
//!    of that size, and the time until it has installed it is measured.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use super::report::{ReportHeader, Tally, Window};
use super::resources;
use crate::actors::messages::RaftMsg;
use crate::clients::control::ControlClient;
use crate::cluster::LocalCluster;
use crate::config::{ClusterConfig, REPLICAS_MAX};
use crate::metrics::LatencySummary;
use crate::protocols::cluster_state::RequestId;
use crate::protocols::control::{ClientReply, ClientRequest, Operation, ReplicaStatus};

/// Keys each client cycles through, so the state stays bounded.
const KEYS_PER_CLIENT: u64 = 256;
/// Most clients a run may start.
const CLIENTS_MAX: usize = 4_096;
/// Bytes of one value when filling the state for a snapshot.
const BLOB_BYTES: usize = 1_000_000;
/// Clients filling the state for a snapshot.
const FILL_CLIENTS: u64 = 4;
/// How long any wait of the benchmark may take before it gives up.
const WAIT_MAX: Duration = Duration::from_secs(120);
/// Pause between looks while waiting for a leader or a catch-up.
const POLL: Duration = Duration::from_millis(2);

#[derive(clap::Args, Clone, Debug)]
pub struct RaftOptions {
    /// Replicas in the group (all in this process).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Clients writing at once in the throughput part.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Bytes of each written value.
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// The measured window of the throughput part.
    #[arg(long, allow_hyphen_values = true, default_value = "10s", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    /// The measured window of the single-client part.
    #[arg(long, allow_hyphen_values = true, default_value = "3s", value_parser = crate::commands::parse_duration)]
    pub single_duration: Duration,
    /// Load before each window, not measured.
    #[arg(long, allow_hyphen_values = true, default_value = "1s", value_parser = crate::commands::parse_duration_or_zero)]
    pub warmup: Duration,
    /// Do not force writes to disk: a machine crash could then lose
    /// acknowledged writes. The report says which was used.
    #[arg(long)]
    pub no_fsync: bool,
    /// Leader crashes to time (0: none).
    #[arg(long, default_value_t = 3)]
    pub failovers: usize,
    /// Snapshot sizes to transfer to a fresh replica, in MB (the flag
    /// alone: none). Each size is timed `--snapshot-runs` times, on a
    /// fresh group each time, and the median run reported.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1,10,100")]
    pub snapshot_mb: Vec<u64>,
    #[arg(long, default_value_t = 3)]
    pub snapshot_runs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where report.json, report.md and the plots go.
    #[arg(long, default_value = "bench-results/raft")]
    pub out: PathBuf,
}

impl RaftOptions {
    fn check(&self) -> anyhow::Result<()> {
        if !(1..=REPLICAS_MAX).contains(&self.replicas) {
            bail!("--replicas {}: give 1 to {REPLICAS_MAX}", self.replicas);
        }
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            bail!("--clients {}: give 1 to {CLIENTS_MAX}", self.clients);
        }
        let value_max = crate::protocols::cluster_state::VALUE_BYTES_MAX;
        if self.payload > value_max {
            bail!(
                "--payload {}: values are at most {value_max} bytes",
                self.payload
            );
        }
        if self.failovers > 0 && self.replicas < 3 {
            bail!("--failovers needs at least 3 replicas, so a majority survives the leader");
        }
        if let Some(size) = self
            .snapshot_mb
            .iter()
            .find(|size| !(1..=400).contains(*size))
        {
            bail!("--snapshot-mb {size}: give sizes from 1 to 400 MB");
        }
        if !(1..=9).contains(&self.snapshot_runs) {
            bail!("--snapshot-runs {}: give 1 to 9", self.snapshot_runs);
        }
        Ok(())
    }

    fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "replicas": self.replicas,
            "clients": self.clients,
            "payload": self.payload,
            "duration": humantime::format_duration(self.duration).to_string(),
            "single_duration": humantime::format_duration(self.single_duration).to_string(),
            "warmup": humantime::format_duration(self.warmup).to_string(),
            "fsync": !self.no_fsync,
            "failovers": self.failovers,
            "snapshot_mb": self.snapshot_mb,
            "snapshot_runs": self.snapshot_runs,
            "seed": self.seed,
        })
    }
}

/// A port nothing listens on now, for a replica's client API. It is taken
/// below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection made meanwhile, which gets an ephemeral source port, can
/// take it before the replica binds it.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..1_000 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 between 20000 and 32000")
}

/// The standby replica that receives snapshots.
const FRESH: &str = "fresh";

/// `--replicas` voting replicas r1, r2, ..., and with `standby` one more
/// replica, FRESH, outside the group until it is added.
fn cluster_config(
    options: &RaftOptions,
    data: &Path,
    standby: bool,
) -> anyhow::Result<ClusterConfig> {
    let mut text = format!(
        "[cluster]\nname = \"bench-raft\"\nseed = {}\n",
        options.seed
    );
    let ids: Vec<String> = (1..=options.replicas)
        .map(|index| format!("r{index}"))
        .collect();
    let standby: Vec<String> = standby.then(|| FRESH.to_string()).into_iter().collect();
    for id in ids.iter().chain(&standby) {
        text += &format!(
            "[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\nclient_listen = \"127.0.0.1:{}\"\n",
            free_port()?
        );
    }
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += &format!(
        "[control]\nreplicas = {ids:?}\nstandby = {standby:?}\ndata_dir = {:?}\nfsync = {}\npending_requests_max = {}\n",
        data.display(),
        !options.no_fsync,
        CLIENTS_MAX * 2,
    );
    Ok(crate::config::parse(
        &text,
        "bench-raft.toml",
        Path::new("."),
    )?)
}

/// Writes of one part: how many committed, how long each took.
struct Load {
    commits: u64,
    failures: u64,
    seconds: f64,
    latency: Histogram<u64>,
    /// Commits per second, second by second.
    over_time: Vec<(f64, f64)>,
}

/// `clients` clients write `payload`-byte values through `leader` for
/// `warmup` then `window`; only the window is measured.
async fn load(
    config: &ClusterConfig,
    leader: &str,
    clients: usize,
    payload: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Load> {
    let measured = Window::new(warmup, window);
    let mut tasks = Vec::with_capacity(clients);
    for client_index in 0..clients as u64 {
        let mut client = ControlClient::from_config(config)?;
        client.prefer(leader);
        let measured = measured.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let value = vec![b'x'; payload];
            let mut sequence = 0u64;
            while measured.open() {
                sequence += 1;
                let key = format!("c{client_index}-{}", sequence % KEYS_PER_CLIENT);
                let started = Instant::now();
                let done = client.put(&key, value.clone()).await.is_ok();
                measured.record(&mut tally, started, done);
            }
            tally
        }));
    }
    let (tally, commits, over_time) = measured.finish(tasks).await?;
    Ok(Load {
        commits,
        failures: tally.failures,
        seconds: window.as_secs_f64(),
        latency: tally.latency,
        over_time,
    })
}

/// Waits until every voter follows one leader of a term above
/// `after_term`, connected to every other; returns that leader's status.
async fn settled(cluster: &LocalCluster, after_term: u64) -> anyhow::Result<ReplicaStatus> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let mut statuses = Vec::new();
        for node in &cluster.nodes {
            statuses.extend(cluster.replica_status(&node.id).await);
        }
        let leader = statuses
            .iter()
            .find(|status| status.role == "leader" && status.term > after_term);
        if let Some(leader) = leader {
            let voters: Vec<&ReplicaStatus> = statuses
                .iter()
                .filter(|status| leader.voters.contains(&status.node))
                .collect();
            let agreed = voters.len() == leader.voters.len()
                && voters
                    .iter()
                    .all(|status| status.leader.as_deref() == Some(&leader.node));
            if agreed && linked(cluster, &leader.voters) {
                return Ok(leader.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("no leader settled within {WAIT_MAX:?}: {statuses:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether every one of `voters` holds a connection to every other (a
/// restarted node's peers redial it with backoff).
fn linked(cluster: &LocalCluster, voters: &[String]) -> bool {
    voters.iter().all(|voter| {
        cluster.node(voter).is_some_and(|node| {
            voters
                .iter()
                .all(|peer| peer == voter || node.parts.shared.peers.is_connected(peer))
        })
    })
}

/// Crashes the leader's node and times how long until a write commits at
/// a new leader; the node is then restarted and the group settles again.
async fn one_failover(cluster: &mut LocalCluster, sequence: &mut u64) -> anyhow::Result<f64> {
    let leader = settled(cluster, 0).await?;
    let node = cluster
        .detach_node(&leader.node)
        .expect("the leader runs here");
    let crashed = Instant::now();
    // The crash winds down (connections, disk) while the others elect.
    let crash = tokio::spawn(node.crash());
    let deadline = crashed + WAIT_MAX;
    let elapsed = 'found: loop {
        let survivors: Vec<String> = cluster.nodes.iter().map(|node| node.id.clone()).collect();
        for node in &survivors {
            let Some(status) = cluster.replica_status(node).await else {
                continue;
            };
            if status.role != "leader" || status.term <= leader.term {
                continue;
            }
            *sequence += 1;
            let request = RequestId {
                client: u64::MAX,
                sequence: *sequence,
            };
            let put = Operation::Put {
                key: "failover".into(),
                value: sequence.to_le_bytes().to_vec(),
            };
            let request = ClientRequest {
                request,
                operation: put,
            };
            if let Some(ClientReply::Done) = cluster.ask_replica(node, request, WAIT_MAX).await {
                break 'found crashed.elapsed();
            }
        }
        if Instant::now() > deadline {
            bail!("no write committed within {WAIT_MAX:?} of the leader's crash");
        }
        tokio::time::sleep(POLL).await;
    };
    crash.await?;
    cluster.restart_node(&leader.node).await?;
    settled(cluster, 0).await?;
    Ok(elapsed.as_secs_f64() * 1_000.0)
}

#[derive(Clone, Debug, Serialize)]
pub struct SnapshotFigures {
    pub bytes: u64,
    pub ms: f64,
    pub mb_per_s: f64,
    /// Streams the transfer went on at once.
    pub streams: u32,
}

/// Fills a fresh group's state with `megabytes` of values, compacts every
/// log into a snapshot, then adds the standby replica FRESH (empty log) and
/// times how long until it has installed the snapshot.
async fn snapshot_transfer(
    options: &RaftOptions,
    megabytes: u64,
) -> anyhow::Result<SnapshotFigures> {
    let data = tempfile::tempdir().context("cannot make a temporary folder")?;
    let config = cluster_config(options, data.path(), true)?;
    let cluster = LocalCluster::start(config.clone()).await?;
    let leader = settled(&cluster, 0).await?;
    fill(&config, &leader.node, megabytes, options.seed).await?;
    // Every voter holds the whole log before it is compacted, so only the
    // new replica needs the snapshot.
    caught_up(&cluster, &leader.voters).await?;
    for node in &cluster.nodes {
        if let Some(replica) = node.parts.shared.mailboxes.replica.get() {
            replica
                .call(RaftMsg::CompactNow, Some(WAIT_MAX))
                .await
                .context("compaction")?;
        }
    }
    let counters = &cluster
        .node(FRESH)
        .expect("configured")
        .parts
        .shared
        .metrics
        .counters;
    let mut client = ControlClient::from_config(&config)?.with_deadline(WAIT_MAX);
    client.prefer(&leader.node);
    let started = Instant::now();
    client.change_membership(FRESH, true).await?;
    let deadline = started + WAIT_MAX;
    while counters.raft_snapshots_installed.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            bail!("{FRESH} installed no snapshot within {WAIT_MAX:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed();
    let bytes = counters
        .raft_snapshot_bytes_installed
        .load(Ordering::Relaxed);
    cluster.shutdown().await;
    Ok(SnapshotFigures {
        bytes,
        streams: crate::protocols::wire::transfer::streams_for(bytes),
        ms: elapsed.as_secs_f64() * 1_000.0,
        mb_per_s: bytes as f64 / 1e6 / elapsed.as_secs_f64(),
    })
}

/// Waits until each of `voters` has applied what the leader committed.
async fn caught_up(cluster: &LocalCluster, voters: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let mut applied = Vec::new();
        for voter in voters {
            applied.extend(
                cluster
                    .replica_status(voter)
                    .await
                    .map(|status| (status.applied_index, status.commit_index)),
            );
        }
        let commit = applied.iter().map(|(_, commit)| *commit).max().unwrap_or(0);
        if applied.len() == voters.len() && applied.iter().all(|(index, _)| *index >= commit) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the voters did not catch up within {WAIT_MAX:?}: {applied:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes `megabytes` values of incompressible bytes through `leader`.
async fn fill(
    config: &ClusterConfig,
    leader: &str,
    megabytes: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for client_index in 0..FILL_CLIENTS {
        let mut client = ControlClient::from_config(config)?.with_deadline(WAIT_MAX);
        client.prefer(leader);
        tasks.push(tokio::spawn(async move {
            let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ client_index);
            let mut value = vec![0u8; BLOB_BYTES];
            for index in (client_index..megabytes).step_by(FILL_CLIENTS as usize) {
                random.fill_bytes(&mut value);
                client.put(&format!("blob-{index}"), value.clone()).await?;
            }
            Ok::<(), crate::clients::control::ClientError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadFigures {
    pub clients: usize,
    pub commits: u64,
    pub failures: u64,
    pub commits_per_s: f64,
    pub commit_latency_ms: LatencySummary,
}

impl LoadFigures {
    fn of(clients: usize, load: &Load) -> LoadFigures {
        LoadFigures {
            clients,
            commits: load.commits,
            failures: load.failures,
            commits_per_s: load.commits as f64 / load.seconds,
            commit_latency_ms: LatencySummary::of(&load.latency),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RaftReport {
    /// `scenario`, `version`, `machine` and `config`, at the top level.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub duration_s: f64,
    pub ok: bool,
    pub replicas: usize,
    pub fsync: bool,
    /// The throughput part (`--clients` at once).
    pub commits_per_s: f64,
    pub commit_latency_ms: LatencySummary,
    pub clients: LoadFigures,
    pub single_client: LoadFigures,
    /// Median over the failovers; every one in `leader_failovers_ms`.
    pub leader_failover_ms: Option<f64>,
    pub leader_failovers_ms: Vec<f64>,
    /// The largest snapshot transferred; every size in `snapshots`.
    pub snapshot: Option<SnapshotFigures>,
    pub snapshots: Vec<SnapshotFigures>,
    /// Writes to the Raft log in the throughput part, and entries per
    /// write (group commit).
    pub log_writes: u64,
    pub entries_per_log_write: f64,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub over_time: Vec<(f64, f64)>,
}

pub async fn raft(options: RaftOptions) -> anyhow::Result<i32> {
    options.check()?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    let data = tempfile::tempdir().context("cannot make a temporary folder")?;
    let config = cluster_config(&options, data.path(), false)?;
    let mut cluster = LocalCluster::start(config.clone()).await?;
    let leader = settled(&cluster, 0).await?;
    eprintln!(
        "raft: {} replicas, leader {}, fsync {}",
        options.replicas, leader.node, !options.no_fsync
    );
    let single = load(
        &config,
        &leader.node,
        1,
        options.payload,
        options.warmup,
        options.single_duration,
    )
    .await?;
    eprintln!(
        "raft: one client: {:.0} commits/s, p50 {:.2} ms",
        single.commits as f64 / single.seconds,
        LatencySummary::of(&single.latency).p50
    );
    let writes_before = cluster.counters().raft_log_writes;
    let cpu_before = resources::cpu_time();
    let many = load(
        &config,
        &leader.node,
        options.clients,
        options.payload,
        options.warmup,
        options.duration,
    )
    .await?;
    let cpu = resources::cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| (after - before).as_secs_f64());
    let log_writes = cluster.counters().raft_log_writes - writes_before;
    eprintln!(
        "raft: {} clients: {:.0} commits/s, p50 {:.2} ms",
        options.clients,
        many.commits as f64 / many.seconds,
        LatencySummary::of(&many.latency).p50
    );
    let mut failovers = Vec::new();
    let mut sequence = 0;
    for _ in 0..options.failovers {
        failovers.push(one_failover(&mut cluster, &mut sequence).await?);
        eprintln!(
            "raft: failover {:.1} ms",
            failovers.last().expect("just pushed")
        );
    }
    cluster.shutdown().await;
    let mut snapshots = Vec::new();
    for &megabytes in &options.snapshot_mb {
        let mut runs = Vec::new();
        for _ in 0..options.snapshot_runs {
            let figures = snapshot_transfer(&options, megabytes).await?;
            eprintln!(
                "raft: snapshot of {} bytes in {:.1} ms: {:.0} MB/s",
                figures.bytes, figures.ms, figures.mb_per_s
            );
            runs.push(figures);
        }
        runs.sort_by(|a, b| a.ms.total_cmp(&b.ms));
        snapshots.push(runs[runs.len() / 2].clone());
    }
    let report = report(
        &options, &single, &many, failovers, snapshots, log_writes, cpu,
    );
    write(&options.out, &report, &many.latency)?;
    print!("{}", to_markdown(&report));
    Ok(if report.ok { 0 } else { 1 })
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

fn report(
    options: &RaftOptions,
    single: &Load,
    many: &Load,
    failovers: Vec<f64>,
    snapshots: Vec<SnapshotFigures>,
    log_writes: u64,
    cpu_seconds: Option<f64>,
) -> RaftReport {
    let clients = LoadFigures::of(options.clients, many);
    let single_client = LoadFigures::of(1, single);
    let largest = snapshots
        .iter()
        .max_by_key(|figures| figures.bytes)
        .cloned();
    RaftReport {
        header: ReportHeader::new("raft", options.as_json()),
        duration_s: many.seconds,
        ok: many.failures == 0 && single.failures == 0 && many.commits > 0,
        replicas: options.replicas,
        fsync: !options.no_fsync,
        commits_per_s: clients.commits_per_s,
        commit_latency_ms: clients.commit_latency_ms.clone(),
        clients,
        single_client,
        leader_failover_ms: median(&failovers),
        leader_failovers_ms: failovers,
        snapshot: largest,
        snapshots,
        log_writes,
        entries_per_log_write: many.commits as f64 / log_writes.max(1) as f64,
        cpu_percent: cpu_seconds.map_or(0.0, |seconds| seconds / many.seconds * 100.0),
        rss_bytes: resources::resident_bytes().map_or(0, |(_, peak)| peak),
        over_time: many.over_time.clone(),
    }
}

/// The competitor's published figures by group size: commit latency ms.
fn competitor_latency_ms(replicas: usize) -> Option<f64> {
    match replicas {
        3 => Some(1.13),
        5 => Some(2.26),
        7 => Some(3.39),
        _ => None,
    }
}

pub fn to_markdown(report: &RaftReport) -> String {
    let competitor = competitor_latency_ms(report.replicas)
        .map_or("—".to_string(), |ms| format!("{ms} ms per commit"));
    let one = &report.single_client;
    let many = &report.clients;
    let mut text = format!(
        "# Raft control plane: {} replicas, fsync {}\n\n| | agentmesh | coordination protocol | etcd 3.4 (3 members, this kind of machine) |\n|---|---|---|---|\n",
        report.replicas,
        if report.fsync { "on" } else { "off (benchmark only)" },
    );
    text += &format!(
        "| one client | {:.0} commits/s, p50 {:.2} ms, p99 {:.2} ms | 883 commits/s at 3 replicas; {competitor} | 583 writes/s at 1.6 ms (published, 8 vCPU) |\n",
        one.commits_per_s, one.commit_latency_ms.p50, one.commit_latency_ms.p99
    );
    text += &format!(
        "| {} clients | **{:.0} commits/s**, p50 {:.2} ms, p99 {:.2} ms | — | ~950 writes/s with 200 clients, ~2,700 at best with 500 |\n",
        many.clients, many.commits_per_s, many.commit_latency_ms.p50, many.commit_latency_ms.p99
    );
    if let Some(failover) = report.leader_failover_ms {
        let all: Vec<String> = report
            .leader_failovers_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        text += &format!(
            "| leader failover (crash → next commit) | {failover:.0} ms median ({} ms) | election 2.26 ms at 3 nodes | — |\n",
            all.join(", ")
        );
    }
    for snapshot in &report.snapshots {
        text += &format!(
            "| snapshot of {:.1} MB to a fresh replica | {:.0} ms, {:.0} MB/s, {} | 100 MB to 3 nodes in 210 ms (995 MB/s) | — |\n",
            snapshot.bytes as f64 / 1e6,
            snapshot.ms,
            snapshot.mb_per_s,
            match snapshot.streams {
                1 => "one stream".to_string(),
                streams => format!("{streams} streams at once"),
            }
        );
    }
    text += &format!(
        "\nGroup commit: {} log writes carried the {} commits of the throughput part ({:.1} per write). Failed writes: {} (one client), {} (many). CPU {:.0} % of one core; peak RSS {:.0} MB.\n",
        report.log_writes,
        many.commits,
        report.entries_per_log_write,
        one.failures,
        many.failures,
        report.cpu_percent,
        report.rss_bytes as f64 / 1e6
    );
    text
}

fn write(out: &Path, report: &RaftReport, latency: &Histogram<u64>) -> anyhow::Result<()> {
    let titles = super::report::PlotTitles {
        latency: "Commit latency (CDF)",
        latency_axis: "fraction committed",
        throughput: "Commits per second",
        throughput_axis: "commits/s",
    };
    let markdown = to_markdown(report);
    super::report::write_report_files(out, report, &markdown, latency, &report.over_time, &titles)
}
