//! `agentmesh bench agents`: what a request between two agents on two
//! nodes costs, end to end (caller's context → router → QUIC → the other
//! node's router → the responder → its answer back → the caller's
//! `response`), with a Rust responder (the built-in echo) and, in the same
//! run, a Python one (a process agent speaking Maelstrom's protocol).
//!
//! For each responder in turn: the caller sends `--rate` requests a second
//! for `--warmup`, then for `--duration` measured, each with a 2 s timeout,
//! and records each round trip. The report gives round trips per second,
//! their p50/p95/p99, timeouts, and this process's CPU per request (a
//! Python responder's own CPU is not in it: it is another process).

use std::collections::HashMap;
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
use crate::agent_api::{Behaviour, Context, Message, Registry, RequestError, RequestId};
use crate::cluster::LocalCluster;
use crate::metrics::LatencySummary;

/// How long a request waits for its response.
const REQUEST_TIMEOUT_MS: u64 = 2_000;
/// The caller's tick.
const TICK_MS: u64 = 1;
/// Most requests a second a run may ask for.
const RATE_MAX: f64 = 100_000.0;
/// The competitor's inter-agent latency (ms), as published.
const COMPETITOR_MEAN_MS: f64 = 34.56;
const COMPETITOR_P95_MS: f64 = 45.67;
const COMPETITOR_P99_MS: f64 = 52.34;

#[derive(clap::Args, Clone, Debug)]
pub struct AgentsOptions {
    /// Requests a second the caller sends to each responder.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// The measured window, per responder.
    #[arg(long, allow_hyphen_values = true, default_value = "10s", value_parser = crate::commands::parse_duration)]
    pub duration: Duration,
    /// Load before each window, not measured.
    #[arg(long, allow_hyphen_values = true, default_value = "1s", value_parser = crate::commands::parse_duration_or_zero)]
    pub warmup: Duration,
    /// Bytes of text each request carries to be echoed.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The program a Python responder runs with (none: no Python responder).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Leave the Python responder out.
    #[arg(long)]
    pub no_python: bool,
    /// Where report.json and report.md go.
    #[arg(long, default_value = "bench-results/agents")]
    pub out: PathBuf,
}

impl AgentsOptions {
    fn check(&self) -> anyhow::Result<()> {
        if !(self.rate > 0.0 && self.rate <= RATE_MAX) {
            bail!(
                "--rate {}: give requests/s above 0, up to {RATE_MAX}",
                self.rate
            );
        }
        if self.payload > 64 * 1024 {
            bail!("--payload {}: give at most 65536 bytes", self.payload);
        }
        Ok(())
    }
}

/// What the callers share with the benchmark: whether to send and to
/// measure, and the round trips measured.
#[derive(Default)]
struct Probe {
    sending: AtomicBool,
    measuring: AtomicBool,
    /// Measured requests not yet answered or timed out.
    outstanding: AtomicU64,
    outcomes: Mutex<Outcomes>,
}

struct Outcomes {
    round_trips: Histogram<u64>,
    timeouts: u64,
    refused: u64,
}

impl Default for Outcomes {
    fn default() -> Outcomes {
        Outcomes {
            round_trips: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            timeouts: 0,
            refused: 0,
        }
    }
}

/// Sends requests at a steady rate to one responder while told to.
struct Caller {
    target: String,
    pace: Pace,
    body: Vec<u8>,
    probe: Arc<Probe>,
    /// When each request went, and whether it was measured.
    sent: HashMap<RequestId, (Instant, bool)>,
}

impl Behaviour for Caller {
    fn tick_interval_ms(&self) -> Option<u64> {
        Some(TICK_MS)
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn tick(&mut self, context: &mut Context<'_>) {
        let sending = self.probe.sending.load(Ordering::Relaxed);
        let due = self.pace.due(context.now_micros(), sending);
        let measured = self.probe.measuring.load(Ordering::Relaxed);
        for _ in 0..due {
            let sent = Instant::now();
            match context.request(&self.target, self.body.clone(), REQUEST_TIMEOUT_MS) {
                Ok(request) => {
                    self.sent.insert(request, (sent, measured));
                    if measured {
                        self.probe.outstanding.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) if measured => {
                    self.probe.outcomes.lock().expect("never poisoned").refused += 1
                }
                Err(_) => {}
            }
        }
    }

    fn response(
        &mut self,
        _context: &mut Context<'_>,
        request: RequestId,
        outcome: Result<Message, RequestError>,
    ) {
        let Some((sent, true)) = self.sent.remove(&request) else {
            return;
        };
        self.probe.outstanding.fetch_sub(1, Ordering::Relaxed);
        let mut outcomes = self.probe.outcomes.lock().expect("never poisoned");
        match outcome {
            Ok(_) => {
                let micros = sent.elapsed().as_micros().max(1) as u64;
                let _ = outcomes.round_trips.record(micros.min(60_000_000));
            }
            Err(RequestError::TimedOut { .. }) => outcomes.timeouts += 1,
        }
    }
}

/// One responder's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub responder: &'static str,
    pub offered_per_s: f64,
    pub completed_per_s: f64,
    pub completed: u64,
    pub timeouts: u64,
    pub refused: u64,
    pub round_trip_ms: LatencySummary,
    /// This process's CPU time per completed request, in microseconds.
    pub cpu_us_per_request: f64,
    pub cpu_percent_of_machine: f64,
}

#[derive(Debug, Serialize)]
pub struct AgentsReport {
    #[serde(flatten)]
    pub header: ReportHeader,
    pub responders: Vec<TargetReport>,
    pub competitor_ms: serde_json::Value,
}

fn config_text(options: &AgentsOptions) -> String {
    let mut text = String::from("[cluster]\nname = \"bench-agents\"\nseed = 1\n");
    for id in ["n1", "n2"] {
        text += &format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    text += "[[agents]]\nname = \"caller-rust\"\nbehaviour = \"caller\"\nnode = \"n1\"\n[agents.params]\ntarget = \"echo\"\n";
    text += "[[agents]]\nname = \"echo\"\nbehaviour = \"echo\"\nnode = \"n2\"\n";
    if !options.no_python {
        let helper = concat!(env!("CARGO_MANIFEST_DIR"), "/python/examples/echo.py");
        text += "[[agents]]\nname = \"caller-python\"\nbehaviour = \"caller\"\nnode = \"n1\"\n[agents.params]\ntarget = \"py-echo\"\n";
        text += &format!(
            "[[agents]]\nname = \"py-echo\"\nbehaviour = \"process\"\nnode = \"n2\"\n[agents.params]\ncommand = [{:?}, {helper:?}]\n",
            options.python
        );
    }
    text
}

fn registry(options: &AgentsOptions, probes: &HashMap<&'static str, Arc<Probe>>) -> Registry {
    let mut registry = Registry::with_builtins();
    let echo = "x".repeat(options.payload);
    let body = serde_json::json!({"type": "echo", "echo": echo})
        .to_string()
        .into_bytes();
    let (rate, probes) = (options.rate, probes.clone());
    registry.register("caller", move |spec| {
        #[derive(serde::Deserialize)]
        struct Params {
            target: String,
        }
        let params: Params = spec.params.parse()?;
        let kind = if params.target == "echo" {
            "rust"
        } else {
            "python"
        };
        Ok(Box::new(Caller {
            target: params.target,
            pace: Pace::new(rate),
            body: body.clone(),
            probe: probes[kind].clone(),
            sent: HashMap::new(),
        }))
    });
    registry
}

/// Loads one responder through `probe` and measures it.
async fn measure(options: &AgentsOptions, responder: &'static str, probe: &Probe) -> TargetReport {
    probe.sending.store(true, Ordering::Relaxed);
    tokio::time::sleep(options.warmup).await;
    let (started, cpu_before) = (Instant::now(), resources::cpu_time());
    probe.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(options.duration).await;
    probe.measuring.store(false, Ordering::Relaxed);
    let wall = started.elapsed();
    let cpu = resources::cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    probe.sending.store(false, Ordering::Relaxed);
    // The last measured requests are answered or time out.
    let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS + 500);
    while probe.outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcomes = probe.outcomes.lock().expect("never poisoned");
    let completed = outcomes.round_trips.len();
    let cpu_micros = cpu.map_or(0.0, |cpu| cpu.as_secs_f64() * 1e6);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    TargetReport {
        responder,
        offered_per_s: options.rate,
        completed_per_s: completed as f64 / wall.as_secs_f64(),
        completed,
        timeouts: outcomes.timeouts,
        refused: outcomes.refused,
        round_trip_ms: LatencySummary::of(&outcomes.round_trips),
        cpu_us_per_request: cpu_micros / (completed.max(1) as f64),
        cpu_percent_of_machine: cpu_micros / (wall.as_secs_f64() * 1e6 * cpus) * 100.0,
    }
}

fn markdown(report: &AgentsReport) -> String {
    let mut text = String::from("# bench agents: request/reply between agents on two nodes\n\n");
    text += "| responder | offered/s | completed/s | p50 ms | p95 ms | p99 ms | mean ms | timeouts | refused | CPU µs/request (this process) | CPU % of machine |\n";
    text += "|---|---|---|---|---|---|---|---|---|---|---|\n";
    for target in &report.responders {
        let rtt = &target.round_trip_ms;
        text +=
            &format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} | {:.1} |\n",
            target.responder, target.offered_per_s, target.completed_per_s, rtt.p50, rtt.p95,
            rtt.p99, rtt.mean, target.timeouts, target.refused, target.cpu_us_per_request,
            target.cpu_percent_of_machine
        );
    }
    text += &format!(
        "| competitor (published inter-agent latency) | | | | {COMPETITOR_P95_MS} | {COMPETITOR_P99_MS} | {COMPETITOR_MEAN_MS} | | | | |\n"
    );
    text +=
        "\nThe Python responder's own CPU is another process's and is not in the CPU columns.\n";
    text
}

/// Runs the benchmark and writes its report.
pub async fn agents(options: AgentsOptions) -> anyhow::Result<i32> {
    options.check()?;
    std::fs::create_dir_all(&options.out)?;
    let probes: HashMap<&'static str, Arc<Probe>> =
        [("rust", Arc::default()), ("python", Arc::default())].into();
    let config = crate::config::parse(
        &config_text(&options),
        "bench agents",
        std::path::Path::new("."),
    )?;
    let cluster = LocalCluster::start_with(config, registry(&options, &probes)).await?;
    let n2 = cluster.node("n2").expect("started").parts.data_path.clone();
    let ready = Instant::now();
    while !options.no_python && !n2.agents.contains_key("py-echo") {
        if ready.elapsed() > Duration::from_secs(15) {
            bail!(
                "the Python responder did not start ({} on python/examples/echo.py)",
                options.python
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut responders = vec![measure(&options, "rust", &probes["rust"]).await];
    if !options.no_python {
        responders.push(measure(&options, "python", &probes["python"]).await);
    }
    cluster.shutdown().await;
    let config = serde_json::json!({
        "rate": options.rate, "duration_s": options.duration.as_secs_f64(),
        "warmup_s": options.warmup.as_secs_f64(), "payload": options.payload,
        "request_timeout_ms": REQUEST_TIMEOUT_MS, "nodes": 2,
    });
    let report = AgentsReport {
        header: ReportHeader::new("agents", config),
        responders,
        competitor_ms: serde_json::json!({"mean": COMPETITOR_MEAN_MS, "p95": COMPETITOR_P95_MS, "p99": COMPETITOR_P99_MS}),
    };
    let text = markdown(&report);
    write_report_texts(&options.out, &report, &text)?;
    print!("{text}");
    let lost = report.responders.iter().any(|target| target.timeouts > 0);
    Ok(if lost { 1 } else { 0 })
}
