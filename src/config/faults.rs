//! The `[faults]` section: faults injected into every node's UDP socket —
//! loss, duplication, reordering and delay, for all links or per directed
//! link, and links cut from the start. Absent: no fault layer at all.

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
