//! A storm over several processes. The parent starts `agentmesh bench
//! worker` children, each running its share of the nodes
//! ([`LocalCluster::start_part`]) from one generated config (fixed ports on
//! 127.0.0.1, a fresh key per node in a temporary folder), and drives them
//! over stdin and stdout: one JSON line per request, one per answer. Logs
//! go to stderr. A worker whose stdin closes (the parent died) stops its
//! nodes and exits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::report::AgentRow;
use super::resources::{self, Process};
use crate::cluster::{add_hops, LocalCluster, Totals};
use crate::metrics::CounterValues;

/// How long a worker may take to start its nodes and say so.
const READY_WAIT_MAX: Duration = Duration::from_secs(120);
/// How long a worker may take to answer any other request.
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    LinksUp,
    StartAgents,
    ResetLatency,
    Sample,
    Quiesce,
    Totals,
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Ready,
    LinksUp(bool),
    Done,
    Sample {
        counters: CounterValues,
        hops: Vec<u64>,
    },
    Totals(PartTotals),
}

/// One worker's totals, histograms in HdrHistogram's V2 format, base64.
#[derive(Debug, Serialize, Deserialize)]
pub struct PartTotals {
    counters: CounterValues,
    hops: Vec<u64>,
    latency: String,
    latency_by_hops: Vec<String>,
    connection_setup: String,
    agents: Vec<AgentRow>,
}

fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serialising to memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_histogram(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|error| anyhow!("a worker sent a bad histogram: {error:?}"))
}

impl PartTotals {
    fn of(cluster: &LocalCluster) -> PartTotals {
        let totals = cluster.totals();
        PartTotals {
            latency: encode_histogram(&totals.latency),
            latency_by_hops: totals
                .latency_by_hops
                .iter()
                .map(encode_histogram)
                .collect(),
            connection_setup: encode_histogram(&totals.connection_setup),
            counters: totals.counters,
            hops: totals.hops,
            agents: super::storm::agent_rows(cluster),
        }
    }

    fn decode(self) -> anyhow::Result<(Totals, Vec<AgentRow>)> {
        let totals = Totals {
            counters: self.counters,
            hops: self.hops,
            latency: decode_histogram(&self.latency)?,
            latency_by_hops: self
                .latency_by_hops
                .iter()
                .map(|text| decode_histogram(text))
                .collect::<anyhow::Result<_>>()?,
            connection_setup: decode_histogram(&self.connection_setup)?,
        };
        Ok((totals, self.agents))
    }
}

/// The worker side: runs `nodes` of the config at `config_path` and
/// answers requests until told to shut down or its stdin closes.
pub async fn serve(config_path: &Path, nodes: &[String]) -> anyhow::Result<i32> {
    let config = crate::config::load(config_path)?;
    let cluster = LocalCluster::start_part(config, nodes).await?;
    let mut stdout = tokio::io::stdout();
    let answer = |answer: Answer| {
        let mut line = serde_json::to_string(&answer).expect("answers serialise");
        line.push('\n');
        line
    };
    stdout.write_all(answer(Answer::Ready).as_bytes()).await?;
    stdout.flush().await?;
    let mut requests = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = requests.next_line().await? {
        let request: Request =
            serde_json::from_str(&line).with_context(|| format!("bad request {line:?}"))?;
        let reply = match request {
            Request::LinksUp => Answer::LinksUp(cluster.all_links_up()),
            Request::StartAgents => {
                cluster.start_agents();
                Answer::Done
            }
            Request::ResetLatency => {
                cluster.reset_latency();
                Answer::Done
            }
            Request::Sample => Answer::Sample {
                counters: cluster.counters(),
                hops: cluster.hops(),
            },
            Request::Quiesce => {
                cluster.quiesce();
                Answer::Done
            }
            Request::Totals => Answer::Totals(PartTotals::of(&cluster)),
            Request::Shutdown => break,
        };
        stdout.write_all(answer(reply).as_bytes()).await?;
        stdout.flush().await?;
    }
    cluster.shutdown().await;
    stdout.write_all(answer(Answer::Done).as_bytes()).await?;
    stdout.flush().await?;
    Ok(0)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(request).expect("requests serialise");
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    async fn answer(&mut self, wait: Duration) -> anyhow::Result<Answer> {
        let pid = self.child.id().unwrap_or(0);
        let line = tokio::time::timeout(wait, self.answers.next_line())
            .await
            .map_err(|_| anyhow!("worker {pid} did not answer within {wait:?}"))??
            .ok_or_else(|| anyhow!("worker {pid} exited (see its log above)"))?;
        serde_json::from_str(&line).with_context(|| format!("worker {pid} answered {line:?}"))
    }
}

/// The parent side: the worker processes of one storm.
pub struct Workers {
    workers: Vec<Worker>,
    /// Holds the generated config and keys until the storm ends.
    _files: tempfile::TempDir,
}

impl Workers {
    /// Starts `parts.len()` workers over the config `config_text`, written
    /// with the keys in `files`; worker i runs the nodes `parts[i]`.
    pub async fn start(
        files: tempfile::TempDir,
        config_text: &str,
        parts: &[Vec<String>],
    ) -> anyhow::Result<Workers> {
        let config_path: PathBuf = files.path().join("cluster.toml");
        std::fs::write(&config_path, config_text)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let executable = std::env::current_exe().context("cannot find this executable")?;
        let mut workers = Vec::with_capacity(parts.len());
        for nodes in parts {
            let mut child = tokio::process::Command::new(&executable)
                .args(["bench", "worker", "--config"])
                .arg(&config_path)
                .args(["--nodes", &nodes.join(",")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            let stdin = child.stdin.take().expect("stdin is piped");
            let stdout = child.stdout.take().expect("stdout is piped");
            let answers = BufReader::new(stdout).lines();
            workers.push(Worker {
                child,
                stdin,
                answers,
            });
        }
        for worker in &mut workers {
            match worker.answer(READY_WAIT_MAX).await? {
                Answer::Ready => {}
                other => bail!("a worker answered {other:?} instead of Ready"),
            }
        }
        Ok(Workers {
            workers,
            _files: files,
        })
    }

    /// Sends `request` to every worker, then collects their answers.
    pub async fn ask(&mut self, request: Request) -> anyhow::Result<Vec<Answer>> {
        for worker in &mut self.workers {
            worker.send(&request).await?;
        }
        let mut answers = Vec::with_capacity(self.workers.len());
        for worker in &mut self.workers {
            answers.push(worker.answer(ANSWER_WAIT_MAX).await?);
        }
        Ok(answers)
    }

    pub async fn links_up(&mut self) -> anyhow::Result<bool> {
        let answers = self.ask(Request::LinksUp).await?;
        Ok(answers
            .iter()
            .all(|answer| matches!(answer, Answer::LinksUp(true))))
    }

    /// Counters and deliveries by hops, summed over the workers.
    pub async fn sample(&mut self) -> anyhow::Result<(CounterValues, Vec<u64>)> {
        let mut counters = CounterValues::default();
        let mut hops: Vec<u64> = Vec::new();
        for answer in self.ask(Request::Sample).await? {
            let Answer::Sample {
                counters: part,
                hops: part_hops,
            } = answer
            else {
                bail!("a worker answered {answer:?} to Sample");
            };
            counters.add(&part);
            add_hops(&mut hops, part_hops);
        }
        Ok((counters, hops))
    }

    pub async fn totals(&mut self) -> anyhow::Result<(Totals, Vec<AgentRow>)> {
        let mut merged: Option<Totals> = None;
        let mut agents = Vec::new();
        for answer in self.ask(Request::Totals).await? {
            let Answer::Totals(part) = answer else {
                bail!("a worker answered {answer:?} to Totals");
            };
            let (totals, rows) = part.decode()?;
            agents.extend(rows);
            match &mut merged {
                Some(sum) => sum.merge(&totals),
                None => merged = Some(totals),
            }
        }
        Ok((merged.ok_or_else(|| anyhow!("no workers"))?, agents))
    }

    /// CPU time of every worker.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.each_process(resources::cpu_time_of)
            .map(|times| times.into_iter().sum())
    }

    /// Resident bytes of every worker now and at their peaks, summed.
    pub fn resident_bytes(&self) -> Option<(u64, u64)> {
        self.each_process(resources::resident_bytes_of)
            .map(|sizes| {
                sizes
                    .into_iter()
                    .fold((0, 0), |(now, peak), (one_now, one_peak)| {
                        (now + one_now, peak + one_peak)
                    })
            })
    }

    fn each_process<T>(&self, read: impl Fn(Process) -> Option<T>) -> Option<Vec<T>> {
        self.workers
            .iter()
            .map(|worker| read(Process::Id(worker.child.id()?)))
            .collect()
    }

    /// Tells every worker to stop its nodes and waits for it to exit.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.ask(Request::Shutdown).await?;
        for worker in &mut self.workers {
            let left = ANSWER_WAIT_MAX.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left, worker.child.wait()).await;
        }
        Ok(())
    }
}
