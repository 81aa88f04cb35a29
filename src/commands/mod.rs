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
mod place;
mod topology;
pub use control::{call, kv, members, status, CallOptions, KvAction, MembersAction};
pub use place::{place, PlaceOptions};
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
    // Flags taking a duration accept a leading '-' so that it reaches
    // here and is refused for what it is, not as an unknown flag.
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{text:?}: a duration cannot be negative (try 10s, 500ms, 2m)"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|error| format!("{text:?}: {error} (try 10s, 500ms, 2m)"))
}

/// The config at `path` (or the embedded one), its agents' behaviours
/// checked against the built-in ones.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<ClusterConfig> {
    match path {
        Some(path) => Ok(load_builtin_checked(path)?),
        None => Ok(config::embedded_local()),
    }
}

/// The config at `path`, with the problems the built-in behaviours find
/// reported beside the others.
pub fn load_builtin_checked(path: &Path) -> Result<ClusterConfig, config::ConfigError> {
    let registry = crate::agent_api::Registry::with_builtins();
    config::load_checked(path, &|config| registry.problems(config))
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
    let mut interrupts = Interrupts::new()?;
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
        None => show_progress(&cluster, &load, options.duration, &mut interrupts).await,
        Some(percent) => {
            let after = options.kill_after.unwrap_or(options.duration / 2);
            let before = show_progress(
                &cluster,
                &load,
                after.min(options.duration),
                &mut interrupts,
            )
            .await;
            if before {
                true
            } else {
                let how = options.kill_how;
                let report = kill_and_watch(&mut cluster, percent, how, load_started).await;
                kill = Some(report);
                show_progress(&cluster, &load, options.duration, &mut interrupts).await
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

/// SIGINT (Ctrl-C) and SIGTERM (a service manager's stop), which end a
/// run alike. Registered when made, so that one arriving while the nodes
/// start is seen at the first wait instead of killing the process.
struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Interrupts> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupts {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// The load's clock, for progress shown in more than one stretch.
struct Load {
    started: Instant,
    duration: Duration,
}

/// Shows live figures until `until` into the load, Ctrl-C or SIGTERM, or
/// a node fails. Returns true if interrupted.
async fn show_progress(
    cluster: &LocalCluster,
    load: &Load,
    until: Duration,
    interrupts: &mut Interrupts,
) -> bool {
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
    let interrupted = loop {
        let remaining = until.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            break false;
        }
        tokio::select! {
            biased;
            _ = interrupts.recv() => break true,
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
    let config = load_builtin_checked(&options.config)?;
    let mut interrupts = Interrupts::new()?;
    let node = cluster::start_single(config, &options.id, options.key.as_deref()).await?;
    let deadline = options.duration.map(|duration| Instant::now() + duration);
    let mut ticker = tokio::time::interval(options.status_interval);
    ticker.tick().await;
    let failed = loop {
        let until_deadline = deadline.map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            biased;
            _ = interrupts.recv() => break false,
            _ = tokio::time::sleep(until_deadline) => break false,
            _ = ticker.tick() => {
                print_status(&node_status(&node, false));
                if !node.is_running() {
                    break true;
                }
            }
        }
    };
    let status = node_status(&node, true);
    node.shutdown().await;
    print_status(&status);
    Ok(if failed { 1 } else { 0 })
}

/// Writes a status line to stdout. A reader that went away (a closed
/// pipe) is no reason for the node to stop, so a failed write is ignored.
fn print_status(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// One JSON status line; `last` marks the line printed as the node stops
/// (`"final": true`, taken before it stops, so its figures are whole).
fn node_status(node: &crate::actors::node::NodeHandle, last: bool) -> String {
    let totals = Totals::of(std::iter::once(node));
    let agents: serde_json::Map<String, serde_json::Value> = node
        .parts.data_path.agent_stats
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
        "final": last,
        "running": node.is_running(),
        "connected": node.parts.shared.peers.connected(),
        "counters": totals.counters,
        "latency_ms": crate::metrics::LatencySummary::of(&totals.latency),
        "agents": agents,
    })
    .to_string()
}

/// Writes a key file per node id into `out` and prints the TOML lines that
/// give each node its identity. Ids come from `ids`, or from `config`.
/// Nothing is written unless every file can be: the ids are checked, no
/// key file may exist yet, and if one write fails those written before it
/// are removed. `key_file` is printed as an absolute path, which resolves
/// the same from any config's folder.
/// Addresses `keygen` prints in the entry of the one node it makes a key
/// for, so that an entry is whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Addresses {
    pub listen: Option<std::net::SocketAddr>,
    pub client_listen: Option<std::net::SocketAddr>,
}

pub fn keygen(
    out: &Path,
    ids: &[String],
    config: Option<&Path>,
    addresses: Addresses,
) -> anyhow::Result<i32> {
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
    let addressed = addresses.listen.is_some() || addresses.client_listen.is_some();
    anyhow::ensure!(
        !addressed || (ids.len() == 1 && config.is_none()),
        "--listen and --client-listen give one node's addresses: name exactly one id"
    );
    let mut problems: Vec<String> = ids
        .iter()
        .filter_map(|id| config::name_problem(id))
        .collect();
    let mut seen = std::collections::HashSet::new();
    problems.extend(
        ids.iter()
            .filter(|id| !seen.insert(*id))
            .map(|id| format!("{id:?} is named twice")),
    );
    let paths: Vec<PathBuf> = ids.iter().map(|id| out.join(format!("{id}.key"))).collect();
    problems.extend(paths.iter().filter(|path| path.exists()).map(|path| {
        format!(
            "{} exists already (key files are never overwritten)",
            path.display()
        )
    }));
    anyhow::ensure!(
        problems.is_empty(),
        "nothing written: {}",
        problems.join("; ")
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let folder =
        std::fs::canonicalize(out).with_context(|| format!("resolving {}", out.display()))?;
    let mut entries = String::new();
    for (index, (id, path)) in ids.iter().zip(&paths).enumerate() {
        let key = identity::generate_key();
        if let Err(error) = identity::write_key_file(path, &key) {
            for written in &paths[..index] {
                let _ = std::fs::remove_file(written);
            }
            anyhow::bail!("nothing written: {error}");
        }
        entries += &format!(
            "[[nodes]]\nid = {id:?}\npublic_key = {:?}\nkey_file = {:?}\n",
            identity::public_key_text(&key.verifying_key()),
            folder.join(format!("{id}.key")).display().to_string()
        );
        if let Some(listen) = addresses.listen {
            entries += &format!("listen = \"{listen}\"\n");
        }
        if let Some(client_listen) = addresses.client_listen {
            entries += &format!("client_listen = \"{client_listen}\"\n");
        }
        entries.push('\n');
    }
    print!("{entries}");
    let hint = match addresses.listen {
        Some(_) => "",
        None => "; add each node's listen address to its entry",
    };
    eprintln!(
        "wrote {} key file(s) to {}{hint}",
        ids.len(),
        folder.display()
    );
    Ok(0)
}

/// What a config is checked for, beside its own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFor {
    /// `agentmesh up`: every node in this process.
    Up,
    /// `agentmesh node`: one node per process, on its own host.
    Node,
}

/// Validates a config without starting anything, then what `target` would
/// refuse: every problem is listed, and the exit code is 1 if any.
pub fn check(path: &Path, target: Option<CheckFor>, id: Option<&str>) -> anyhow::Result<i32> {
    let config = load_builtin_checked(path)?;
    let keys_listed = config.nodes.iter().any(|node| node.public_key.is_some());
    let target = target.unwrap_or(if keys_listed {
        CheckFor::Node
    } else {
        CheckFor::Up
    });
    anyhow::ensure!(
        id.is_none() || target == CheckFor::Node,
        "--id names the node of `agentmesh node`: give it with --for node"
    );
    let mut notes = Vec::new();
    let problems: Vec<String> = match (target, id) {
        (CheckFor::Up, _) => cluster::check_keys_for_all(&config)
            .err()
            .map(|error| error.to_string())
            .into_iter()
            .collect(),
        (CheckFor::Node, Some(id)) => cluster::plan_single(&config, id, None)
            .err()
            .map(|error| error.to_string())
            .into_iter()
            .collect(),
        // Every node's needs; each key file present here is checked, and
        // one that is not is noted: it belongs on its own node's host.
        (CheckFor::Node, None) => config
            .nodes
            .iter()
            .filter_map(|node| {
                let outcome = match cluster::key_file_of(&config, &node.id) {
                    Some(path) if !path.exists() => {
                        notes.push(format!(
                            "node {}: key file {} is not on this machine; on its host, check with --id {}",
                            node.id,
                            path.display(),
                            node.id
                        ));
                        cluster::single_node_needs(&config, &node.id).map(|_| ())
                    }
                    _ => cluster::plan_single(&config, &node.id, None).map(|_| ()),
                };
                outcome.err().map(|error| error.to_string())
            })
            .collect(),
    };
    for note in &notes {
        eprintln!("note: {note}");
    }
    let mut seen = std::collections::HashSet::new();
    let problems: Vec<String> = problems
        .into_iter()
        .filter(|problem| seen.insert(problem.clone()))
        .collect();
    let target_name = match target {
        CheckFor::Up => "agentmesh up",
        CheckFor::Node => "agentmesh node",
    };
    if !problems.is_empty() {
        eprintln!("{}: {} would refuse it:", path.display(), target_name);
        for problem in &problems {
            eprintln!("  {problem}");
        }
        return Ok(1);
    }
    println!(
        "{}: ok for {target_name}: cluster {:?}, {} nodes, {} agents, topology {}",
        path.display(),
        config.name,
        config.nodes.len(),
        config.agents.len(),
        config.topology.kind.name()
    );
    Ok(0)
}
