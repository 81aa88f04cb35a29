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
//! [`PeerTable`]: super::context::PeerTable

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, VarInt};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::TransportConfig;
use crate::metrics::NodeMetrics;
use crate::protocols::delivery::TokenBucket;
use crate::protocols::supervision::Backoff;
use crate::protocols::wire::codec::PbftAssembler;
use crate::protocols::wire::transfer::Transfers;
use crate::protocols::wire::{
    decode_frame, Envelope, Frame, RaftAssembler, StreamHeader, TrafficClass,
};
use crate::tls::{self, NodeCertificate, PinnedKeys};

use super::context::{monotonic_micros, LinkActivity, NodeContext, OutboundFrame, PeerLink};
use super::node::NodeMsg;
use super::raft_replica::RaftMsg;
use super::router::RouterMsg;
use super::topology::{ControlFrame, TopologyMsg};

/// Application close codes, so a peer's log says why it was dropped.
pub const CLOSE_SHUTDOWN: u32 = 0;
pub const CLOSE_MALFORMED_FRAME: u32 = 1;
pub const CLOSE_WRONG_DIALER: u32 = 2;
pub const CLOSE_REPLACED: u32 = 3;
/// The node is shutting down for good: its peers may count it gone at
/// once instead of waiting for the failure detector.
pub const CLOSE_LEAVING: u32 = 4;

/// Frames written between two flushes of a stream.
const WRITE_BATCH_MAX: usize = 64;
/// Heartbeat and membership frames one link holds waiting to be written:
/// a few per heartbeat interval, so this much is a link that is stuck.
const CONTROL_SEND_QUEUE_MAX: usize = 256;

pub enum TransportMsg {
    /// The overlay neighbours to hold connections to, and nodes to keep
    /// dialing although they are thought dead (base-overlay neighbours, so
    /// a node that comes back is heard from).
    SetNeighbours {
        neighbours: Vec<String>,
        probes: Vec<String>,
    },
    PeerUp(String),
    PeerDown(String),
    ConnectedPeers(RpcReplyPort<Vec<String>>),
}

pub struct Transport;

pub struct TransportState {
    context: Arc<NodeContext>,
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

/// The quinn transport parameters from the config.
/// Ack-eliciting packets a peer may receive before it must ACK.
const ACK_ELICITING_THRESHOLD: u32 = 16;
/// Longest a peer may hold back an ACK.
const ACK_DELAY_MAX: Duration = Duration::from_millis(50);

pub fn quic_transport_config(config: &TransportConfig) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)));
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .expect("validated idle timeout fits a QUIC varint");
    transport.max_idle_timeout(Some(idle));
    // Each overlay link carries a few dozen small frames a second: acking
    // every other packet at once would send nearly one bare ACK packet per
    // frame. Asking the peer to wait lets ACKs ride on its own traffic.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD))
        .max_ack_delay(Some(ACK_DELAY_MAX));
    transport.ack_frequency_config(Some(acks));
    Arc::new(transport)
}

/// The server side of a node's endpoint.
pub fn quic_server_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, tls::TlsError> {
    let crypto = QuicServerConfig::try_from(tls::server_config(certificate, pinned)?)
        .map_err(|error| tls::TlsError::Config(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(quic_transport_config(config));
    Ok(server)
}

/// The client side for dialing one peer whose key must be `peer_key`.
pub fn quic_client_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, tls::TlsError> {
    let crypto = QuicClientConfig::try_from(tls::client_config(certificate, pinned)?)
        .map_err(|error| tls::TlsError::Config(error.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(quic_transport_config(config));
    Ok(client)
}

impl Actor for Transport {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<TransportMsg>,
        context: Arc<NodeContext>,
    ) -> Result<TransportState, ActorProcessingErr> {
        context.transport.set(Some(myself.clone()));
        let token = CancellationToken::new();
        tokio::spawn(accept_loop(context.clone(), token.clone(), myself));
        let neighbours = context
            .neighbours
            .read()
            .expect("neighbours lock is never poisoned")
            .clone();
        let replica_peers = replica_peers(&context);
        let mut state = TransportState {
            _guard: token.clone().drop_guard(),
            context,
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
                if let Some(topology) = state.context.topology.get() {
                    let _ = topology.cast(TopologyMsg::LinkUp(peer));
                }
            }
            TransportMsg::PeerDown(peer) => {
                if !state.context.peers.is_connected(&peer) {
                    state.connected.remove(&peer);
                }
            }
            TransportMsg::ConnectedPeers(reply) => {
                let _ = reply.send(state.context.peers.connected());
            }
        }
        Ok(())
    }
}

impl TransportState {
    fn check_neighbours_up(&self) {
        // No neighbours yet means the topology has not spoken, unless this
        // node is the whole cluster.
        let alone = self.context.directory.roster.node_names.len() == 1;
        if (alone || !self.neighbours.is_empty()) && self.neighbours.is_subset(&self.connected) {
            if let Some(node) = self.context.node.get() {
                let _ = node.cast(NodeMsg::NeighboursUp);
            }
        }
    }

    fn set_neighbours(&mut self, neighbours: Vec<String>, probes: Vec<String>) {
        let own = |peer: &String| *peer != self.context.node_id;
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
            .filter(|peer| dials(&self.context.node_id, peer) && !self.dialers.contains_key(*peer))
            .cloned()
            .collect();
        for peer in to_dial {
            let token = self.token.child_token();
            self.dialers.insert(peer.clone(), token.clone());
            let transport = self.context.transport.get();
            tokio::spawn(dial_loop(self.context.clone(), peer, token, transport));
        }
    }
}

/// The replicas other than this node's, of the control plane (voting or
/// standing by) and of the PBFT group, for each it runs a replica of.
fn replica_peers(context: &NodeContext) -> BTreeSet<String> {
    let me = &context.node_id;
    let control = &context.config.control;
    let pbft = &context.config.pbft;
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

/// The deterministic rule that picks one dialer per pair: the lower id.
pub fn dials(own_id: &str, peer_id: &str) -> bool {
    own_id < peer_id
}

async fn accept_loop(
    context: Arc<NodeContext>,
    token: CancellationToken,
    transport: ActorRef<TransportMsg>,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            incoming = context.endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        tokio::spawn(accept_one(
            context.clone(),
            incoming,
            token.clone(),
            transport.clone(),
        ));
    }
}

async fn accept_one(
    context: Arc<NodeContext>,
    incoming: quinn::Incoming,
    token: CancellationToken,
    transport: ActorRef<TransportMsg>,
) {
    let remote = incoming.remote_address();
    let refused = |reason: String| {
        NodeMetrics::count(&context.metrics.counters.handshakes_refused);
        tracing::warn!(node = %context.node_id, %remote, %reason, "refused incoming connection");
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
            NodeMetrics::count(&context.metrics.counters.handshakes_abandoned);
            tracing::debug!(node = %context.node_id, %remote, "handshake abandoned");
            return;
        }
        Err(error) => return refused(format!("handshake failed: {error}")),
    };
    let peer = match identify(&context, &connection) {
        Ok(peer) => peer,
        Err(reason) => {
            connection.close(VarInt::from_u32(CLOSE_WRONG_DIALER), reason.as_bytes());
            return refused(reason);
        }
    };
    if !dials(&peer, &context.node_id) {
        let reason = format!(
            "node {peer} dialed, but the lower id ({}) dials",
            context.node_id
        );
        connection.close(VarInt::from_u32(CLOSE_WRONG_DIALER), reason.as_bytes());
        return refused(reason);
    }
    run_connection(context, connection, peer, token, Some(transport)).await;
}

/// The node id behind a connection's verified certificate.
fn identify(context: &NodeContext, connection: &Connection) -> Result<String, String> {
    let identity = connection
        .peer_identity()
        .ok_or("peer presented no certificate")?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain")?;
    let first = chain
        .first()
        .ok_or("peer presented an empty certificate chain")?;
    context
        .directory
        .pinned
        .identify(first)
        .map_err(|error| error.to_string())
}

async fn dial_loop(
    context: Arc<NodeContext>,
    peer: String,
    token: CancellationToken,
    transport: Option<ActorRef<TransportMsg>>,
) {
    let config = &context.config.transport;
    let seed = context.config.seed
        ^ crate::actors::node::stable_hash(&format!("{}->{peer}", context.node_id));
    let mut backoff = Backoff::new(
        config.reconnect_backoff_min_ms,
        config.reconnect_backoff_max_ms,
        seed,
    );
    let client = match (
        context.directory.roster.node_keys.get(&peer),
        context.directory.node_addresses.get(&peer),
    ) {
        (Some(key), Some(_)) => {
            let pinned = PinnedKeys::new([(peer.clone(), *key)]);
            quic_client_config(&context.certificate, pinned, config)
        }
        _ => {
            tracing::error!(node = %context.node_id, %peer, "neighbour has no key or address in the config");
            return;
        }
    };
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            return tracing::error!(node = %context.node_id, %peer, %error, "cannot build client TLS")
        }
    };
    let address = context.directory.node_addresses[&peer];
    while !token.is_cancelled() {
        match connect(&context, &client, address, &token).await {
            Ok(connection) => {
                backoff.reset();
                run_connection(
                    context.clone(),
                    connection,
                    peer.clone(),
                    token.clone(),
                    transport.clone(),
                )
                .await;
            }
            Err(reason) => tracing::debug!(node = %context.node_id, %peer, %reason, "dial failed"),
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
    context: &NodeContext,
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
        turn = context.handshakes.acquire() => turn.map_err(|_| "no handshakes any more".to_string())?,
    };
    let started = Instant::now();
    let connecting = context
        .endpoint
        .connect_with(client.clone(), address, tls::SERVER_NAME)
        .map_err(|error| error.to_string())?;
    let timeout = Duration::from_millis(context.config.transport.connect_timeout_ms);
    let connection = tokio::select! {
        biased;
        _ = token.cancelled() => return Err("cancelled".into()),
        result = tokio::time::timeout(timeout, connecting) => match result {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err(format!("no handshake within {} ms", timeout.as_millis())),
        },
    };
    context
        .metrics
        .record_connection_setup(started.elapsed().as_micros() as u64);
    Ok(connection)
}

/// Why a connection ended.
enum Ending {
    Closed,
    Malformed(String),
}

/// Whether the peer closed the connection because it is leaving the
/// cluster (the close is authenticated like every packet of the
/// connection).
fn peer_left(connection: &Connection) -> bool {
    matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == VarInt::from_u32(CLOSE_LEAVING)
    )
}

/// Serves one established connection until it closes or is cancelled.
async fn run_connection(
    context: Arc<NodeContext>,
    connection: Connection,
    peer: String,
    token: CancellationToken,
    transport: Option<ActorRef<TransportMsg>>,
) {
    let counters = &context.metrics.counters;
    let connection_id = connection.stable_id();
    let (queue, outbound) = mpsc::channel(context.config.transport.peer_send_queue_max);
    let (control, outbound_control) = mpsc::channel(CONTROL_SEND_QUEUE_MAX);
    let activity = Arc::new(LinkActivity::default());
    context.peers.insert(
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
    tracing::info!(node = %context.node_id, %peer, remote = %connection.remote_address(), "connected");
    if let Some(transport) = &transport {
        let _ = transport.cast(TransportMsg::PeerUp(peer.clone()));
    }
    let ending = tokio::select! {
        biased;
        _ = token.cancelled() => {
            if context.leaving.load(std::sync::atomic::Ordering::Relaxed) {
                connection.close(VarInt::from_u32(CLOSE_LEAVING), b"leaving");
            } else {
                connection.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
            }
            Ending::Closed
        }
        reason = write_frames(&connection, outbound_control, outbound) => {
            tracing::debug!(node = %context.node_id, %peer, %reason, "writer stopped");
            Ending::Closed
        }
        ending = read_streams(&context, &connection, &peer, &activity) => ending,
    };
    if let Ending::Malformed(reason) = &ending {
        NodeMetrics::count(&counters.peers_closed_malformed);
        tracing::warn!(node = %context.node_id, %peer, %reason, "peer sent a malformed frame; disconnecting");
        connection.close(VarInt::from_u32(CLOSE_MALFORMED_FRAME), reason.as_bytes());
    }
    context.peers.remove_if_current(&peer, connection_id);
    NodeMetrics::count(&counters.connections_lost);
    tracing::info!(node = %context.node_id, %peer, reason = ?connection.close_reason(), "disconnected");
    if peer_left(&connection) {
        if let Some(topology) = context.topology.get() {
            let _ = topology.cast(TopologyMsg::PeerLeft(peer.clone()));
        }
    }
    if let Some(transport) = &transport {
        let _ = transport.cast(TransportMsg::PeerDown(peer));
    }
}

fn frame_codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

type StreamWriter = FramedWrite<quinn::SendStream, LengthDelimitedCodec>;

/// Drains the peer's send queue into one stream per traffic class, flushing
/// after each batch. Returns when the queue closes or the connection fails.
async fn write_frames(
    connection: &Connection,
    mut control: mpsc::Receiver<OutboundFrame>,
    mut outbound: mpsc::Receiver<OutboundFrame>,
) -> &'static str {
    let mut streams: [Option<StreamWriter>; 4] = Default::default();
    let mut batch = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut control_batch = Vec::with_capacity(WRITE_BATCH_MAX);
    loop {
        // Control frames first: at most one batch of data is ahead of a
        // heartbeat, however long the data queue (both are cancel safe).
        let received = tokio::select! {
            biased;
            count = control.recv_many(&mut control_batch, WRITE_BATCH_MAX) => count,
            count = outbound.recv_many(&mut batch, WRITE_BATCH_MAX) => count,
        };
        if received == 0 {
            break;
        }
        let mut dirty = [false; 4];
        for (class, bytes) in control_batch.drain(..).chain(batch.drain(..)) {
            let Some(stream) = stream_for(connection, &mut streams, class).await else {
                return "cannot open a stream";
            };
            if stream.feed(bytes).await.is_err() {
                return "stream write failed";
            }
            dirty[class.index()] = true;
        }
        for (stream, dirty) in streams.iter_mut().zip(dirty) {
            if let (Some(stream), true) = (stream, dirty) {
                if SinkExt::<bytes::Bytes>::flush(stream).await.is_err() {
                    return "stream flush failed";
                }
            }
        }
    }
    "send queue closed"
}

async fn stream_for<'s>(
    connection: &Connection,
    streams: &'s mut [Option<StreamWriter>; 4],
    class: TrafficClass,
) -> Option<&'s mut StreamWriter> {
    // Transfer streams are opened per snapshot, never queued as frames.
    let slot = streams.get_mut(class.index())?;
    if slot.is_none() {
        let mut stream = connection.open_uni().await.ok()?;
        stream
            .write_all(&StreamHeader { class }.encode())
            .await
            .ok()?;
        // The writer never sends more than the peer accepts.
        *slot = Some(FramedWrite::new(stream, frame_codec(usize::MAX >> 1)));
    }
    slot.as_mut()
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
    fn admit(&self, batch: &mut Vec<Envelope>, context: &NodeContext) {
        let Some(bucket) = &self.bucket else {
            return;
        };
        let now = monotonic_micros();
        let mut bucket = bucket.lock().expect("bucket lock is never poisoned");
        let before = batch.len();
        batch.retain(|_| bucket.try_take(now));
        let dropped = (before - batch.len()) as u64;
        if dropped > 0 {
            context
                .metrics
                .counters
                .dropped_peer_rate_limited
                .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Accepts the peer's streams and reads each in its own task.
async fn read_streams(
    context: &Arc<NodeContext>,
    connection: &Connection,
    peer: &str,
    activity: &Arc<LinkActivity>,
) -> Ending {
    let mut readers = JoinSet::new();
    let transfers: Arc<Mutex<Transfers>> = Arc::default();
    let limit = Arc::new(InboundLimit::new(&context.config.transport));
    loop {
        tokio::select! {
            stream = connection.accept_uni() => match stream {
                Ok(stream) => {
                    let link = ReadLink { peer: peer.to_string(), activity: activity.clone(), transfers: transfers.clone(), limit: limit.clone() };
                    let reader = read_stream(context.clone(), stream, link);
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
    activity: Arc<LinkActivity>,
    transfers: Arc<Mutex<Transfers>>,
    limit: Arc<InboundLimit>,
}

/// Reads one stream's frames and hands them to the router in batches.
/// Returns `Err` with a reason when the peer sent something malformed.
async fn read_stream(
    context: Arc<NodeContext>,
    mut stream: quinn::RecvStream,
    link: ReadLink,
) -> Result<(), String> {
    let ReadLink {
        peer,
        activity,
        transfers,
        limit,
    } = link;
    let counters = &context.metrics.counters;
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
        return super::transfer::read_transfer(&context, stream, &peer, &transfers)
            .await
            .map_err(malformed);
    }
    let batch_max = context.config.transport.receive_batch_max;
    let mut raft = RaftAssembler::default();
    let mut pbft = PbftAssembler::default();
    let mut frames = FramedRead::new(
        stream,
        frame_codec(context.config.transport.frame_bytes_max),
    );
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
                    hand_to_topology(&context, &peer, ControlFrame::Heartbeat(heartbeat))
                }
                Frame::Members(records) => {
                    hand_to_topology(&context, &peer, ControlFrame::Members(records))
                }
                Frame::Overlay(overlay) => {
                    hand_to_topology(&context, &peer, ControlFrame::Overlay(overlay))
                }
                Frame::Pbft(part) => {
                    let whole = pbft
                        .add(part)
                        .map_err(|error| malformed(error.to_string()))?;
                    if let Some(packet) = whole {
                        super::pbft_replica::hand_to_pbft(&context, &peer, packet);
                    }
                }
                Frame::Raft(part) => {
                    let whole = raft
                        .add(part)
                        .map_err(|error| malformed(error.to_string()))?;
                    if let Some(message) = whole {
                        hand_to_replica(&context, &peer, message);
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
        limit.admit(&mut batch, &context);
        let batch = super::router::pass_on_transit(&context, batch);
        if !batch.is_empty() {
            hand_to_router(&context, batch, &peer).await;
        }
        if ended {
            return Ok(());
        }
    }
}

/// Hands a control frame to the topology actor if its queue has room;
/// otherwise drops it and counts it (heartbeats are periodic, and membership
/// views are reconciled by digest, so a dropped one is made good later).
fn hand_to_topology(context: &NodeContext, peer: &str, frame: ControlFrame) {
    let Ok(permit) = context.control_queue.clone().try_acquire_owned() else {
        return NodeMetrics::count(&context.metrics.counters.dropped_control_queue_full);
    };
    let Some(topology) = context.topology.get() else {
        return NodeMetrics::count(&context.metrics.counters.dropped_control_queue_full);
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
pub(super) fn hand_to_replica(context: &NodeContext, peer: &str, message: raft::eraftpb::Message) {
    let counters = &context.metrics.counters;
    let control = &context.config.control;
    let addressed = control.replica_id(peer) == Some(message.from)
        && control.replica_id(&context.node_id) == Some(message.to);
    if !addressed {
        tracing::debug!(node = %context.node_id, %peer, from = message.from, to = message.to, "misaddressed raft message");
        return NodeMetrics::count(&counters.raft_dropped_misaddressed);
    }
    let Ok(permit) = context.raft_queue.clone().try_acquire_owned() else {
        return NodeMetrics::count(&counters.raft_dropped_queue_full);
    };
    let Some(replica) = context.replica.get() else {
        return NodeMetrics::count(&counters.raft_dropped_queue_full);
    };
    let _ = replica.cast(RaftMsg::Peer {
        message: Box::new(message),
        permit,
    });
}

/// Waits for room in the router's queue (pushing back on the peer while it
/// is full) and hands the batch over.
async fn hand_to_router(
    context: &NodeContext,
    envelopes: Vec<crate::protocols::wire::Envelope>,
    peer: &str,
) {
    let Ok(permit) = context.router_queue.clone().acquire_owned().await else {
        return;
    };
    let mut message = RouterMsg::Inbound { envelopes, permit };
    loop {
        if let Some(router) = context.router.get() {
            match router.cast(message) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(returned)) => message = returned,
                Err(_) => return,
            }
        }
        // The router is restarting; its supervisor brings it back shortly.
        tracing::trace!(node = %context.node_id, %peer, "router unavailable; waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
