//! The mesh core under a seeded simulation (`agentmesh::sim::mesh`):
//! nodes over a virtual network that loses, duplicates, corrupts and
//! reorders envelopes, with cut links, split halves, crash-restarts of
//! nodes and restarts of agents, then a healed phase that must converge.
//! Every run checks exactly-once consumption per node incarnation, TTL and
//! loop-free paths, one outcome per message, counters that agree with the
//! outcomes, and nothing unsettled after healing. Topology cores, in
//! virtual time too, must agree on the overlay and leave a silent node
//! out without accusing live ones. A failure names its seed
//! (SIM_SEED=...), which `SIM_SEED=S SIM_SEEDS=1` replays alone;
//! `SIM_SEEDS=N` runs N seeds.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use agentmesh::protocols::membership::DetectorConfig;
use agentmesh::protocols::mesh::topology::{Links, TopologyConfig};
use agentmesh::protocols::mesh::{ControlFrame, Roster, TopologyCore, TopologyEvent};
use agentmesh::protocols::topology::{Shape, Topology};
use agentmesh::protocols::wire::{Authentication, Frame};
use agentmesh::sim::mesh::{self, Faults, SimConfig, Violation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `SIM_SEEDS` seeds (`default` unless set) from `SIM_SEED` (0 unless set).
fn seeds(default: u64) -> std::ops::Range<u64> {
    let number = |name: &str| std::env::var(name).ok().and_then(|text| text.parse().ok());
    let count = number("SIM_SEEDS").unwrap_or(default);
    let first = number("SIM_SEED").unwrap_or(0);
    first..first + count
}

/// Odd seeds sign data envelopes, even ones seal them with pair keys.
fn run_all(config: SimConfig, default_seeds: u64) -> Vec<mesh::Report> {
    seeds(default_seeds)
        .map(|seed| {
            let authentication = match seed % 2 {
                0 => Authentication::PairKey,
                _ => Authentication::Signature,
            };
            (
                seed,
                SimConfig {
                    authentication,
                    ..config
                },
            )
        })
        .map(|(seed, config)| match mesh::run(seed, config) {
            Ok(report) => report,
            Err(violation) => panic!("SIM_SEED={seed}: {violation}"),
        })
        .collect()
}

#[test]
fn under_harsh_faults_every_acknowledged_message_is_consumed_once_and_the_healed_mesh_settles() {
    let reports = run_all(SimConfig::default(), 6);
    let total = |field: fn(&mesh::Report) -> u64| reports.iter().map(field).sum::<u64>();
    // The faults bit: the checks held against crashes, corruption and loss,
    // not a calm network.
    assert!(total(|r| r.crashes) > 0, "no node crashed in any run");
    assert!(total(|r| r.corrupted) > 0, "nothing was corrupted");
    assert!(total(|r| r.counters.dropped_bad_signature) > 0);
    assert!(total(|r| r.counters.retransmissions) > 0);
    assert!(total(|r| r.counters.lost_retries_exhausted) > 0);
    assert!(total(|r| r.counters.dropped_duplicate) > 0);
    assert!(total(|r| r.acknowledged) > total(|r| r.sent) / 2);
}

#[test]
fn without_faults_every_message_is_acknowledged_first_time() {
    let config = SimConfig {
        faults: Faults::NONE,
        fault_ms: 0,
        ..SimConfig::default()
    };
    for report in run_all(config, 3) {
        assert_eq!(report.acknowledged, report.sent, "{report:?}");
        assert_eq!(report.consumed, report.sent);
        assert_eq!(report.counters.retransmissions, 0, "{report:?}");
        assert_eq!(report.counters.dropped_no_route, 0, "{report:?}");
    }
}

/// The checks can fail: a core that forgets what was consumed (every agent
/// restart here clears the duplicate window too, as a router that kept
/// nothing across restarts would) is caught consuming twice.
#[test]
fn a_mesh_that_forgets_what_was_consumed_is_caught() {
    let config = SimConfig {
        forget_consumed_on_agent_restart: true,
        faults: Faults {
            agent_restart: 0.01,
            ..Faults::HARSH
        },
        ..SimConfig::default()
    };
    let caught = (0..4).any(|seed| {
        matches!(
            mesh::run(seed, config),
            Err(Violation::ConsumedTwice { .. })
        )
    });
    assert!(caught, "no run caught the forgetful mesh consuming twice");
}

/// Topology cores of eight nodes exchanging control frames in virtual
/// time (links 2–40 ms, some frames lost): they agree on one overlay of
/// all eight, declare no live node dead, and once one node goes silent,
/// every other leaves it out of its overlay and routes.
#[test]
fn topology_cores_agree_on_the_overlay_and_leave_out_a_silent_node() {
    for seed in seeds(3) {
        let mut sim = TopologySim::new(seed, 8);
        sim.run_until(4_000);
        let overlays = sim.overlays();
        assert!(
            overlays
                .iter()
                .all(|overlay| overlay.node_count() == 8 && *overlay == overlays[0]),
            "SIM_SEED={seed}: the nodes disagree on the overlay or left a node out"
        );
        assert_eq!(
            sim.declared_dead, 0,
            "SIM_SEED={seed}: a live node was declared dead"
        );
        sim.silence(7);
        sim.run_until(12_000);
        for (index, overlay) in sim.overlays().iter().enumerate().take(7) {
            assert!(
                overlay.node_count() == 7 && !overlay.contains("n07"),
                "SIM_SEED={seed}: n0{index} still routes over the silent node"
            );
        }
        assert!(sim.declared_dead > 0, "SIM_SEED={seed}");
    }
}

/// A control frame on its way: (arrival ms, order) → (from, to, frame).
type Wire = std::collections::BTreeMap<(u64, u64), (usize, usize, Frame)>;

struct SimLinks<'a> {
    me: usize,
    sim_names: &'a [String],
    neighbours: &'a [usize],
    silent: &'a BTreeSet<usize>,
    activity: &'a HashMap<(usize, usize), (u64, u64)>,
}

impl Links for SimLinks<'_> {
    fn connected(&self) -> Vec<String> {
        if self.silent.contains(&self.me) {
            return Vec::new();
        }
        self.neighbours
            .iter()
            .filter(|peer| !self.silent.contains(peer))
            .map(|&peer| self.sim_names[peer].clone())
            .collect()
    }

    fn activity(&self, peer: &str) -> Option<(u64, u64)> {
        let peer = self.sim_names.iter().position(|name| name == peer)?;
        self.activity.get(&(self.me, peer)).copied()
    }
}

struct TopologySim {
    rng: ChaCha8Rng,
    now_ms: u64,
    names: Vec<String>,
    cores: Vec<TopologyCore>,
    neighbours: Vec<Vec<usize>>,
    silent: BTreeSet<usize>,
    /// (me, peer) → (last sent, last received), in microseconds.
    activity: HashMap<(usize, usize), (u64, u64)>,
    wire: Wire,
    order: u64,
    spreads: BTreeSet<(u64, usize)>,
    declared_dead: u64,
}

impl TopologySim {
    fn new(seed: u64, count: usize) -> TopologySim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let names: Vec<String> = (0..count).map(|i| format!("n{i:02}")).collect();
        let keys = names.iter().map(|name| {
            let key = ed25519_dalek::SigningKey::from_bytes(&rng.gen());
            (name.clone(), key.verifying_key())
        });
        let roster = Arc::new(Roster::new(names.clone(), keys.collect(), Vec::new()));
        let topology = Topology::new(Shape::PartialMesh { k: 3 }, &names, seed);
        let base = topology.base().clone();
        let neighbours = (0..count).map(|i| base.adjacent(i).to_vec()).collect();
        let cores = names
            .iter()
            .map(|name| {
                let config = TopologyConfig {
                    node: name.clone(),
                    incarnation: 1,
                    detector: DetectorConfig::default(),
                    replicated: false,
                };
                TopologyCore::new(
                    0,
                    config,
                    roster.clone(),
                    topology.clone(),
                    Default::default(),
                )
            })
            .collect();
        let mut sim = TopologySim {
            rng,
            now_ms: 0,
            names,
            cores,
            neighbours,
            silent: BTreeSet::new(),
            activity: HashMap::new(),
            wire: Wire::new(),
            order: 0,
            spreads: BTreeSet::new(),
            declared_dead: 0,
        };
        for index in 0..count {
            for peer in sim.neighbours[index].clone() {
                let name = sim.names[peer].clone();
                sim.cores[index].link_up(0, &name);
            }
            sim.drain(index);
        }
        sim
    }

    fn silence(&mut self, index: usize) {
        self.silent.insert(index);
    }

    fn overlays(&self) -> Vec<agentmesh::protocols::topology::Overlay> {
        self.cores
            .iter()
            .map(|core| {
                core.routes()
                    .expect("routes made at start")
                    .frame
                    .overlay
                    .clone()
            })
            .collect()
    }

    fn run_until(&mut self, end_ms: u64) {
        while self.now_ms < end_ms {
            self.step();
            self.now_ms += 1;
        }
    }

    fn step(&mut self) {
        let now = self.now_ms * 1_000;
        while let Some(entry) = self.wire.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let (from, to, frame) = entry.remove();
            if self.silent.contains(&from) || self.silent.contains(&to) {
                continue;
            }
            self.activity.entry((to, from)).or_default().1 = now;
            let control = match frame {
                Frame::Heartbeat(heartbeat) => ControlFrame::Heartbeat(heartbeat),
                Frame::Members(records) => ControlFrame::Members(records),
                Frame::Overlay(overlay) => ControlFrame::Overlay(overlay),
                _ => unreachable!("the topology core sends control frames only"),
            };
            let from_name = self.names[from].clone();
            self.input(to, |core, links| {
                core.handle_frame(now, &from_name, control, links)
            });
        }
        while let Some(&(at, index)) = self.spreads.first() {
            if at > self.now_ms {
                break;
            }
            self.spreads.pop_first();
            self.input(index, |core, links| core.spread_due(links));
        }
        let interval = DetectorConfig::default().heartbeat_interval_ms;
        if self.now_ms % interval == 0 {
            for index in 0..self.cores.len() {
                self.input(index, |core, links| core.tick(now, links));
            }
        }
    }

    fn input(&mut self, index: usize, input: impl FnOnce(&mut TopologyCore, &dyn Links)) {
        let links = SimLinks {
            me: index,
            sim_names: &self.names,
            neighbours: &self.neighbours[index],
            silent: &self.silent,
            activity: &self.activity,
        };
        input(&mut self.cores[index], &links);
        self.drain(index);
    }

    fn drain(&mut self, index: usize) {
        let now = self.now_ms * 1_000;
        while let Some((peer, frame)) = self.cores[index].poll_transmit() {
            let to = self
                .names
                .iter()
                .position(|name| *name == peer)
                .expect("a node");
            self.activity.entry((index, to)).or_default().0 = now;
            if self.rng.gen_bool(0.02) {
                continue;
            }
            self.order += 1;
            let at = self.now_ms + self.rng.gen_range(2..=40);
            self.wire.insert((at, self.order), (index, to, frame));
        }
        while let Some(event) = self.cores[index].poll_event() {
            if let TopologyEvent::SpreadAfter(delay_ms) = event {
                self.spreads.insert((self.now_ms + delay_ms, index));
            }
        }
        let counters = self.cores[index].take_counters();
        if !self.silent.contains(&index) {
            self.declared_dead += counters.members_declared_dead;
        }
    }
}
