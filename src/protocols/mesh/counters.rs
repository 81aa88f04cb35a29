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

// Each means what the node counter of the same name means
// (`crate::metrics::Counters` documents them).
mesh_counters! {
    envelopes_sent,
    refused_no_route,
    refused_inflight_full,
    dropped_ttl_expired,
    dropped_no_route,
    dropped_misrouted,
    dropped_bad_signature,
    dropped_unknown_origin,
    dropped_duplicate,
    dropped_too_old,
    dropped_agent_inbox_full,
    lost_retries_exhausted,
    lost_to_departed,
    acknowledged,
    retransmissions,
    envelopes_forwarded,
    acks_sent,
    frames_malformed,
    membership_changes,
    members_declared_dead,
    overlay_changes,
    overlay_commits_applied,
    overlay_proposals,
    overlay_frames_refused,
    routes_computed,
}
