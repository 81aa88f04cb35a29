//! Membership: who is alive, by a phi-accrual failure detector on direct
//! neighbours and SWIM-style incarnation numbers for what spreads.
//!
//! Each node heartbeats its overlay neighbours. For each neighbour a
//! [`PhiDetector`] turns the heartbeat arrival history into a suspicion
//! level φ (Hayashibara et al.; the formula is Akka's): φ = 1 means about a
//! 10 % chance that a heartbeat is merely late, φ = 8 about 10⁻⁸. Above
//! `suspect_phi` the neighbour is suspect, above `dead_phi` dead.
//!
//! A verdict is a [`MemberRecord`] (node, incarnation, status); records
//! merge by incarnation first and status second (alive < suspect < dead),
//! which is a join, so views converge whatever order records arrive in.
//! A node that hears it is suspected or dead refutes it by raising its own
//! incarnation; a restarted node starts with a higher incarnation (its boot
//! time), so it is alive again as soon as anyone hears from it.
//!
//! Only status changes spread, and the view digest covers statuses only.
//! A node learns others' incarnations as it hears them (every node starts
//! knowing the others at incarnation 0), but a newer incarnation with the
//! same status changes nothing anyone acts on: spreading those, and
//! exchanging whole views while incarnations differ, made a cluster of
//! 1,000 nodes gossip a million records at start. Statuses still converge:
//! views whose statuses differ have different digests and are exchanged,
//! and there the higher incarnation wins.
//!
//! Time is given in milliseconds by the caller.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bincode::{Decode, Encode};

/// One record's share of the view digest: its node and status (not its
/// incarnation; see the module doc), well mixed (splitmix64's finaliser)
/// so XORs of different views rarely collide.
fn record_hash(record: &MemberRecord) -> u64 {
    let mut hash =
        crate::protocols::stable_hash(&record.node) ^ (record.status as u64 + 1).rotate_left(29);
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// Heartbeat intervals a detector remembers.
pub const INTERVALS_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum Status {
    Alive,
    Suspect,
    Dead,
}

/// One node's state as some node believes it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MemberRecord {
    pub node: String,
    pub incarnation: u64,
    pub status: Status,
}

/// The failure detector's settings (the `[membership]` config section).
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// How often a node heartbeats each overlay neighbour.
    pub heartbeat_interval_ms: u64,
    /// Suspicion level at which a neighbour is suspect.
    pub suspect_phi: f64,
    /// Suspicion level at which a neighbour is dead.
    pub dead_phi: f64,
    /// A pause this long beyond the mean interval is not yet suspicious.
    pub acceptable_pause_ms: u64,
    /// Floor on the interval's standard deviation, so a perfectly regular
    /// history does not make one late heartbeat fatal.
    pub min_std_deviation_ms: u64,
    /// Time given to a neighbour never heard from before it is judged.
    pub first_heartbeat_grace_ms: u64,
}

impl Default for DetectorConfig {
    fn default() -> DetectorConfig {
        DetectorConfig {
            heartbeat_interval_ms: 500,
            suspect_phi: 3.0,
            dead_phi: 8.0,
            // A loaded 2-core machine running a hundred nodes (a thousand
            // TLS handshakes at start) stalls heartbeats by up to a second;
            // these declare a silent neighbour dead after about 2.3 s.
            acceptable_pause_ms: 1_000,
            min_std_deviation_ms: 200,
            first_heartbeat_grace_ms: 5_000,
        }
    }
}

/// A tick this many heartbeat intervals after the last one means this
/// node itself paused.
pub const LOCAL_PAUSE_INTERVALS: u64 = 3;

/// Phi-accrual failure detector for one neighbour.
#[derive(Clone, Debug)]
pub struct PhiDetector {
    intervals: VecDeque<u64>,
    last_ms: u64,
    /// No heartbeat yet: `last_ms` is the end of the grace period.
    in_grace: bool,
}

impl PhiDetector {
    /// Starts judging at `now_ms` as if a heartbeat had arrived `grace_ms`
    /// from now, with a history of one nominal interval.
    pub fn new(now_ms: u64, config: &DetectorConfig) -> PhiDetector {
        let mut intervals = VecDeque::with_capacity(INTERVALS_MAX);
        intervals.push_back(config.heartbeat_interval_ms);
        PhiDetector {
            intervals,
            last_ms: now_ms + config.first_heartbeat_grace_ms,
            in_grace: true,
        }
    }

    pub fn heartbeat(&mut self, now_ms: u64) {
        if self.in_grace {
            // The grace was a stand-in for a first heartbeat; this is one.
            self.in_grace = false;
            self.last_ms = now_ms;
            return;
        }
        if now_ms > self.last_ms {
            if self.intervals.len() == INTERVALS_MAX {
                self.intervals.pop_front();
            }
            self.intervals.push_back(now_ms - self.last_ms);
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// This node paused for `pause_ms`: the silence it heard meanwhile
    /// says nothing of the neighbour.
    pub fn forgive(&mut self, pause_ms: u64) {
        self.last_ms = self.last_ms.saturating_add(pause_ms);
    }

    pub fn phi(&self, now_ms: u64, config: &DetectorConfig) -> f64 {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        let count = self.intervals.len() as f64;
        let mean = self.intervals.iter().sum::<u64>() as f64 / count;
        let variance = self
            .intervals
            .iter()
            .map(|&interval| (interval as f64 - mean).powi(2))
            .sum::<f64>()
            / count;
        let deviation = variance.sqrt().max(config.min_std_deviation_ms as f64);
        let mean = mean + config.acceptable_pause_ms as f64;
        let y = (elapsed - mean) / deviation;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        if elapsed > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        }
    }
}

/// This node's view of the cluster.
#[derive(Clone, Debug)]
pub struct Membership {
    me: String,
    config: DetectorConfig,
    members: BTreeMap<String, MemberRecord>,
    detectors: BTreeMap<String, PhiDetector>,
    /// The latest time any input carried.
    now_ms: u64,
    /// When the last tick came, to tell this node's own pauses.
    last_tick_ms: Option<u64>,
    /// `digest()` of the current records, kept up to date on change.
    digest: u64,
}

impl Membership {
    /// Every configured node starts alive at incarnation 0, this one at
    /// `incarnation` (its boot time, so it outranks its earlier lives).
    pub fn new(me: &str, incarnation: u64, nodes: &[String], config: DetectorConfig) -> Membership {
        let members = nodes
            .iter()
            .map(|node| {
                let incarnation = if node == me { incarnation } else { 0 };
                let record = MemberRecord {
                    node: node.clone(),
                    incarnation,
                    status: Status::Alive,
                };
                (node.clone(), record)
            })
            .collect();
        Membership {
            me: me.to_string(),
            config,
            members,
            detectors: BTreeMap::new(),
            now_ms: 0,
            last_tick_ms: None,
            digest: 0,
        }
        .with_digest()
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn incarnation(&self) -> u64 {
        self.members[&self.me].incarnation
    }

    pub fn status(&self, node: &str) -> Option<Status> {
        self.members.get(node).map(|record| record.status)
    }

    /// Nodes not known to be dead, this one included.
    pub fn live(&self) -> BTreeSet<String> {
        self.members
            .values()
            .filter(|record| record.status != Status::Dead)
            .map(|record| record.node.clone())
            .collect()
    }

    pub fn records(&self) -> Vec<MemberRecord> {
        self.members.values().cloned().collect()
    }

    /// A hash of the whole view; neighbours whose digests differ exchange
    /// records.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn with_digest(mut self) -> Membership {
        self.digest = self.compute_digest();
        self
    }

    /// The XOR of every record's hash: order does not matter, and one
    /// record's change updates it in O(1) (see `replace`), where a fold
    /// over all N records per change made merging a whole view O(N²).
    fn compute_digest(&self) -> u64 {
        self.members
            .values()
            .map(record_hash)
            .fold(0, |hash, one| hash ^ one)
    }

    /// Stores `record` in place of the current one for its node, keeping
    /// the digest.
    fn replace(&mut self, record: MemberRecord) {
        if let Some(old) = self.members.get(&record.node) {
            self.digest ^= record_hash(old);
        }
        self.digest ^= record_hash(&record);
        self.members.insert(record.node.clone(), record);
    }

    /// Watch exactly `neighbours` from now on.
    pub fn monitor(&mut self, now_ms: u64, neighbours: &BTreeSet<String>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.detectors.retain(|node, _| neighbours.contains(node));
        for node in neighbours {
            if *node != self.me && self.members.contains_key(node) {
                let config = self.config;
                self.detectors
                    .entry(node.clone())
                    .or_insert_with(|| PhiDetector::new(now_ms, &config));
            }
        }
    }

    /// A heartbeat from `node`, which says it is at `incarnation`. Returns
    /// the record that changed, if any.
    pub fn heartbeat(&mut self, now_ms: u64, node: &str, incarnation: u64) -> Option<MemberRecord> {
        self.now_ms = self.now_ms.max(now_ms);
        let changed = self.merge_one(MemberRecord {
            node: node.to_string(),
            incarnation,
            status: Status::Alive,
        });
        if let Some(detector) = self.detectors.get_mut(node) {
            detector.heartbeat(now_ms);
        }
        changed
    }

    /// Evidence that watched neighbour `node` was alive at `now_ms`: any
    /// frame it sent, not only heartbeats, so a heartbeat delayed behind a
    /// busy link does not make a working neighbour look dead. Feeds the
    /// detector only; it says nothing about incarnations.
    pub fn evidence(&mut self, now_ms: u64, node: &str) {
        if let Some(detector) = self.detectors.get_mut(node) {
            detector.heartbeat(now_ms);
        }
    }

    /// `node` said it leaves the cluster: dead at its current incarnation,
    /// without waiting for the detector. Returns the record if it changed.
    pub fn left(&mut self, node: &str) -> Option<MemberRecord> {
        let incarnation = self.members.get(node)?.incarnation;
        let changed = self.merge_one(MemberRecord {
            node: node.to_string(),
            incarnation,
            status: Status::Dead,
        });
        self.detectors.remove(node);
        changed
    }

    /// Merges records heard from a neighbour. Returns those that changed a
    /// status in this view (to pass on).
    pub fn merge(&mut self, records: &[MemberRecord]) -> Vec<MemberRecord> {
        records
            .iter()
            .filter_map(|record| self.merge_one(record.clone()))
            .collect()
    }

    fn merge_one(&mut self, record: MemberRecord) -> Option<MemberRecord> {
        let current = self.members.get(&record.node)?.clone();
        if record.node == self.me {
            if record.status != Status::Alive && record.incarnation >= current.incarnation {
                // Refute: a higher incarnation, alive, outranks the rumour.
                let refuted = MemberRecord {
                    node: self.me.clone(),
                    incarnation: record.incarnation + 1,
                    status: Status::Alive,
                };
                self.replace(refuted.clone());
                return Some(refuted);
            }
            return None;
        }
        let newer = (record.incarnation, record.status) > (current.incarnation, current.status);
        if !newer {
            return None;
        }
        if record.status == Status::Alive {
            // Heard alive at a new incarnation: judge it afresh.
            if let Some(detector) = self.detectors.get_mut(&record.node) {
                *detector = PhiDetector::new(self.now_ms, &self.config);
            }
        }
        let status_changed = record.status != current.status;
        self.replace(record.clone());
        // A newer incarnation at the same status is kept, not spread.
        status_changed.then_some(record)
    }

    /// Judges every watched neighbour at `now_ms`. Returns the records that
    /// changed. Ticks come every heartbeat interval; one that comes more
    /// than [`LOCAL_PAUSE_INTERVALS`] intervals after the last shows that
    /// this node itself was not running (starved of CPU, stopped), so it
    /// could neither hear its neighbours nor be heard: the pause is not
    /// held against them, and nobody is judged on that tick.
    pub fn tick(&mut self, now_ms: u64) -> Vec<MemberRecord> {
        self.now_ms = self.now_ms.max(now_ms);
        let interval_ms = self.config.heartbeat_interval_ms;
        let previous = self.last_tick_ms.replace(now_ms);
        let pause_ms = previous.map_or(0, |previous| now_ms.saturating_sub(previous));
        if pause_ms > LOCAL_PAUSE_INTERVALS * interval_ms {
            for detector in self.detectors.values_mut() {
                detector.forgive(pause_ms - interval_ms);
            }
            return Vec::new();
        }
        let mut changed = Vec::new();
        let verdicts: Vec<(String, Status)> = self
            .detectors
            .iter()
            .filter_map(|(node, detector)| {
                let phi = detector.phi(now_ms, &self.config);
                let status = if phi >= self.config.dead_phi {
                    Status::Dead
                } else if phi >= self.config.suspect_phi {
                    Status::Suspect
                } else {
                    return None;
                };
                Some((node.clone(), status))
            })
            .collect();
        for (node, status) in verdicts {
            let incarnation = self.members[&node].incarnation;
            if let Some(record) = self.merge_one(MemberRecord {
                node: node.clone(),
                incarnation,
                status,
            }) {
                changed.push(record);
            }
            if status == Status::Dead {
                self.detectors.remove(&node);
            }
        }
        changed
    }
}
