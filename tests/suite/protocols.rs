//! The pure protocol cores: routing against an oracle and under link churn,
//! the failure detector in virtual time, membership merging, reliable
//! delivery and rate limits. Randomised runs print their seed on failure.

#![allow(clippy::needless_range_loop)] // index loops read best over matrices

use std::collections::BTreeSet;

use agentmesh::protocols::delivery::{
    to_ranges, AckRange, ReliableSender, SenderConfig, TokenBucket,
};
use agentmesh::protocols::membership::{
    DetectorConfig, MemberRecord, Membership, PhiDetector, Status,
};
use agentmesh::protocols::routing::{self, LinkLatency, Step, LATENCY_SAMPLES_MAX};
use agentmesh::protocols::topology::{build, Overlay, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn names(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("n{index:03}")).collect()
}

/// Deterministic asymmetric-looking but symmetric weights.
fn weight_of(seed: u64) -> impl Fn(usize, usize) -> u64 {
    move |a: usize, b: usize| {
        let (low, high) = (a.min(b) as u64, a.max(b) as u64);
        1 + (low * 7919 + high * 104_729 + seed) % 5_000
    }
}

/// All-pairs shortest costs by Floyd–Warshall.
fn oracle(graph: &Overlay, weight: &impl Fn(usize, usize) -> u64) -> Vec<Vec<u64>> {
    let count = graph.node_count();
    let mut cost = vec![vec![u64::MAX / 4; count]; count];
    for a in 0..count {
        cost[a][a] = 0;
        for &b in graph.adjacent(a) {
            cost[a][b] = weight(a, b);
        }
    }
    for via in 0..count {
        for a in 0..count {
            for b in 0..count {
                let through = cost[a][via] + cost[via][b];
                if through < cost[a][b] {
                    cost[a][b] = through;
                }
            }
        }
    }
    cost
}

#[test]
fn routing_tables_agree_with_a_floyd_warshall_oracle() {
    for seed in 0..20u64 {
        let graph = build(Shape::PartialMesh { k: 4 }, &names(30), seed);
        let weight = weight_of(seed);
        let cost = oracle(&graph, &weight);
        for source in 0..graph.node_count() {
            let table = routing::compute(&graph, source, &weight);
            for target in 0..graph.node_count() {
                let Some(route) = table.route(target) else {
                    assert_eq!(source, target, "SIM_SEED={seed}: every node is reachable");
                    continue;
                };
                assert_eq!(route.cost, cost[source][target], "SIM_SEED={seed}");
                let next = route.next_hop;
                assert_eq!(
                    weight(source, next) + cost[next][target],
                    cost[source][target],
                    "SIM_SEED={seed}: next hop {next} lies on a shortest path"
                );
                assert_eq!(route.hops + 1, route.path.len());
            }
        }
    }
}

/// Walks an envelope from `source` to `target` with `next_step` at every
/// hop, each router seeing only `links_up`. Returns the nodes visited.
fn walk(
    graph: &Overlay,
    source: usize,
    target: usize,
    weight: &impl Fn(usize, usize) -> u64,
    links_up: &BTreeSet<(usize, usize)>,
) -> (Vec<usize>, Step) {
    let up = |a: usize, b: usize| links_up.contains(&(a.min(b), a.max(b)));
    let mut path = vec![source];
    let mut here = source;
    let mut hops = 0;
    let ttl = graph.node_count();
    loop {
        let step = routing::next_step(
            graph,
            routing::Position {
                here,
                destination: target,
                path: &path,
                hops,
                ttl,
            },
            weight,
            |next| up(here, next),
        );
        match step {
            Step::Forward { path: planned } => {
                path = planned;
                hops += 1;
                here = path[hops];
            }
            other => return (path[..=hops].to_vec(), other),
        }
    }
}

fn reachable(graph: &Overlay, links_up: &BTreeSet<(usize, usize)>, from: usize, to: usize) -> bool {
    let mut seen = vec![false; graph.node_count()];
    let mut stack = vec![from];
    seen[from] = true;
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        for &next in graph.adjacent(node) {
            if !seen[next] && links_up.contains(&(node.min(next), node.max(next))) {
                seen[next] = true;
                stack.push(next);
            }
        }
    }
    false
}

#[test]
fn forwarding_never_loops_under_link_failures_and_recoveries() {
    for seed in 0..30u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let graph = build(Shape::PartialMesh { k: 3 }, &names(24), seed);
        let weight = weight_of(seed);
        let edges = graph.edges();
        let mut links_up: BTreeSet<(usize, usize)> = edges.iter().copied().collect();
        for _ in 0..40 {
            let edge = edges[rng.gen_range(0..edges.len())];
            if !links_up.remove(&edge) {
                links_up.insert(edge);
            }
            let source = rng.gen_range(0..graph.node_count());
            let target = rng.gen_range(0..graph.node_count());
            let (visited, step) = walk(&graph, source, target, &weight, &links_up);
            let distinct: BTreeSet<usize> = visited.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                visited.len(),
                "SIM_SEED={seed}: loop in {visited:?}"
            );
            if step == Step::Deliver {
                assert_eq!(*visited.last().unwrap(), target, "SIM_SEED={seed}");
            } else {
                assert_eq!(step, Step::NoRoute, "SIM_SEED={seed}");
            }
            if reachable(&graph, &links_up, source, target) && step != Step::Deliver {
                // Greedy detours can strand an envelope only behind nodes it
                // already visited; from the source itself a path must be found.
                let fresh =
                    routing::path_avoiding(&graph, source, target, &[source], &weight, |next| {
                        links_up.contains(&(source.min(next), source.max(next)))
                    });
                assert!(fresh.is_some() || source == target, "SIM_SEED={seed}");
            }
        }
    }
}

#[test]
fn ttl_stops_an_envelope_that_has_used_up_its_hops() {
    let graph = build(Shape::Ring, &names(10), 0);
    let weight = |_: usize, _: usize| 1;
    let path = [0, 1, 2];
    let step = routing::next_step(
        &graph,
        routing::Position {
            here: 2,
            destination: 5,
            path: &path,
            hops: 2,
            ttl: 2,
        },
        weight,
        |_| true,
    );
    assert_eq!(step, Step::TtlExpired);
}

fn detector_config() -> DetectorConfig {
    DetectorConfig {
        heartbeat_interval_ms: 100,
        suspect_phi: 3.0,
        dead_phi: 8.0,
        acceptable_pause_ms: 0,
        min_std_deviation_ms: 20,
        first_heartbeat_grace_ms: 1_000,
    }
}

#[test]
fn a_silent_peer_is_declared_dead_within_the_bound_and_a_slow_one_is_not() {
    let config = detector_config();
    let all = names(3);
    let mut view = Membership::new("n000", 1, &all, config);
    view.monitor(0, &all[1..].iter().cloned().collect());
    // Both heartbeat every 100 ms for 2 s; then n001 falls silent while n002
    // slows to every 160 ms with jitter.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut now = 0;
    let mut declared_dead_at = None;
    let mut next_slow = 0;
    while now < 6_000 {
        now += 10;
        if now <= 2_000 && now % 100 == 0 {
            view.heartbeat(now, "n001", 0);
        }
        if now >= next_slow {
            view.heartbeat(now, "n002", 0);
            next_slow = now
                + if now < 2_000 {
                    100
                } else {
                    140 + rng.gen_range(0..40)
                };
        }
        for record in view.tick(now) {
            if record.node == "n001" && record.status == Status::Dead {
                declared_dead_at.get_or_insert(now);
            }
        }
    }
    let dead_at = declared_dead_at.expect("the silent peer is declared dead");
    // Mean 100 ms, deviation floor 20 ms: φ = 8 is reached about 5.5
    // deviations past the mean, so well within a second of silence.
    assert!(
        dead_at > 2_100 && dead_at <= 3_000,
        "declared dead at {dead_at} ms"
    );
    // Slower than its history, it may be suspect, but never dead.
    assert_ne!(
        view.status("n002"),
        Some(Status::Dead),
        "slow but alive is not dead"
    );
    assert_eq!(view.live().len(), 2);
}

#[test]
fn phi_grows_with_silence() {
    let config = detector_config();
    let mut detector = PhiDetector::new(0, &config);
    for beat in 1..=20 {
        detector.heartbeat(1_000 + beat * 100);
    }
    let at = |ms: u64| detector.phi(3_000 + ms, &config);
    assert!(at(0) < at(100) && at(100) < at(200) && at(200) < at(400));
    assert!(at(0) < 1.0 && at(400) > 8.0);
}

#[test]
fn views_converge_and_rumours_of_death_are_refuted() {
    let config = detector_config();
    let all = names(3);
    let mut a = Membership::new("n000", 10, &all, config);
    let mut b = Membership::new("n001", 20, &all, config);
    let rumour = MemberRecord {
        node: "n001".into(),
        incarnation: 20,
        status: Status::Dead,
    };
    assert_eq!(a.merge(std::slice::from_ref(&rumour)).len(), 1);
    assert!(!a.live().contains("n001"));
    // n001 hears it and refutes with a higher incarnation.
    let refuted = b.merge(&[rumour]);
    assert_eq!(
        refuted,
        [MemberRecord {
            node: "n001".into(),
            incarnation: 21,
            status: Status::Alive
        }]
    );
    a.merge(&refuted);
    assert!(a.live().contains("n001"));
    // Merging in either order gives the same view.
    b.merge(&a.records());
    a.merge(&b.records());
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.records(), b.records());
    // Stale news changes nothing.
    assert!(a
        .merge(&[MemberRecord {
            node: "n002".into(),
            incarnation: 0,
            status: Status::Alive
        }])
        .is_empty());
}

#[test]
fn a_newer_incarnation_at_the_same_status_is_kept_but_not_spread() {
    let all = names(3);
    let mut a = Membership::new("n000", 1, &all, detector_config());
    let b = Membership::new("n001", 7, &all, detector_config());
    // Every node starts knowing the others at incarnation 0; views that
    // agree on who is alive have the same digest whatever they know of
    // incarnations, so starting nodes exchange nothing.
    assert_eq!(
        a.digest(),
        Membership::new("n002", 3, &all, detector_config()).digest()
    );
    let digest = a.digest();
    assert!(a.heartbeat(5, "n001", 7).is_none(), "not news to pass on");
    assert_eq!(a.digest(), digest);
    // The incarnation is kept: the same life's death outranks it, an older
    // life's does not.
    let stale = MemberRecord {
        node: "n001".into(),
        incarnation: 6,
        status: Status::Dead,
    };
    assert!(a.merge(&[stale]).is_empty());
    let dead = MemberRecord {
        node: "n001".into(),
        incarnation: 7,
        status: Status::Dead,
    };
    assert_eq!(a.merge(std::slice::from_ref(&dead)), [dead]);
    assert_ne!(
        a.digest(),
        b.digest(),
        "views that differ on a status differ"
    );
}

#[test]
fn a_restarted_node_rejoins_with_its_new_incarnation() {
    let all = names(2);
    let mut view = Membership::new("n000", 1, &all, detector_config());
    view.merge(&[MemberRecord {
        node: "n001".into(),
        incarnation: 5,
        status: Status::Dead,
    }]);
    assert_eq!(view.status("n001"), Some(Status::Dead));
    assert!(
        view.heartbeat(10, "n001", 5).is_none(),
        "same life stays dead until refuted"
    );
    let back = view.heartbeat(20, "n001", 99).expect("a new life is news");
    assert_eq!(back.status, Status::Alive);
    assert_eq!(view.status("n001"), Some(Status::Alive));
}

#[test]
fn a_node_that_leaves_is_dead_at_once_and_rejoins_with_a_new_life() {
    let all = names(3);
    let mut view = Membership::new("n000", 1, &all, detector_config());
    view.monitor(0, &all[1..].iter().cloned().collect());
    view.heartbeat(10, "n001", 7);
    let left = view.left("n001").expect("leaving is news");
    assert_eq!((left.incarnation, left.status), (7, Status::Dead));
    assert!(view.left("n001").is_none(), "and only once");
    assert!(!view.live().contains("n001"));
    // Long after, the detector has nothing more to say about it.
    assert!(view.tick(60_000).iter().all(|record| record.node != "n001"));
    let back = view.heartbeat(60_010, "n001", 8).expect("a new life");
    assert_eq!(back.status, Status::Alive);
}

#[test]
fn a_node_that_was_itself_paused_accuses_nobody_but_still_finds_the_dead() {
    let all = names(3);
    let mut view = Membership::new("n000", 1, &all, detector_config());
    view.monitor(0, &all[1..].iter().cloned().collect());
    for now in (0..=2_000).step_by(100) {
        view.heartbeat(now, "n001", 0);
        view.heartbeat(now, "n002", 0);
        assert!(view.tick(now + 50).is_empty(), "changed at {now} ms");
    }
    // This node is starved of CPU for 5 s: no tick, nothing heard. Its
    // first tick after it comes before the heartbeats queued meanwhile.
    assert!(
        view.tick(7_050).is_empty(),
        "a pause of its own is held against nobody"
    );
    // n001 is heard again; n002 was in fact gone, and is found out.
    let mut verdicts = Vec::new();
    for now in (7_100..=10_000).step_by(100) {
        view.heartbeat(now, "n001", 0);
        verdicts.extend(view.tick(now + 50));
    }
    assert!(
        verdicts.iter().all(|record| record.node == "n002"),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts.last().map(|record| record.status),
        Some(Status::Dead),
        "{verdicts:?}"
    );
}

#[test]
fn evidence_of_life_keeps_a_peer_alive_without_heartbeats() {
    let all = names(2);
    let mut view = Membership::new("n000", 1, &all, detector_config());
    view.monitor(0, &all[1..].iter().cloned().collect());
    view.heartbeat(0, "n001", 3);
    // Only other traffic from now on, every 100 ms, for ten seconds.
    for now in (100..=10_000).step_by(100) {
        view.evidence(now, "n001");
        assert!(view.tick(now + 50).is_empty(), "changed at {now} ms");
    }
    // Then silence: the detector declares it dead.
    let verdicts: Vec<Status> = (10_100..=13_000)
        .step_by(100)
        .flat_map(|now| view.tick(now))
        .map(|record| record.status)
        .collect();
    assert_eq!(verdicts.last(), Some(&Status::Dead));
}

#[test]
fn link_latency_is_the_smallest_recent_round_trip() {
    let mut latency = LinkLatency::default();
    assert_eq!(latency.estimate(), None);
    for sample in [900, 300, 5_000, 450] {
        latency.sample(sample);
    }
    assert_eq!(
        latency.estimate(),
        Some(300),
        "queueing spikes do not count"
    );
    // Old samples age out: after LATENCY_SAMPLES_MAX new ones, the 300 is gone.
    for _ in 0..LATENCY_SAMPLES_MAX {
        latency.sample(700);
    }
    assert_eq!(latency.estimate(), Some(700));
    latency.sample(0);
    assert_eq!(latency.estimate(), Some(1), "never zero");
}

fn sender_config() -> SenderConfig {
    SenderConfig {
        inflight_max: 8,
        span_max: 4,
        retransmit_timeout_ms: 100,
        retransmit_timeout_max_ms: 1_000,
        retries_max: 2,
    }
}

#[test]
fn acknowledged_messages_leave_and_unacknowledged_ones_are_retried_then_given_up() {
    let mut sender = ReliableSender::new(sender_config(), 1_000);
    let first = sender.send(0, "b", |s| s).unwrap();
    let second = sender.send(0, "b", |s| s).unwrap();
    assert_eq!((first, second), (1_000, 1_001));
    let acked = sender.acknowledge(
        0,
        "b",
        &[AckRange {
            first: 1_000,
            count: 1,
        }],
    );
    assert_eq!(acked, [(1_000, 1_000)]);
    assert!(
        sender
            .acknowledge(
                0,
                "b",
                &[AckRange {
                    first: 1_000,
                    count: 1
                }]
            )
            .is_empty(),
        "once"
    );
    // 1001 is retried at 100 ms, then 100 + 200, then given up.
    assert!(sender.poll_due(99, 10).retransmit.is_empty());
    assert_eq!(
        sender.poll_due(100, 10).retransmit,
        [("b".to_string(), 1_001)]
    );
    assert_eq!(
        sender.poll_due(300, 10).retransmit,
        [("b".to_string(), 1_001)]
    );
    let polled = sender.poll_due(10_000, 10);
    assert!(polled.retransmit.is_empty());
    assert_eq!(polled.exhausted.len(), 1);
    assert_eq!(sender.inflight(), 0);
}

/// Karn's rule takes no sample from a retransmitted message, so once
/// round trips outgrow the timeout only a backed-off timeout lets one be
/// acknowledged before it is sent again (RFC 6298 5.5, 5.7).
#[test]
fn after_a_timeout_new_messages_wait_longer_until_a_valid_sample_comes() {
    let mut sender = ReliableSender::new(sender_config(), 0);
    let first = sender.send(0, "b", |s| s).unwrap();
    assert_eq!(
        sender.poll_due(100, 10).retransmit.len(),
        1,
        "the 100 ms floor"
    );
    // Sent after the timeout: it waits 200 ms, not 100.
    let second = sender.send(100, "b", |s| s).unwrap();
    assert!(sender.poll_due(299, 10).retransmit.is_empty());
    // The first, retransmitted, gives no sample; the second, acknowledged
    // after 150 ms on its first send, does, and ends the backoff.
    let ranges = [
        AckRange { first, count: 1 },
        AckRange {
            first: second,
            count: 1,
        },
    ];
    assert_eq!(sender.acknowledge(250, "b", &ranges).len(), 2);
    sender.send(1_000, "b", |s| s).unwrap();
    let timeout_ms = 150 + 4 * 75; // smoothed + 4 × variation, first sample
    assert!(sender
        .poll_due(1_000 + timeout_ms - 1, 10)
        .retransmit
        .is_empty());
    assert_eq!(sender.poll_due(1_000 + timeout_ms, 10).retransmit.len(), 1);
}

#[test]
fn a_first_message_to_a_new_destination_waits_as_long_as_round_trips_elsewhere_take() {
    let mut sender = ReliableSender::new(sender_config(), 0);
    // Acknowledgements from "b" take 600 ms.
    for at in 0..4u64 {
        let sent = at * 1_000;
        let sequence = sender.send(sent, "b", |s| s).unwrap();
        let range = AckRange {
            first: sequence,
            count: 1,
        };
        assert_eq!(sender.acknowledge(sent + 600, "b", &[range]).len(), 1);
    }
    // "c" has never answered: its first message waits like "b"'s do
    // (within the 1 s ceiling), not the 100 ms floor.
    sender.send(10_000, "c", |s| s).unwrap();
    assert!(sender.poll_due(10_599, 10).retransmit.is_empty());
    assert_eq!(
        sender.poll_due(11_000, 10).retransmit,
        [("c".to_string(), 0)]
    );
}

#[test]
fn the_sender_never_runs_past_the_receivers_window_or_its_inflight_limit() {
    let mut sender = ReliableSender::new(sender_config(), 0);
    for _ in 0..4 {
        sender.send(0, "b", |s| s).unwrap();
    }
    assert_eq!(
        sender.send(0, "b", |s| s),
        Err(agentmesh::protocols::delivery::Refusal::WindowFull)
    );
    // Acknowledging everything but the oldest does not open the window.
    sender.acknowledge(0, "b", &[AckRange { first: 1, count: 3 }]);
    assert!(sender.send(0, "b", |s| s).is_err());
    sender.acknowledge(0, "b", &[AckRange { first: 0, count: 1 }]);
    for _ in 0..4 {
        assert!(sender.send(0, "b", |s| s).is_ok());
    }
    assert!(sender.send(0, "b", |s| s).is_err());
    for destination in ["c", "d", "e", "f"] {
        sender.send(0, destination, |s| s).unwrap();
    }
    assert_eq!(
        sender.send(0, "g", |s| s),
        Err(agentmesh::protocols::delivery::Refusal::InFlightFull)
    );
}

#[test]
fn ack_ranges_compress_runs() {
    let mut sequences = vec![7, 3, 4, 5, 9, 4, 10];
    assert_eq!(
        to_ranges(&mut sequences),
        [
            AckRange { first: 3, count: 3 },
            AckRange { first: 7, count: 1 },
            AckRange { first: 9, count: 2 }
        ]
    );
}

#[test]
fn a_token_bucket_allows_its_burst_then_its_rate() {
    let mut bucket = TokenBucket::new(100.0, 5, 0);
    assert_eq!((0..10).filter(|_| bucket.try_take(0)).count(), 5);
    // 100/s: one token per 10 ms.
    assert_eq!((0..10).filter(|_| bucket.try_take(50_000)).count(), 5);
    assert!(!bucket.try_take(55_000));
    assert!(bucket.try_take(60_000));
}

fn wide_sender_config() -> SenderConfig {
    SenderConfig {
        inflight_max: 65_536,
        span_max: 2_048,
        retransmit_timeout_ms: 500,
        retransmit_timeout_max_ms: 4_000,
        retries_max: 8,
    }
}

/// Sends to 100 destinations until refused; returns how many were taken.
fn fill(sender: &mut ReliableSender<u64>, now: u64) -> usize {
    (0..)
        .take_while(|index| {
            let destination = format!("d{}", index % 100);
            sender.send(now, &destination, |s| s).is_ok()
        })
        .count()
}

/// Acknowledges everything pending to the 100 destinations at `now`.
fn acknowledge_all(sender: &mut ReliableSender<u64>, now: u64) {
    for index in 0..100 {
        let destination = format!("d{index}");
        sender.acknowledge(
            now,
            &destination,
            &[AckRange {
                first: 0,
                count: u32::MAX,
            }],
        );
    }
}

#[test]
fn the_admission_window_grows_with_fast_acknowledgements_and_shrinks_when_they_slow() {
    use agentmesh::protocols::delivery::{WINDOW_INITIAL, WINDOW_MIN};
    let mut sender = ReliableSender::new(wide_sender_config(), 0);
    assert_eq!(sender.window(), WINDOW_INITIAL as usize);
    assert_eq!(
        fill(&mut sender, 0),
        WINDOW_INITIAL as usize,
        "refused at the window"
    );
    assert_eq!(sender.inflight(), WINDOW_INITIAL as usize);
    // Fast round trips: slow start doubles the window each round trip.
    let mut now = 0;
    for _ in 0..3 {
        now += 5;
        acknowledge_all(&mut sender, now);
        fill(&mut sender, now);
    }
    assert_eq!(sender.window(), 8 * WINDOW_INITIAL as usize);
    // Round trips far beyond the fastest: queues are building. One decrease
    // a round trip, however many acknowledgements show it.
    now += 400;
    acknowledge_all(&mut sender, now);
    let after_one = sender.window();
    assert_eq!(after_one, (8.0 * WINDOW_INITIAL * 0.75) as usize);
    for _ in 0..20 {
        fill(&mut sender, now);
        now += 400;
        acknowledge_all(&mut sender, now);
    }
    assert_eq!(
        sender.window(),
        WINDOW_MIN as usize,
        "never below the floor"
    );
    // Fast again: it grows back, one message a round trip (no slow start).
    let floor = sender.window();
    for _ in 0..10 {
        fill(&mut sender, now);
        now += 5;
        acknowledge_all(&mut sender, now);
    }
    assert!(sender.window() > floor && sender.window() <= floor + 10);
}

#[test]
fn a_retransmission_shrinks_the_admission_window() {
    let mut sender = ReliableSender::new(wide_sender_config(), 0);
    let before = sender.window();
    sender.send(0, "d0", |s| s).unwrap();
    let polled = sender.poll_due(10_000, 16);
    assert_eq!(polled.retransmit.len(), 1);
    assert!(
        sender.window() < before,
        "{} then {}",
        before,
        sender.window()
    );
}
