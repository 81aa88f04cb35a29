//! Counters and histograms of one node, shared by its actors.
//!
//! Every limit that refuses or drops something moves a counter here, so
//! nothing is lost silently. Counters are atomics (actors on many threads
//! bump them); histograms sit behind a mutex that only one actor writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Every counter of a node.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }

        /// The counters' values at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub struct CounterValues { $(pub $name: u64,)* }

        impl Counters {
            pub fn values(&self) -> CounterValues {
                CounterValues { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// The counter of that name, for cores that count in plain
            /// numbers under the same names.
            pub fn by_name(&self, name: &str) -> Option<&AtomicU64> {
                match name {
                    $(stringify!($name) => Some(&self.$name),)*
                    _ => None,
                }
            }

            /// Adds what a core counted, by name.
            pub fn add_moved<'n>(&self, moved: impl Iterator<Item = (&'n str, u64)>) {
                for (name, value) in moved {
                    match self.by_name(name) {
                        Some(counter) => {
                            counter.fetch_add(value, Ordering::Relaxed);
                        }
                        None => debug_assert!(false, "core counter {name} is not a node counter"),
                    }
                }
            }
        }

        impl CounterValues {
            /// Element-wise sum, for cluster totals.
            pub fn add(&mut self, other: &CounterValues) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

impl CounterValues {
    /// Messages whose fate the sender knows: acknowledged, or given up
    /// after the last retry.
    pub fn settled(&self) -> u64 {
        self.acknowledged + self.lost_retries_exhausted
    }
}

counters! {
    /// Envelopes signed and handed to a connection or a local agent.
    envelopes_sent,
    /// Envelopes handed to their destination agent, each exactly once.
    envelopes_delivered,
    /// Of those, envelopes that came over as few hops as the destination's
    /// overlay allows.
    delivered_on_shortest_path,
    /// Sends refused: the router's queue was full.
    refused_router_busy,
    /// Sends refused: no agent of that name in the directory.
    refused_no_route,
    /// Sends refused: payload above limits.payload_bytes_max.
    refused_payload_too_large,
    /// Sends refused: the agent is past delivery.source_rate_max.
    refused_rate_limited,
    /// Sends refused: delivery.inflight_max messages await acknowledgement,
    /// or the destination's duplicate window would be overrun.
    refused_inflight_full,
    /// Transmissions lost on the way (each is retransmitted): TTL used up.
    dropped_ttl_expired,
    /// Transmissions lost on the way: no path avoiding visited nodes.
    dropped_no_route,
    /// Transmissions lost on the way: a connection's send queue was full.
    dropped_queue_full,
    /// Transmissions lost on the way: the next hop's connection was down.
    dropped_peer_down,
    /// Messages given up after delivery.retries_max retransmissions.
    lost_retries_exhausted,
    /// Of those, messages to a node this node thought dead by then.
    lost_to_departed,
    /// Messages whose destination acknowledged consuming them.
    acknowledged,
    /// Retransmissions after a timeout.
    retransmissions,
    /// Envelopes forwarded for other nodes.
    envelopes_forwarded,
    /// Acknowledgement envelopes sent.
    acks_sent,
    /// Heartbeats and membership frames dropped because the topology
    /// actor's queue was full.
    dropped_control_queue_full,
    /// Heartbeats and membership frames not sent: the link was down, or
    /// its control queue full.
    control_frames_unsent,
    /// Membership changes this node saw (suspect, dead, alive again).
    membership_changes,
    /// Neighbours this node itself judged dead (not told by others): in a
    /// run where no node stops, each one is a live node accused.
    members_declared_dead,
    /// Overlay recomputations that changed this node's neighbours.
    overlay_changes,
    /// Committed overlays this node applied (a newer epoch each).
    overlay_commits_applied,
    /// Overlay changes this node's topology actor proposed as leader.
    overlay_proposals,
    /// Committed overlay frames dropped: no control plane here, or a node
    /// index outside the cluster.
    overlay_frames_refused,
    /// Routing tables computed (one Dijkstra over the overlay each).
    routes_computed,
    /// Envelopes dropped: signature did not verify.
    dropped_bad_signature,
    /// Envelopes dropped: origin not in the cluster config.
    dropped_unknown_origin,
    /// Envelopes dropped: already delivered (replay or retransmission).
    dropped_duplicate,
    /// Envelopes dropped: older than the duplicate window remembers.
    dropped_too_old,
    /// Envelopes a peer sent beyond `transport.peer_envelopes_per_second_max`.
    dropped_peer_rate_limited,
    /// Envelopes dropped: addressed to an agent this node does not host.
    dropped_misrouted,
    /// Envelopes dropped: the destination agent's inbox was full.
    dropped_agent_inbox_full,
    /// Envelopes dropped: the destination agent was not running.
    dropped_agent_missing,
    /// Deliveries an agent could not read as an agent frame (consumed, so
    /// never handed over again).
    agent_frames_malformed,
    /// Responses that came after their request timed out, or answered no
    /// request.
    agent_responses_unmatched,
    /// Requests refused at the send: the agent had `AGENT_REQUESTS_MAX`
    /// awaiting responses.
    agent_requests_refused,
    /// Control-plane asks refused at once: the agent had
    /// `CONTROL_ASKS_MAX` waiting, or a desk served `DESK_ASKS_MAX`.
    agent_control_asks_refused,
    /// Snapshots an agent's behaviour gave that exceed
    /// `AGENT_SNAPSHOT_BYTES_MAX` (the previous one is kept).
    agent_snapshots_refused,
    /// Lines a process agent wrote that are not Maelstrom messages from it
    /// (not JSON, no body type, another source, too long): skipped.
    process_lines_malformed,
    /// Frames that failed to decode.
    frames_malformed,
    /// Connections closed because the peer sent malformed frames.
    peers_closed_malformed,
    /// Handshakes refused (unknown key, wrong dialer, bad ALPN, ...).
    handshakes_refused,
    /// Handshakes closed part way by either side (a dialer whose overlay
    /// moved on, a node stopping).
    handshakes_abandoned,
    connections_established,
    connections_lost,
    frames_sent,
    frames_received,
    bytes_sent,
    bytes_received,
    /// Child actors restarted by a supervisor of this node.
    actor_restarts,
    /// Restart budgets spent, each escalated to the next supervisor up.
    supervisor_escalations,
    /// Planned agents started here because a committed directory placed
    /// them here, and stopped because one placed them elsewhere.
    placed_agents_started,
    placed_agents_stopped,
    /// Directories the placement planner of this node proposed.
    placement_proposals,
    /// Re-plans the planner could not make (no plan meets the rules); the
    /// directory stays as it was.
    placement_refused,
    /// Raft messages handed to a replica peer's connection.
    raft_messages_sent,
    /// Raft messages not sent: no connection to that replica, or its send
    /// queue was full (Raft sends them again).
    raft_messages_unsent,
    /// Raft messages received from replica peers.
    raft_messages_received,
    /// Raft messages dropped: the replica's queue was full, or it was
    /// restarting (Raft sends them again).
    raft_dropped_queue_full,
    /// Raft messages dropped: this node holds no replica, or the message
    /// named a sender or receiver other than its connection's ends.
    raft_dropped_misaddressed,
    /// PBFT packets queued for a replica peer.
    pbft_packets_sent,
    /// PBFT packets not sent: no connection to that replica, or its send
    /// queue was full (PBFT sends again what matters).
    pbft_packets_unsent,
    /// PBFT packets dropped: the replica's queue was full or it was
    /// restarting (PBFT sends again what matters).
    pbft_dropped_queue_full,
    /// PBFT packets dropped: this node holds no PBFT replica, or a message
    /// named a sender other than its connection's other end.
    pbft_dropped_misaddressed,
    /// PBFT messages and requests refused: a signature that did not verify.
    pbft_rejected_signature,
    /// PBFT messages and requests refused: out of the window, of the wrong
    /// sender, not matching their digest, or otherwise invalid.
    pbft_rejected_invalid,
    /// Client requests refused: pbft.pending_max requests already waited.
    pbft_refused_busy,
    /// View changes this replica started, and views it entered.
    pbft_view_changes_started,
    pbft_views_entered,
    /// View changes of other replicas checked in full (each once).
    pbft_view_changes_checked,
    /// Requests this replica executed.
    pbft_requests_executed,
    /// States fetched from other replicas after falling behind.
    pbft_states_fetched,
    /// Snapshots this replica installed from its leader, and their bytes.
    raft_snapshots_installed,
    raft_snapshot_bytes_installed,
    /// Batches written to the Raft log (each one fsync when fsync is on).
    raft_log_writes,
    /// Client writes committed and applied here.
    control_writes_done,
    /// Client reads answered here.
    control_reads_done,
    /// Client requests refused: no leader known.
    control_refused_no_leader,
    /// Client requests refused: pending_requests_max already wait.
    control_refused_busy,
    /// Client requests that timed out.
    control_timeouts,
}

/// Histograms of a node, in microseconds.
pub struct Histograms {
    /// From the origin's signing to delivery to the agent.
    pub delivery_latency_micros: Histogram<u64>,
    /// From dialing to a connection ready for streams (two significant
    /// digits: a node has few).
    pub connection_setup_micros: Histogram<u64>,
    /// Delivery latency by hops travelled (index h: h hops), coarser (two
    /// significant digits, at most a minute) to keep them small, and made
    /// only up to the longest path seen: a three-digit histogram is about
    /// 190 KB, one per possible hop count would be most of a node's memory.
    pub latency_by_hops_micros: Vec<Histogram<u64>>,
}

fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds are valid")
}

impl Default for Histograms {
    fn default() -> Histograms {
        Histograms {
            delivery_latency_micros: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static bounds are valid"),
            connection_setup_micros: coarse_histogram(),
            latency_by_hops_micros: Vec::new(),
        }
    }
}

impl Histograms {
    /// Forgets delivery latencies (a benchmark's warm-up); connection
    /// set-up times stay.
    pub fn reset_latency(&mut self) {
        self.delivery_latency_micros.reset();
        self.latency_by_hops_micros
            .iter_mut()
            .for_each(Histogram::reset);
    }
}

/// Hop counts of delivered envelopes: index h counts those that travelled
/// h hops.
pub type HopCounts = [AtomicU64; crate::protocols::wire::limits::PATH_NODES_MAX];

pub struct NodeMetrics {
    pub counters: Counters,
    pub histograms: Mutex<Histograms>,
    pub hops: HopCounts,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics {
            counters: Counters::default(),
            histograms: Mutex::default(),
            hops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl NodeMetrics {
    pub fn hop_values(&self) -> Vec<u64> {
        self.hops
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed))
            .collect()
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery `micros` after signing, over `hops` hops.
    pub fn record_delivery(&self, micros: u64, hops: u8) {
        if let Some(counter) = self.hops.get(hops as usize) {
            NodeMetrics::count(counter);
        }
        let mut histograms = self
            .histograms
            .lock()
            .expect("metrics lock is never poisoned");
        histograms
            .delivery_latency_micros
            .saturating_record(micros.max(1));
        let by_hops = &mut histograms.latency_by_hops_micros;
        if (hops as usize) < crate::protocols::wire::limits::PATH_NODES_MAX {
            while by_hops.len() <= hops as usize {
                by_hops.push(coarse_histogram());
            }
            by_hops[hops as usize].saturating_record(micros.clamp(1, 60_000_000));
        }
    }

    pub fn record_connection_setup(&self, micros: u64) {
        let mut histograms = self
            .histograms
            .lock()
            .expect("metrics lock is never poisoned");
        histograms
            .connection_setup_micros
            .saturating_record(micros.max(1));
    }
}

/// Quantiles of a histogram in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let millis = |micros: u64| micros as f64 / 1_000.0;
        LatencySummary {
            count: histogram.len(),
            mean: histogram.mean() / 1_000.0,
            p50: millis(histogram.value_at_quantile(0.50)),
            p95: millis(histogram.value_at_quantile(0.95)),
            p99: millis(histogram.value_at_quantile(0.99)),
            max: millis(histogram.max()),
        }
    }
}
