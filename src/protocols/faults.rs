//! What happens to each datagram a node sends: the fault plan of a
//! fault-injecting transport. Pure: the caller supplies the link and a
//! seeded RNG, and gets back the datagram's fate — dropped (and why), or
//! sent once or twice after some delay. The socket wrapper in
//! `net::faulty_socket` carries the fates out.
//!
//! Faults are decided where a datagram is sent, so a link cut one way
//! (`from` → `to`) stops only what `from` sends; cutting both ways stops
//! both nodes' datagrams to each other. A reordered datagram is one held
//! back past the delays of those sent after it.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

/// Extra hold, beyond the longest delay, of a datagram picked to arrive out
/// of order: long enough that later datagrams overtake it.
pub const REORDER_HOLD_MS: u64 = 3;
/// Longest delay a plan may give a datagram: longer ones would only look
/// like loss to QUIC's timers.
pub const DELAY_MS_MAX: u64 = 10_000;

/// What can go wrong on one directed link, as chances per datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub delay_ms_min: u64,
    pub delay_ms_max: u64,
}

impl LinkFaults {
    /// Whether this link does anything at all to what it carries.
    pub fn is_clean(&self) -> bool {
        self.loss == 0.0 && self.duplicate == 0.0 && self.reorder == 0.0 && self.delay_ms_max == 0
    }
}

/// Why a datagram was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The link is cut in this direction.
    Cut,
    /// Chosen lost by the link's loss rate.
    Loss,
}

/// What becomes of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Drop(DropCause),
    /// Sent `copies` times (1 or 2), each `delay_ms` from now.
    Send {
        copies: u8,
        delay_ms: u64,
    },
}

/// A directed link between two nodes, by id.
pub type Link = (String, String);

/// The faults of every link, and which links are cut.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Faults of every link not named in `links`.
    pub default: LinkFaults,
    pub links: BTreeMap<Link, LinkFaults>,
    cut: BTreeSet<Link>,
}

impl FaultPlan {
    pub fn new(default: LinkFaults, links: BTreeMap<Link, LinkFaults>) -> FaultPlan {
        FaultPlan {
            default,
            links,
            cut: BTreeSet::new(),
        }
    }

    // Getters.

    pub fn faults_of(&self, from: &str, to: &str) -> LinkFaults {
        self.links
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(self.default)
    }

    pub fn is_cut(&self, from: &str, to: &str) -> bool {
        self.cut.contains(&(from.to_string(), to.to_string()))
    }

    /// The links cut now, each direction on its own.
    pub fn cut_links(&self) -> impl Iterator<Item = &Link> {
        self.cut.iter()
    }

    // Commands.

    /// Stops what `from` sends to `to`.
    pub fn cut(&mut self, from: &str, to: &str) {
        assert_ne!(from, to, "a node has no link to itself");
        self.cut.insert((from.to_string(), to.to_string()));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: &str, b: &str) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts every link between `group` and the nodes of `all` outside it.
    pub fn partition(&mut self, group: &[String], all: &[String]) {
        for inside in group {
            for outside in all.iter().filter(|node| !group.contains(node)) {
                self.cut_both(inside, outside);
            }
        }
    }

    /// Mends every cut link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    // Decisions.

    /// The fate of one datagram `from` sends to `to`.
    pub fn fate(&self, from: &str, to: &str, rng: &mut impl Rng) -> Fate {
        if self.is_cut(from, to) {
            return Fate::Drop(DropCause::Cut);
        }
        let faults = self.faults_of(from, to);
        if faults.is_clean() {
            return Fate::Send {
                copies: 1,
                delay_ms: 0,
            };
        }
        decide(&faults, rng)
    }
}

fn decide(faults: &LinkFaults, rng: &mut impl Rng) -> Fate {
    if chance(rng, faults.loss) {
        return Fate::Drop(DropCause::Loss);
    }
    let copies = if chance(rng, faults.duplicate) { 2 } else { 1 };
    let mut delay_ms = if faults.delay_ms_max > faults.delay_ms_min {
        rng.gen_range(faults.delay_ms_min..=faults.delay_ms_max)
    } else {
        faults.delay_ms_min
    };
    if chance(rng, faults.reorder) {
        delay_ms = faults.delay_ms_max + REORDER_HOLD_MS;
    }
    Fate::Send { copies, delay_ms }
}

/// True with probability `p`; never draws for 0, so a clean setting does
/// not move the RNG.
fn chance(rng: &mut impl Rng, p: f64) -> bool {
    p > 0.0 && rng.gen_bool(p.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn fates(plan: &FaultPlan, seed: u64, count: usize) -> Vec<Fate> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..count).map(|_| plan.fate("a", "b", &mut rng)).collect()
    }

    #[test]
    fn a_clean_plan_sends_everything_once_at_once() {
        let plan = FaultPlan::default();
        let sent = Fate::Send {
            copies: 1,
            delay_ms: 0,
        };
        assert!(fates(&plan, 1, 100).iter().all(|fate| *fate == sent));
    }

    #[test]
    fn a_cut_stops_one_direction_until_healed() {
        let mut plan = FaultPlan::default();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        plan.cut("a", "b");
        assert_eq!(plan.fate("a", "b", &mut rng), Fate::Drop(DropCause::Cut));
        assert!(matches!(plan.fate("b", "a", &mut rng), Fate::Send { .. }));
        plan.heal();
        assert!(matches!(plan.fate("a", "b", &mut rng), Fate::Send { .. }));
    }

    #[test]
    fn a_partition_cuts_exactly_the_links_across_it() {
        let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut plan = FaultPlan::default();
        plan.partition(&all[..1], &all);
        assert_eq!(plan.cut_links().count(), 6);
        assert!(plan.is_cut("a", "c") && plan.is_cut("d", "a"));
        assert!(!plan.is_cut("b", "c"));
    }

    #[test]
    fn rates_are_roughly_those_asked_and_the_seed_replays_them() {
        let faults = LinkFaults {
            loss: 0.2,
            duplicate: 0.1,
            reorder: 0.1,
            delay_ms_min: 1,
            delay_ms_max: 4,
        };
        let plan = FaultPlan::new(faults, BTreeMap::new());
        let run = fates(&plan, 7, 10_000);
        assert_eq!(run, fates(&plan, 7, 10_000), "same seed, same fates");
        let lost = run
            .iter()
            .filter(|fate| matches!(fate, Fate::Drop(_)))
            .count();
        let doubled = run
            .iter()
            .filter(|fate| matches!(fate, Fate::Send { copies: 2, .. }))
            .count();
        assert!((1_700..2_300).contains(&lost), "lost {lost} of 10000");
        assert!((600..1_000).contains(&doubled), "doubled {doubled}");
        for fate in run {
            if let Fate::Send { delay_ms, .. } = fate {
                assert!((1..=4 + REORDER_HOLD_MS).contains(&delay_ms));
            }
        }
    }

    #[test]
    fn a_named_link_overrides_the_default() {
        let lossy = LinkFaults {
            loss: 1.0,
            ..LinkFaults::default()
        };
        let links = BTreeMap::from([(("a".to_string(), "b".to_string()), lossy)]);
        let plan = FaultPlan::new(LinkFaults::default(), links);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(plan.fate("a", "b", &mut rng), Fate::Drop(DropCause::Loss));
        assert!(matches!(plan.fate("b", "a", &mut rng), Fate::Send { .. }));
    }
}
