//! `agentmesh bench storm`: storm agents send authenticated messages to each
//! other through the whole actor tree (agent → router → transport → QUIC →
//! ... → agent) for a measured window after a warm-up, then the run drains
//! and the report is written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;

use super::crypto;
use super::report::{
    AgentRow, Bandwidth, Graph, LostByCause, Messages, Quantiles, ReportHeader, Resources, Sample,
    Setup, StormReport,
};
use super::resources;
use super::workers::{Request, Workers};
use crate::cluster::{percent, LocalCluster, Totals};
use crate::config::{self, ClusterConfig, LimitsConfig, TopologyKind, NODES_MAX};
use crate::metrics::{CounterValues, LatencySummary};
use crate::protocols::topology::{GraphMetrics, Topology};
use crate::protocols::wire::limits::TTL_MAX;

/// How long the run may take to settle what is in flight at the end.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(60);
/// Agents listed at each end of the per-agent table.
const AGENT_ROWS: usize = 5;
/// The storm rate for `--rate 0`: more than any node accepts, so every
/// tick sends until the router refuses (the storm sheds the rest).
const SATURATING_RATE: f64 = 1_000_000.0;
/// Hops beyond the overlay's diameter an envelope may take to route
/// around a failed link.
const TTL_DETOUR_HOPS: usize = 4;
/// Most worker processes a storm starts.
const PROCESSES_MAX: usize = 64;
/// Nodes per core a process runs with the default failure detector.
const NODES_PER_CORE_CALM: usize = 64;
/// Time spent measuring the machine's signature costs.
const CRYPTO_BUDGET: Duration = Duration::from_millis(600);

#[derive(clap::Args, Clone, Debug)]
pub struct StormOptions {
    /// Nodes, all in this process.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Neighbours per node (partial mesh, shards); default: the k rule.
    #[arg(long)]
    pub k: Option<usize>,
    /// Overlay shape: full-mesh, partial-mesh, ring, hierarchical,
    /// hub-spoke, sharded.
    #[arg(long, default_value = "partial-mesh")]
    pub topology: String,
    #[arg(long, default_value_t = 1)]
    pub agents_per_node: usize,
    /// Messages per second per agent; 0: as fast as the system accepts
    /// (each tick sends until the router refuses, and the refusals are
    /// counted).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The measured window.
    #[arg(long, allow_hyphen_values = true, default_value = "30s", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    /// Load before the window, not measured.
    #[arg(long, allow_hyphen_values = true, default_value = "2s", value_parser = crate::commands::parse_duration_or_zero)]
    pub warmup: Duration,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Messages a node keeps awaiting acknowledgement (the config's
    /// delivery.inflight_max); with --rate 0 this window sets the pace.
    #[arg(long)]
    pub inflight_max: Option<usize>,
    /// How nodes authenticate data envelopes (the config's
    /// delivery.authentication): "pair-key" seals each with a MAC only its
    /// destination node can check; "signature" signs each with Ed25519.
    #[arg(long, default_value = "pair-key", value_parser = ["pair-key", "signature"])]
    pub authentication: String,
    /// How long the load waits for every overlay link to come up before it
    /// starts anyway; default: 10 s, plus 60 ms per node beyond 100.
    #[arg(long, allow_hyphen_values = true, value_parser = crate::commands::parse_duration)]
    pub links_wait: Option<Duration>,
    /// Processes the nodes run in; 1: all in this one. More start that
    /// many `agentmesh bench worker` processes, each with an equal share.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// The envelope TTL, worked out from the overlay (not a flag).
    #[arg(skip)]
    pub ttl: u8,
    /// Where report.json, report.md and the plots go.
    #[arg(long, default_value = "bench-results/storm")]
    pub out: PathBuf,
}

impl StormOptions {
    /// Refuses what cannot run, naming the flag.
    fn check(&self) -> anyhow::Result<TopologyKind> {
        let kind = TopologyKind::parse(&self.topology).map_err(anyhow::Error::msg)?;
        if self.nodes == 0 || self.nodes > NODES_MAX {
            bail!("--nodes {}: must be 1 to {NODES_MAX}", self.nodes);
        }
        if let Some(k) = self.k {
            if k == 0 || k >= self.nodes {
                bail!(
                    "--k {k}: must be at least 1 and below --nodes ({})",
                    self.nodes
                );
            }
        }
        if self.agents_per_node == 0 {
            bail!("--agents-per-node must be at least 1");
        }
        if !(self.rate >= 0.0 && self.rate <= SATURATING_RATE) {
            bail!(
                "--rate {}: must be 0 (as fast as accepted) to {SATURATING_RATE}",
                self.rate
            );
        }
        if self.processes == 0 || self.processes > self.nodes.min(PROCESSES_MAX) {
            bail!(
                "--processes {}: must be 1 to {} (and no more than --nodes)",
                self.processes,
                PROCESSES_MAX
            );
        }
        Ok(kind)
    }

    /// The cluster config these flags describe, checked like any file,
    /// with its overlay's metrics. The envelope TTL is the default, or the
    /// overlay's diameter plus a few hops of detour where that is more (a
    /// ring of 100 nodes is 50 hops across), up to TTL_MAX.
    fn cluster_config(&mut self) -> anyhow::Result<(ClusterConfig, GraphMetrics)> {
        let loopback = |_: &str| "listen = \"127.0.0.1:0\"\n".to_string();
        self.ttl = TTL_MAX;
        let probe = self.parse(&self.cluster_config_text(loopback))?;
        let graph = graph_of(&probe);
        let wanted = u8::try_from(graph.diameter + TTL_DETOUR_HOPS).unwrap_or(u8::MAX);
        self.ttl = LimitsConfig::default().ttl.max(wanted.min(TTL_MAX));
        let config = self.parse(&self.cluster_config_text(loopback))?;
        Ok((config, graph))
    }

    fn parse(&self, text: &str) -> anyhow::Result<ClusterConfig> {
        config::parse(text, "bench storm flags", std::path::Path::new("."))
            .context("the flags do not make a valid cluster")
    }

    /// The config's text; `node_entry(id)` gives each node's lines after
    /// its id (at least its listen address).
    fn cluster_config_text(&self, node_entry: impl Fn(&str) -> String) -> String {
        let mut text = format!("[cluster]\nname = \"storm\"\nseed = {}\n", self.seed);
        for index in 0..self.nodes {
            let id = node_id(index, self.nodes);
            text += &format!("[[nodes]]\nid = \"{id}\"\n{}", node_entry(&id));
        }
        text += &format!("[topology]\nkind = \"{}\"\n", self.topology);
        if let Some(k) = self.k {
            text += &format!("k = {k}\n");
        }
        text += &format!("[delivery]\nauthentication = \"{}\"\n", self.authentication);
        if let Some(inflight) = self.inflight_max {
            text += &format!("inflight_max = {inflight}\n");
        }
        text += &format!("[limits]\nttl = {}\n", self.ttl);
        text += &format!(
            "[supervision]\nagents_start_timeout_ms = {}\n",
            self.links_wait().as_millis()
        );
        if let Some((interval_ms, pause_ms)) = self.crowded_detector() {
            text += &format!(
                "[membership]\nheartbeat_interval_ms = {interval_ms}\nacceptable_pause_ms = {pause_ms}\n"
            );
        }
        text += &format!(
            "[[agents]]\nname = \"storm-{{i}}\"\ncount = {}\nbehaviour = \"storm\"\nplacement = \"spread\"\nrate = {}\npayload_bytes = {}\ntargets = [\"storm-*\"]\n",
            self.nodes * self.agents_per_node,
            if self.rate == 0.0 { SATURATING_RATE } else { self.rate },
            self.payload
        );
        text
    }

    /// Heartbeat interval and acceptable pause for a process crowded with
    /// nodes, or None for the defaults. Beyond NODES_PER_CORE_CALM nodes
    /// per core a node's actors wait their turn behind hundreds of others,
    /// longer than the default detector (500 ms heartbeats, 1 s pause)
    /// allows, and live neighbours would be declared dead: the pause grows
    /// with the crowd, and heartbeats halve.
    fn crowded_detector(&self) -> Option<(u64, u64)> {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        let per_core = self.nodes / cores;
        (per_core > NODES_PER_CORE_CALM).then(|| (1_000, (20 * per_core as u64).max(1_000)))
    }

    fn links_wait(&self) -> Duration {
        self.links_wait.unwrap_or_else(|| {
            let beyond = self.nodes.saturating_sub(100) as u64;
            Duration::from_secs(10) + Duration::from_millis(60 * beyond)
        })
    }

    fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "k": self.k,
            "topology": self.topology,
            "agents_per_node": self.agents_per_node,
            "rate": self.rate,
            "payload": self.payload,
            "duration": humantime::format_duration(self.duration).to_string(),
            "warmup": humantime::format_duration(self.warmup).to_string(),
            "seed": self.seed,
            "inflight_max": self.inflight_max,
            "authentication": self.authentication,
            "ttl": self.ttl,
            "links_wait": humantime::format_duration(self.links_wait()).to_string(),
            "crowded_detector": self.crowded_detector().map(|(interval_ms, pause_ms)| {
                serde_json::json!({
                    "heartbeat_interval_ms": interval_ms,
                    "acceptable_pause_ms": pause_ms,
                })
            }),
            "processes": self.processes,
            "out": self.out,
        })
    }
}

/// Node ids that sort in numeric order: n000, n001, ...
fn node_id(index: usize, nodes: usize) -> String {
    let width = nodes.saturating_sub(1).to_string().len().max(3);
    format!("n{index:0width$}")
}

/// Runs the storm, writes the report, and returns the exit status: 0 when
/// every message sent was delivered.
pub async fn storm(mut options: StormOptions) -> anyhow::Result<i32> {
    options.check()?;
    let (config, graph) = options.cluster_config()?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create --out {}", options.out.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let crypto = crypto::measure(options.payload, CRYPTO_BUDGET, cores);
    let (mut swarm, setup_ms) = if options.processes == 1 {
        let cluster = LocalCluster::start(config)
            .await
            .context("starting the cluster")?;
        let setup_ms = cluster
            .wait_for_links(Duration::ZERO)
            .await
            .map(|elapsed| elapsed.as_secs_f64() * 1e3);
        (Swarm::Here(cluster), setup_ms)
    } else {
        let (workers, setup_ms) = start_workers(&options).await?;
        (Swarm::Workers(workers), setup_ms)
    };
    let window = measure(&mut swarm, &options).await?;
    swarm.quiesce().await?;
    swarm.drain(DRAIN_WAIT_MAX).await?;
    let (totals, agents) = swarm.totals().await?;
    let resident = swarm.resident_bytes();
    swarm.shutdown().await?;
    let report = build_report(
        &options, cores, crypto, graph, setup_ms, &totals, &window, agents, resident,
    );
    let markdown = report.to_markdown();
    write(&options, &report, &markdown, &totals.latency)?;
    print!("{markdown}");
    println!("\nwritten to {}", options.out.display());
    Ok(if report.ok { 0 } else { 1 })
}

/// The nodes a storm runs on.
enum Swarm {
    /// Every node in this process.
    Here(LocalCluster),
    /// The nodes spread over worker processes.
    Workers(Workers),
}

impl Swarm {
    async fn reset_latency(&mut self) -> anyhow::Result<()> {
        match self {
            Swarm::Here(cluster) => cluster.reset_latency(),
            Swarm::Workers(workers) => {
                workers.ask(Request::ResetLatency).await?;
            }
        }
        Ok(())
    }

    /// Counters and deliveries by hops, over every node.
    async fn sample(&mut self) -> anyhow::Result<(CounterValues, Vec<u64>)> {
        match self {
            Swarm::Here(cluster) => Ok((cluster.counters(), cluster.hops())),
            Swarm::Workers(workers) => workers.sample().await,
        }
    }

    async fn quiesce(&mut self) -> anyhow::Result<()> {
        match self {
            Swarm::Here(cluster) => cluster.quiesce(),
            Swarm::Workers(workers) => {
                workers.ask(Request::Quiesce).await?;
            }
        }
        Ok(())
    }

    /// Waits until everything sent was acknowledged or given up, or
    /// `limit` passes.
    async fn drain(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let (counters, _) = self.sample().await?;
            if counters.settled() >= counters.envelopes_sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn totals(&mut self) -> anyhow::Result<(Totals, Vec<AgentRow>)> {
        let (totals, mut agents) = match self {
            Swarm::Here(cluster) => (cluster.totals(), agent_rows(cluster)),
            Swarm::Workers(workers) => workers.totals().await?,
        };
        sort_agent_rows(&mut agents);
        Ok((totals, agents))
    }

    /// CPU time of every process running nodes.
    fn cpu_time(&self) -> Option<Duration> {
        match self {
            Swarm::Here(_) => resources::cpu_time(),
            Swarm::Workers(workers) => workers.cpu_time(),
        }
    }

    /// Resident bytes now and at the peak, summed over the processes
    /// running nodes.
    fn resident_bytes(&self) -> Option<(u64, u64)> {
        match self {
            Swarm::Here(_) => resources::resident_bytes(),
            Swarm::Workers(workers) => workers.resident_bytes(),
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Swarm::Here(cluster) => {
                cluster.shutdown().await;
                Ok(())
            }
            Swarm::Workers(workers) => workers.shutdown().await,
        }
    }
}

/// Starts the worker processes over a config with fixed ports and fresh
/// keys, waits for every link (at most --links-wait), and starts the
/// agents. Returns the workers and how long the links took.
async fn start_workers(options: &StormOptions) -> anyhow::Result<(Workers, Option<f64>)> {
    let files = tempfile::Builder::new()
        .prefix("agentmesh-storm-")
        .tempdir()
        .context("cannot make a folder for the workers' config and keys")?;
    let ports = free_ports(options.nodes)?;
    let mut entries = std::collections::HashMap::new();
    for (index, port) in ports.into_iter().enumerate() {
        let id = node_id(index, options.nodes);
        let key = crate::identity::generate_key();
        let key_file = files.path().join(format!("{id}.key"));
        crate::identity::write_key_file(&key_file, &key)?;
        let public = crate::identity::public_key_text(&key.verifying_key());
        let entry = format!(
            "listen = \"127.0.0.1:{port}\"\npublic_key = \"{public}\"\nkey_file = {:?}\n",
            key_file.display().to_string()
        );
        entries.insert(id, entry);
    }
    let text = options.cluster_config_text(|id| entries[id].clone());
    let ids: Vec<String> = (0..options.nodes)
        .map(|index| node_id(index, options.nodes))
        .collect();
    let parts: Vec<Vec<String>> = (0..options.processes)
        .map(|part| {
            let range =
                part * ids.len() / options.processes..(part + 1) * ids.len() / options.processes;
            ids[range].to_vec()
        })
        .collect();
    let started = Instant::now();
    let mut workers = Workers::start(files, &text, &parts).await?;
    let deadline = started + options.links_wait();
    let setup_ms = loop {
        if workers.links_up().await? {
            break Some(started.elapsed().as_secs_f64() * 1e3);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "not every link came up within --links-wait; starting the agents anyway"
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers.ask(Request::StartAgents).await?;
    Ok((workers, setup_ms))
}

/// Ports free on 127.0.0.1 right now (UDP), for the workers' nodes.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free ports on 127.0.0.1")?;
    sockets
        .iter()
        .map(|socket| Ok(socket.local_addr()?.port()))
        .collect()
}

fn graph_of(config: &ClusterConfig) -> GraphMetrics {
    let names: Vec<String> = config.nodes.iter().map(|node| node.id.clone()).collect();
    let topology = Topology::new(config.topology.shape(names.len()), &names, config.seed);
    GraphMetrics::of(topology.base())
}

/// What happened in the measured window.
struct Window {
    duration: Duration,
    /// Counters at the window's start and end.
    start: CounterValues,
    end: CounterValues,
    hops_start: Vec<u64>,
    hops_end: Vec<u64>,
    cpu: Option<Duration>,
    samples: Vec<Sample>,
    connections_max: u64,
}

/// Connections open between the nodes: each end counts its own.
fn connections_open(counters: &CounterValues) -> u64 {
    counters
        .connections_established
        .saturating_sub(counters.connections_lost)
        / 2
}

/// Warms up, forgets the warm-up's latencies, then samples each second.
async fn measure(swarm: &mut Swarm, options: &StormOptions) -> anyhow::Result<Window> {
    let bar = indicatif::ProgressBar::new((options.warmup + options.duration).as_secs());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message("warming up");
    let warm = Instant::now();
    while warm.elapsed() < options.warmup {
        tokio::time::sleep(Duration::from_millis(200).min(options.warmup)).await;
        bar.set_position(warm.elapsed().as_secs());
    }
    swarm.reset_latency().await?;
    let (start, hops_start) = swarm.sample().await?;
    let cpu_start = swarm.cpu_time();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut previous = (Instant::now(), start.envelopes_delivered);
    let mut connections_max = connections_open(&start);
    while started.elapsed() < options.duration {
        let left = options.duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        let counters = swarm.sample().await?.0;
        let delivered = counters.envelopes_delivered;
        let connections = connections_open(&counters);
        connections_max = connections_max.max(connections);
        let rate = delivered.saturating_sub(previous.1) as f64
            / previous.0.elapsed().as_secs_f64().max(1e-3);
        previous = (Instant::now(), delivered);
        let rss_bytes = swarm.resident_bytes().map_or(0, |(now, _)| now);
        samples.push(Sample {
            t_s: started.elapsed().as_secs_f64(),
            delivered_per_s: rate,
            rss_bytes,
            connections,
        });
        bar.set_position((options.warmup + started.elapsed()).as_secs());
        bar.set_message(format!("{rate:.0} delivered/s"));
    }
    bar.finish_and_clear();
    let duration = started.elapsed();
    let (end, hops_end) = swarm.sample().await?;
    Ok(Window {
        duration,
        cpu: swarm
            .cpu_time()
            .zip(cpu_start)
            .map(|(end, start)| end.saturating_sub(start)),
        hops_start,
        hops_end,
        connections_max: connections_max.max(connections_open(&end)),
        start,
        end,
        samples,
    })
}

/// Every agent of the nodes in this process, unsorted.
pub(super) fn agent_rows(cluster: &LocalCluster) -> Vec<AgentRow> {
    cluster
        .nodes
        .iter()
        .flat_map(|node| {
            node.parts
                .data_path
                .agent_stats
                .iter()
                .map(|entry| {
                    let sent = entry.sent.load(Ordering::Relaxed);
                    let acknowledged = entry.acknowledged.load(Ordering::Relaxed);
                    let received = entry.received_data.load(Ordering::Relaxed);
                    let latency_micros = entry.latency_micros_total.load(Ordering::Relaxed);
                    AgentRow {
                        agent: entry.key().clone(),
                        node: node.id.clone(),
                        sent,
                        refused: entry.refused.load(Ordering::Relaxed),
                        acknowledged,
                        success_percent: percent(acknowledged, sent),
                        received,
                        latency_mean_ms: latency_micros as f64 / 1e3 / received.max(1) as f64,
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Most deliveries first, then by name.
fn sort_agent_rows(rows: &mut [AgentRow]) {
    rows.sort_by(|a, b| {
        b.received
            .cmp(&a.received)
            .then_with(|| a.agent.cmp(&b.agent))
    });
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    options: &StormOptions,
    cores: usize,
    crypto: crypto::CryptoCost,
    graph: GraphMetrics,
    setup_ms: Option<f64>,
    totals: &Totals,
    window: &Window,
    agents: Vec<AgentRow>,
    resident: Option<(u64, u64)>,
) -> StormReport {
    let c = &totals.counters;
    let seconds = window.duration.as_secs_f64().max(1e-9);
    let delivered_in_window = window.end.envelopes_delivered - window.start.envelopes_delivered;
    let throughput = delivered_in_window as f64 / seconds;
    let agent_count = (options.nodes * options.agents_per_node).max(1);
    let hops = hop_counts(&window.hops_start, &window.hops_end);
    let latency_ms_by_hops = latency_by_hops(totals);
    let (rss_now, rss_peak) = resident.unwrap_or((0, 0));
    let rss = rss_peak.max(rss_now);
    let cpu_seconds = window.cpu.map_or(0.0, |cpu| cpu.as_secs_f64());
    let settled = c.envelopes_delivered + c.lost_retries_exhausted;
    let bytes_sent = window.end.bytes_sent - window.start.bytes_sent;
    // Few agents: every one in the top table once, none twice.
    let top: Vec<AgentRow> = agents.iter().take(AGENT_ROWS).cloned().collect();
    let rest = agents.len() - top.len();
    let bottom: Vec<AgentRow> = agents
        .iter()
        .rev()
        .take(rest.min(AGENT_ROWS))
        .cloned()
        .collect();
    StormReport {
        header: ReportHeader::new("storm", options.as_json()),
        duration_s: seconds,
        ok: c.lost_retries_exhausted == 0 && settled >= c.envelopes_sent && setup_ms.is_some(),
        setup: Setup {
            nodes: options.nodes,
            edges: graph.edges,
            connections: totals.connection_setup.len(),
            setup_ms: setup_ms.unwrap_or(f64::NAN),
        },
        graph: Graph {
            diameter: graph.diameter,
            avg_path_length: graph.avg_path_length,
            clustering: graph.clustering,
            components: graph.components,
            degree_min: graph.degree_min,
            degree_max: graph.degree_max,
        },
        messages: Messages {
            sent: c.envelopes_sent,
            delivered: c.envelopes_delivered,
            lost: c.lost_retries_exhausted,
            unsettled: c.envelopes_sent.saturating_sub(settled),
            duplicates: c.dropped_duplicate,
            refused: totals.refused(),
            lost_by_cause: LostByCause {
                ttl_expired: c.dropped_ttl_expired,
                no_route: c.dropped_no_route,
                queue_full: c.dropped_queue_full,
                peer_down: c.dropped_peer_down,
                retries_exhausted: c.lost_retries_exhausted,
            },
            retransmissions: c.retransmissions,
        },
        throughput_msgs_per_s: throughput,
        throughput_msgs_per_s_per_agent: throughput / agent_count as f64,
        latency_ms: LatencySummary::of(&totals.latency),
        hops,
        latency_ms_by_hops,
        shortest_path_percent: percent(
            window.end.delivered_on_shortest_path - window.start.delivered_on_shortest_path,
            delivered_in_window,
        ),
        resources: Resources {
            rss_bytes: rss,
            rss_bytes_per_node: rss / options.nodes.max(1) as u64,
            cpu_seconds,
            cpu_percent_per_node: cpu_seconds * 100.0 / seconds / options.nodes.max(1) as f64,
        },
        crypto_ceiling_percent: throughput * 100.0 / crypto.ceiling_msgs_per_s.max(1e-9),
        cpu_us_per_message: cpu_seconds * 1e6 / delivered_in_window.max(1) as f64,
        cpu_percent_of_machine: cpu_seconds * 100.0 / seconds / cores.max(1) as f64,
        connections_max: window.connections_max,
        nodes_declared_dead: c.members_declared_dead,
        crypto,
        bandwidth: Bandwidth {
            bytes_sent,
            bytes_per_s: bytes_sent as f64 / seconds,
        },
        over_time: window.samples.clone(),
        agents_top: top,
        agents_bottom: bottom,
        counters: totals.counters.clone(),
    }
}

/// Deliveries in the window by hops, for hop counts that occurred.
fn hop_counts(start: &[u64], end: &[u64]) -> BTreeMap<String, u64> {
    end.iter()
        .enumerate()
        .map(|(hops, &count)| (hops, count - start.get(hops).copied().unwrap_or(0)))
        .filter(|&(_, count)| count > 0)
        .map(|(hops, count)| (hops.to_string(), count))
        .collect()
}

fn latency_by_hops(totals: &Totals) -> BTreeMap<String, Quantiles> {
    totals
        .latency_by_hops
        .iter()
        .enumerate()
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(hops, histogram)| {
            let millis = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1_000.0;
            (
                hops.to_string(),
                Quantiles {
                    p50: millis(0.50),
                    p95: millis(0.95),
                },
            )
        })
        .collect()
}

fn write(
    options: &StormOptions,
    report: &StormReport,
    markdown: &str,
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    let out = &options.out;
    super::report::write_report_texts(out, report, markdown)?;
    super::plots::write_all(out, report, latency)
        .map_err(|error| anyhow::anyhow!("cannot draw the plots in {}: {error}", out.display()))
}
