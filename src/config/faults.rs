//! The `[faults]` section: faults injected into every node's UDP socket —
//! loss, duplication, reordering and delay, for all links or per directed
//! link, and links cut from the start. Absent: no fault layer at all.
//! And `[[disk_faults]]`: a replica's log syncs made to fail, to test
//! what a failing disk does to the group.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Checker, NodeConfig};
use crate::protocols::faults::{FaultPlan, LinkFaults, DELAY_MS_MAX};

/// The fault layer's settings.
#[derive(Clone, Debug)]
pub struct FaultsConfig {
    /// Seeds every socket's fault decisions (with the node's id).
    pub seed: u64,
    pub plan: FaultPlan,
}

impl FaultsConfig {
    /// A fault layer that does nothing until told (links cut at run time).
    pub fn quiet(seed: u64) -> FaultsConfig {
        FaultsConfig {
            seed,
            plan: FaultPlan::default(),
        }
    }
}

// serde's `flatten` does not combine with `deny_unknown_fields`, so the
// fault fields are spelled out in both tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFaults {
    seed: Option<u64>,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay_ms_min: u64,
    delay_ms_max: u64,
    links: Vec<RawLink>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLink {
    from: String,
    to: String,
    /// The same faults from `to` to `from` too.
    both_ways: bool,
    cut: bool,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay_ms_min: u64,
    delay_ms_max: u64,
}

/// `[[disk_faults]]`: one replica's disk made to fail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiskFault {
    node: String,
    fail_syncs_after: u64,
}

/// Syncs of one replica's raft log after the first `fail_syncs_after` fail
/// with EIO, as a dying disk's would (see [`crate::actors::raft_replica::files`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskFault {
    pub fail_syncs_after: u64,
}

/// Syncs past this would take longer than any test runs.
const FAIL_SYNCS_AFTER_MAX: u64 = 1_000_000_000;

pub(super) fn validate_disk_faults(
    raw: Vec<RawDiskFault>,
    replicas: &[String],
    checker: &mut Checker,
) -> BTreeMap<String, DiskFault> {
    let mut faults = BTreeMap::new();
    for (index, fault) in raw.into_iter().enumerate() {
        let at = format!("disk_faults[{index}]");
        if !replicas.contains(&fault.node) {
            checker.fail(
                format!("{at}.node"),
                format!(
                    "{:?} runs no replica: name one of control.replicas or control.standby",
                    fault.node
                ),
            );
        }
        checker.range(
            &format!("{at}.fail_syncs_after"),
            fault.fail_syncs_after,
            0,
            FAIL_SYNCS_AFTER_MAX,
        );
        let written = DiskFault {
            fail_syncs_after: fault.fail_syncs_after,
        };
        if faults.insert(fault.node.clone(), written).is_some() {
            checker.fail(at, format!("{:?} is named twice", fault.node));
        }
    }
    faults
}

/// One link's (or every link's) fault fields, as written.
struct RawLinkFaults {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    delay_ms_min: u64,
    delay_ms_max: u64,
}

pub(super) fn validate_faults(
    raw: Option<RawFaults>,
    cluster_seed: u64,
    nodes: &[NodeConfig],
    checker: &mut Checker,
) -> Option<FaultsConfig> {
    let raw = raw?;
    let written = RawLinkFaults {
        loss: raw.loss,
        duplicate: raw.duplicate,
        reorder: raw.reorder,
        delay_ms_min: raw.delay_ms_min,
        delay_ms_max: raw.delay_ms_max,
    };
    let default = link_faults(&written, "faults", checker);
    let mut links = BTreeMap::new();
    let mut cuts = Vec::new();
    for (index, link) in raw.links.iter().enumerate() {
        let at = format!("faults.links[{index}]");
        for (field, node) in [("from", &link.from), ("to", &link.to)] {
            if !nodes.iter().any(|entry| entry.id == *node) {
                checker.fail(
                    format!("{at}.{field}"),
                    format!("{node:?} is not the id of a [[nodes]] entry"),
                );
            }
        }
        if link.from == link.to {
            checker.fail(&at, format!("from and to are both {:?}", link.from));
            continue;
        }
        let written = RawLinkFaults {
            loss: link.loss,
            duplicate: link.duplicate,
            reorder: link.reorder,
            delay_ms_min: link.delay_ms_min,
            delay_ms_max: link.delay_ms_max,
        };
        let faults = link_faults(&written, &at, checker);
        let mut directions = vec![(link.from.clone(), link.to.clone())];
        if link.both_ways {
            directions.push((link.to.clone(), link.from.clone()));
        }
        for direction in directions {
            if link.cut {
                cuts.push(direction.clone());
            }
            if links.insert(direction.clone(), faults).is_some() {
                checker.fail(
                    &at,
                    format!("the link {} → {} is named twice", direction.0, direction.1),
                );
            }
        }
    }
    let mut plan = FaultPlan::new(default, links);
    for (from, to) in cuts {
        plan.cut(&from, &to);
    }
    Some(FaultsConfig {
        seed: raw.seed.unwrap_or(cluster_seed),
        plan,
    })
}

fn link_faults(raw: &RawLinkFaults, at: &str, checker: &mut Checker) -> LinkFaults {
    for (name, value) in [
        ("loss", raw.loss),
        ("duplicate", raw.duplicate),
        ("reorder", raw.reorder),
    ] {
        if !(0.0..=1.0).contains(&value) {
            checker.fail(
                format!("{at}.{name}"),
                format!("{value} is not a chance between 0 and 1"),
            );
        }
    }
    checker.range(
        &format!("{at}.delay_ms_max"),
        raw.delay_ms_max,
        raw.delay_ms_min,
        DELAY_MS_MAX,
    );
    LinkFaults {
        loss: raw.loss,
        duplicate: raw.duplicate,
        reorder: raw.reorder,
        delay_ms_min: raw.delay_ms_min,
        delay_ms_max: raw.delay_ms_max.max(raw.delay_ms_min),
    }
}
