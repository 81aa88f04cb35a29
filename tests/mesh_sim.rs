//! The mesh core under a seeded simulation (`agentmesh::sim::mesh`):
//! nodes over a virtual network that loses, duplicates, corrupts and
//! reorders envelopes, with cut links, split halves, crash-restarts of
//! nodes and restarts of agents, then a healed phase that must converge.
//! Every run checks exactly-once consumption per node incarnation, TTL and
//! loop-free paths, one outcome per message, counters that agree with the
//! outcomes, and nothing unsettled after healing. A failure names its seed
//! (SIM_SEED=...), which `SIM_SEED=S SIM_SEEDS=1` replays alone;
//! `SIM_SEEDS=N` runs N seeds.

use agentmesh::sim::mesh::{self, Faults, SimConfig, Violation};

/// `SIM_SEEDS` seeds (`default` unless set) from `SIM_SEED` (0 unless set).
fn seeds(default: u64) -> std::ops::Range<u64> {
    let number = |name: &str| std::env::var(name).ok().and_then(|text| text.parse().ok());
    let count = number("SIM_SEEDS").unwrap_or(default);
    let first = number("SIM_SEED").unwrap_or(0);
    first..first + count
}

fn run_all(config: SimConfig, default_seeds: u64) -> Vec<mesh::Report> {
    seeds(default_seeds)
        .map(|seed| match mesh::run(seed, config) {
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
