//! What the data path routes by: the live overlay seen from this node
//! ([`OverlayFrame`]) and the measured link weights over it, with the
//! routing table they give ([`RoutingView`]). The topology actor computes
//! and publishes them; the mesh core and the connection readers read them.

use std::sync::Arc;

use crate::protocols::routing::RoutingTable;
use crate::protocols::topology::metrics::hops_from;
use crate::protocols::topology::Overlay;

/// Link weights in microseconds by overlay indices (lower first). A fast
/// hasher: a routing table looks up every overlay edge.
pub type LinkWeights = rustc_hash::FxHashMap<(usize, usize), u64>;

/// The live overlay and what follows from it alone, from this node: its
/// index, hop counts, and the map between overlay and wire indices.
/// Computed when the overlay changes and shared by every routing view
/// published until the next change.
#[derive(Debug)]
pub struct OverlayFrame {
    pub overlay: Overlay,
    /// This node's index in `overlay`.
    pub me: Option<usize>,
    /// Fewest hops from this node to each overlay node (usize::MAX: none).
    pub hops_from_me: Vec<usize>,
    /// Overlay index of each node index on the wire (sorted node list).
    pub overlay_of_wire: Vec<Option<usize>>,
    /// Wire index of each overlay index.
    pub wire_of_overlay: Vec<u16>,
}

impl OverlayFrame {
    pub fn new(overlay: Overlay, me: &str, node_names: &[String]) -> OverlayFrame {
        let overlay_of_wire = node_names
            .iter()
            .map(|name| overlay.index_of(name))
            .collect();
        let wire_of_overlay = overlay
            .names()
            .iter()
            .map(|name| {
                let index = node_names
                    .binary_search(name)
                    .expect("overlay nodes are configured nodes");
                u16::try_from(index).expect("NODES_MAX fits u16")
            })
            .collect();
        let me = overlay.index_of(me);
        let hops_from_me = me.map_or_else(Vec::new, |me| hops_from(&overlay, me));
        OverlayFrame {
            overlay,
            me,
            hops_from_me,
            overlay_of_wire,
            wire_of_overlay,
        }
    }
}

/// The live overlay and link weights the router routes by.
pub struct RoutingView {
    pub frame: Arc<OverlayFrame>,
    pub table: Option<RoutingTable>,
    /// Link weights in microseconds, by overlay indices (lower first).
    pub weights: LinkWeights,
    /// Weight of a link nobody has measured yet.
    pub default_weight: u64,
}

impl RoutingView {
    /// Routes over `frame`'s overlay with `weights` by overlay indices.
    pub fn new(frame: Arc<OverlayFrame>, weights: LinkWeights, default_weight: u64) -> RoutingView {
        let mut view = RoutingView {
            frame,
            table: None,
            weights,
            default_weight: default_weight.max(1),
        };
        if let Some(me) = view.frame.me {
            view.table = Some(crate::protocols::routing::compute(
                &view.frame.overlay,
                me,
                |a, b| view.weight(a, b),
            ));
        }
        view
    }

    /// The routing weight of link a–b: its latency plus the cost of a hop.
    pub fn weight(&self, a: usize, b: usize) -> u64 {
        let latency = self
            .weights
            .get(&(a.min(b), a.max(b)))
            .unwrap_or(&self.default_weight);
        latency + crate::protocols::routing::HOP_COST_MICROS
    }
}

impl RoutingView {
    /// Whether `node` is in this node's overlay (alive, as far as it
    /// knows), or the overlay is not known yet. A message for a node known
    /// dead is refused at once rather than retried until it runs out of
    /// retries.
    pub fn thinks_live(&self, node: &str) -> bool {
        self.frame.me.is_none() || self.frame.overlay.index_of(node).is_some()
    }
}
