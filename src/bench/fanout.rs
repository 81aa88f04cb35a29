//! `agentmesh bench fanout`: one publisher, one subscriber on each of
//! `--nodes` nodes (the competitor's scenario is 100 on 100), in a partial
//! mesh in this process. The publisher publishes `--rate` messages a
//! second on one topic for `--warmup` and then `--duration` measured; each
//! copy travels to its subscriber as a message of its own (reliable,
//! exactly once). The report gives copies delivered per second, the
//! latency from publishing to each subscriber's handling (p50/p95/p99),
//! how many measured copies arrived (all of them, once each, or the run
//! fails), and this process's CPU per delivered copy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::pace::Pace;
use super::report::{write_report_texts, ReportHeader};
use super::resources;
use crate::agent_api::{Behaviour, Context, Message, Registry};
use crate::cluster::LocalCluster;
use crate::metrics::LatencySummary;

/// The publisher's tick.
const TICK_MS: u64 = 1;
/// The topic published on.
const TOPIC: &str = "fanout";
/// Most nodes a run may ask for (each is a QUIC endpoint in this process).
const NODES_MAX: usize = 300;
/// Most messages a second the publisher may be asked for.
const RATE_MAX: f64 = 10_000.0;
/// How long the measured copies may take to arrive after the window.
const SETTLE_MAX: Duration = Duration::from_secs(20);

#[derive(clap::Args, Clone, Debug)]
pub struct FanoutOptions {
    /// Nodes, each with one subscriber (the publisher shares the first).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Messages a second the publisher publishes.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// The measured window.
    #[arg(long, allow_hyphen_values = true, default_value = "10s", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    /// Publishing before the window, not measured.
    #[arg(long, allow_hyphen_values = true, default_value = "2s", value_parser = crate::commands::parse_duration_or_zero)]
    pub warmup: Duration,
    /// Bytes each message carries.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The partial mesh's degree.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Where report.json and report.md go.
    #[arg(long, default_value = "bench-results/fanout")]
    pub out: PathBuf,
}

impl FanoutOptions {
    fn check(&self) -> anyhow::Result<()> {
        if !(2..=NODES_MAX).contains(&self.nodes) {
            bail!("--nodes {}: give 2 to {NODES_MAX}", self.nodes);
        }
        if !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            bail!(
                "--rate {}: give messages/s above 0, up to {RATE_MAX}",
                self.rate
            );
        }
        if !(8..=64 * 1024).contains(&self.payload) {
            bail!("--payload {}: give 8 to 65536 bytes", self.payload);
        }
        if !(1..self.nodes).contains(&self.k) {
            bail!("--k {}: give 1 to {} (nodes - 1)", self.k, self.nodes - 1);
        }
        Ok(())
    }
}

/// What the publisher and subscribers share with the benchmark.
struct Probe {
    sending: AtomicBool,
    /// Messages numbered from here up to `measured_end` are measured.
    measured_start: AtomicU64,
    measured_end: AtomicU64,
    published: AtomicU64,
    /// Copies refused at the publish, in all and of measured messages,
    /// and by cause (the `SendError` variant).
    refused: AtomicU64,
    refused_measured: AtomicU64,
    refused_by: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Measured copies delivered, and copies delivered twice.
    delivered: AtomicU64,
    duplicates: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            sending: AtomicBool::new(false),
            measured_start: AtomicU64::new(u64::MAX),
            measured_end: AtomicU64::new(u64::MAX),
            published: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_measured: AtomicU64::new(0),
            refused_by: Mutex::default(),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ),
        }
    }
}

/// Publishes at a steady rate while told to; each body starts with the
/// message's number.
struct Publisher {
    probe: Arc<Probe>,
    pace: Pace,
    payload: usize,
}

impl Behaviour for Publisher {
    fn tick_interval_ms(&self) -> Option<u64> {
        Some(TICK_MS)
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn tick(&mut self, context: &mut Context<'_>) {
        let sending = self.probe.sending.load(Ordering::Relaxed);
        for _ in 0..self.pace.due(context.now_micros(), sending) {
            let number = self.probe.published.fetch_add(1, Ordering::Relaxed);
            let mut body = number.to_be_bytes().to_vec();
            body.resize(self.payload, b'x');
            if let Err(error) = context.publish(TOPIC, body) {
                self.count_refusals(number, &error);
            }
        }
    }
}

impl Publisher {
    fn count_refusals(&self, number: u64, error: &crate::agent_api::FanOutError) {
        let refused = error.refused.len() as u64;
        self.probe.refused.fetch_add(refused, Ordering::Relaxed);
        if number >= self.probe.measured_start.load(Ordering::Relaxed) {
            (self.probe.refused_measured).fetch_add(refused, Ordering::Relaxed);
        }
        let mut by = self.probe.refused_by.lock().expect("never poisoned");
        for (_, cause) in &error.refused {
            let name = format!("{cause:?}");
            let variant = name.split(['(', ' ', '{']).next().unwrap_or("").to_string();
            *by.entry(variant).or_insert(0) += 1;
        }
    }
}

/// Counts each measured copy once and records its latency.
struct Subscriber {
    probe: Arc<Probe>,
    /// Measured numbers taken, as offsets from the window's first.
    seen: std::collections::HashSet<u64>,
}

impl Behaviour for Subscriber {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        let Some(number) = message.body.get(..8) else {
            return;
        };
        let number = u64::from_be_bytes(number.try_into().expect("8 bytes"));
        let start = self.probe.measured_start.load(Ordering::Relaxed);
        let end = self.probe.measured_end.load(Ordering::Relaxed);
        if number < start || number >= end {
            return;
        }
        if !self.seen.insert(number - start) {
            self.probe.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.probe.delivered.fetch_add(1, Ordering::Relaxed);
        let micros = context.now_micros().saturating_sub(message.sent_at_micros);
        let mut latency = self.probe.latency.lock().expect("never poisoned");
        let _ = latency.record(micros.clamp(1, 60_000_000));
    }
}

#[derive(Debug, Serialize)]
pub struct FanoutReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    pub subscribers: usize,
    pub published_measured: u64,
    /// Copies that should arrive: measured messages × subscribers, less
    /// those refused at the publish (`refused_measured`).
    pub copies_expected: u64,
    pub copies_delivered: u64,
    pub duplicates: u64,
    /// Copies refused at the publish (a typed error to the publisher):
    /// over the whole run, of measured messages, and by cause.
    pub refused: u64,
    pub refused_measured: u64,
    pub refused_by: std::collections::BTreeMap<String, u64>,
    pub delivered_per_s: f64,
    pub latency_ms: LatencySummary,
    /// This process's CPU time per delivered copy, in microseconds.
    pub cpu_us_per_delivery: f64,
    pub cpu_percent_of_machine: f64,
}

fn config_text(options: &FanoutOptions) -> String {
    let mut text = String::from("[cluster]\nname = \"bench-fanout\"\nseed = 1\n");
    for index in 0..options.nodes {
        text += &format!("[[nodes]]\nid = \"n{index:03}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += &format!("[topology]\nkind = \"partial-mesh\"\nk = {}\n", options.k);
    text += "[[agents]]\nname = \"publisher\"\nbehaviour = \"publisher\"\nnode = \"n000\"\n";
    text += &format!(
        "[[agents]]\nname = \"sub-{{i}}\"\ncount = {}\nbehaviour = \"subscriber\"\nplacement = \"spread\"\nsubscribe = [\"{TOPIC}\"]\n",
        options.nodes
    );
    text
}

fn registry(options: &FanoutOptions, probe: &Arc<Probe>) -> Registry {
    let mut registry = Registry::with_builtins();
    let (rate, payload, publisher_probe) = (options.rate, options.payload, probe.clone());
    registry.register("publisher", move |_spec| {
        Ok(Box::new(Publisher {
            probe: publisher_probe.clone(),
            pace: Pace::new(rate),
            payload,
        }))
    });
    let probe = probe.clone();
    registry.register("subscriber", move |_spec| {
        Ok(Box::new(Subscriber {
            probe: probe.clone(),
            seen: Default::default(),
        }))
    });
    registry
}

/// Publishes through the warm-up and the window; waits for the measured
/// copies; returns the window's wall time and this process's CPU in it.
async fn publish(options: &FanoutOptions, probe: &Probe) -> (Duration, f64, u64) {
    probe.sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(options.warmup).await;
    let (started, cpu_before) = (Instant::now(), resources::cpu_time());
    // The window starts with the next number; subscribers check both ends.
    let first = probe.published.load(Ordering::Relaxed);
    probe.measured_start.store(first, Ordering::Relaxed);
    tokio::time::sleep(options.duration).await;
    let last = probe.published.load(Ordering::Relaxed);
    probe.measured_end.store(last, Ordering::Relaxed);
    probe.sending.store(false, Ordering::Relaxed);
    let expected = |probe: &Probe| {
        (last - first) * options.nodes as u64 - probe.refused_measured.load(Ordering::Relaxed)
    };
    let settle = Instant::now();
    while probe.delivered.load(Ordering::Relaxed) < expected(probe) && settle.elapsed() < SETTLE_MAX
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed();
    let cpu = resources::cpu_time()
        .zip(cpu_before)
        .map_or(0.0, |(after, before)| (after - before).as_secs_f64() * 1e6);
    (wall, cpu, last - first)
}

fn markdown(report: &FanoutReport) -> String {
    let latency = &report.latency_ms;
    let mut text = format!(
        "# bench fanout: one publisher, {} subscribers on {} nodes\n\n",
        report.subscribers, report.subscribers
    );
    text += "| published (measured) | copies expected | delivered | duplicates | refused (measured) | delivered/s | p50 ms | p95 ms | p99 ms | max ms | CPU µs/delivery | CPU % of machine |\n";
    text += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    text += &format!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |\n",
        report.published_measured,
        report.copies_expected,
        report.copies_delivered,
        report.duplicates,
        report.refused_measured,
        report.delivered_per_s,
        latency.p50,
        latency.p95,
        latency.p99,
        latency.max,
        report.cpu_us_per_delivery,
        report.cpu_percent_of_machine
    );
    if report.refused > 0 {
        text += &format!(
            "\n{} copies were refused at the publish over the whole run (the publisher is told each with a typed error): {:?}\n",
            report.refused, report.refused_by
        );
    }
    text += "\nLatency runs from the publish to each subscriber's handling of its copy; delivered/s counts copies over the window and the wait for its last copies.\n";
    text
}

/// Runs the benchmark and writes its report; exits 1 when a measured copy
/// was lost or delivered twice.
pub async fn fanout(options: FanoutOptions) -> anyhow::Result<i32> {
    options.check()?;
    std::fs::create_dir_all(&options.out)?;
    let probe = Arc::new(Probe::default());
    let text = config_text(&options);
    let config = crate::config::parse(&text, "bench fanout", std::path::Path::new("."))?;
    let cluster = LocalCluster::start_with(config, registry(&options, &probe)).await?;
    let (wall, cpu_micros, published) = publish(&options, &probe).await;
    cluster.shutdown().await;
    let delivered = probe.delivered.load(Ordering::Relaxed);
    let refused_measured = probe.refused_measured.load(Ordering::Relaxed);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let config = serde_json::json!({
        "nodes": options.nodes, "rate": options.rate, "payload": options.payload,
        "duration_s": options.duration.as_secs_f64(), "warmup_s": options.warmup.as_secs_f64(),
        "k": options.k,
    });
    let report = FanoutReport {
        header: ReportHeader::new("fanout", config),
        subscribers: options.nodes,
        published_measured: published,
        copies_expected: published * options.nodes as u64 - refused_measured,
        copies_delivered: delivered,
        duplicates: probe.duplicates.load(Ordering::Relaxed),
        refused: probe.refused.load(Ordering::Relaxed),
        refused_measured,
        refused_by: probe.refused_by.lock().expect("never poisoned").clone(),
        delivered_per_s: delivered as f64 / wall.as_secs_f64(),
        latency_ms: LatencySummary::of(&probe.latency.lock().expect("never poisoned")),
        cpu_us_per_delivery: cpu_micros / delivered.max(1) as f64,
        cpu_percent_of_machine: cpu_micros / (wall.as_secs_f64() * 1e6 * cpus) * 100.0,
    };
    let text = markdown(&report);
    write_report_texts(&options.out, &report, &text)?;
    print!("{text}");
    let whole = report.copies_delivered == report.copies_expected && report.duplicates == 0;
    Ok(if whole { 0 } else { 1 })
}
