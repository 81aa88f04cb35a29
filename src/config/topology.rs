//! The `[topology]` section: the overlay's shape and k, and the check
//! that its diameter fits the TTL.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyKind {
    FullMesh,
    PartialMesh,
    Ring,
    Hierarchical,
    HubSpoke,
    Sharded,
}

impl TopologyKind {
    pub const ALL: [TopologyKind; 6] = [
        TopologyKind::FullMesh,
        TopologyKind::PartialMesh,
        TopologyKind::Ring,
        TopologyKind::Hierarchical,
        TopologyKind::HubSpoke,
        TopologyKind::Sharded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::FullMesh => "full-mesh",
            TopologyKind::PartialMesh => "partial-mesh",
            TopologyKind::Ring => "ring",
            TopologyKind::Hierarchical => "hierarchical",
            TopologyKind::HubSpoke => "hub-spoke",
            TopologyKind::Sharded => "sharded",
        }
    }

    /// The kind named `name`, or a message listing the names.
    pub fn parse(name: &str) -> Result<TopologyKind, String> {
        TopologyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = TopologyKind::ALL.iter().map(|kind| kind.name()).collect();
                format!("unknown topology {name:?}; available: {}", names.join(", "))
            })
    }
}

#[derive(Clone, Debug)]
pub struct TopologyConfig {
    pub kind: TopologyKind,
    /// Neighbours per node for partial-mesh and inside shards; None picks k
    /// from the node count with `k_rule`.
    pub k: Option<usize>,
    pub k_rule: KRule,
    /// Children per node of the hierarchical tree.
    pub fanout: usize,
    /// Hubs of the hub-spoke shape.
    pub hubs: usize,
    /// Nodes per shard of the sharded shape.
    pub shard_size: usize,
}

impl TopologyConfig {
    /// The k the partial mesh uses for `nodes` nodes.
    pub fn k_for(&self, nodes: usize) -> usize {
        self.k.unwrap_or_else(|| self.k_rule.k_for(nodes))
    }

    /// The overlay shape for a cluster of `nodes` nodes.
    pub fn shape(&self, nodes: usize) -> Shape {
        match self.kind {
            TopologyKind::FullMesh => Shape::FullMesh,
            TopologyKind::PartialMesh => Shape::PartialMesh {
                k: self.k_for(nodes),
            },
            TopologyKind::Ring => Shape::Ring,
            TopologyKind::Hierarchical => Shape::Hierarchical {
                fanout: self.fanout,
            },
            TopologyKind::HubSpoke => Shape::HubSpoke { hubs: self.hubs },
            TopologyKind::Sharded => Shape::Sharded {
                shard_size: self.shard_size,
                k: self.k_for(self.shard_size.min(nodes)),
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTopology {
    kind: TopologyKind,
    k: Option<usize>,
    k_factor: f64,
    k_min: usize,
    k_max: usize,
    fanout: usize,
    hubs: usize,
    shard_size: usize,
}

impl Default for RawTopology {
    fn default() -> RawTopology {
        let rule = KRule::default();
        RawTopology {
            kind: TopologyKind::FullMesh,
            k: None,
            k_factor: rule.factor,
            k_min: rule.min,
            k_max: rule.max,
            fanout: 4,
            hubs: 1,
            shard_size: 250,
        }
    }
}

/// An overlay whose diameter exceeds the TTL cannot carry a message
/// between its farthest nodes: refused before anything starts.
pub(super) fn validate_reach(
    nodes: &[NodeConfig],
    topology: &TopologyConfig,
    seed: u64,
    ttl: u8,
    checker: &mut Checker,
) {
    let mut names: Vec<String> = nodes.iter().map(|node| node.id.clone()).collect();
    names.sort();
    let shape = topology.shape(names.len());
    let overlay = crate::protocols::topology::build(shape, &names, seed);
    let diameter = crate::protocols::topology::GraphMetrics::of(&overlay).diameter;
    if diameter > ttl as usize {
        let remedy = if diameter <= TTL_MAX as usize {
            format!("raise limits.ttl to {diameter} or more, or choose")
        } else {
            format!("limits.ttl goes up to {TTL_MAX} only: choose")
        };
        checker.fail(
            "limits.ttl",
            format!(
                "the {} overlay of {} nodes has a diameter of {diameter} hops, more than ttl = {ttl} lets a message travel; {remedy} a shape with shorter paths",
                topology.kind.name(),
                names.len()
            ),
        );
    }
}

pub(super) fn validate_topology(
    raw: &RawTopology,
    node_count: usize,
    checker: &mut Checker,
) -> TopologyConfig {
    if let Some(k) = raw.k {
        if k == 0 {
            checker.fail("topology.k", "k must be at least 1");
        } else if k >= node_count.max(1) {
            checker.fail(
                "topology.k",
                format!(
                    "k = {k} is larger than {node_count} nodes allow (at most {})",
                    node_count.saturating_sub(1)
                ),
            );
        }
    }
    if !(raw.k_factor.is_finite() && (0.1..=100.0).contains(&raw.k_factor)) {
        checker.fail(
            "topology.k_factor",
            format!("{} is outside the allowed range 0.1 to 100", raw.k_factor),
        );
    }
    checker.range("topology.k_min", raw.k_min, 1, 1_000);
    checker.range("topology.k_max", raw.k_max, raw.k_min, 1_000);
    checker.range("topology.fanout", raw.fanout, 1, 1_000);
    checker.range("topology.hubs", raw.hubs, 1, node_count.max(1));
    checker.range("topology.shard_size", raw.shard_size, 2, NODES_MAX);
    TopologyConfig {
        kind: raw.kind,
        k: raw.k,
        k_rule: KRule {
            factor: raw.k_factor,
            min: raw.k_min,
            max: raw.k_max,
        },
        fanout: raw.fanout,
        hubs: raw.hubs,
        shard_size: raw.shard_size,
    }
}
