//! What the data path keeps across the router's restarts, beside the
//! router: the mesh core (what awaits acknowledgement and what was
//! consumed must not be forgotten), the running agents' handles and
//! counters (and what sinks recorded) and snapshots, their reports to the router, the admission gauge senders are
//! refused by on their own task, and the agents' rate limits. The node
//! supervisor holds it; the router and the agents use it.

use crate::protocols::wire::{EnvelopeKind, SignedFields};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use ractor::ActorRef;
use tokio::sync::Semaphore;

use crate::protocols::delivery::TokenBucket;
use crate::protocols::mesh::MeshCore;

use super::messages::{AgentMsg, ReceiptSender};

/// A running agent as the router sees it.
#[derive(Clone)]
pub struct AgentHandle {
    pub actor: ActorRef<AgentMsg>,
    /// One permit per delivery waiting in the agent's mailbox.
    pub inbox: Arc<Semaphore>,
    /// Which start of the agent this is (1 for the first); deliveries
    /// the mesh core meant for another are not handed to this one.
    pub incarnation: u64,
}

/// What a local agent tells the router. Kept in order, so a consumption
/// before an agent's restart is taken before the restart.
#[derive(Debug)]
pub enum AgentReport {
    Started {
        agent: String,
        incarnation: u64,
    },
    Consumed {
        agent: String,
        origin: String,
        sequence: u64,
    },
}

/// Agents' reports, waiting for the router to take them (on each message
/// it handles, every `delivery.tick_ms` at the latest). Bounded by what
/// is handed over: one consumption per delivery, and deliveries waiting
/// in inboxes are limited by `agent_inbox_max` per agent.
#[derive(Default)]
pub struct AgentReports(Mutex<Vec<AgentReport>>);

impl AgentReports {
    pub fn push(&self, report: AgentReport) {
        self.0
            .lock()
            .expect("agent reports lock is never poisoned")
            .push(report);
    }

    pub fn is_empty(&self) -> bool {
        self.0
            .lock()
            .expect("agent reports lock is never poisoned")
            .is_empty()
    }

    pub fn take(&self) -> Vec<AgentReport> {
        std::mem::take(&mut *self.0.lock().expect("agent reports lock is never poisoned"))
    }
}

/// The mesh core's admission as the router last left it, so a sender is
/// refused on its own task without waiting for the router.
pub struct AdmissionGauge {
    pub inflight: AtomicUsize,
    pub window: AtomicUsize,
}

impl AdmissionGauge {
    /// Nothing in flight yet, with the core's first window.
    pub fn new(window: usize) -> AdmissionGauge {
        AdmissionGauge {
            inflight: AtomicUsize::new(0),
            window: AtomicUsize::new(window),
        }
    }
}

/// Deliveries a recording agent keeps (`behaviour = "sink"`); more are
/// counted in `unrecorded`. A ten-minute chaos run records about a million
/// per sink (some 150 bytes each).
pub const RECORDED_MAX: usize = 4_000_000;

/// (from agent, payload) of one recorded delivery.
pub type RecordedDelivery = (String, Vec<u8>);

/// An agent's counters; they outlive the agent's restarts.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub sent: AtomicU64,
    pub refused: AtomicU64,
    pub received_data: AtomicU64,
    pub received_replies: AtomicU64,
    /// Messages this agent sent that their destination acknowledged.
    pub acknowledged: AtomicU64,
    /// Sum over data received of the time from its signing to now, in
    /// microseconds (with `received_data`, the agent's mean latency).
    pub latency_micros_total: AtomicU64,
    pub starts: AtomicU64,
    /// Messages this agent handed the router that it has not yet taken:
    /// while the node's admission window is full, an agent with none may
    /// still queue one, so a flooding neighbour cannot shut it out.
    pub queued: Arc<AtomicU64>,
    /// (from agent, payload) of every delivery, for sinks.
    pub recorded: Mutex<Vec<RecordedDelivery>>,
    pub unrecorded: AtomicU64,
}

impl AgentStats {
    /// Keeps what a sink received.
    pub fn record(&self, from_agent: &str, body: &[u8]) {
        let mut recorded = self.recorded.lock().expect("record lock is never poisoned");
        if recorded.len() < RECORDED_MAX {
            recorded.push((from_agent.to_string(), body.to_vec()));
        } else {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a delivery handed to the agent: a message or an answer, and
    /// for a message its latency. False for an acknowledgement, which no
    /// agent is handed.
    pub fn count_delivery(&self, signed: &SignedFields, now_micros: u64) -> bool {
        match signed.kind {
            EnvelopeKind::Data => {
                self.received_data.fetch_add(1, Ordering::Relaxed);
                let latency = now_micros.saturating_sub(signed.sent_at_micros);
                self.latency_micros_total
                    .fetch_add(latency, Ordering::Relaxed);
            }
            EnvelopeKind::Reply => {
                self.received_replies.fetch_add(1, Ordering::Relaxed);
            }
            EnvelopeKind::Ack => return false,
        }
        true
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> Vec<RecordedDelivery> {
        self.recorded
            .lock()
            .expect("record lock is never poisoned")
            .clone()
    }
}

/// The data path's state on one node.
pub struct DataPath {
    /// Owned by the router (the only one to lock it, beside tests that
    /// inspect it).
    pub mesh: Mutex<MeshCore<ReceiptSender>>,
    pub agent_reports: AgentReports,
    pub admission: AdmissionGauge,
    pub agents: DashMap<String, AgentHandle>,
    pub agent_stats: DashMap<String, Arc<AgentStats>>,
    /// Token buckets of this node's agents, when rate limits are on.
    pub rate_limits: DashMap<String, TokenBucket>,
    /// Each agent's latest snapshot (at most `AGENT_SNAPSHOT_BYTES_MAX`
    /// bytes, one per agent of this node), for its next incarnation.
    pub snapshots: DashMap<String, Arc<Vec<u8>>>,
}

impl DataPath {
    /// The data path around `mesh`, with no agent yet.
    pub fn new(mesh: MeshCore<ReceiptSender>) -> DataPath {
        DataPath {
            admission: AdmissionGauge::new(mesh.window()),
            mesh: Mutex::new(mesh),
            agent_reports: AgentReports::default(),
            agents: DashMap::new(),
            agent_stats: DashMap::new(),
            rate_limits: DashMap::new(),
            snapshots: DashMap::new(),
        }
    }

    pub fn mesh_core(&self) -> std::sync::MutexGuard<'_, MeshCore<ReceiptSender>> {
        self.mesh.lock().expect("mesh core lock is never poisoned")
    }

    /// Publishes a new incarnation of `agent` to the router, with an inbox
    /// of `inbox_max` deliveries; returns which incarnation it is. The
    /// start is reported before the handle is published: the router hands
    /// this incarnation only what the core meant for it.
    pub fn publish_agent(&self, agent: &str, actor: ActorRef<AgentMsg>, inbox_max: usize) -> u64 {
        let stats = self.stats_of(agent);
        let incarnation = stats.starts.fetch_add(1, Ordering::Relaxed) + 1;
        self.agent_reports.push(AgentReport::Started {
            agent: agent.to_string(),
            incarnation,
        });
        let handle = AgentHandle {
            actor,
            inbox: Arc::new(Semaphore::new(inbox_max)),
            incarnation,
        };
        self.agents.insert(agent.to_string(), handle);
        incarnation
    }

    /// Reports that `agent` consumed `sequence` of `origin`: the router
    /// acknowledges it, and never hands it over again.
    pub fn consumed(&self, agent: &str, origin: String, sequence: u64) {
        self.agent_reports.push(AgentReport::Consumed {
            agent: agent.to_string(),
            origin,
            sequence,
        });
    }

    pub fn stats_of(&self, agent: &str) -> Arc<AgentStats> {
        // Looked up first: every send asks, and most agents exist.
        if let Some(stats) = self.agent_stats.get(agent) {
            return stats.clone();
        }
        self.agent_stats
            .entry(agent.to_string())
            .or_default()
            .clone()
    }
}
