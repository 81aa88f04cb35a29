//! The chaos report: `report.json` with docs/ARCHITECTURE.md section 8's fields
//! (`kills`, `partitions`, `acked_lost`, `duplicates_delivered`,
//! `committed_lost`, `linearizable`, `invariant_violations`), and the same
//! as Markdown, with how to replay the run.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::checks::{PbftCheck, RaftCheck, StormCheck};
use super::faults::FaultTally;
use crate::bench::report::ReportHeader;
use crate::metrics::LatencySummary;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Datagrams {
    pub sent: u64,
    pub dropped_cut: u64,
    pub dropped_loss: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub dropped_held: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StormSection {
    /// Ids handed out (sends the router refused at once included).
    pub issued: u64,
    #[serde(flatten)]
    pub check: StormCheck,
    pub refused: BTreeMap<String, u64>,
    pub failed: BTreeMap<String, u64>,
    pub unsettled: u64,
    pub latency_ms: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct PbftSection {
    pub faulty_node: Option<String>,
    #[serde(flatten)]
    pub check: PbftCheck,
    /// Sequence numbers at which two correct replicas executed different
    /// batches.
    pub safety_violations: u64,
    /// Views the correct replicas entered (the most any of them did).
    pub view_changes: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// `scenario`, `version`, `machine` and `config`, at the top level.
    #[serde(flatten)]
    pub header: ReportHeader,
    pub duration_s: f64,
    pub ok: bool,
    pub seed: u64,
    /// The command that runs the same fault schedule again.
    pub replay: String,
    pub kills: BTreeMap<String, u64>,
    pub kills_per_s: f64,
    pub partitions: u64,
    pub acked_lost: u64,
    pub duplicates_delivered: u64,
    pub committed_lost: u64,
    pub linearizable: bool,
    pub invariant_violations: Vec<String>,
    /// Storm messages acknowledged per second while the faults lasted.
    pub throughput_msgs_per_s: f64,
    pub messages: StormSection,
    pub raft: Option<RaftCheck>,
    pub pbft: Option<PbftSection>,
    /// With planned agents: the directories seen and whether they settled.
    pub placement: Option<super::placement::PlacementSection>,
    pub faults: FaultTally,
    pub datagrams: Datagrams,
    pub over_time: Vec<(f64, f64)>,
    /// The client operations, for other checkers (`history.jsonl`).
    pub history: HistorySummary,
}

/// Where the run's client history is and how much of it was kept.
#[derive(Clone, Debug, Serialize)]
pub struct HistorySummary {
    pub file: &'static str,
    pub events: u64,
    /// Events beyond the history's limit, not written: the file is then
    /// incomplete and other checkers must not be run over it.
    pub dropped: u64,
}

impl ChaosReport {
    pub fn to_markdown(&self) -> String {
        let mut text = String::new();
        let verdict = if self.ok {
            "every invariant held"
        } else {
            "INVARIANTS BROKEN"
        };
        let _ = writeln!(text, "# agentmesh chaos: {verdict}\n");
        let _ = writeln!(text, "Replay: `{}`\n", self.replay);
        let _ = writeln!(
            text,
            "Client history: `{}`, {} events{} (one JSON object a line, for other linearizability checkers)\n",
            self.history.file,
            self.history.events,
            match self.history.dropped {
                0 => String::new(),
                dropped => format!(", {dropped} more dropped at its limit: incomplete"),
            }
        );
        let _ = writeln!(text, "| invariant | value |\n|---|---|");
        let _ = writeln!(text, "| acked_lost | {} |", self.acked_lost);
        let _ = writeln!(text, "| committed_lost | {} |", self.committed_lost);
        let _ = writeln!(text, "| linearizable | {} |", self.linearizable);
        let _ = writeln!(
            text,
            "| duplicates_delivered (reported) | {} |",
            self.duplicates_delivered
        );
        let violations = if self.invariant_violations.is_empty() {
            "none".to_string()
        } else {
            self.invariant_violations.join("; ")
        };
        let _ = writeln!(text, "| invariant_violations | {violations} |\n");
        self.faults_markdown(&mut text);
        self.workload_markdown(&mut text);
        text
    }

    fn faults_markdown(&self, text: &mut String) {
        let total: u64 = self.kills.values().sum();
        let _ = writeln!(
            text,
            "## Faults over {:.0} s: {total} kills ({:.2} per second), {} partitions\n",
            self.duration_s, self.kills_per_s, self.partitions
        );
        let _ = writeln!(text, "| killed | times |\n|---|---|");
        for (kind, count) in &self.kills {
            let _ = writeln!(text, "| {kind} | {count} |");
        }
        let faults = &self.faults;
        let _ = writeln!(
            text,
            "\nNodes started again: {}; nodes whose restart budget was spent: {}; hostile behaviours: {}.",
            faults.node_restarts,
            faults.nodes_failed,
            if faults.behaviours.is_empty() { "none".into() } else { faults.behaviours.join(", ") }
        );
        let d = &self.datagrams;
        let _ = writeln!(
            text,
            "Datagrams: {} sent, {} dropped on cut links, {} lost, {} duplicated, {} delayed, {} held ones dropped.\n",
            d.sent, d.dropped_cut, d.dropped_loss, d.duplicated, d.delayed, d.dropped_held
        );
    }

    fn workload_markdown(&self, text: &mut String) {
        let m = &self.messages;
        let _ = writeln!(text, "## Workload\n");
        let _ = writeln!(
            text,
            "Storm: {} sent, {} acknowledged ({:.0} per second during the faults), {} delivered, {} unsettled; ack latency p50 {:.2} ms, p99 {:.2} ms. Refused at once: {:?}. Given up: {:?}.\n",
            m.issued, m.check.acknowledged, self.throughput_msgs_per_s, m.check.delivered,
            m.unsettled, m.latency_ms.p50, m.latency_ms.p99, m.refused, m.failed
        );
        if let Some(raft) = &self.raft {
            let _ = writeln!(
                text,
                "Raft: {} calls, {} answered, {} puts acknowledged over {} keys; linearizable {}; committed_lost {}.\n",
                raft.calls, raft.answered, raft.puts_acknowledged, raft.keys, raft.linearizable, raft.committed_lost
            );
        }
        if let Some(pbft) = &self.pbft {
            let _ = writeln!(
                text,
                "PBFT (the replica allowed to fail: {}): {} operations, {} answered; safety violations {}; view changes {}; committed_lost {}; decisions sharing a place {}.\n",
                pbft.faulty_node.as_deref().unwrap_or("none"), pbft.check.operations, pbft.check.answered,
                pbft.safety_violations, pbft.view_changes, pbft.check.committed_lost,
                pbft.check.decisions_sharing_a_place
            );
        }
        if let Some(placement) = &self.placement {
            let _ = writeln!(
                text,
                "Placement: {} committed overlays seen, {} of them new directories; planned agents settled after the faults: {}.\n",
                placement.epochs_seen, placement.directory_changes_seen, placement.settled
            );
        }
    }
}
