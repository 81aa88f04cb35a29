//! The PBFT core in simulation: a correct group, every Byzantine behaviour
//! with up to f faulty replicas under loss, duplication, reordering and a
//! partition, f + 1 faulty replicas, and hostile messages. Each run is
//! seeded; a failure prints its seed (SIM_SEED=...), and `SIM_SEEDS=N`
//! runs N seeds per case.

use agentmesh::protocols::pbft::keys::SimKeys;
use agentmesh::protocols::pbft::{Body, Keys, PbftConfig, Replica, Request, Signed};
use agentmesh::sim::pbft::{Behaviour, Faults, PbftSim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn seeds(default: u64) -> std::ops::Range<u64> {
    let count = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    let first = std::env::var("SIM_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1);
    first..first + count
}

fn config(replicas: u32) -> PbftConfig {
    let mut config = PbftConfig::new(replicas);
    // Small intervals, so runs of a few thousand ticks cross checkpoints,
    // garbage collection and state transfer.
    config.checkpoint_interval = 8;
    config.window = 16;
    config.batch_max = 8;
    config.request_timeout_ticks = 40;
    config.retransmit_ticks = 10;
    config
}

/// `config` with a pipeline of 4 batches on odd seeds.
fn config_for(replicas: u32, seed: u64) -> PbftConfig {
    let mut config = config(replicas);
    config.inflight_batches_max = if seed % 2 == 1 { 4 } else { 1 };
    config
}

const LOSSY: Faults = Faults {
    loss: 0.05,
    duplicate: 0.05,
    delay_max_ticks: 6,
};

const CALM: Faults = Faults {
    loss: 0.0,
    duplicate: 0.0,
    delay_max_ticks: 2,
};

#[test]
fn a_correct_group_orders_batches_and_every_replica_executes_the_same() {
    for replicas in [4, 7, 10] {
        let mut sim = PbftSim::new(1, config_for(replicas, u64::from(replicas)), 12, CALM);
        sim.run(2_000)
            .unwrap_or_else(|error| panic!("{replicas} replicas: {error}"));
        let accepted: u64 = sim.accepted().iter().sum();
        assert!(accepted > 500, "{replicas} replicas: {accepted} accepted");
        assert!(sim.accepted().iter().all(|&count| count > 10));
        let executed: Vec<u64> = (0..replicas).map(|id| sim.replica(id).executed()).collect();
        let most = *executed.iter().max().unwrap();
        assert!(executed.iter().all(|&e| e + 8 >= most), "{executed:?}");
        let batches = sim.replica(0).counters().batches_executed;
        let requests = sim.replica(0).counters().requests_executed;
        assert!(
            requests > batches,
            "batches of more than one: {requests} in {batches}"
        );
        assert!(
            sim.replica(0).stable_checkpoint() > 0,
            "checkpoints became stable"
        );
        assert_eq!(sim.view_changes, 0, "no view change without a fault");
    }
}

/// Runs `behaviour` on the first f replicas (the primary of view 0 among
/// them) under a lossy network with one correct replica cut off for a
/// while, then heals the network and checks every client gets answers.
fn byzantine_run(seed: u64, replicas: u32, behaviour: Behaviour) -> Result<(), String> {
    let config = config_for(replicas, seed);
    let faulty = config.faults();
    let mut sim = PbftSim::new(seed, config, 6, LOSSY);
    for id in 0..faulty {
        sim.set_behaviour(id, behaviour);
    }
    let cut = replicas - 1;
    sim.isolate(cut);
    sim.run(800).map_err(|error| error.to_string())?;
    sim.heal(LOSSY);
    sim.run(700).map_err(|error| error.to_string())?;
    live_after_healing(&mut sim)
}

/// Heals the network, and checks every client is answered again within
/// 3,000 ticks and none waits from before the last 1,500.
fn live_after_healing(sim: &mut PbftSim) -> Result<(), String> {
    sim.heal(CALM);
    let healed_at = sim.now;
    let before = sim.accepted();
    sim.run(3_000).map_err(|error| error.to_string())?;
    let after = sim.accepted();
    let stuck: Vec<usize> = (0..after.len())
        .filter(|&c| after[c] <= before[c])
        .collect();
    if !stuck.is_empty() || sim.waiting_since(healed_at + 1_500) {
        let views: Vec<_> = (0..sim.config.replicas)
            .map(|id| {
                let replica = sim.replica(id);
                (
                    replica.view(),
                    replica.view_change_target(),
                    replica.executed(),
                    replica.view_changes_heard(),
                )
            })
            .collect();
        return Err(format!(
            "no liveness after healing: clients {stuck:?} stuck; accepted {before:?} then {after:?}; (view, moving to, executed, view changes heard) {views:?}"
        ));
    }
    Ok(())
}

#[test]
fn up_to_f_byzantine_replicas_of_every_kind_break_neither_safety_nor_liveness() {
    for behaviour in Behaviour::BYZANTINE {
        for seed in seeds(35) {
            let replicas = if seed % 5 == 0 { 7 } else { 4 };
            if let Err(error) = byzantine_run(seed, replicas, behaviour) {
                panic!(
                    "SIM_SEED={seed} ({replicas} replicas, {}): {error}",
                    behaviour.name()
                );
            }
        }
    }
}

#[test]
fn f_plus_one_silent_replicas_stop_progress_and_nothing_unsafe_happens() {
    for seed in seeds(10) {
        let mut sim = PbftSim::new(seed, config_for(4, seed), 4, CALM);
        sim.run(300).unwrap();
        let before = sim.accepted();
        assert!(
            before.iter().all(|&count| count > 0),
            "SIM_SEED={seed}: {before:?}"
        );
        sim.set_behaviour(1, Behaviour::Silent);
        sim.set_behaviour(2, Behaviour::Silent);
        sim.run(200).unwrap();
        let stalled = sim.accepted();
        sim.run(2_000)
            .unwrap_or_else(|error| panic!("SIM_SEED={seed}: {error}"));
        assert_eq!(
            sim.accepted(),
            stalled,
            "SIM_SEED={seed}: 2 of 4 silent, yet progress"
        );
        assert!(sim.waiting_since(sim.now - 1_000), "clients wait");
        // Safety held throughout: run() returned no violation.
    }
}

fn group_keys(seed: u64) -> Vec<SimKeys> {
    (0..4).map(|id| SimKeys::replica(seed, id)).collect()
}

#[test]
fn badly_signed_misaddressed_and_out_of_window_messages_are_refused_and_counted() {
    let keys = group_keys(3);
    let mut replica = Replica::new(config(4), 1, keys[1].clone());
    let prepare = |from: u32, sequence: u64| {
        Signed::new(
            from,
            0,
            Body::Prepare {
                sequence,
                digest: [1; 32],
            },
            &keys[from as usize],
        )
    };
    let mut forged = prepare(2, 1);
    forged.signature[0] ^= 1;
    let mut impostor = prepare(2, 1);
    impostor.from = 3; // signed by 2, claims 3
    replica.receive(vec![forged, impostor]);
    assert_eq!(replica.counters().rejected_signature, 2);
    let mut stranger = prepare(2, 1);
    stranger.from = 9;
    replica.receive(vec![stranger, prepare(2, 1_000), prepare(0, 1)]);
    assert_eq!(
        replica.counters().rejected_invalid,
        3,
        "unknown sender, out of the window, a prepare from the primary"
    );
    let client = SimKeys::client(3, 1);
    let operation = agentmesh::protocols::pbft::Operation::Put {
        key: "k".into(),
        value: vec![0; 100_000],
    };
    let oversized = Request::new(SimKeys::client_key(1), 1, operation, &client);
    assert!(replica.request(oversized).is_err());
    let mut unsigned = Request::new(
        SimKeys::client_key(1),
        2,
        agentmesh::protocols::pbft::Operation::Get { key: "k".into() },
        &client,
    );
    unsigned.signature[3] ^= 1;
    assert!(replica.request(unsigned).is_err());
    assert_eq!(replica.counters().rejected_signature, 3);
    // A pre-prepare whose digest does not match its batch.
    let bad_batch = Signed::new(
        0,
        0,
        Body::PrePrepare {
            sequence: 1,
            digest: [7; 32],
            batch: Vec::new(),
        },
        &keys[0],
    );
    replica.receive(vec![bad_batch]);
    assert_eq!(replica.counters().rejected_invalid, 5);
    assert_eq!(replica.executed(), 0);
    let _ = keys[0].sign(b"keys sign");
}

/// A random message, validly signed by replica `from`, with fields that are
/// sometimes right and mostly wrong.
fn hostile_message(rng: &mut impl rand::Rng, keys: &[SimKeys], from: u32) -> Signed {
    use agentmesh::protocols::pbft::messages::batch_digest;
    use agentmesh::protocols::pbft::{Operation, PreparedProof};
    let digest: [u8; 32] = rng.gen();
    let sequence = rng.gen_range(0..40);
    let view = rng.gen_range(0..4);
    let request = |rng: &mut dyn rand::RngCore| {
        let client = SimKeys::client(3, rng.next_u64() % 4);
        let key = format!("k{}", rng.next_u64() % 3);
        Request::new(
            SimKeys::client_key(rng.next_u64() % 4),
            rng.next_u64() % 9,
            Operation::Get { key },
            &client,
        )
    };
    let batch: Vec<Request> = (0..rng.gen_range(0..3)).map(|_| request(rng)).collect();
    let body = match rng.gen_range(0..10) {
        0 => Body::PrePrepare {
            sequence,
            digest: if rng.gen_bool(0.5) {
                batch_digest(&batch)
            } else {
                digest
            },
            batch,
        },
        1 => Body::Prepare { sequence, digest },
        2 => Body::Commit { sequence, digest },
        3 => Body::Checkpoint {
            sequence: sequence * 8,
            state: digest,
        },
        4 => Body::ViewChange {
            checkpoint: sequence,
            checkpoint_state: digest,
            checkpoint_proof: Vec::new(),
            prepared: vec![PreparedProof {
                pre_prepare: Signed::new(
                    from,
                    view,
                    Body::Prepare { sequence, digest },
                    &keys[from as usize],
                ),
                prepares: Vec::new(),
            }],
        },
        5 => Body::NewView {
            view_changes: vec![Signed::new(
                from,
                view,
                Body::Status { executed: 3 },
                &keys[from as usize],
            )],
            pre_prepares: Vec::new(),
        },
        6 => Body::FetchState { sequence },
        7 => Body::State {
            sequence,
            state: digest.to_vec(),
        },
        8 => Body::Status { executed: sequence },
        _ => Body::Reply {
            client: digest,
            timestamp: 1,
            result: agentmesh::protocols::pbft::OperationResult::Done,
        },
    };
    Signed::new(from, view, body, &keys[from as usize])
}

#[test]
fn validly_signed_nonsense_never_crashes_a_replica_or_makes_it_execute() {
    use rand::SeedableRng;
    for seed in seeds(20) {
        let keys = group_keys(3);
        let mut replica = Replica::new(config(4), 1, keys[1].clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for step in 0..2_000 {
            let from = [0, 2, 3][rng.gen_range(0..3)];
            let message = hostile_message(&mut rng, &keys, from);
            replica.receive(vec![message]);
            if step % 10 == 0 {
                replica.tick();
            }
            let _ = replica.take_outputs();
        }
        let counters = replica.counters();
        assert!(
            counters.rejected_invalid > 100,
            "SIM_SEED={seed}: {counters:?}"
        );
        assert_eq!(
            replica.executed(),
            0,
            "SIM_SEED={seed}: nonsense was executed"
        );
    }
}

/// A correct backup cut off alone times out and asks for a view change no
/// one else wants. Once healed it stays out of the normal case (PBFT lets
/// it take no part in the view it left), but it keeps up by checkpoints,
/// and when the primary then falls silent, its view change is one of the
/// 2f + 1 the next view needs.
#[test]
fn a_backup_that_left_alone_counts_in_the_next_view_change() {
    for seed in seeds(10) {
        let mut sim = PbftSim::new(seed, config_for(4, seed), 4, CALM);
        // Clients that ask every replica soon make the cut-off one wait on
        // requests it never sees ordered.
        let patient = sim.client_timeout;
        sim.client_timeout = 5;
        sim.isolate(3);
        sim.run(600).unwrap();
        sim.client_timeout = patient;
        assert!(
            sim.replica(3).in_view_change(),
            "SIM_SEED={seed}: replica 3 timed out alone"
        );
        sim.heal(CALM);
        sim.run(600).unwrap();
        assert_eq!(
            sim.replica(1).view(),
            0,
            "SIM_SEED={seed}: the others stayed in view 0"
        );
        // Sent again every retransmit interval, its view change was
        // checked (every certificate's signatures) once per view it
        // moved to, not once per copy.
        let moved = sim.replica(3).counters().view_changes_started;
        for id in 0..3 {
            let checked = sim.replica(id).counters().view_changes_checked;
            assert!(
                (1..=moved).contains(&checked),
                "SIM_SEED={seed}: replica {id} checked {checked} view changes of {moved}"
            );
        }
        sim.set_behaviour(0, Behaviour::Silent);
        let before = sim.accepted();
        sim.run(3_000)
            .unwrap_or_else(|error| panic!("SIM_SEED={seed}: {error}"));
        let after = sim.accepted();
        assert!(
            (0..after.len()).all(|c| after[c] > before[c]),
            "SIM_SEED={seed}: {before:?} then {after:?}"
        );
        assert!(
            sim.replica(3).view() >= 1,
            "SIM_SEED={seed}: replica 3 rejoined"
        );
    }
}

/// Shifting partitions (one replica cut off, the group split in two, or
/// links cut one way only) under loss, while the faulty replica changes
/// behaviour and now and then restarts with nothing. Once the network
/// heals, with the faulty replica still hostile, every client must be
/// answered again: the correct replicas find one view between them
/// however the faults scattered them over views and view changes.
#[test]
fn shifting_partitions_and_a_faulty_replica_restarting_leave_the_correct_ones_live() {
    for seed in seeds(40) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sim = PbftSim::new(seed, config_for(4, seed), 4, LOSSY);
        let faulty = rng.gen_range(0..4);
        let mut shown = Vec::new();
        for _ in 0..16 {
            let behaviour = Behaviour::BYZANTINE[rng.gen_range(0..Behaviour::BYZANTINE.len())];
            sim.set_behaviour(faulty, behaviour);
            shown.push(behaviour.name());
            sim.heal(LOSSY);
            partition_at_random(&mut sim, &mut rng);
            if rng.gen_bool(0.3) {
                sim.restart(faulty);
            }
            let ticks = rng.gen_range(20..250);
            sim.run(ticks)
                .unwrap_or_else(|error| panic!("SIM_SEED={seed}: {error}"));
        }
        if let Err(error) = live_after_healing(&mut sim) {
            panic!("SIM_SEED={seed} (replica {faulty} faulty: {shown:?}): {error}");
        }
    }
}

/// Cuts one replica off, splits the group in two, or cuts one to three
/// links one way.
fn partition_at_random(sim: &mut PbftSim, rng: &mut ChaCha8Rng) {
    let replicas = sim.config.replicas;
    match rng.gen_range(0..3) {
        0 => sim.isolate(rng.gen_range(0..replicas)),
        1 => {
            let first = rng.gen_range(0..replicas);
            sim.isolate(first);
            sim.isolate((first + rng.gen_range(1..replicas)) % replicas);
        }
        _ => {
            for _ in 0..rng.gen_range(1..=3) {
                let from = rng.gen_range(0..replicas);
                let to = (from + rng.gen_range(1..replicas)) % replicas;
                sim.cut(from, to);
            }
        }
    }
}

/// A view change re-proposes batches above the stable checkpoint that
/// every replica already executed. Their requests must not count as
/// waiting, or an idle group times out view after view on them.
#[test]
fn an_idle_group_stays_in_its_view_after_a_view_change() {
    for seed in seeds(10) {
        let mut sim = PbftSim::new(seed, config_for(4, seed), 4, CALM);
        sim.run(300).unwrap();
        sim.set_behaviour(0, Behaviour::Silent);
        sim.run(600)
            .unwrap_or_else(|error| panic!("SIM_SEED={seed}: {error}"));
        assert!(
            sim.replica(1).view() >= 1,
            "SIM_SEED={seed}: the silent primary was replaced"
        );
        sim.clients_stop_at = sim.now;
        sim.run(600).unwrap();
        assert!(
            !sim.waiting_since(sim.now),
            "SIM_SEED={seed}: every request was answered"
        );
        let views = sim.view_changes;
        sim.run(3_000).unwrap();
        assert_eq!(
            sim.view_changes,
            views,
            "SIM_SEED={seed}: idle, yet views changed: view {} now",
            sim.replica(1).view()
        );
    }
}
