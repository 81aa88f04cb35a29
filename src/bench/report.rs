//! The storm report: the JSON every run writes (field names as
//! docs/ARCHITECTURE.md section 8 lists them, never renamed) and the
//! Markdown a person reads, with the competitor's published figure beside
//! ours where there is one.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::crypto::CryptoCost;
use crate::cluster::percent;
use crate::metrics::LatencySummary;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: String,
}

/// What every report (storm, raft, pbft, chaos) starts with: which
/// scenario, which build, which machine, and the options it ran with.
#[derive(Clone, Debug, Serialize)]
pub struct ReportHeader {
    pub scenario: &'static str,
    pub version: &'static str,
    pub machine: Machine,
    pub config: serde_json::Value,
}

impl ReportHeader {
    /// A run of `scenario` by this build on this machine, with `config`.
    pub fn new(scenario: &'static str, config: serde_json::Value) -> ReportHeader {
        ReportHeader {
            scenario,
            version: env!("CARGO_PKG_VERSION"),
            machine: Machine::this(),
            config,
        }
    }
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            os: std::env::consts::OS.into(),
        }
    }
}

/// Waits until `start`, lets `measuring` know, then samples `counter`
/// every second until `end`: what it counted each second, by the seconds
/// since `start`.
pub async fn count_per_second(
    start: std::time::Instant,
    end: std::time::Instant,
    measuring: &std::sync::atomic::AtomicBool,
    counter: &std::sync::atomic::AtomicU64,
) -> Vec<(f64, f64)> {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    tokio::time::sleep_until(start.into()).await;
    measuring.store(true, Ordering::Relaxed);
    let mut over_time = Vec::new();
    let mut last = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - Instant::now())).await;
        let now = counter.load(Ordering::Relaxed);
        let seconds = (Instant::now().min(end) - start).as_secs_f64();
        over_time.push((seconds, (now - last) as f64));
        last = now;
    }
    over_time
}

/// The measured window of a closed-loop load: clients call from the start
/// of the warm-up until `end`, and only calls that end inside the window
/// are timed and counted.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: std::time::Instant,
    pub end: std::time::Instant,
    measuring: std::sync::Arc<std::sync::atomic::AtomicBool>,
    succeeded: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One client's calls in a [`Window`].
pub struct Tally {
    pub latency: hdrhistogram::Histogram<u64>,
    pub failures: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            latency: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid bounds"),
            failures: 0,
        }
    }
}

impl Default for Tally {
    fn default() -> Tally {
        Tally::new()
    }
}

impl Window {
    /// A window of `length` after `warmup` from now.
    pub fn new(warmup: std::time::Duration, length: std::time::Duration) -> Window {
        let start = std::time::Instant::now() + warmup;
        Window {
            start,
            end: start + length,
            measuring: Default::default(),
            succeeded: Default::default(),
        }
    }

    /// Whether clients should go on calling.
    pub fn open(&self) -> bool {
        std::time::Instant::now() < self.end
    }

    /// Records one call begun at `started`, if it ended inside the window.
    pub fn record(&self, tally: &mut Tally, started: std::time::Instant, succeeded: bool) {
        use std::sync::atomic::Ordering;
        if !self.measuring.load(Ordering::Relaxed) || std::time::Instant::now() > self.end {
            return;
        }
        if succeeded {
            let _ = tally.latency.record(started.elapsed().as_micros() as u64);
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            tally.failures += 1;
        }
    }

    /// Samples the successes per second until the end, then joins the
    /// clients: every client's calls together, the successes, and what
    /// each second counted.
    pub async fn finish(
        &self,
        clients: Vec<tokio::task::JoinHandle<Tally>>,
    ) -> anyhow::Result<(Tally, u64, Vec<(f64, f64)>)> {
        let over_time =
            count_per_second(self.start, self.end, &self.measuring, &self.succeeded).await;
        let mut all = Tally::new();
        for client in clients {
            let tally = client.await?;
            all.latency.add(&tally.latency).expect("same bounds");
            all.failures += tally.failures;
        }
        let succeeded = self.succeeded.load(std::sync::atomic::Ordering::Relaxed);
        Ok((all, succeeded, over_time))
    }
}

/// What the two plots of a consensus benchmark are of.
pub struct PlotTitles {
    pub latency: &'static str,
    pub latency_axis: &'static str,
    pub throughput: &'static str,
    pub throughput_axis: &'static str,
}

/// Writes `report.json` and `report.md` into `out`: the one writer of
/// every bench's and chaos's reports.
pub fn write_report_texts(
    out: &std::path::Path,
    report: &impl Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let json = serde_json::to_string_pretty(report).expect("the report serialises");
    std::fs::write(out.join("report.json"), json + "\n")
        .with_context(|| format!("cannot write {}", out.join("report.json").display()))?;
    std::fs::write(out.join("report.md"), markdown)
        .with_context(|| format!("cannot write {}", out.join("report.md").display()))
}

/// Writes `report.json`, `report.md`, `latency-cdf.svg` and
/// `throughput.svg` into `out`.
pub fn write_report_files(
    out: &std::path::Path,
    report: &impl Serialize,
    markdown: &str,
    latency: &hdrhistogram::Histogram<u64>,
    over_time: &[(f64, f64)],
    titles: &PlotTitles,
) -> anyhow::Result<()> {
    write_report_texts(out, report, markdown)?;
    let plots = || -> super::plots::PlotResult {
        let cdf = out.join("latency-cdf.svg");
        super::plots::latency_cdf(&cdf, titles.latency, titles.latency_axis, latency, None)?;
        let throughput = out.join("throughput.svg");
        super::plots::over_time(
            &throughput,
            titles.throughput,
            titles.throughput_axis,
            over_time,
        )
    };
    plots().map_err(|error| anyhow::anyhow!("cannot draw the plots in {}: {error}", out.display()))
}

#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    pub nodes: usize,
    pub edges: usize,
    pub connections: u64,
    /// From the cluster's start until every overlay link was up.
    pub setup_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    pub diameter: usize,
    pub avg_path_length: f64,
    pub clustering: f64,
    pub components: usize,
    pub degree_min: usize,
    pub degree_max: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LostByCause {
    pub ttl_expired: u64,
    pub no_route: u64,
    pub queue_full: u64,
    pub peer_down: u64,
    pub retries_exhausted: u64,
}

/// Counts over the whole run, warm-up included, so that every message
/// sent is accounted for: sent = delivered + lost once the run drained.
#[derive(Clone, Debug, Serialize)]
pub struct Messages {
    pub sent: u64,
    pub delivered: u64,
    /// Given up after every retry: the sender was told.
    pub lost: u64,
    /// Neither delivered nor given up when the drain ended.
    pub unsettled: u64,
    /// Copies the destination's window dropped (none reaches an agent twice).
    pub duplicates: u64,
    /// Sends refused at the source with a typed error (never sent).
    pub refused: u64,
    /// Transmissions lost on the way, by cause; each was retransmitted.
    /// `retries_exhausted` counts messages given up.
    pub lost_by_cause: LostByCause,
    pub retransmissions: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Resources {
    /// Peak resident memory of the process.
    pub rss_bytes: u64,
    pub rss_bytes_per_node: u64,
    /// CPU time during the measured window.
    pub cpu_seconds: f64,
    /// Of one core, per node, during the measured window.
    pub cpu_percent_per_node: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Bandwidth {
    pub bytes_sent: u64,
    pub bytes_per_s: f64,
}

/// One second of the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub delivered_per_s: f64,
    pub rss_bytes: u64,
    /// Connections open between the nodes at that moment.
    pub connections: u64,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct AgentRow {
    pub agent: String,
    pub node: String,
    pub sent: u64,
    pub refused: u64,
    /// Of `sent`, acknowledged by their destination.
    pub acknowledged: u64,
    /// acknowledged / sent, in percent.
    pub success_percent: f64,
    pub received: u64,
    /// Mean latency of the messages this agent received.
    pub latency_mean_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StormReport {
    /// `scenario`, `version`, `machine` and `config`, at the top level.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub duration_s: f64,
    pub ok: bool,
    pub setup: Setup,
    pub graph: Graph,
    pub messages: Messages,
    /// Delivered per second during the measured window.
    pub throughput_msgs_per_s: f64,
    pub throughput_msgs_per_s_per_agent: f64,
    pub latency_ms: LatencySummary,
    /// Deliveries in the measured window by hops travelled.
    pub hops: BTreeMap<String, u64>,
    pub latency_ms_by_hops: BTreeMap<String, Quantiles>,
    pub shortest_path_percent: f64,
    pub resources: Resources,
    pub crypto: CryptoCost,
    /// Measured throughput over the crypto ceiling, in percent.
    pub crypto_ceiling_percent: f64,
    /// CPU time of every process running nodes in the measured window,
    /// over the messages delivered in it: the cost of one message.
    pub cpu_us_per_message: f64,
    /// That CPU time over the window's length and the machine's cores.
    pub cpu_percent_of_machine: f64,
    /// The most connections open between the nodes at any of the measured
    /// window's samples (one a second; the overlay has `setup.edges`).
    pub connections_max: u64,
    /// Verdicts of death the nodes reached themselves over the run (a
    /// node judged dead by two neighbours counts twice).
    pub nodes_declared_dead: u64,
    pub bandwidth: Bandwidth,
    pub over_time: Vec<Sample>,
    /// Agents with the most and the fewest deliveries.
    pub agents_top: Vec<AgentRow>,
    pub agents_bottom: Vec<AgentRow>,
    /// Every node counter summed over the cluster, over the whole run.
    pub counters: crate::metrics::CounterValues,
}

/// The competitor's published figures for the 100-agent, k = 20 mesh.
struct Competitor;

impl Competitor {
    const SETUP_S: &'static str = "8.45 s (1,000 connections)";
    const DIAMETER: &'static str = "5";
    const AVG_PATH: &'static str = "2.8";
    const DEGREES: &'static str = "18–22";
    const DELIVERED: &'static str = "99.36 %";
    const THROUGHPUT: &'static str = "1,656 /s of 10,000 offered";
    const OPTIMAL: &'static str = "89.2 %";
    const MEMORY: &'static str = "62.4 MB per agent";
    const CPU: &'static str = "6.8 % per agent";
    /// Its published latency percentiles: (ms, fraction at or below).
    const LATENCY_POINTS: [(f64, f64); 3] = [(65.3, 0.50), (142.7, 0.95), (189.4, 0.99)];
}

impl StormReport {
    /// The competitor's published latency percentiles, when this run is
    /// its scenario's shape (100 nodes in a partial mesh).
    pub fn competitor_latency(&self) -> Option<super::plots::Published<'static>> {
        let shaped = self.setup.nodes == 100
            && self.header.config["topology"].as_str() == Some("partial-mesh");
        shaped.then_some(super::plots::Published {
            label: "competitor, published p50/p95/p99 (100 agents, k = 20)",
            points: &Competitor::LATENCY_POINTS,
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut text = String::new();
        let m = &self.messages;
        let l = &self.latency_ms;
        let r = &self.resources;
        let delivered_percent = percent(m.delivered, m.sent);
        let _ = writeln!(
            text,
            "# Storm: {} nodes, {}, {:.1} s measured\n",
            self.setup.nodes,
            self.header.config["topology"].as_str().unwrap_or("?"),
            self.duration_s
        );
        let _ = writeln!(
            text,
            "Machine: {} CPUs, {}. agentmesh {}. Result: {}.\n",
            self.header.machine.cpus,
            self.header.machine.os,
            self.header.version,
            if self.ok {
                "every message accounted for, none lost"
            } else {
                "MESSAGES LOST OR UNSETTLED"
            }
        );
        let _ = writeln!(
            text,
            "| figure | agentmesh | competitor (100 agents, k = 20) |"
        );
        let _ = writeln!(text, "|---|---|---|");
        let mut row = |name: &str, ours: String, theirs: &str| {
            let _ = writeln!(text, "| {name} | {ours} | {theirs} |");
        };
        row(
            "links up",
            if self.setup.setup_ms.is_finite() {
                format!(
                    "{:.0} ms ({} connections)",
                    self.setup.setup_ms, self.setup.connections
                )
            } else {
                format!(
                    "NOT ALL UP before the load started ({} connections)",
                    self.setup.connections
                )
            },
            Competitor::SETUP_S,
        );
        row(
            "diameter",
            self.graph.diameter.to_string(),
            Competitor::DIAMETER,
        );
        row(
            "average path",
            format!("{:.3} hops", self.graph.avg_path_length),
            Competitor::AVG_PATH,
        );
        row(
            "degrees",
            format!("{}–{}", self.graph.degree_min, self.graph.degree_max),
            Competitor::DEGREES,
        );
        row(
            "delivered",
            format!(
                "{delivered_percent:.2} % ({} of {}; lost {}, unsettled {})",
                m.delivered, m.sent, m.lost, m.unsettled
            ),
            Competitor::DELIVERED,
        );
        row(
            "throughput",
            format!(
                "{:.0} msgs/s ({:.1} per agent), each {}",
                self.throughput_msgs_per_s,
                self.throughput_msgs_per_s_per_agent,
                match self.header.config["authentication"].as_str() {
                    Some("signature") => "signed (Ed25519)",
                    _ => "sealed with a pair key",
                }
            ),
            Competitor::THROUGHPUT,
        );
        let [p50, p95, p99] = Competitor::LATENCY_POINTS.map(|(millis, _)| format!("{millis} ms"));
        row("latency p50", format!("{:.2} ms", l.p50), &p50);
        row("latency p95", format!("{:.2} ms", l.p95), &p95);
        row("latency p99", format!("{:.2} ms", l.p99), &p99);
        row(
            "latency mean / max",
            format!("{:.2} / {:.2} ms", l.mean, l.max),
            "",
        );
        row(
            "over a shortest path",
            format!("{:.1} %", self.shortest_path_percent),
            Competitor::OPTIMAL,
        );
        row(
            "memory",
            format!(
                "{:.1} MB per node (peak RSS {:.0} MB)",
                r.rss_bytes_per_node as f64 / 1e6,
                r.rss_bytes as f64 / 1e6
            ),
            Competitor::MEMORY,
        );
        row(
            "CPU",
            format!(
                "{:.2} % of a core per node; {:.1} % of the machine; {:.0} µs per delivered message",
                r.cpu_percent_per_node, self.cpu_percent_of_machine, self.cpu_us_per_message
            ),
            Competitor::CPU,
        );
        row(
            "overlay under load",
            format!(
                "{} connections at most ({} edges); {} verdicts of death",
                self.connections_max, self.setup.edges, self.nodes_declared_dead
            ),
            "",
        );
        row(
            "bandwidth",
            format!("{:.2} MB/s sent", self.bandwidth.bytes_per_s / 1e6),
            "",
        );
        let c = &self.crypto;
        row(
            "crypto ceiling",
            format!(
                "{:.0} signed msgs/s (sign {:.1} µs + verify {:.1} µs; batch verify {:.1} µs); reached {:.1} %; a pair-key seal costs {:.2} µs + {:.2} µs to check",
                c.ceiling_msgs_per_s, c.sign_us, c.verify_us, c.batch_verify_us, self.crypto_ceiling_percent, c.seal_us, c.check_seal_us
            ),
            "",
        );
        text += "\n## Messages\n\n| sent | delivered | lost | unsettled | refused | duplicates dropped | retransmissions |\n|---|---|---|---|---|---|---|\n";
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} |",
            m.sent, m.delivered, m.lost, m.unsettled, m.refused, m.duplicates, m.retransmissions
        );
        let c = &m.lost_by_cause;
        text += "\nDropped on the way and retransmitted, by cause:\n\n| ttl expired | no route | queue full | peer down | given up (retries exhausted) |\n|---|---|---|---|---|\n";
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} |",
            c.ttl_expired, c.no_route, c.queue_full, c.peer_down, c.retries_exhausted
        );
        text += "\n## Hops\n\n| hops | deliveries | p50 ms | p95 ms |\n|---|---|---|---|\n";
        for (hops, count) in &self.hops {
            let quantiles = self.latency_ms_by_hops.get(hops);
            let _ = writeln!(
                text,
                "| {hops} | {count} | {} | {} |",
                quantiles.map_or("".into(), |q| format!("{:.2}", q.p50)),
                quantiles.map_or("".into(), |q| format!("{:.2}", q.p95))
            );
        }
        for (title, rows) in [("most", &self.agents_top), ("fewest", &self.agents_bottom)] {
            let _ = writeln!(text, "\n## Agents with the {title} deliveries\n\n| agent | node | sent | refused | acknowledged | success | received | latency mean |\n|---|---|---|---|---|---|---|---|");
            for row in rows {
                let _ = writeln!(
                    text,
                    "| {} | {} | {} | {} | {} | {:.2} % | {} | {:.2} ms |",
                    row.agent,
                    row.node,
                    row.sent,
                    row.refused,
                    row.acknowledged,
                    row.success_percent,
                    row.received,
                    row.latency_mean_ms
                );
            }
        }
        text += "\nPlots: `latency-cdf.svg`, `hops.svg`, `throughput.svg`, `memory.svg`.\n";
        text
    }
}
