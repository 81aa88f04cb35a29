//! What a chaos run checks of placement, when its config has planned
//! agents and a control plane. While the faults run, the committed overlay
//! every running node applies is sampled: no two nodes may apply different
//! overlays at one epoch, and every directory must place each planned
//! agent once, within capacity and the required rules (the independent
//! validator, with every node up: a directory is planned against the
//! overlay before it, so the nodes it avoids are checked at the end).
//! Once the faults end and every node is back, each planned agent must run
//! on exactly the node the final directory names, which no node leaves
//! out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::LocalCluster;
use crate::config::placement::problem_of;
use crate::config::ClusterConfig;
use crate::protocols::mesh::OverlayCommit;
use crate::protocols::placement::model::Problem;
use crate::protocols::placement::validate::violations;

/// Epochs remembered; a run that commits more checks the latest ones.
const EPOCHS_SEEN_MAX: usize = 100_000;
/// Violations kept (the count covers them all).
const VIOLATIONS_KEPT_MAX: usize = 20;

#[derive(Clone, Debug, Default, Serialize)]
pub struct PlacementSection {
    /// Committed overlays seen while the faults ran, and of those, how
    /// many placed the planned agents differently from the one before.
    pub epochs_seen: usize,
    pub directory_changes_seen: usize,
    /// Whether, after the faults, every planned agent ran where the final
    /// directory says.
    pub settled: bool,
    pub final_directory: BTreeMap<String, String>,
}

/// The samples and what they broke.
pub struct PlacementWatch {
    problem: Problem,
    planned: Vec<bool>,
    seen: BTreeMap<u64, Arc<OverlayCommit>>,
    violations: Vec<String>,
    violations_total: usize,
}

impl PlacementWatch {
    /// A watch for `config`, if it has planned agents and a control plane.
    pub fn new(config: &ClusterConfig) -> Option<PlacementWatch> {
        let planned: Vec<bool> = config.agents.iter().map(|a| a.placement.planned).collect();
        if !planned.contains(&true) || config.control.replicas.is_empty() {
            return None;
        }
        Some(PlacementWatch {
            problem: problem_of(&config.nodes, &config.agents, &config.placement),
            planned,
            seen: BTreeMap::new(),
            violations: Vec::new(),
            violations_total: 0,
        })
    }

    /// Looks at the committed overlay each running node applies.
    pub fn sample(&mut self, cluster: &LocalCluster) {
        for node in &cluster.nodes {
            let commit = node.parts.overlay.committed();
            match self.seen.get(&commit.epoch) {
                Some(known) if **known != *commit => self.violate(format!(
                    "{} applies another overlay at epoch {} than a node before it",
                    node.id, commit.epoch
                )),
                Some(_) => {}
                None => {
                    self.check_directory(&commit);
                    self.seen.insert(commit.epoch, commit);
                    if self.seen.len() > EPOCHS_SEEN_MAX {
                        self.seen.pop_first();
                    }
                }
            }
        }
    }

    fn check_directory(&mut self, commit: &OverlayCommit) {
        if commit.placed.is_empty() {
            return;
        }
        let node_index = |name: &str| self.problem.nodes.iter().position(|n| n.name == name);
        let node_of: Vec<Option<usize>> = (self.problem.agents.iter().zip(&self.planned))
            .map(|(agent, &planned)| match planned {
                true => commit.placed.get(&agent.name).and_then(|n| node_index(n)),
                false => agent.pinned,
            })
            .collect();
        let broken: Vec<String> = (violations(&self.problem, &node_of).iter())
            .map(ToString::to_string)
            .collect();
        for violation in broken {
            self.violate(format!(
                "the directory at epoch {}: {violation}",
                commit.epoch
            ));
        }
    }

    fn violate(&mut self, violation: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_KEPT_MAX {
            self.violations.push(violation);
        }
    }

    /// Waits up to `wait` for the planned agents to run where the final
    /// directory says; the section, and every violation seen.
    pub async fn finish(
        mut self,
        cluster: &LocalCluster,
        wait: Duration,
    ) -> (PlacementSection, Vec<String>) {
        let started = Instant::now();
        let settled = loop {
            self.sample(cluster);
            let outcome = cluster.placement_settled().and_then(|directory| {
                let committed = cluster.nodes.first().map(|n| n.parts.overlay.committed());
                let down = committed.map(|c| c.down.clone()).unwrap_or_default();
                match directory.values().find(|node| down.contains(*node)) {
                    Some(node) => Err(format!("the directory still places agents on {node}")),
                    None => Ok(directory),
                }
            });
            match outcome {
                Ok(directory) => break Ok(directory),
                Err(why) if started.elapsed() > wait => break Err(why),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut violations = std::mem::take(&mut self.violations);
        if self.violations_total > violations.len() {
            violations.push(format!(
                "{} more placement violations",
                self.violations_total - violations.len()
            ));
        }
        let directories = self.seen.values().map(|c| &c.placed);
        let changes = directories.clone().zip(directories.skip(1));
        let mut section = PlacementSection {
            epochs_seen: self.seen.len(),
            directory_changes_seen: changes.filter(|(a, b)| a != b).count(),
            settled: settled.is_ok(),
            final_directory: BTreeMap::new(),
        };
        match settled {
            Ok(directory) => section.final_directory = directory,
            Err(why) => violations.push(format!(
                "planned agents did not settle {wait:?} after the faults: {why}"
            )),
        }
        (section, violations)
    }
}
