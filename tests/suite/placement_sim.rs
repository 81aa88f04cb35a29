//! The planner over a cluster's life (`sim::placement`): nodes die and
//! return and demands change, and every directory it re-plans keeps each
//! agent on one up node within capacity and the rules, moves only what
//! it must plus a budget, and an event with no plan changes nothing. A
//! failure names its seed (SIM_SEED=...), which `SIM_SEED=S SIM_SEEDS=1`
//! replays alone; `SIM_SEEDS=N` runs N seeds (20 unless set).

use agentmesh::sim::placement::run;

fn seeds() -> std::ops::Range<u64> {
    let number = |name: &str| std::env::var(name).ok().and_then(|text| text.parse().ok());
    let first = number("SIM_SEED").unwrap_or(0);
    first..first + number("SIM_SEEDS").unwrap_or(20)
}

#[test]
fn every_directory_through_failures_and_returns_keeps_the_rules() {
    let (mut replans, mut refused, mut forced) = (0, 0, 0);
    for seed in seeds() {
        let outcome = run(seed, 40, 3);
        assert!(
            outcome.failures.is_empty(),
            "SIM_SEED={seed}: {:#?}",
            outcome.failures
        );
        replans += outcome.replans;
        refused += outcome.refused;
        forced += outcome.forced_moves;
    }
    // The runs are not vacuous: most events re-plan, and dead nodes'
    // agents are moved.
    assert!(replans > refused, "{replans} re-plans, {refused} refused");
    assert!(forced > 0, "no agent was ever moved off a dead node");
}
