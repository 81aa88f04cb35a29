//! The chaos run's faults: what to break, when, and where, all drawn from
//! the run's seed. The driver owns the cluster while the faults last:
//!
//! - kills one actor (an agent, a router, a topology or transport actor, a
//!   Raft replica, the PBFT replica that may fail) with ractor's `kill`;
//!   their supervisors restart them;
//! - crashes a whole node and starts it again a few seconds later, on the
//!   same address with the same replica log;
//! - partitions the cluster (one node cut off, or two groups) through the
//!   fault-injecting sockets, and heals it;
//! - turns the one PBFT replica allowed to fail hostile, changing its
//!   behaviour now and then.
//!
//! PBFT tolerates f faulty replicas; a replica restarted empty has forgotten
//! what it voted, which counts as faulty too. So one replica (chosen by the
//! seed; f = 1 at four replicas) is the run's faulty one: only it is made
//! hostile, only its actor is killed, and of the nodes holding PBFT
//! replicas only its node is crashed. The others are held to agree.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::{IteratorRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::workload::Running;
use crate::actors::data_path::AgentStats;
use crate::actors::messages::PbftMsg;
use crate::clients::pbft::ReplicaSet;
use crate::cluster::{Departure, LocalCluster};
use crate::net::faulty_socket::FaultNet;
use crate::protocols::pbft::Behaviour;

/// Events kept word for word in the report; the rest are only counted.
const EVENTS_KEPT_MAX: usize = 2_000;
/// How often the hostile replica changes its behaviour.
const BEHAVIOUR_PERIOD: Duration = Duration::from_secs(15);

/// How long a crashed node stays down, and a partition lasts.
const NODE_DOWN_MS: (u64, u64) = (1_000, 4_000);
const PARTITION_MS: (u64, u64) = (2_000, 5_000);
/// Behaviours the hostile replica takes on, in turn.
const HOSTILE: [Behaviour; 6] = Behaviour::BYZANTINE;

/// The kinds of actor a chaos run kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActorKind {
    Agent,
    Router,
    Topology,
    Transport,
    RaftReplica,
    PbftReplica,
    PlacementPlanner,
}

impl ActorKind {
    const ALL: [ActorKind; 7] = [
        ActorKind::Agent,
        ActorKind::Router,
        ActorKind::Topology,
        ActorKind::Transport,
        ActorKind::RaftReplica,
        ActorKind::PbftReplica,
        ActorKind::PlacementPlanner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ActorKind::Agent => "agent",
            ActorKind::Router => "router",
            ActorKind::Topology => "topology",
            ActorKind::Transport => "transport",
            ActorKind::RaftReplica => "raft_replica",
            ActorKind::PbftReplica => "pbft_replica",
            ActorKind::PlacementPlanner => "placement_planner",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct FaultSettings {
    /// Actor kills per second (0: none).
    pub kill_rate: f64,
    /// Mean time between node crashes (zero: none).
    pub node_kill_every: Duration,
    /// Mean time between partitions (zero: none).
    pub partition_every: Duration,
    pub byzantine: bool,
    pub seed: u64,
}

/// What the faults did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FaultTally {
    /// Kills by actor kind, and whole nodes as "node".
    pub kills: BTreeMap<String, u64>,
    pub partitions: u64,
    pub node_restarts: u64,
    /// Nodes whose supervisor gave up (restart budget spent), restarted.
    pub nodes_failed: u64,
    pub behaviours: Vec<String>,
    /// The faults in order, with the second of the run each came at.
    pub events: Vec<String>,
    pub events_unkept: u64,
    /// What went wrong in the driver itself (a node that would not start).
    pub errors: Vec<String>,
}

/// Breaks things in the cluster it owns.
pub struct FaultDriver {
    pub cluster: LocalCluster,
    running: Arc<Running>,
    replicas: Option<Arc<ReplicaSet>>,
    net: Arc<FaultNet>,
    settings: FaultSettings,
    rng: ChaCha8Rng,
    started: Instant,
    /// The node whose PBFT replica may fail (None: no PBFT group).
    pub faulty_node: Option<String>,
    down: BTreeMap<String, Instant>,
    partition_until: Option<Instant>,
    behaviour_at: Instant,
    behaviour_turn: usize,
    /// What the faulty replica was last made to do.
    behaviour: Option<Behaviour>,
    /// Sink statistics of node incarnations that ended, by node.
    pub retired_sinks: Vec<(String, Vec<Arc<AgentStats>>)>,
    sinks: Vec<String>,
    pub tally: FaultTally,
    /// Samples of the committed directory, when the cluster has planned
    /// agents.
    pub placement: Option<super::placement::PlacementWatch>,
}

impl FaultDriver {
    pub fn new(
        cluster: LocalCluster,
        running: Arc<Running>,
        replicas: Option<Arc<ReplicaSet>>,
        settings: FaultSettings,
        sinks: Vec<String>,
    ) -> FaultDriver {
        let net = cluster
            .faults
            .clone()
            .expect("a chaos run has a fault layer");
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
        let faulty_node = cluster.config.pbft.replicas.choose(&mut rng).cloned();
        let placement = super::placement::PlacementWatch::new(&cluster.config);
        FaultDriver {
            cluster,
            running,
            replicas,
            net,
            settings,
            rng,
            started: Instant::now(),
            faulty_node,
            down: BTreeMap::new(),
            partition_until: None,
            behaviour_at: Instant::now(),
            behaviour_turn: 0,
            behaviour: None,
            retired_sinks: Vec::new(),
            placement,
            sinks,
            tally: FaultTally::default(),
        }
    }

    fn note(&mut self, event: String) {
        tracing::info!(%event, "chaos");
        if self.tally.events.len() < EVENTS_KEPT_MAX {
            let second = self.started.elapsed().as_secs_f64();
            self.tally.events.push(format!("{second:7.2} s  {event}"));
        } else {
            self.tally.events_unkept += 1;
        }
    }

    /// Breaks things until `until`.
    pub async fn run(&mut self, until: Instant) {
        self.started = Instant::now();
        let rate_of = |every: Duration| match every.as_secs_f64() {
            seconds if seconds > 0.0 => 1.0 / seconds,
            _ => 0.0,
        };
        let (kill_rate, node_rate) = (
            self.settings.kill_rate,
            rate_of(self.settings.node_kill_every),
        );
        let partition_rate = rate_of(self.settings.partition_every);
        let mut next_kill = self.started + self.gap(kill_rate);
        let mut next_crash = self.started + self.gap(node_rate);
        let mut next_partition = self.started + self.gap(partition_rate);
        while Instant::now() < until {
            let now = Instant::now();
            self.restart_due(now).await;
            self.heal_due(now);
            self.restart_failed().await;
            if self.settings.byzantine && now >= self.behaviour_at {
                self.turn_hostile();
            }
            if now >= next_kill {
                self.kill_actor();
                next_kill = now + self.gap(kill_rate);
            }
            if now >= next_crash {
                // While one is down, the next waits its turn.
                if self.down.is_empty() {
                    self.crash_node().await;
                }
                next_crash = now + self.gap(node_rate);
            }
            if now >= next_partition {
                self.partition();
                next_partition = now + self.gap(partition_rate);
            }
            if let Some(watch) = &mut self.placement {
                watch.sample(&self.cluster);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every fault but the hostile replica: heals the network and
    /// starts every stopped node.
    pub async fn end(&mut self) {
        self.partition_until = Some(Instant::now());
        self.heal_due(Instant::now());
        let far = Instant::now() + Duration::from_secs(3_600);
        self.restart_due(far).await;
        self.restart_failed().await;
    }

    /// Time to the next event of a kind that comes `rate` times a second:
    /// uniform around the mean.
    fn gap(&mut self, rate: f64) -> Duration {
        if rate <= 0.0 {
            return Duration::from_secs(3_600);
        }
        Duration::from_secs_f64(self.rng.gen_range(0.5..1.5) / rate)
    }

    /// The nodes running now, in id order.
    fn running_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.cluster.nodes.iter().map(|n| n.id.clone()).collect();
        ids.sort();
        ids
    }

    fn may_fail(&self, node: &str) -> bool {
        self.cluster.config.pbft.replica_id(node).is_none()
            || self.faulty_node.as_deref() == Some(node)
    }

    /// Kills one actor of a kind drawn at random, on a node drawn at random
    /// among those running one.
    fn kill_actor(&mut self) {
        let mut kinds = ActorKind::ALL.to_vec();
        kinds.shuffle(&mut self.rng);
        for kind in kinds {
            let candidates: Vec<String> = self
                .running_ids()
                .into_iter()
                .filter(|node| self.holds(kind, node))
                .collect();
            let Some(node) = candidates.choose(&mut self.rng).cloned() else {
                continue;
            };
            if let Some(actor) = self.kill(kind, &node) {
                *self.tally.kills.entry(kind.name().into()).or_default() += 1;
                self.note(format!("kill {} {actor} on {node}", kind.name()));
                return;
            }
        }
    }

    fn holds(&self, kind: ActorKind, node: &str) -> bool {
        let config = &self.cluster.config;
        match kind {
            ActorKind::RaftReplica => config.control.replica_id(node).is_some(),
            ActorKind::PbftReplica => self.faulty_node.as_deref() == Some(node),
            // The active planner: the one beside the leading replica.
            ActorKind::PlacementPlanner => self.cluster.node(node).is_some_and(|handle| {
                (handle.parts.overlay.replica_leading).load(std::sync::atomic::Ordering::Relaxed)
            }),
            _ => true,
        }
    }

    /// Kills `kind` on `node`; names what was killed, or None if it was
    /// not running (between a kill and its restart).
    fn kill(&mut self, kind: ActorKind, node: &str) -> Option<String> {
        let context = self.cluster.node(node)?.parts.clone();
        let name = match kind {
            ActorKind::Agent => {
                let agents: Vec<(String, ractor::ActorCell)> = context
                    .data_path
                    .agents
                    .iter()
                    .map(|entry| (entry.key().clone(), entry.value().actor.get_cell()))
                    .collect();
                let (name, cell) = agents.choose(&mut self.rng)?.clone();
                cell.kill();
                name
            }
            ActorKind::Router => kill_in(&context.shared.mailboxes.router)?,
            ActorKind::Topology => kill_in(&context.shared.mailboxes.topology)?,
            ActorKind::Transport => kill_in(&context.shared.mailboxes.transport)?,
            ActorKind::RaftReplica => kill_in(&context.shared.mailboxes.replica)?,
            ActorKind::PbftReplica => kill_in(&context.shared.mailboxes.pbft)?,
            ActorKind::PlacementPlanner => kill_in(&context.shared.mailboxes.planner)?,
        };
        Some(name)
    }

    /// Crashes a node that may fail, to start again in a few seconds.
    async fn crash_node(&mut self) {
        let candidates: Vec<String> = self
            .running_ids()
            .into_iter()
            .filter(|node| self.may_fail(node))
            .collect();
        let Some(node) = candidates.choose(&mut self.rng).cloned() else {
            return;
        };
        self.retire(&node);
        self.running.remove(&node);
        self.cluster.stop_node(&node, Departure::Crash).await;
        let down_ms = self.rng.gen_range(NODE_DOWN_MS.0..=NODE_DOWN_MS.1);
        self.down.insert(
            node.clone(),
            Instant::now() + Duration::from_millis(down_ms),
        );
        *self.tally.kills.entry("node".into()).or_default() += 1;
        self.note(format!("crash node {node} for {down_ms} ms"));
    }

    /// Keeps what `node`'s sinks consumed in the incarnation now ending.
    fn retire(&mut self, node: &str) {
        if let Some(handle) = self.cluster.node(node) {
            let stats = sink_stats(&handle.parts, &self.sinks);
            self.retired_sinks.push((node.to_string(), stats));
        }
    }

    async fn restart_due(&mut self, now: Instant) {
        let due: Vec<String> = self
            .down
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(node, _)| node.clone())
            .collect();
        for node in due {
            self.down.remove(&node);
            self.start_again(&node).await;
        }
    }

    async fn start_again(&mut self, node: &str) {
        if let Err(error) = self.cluster.restart_node(node).await {
            self.tally
                .errors
                .push(format!("node {node} did not start again: {error}"));
            return;
        }
        self.tally.node_restarts += 1;
        self.note(format!("start node {node} again"));
        let context = self.cluster.node(node).expect("just started").parts.clone();
        self.running.set(node, &context);
        let replica = self.cluster.config.pbft.replica_id(node);
        if let (Some(replicas), Some(replica)) = (&self.replicas, replica) {
            replicas.replace(replica as usize, &context);
        }
        if let (Some(behaviour), true) = (self.behaviour, self.faulty_node.as_deref() == Some(node))
        {
            self.behave(behaviour);
        }
    }

    /// Nodes whose supervisor spent its budget and stopped: started again.
    async fn restart_failed(&mut self) {
        for node in self.cluster.failed_nodes() {
            self.retire(&node);
            self.running.remove(&node);
            if let Some(handle) = self.cluster.detach_node(&node) {
                handle.crash().await;
            }
            self.tally.nodes_failed += 1;
            self.note(format!("node {node} stopped: its restart budget was spent"));
            self.start_again(&node).await;
        }
    }

    /// Cuts one node off, or splits the nodes in two, for a few seconds.
    fn partition(&mut self) {
        if self.partition_until.is_some() {
            return;
        }
        let mut all: Vec<String> = self
            .cluster
            .config
            .nodes
            .iter()
            .map(|n| n.id.clone())
            .collect();
        all.sort();
        let size = if self.rng.gen_bool(0.5) {
            1
        } else {
            all.len() / 2
        };
        let group: Vec<String> = all
            .iter()
            .cloned()
            .choose_multiple(&mut self.rng, size.max(1));
        self.net.partition(&group, &all);
        let lasting_ms = self.rng.gen_range(PARTITION_MS.0..=PARTITION_MS.1);
        self.partition_until = Some(Instant::now() + Duration::from_millis(lasting_ms));
        self.tally.partitions += 1;
        self.note(format!(
            "partition {group:?} from the rest for {lasting_ms} ms"
        ));
    }

    fn heal_due(&mut self, now: Instant) {
        if self.partition_until.is_some_and(|until| until <= now) {
            self.partition_until = None;
            self.net.heal();
            self.note("heal every link".into());
        }
    }

    /// The faulty replica takes on the next hostile behaviour.
    fn turn_hostile(&mut self) {
        self.behaviour_at = Instant::now() + BEHAVIOUR_PERIOD;
        // The seed picks where in the list a run starts.
        let turn = self.behaviour_turn + (self.settings.seed % HOSTILE.len() as u64) as usize;
        self.behaviour_turn += 1;
        self.behave(HOSTILE[turn % HOSTILE.len()]);
    }

    fn behave(&mut self, behaviour: Behaviour) {
        let Some(node) = self.faulty_node.clone() else {
            return;
        };
        let Some(handle) = self.cluster.node(&node) else {
            return;
        };
        self.behaviour = Some(behaviour);
        *handle.parts.pbft.behaviour.lock().expect("never poisoned") = Some(behaviour);
        if let Some(replica) = handle.parts.shared.mailboxes.pbft.get() {
            let _ = replica.cast(PbftMsg::Behave(behaviour));
        }
        self.tally.behaviours.push(behaviour.name().to_string());
        self.note(format!("pbft replica on {node} turns {}", behaviour.name()));
    }
}

/// Kills the actor in `slot`, naming it.
fn kill_in<M>(slot: &crate::actors::shared::Slot<M>) -> Option<String> {
    let actor = slot.get()?;
    let name = actor
        .get_name()
        .unwrap_or_else(|| format!("{:?}", actor.get_id()));
    actor.kill();
    Some(name)
}

/// The statistics of the sinks among `sinks` that run on this node.
pub fn sink_stats(
    context: &crate::actors::node::NodeParts,
    sinks: &[String],
) -> Vec<Arc<AgentStats>> {
    context
        .data_path
        .agent_stats
        .iter()
        .filter(|entry| sinks.contains(entry.key()))
        .map(|entry| entry.value().clone())
        .collect()
}
