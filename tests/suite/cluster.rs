//! Real nodes over QUIC on 127.0.0.1, in this process: exactly-once
//! delivery, refusal of unknown keys, disconnection of peers that send
//! malformed frames, and supervision (restart, then escalation). Waits are
//! bounded; no assertion is about how fast anything happened.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agentmesh::actors::directory::Directory;
use agentmesh::actors::node::{start_node, AgentsStart, NodeHandle, NodeSpec};
use agentmesh::cluster::LocalCluster;
use agentmesh::config::{self, ClusterConfig, TransportConfig};
use agentmesh::net::quic::{quic_client_config, CLOSE_MALFORMED_FRAME};
use agentmesh::net::tls::{NodeCertificate, PinnedKeys};
use agentmesh::protocols::wire::codec::encode_frame;
use agentmesh::protocols::wire::{
    Destination, Envelope, EnvelopeKind, Frame, SignedFields, StreamHeader, TrafficClass,
};
use ed25519_dalek::SigningKey;

use crate::common;
use common::{wait_until, wait_until_async as wait_for, WAIT_MAX};

fn nodes_toml(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("[[nodes]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\n"))
        .collect()
}

fn parse(text: &str) -> ClusterConfig {
    config::parse(text, "test.toml", std::path::Path::new(".")).unwrap()
}

fn stat(
    node: &NodeHandle,
    agent: &str,
    pick: fn(&agentmesh::actors::data_path::AgentStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    node.parts
        .data_path
        .agent_stats
        .get(agent)
        .map_or(0, |stats| pick(&stats).load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_signed_message_exactly_once() {
    let text = format!(
        "[cluster]\nname = \"t\"\nseed = 7\n{}\n\
         [[agents]]\nname = \"echo-{{i}}\"\ncount = 3\nbehaviour = \"echo\"\n\
         [[agents]]\nname = \"storm-{{i}}\"\ncount = 3\nbehaviour = \"storm\"\nrate = 2000\nmessages_max = 300\ntargets = [\"echo-*\"]\n",
        nodes_toml(&["n1", "n2", "n3"])
    );
    let cluster = LocalCluster::start(parse(&text)).await.unwrap();
    let storms = ["storm-0", "storm-1", "storm-2"];
    let echoes = ["echo-0", "echo-1", "echo-2"];
    let sum = |agents: &[&str],
               pick: fn(
        &agentmesh::actors::data_path::AgentStats,
    ) -> &std::sync::atomic::AtomicU64| {
        agents
            .iter()
            .map(|agent| {
                cluster
                    .nodes
                    .iter()
                    .map(|node| stat(node, agent, pick))
                    .sum::<u64>()
            })
            .sum::<u64>()
    };
    wait_until(
        "every storm sent its 300 messages and got every reply",
        || sum(&storms, |s| &s.sent) == 900 && sum(&storms, |s| &s.received_replies) == 900,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // let any duplicate surface
    assert_eq!(
        sum(&echoes, |s| &s.received_data),
        900,
        "each data message reached its echo exactly once"
    );
    assert_eq!(sum(&echoes, |s| &s.sent), 900);
    assert_eq!(
        sum(&storms, |s| &s.received_replies),
        900,
        "each reply reached its storm exactly once"
    );
    wait_until("the destinations acknowledged every message", || {
        cluster.totals().counters.acknowledged == 1800
    })
    .await;
    let totals = cluster.totals();
    assert_eq!(totals.counters.envelopes_sent, 1800);
    assert_eq!(totals.counters.envelopes_delivered, 1800);
    assert_eq!(totals.counters.lost_retries_exhausted, 0);
    assert_eq!(
        totals.refused() + totals.dropped_in_transit() + totals.counters.dropped_duplicate,
        0
    );
    assert!(
        totals.counters.frames_received > 0,
        "messages crossed QUIC, not only local queues"
    );
    cluster.shutdown().await;
}

/// Starts nodes "b1" and "c2" of a three-node config whose third node "a0"
/// is played by the test (it dials both, being the lowest id).
async fn two_nodes_and_a_test_peer() -> (Vec<NodeHandle>, SigningKey, HashMap<String, SigningKey>) {
    two_nodes_and_a_test_peer_with("").await
}

/// [`two_nodes_and_a_test_peer`], with `extra` config text.
async fn two_nodes_and_a_test_peer_with(
    extra: &str,
) -> (Vec<NodeHandle>, SigningKey, HashMap<String, SigningKey>) {
    let keys: HashMap<String, SigningKey> = ["a0", "b1", "c2"]
        .iter()
        .enumerate()
        .map(|(i, id)| (id.to_string(), SigningKey::from_bytes(&[i as u8 + 1; 32])))
        .collect();
    let text = format!(
        "[cluster]\nname = \"t\"\n{}\n[supervision]\nagents_start_timeout_ms = 0\n\
         [[agents]]\nname = \"echo\"\nbehaviour = \"echo\"\nnode = \"c2\"\n\
         [[agents]]\nname = \"storm\"\nbehaviour = \"storm\"\nnode = \"b1\"\nrate = 200\ntargets = [\"echo\"]\n{extra}",
        nodes_toml(&["a0", "b1", "c2"])
    );
    let config = Arc::new(parse(&text));
    let node_keys: HashMap<_, _> = keys
        .iter()
        .map(|(id, key)| (id.clone(), key.verifying_key()))
        .collect();
    let mut sockets: HashMap<String, std::net::UdpSocket> = HashMap::new();
    let mut addresses = HashMap::new();
    for id in ["a0", "b1", "c2"] {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        addresses.insert(id.to_string(), socket.local_addr().unwrap());
        sockets.insert(id.to_string(), socket);
    }
    let directory = Arc::new(Directory::new(&config, node_keys, addresses));
    let mut nodes = Vec::new();
    for id in ["b1", "c2"] {
        let spec = NodeSpec {
            config: config.clone(),
            node_id: id.into(),
            key: keys[id].clone(),
            directory: directory.clone(),
            socket: sockets.remove(id).unwrap(),
            agents_start: AgentsStart::WhenNeighboursUp,
            handshakes: None,
            raft_directory: None,
            faults: None,
            registry: std::sync::Arc::new(agentmesh::agent_api::Registry::with_builtins()),
        };
        nodes.push(start_node(spec).await.unwrap());
    }
    (nodes, keys["a0"].clone(), keys)
}

async fn dial(
    as_key: &SigningKey,
    server_id: &str,
    server_key: &SigningKey,
    node: &NodeHandle,
) -> Result<quinn::Connection, String> {
    agentmesh::net::tls::install_crypto_provider();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let pinned = PinnedKeys::new([(server_id.to_string(), server_key.verifying_key())]);
    let client = quic_client_config(
        &NodeCertificate::new(as_key).unwrap(),
        pinned,
        &TransportConfig::default(),
    )
    .unwrap();
    let address = node.parts.shared.endpoint.local_addr().unwrap();
    let connection = endpoint
        .connect_with(client, address, agentmesh::net::tls::SERVER_NAME)
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 clients learn of a refused certificate only after the server
    // has read it; a stream round trip makes that visible.
    Ok(connection)
}

async fn shutdown_all(nodes: Vec<NodeHandle>) {
    futures::future::join_all(nodes.into_iter().map(NodeHandle::shutdown)).await;
}

async fn storm_to_echo_flows(nodes: &[NodeHandle]) {
    let before = stat(&nodes[1], "echo", |s| &s.received_data);
    wait_until("the storm on b1 still reaches the echo on c2", || {
        stat(&nodes[1], "echo", |s| &s.received_data) > before + 20
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_key_is_not_in_the_config_cannot_connect() {
    let (nodes, _, keys) = two_nodes_and_a_test_peer().await;
    wait_until("b1 and c2 are connected", || {
        nodes[0].parts.shared.peers.is_connected("c2")
    })
    .await;
    let outsider = SigningKey::from_bytes(&[99; 32]);
    let refused_before = nodes[0]
        .parts
        .shared
        .metrics
        .counters
        .handshakes_refused
        .load(Ordering::Relaxed);
    if let Ok(connection) = dial(&outsider, "b1", &keys["b1"], &nodes[0]).await {
        let closed = tokio::time::timeout(WAIT_MAX, connection.closed())
            .await
            .expect("the refused connection closes");
        assert!(
            !matches!(closed, quinn::ConnectionError::LocallyClosed),
            "closed by the node, not by us: {closed}"
        );
    }
    wait_until("b1 counted the refused handshake", || {
        nodes[0]
            .parts
            .shared
            .metrics
            .counters
            .handshakes_refused
            .load(Ordering::Relaxed)
            > refused_before
    })
    .await;
    assert!(
        nodes[0].parts.shared.peers.is_connected("c2"),
        "the refusal did not disturb the others"
    );
    storm_to_echo_flows(&nodes).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_malformed_or_oversized_frames_is_disconnected_and_counted() {
    let (nodes, test_key, keys) = two_nodes_and_a_test_peer().await;
    wait_until("b1 and c2 are connected", || {
        nodes[0].parts.shared.peers.is_connected("c2")
    })
    .await;
    let counters = &nodes[0].parts.shared.metrics.counters;
    let garbage: [&[u8]; 2] = [
        &[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff], // a frame that is not a message
        &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],       // a length far beyond frame_bytes_max
    ];
    for (round, bytes) in garbage.iter().enumerate() {
        let connection = dial(&test_key, "b1", &keys["b1"], &nodes[0])
            .await
            .expect("a0 is a listed node");
        let mut stream = connection.open_uni().await.unwrap();
        stream
            .write_all(
                &StreamHeader {
                    class: TrafficClass::Data,
                }
                .encode(),
            )
            .await
            .unwrap();
        stream.write_all(bytes).await.unwrap();
        let _ = stream.finish();
        let reason = tokio::time::timeout(WAIT_MAX, connection.closed())
            .await
            .expect("b1 closes the connection");
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    quinn::VarInt::from_u32(CLOSE_MALFORMED_FRAME),
                    "round {round}"
                )
            }
            other => panic!("round {round}: expected an application close, got {other}"),
        }
        assert!(counters.frames_malformed.load(Ordering::Relaxed) > round as u64);
        assert!(counters.peers_closed_malformed.load(Ordering::Relaxed) > round as u64);
    }
    storm_to_echo_flows(&nodes).await;
    shutdown_all(nodes).await;
}

/// A sink on c2 that only the test peer writes to.
const VAULT: &str = "[[agents]]\nname = \"vault\"\nbehaviour = \"sink\"\nnode = \"c2\"\n";

/// How many of the vault's deliveries carried `payload`.
fn in_vault(node: &NodeHandle, payload: &[u8]) -> usize {
    let stats = node.parts.data_path.stats_of("vault");
    stats
        .recorded()
        .iter()
        .filter(|(_, got)| got == payload)
        .count()
}

/// A data envelope from the test peer a0 to the vault on c2, signed by a0.
/// A signed envelope from a0's probe to the vault, carrying `body` as a
/// plain agent message.
fn envelope_to_vault(key: &SigningKey, sequence: u64, body: &[u8]) -> Envelope {
    let signed = SignedFields {
        version: agentmesh::protocols::wire::limits::ENVELOPE_VERSION,
        kind: EnvelopeKind::Data,
        origin_node: "a0".into(),
        source_agent: "probe".into(),
        destination: Destination::Agent("vault".into()),
        sequence,
        ttl: 8,
        sent_at_micros: 1_700_000_000_000_000 + sequence,
        payload: agentmesh::agent_api::frame::tell(body.to_vec()),
    };
    let mut envelope = Envelope::sign(signed, key);
    // a0, then c2, in the sorted node list; c2 holds it after one hop.
    envelope.path = vec![0, 2];
    envelope.hop_count = 1;
    envelope
}

/// Writes `envelopes` as frames on one new data stream of `connection`.
async fn send_envelopes(connection: &quinn::Connection, envelopes: &[Envelope]) {
    let mut stream = connection.open_uni().await.unwrap();
    let header = StreamHeader {
        class: TrafficClass::Data,
    };
    stream.write_all(&header.encode()).await.unwrap();
    for envelope in envelopes {
        let frame = encode_frame(&Frame::Envelope(envelope.clone()));
        stream
            .write_all(&(frame.len() as u32).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&frame).await.unwrap();
    }
    stream.finish().unwrap();
}

fn count(
    node: &NodeHandle,
    counter: impl Fn(&agentmesh::metrics::Counters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    counter(&node.parts.shared.metrics.counters).load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_replayed_envelopes_are_dropped_and_counted() {
    let (nodes, test_key, keys) = two_nodes_and_a_test_peer_with(VAULT).await;
    let c2 = &nodes[1];
    let connection = dial(&test_key, "c2", &keys["c2"], c2)
        .await
        .expect("a0 is listed");
    let genuine = envelope_to_vault(&test_key, 1, b"genuine");
    send_envelopes(&connection, std::slice::from_ref(&genuine)).await;
    wait_until("the genuine envelope is consumed", || {
        in_vault(c2, b"genuine") == 1
    })
    .await;
    // The same envelope again, as a replaying peer would send it.
    send_envelopes(&connection, std::slice::from_ref(&genuine)).await;
    wait_until("the replay is dropped as a duplicate", || {
        count(c2, |c| &c.dropped_duplicate) >= 1
    })
    .await;
    // A fresh sequence, then the payload changed after signing.
    let mut tampered = envelope_to_vault(&test_key, 2, b"honest");
    tampered.signed.payload = b"forged".to_vec();
    send_envelopes(&connection, &[tampered]).await;
    wait_until("the tampered envelope is dropped", || {
        count(c2, |c| &c.dropped_bad_signature) >= 1
    })
    .await;
    assert_eq!(in_vault(c2, b"genuine"), 1, "the replay was not consumed");
    assert_eq!(
        in_vault(c2, b"forged") + in_vault(c2, b"honest"),
        0,
        "nor the forgery"
    );
    assert!(c2.parts.shared.peers.is_connected("b1"));
    storm_to_echo_flows(&nodes).await;
    shutdown_all(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_rate_limited_while_the_others_traffic_flows() {
    let limits =
        "[transport]\npeer_envelopes_per_second_max = 1000\npeer_envelope_burst_max = 200\n";
    let (nodes, test_key, keys) = two_nodes_and_a_test_peer_with(&format!("{VAULT}{limits}")).await;
    let c2 = &nodes[1];
    wait_until("b1 and c2 are connected", || {
        c2.parts.shared.peers.is_connected("b1")
    })
    .await;
    let connection = dial(&test_key, "c2", &keys["c2"], c2)
        .await
        .expect("a0 is listed");
    let flood: Vec<Envelope> = (1..=5_000)
        .map(|sequence| envelope_to_vault(&test_key, sequence, b"flood"))
        .collect();
    send_envelopes(&connection, &flood).await;
    wait_until("c2 drops what a0 sends beyond its rate", || {
        count(c2, |c| &c.dropped_peer_rate_limited) > 1_000
    })
    .await;
    storm_to_echo_flows(&nodes).await;
    let flooded = in_vault(c2, b"flood");
    assert!(
        c2.parts.shared.peers.is_connected("b1"),
        "the other peer stays connected"
    );
    assert_eq!(
        count(&nodes[0], |c| &c.dropped_peer_rate_limited),
        0,
        "b1's own peers were never limited"
    );
    assert!(
        (1..5_000).contains(&flooded),
        "{flooded} of the flood consumed"
    );
    shutdown_all(nodes).await;
}

fn supervised_config(restarts_max: u32) -> ClusterConfig {
    parse(&format!(
        "[cluster]\nname = \"t\"\n{}\n\
         [supervision]\nrestarts_max = {restarts_max}\nrestart_window_ms = 600000\n\
         [[agents]]\nname = \"echo\"\nbehaviour = \"echo\"\nnode = \"n2\"\n\
         [[agents]]\nname = \"storm\"\nbehaviour = \"storm\"\nnode = \"n1\"\nrate = 200\ntargets = [\"echo\"]\n",
        nodes_toml(&["n1", "n2"])
    ))
}

async fn kill_echo_and_wait_for_restart(cluster: &LocalCluster, starts_expected: u64) {
    let n2 = cluster.node("n2").unwrap();
    wait_until("the echo agent runs", || {
        n2.parts.data_path.agents.contains_key("echo")
    })
    .await;
    n2.parts.data_path.agents.get("echo").unwrap().actor.kill();
    wait_until("the echo agent was restarted", || {
        stat(n2, "echo", |s| &s.starts) >= starts_expected
    })
    .await;
    let received = stat(n2, "echo", |s| &s.received_data);
    wait_until("the restarted echo receives messages again", || {
        stat(n2, "echo", |s| &s.received_data) > received + 5
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_restarted_and_receives_again() {
    let cluster = LocalCluster::start(supervised_config(5)).await.unwrap();
    kill_echo_and_wait_for_restart(&cluster, 2).await;
    let n2 = cluster.node("n2").unwrap();
    assert_eq!(
        n2.parts
            .shared
            .metrics
            .counters
            .actor_restarts
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        n2.parts
            .shared
            .metrics
            .counters
            .supervisor_escalations
            .load(Ordering::Relaxed),
        0
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_agent_budget_escalates_to_the_node_supervisor_which_restarts_the_agents() {
    let cluster = LocalCluster::start(supervised_config(2)).await.unwrap();
    kill_echo_and_wait_for_restart(&cluster, 2).await;
    kill_echo_and_wait_for_restart(&cluster, 3).await;
    // The third kill exceeds the agent supervisor's budget of 2: it fails,
    // and the node supervisor restarts it, which starts the echo again.
    kill_echo_and_wait_for_restart(&cluster, 4).await;
    let n2 = cluster.node("n2").unwrap();
    assert_eq!(
        n2.parts
            .shared
            .metrics
            .counters
            .supervisor_escalations
            .load(Ordering::Relaxed),
        1
    );
    assert!(n2.is_running(), "the node's own budget is not spent");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_node_budget_stops_the_node_and_the_others_keep_running() {
    let cluster = LocalCluster::start(supervised_config(2)).await.unwrap();
    let n2 = cluster.node("n2").unwrap();
    for kill in 1..=3u64 {
        wait_for("n2's router runs", || async {
            n2.parts
                .shared
                .mailboxes
                .router
                .get()
                .is_some_and(|r| r.get_status() == ractor::ActorStatus::Running)
        })
        .await;
        let router = n2.parts.shared.mailboxes.router.get().unwrap();
        router.kill();
        if kill < 3 {
            wait_until("the router was restarted", || {
                n2.parts
                    .shared
                    .mailboxes
                    .router
                    .get()
                    .is_some_and(|r| r.get_id() != router.get_id())
            })
            .await;
        }
    }
    wait_until("n2 stopped after its budget was spent", || !n2.is_running()).await;
    assert_eq!(
        n2.parts
            .shared
            .metrics
            .counters
            .supervisor_escalations
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(cluster.failed_nodes(), ["n2"]);
    assert!(cluster.node("n1").unwrap().is_running());
    cluster.shutdown().await;
}
