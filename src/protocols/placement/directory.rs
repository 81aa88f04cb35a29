//! The placement planner's core: given the committed overlay (its epoch,
//! the nodes it leaves out, the directory of planned agents), decides
//! whether a new directory is due and makes it. A directory is due when
//! there is none yet (the cluster starts), when it places an agent on a
//! node that is down or leaves a planned agent out (forced moves), and
//! once after every change of the down set (a node died or came back: a
//! rebalance with the migration budget). The shell proposes what it makes
//! as [`Command::Place`] against the overlay's epoch, so a directory made
//! against an overlay that has moved on is stale and changes nothing.
//!
//! Agents the config pins to a node that is down are left out of the
//! problem: they cannot run anywhere else, and they must not block the
//! planned agents' moves.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocols::cluster_state::Command;

use super::model::{Problem, Traffic};
use super::planner::{rebalance, PlanError};

/// How long a proposed directory may take to commit before the planner
/// makes it again, in milliseconds.
pub const PROPOSAL_WAIT_MS: u64 = 2_000;

/// What the committed overlay says, as the planner reads it.
pub struct Committed<'a> {
    pub epoch: u64,
    pub down: &'a BTreeSet<String>,
    pub placed: &'a BTreeMap<String, String>,
}

/// A directory the planner made, and what it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Replanned {
    pub directory: BTreeMap<String, String>,
    /// (agent, from, to); `from` is `None` for an agent not yet placed.
    pub moves: Vec<(String, Option<String>, String)>,
    /// Of the moves, those off a down node or onto the first directory.
    pub forced_moves: usize,
}

/// What the planner decided.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing to do.
    Keep,
    /// Propose this command (a [`Command::Place`]).
    Propose(Command, Replanned),
    /// A directory is due but no plan meets the rules; the directory
    /// stays as it is.
    Refused(PlanError),
}

/// The planner of one replica, active while that replica leads.
pub struct PlannerCore {
    /// The problem from the config: every node up, every agent.
    problem: Problem,
    /// Which agents are planned (the others are pinned).
    planned: Vec<bool>,
    migrations_max: usize,
    /// The down set the last decision was made for.
    planned_for: Option<BTreeSet<String>>,
    /// The epoch a proposal was made against, and when it is given up.
    proposed: Option<(u64, u64)>,
    /// The epoch no plan could be made for: nothing changed since that
    /// would make one now.
    refused_at: Option<u64>,
}

impl PlannerCore {
    /// `planned[agent]` says which agents of `problem` are planned.
    pub fn new(problem: Problem, planned: Vec<bool>, migrations_max: usize) -> PlannerCore {
        assert_eq!(problem.agents.len(), planned.len(), "one flag per agent");
        PlannerCore {
            problem,
            planned,
            migrations_max,
            planned_for: None,
            proposed: None,
            refused_at: None,
        }
    }

    /// Whether there is anything to plan.
    pub fn has_planned_agents(&self) -> bool {
        self.planned.contains(&true)
    }

    /// This replica stopped leading: what it knew may be old when it
    /// leads again.
    pub fn stand_down(&mut self) {
        self.planned_for = None;
        self.proposed = None;
        self.refused_at = None;
    }

    /// Decides on `committed` at `now_ms` (any monotonic clock).
    pub fn decide(&mut self, committed: &Committed<'_>, now_ms: u64) -> Decision {
        if let Some((epoch, deadline_ms)) = self.proposed {
            if epoch == committed.epoch && now_ms < deadline_ms {
                return Decision::Keep;
            }
            self.proposed = None;
        }
        let forced = self.forced(committed);
        let down_changed = self.planned_for.as_ref() != Some(committed.down);
        let refused_already = self.refused_at == Some(committed.epoch) && !down_changed;
        if (!forced && !down_changed) || refused_already {
            return Decision::Keep;
        }
        self.planned_for = Some(committed.down.clone());
        match replan(&self.problem, &self.planned, committed, self.migrations_max) {
            Ok(None) => Decision::Keep,
            Ok(Some(replanned)) => {
                self.proposed = Some((committed.epoch, now_ms + PROPOSAL_WAIT_MS));
                let command = Command::Place {
                    after_epoch: committed.epoch,
                    directory: replanned.directory.clone(),
                };
                Decision::Propose(command, replanned)
            }
            Err(error) => {
                self.refused_at = Some(committed.epoch);
                Decision::Refused(error)
            }
        }
    }

    /// Whether the directory must change whatever the budget: none yet,
    /// a planned agent missing, or one on a node that is down or unknown.
    fn forced(&self, committed: &Committed<'_>) -> bool {
        let problem = &self.problem;
        (problem.agents.iter().zip(&self.planned))
            .filter(|(_, &planned)| planned)
            .any(|(agent, _)| match committed.placed.get(&agent.name) {
                None => true,
                Some(node) => {
                    committed.down.contains(node) || !problem.nodes.iter().any(|n| &n.name == node)
                }
            })
    }
}

/// The directory for `committed`'s down set, rebalanced from its
/// directory (the planned agents it leaves out are placed anew); `None`
/// when it would be the directory `committed` has.
pub fn replan(
    problem: &Problem,
    planned: &[bool],
    committed: &Committed<'_>,
    migrations_max: usize,
) -> Result<Option<Replanned>, PlanError> {
    let (live, kept) = without_down(problem, planned, committed.down);
    let current: Vec<Option<usize>> = (kept.iter())
        .map(|&agent| {
            let spec = &problem.agents[agent];
            match spec.pinned {
                Some(node) => Some(node),
                None => (committed.placed.get(&spec.name))
                    .and_then(|node| problem.nodes.iter().position(|n| &n.name == node)),
            }
        })
        .collect();
    let rebalanced = rebalance(&live, &current, migrations_max)?;
    let node_name = |node: usize| problem.nodes[node].name.clone();
    let directory: BTreeMap<String, String> = (kept.iter().enumerate())
        .filter(|&(_, &agent)| planned[agent])
        .map(|(index, &agent)| {
            let node = rebalanced.plan.node_of[index];
            (problem.agents[agent].name.clone(), node_name(node))
        })
        .collect();
    if &directory == committed.placed {
        return Ok(None);
    }
    let moves = (rebalanced.moves.iter())
        .filter(|&&(index, _, _)| planned[kept[index]])
        .map(|&(index, from, to)| {
            let name = problem.agents[kept[index]].name.clone();
            (name, from.map(node_name), node_name(to))
        })
        .collect();
    Ok(Some(Replanned {
        directory,
        moves,
        forced_moves: rebalanced.forced_moves,
    }))
}

/// `problem` with the nodes in `down` marked down and the agents pinned
/// to them left out, and the agents kept (their indices in `problem`).
fn without_down(
    problem: &Problem,
    planned: &[bool],
    down: &BTreeSet<String>,
) -> (Problem, Vec<usize>) {
    let mut live = problem.clone();
    for node in &mut live.nodes {
        node.up = !down.contains(&node.name);
    }
    let kept: Vec<usize> = (0..problem.agents.len())
        .filter(|&agent| {
            planned[agent] || (problem.agents[agent].pinned).is_some_and(|node| live.nodes[node].up)
        })
        .collect();
    let mut index_in_kept = vec![None; problem.agents.len()];
    for (index, &agent) in kept.iter().enumerate() {
        index_in_kept[agent] = Some(index);
    }
    live.agents = kept
        .iter()
        .map(|&agent| problem.agents[agent].clone())
        .collect();
    live.traffic = (problem.traffic.iter())
        .filter_map(|traffic| {
            Some(Traffic {
                first: index_in_kept[traffic.first]?,
                second: index_in_kept[traffic.second]?,
                weight: traffic.weight,
            })
        })
        .collect();
    (live, kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::placement::model::{AgentSpec, NodeSpec};
    use crate::protocols::placement::validate::violations;

    fn node(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            capacity: vec![4.0],
            up: true,
            ..NodeSpec::default()
        }
    }

    fn agent(name: &str, pinned: Option<usize>) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            demand: vec![1.0],
            pinned,
            ..AgentSpec::default()
        }
    }

    /// Three nodes of capacity 4; six planned agents of demand 1 and one
    /// agent pinned to n3.
    fn core() -> PlannerCore {
        let mut agents: Vec<AgentSpec> = (0..6).map(|a| agent(&format!("a{a}"), None)).collect();
        agents.push(agent("fixed", Some(2)));
        let problem = Problem {
            dimensions: vec!["cpu".into()],
            nodes: vec![node("n1"), node("n2"), node("n3")],
            agents,
            ..Problem::default()
        };
        let planned = (0..7).map(|a| a < 6).collect();
        PlannerCore::new(problem, planned, 2)
    }

    fn propose(decision: Decision) -> Replanned {
        match decision {
            Decision::Propose(Command::Place { directory, .. }, replanned) => {
                assert_eq!(directory, replanned.directory);
                replanned
            }
            other => panic!("expected a directory, got {other:?}"),
        }
    }

    /// Every planned agent on exactly one up node, within capacity.
    fn assert_holds(directory: &BTreeMap<String, String>, down: &BTreeSet<String>) {
        assert_eq!(directory.len(), 6, "every planned agent placed");
        let mut use_of: BTreeMap<&str, usize> = BTreeMap::new();
        for node in directory.values() {
            assert!(!down.contains(node), "an agent on down node {node}");
            *use_of.entry(node).or_default() += 1;
        }
        let fixed_on_n3 = usize::from(!down.contains("n3"));
        for (node, used) in use_of {
            let used = used + usize::from(node == "n3") * fixed_on_n3;
            assert!(used <= 4, "{node} holds {used} of 4");
        }
    }

    #[test]
    fn the_first_directory_is_made_then_kept_until_the_overlay_moves() {
        let mut planner = core();
        let (down, placed) = (BTreeSet::new(), BTreeMap::new());
        let empty = Committed {
            epoch: 3,
            down: &down,
            placed: &placed,
        };
        let first = propose(planner.decide(&empty, 0));
        assert_holds(&first.directory, &down);
        assert_eq!(first.moves.len(), 6, "every agent placed from nowhere");
        assert_eq!(planner.decide(&empty, 10), Decision::Keep, "waiting on it");
        let again = propose(planner.decide(&empty, PROPOSAL_WAIT_MS));
        assert_eq!(again.directory, first.directory, "made again, the same");
        let committed = Committed {
            epoch: 4,
            down: &down,
            placed: &first.directory,
        };
        assert_eq!(
            planner.decide(&committed, PROPOSAL_WAIT_MS + 1),
            Decision::Keep
        );
    }

    #[test]
    fn a_dead_nodes_agents_move_to_the_survivors_and_the_others_stay() {
        let mut planner = core();
        let (none, placed) = (BTreeSet::new(), BTreeMap::new());
        let start = Committed {
            epoch: 1,
            down: &none,
            placed: &placed,
        };
        let first = propose(planner.decide(&start, 0)).directory;
        let dead = first["a0"].clone();
        let down: BTreeSet<String> = [dead.clone()].into();
        let after = Committed {
            epoch: 2,
            down: &down,
            placed: &first,
        };
        let moved = propose(planner.decide(&after, 1));
        assert_holds(&moved.directory, &down);
        for (agent, node) in &first {
            if node != &dead {
                assert_eq!(&moved.directory[agent], node, "{agent} stays");
            }
        }
        let forced = first.values().filter(|node| **node == dead).count();
        assert_eq!((moved.moves.len(), moved.forced_moves), (forced, forced));
        assert!(moved
            .moves
            .iter()
            .all(|(_, from, _)| from.as_deref() == Some(&dead)));
    }

    #[test]
    fn a_returning_node_gets_agents_back_within_the_budget_once() {
        let mut planner = core();
        let down: BTreeSet<String> = ["n1".to_string()].into();
        let placed = BTreeMap::new();
        let start = Committed {
            epoch: 1,
            down: &down,
            placed: &placed,
        };
        let crowded = propose(planner.decide(&start, 0)).directory;
        assert!(crowded.values().all(|node| node != "n1"));
        let none = BTreeSet::new();
        let back = Committed {
            epoch: 2,
            down: &none,
            placed: &crowded,
        };
        let balanced = propose(planner.decide(&back, 1));
        assert!(
            !balanced.moves.is_empty() && balanced.moves.len() <= 2,
            "{balanced:?}"
        );
        assert_eq!(balanced.forced_moves, 0);
        assert!(balanced.moves.iter().all(|(_, _, to)| to == "n1"));
        let settled = Committed {
            epoch: 3,
            down: &none,
            placed: &balanced.directory,
        };
        assert_eq!(
            planner.decide(&settled, 2),
            Decision::Keep,
            "the budget is spent once per change of the down set"
        );
    }

    #[test]
    fn no_plan_leaves_the_directory_and_says_which_agent_is_blocked() {
        let mut planner = core();
        let down: BTreeSet<String> = ["n1".to_string(), "n2".to_string()].into();
        let placed = BTreeMap::new();
        let committed = Committed {
            epoch: 1,
            down: &down,
            placed: &placed,
        };
        match planner.decide(&committed, 0) {
            Decision::Refused(error) => assert!(error.to_string().contains("fits no node")),
            other => panic!("six agents and a pinned one cannot fit one node of 4: {other:?}"),
        }
        assert_eq!(planner.decide(&committed, 1), Decision::Keep, "not retried");
    }

    #[test]
    fn the_validator_passes_every_directory_over_random_failures() {
        use rand::{Rng, SeedableRng};
        let seed = 11;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut planner = core();
        let mut placed = BTreeMap::new();
        for epoch in 1..40 {
            let down: BTreeSet<String> = (["n1", "n2", "n3"].iter())
                .filter(|_| rng.gen_bool(0.25))
                .take(1)
                .map(|node| node.to_string())
                .collect();
            let committed = Committed {
                epoch,
                down: &down,
                placed: &placed,
            };
            if let Decision::Propose(_, replanned) = planner.decide(&committed, epoch * 10_000) {
                assert_holds(&replanned.directory, &down);
                let mut problem = planner.problem.clone();
                for node in &mut problem.nodes {
                    node.up = !down.contains(&node.name);
                }
                let (live, kept) = without_down(&problem, &planner.planned, &down);
                let node_of: Vec<Option<usize>> = (kept.iter())
                    .map(|&agent| {
                        let spec = &problem.agents[agent];
                        let name = replanned.directory.get(&spec.name);
                        (name.and_then(|name| problem.nodes.iter().position(|n| &n.name == name)))
                            .or(spec.pinned)
                    })
                    .collect();
                assert_eq!(
                    violations(&live, &node_of),
                    vec![],
                    "seed {seed}, epoch {epoch}"
                );
                placed = replanned.directory;
            }
        }
    }
}
