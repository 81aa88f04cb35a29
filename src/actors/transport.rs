//! The transport: one QUIC connection per neighbour, mutual TLS with pinned
//! keys, long-lived unidirectional streams per traffic class, and
//! length-delimited frames.
//!
//! The node with the lower id dials, so two nodes never hold two
//! connections. Each connection has a bounded send queue (the [`PeerTable`]
//! entry the router writes to), one writer task and one reader task per
//! incoming stream. Readers decode and batch frames for the router and wait
//! when the router's queue is full, so QUIC flow control pushes back on the
//! sender instead of anything being dropped. A peer that sends a malformed
//! frame is disconnected and counted.
//!
//! All tasks hang off one cancellation token whose guard lives in the
//! actor's state: when the actor stops or is killed, every task ends and
//! every connection closes.
//!
//! [`PeerTable`]: crate::net::peers::PeerTable

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use quinn::{Connection, VarInt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::monotonic_micros;
use crate::config::TransportConfig;
use crate::metrics::NodeMetrics;
use crate::net::peers::{LinkActivity, PeerLink};
use crate::net::quic::{
    dials, frame_codec, peer_left, quic_client_config, write_frames, CLOSE_LEAVING,
    CLOSE_MALFORMED_FRAME, CLOSE_SHUTDOWN, CLOSE_WRONG_DIALER, CONTROL_SEND_QUEUE_MAX,
};
use crate::net::tls::{self, PinnedKeys};
use crate::protocols::delivery::TokenBucket;
use crate::protocols::mesh::ControlFrame;
use crate::protocols::pbft::messages::Packet;
use crate::protocols::supervision::Backoff;
use crate::protocols::wire::codec::PbftAssembler;
use crate::protocols::wire::transfer::Transfers;
use crate::protocols::wire::{
    decode_frame, Envelope, Frame, RaftAssembler, StreamHeader, TrafficClass,
};

use super::messages::{NodeMsg, PbftMsg, RaftMsg, RouterMsg, TopologyMsg, TransportMsg};
use super::overlay_state::OverlayState;
use super::shared::NodeShared;

pub struct Transport;

/// What a transport's incarnation starts from: the node's shared core,
/// and the overlay (its neighbours to dial, and the routing view readers
/// pass transit envelopes on by).
pub struct TransportArgs {
    pub shared: Arc<NodeShared>,
    pub overlay: Arc<OverlayState>,
}

pub struct TransportState {
    shared: Arc<NodeShared>,
    overlay: Arc<OverlayState>,
    token: CancellationToken,
    /// Cancels every task when the state is dropped, even on kill.
    _guard: DropGuard,
    dialers: HashMap<String, CancellationToken>,
    neighbours: BTreeSet<String>,
    probes: BTreeSet<String>,
    /// The other control-plane replicas, when this node holds one: replicas
    /// talk directly, whatever the overlay.
    replica_peers: BTreeSet<String>,
    connected: BTreeSet<String>,
}

impl Actor for Transport {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = TransportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TransportMsg>,
        args: TransportArgs,
    ) -> Result<TransportState, ActorProcessingErr> {
        let TransportArgs { shared, overlay } = args;
        shared.mailboxes.transport.set(Some(myself.clone()));
        let token = CancellationToken::new();
        let accepting = accept_loop(shared.clone(), overlay.clone(), token.clone(), myself);
        tokio::spawn(accepting);
        let neighbours = overlay
            .neighbours
            .read()
            .expect("neighbours lock is never poisoned")
            .clone();
        let replica_peers = replica_peers(&shared);
        let mut state = TransportState {
            _guard: token.clone().drop_guard(),
            shared,
            overlay,
            token,
            dialers: HashMap::new(),
            neighbours: BTreeSet::new(),
            probes: BTreeSet::new(),
            replica_peers,
            connected: BTreeSet::new(),
        };
        state.set_neighbours(neighbours, Vec::new());
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TransportMsg>,
        message: TransportMsg,
        state: &mut TransportState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TransportMsg::SetNeighbours { neighbours, probes } => {
                state.set_neighbours(neighbours, probes);
                state.check_neighbours_up();
            }
            TransportMsg::PeerUp(peer) => {
                state.connected.insert(peer.clone());
                state.check_neighbours_up();
                if let Some(topology) = state.shared.mailboxes.topology.get() {
                    let _ = topology.cast(TopologyMsg::LinkUp(peer));
                }
            }
            TransportMsg::PeerDown(peer) => {
                if !state.shared.peers.is_connected(&peer) {
                    state.connected.remove(&peer);
                }
            }
            TransportMsg::ConnectedPeers(reply) => {
                let _ = reply.send(state.shared.peers.connected());
            }
        }
        Ok(())
    }
}

impl TransportState {
    fn check_neighbours_up(&self) {
        // No neighbours yet means the topology has not spoken, unless this
        // node is the whole cluster.
        let alone = self.shared.directory.roster.node_names.len() == 1;
        if (alone || !self.neighbours.is_empty()) && self.neighbours.is_subset(&self.connected) {
            if let Some(node) = self.shared.mailboxes.node.get() {
                let _ = node.cast(NodeMsg::NeighboursUp);
            }
        }
    }

    fn set_neighbours(&mut self, neighbours: Vec<String>, probes: Vec<String>) {
        let own = |peer: &String| *peer != self.shared.node_id;
        self.neighbours = neighbours.into_iter().filter(own).collect();
        self.probes = probes.into_iter().filter(own).collect();
        self.dialers.retain(|peer, token| {
            let keep = self.neighbours.contains(peer)
                || self.probes.contains(peer)
                || self.replica_peers.contains(peer);
            if !keep {
                token.cancel();
            }
            keep
        });
        // A set: a peer may be a neighbour and a replica both, and two
        // dialers to one peer would replace each other's connection for
        // ever.
        let to_dial: BTreeSet<String> = self
            .neighbours
            .iter()
            .chain(&self.probes)
            .chain(&self.replica_peers)
            .filter(|peer| dials(&self.shared.node_id, peer) && !self.dialers.contains_key(*peer))
            .cloned()
            .collect();
        for peer in to_dial {
            let token = self.token.child_token();
            self.dialers.insert(peer.clone(), token.clone());
            let transport = self.shared.mailboxes.transport.get();
            let parts = (self.shared.clone(), self.overlay.clone());
            tokio::spawn(dial_loop(parts, peer, token, transport));
        }
    }
}

/// The replicas other than this node's, of the control plane (voting or
/// standing by) and of the PBFT group, for each it runs a replica of.
fn replica_peers(shared: &NodeShared) -> BTreeSet<String> {
    let me = &shared.node_id;
    let control = &shared.config.control;
    let pbft = &shared.config.pbft;
    let mut peers = BTreeSet::new();
    if control.replica_id(me).is_some() {
        peers.extend(control.replica_nodes().cloned());
    }
    if pbft.replica_id(me).is_some() {
        peers.extend(pbft.replicas.iter().cloned());
    }
    peers.remove(me);
    peers
}

async fn accept_loop(
    shared: Arc<NodeShared>,
    overlay: Arc<OverlayState>,
    token: CancellationToken,
    transport: ActorRef<TransportMsg>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            incoming = shared.endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        tokio::spawn(accept_one(
            (shared.clone(), overlay.clone()),
            incoming,
            token.clone(),
            transport.clone(),
        ));
    }
}

async fn accept_one(
    (shared, overlay): (Arc<NodeShared>, Arc<OverlayState>),
    incoming: quinn::Incoming,
    token: CancellationToken,
    transport: ActorRef<TransportMsg>,
) {
    let remote = incoming.remote_address();
    let refused = |reason: String| {
        NodeMetrics::count(&shared.metrics.counters.handshakes_refused);
        tracing::warn!(node = %shared.node_id, %remote, %reason, "refused incoming connection");
    };
    let connection = match incoming.await {
        Ok(connection) => connection,
        // The dialer gave up (its overlay moved on, or it is stopping),
        // or this node is stopping: routine, not a refusal.
        Err(
            quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_)
            | quinn::ConnectionError::LocallyClosed,
        ) => {
            NodeMetrics::count(&shared.metrics.counters.handshakes_abandoned);
            tracing::debug!(node = %shared.node_id, %remote, "handshake abandoned");
            return;
        }
        Err(error) => return refused(format!("handshake failed: {error}")),
    };
    let peer = match identify(&shared, &connection) {
        Ok(peer) => peer,
        Err(reason) => {
            connection.close(VarInt::from_u32(CLOSE_WRONG_DIALER), reason.as_bytes());
            return refused(reason);
        }
    };
    if !dials(&peer, &shared.node_id) {
        let reason = format!(
            "node {peer} dialed, but the lower id ({}) dials",
            shared.node_id
        );
        connection.close(VarInt::from_u32(CLOSE_WRONG_DIALER), reason.as_bytes());
        return refused(reason);
    }
    let parts = (shared, overlay);
    run_connection(parts, connection, peer, token, Some(transport)).await;
}

/// The node id behind a connection's verified certificate.
fn identify(shared: &NodeShared, connection: &Connection) -> Result<String, String> {
    let identity = connection
        .peer_identity()
        .ok_or("peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain")?;
    let first = chain
        .first()
        .ok_or("peer presented an empty certificate chain")?;
    shared
        .directory
        .pinned
        .identify(first)
        .map_err(|error| error.to_string())
}

async fn dial_loop(
    (shared, overlay): (Arc<NodeShared>, Arc<OverlayState>),
    peer: String,
    token: CancellationToken,
    transport: Option<ActorRef<TransportMsg>>,
) {
    let config = &shared.config.transport;
    let seed =
        shared.config.seed ^ crate::protocols::stable_hash(&format!("{}->{peer}", shared.node_id));
    let mut backoff = Backoff::new(
        config.reconnect_backoff_min_ms,
        config.reconnect_backoff_max_ms,
        seed,
    );
    let client = match (
        shared.directory.roster.node_keys.get(&peer),
        shared.directory.node_addresses.get(&peer),
    ) {
        (Some(key), Some(_)) => {
            let pinned = PinnedKeys::new([(peer.clone(), *key)]);
            quic_client_config(&shared.certificate, pinned, config)
        }
        _ => {
            tracing::error!(node = %shared.node_id, %peer, "neighbour has no key or address in the config");
            return;
        }
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            return tracing::error!(node = %shared.node_id, %peer, %error, "cannot build client TLS")
        }
    };
    let address = shared.directory.node_addresses[&peer];
    while !token.is_cancelled() {
        match connect(&shared, &client, address, &token).await {
            Ok(connection) => {
                backoff.reset();
                run_connection(
                    (shared.clone(), overlay.clone()),
                    connection,
                    peer.clone(),
                    token.clone(),
                    transport.clone(),
                )
                .await;
            }
            Err(reason) => tracing::debug!(node = %shared.node_id, %peer, %reason, "dial failed"),
        }
        let delay = Duration::from_millis(backoff.next_delay_ms());
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn connect(
    shared: &NodeShared,
    client: &quinn::ClientConfig,
    address: std::net::SocketAddr,
    token: &CancellationToken,
) -> Result<Connection, String> {
    // Handshakes are CPU-bound: a node (or a process full of nodes) that
    // starts thousands at once finishes none of them in time. Waiting for a
    // turn does not count against the connect timeout.
    let _turn = tokio::select! {
        biased;
        _ = token.cancelled() => return Err("cancelled".into()),
        turn = shared.handshakes.acquire() => turn.map_err(|_| "no handshakes any more".to_string())?,
    };
    let started = Instant::now();
    let connecting = shared
        .endpoint
        .connect_with(client.clone(), address, tls::SERVER_NAME)
        .map_err(|error| error.to_string())?;
    let timeout = Duration::from_millis(shared.config.transport.connect_timeout_ms);
    let connection = tokio::select! {
        biased;
        _ = token.cancelled() => return Err("cancelled".into()),
        result = tokio::time::timeout(timeout, connecting) => match result {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no handshake within {} ms", timeout.as_millis())),
        },
    };
    shared
        .metrics
        .record_connection_setup(started.elapsed().as_micros() as u64);
    Ok(connection)
}

/// Why a connection ended.
enum Ending {
    Closed,
    Malformed(String),
}

/// Serves one established connection until it closes or is cancelled.
async fn run_connection(
    (shared, overlay): (Arc<NodeShared>, Arc<OverlayState>),
    connection: Connection,
    peer: String,
    token: CancellationToken,
    transport: Option<ActorRef<TransportMsg>>,
) {
    let counters = &shared.metrics.counters;
    let connection_id = connection.stable_id();
    let (queue, outbound) = mpsc::channel(shared.config.transport.peer_send_queue_max);
    let (control, outbound_control) = mpsc::channel(CONTROL_SEND_QUEUE_MAX);
    let activity = Arc::new(LinkActivity::default());
    shared.peers.insert(
        &peer,
        PeerLink {
            connection_id,
            connection: connection.clone(),
            queue,
            control,
            activity: activity.clone(),
        },
    );
    NodeMetrics::count(&counters.connections_established);
    tracing::info!(node = %shared.node_id, %peer, remote = %connection.remote_address(), "connected");
    if let Some(transport) = &transport {
        let _ = transport.cast(TransportMsg::PeerUp(peer.clone()));
    }
    let ending = tokio::select! {
        biased;
        _ = token.cancelled() => {
            if shared.leaving.load(std::sync::atomic::Ordering::Relaxed) {
                connection.close(VarInt::from_u32(CLOSE_LEAVING), b"leaving");
            } else {
                connection.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
            }
            Ending::Closed
        }
        reason = write_frames(&connection, outbound_control, outbound) => {
            tracing::debug!(node = %shared.node_id, %peer, %reason, "writer stopped");
            Ending::Closed
        }
        ending = read_streams(&shared, &overlay, &connection, &peer, &activity) => ending,
    };
    if let Ending::Malformed(reason) = &ending {
        NodeMetrics::count(&counters.peers_closed_malformed);
        tracing::warn!(node = %shared.node_id, %peer, %reason, "peer sent a malformed frame; disconnecting");
        connection.close(VarInt::from_u32(CLOSE_MALFORMED_FRAME), reason.as_bytes());
    }
    shared.peers.remove_if_current(&peer, connection_id);
    NodeMetrics::count(&counters.connections_lost);
    tracing::info!(node = %shared.node_id, %peer, reason = ?connection.close_reason(), "disconnected");
    if peer_left(&connection) {
        if let Some(topology) = shared.mailboxes.topology.get() {
            let _ = topology.cast(TopologyMsg::PeerLeft(peer.clone()));
        }
    }
    if let Some(transport) = &transport {
        let _ = transport.cast(TransportMsg::PeerDown(peer));
    }
}

/// How many envelopes one peer connection may hand the router: one
/// bucket shared by the connection's streams.
struct InboundLimit {
    bucket: Option<Mutex<TokenBucket>>,
}

impl InboundLimit {
    fn new(config: &TransportConfig) -> InboundLimit {
        let rate = config.peer_envelopes_per_second_max;
        let bucket = (rate > 0.0).then(|| {
            Mutex::new(TokenBucket::new(
                rate,
                config.peer_envelope_burst_max,
                monotonic_micros(),
            ))
        });
        InboundLimit { bucket }
    }

    /// Keeps the envelopes of `batch` the peer has tokens for; counts the
    /// rest as dropped.
    fn admit(&self, batch: &mut Vec<Envelope>, shared: &NodeShared) {
        let Some(bucket) = &self.bucket else {
            return;
        };
        let now = monotonic_micros();
        let mut bucket = bucket.lock().expect("bucket lock is never poisoned");
        let before = batch.len();
        batch.retain(|_| bucket.try_take(now));
        let dropped = (before - batch.len()) as u64;
        if dropped > 0 {
            shared
                .metrics
                .counters
                .dropped_peer_rate_limited
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Accepts the peer's streams and reads each in its own task.
async fn read_streams(
    shared: &Arc<NodeShared>,
    overlay: &Arc<OverlayState>,
    connection: &Connection,
    peer: &str,
    activity: &Arc<LinkActivity>,
) -> Ending {
    let mut readers = JoinSet::new();
    let transfers: Arc<Mutex<Transfers>> = Arc::default();
    let limit = Arc::new(InboundLimit::new(&shared.config.transport));
    loop {
        tokio::select! {
            stream = connection.accept_uni() => match stream {
                Ok(stream) => {
                    let link = ReadLink {
                        peer: peer.to_string(),
                        overlay: overlay.clone(),
                        activity: activity.clone(),
                        transfers: transfers.clone(),
                        limit: limit.clone(),
                    };
                    let reader = read_stream(shared.clone(), stream, link);
                    readers.spawn(reader);
                }
                Err(_) => return Ending::Closed,
            },
            Some(result) = readers.join_next() => {
                if let Ok(Err(reason)) = result {
                    return Ending::Malformed(reason);
                }
            }
        }
    }
}

/// What a connection's stream readers share.
struct ReadLink {
    peer: String,
    overlay: Arc<OverlayState>,
    activity: Arc<LinkActivity>,
    transfers: Arc<Mutex<Transfers>>,
    limit: Arc<InboundLimit>,
}

/// Reads one stream's frames and hands them to the router in batches.
/// Returns `Err` with a reason when the peer sent something malformed.
async fn read_stream(
    shared: Arc<NodeShared>,
    mut stream: quinn::RecvStream,
    link: ReadLink,
) -> Result<(), String> {
    let ReadLink {
        peer,
        overlay,
        activity,
        transfers,
        limit,
    } = link;
    let counters = &shared.metrics.counters;
    let malformed = |reason: String| {
        NodeMetrics::count(&counters.frames_malformed);
        reason
    };
    let mut header = [0u8; StreamHeader::BYTES];
    if stream.read_exact(&mut header).await.is_err() {
        return Ok(());
    }
    let header = StreamHeader::decode(header).map_err(|error| malformed(error.to_string()))?;
    if header.class == TrafficClass::Transfer {
        activity.received_now();
        let whole = crate::net::transfer::read_transfer(stream, &transfers)
            .await
            .map_err(malformed)?;
        if let Some(message) = whole {
            hand_to_replica(&shared, &peer, message);
        }
        return Ok(());
    }
    let batch_max = shared.config.transport.receive_batch_max;
    let mut raft = RaftAssembler::default();
    let mut pbft = PbftAssembler::default();
    let mut frames = FramedRead::new(stream, frame_codec(shared.config.transport.frame_bytes_max));
    loop {
        let mut batch = Vec::new();
        let mut ended = false;
        let mut next = frames.next().await;
        activity.received_now();
        loop {
            let bytes = match next {
                None => {
                    ended = true;
                    break;
                }
                Some(Ok(bytes)) => bytes,
                Some(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(malformed(error.to_string()));
                }
                Some(Err(_)) => {
                    ended = true;
                    break;
                }
            };
            counters
                .frames_received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            counters
                .bytes_received
                .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            match decode_frame(&bytes).map_err(|error| malformed(error.to_string()))? {
                Frame::Envelope(envelope) => batch.push(envelope),
                Frame::Heartbeat(heartbeat) => {
                    hand_to_topology(&shared, &peer, ControlFrame::Heartbeat(heartbeat))
                }
                Frame::Members(records) => {
                    hand_to_topology(&shared, &peer, ControlFrame::Members(records))
                }
                Frame::Overlay(overlay) => {
                    hand_to_topology(&shared, &peer, ControlFrame::Overlay(overlay))
                }
                Frame::Pbft(part) => {
                    let whole = pbft
                        .add(part)
                        .map_err(|error| malformed(error.to_string()))?;
                    if let Some(packet) = whole {
                        hand_to_pbft(&shared, &peer, packet);
                    }
                }
                Frame::Raft(part) => {
                    let whole = raft
                        .add(part)
                        .map_err(|error| malformed(error.to_string()))?;
                    if let Some(message) = whole {
                        hand_to_replica(&shared, &peer, message);
                    }
                }
            }
            if batch.len() >= batch_max {
                break;
            }
            // Take what is already buffered without waiting for more.
            match frames.next().now_or_never() {
                Some(item) => next = item,
                None => break,
            }
        }
        limit.admit(&mut batch, &shared);
        let batch = super::router::pass_on_transit(&shared, &overlay, batch);
        if !batch.is_empty() {
            hand_to_router(&shared, batch, &peer).await;
        }
        if ended {
            return Ok(());
        }
    }
}

/// Hands a control frame to the topology actor if its queue has room;
/// otherwise drops it and counts it (heartbeats are periodic, and membership
/// views are reconciled by digest, so a dropped one is made good later).
fn hand_to_topology(shared: &NodeShared, peer: &str, frame: ControlFrame) {
    let Ok(permit) = shared.mailboxes.control_queue.clone().try_acquire_owned() else {
        return NodeMetrics::count(&shared.metrics.counters.dropped_control_queue_full);
    };
    let Some(topology) = shared.mailboxes.topology.get() else {
        return NodeMetrics::count(&shared.metrics.counters.dropped_control_queue_full);
    };
    let _ = topology.cast(TopologyMsg::Control {
        from: peer.to_string(),
        frame,
        permit,
    });
}

/// Hands a Raft message to this node's replica if it comes from the
/// replica at the other end of the connection, is addressed to this one,
/// and the queue has room; otherwise drops it and counts it (Raft sends
/// again what matters).
fn hand_to_replica(shared: &NodeShared, peer: &str, message: raft::eraftpb::Message) {
    let counters = &shared.metrics.counters;
    let control = &shared.config.control;
    let addressed = control.replica_id(peer) == Some(message.from)
        && control.replica_id(&shared.node_id) == Some(message.to);
    if !addressed {
        tracing::debug!(node = %shared.node_id, %peer, from = message.from, to = message.to, "misaddressed raft message");
        return NodeMetrics::count(&counters.raft_dropped_misaddressed);
    }
    let Ok(permit) = shared.mailboxes.raft_queue.clone().try_acquire_owned() else {
        return NodeMetrics::count(&counters.raft_dropped_queue_full);
    };
    let Some(replica) = shared.mailboxes.replica.get() else {
        return NodeMetrics::count(&counters.raft_dropped_queue_full);
    };
    let _ = replica.cast(RaftMsg::Peer {
        message: Box::new(message),
        permit,
    });
}

/// Hands a PBFT packet to this node's replica if it comes from a PBFT
/// replica (a message only as the replica at the other end of the
/// connection) and the queue has room; otherwise drops and counts it.
fn hand_to_pbft(shared: &NodeShared, peer: &str, packet: Packet) {
    let counters = &shared.metrics.counters;
    let settings = &shared.config.pbft;
    let sender = settings.replica_id(peer);
    let addressed = settings.replica_id(&shared.node_id).is_some()
        && match &packet {
            Packet::Message(message) => sender == Some(message.from),
            Packet::Request(_) => sender.is_some(),
        };
    if !addressed {
        return NodeMetrics::count(&counters.pbft_dropped_misaddressed);
    }
    let Ok(permit) = shared.mailboxes.pbft_queue.clone().try_acquire_owned() else {
        return NodeMetrics::count(&counters.pbft_dropped_queue_full);
    };
    let Some(replica) = shared.mailboxes.pbft.get() else {
        return NodeMetrics::count(&counters.pbft_dropped_queue_full);
    };
    let _ = replica.cast(PbftMsg::Peer {
        packet: Box::new(packet),
        permit,
    });
}

/// Waits for room in the router's queue (pushing back on the peer while it
/// is full) and hands the batch over.
async fn hand_to_router(
    shared: &NodeShared,
    envelopes: Vec<crate::protocols::wire::Envelope>,
    peer: &str,
) {
    let Ok(permit) = shared.mailboxes.router_queue.clone().acquire_owned().await else {
        return;
    };
    let mut message = RouterMsg::Inbound { envelopes, permit };
    loop {
        if let Some(router) = shared.mailboxes.router.get() {
            match router.cast(message) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(returned)) => message = returned,
                Err(_) => return,
            }
        }
        // The router is restarting; its supervisor brings it back shortly.
        tracing::trace!(node = %shared.node_id, %peer, "router unavailable; waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
