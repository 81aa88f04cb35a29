//! Failover of planned agents, for `agentmesh bench placement`: in a
//! cluster of ten nodes in this process (three control-plane replicas,
//! thirty planned agents), a node holding planned agents crashes, and the
//! time is taken from the crash until the committed overlay leaves it out
//! (detected), until a directory without it is committed (re-planned),
//! and until every one of its agents runs on a survivor (running). The
//! node then comes back and the cluster settles before the next round.
//! Rounds alternate between a node without a replica and the leader's
//! node, whose planner dies with it: the next leader's planner takes over.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cluster::{Departure, LocalCluster};

/// Nodes in the cluster, as the figure asks.
pub const FAILOVER_NODES: usize = 10;
const PLANNED_AGENTS: usize = 30;
/// How often the cluster is looked at while a failover runs.
const POLL: Duration = Duration::from_millis(2);
/// Longest a failover or a settling may take before the round fails.
const ROUND_WAIT_MAX: Duration = Duration::from_secs(30);

/// One crash and what followed, in milliseconds from the crash.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRound {
    /// `plain` (no replica) or `leader` (the leader's node).
    pub victim: String,
    pub agents_moved: usize,
    pub detected_ms: f64,
    pub replanned_ms: f64,
    pub running_ms: f64,
}

fn config_text(data: &std::path::Path) -> String {
    let name = |index: usize| format!("n{index:02}");
    let mut text = String::from("[cluster]\nname = \"failover\"\nseed = 4\n");
    for index in 1..=FAILOVER_NODES {
        text += &format!(
            "[[nodes]]\nid = \"{}\"\nlisten = \"127.0.0.1:0\"\nzone = \"z{}\"\ncapacity = {{ cpu = 6.0 }}\n",
            name(index),
            index % 3
        );
    }
    let replicas: Vec<String> = (1..=3).map(name).collect();
    text += "[topology]\nkind = \"full-mesh\"\n";
    text += &format!(
        "[control]\nreplicas = {replicas:?}\ndata_dir = {:?}\n",
        data.display()
    );
    text += &format!(
        "[[agents]]\nname = \"worker-{{i}}\"\ncount = {PLANNED_AGENTS}\nbehaviour = \"echo\"\nplacement = \"planned\"\ngroup = \"workers\"\ndemand = {{ cpu = 1.0 }}\nspread = [{{ topology_key = \"zone\", max_skew = 2 }}]\n"
    );
    text
}

/// Runs `rounds` failovers; each round's figures, in order.
pub async fn failover(rounds: usize) -> anyhow::Result<Vec<FailoverRound>> {
    if rounds == 0 {
        return Ok(Vec::new());
    }
    let data = tempfile::tempdir().context("cannot make a temporary folder")?;
    let text = config_text(data.path());
    let config = crate::config::parse(&text, "failover.toml", data.path())?;
    let mut cluster = LocalCluster::start(config).await?;
    let mut measured = Vec::with_capacity(rounds);
    for round in 0..rounds {
        settle(&cluster).await?;
        let leading = round % 2 == 1;
        let (victim, agents) = choose_victim(&cluster, leading).await?;
        let row = crash_and_follow(&mut cluster, &victim, &agents, leading).await;
        cluster
            .restart_node(&victim)
            .await
            .with_context(|| format!("round {round}: {victim} did not restart"))?;
        measured.push(row.with_context(|| format!("round {round}, victim {victim}"))?);
    }
    cluster.shutdown().await;
    Ok(measured)
}

/// The leader's node, or the node without a replica holding the most
/// planned agents, and the agents it holds.
async fn choose_victim(
    cluster: &LocalCluster,
    leading: bool,
) -> anyhow::Result<(String, Vec<String>)> {
    let directory = cluster.placement_settled().map_err(anyhow::Error::msg)?;
    let holding = |node: &str| -> Vec<String> {
        (directory.iter())
            .filter(|(_, at)| at.as_str() == node)
            .map(|(agent, _)| agent.clone())
            .collect()
    };
    let victim = if leading {
        let status = cluster.control_status().await.context("no control plane")?;
        status.leader.context("no leader")?
    } else {
        let replicas = &cluster.config.control.replicas;
        (cluster.nodes.iter())
            .map(|node| node.id.clone())
            .filter(|id| !replicas.contains(id))
            .max_by_key(|id| holding(id).len())
            .context("no node without a replica")?
    };
    let agents = holding(&victim);
    Ok((victim, agents))
}

async fn crash_and_follow(
    cluster: &mut LocalCluster,
    victim: &str,
    agents: &[String],
    leading: bool,
) -> anyhow::Result<FailoverRound> {
    let crashed = Instant::now();
    anyhow::ensure!(
        cluster.stop_node(victim, Departure::Crash).await,
        "{victim} was not running"
    );
    let (mut detected, mut replanned) = (None, None);
    loop {
        let since = || crashed.elapsed().as_secs_f64() * 1e3;
        let committed = (cluster.nodes.iter()).map(|node| node.parts.overlay.committed());
        for commit in committed {
            if commit.down.contains(victim) {
                detected.get_or_insert_with(since);
            }
            if agents
                .iter()
                .all(|a| commit.placed.get(a).is_some_and(|n| n != victim))
            {
                replanned.get_or_insert_with(since);
            }
        }
        let running = (agents.iter()).all(|agent| !cluster.nodes_running(agent).is_empty());
        if let (Some(detected_ms), Some(replanned_ms), true) = (detected, replanned, running) {
            return Ok(FailoverRound {
                victim: if leading { "leader" } else { "plain" }.into(),
                agents_moved: agents.len(),
                detected_ms,
                replanned_ms,
                running_ms: since(),
            });
        }
        anyhow::ensure!(
            crashed.elapsed() < ROUND_WAIT_MAX,
            "its agents were not running elsewhere after {ROUND_WAIT_MAX:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the planned agents run where one directory says.
async fn settle(cluster: &LocalCluster) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match cluster.placement_settled() {
            Ok(_) => return Ok(()),
            Err(why) if started.elapsed() > ROUND_WAIT_MAX => {
                anyhow::bail!("the cluster did not settle: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Medians of one kind of victim's rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FailoverSummary {
    pub rounds: usize,
    pub detected_ms_median: f64,
    pub replanned_ms_median: f64,
    pub running_ms_median: f64,
    pub running_ms_max: f64,
}

/// The summary of the rounds whose victim was `victim`.
pub fn summarise(rounds: &[FailoverRound], victim: &str) -> FailoverSummary {
    let of = |field: fn(&FailoverRound) -> f64| -> Vec<f64> {
        let mut values: Vec<f64> = (rounds.iter())
            .filter(|round| round.victim == victim)
            .map(field)
            .collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let median = |values: &[f64]| values.get(values.len() / 2).copied().unwrap_or(0.0);
    let running = of(|round| round.running_ms);
    FailoverSummary {
        rounds: running.len(),
        detected_ms_median: median(&of(|round| round.detected_ms)),
        replanned_ms_median: median(&of(|round| round.replanned_ms)),
        running_ms_median: median(&running),
        running_ms_max: running.last().copied().unwrap_or(0.0),
    }
}
