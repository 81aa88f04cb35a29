//! The Raft core under a seeded simulation (`agentmesh::sim::raft`): groups
//! of 3, 5 and 7 replicas over a network that loses, duplicates and
//! reorders messages, with partitions and crash-restarts from the durable
//! state. Every step checks election safety, that an applied index never
//! changes, and that each replica applies in order; once the faults heal,
//! every replica must have applied everything committed. A failure names
//! its seed (SIM_SEED=...); `SIM_SEEDS=N` runs N seeds per size.

use agentmesh::sim::raft::{Faults, RaftSim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FAULTY: Faults = Faults {
    loss: 0.05,
    duplicate: 0.02,
    delay_max_ms: 20,
    disk_delay_max_ms: 5,
};

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(50)
}

/// Faults for 3 s: proposals every 5 ms at a random replica, and every
/// 200 ms a crash, a restart, a partition or a heal. Then everything heals
/// and restarts; after 3 s more every replica must have caught up.
fn chaos(seed: u64, count: usize) -> Result<RaftSim, String> {
    let fail = |error: agentmesh::sim::raft::Violation| {
        format!("SIM_SEED={seed} ({count} replicas): {error}")
    };
    let mut sim = RaftSim::new(seed, count, FAULTY);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut proposal = 0u64;
    for millisecond in 0..3_000u64 {
        if millisecond % 5 == 0 {
            proposal += 1;
            let at = rng.gen_range(1..=count as u64);
            sim.propose(at, proposal.to_be_bytes().to_vec());
        }
        if millisecond % 200 == 100 {
            let replica = rng.gen_range(1..=count as u64);
            match rng.gen_range(0..4) {
                0 => sim.crash(replica),
                1 => sim.restart(replica).map_err(fail)?,
                2 => {
                    let size = rng.gen_range(1..count);
                    let group: Vec<u64> = (1..=size as u64).collect();
                    sim.partition(&group);
                }
                _ => sim.heal(),
            }
        }
        sim.step().map_err(fail)?;
    }
    sim.heal();
    sim.faults = Faults::NONE;
    for replica in 1..=count as u64 {
        sim.restart(replica).map_err(fail)?;
    }
    // A write after healing commits only once a leader has caught up
    // whatever the group committed before.
    for _ in 0..30 {
        sim.run(100).map_err(fail)?;
        if let Some(leader) = sim.leader() {
            sim.propose(leader, b"after".to_vec());
        }
    }
    sim.run(500).map_err(fail)?;
    if !sim.converged() {
        return Err(format!(
            "SIM_SEED={seed} ({count} replicas): not every replica applied all {} committed entries after healing",
            sim.committed.len()
        ));
    }
    Ok(sim)
}

#[test]
fn raft_groups_stay_safe_and_converge_under_faults_and_crashes() {
    for count in [3, 5, 7] {
        for seed in 0..seeds() {
            let run = std::panic::catch_unwind(|| chaos(seed, count));
            let sim = match run {
                Ok(result) => result.unwrap_or_else(|failure| panic!("{failure}")),
                Err(_) => panic!("SIM_SEED={seed} ({count} replicas): raft-rs panicked (above)"),
            };
            assert!(
                sim.committed.len() > 10,
                "SIM_SEED={seed} ({count} replicas): only {} entries committed",
                sim.committed.len()
            );
        }
    }
}

#[test]
fn a_quiet_group_elects_one_leader_and_commits_in_order() {
    let mut sim = RaftSim::new(1, 3, Faults::NONE);
    sim.run(1_000).unwrap();
    let leader = sim.leader().expect("a leader within a second");
    for value in 0..100u64 {
        assert!(sim.propose(leader, value.to_be_bytes().to_vec()));
    }
    sim.run(200).unwrap();
    assert!(sim.converged());
    let values: Vec<u64> = sim
        .committed
        .values()
        .filter(|(_, data)| data.len() == 8)
        .map(|(_, data)| u64::from_be_bytes(data[..].try_into().unwrap()))
        .collect();
    assert_eq!(
        values,
        (0..100).collect::<Vec<_>>(),
        "every proposal, once, in order"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let first = chaos(7, 5).unwrap();
    let second = chaos(7, 5).unwrap();
    assert_eq!(first.committed, second.committed);
}
