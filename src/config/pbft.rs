//! The `[pbft]` section: which nodes hold the Byzantine-tolerant group's
//! replicas, its checkpoints, batching and timing, and the behaviour each
//! replica is made to show (correct unless the section says otherwise).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Checker, NodeConfig};
use crate::protocols::pbft::{Behaviour, PbftConfig};

/// Most replicas a PBFT group may have: every message goes to all.
pub const PBFT_REPLICAS_MAX: usize = 31;

/// The PBFT group's settings; no replicas: no group.
#[derive(Clone, Debug)]
pub struct PbftSettings {
    /// The nodes holding replicas; replica i is the i-th.
    pub replicas: Vec<String>,
    pub checkpoint_interval: u64,
    pub window: u64,
    /// None: the batch size adapts up to `batch_max`.
    pub batch: Option<usize>,
    pub batch_max: usize,
    pub inflight_batches_max: u64,
    pub pending_max: usize,
    pub tick_ms: u64,
    pub request_timeout_ms: u64,
    pub retransmit_ms: u64,
    /// Replicas made to misbehave, by node.
    pub behaviours: BTreeMap<String, Behaviour>,
}

impl PbftSettings {
    pub fn replica_id(&self, node: &str) -> Option<u32> {
        self.replicas
            .iter()
            .position(|r| r == node)
            .map(|i| i as u32)
    }

    pub fn behaviour_of(&self, node: &str) -> Behaviour {
        self.behaviours
            .get(node)
            .copied()
            .unwrap_or(Behaviour::Correct)
    }

    /// The protocol's settings, in ticks.
    pub fn protocol(&self) -> PbftConfig {
        let ticks = |ms: u64| (ms / self.tick_ms).max(1);
        PbftConfig {
            replicas: self.replicas.len() as u32,
            checkpoint_interval: self.checkpoint_interval,
            window: self.window,
            batch_max: self.batch.unwrap_or(self.batch_max),
            batch_fixed: self.batch,
            inflight_batches_max: self.inflight_batches_max,
            pending_max: self.pending_max,
            request_timeout_ticks: ticks(self.request_timeout_ms),
            retransmit_ticks: ticks(self.retransmit_ms),
        }
    }
}

/// `batch = "auto"` or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBatch {
    Fixed(usize),
    Named(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPbft {
    replicas: Vec<String>,
    checkpoint_interval: u64,
    window: u64,
    batch: RawBatch,
    batch_max: usize,
    inflight_batches_max: u64,
    pending_max: usize,
    tick_ms: u64,
    request_timeout_ms: u64,
    retransmit_ms: u64,
    behaviours: BTreeMap<String, String>,
    /// More misbehaving replicas than f: PBFT then promises nothing, so
    /// this must be said outright.
    beyond_f_allowed: bool,
}

impl Default for RawPbft {
    fn default() -> RawPbft {
        RawPbft {
            replicas: Vec::new(),
            checkpoint_interval: 128,
            window: 256,
            batch: RawBatch::Named("auto".into()),
            batch_max: 256,
            inflight_batches_max: 1,
            pending_max: 16_384,
            tick_ms: 10,
            request_timeout_ms: 500,
            retransmit_ms: 100,
            behaviours: BTreeMap::new(),
            beyond_f_allowed: false,
        }
    }
}

pub(super) fn validate_pbft(
    raw: RawPbft,
    nodes: &[NodeConfig],
    checker: &mut Checker,
) -> PbftSettings {
    let count = raw.replicas.len();
    if count != 0 && !(4..=PBFT_REPLICAS_MAX).contains(&count) {
        checker.fail(
            "pbft.replicas",
            format!("{count} replicas; give 4 to {PBFT_REPLICAS_MAX} (3f + 1 tolerate f faulty)"),
        );
    }
    let mut seen = BTreeSet::new();
    for (index, replica) in raw.replicas.iter().enumerate() {
        let at = format!("pbft.replicas[{index}]");
        checker.node_once(&at, replica, nodes, &mut seen);
    }
    let batch = match &raw.batch {
        RawBatch::Fixed(size) => {
            let size = *size;
            checker.range(
                "pbft.batch",
                size,
                1,
                crate::protocols::pbft::messages::BATCH_REQUESTS_MAX,
            );
            Some(size)
        }
        RawBatch::Named(name) if name == "auto" => None,
        RawBatch::Named(name) => {
            checker.fail(
                "pbft.batch",
                format!("{name:?}: give \"auto\" or a number of requests"),
            );
            None
        }
    };
    let behaviours = validate_behaviours(&raw, checker);
    checker.range(
        "pbft.checkpoint_interval",
        raw.checkpoint_interval,
        1,
        100_000,
    );
    checker.range(
        "pbft.window",
        raw.window,
        raw.checkpoint_interval,
        1_000_000,
    );
    checker.range(
        "pbft.batch_max",
        raw.batch_max,
        1,
        crate::protocols::pbft::messages::BATCH_REQUESTS_MAX,
    );
    checker.range(
        "pbft.inflight_batches_max",
        raw.inflight_batches_max,
        1,
        raw.window.max(1),
    );
    checker.range("pbft.pending_max", raw.pending_max, 1, 1_000_000);
    checker.range("pbft.tick_ms", raw.tick_ms, 1, 1_000);
    checker.range(
        "pbft.request_timeout_ms",
        raw.request_timeout_ms,
        raw.tick_ms * 2,
        600_000,
    );
    checker.range(
        "pbft.retransmit_ms",
        raw.retransmit_ms,
        raw.tick_ms,
        600_000,
    );
    PbftSettings {
        replicas: raw.replicas,
        checkpoint_interval: raw.checkpoint_interval,
        window: raw.window,
        batch,
        batch_max: raw.batch_max,
        inflight_batches_max: raw.inflight_batches_max,
        pending_max: raw.pending_max,
        tick_ms: raw.tick_ms,
        request_timeout_ms: raw.request_timeout_ms,
        retransmit_ms: raw.retransmit_ms,
        behaviours,
    }
}

fn validate_behaviours(raw: &RawPbft, checker: &mut Checker) -> BTreeMap<String, Behaviour> {
    let mut behaviours = BTreeMap::new();
    for (node, name) in &raw.behaviours {
        let at = format!("pbft.behaviours.{node}");
        if !raw.replicas.contains(node) {
            checker.fail(
                &at,
                format!("{node:?} holds no PBFT replica (pbft.replicas)"),
            );
        }
        match Behaviour::from_name(name) {
            Ok(Behaviour::Correct) => {}
            Ok(behaviour) => {
                behaviours.insert(node.clone(), behaviour);
            }
            Err(reason) => checker.fail(&at, reason),
        }
    }
    let faults = raw.replicas.len().saturating_sub(1) / 3;
    if behaviours.len() > faults && !raw.beyond_f_allowed {
        checker.fail(
            "pbft.behaviours",
            format!(
                "{} misbehaving replicas of {}, but PBFT tolerates f = {faults}: set pbft.beyond_f_allowed = true to run it anyway",
                behaviours.len(),
                raw.replicas.len()
            ),
        );
    }
    behaviours
}
