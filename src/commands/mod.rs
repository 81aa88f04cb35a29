//! What each CLI command does, below argument parsing: `up`, `node`,
//! `keygen`, `check`, `topology`, `kv` and `status`. Each returns its exit
//! status.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cluster::{self, LocalCluster, Totals, UpSummary};
use crate::config::{self, ClusterConfig};
use crate::identity;

mod control;
mod topology;
pub use control::{kv, members, status, KvAction, MembersAction};
pub use topology::{topology, TopologyFormat, TopologyOptions};

/// How long `up` waits for every link before starting the clock anyway.
const LINKS_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long `up` waits for in-flight messages after the load stops.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(10);

/// A duration flag like 10s, 500ms or 2m; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(text)?;
    if duration.is_zero() {
        return Err(format!("{text:?}: a duration must be longer than zero"));
    }
    Ok(duration)
}

/// A duration flag that may be zero.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?}: {error} (try 10s, 500ms, 2m)"))
}

pub fn load_config(path: Option<&Path>) -> anyhow::Result<ClusterConfig> {
    match path {
        Some(path) => Ok(config::load(path)?),
        None => Ok(config::embedded_local()),
    }
}

pub struct UpOptions {
    pub config: Option<PathBuf>,
    pub duration: Duration,
    pub json: bool,
    /// Stop this percentage of the nodes (chosen by the config's seed)...
    pub kill_percent: Option<f64>,
    /// ...this far into the load (default: half way)...
    pub kill_after: Option<Duration>,
    /// ...this way.
    pub kill_how: cluster::Departure,
}

/// How long `up --kill` waits for routes and links to converge.
const CONVERGENCE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Runs every node of the config here, shows progress, prints a summary.
/// Exit status 0 only if every sent message was delivered.
pub async fn up(options: UpOptions) -> anyhow::Result<i32> {
    let config = load_config(options.config.as_deref())?;
    let cluster = LocalCluster::start(config)
        .await
        .context("starting the cluster")?;
    let links_up = cluster.wait_for_links(LINKS_WAIT_MAX).await;
    if links_up.is_none() {
        tracing::warn!(
            "not every link came up within {} s; running anyway",
            LINKS_WAIT_MAX.as_secs()
        );
    }
    let load_started = Instant::now();
    let load = Load {
        started: load_started,
        duration: options.duration,
    };
    let mut cluster = cluster;
    let mut kill = None;
    let interrupted = match options.kill_percent {
        None => show_progress(&cluster, &load, options.duration).await,
        Some(percent) => {
            let after = options.kill_after.unwrap_or(options.duration / 2);
            let before = show_progress(&cluster, &load, after.min(options.duration)).await;
            if before {
                true
            } else {
                let how = options.kill_how;
                let report = kill_and_watch(&mut cluster, percent, how, load_started).await;
                kill = Some(report);
                show_progress(&cluster, &load, options.duration).await
            }
        }
    };
    let active = load_started.elapsed();
    cluster.quiesce();
    let departed = kill
        .as_ref()
        .map_or_else(Vec::new, |report: &cluster::KillReport| {
            report.killed.clone()
        });
    cluster.drain(DRAIN_WAIT_MAX, &departed).await;
    let mut summary = UpSummary::new(&cluster, &cluster.totals(), links_up, active);
    summary.control = cluster.control_status().await;
    if let Some(mut report) = kill {
        report.unsettled_to_departed = cluster.unsettled_to(&report.killed);
        summary.kill = Some(report);
    }
    cluster.shutdown().await;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.to_text());
    }
    if interrupted {
        eprintln!("interrupted: stopped early and shut down cleanly");
    }
    Ok(if summary.clean() { 0 } else { 1 })
}

/// Stops `percent` of the nodes, chosen by the config's seed, as `how`
/// says, and waits until the others' routes converge and their new links
/// are up.
async fn kill_and_watch(
    cluster: &mut LocalCluster,
    percent: f64,
    how: cluster::Departure,
    load_started: Instant,
) -> cluster::KillReport {
    let victims = cluster.choose_victims(percent);
    eprintln!("stopping {} nodes: {victims:?}", victims.len());
    let at_s = load_started.elapsed().as_secs_f64();
    let stopped = Instant::now();
    cluster.stop_nodes(&victims, how).await;
    let stop_ms = stopped.elapsed().as_secs_f64() * 1e3;
    let mut routes_converged_ms = None;
    let mut links_up_ms = None;
    while stopped.elapsed() < CONVERGENCE_WAIT_MAX && links_up_ms.is_none() {
        let elapsed_ms = || stopped.elapsed().as_secs_f64() * 1e3;
        if routes_converged_ms.is_none() && cluster.routes_converged(&victims) {
            routes_converged_ms = Some(elapsed_ms());
        }
        if routes_converged_ms.is_some() && cluster.all_links_up() {
            links_up_ms = Some(elapsed_ms());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cluster::KillReport {
        killed: victims,
        how,
        at_s,
        stop_ms,
        routes_converged_ms,
        links_up_ms,
        unsettled_to_departed: 0,
    }
}

/// The load's clock, for progress shown in more than one stretch.
struct Load {
    started: Instant,
    duration: Duration,
}

/// Shows live figures until `until` into the load, Ctrl-C, or a node
/// fails. Returns true if interrupted.
async fn show_progress(cluster: &LocalCluster, load: &Load, until: Duration) -> bool {
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(load.duration.as_millis() as u64);
    if terminal {
        let style = indicatif::ProgressStyle::with_template("{bar:30} {msg}")
            .expect("static template is valid");
        bar.set_style(style);
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = load.started;
    let mut previous = (Instant::now(), cluster.counters().envelopes_delivered);
    let mut last_line = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = loop {
        let remaining = until.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break false;
        }
        tokio::select! {
            biased;
            _ = &mut ctrl_c => break true,
            _ = tokio::time::sleep(remaining.min(Duration::from_millis(500))) => {}
        }
        // Summing every node's histograms is not free at 100 nodes: only
        // when a line is shown.
        if terminal {
            let line = progress_line(&cluster.totals(), &mut previous);
            bar.set_position(started.elapsed().as_millis() as u64);
            let elapsed = started.elapsed().as_secs();
            bar.set_message(format!("{elapsed}s / {}s {line}", load.duration.as_secs()));
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            let line = progress_line(&cluster.totals(), &mut previous);
            eprintln!("[{:>5.1} s] {line}", started.elapsed().as_secs_f64());
            last_line = Instant::now();
        }
        let failed = cluster.failed_nodes();
        if !failed.is_empty() {
            eprintln!("node(s) {failed:?} failed; stopping");
            break false;
        }
    };
    bar.finish_and_clear();
    interrupted
}

fn progress_line(totals: &Totals, previous: &mut (Instant, u64)) -> String {
    let delivered = totals.counters.envelopes_delivered;
    let rate =
        delivered.saturating_sub(previous.1) as f64 / previous.0.elapsed().as_secs_f64().max(1e-3);
    *previous = (Instant::now(), delivered);
    let latency = crate::metrics::LatencySummary::of(&totals.latency);
    format!(
        "delivered {delivered} ({rate:.0}/s)  p50 {:.2} ms  p99 {:.2} ms  refused {}",
        latency.p50,
        latency.p99,
        totals.refused()
    )
}

pub struct NodeOptions {
    pub config: PathBuf,
    pub id: String,
    pub key: Option<PathBuf>,
    /// Stop after this long (None: until Ctrl-C or SIGTERM).
    pub duration: Option<Duration>,
    pub status_interval: Duration,
}

/// Runs one node until Ctrl-C, SIGTERM or `duration`; prints a JSON status
/// line to stdout every `status_interval` and once at the end.
pub async fn node(options: NodeOptions) -> anyhow::Result<i32> {
    let config = config::load(&options.config)?;
    let node = cluster::start_single(config, &options.id, options.key.as_deref()).await?;
    let deadline = options.duration.map(|duration| Instant::now() + duration);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut ticker = tokio::time::interval(options.status_interval);
    ticker.tick().await;
    let failed = loop {
        let until_deadline = deadline.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break false,
            _ = terminate.recv() => break false,
            _ = tokio::time::sleep(until_deadline) => break false,
            _ = ticker.tick() => {
                println!("{}", node_status(&node));
                if !node.is_running() {
                    break true;
                }
            }
        }
    };
    let status = node_status(&node);
    node.shutdown().await;
    println!("{status}");
    Ok(if failed { 1 } else { 0 })
}

fn node_status(node: &crate::actors::node::NodeHandle) -> String {
    let totals = Totals::of(std::iter::once(node));
    let agents: serde_json::Map<String, serde_json::Value> = node
        .context
        .agent_stats
        .iter()
        .map(|entry| {
            let stats = entry.value();
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
            let value = serde_json::json!({
                "sent": load(&stats.sent), "refused": load(&stats.refused),
                "received_data": load(&stats.received_data), "received_replies": load(&stats.received_replies),
                "acknowledged": load(&stats.acknowledged),
            });
            (entry.key().clone(), value)
        })
        .collect();
    serde_json::json!({
        "node": node.id,
        "running": node.is_running(),
        "connected": node.context.peers.connected(),
        "counters": totals.counters,
        "latency_ms": crate::metrics::LatencySummary::of(&totals.latency),
        "agents": agents,
    })
    .to_string()
}

/// Writes a key file per node id into `out` and prints the TOML lines that
/// give each node its identity. Ids come from `ids`, or from `config`.
pub fn keygen(out: &Path, ids: &[String], config: Option<&Path>) -> anyhow::Result<i32> {
    let ids: Vec<String> = match config {
        Some(path) => config::load(path)?
            .nodes
            .into_iter()
            .map(|node| node.id)
            .collect(),
        None => ids.to_vec(),
    };
    anyhow::ensure!(
        !ids.is_empty(),
        "name at least one node id, or give --config"
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for id in &ids {
        let key = identity::generate_key();
        let path = out.join(format!("{id}.key"));
        identity::write_key_file(&path, &key)?;
        println!(
            "[[nodes]]\nid = {id:?}\npublic_key = {:?}\nkey_file = {:?}\n",
            identity::public_key_text(&key.verifying_key()),
            path.display().to_string()
        );
    }
    eprintln!(
        "wrote {} key file(s) to {}; add each node's listen address to its entry",
        ids.len(),
        out.display()
    );
    Ok(0)
}

/// Validates a config without starting anything.
pub fn check(path: &Path) -> anyhow::Result<i32> {
    let config = config::load(path)?;
    println!(
        "{}: ok: cluster {:?}, {} nodes, {} agents, topology {}",
        path.display(),
        config.name,
        config.nodes.len(),
        config.agents.len(),
        config.topology.kind.name()
    );
    Ok(0)
}
