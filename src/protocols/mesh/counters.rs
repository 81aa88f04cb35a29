//! What the mesh and topology cores count. Plain numbers the core raises as it decides;
//! the shell adds them to the node's metrics (same names) after each call
//! and the simulation checks them.

macro_rules! mesh_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Counts of the mesh core's decisions since they were last taken.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct MeshCounters { $($(#[$doc])* pub $name: u64,)* }

        impl MeshCounters {
            /// Every counter that moved, by name.
            pub fn moved(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name),)*]
                    .into_iter()
                    .filter(|(_, value)| *value > 0)
            }

            /// Element-wise sum.
            pub fn add(&mut self, other: &MeshCounters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

mesh_counters! {
    /// Envelopes signed and handed on (to a peer or to this node).
    envelopes_sent,
    /// Sends refused: no agent of that name, or its node is thought dead.
    refused_no_route,
    /// Sends refused: the admission window is full, or the destination's
    /// duplicate window would be overrun.
    refused_inflight_full,
    dropped_ttl_expired,
    dropped_no_route,
    dropped_misrouted,
    dropped_bad_signature,
    dropped_unknown_origin,
    dropped_duplicate,
    dropped_too_old,
    /// Envelopes not handed over: as many deliveries as the node holds
    /// wait unconsumed in agents' inboxes (the origin retransmits).
    dropped_agent_inbox_full,
    lost_retries_exhausted,
    lost_to_departed,
    acknowledged,
    retransmissions,
    envelopes_forwarded,
    acks_sent,
    frames_malformed,
    /// Membership changes this node saw (suspect, dead, alive again).
    membership_changes,
    /// Neighbours this node itself judged dead.
    members_declared_dead,
    /// Overlay recomputations that changed this node's neighbours.
    overlay_changes,
    /// Committed overlays this node applied.
    overlay_commits_applied,
    /// Overlay changes proposed as the leader's node.
    overlay_proposals,
    /// Committed overlay frames refused: no control plane here, or a node
    /// index outside the cluster.
    overlay_frames_refused,
    /// Routing tables computed (one Dijkstra over the overlay each).
    routes_computed,
}
