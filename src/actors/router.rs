//! The router: signs, routes, forwards, verifies, acknowledges and
//! retransmits envelopes.
//!
//! Outbound, it numbers a message per destination node, signs it, keeps it
//! until the destination acknowledges it, and sends it along the best path
//! of the routing view the topology actor keeps current (the path travels
//! in the envelope). Transit envelopes follow their path, or a detour
//! through nodes they have not visited when the next link is down; transit
//! routers do not verify signatures (destinations do) and pass them on from
//! the connection's reader task ([`pass_on_transit`]). Inbound, it
//! verifies a batch at once and hands each fresh envelope to its agent's
//! bounded inbox; the agent marks it consumed, and the router acknowledges
//! consumed sequences to their origin in batches, each authenticated by a
//! MAC under the key the two nodes share (cheaper than a signature).
//! Every `delivery.tick_ms` it sends due acknowledgements and retransmits
//! what timed out, giving up after `delivery.retries_max` retries.
//!
//! Delivery is at-least-once on the wire and exactly-once to the agent: the
//! destination's duplicate window, the in-inbox set and the sender's bounded
//! sequence span make sure of it. Every refusal answers the sending agent
//! with a typed [`SendError`] and moves a counter; every drop moves a
//! counter named for its cause.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::metrics::NodeMetrics;
use crate::protocols::delivery::{to_ranges, Refusal, ACK_RANGES_MAX};
use crate::protocols::routing::{self, Position, Step};
use crate::protocols::wire::codec::{decode_acks, encode_acks};
use crate::protocols::wire::envelope::{authenticate, OriginKeys};
use crate::protocols::wire::{
    encode_frame, Admission, Destination, Envelope, EnvelopeKind, Frame, SignedFields,
    TrafficClass, VerifyError,
};

use super::agent::AgentMsg;
use super::context::{
    monotonic_ms, unix_micros, InFlight, NodeContext, RoutingView, SendError, Ticker,
};

/// Retransmissions handled per tick; the rest wait for the next one.
const RETRANSMIT_BATCH_MAX: usize = 4_096;

/// What a sender learns about one message: delivered (acknowledged by the
/// destination) or why not.
pub type Receipt = Result<(), SendError>;

/// A message an agent asks the router to carry.
#[derive(Debug)]
pub struct OutboundMessage {
    pub source_agent: String,
    pub destination_agent: String,
    pub kind: EnvelopeKind,
    pub payload: Vec<u8>,
    /// Told when the destination acknowledges, or when the router gives up.
    pub receipt: Option<oneshot::Sender<Receipt>>,
}

pub enum RouterMsg {
    /// From a local agent. The permit holds the message's place in the
    /// router's bounded queue until it is handled.
    Send {
        message: OutboundMessage,
        permit: OwnedSemaphorePermit,
    },
    /// Decoded envelopes for this node from one peer connection.
    Inbound {
        envelopes: Vec<Envelope>,
        permit: OwnedSemaphorePermit,
    },
    /// Send due acknowledgements and retransmissions.
    Tick,
}

/// Hands `message` to the node's router without waiting.
pub fn send(context: &NodeContext, message: OutboundMessage) -> Result<(), SendError> {
    let counters = &context.metrics.counters;
    let payload_max = context.config.limits.payload_bytes_max;
    if message.payload.len() > payload_max {
        NodeMetrics::count(&counters.refused_payload_too_large);
        return Err(SendError::PayloadTooLarge {
            bytes: message.payload.len(),
            max: payload_max,
        });
    }
    check_rate(context, &message.source_agent)?;
    check_inflight(context)?;
    let permit = context.try_reserve_router()?;
    let router = context.router.get().ok_or(SendError::RouterBusy)?;
    router
        .cast(RouterMsg::Send { message, permit })
        .map_err(|_| SendError::RouterBusy)
}

/// Like [`send`], and returns where the outcome will be told.
pub fn send_with_receipt(
    context: &NodeContext,
    source_agent: &str,
    destination_agent: &str,
    kind: EnvelopeKind,
    payload: Vec<u8>,
) -> Result<oneshot::Receiver<Receipt>, SendError> {
    let (sender, receiver) = oneshot::channel();
    let message = OutboundMessage {
        source_agent: source_agent.to_string(),
        destination_agent: destination_agent.to_string(),
        kind,
        payload,
        receipt: Some(sender),
    };
    send(context, message)?;
    Ok(receiver)
}

/// Refuses at once, rather than after a trip through the router's queue,
/// when the node's messages awaiting acknowledgement, with those queued
/// for the router, fill its admission window (which follows what the
/// paths take, within `delivery.inflight_max`): a sender pushing as fast as it can
/// learns it at the cost of a lock, and does not fill the router's queue
/// with messages it would only refuse.
fn check_inflight(context: &NodeContext) -> Result<(), SendError> {
    let queued = context.config.limits.router_queue_max - context.router_queue.available_permits();
    let (inflight, window) = {
        let memory = context.memory();
        (memory.sender.inflight(), memory.sender.window())
    };
    if inflight + queued < window {
        return Ok(());
    }
    NodeMetrics::count(&context.metrics.counters.refused_inflight_full);
    Err(SendError::InFlightFull(context.node_id.clone()))
}

/// Takes a token from the agent's bucket when rate limits are on.
fn check_rate(context: &NodeContext, agent: &str) -> Result<(), SendError> {
    let delivery = &context.config.delivery;
    if delivery.source_rate_max <= 0.0 {
        return Ok(());
    }
    let now = unix_micros();
    let mut bucket = context
        .rate_limits
        .entry(agent.to_string())
        .or_insert_with(|| {
            crate::protocols::delivery::TokenBucket::new(
                delivery.source_rate_max,
                delivery.source_burst_max,
                now,
            )
        });
    if bucket.try_take(now) {
        Ok(())
    } else {
        NodeMetrics::count(&context.metrics.counters.refused_rate_limited);
        Err(SendError::RateLimited(agent.to_string()))
    }
}

pub struct Router;

pub struct RouterState {
    context: Arc<NodeContext>,
    _ticker: Ticker,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        context: Arc<NodeContext>,
    ) -> Result<RouterState, ActorProcessingErr> {
        context.router.set(Some(myself.clone()));
        let every = Duration::from_millis(context.config.delivery.tick_ms);
        let ticker = Ticker::new(myself.send_interval(every, || RouterMsg::Tick));
        Ok(RouterState {
            context,
            _ticker: ticker,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let context = &state.context;
        match message {
            RouterMsg::Send { message, permit } => {
                accept(context, message);
                drop(permit);
            }
            RouterMsg::Inbound { envelopes, permit } => {
                arrive(context, envelopes, true);
                drop(permit);
            }
            RouterMsg::Tick => {
                flush_acks(context);
                retransmit_due(context);
            }
        }
        Ok(())
    }
}

/// Numbers, signs and sends a message from a local agent, or refuses it.
fn accept(context: &NodeContext, mut message: OutboundMessage) {
    let counters = &context.metrics.counters;
    let mut receipt = message.receipt.take();
    let refuse = |error: SendError, receipt: Option<oneshot::Sender<Receipt>>| {
        if let Some(receipt) = receipt {
            let _ = receipt.send(Err(error.clone()));
        }
        answer_refusal(
            context,
            &message.source_agent,
            &message.destination_agent,
            error,
        );
    };
    let Some(node) = context
        .directory
        .agent_nodes
        .get(&message.destination_agent)
        .cloned()
    else {
        NodeMetrics::count(&counters.refused_no_route);
        return refuse(
            SendError::NoRoute(message.destination_agent.clone()),
            receipt,
        );
    };
    if !node_thought_live(context, &node) {
        NodeMetrics::count(&counters.refused_no_route);
        return refuse(
            SendError::NoRoute(message.destination_agent.clone()),
            receipt,
        );
    }
    let mut memory = context.memory();
    let sent = memory
        .sender
        .send(monotonic_ms(), &node, |sequence| InFlight {
            envelope: sign(context, &message, sequence),
            receipt: receipt.take(),
        });
    let envelope = match sent {
        Ok(sequence) => memory
            .sender
            .get(&node, sequence)
            .map(|in_flight| in_flight.envelope.clone()),
        Err(Refusal::InFlightFull | Refusal::WindowFull) => None,
    };
    drop(memory);
    match envelope {
        Some(envelope) => {
            NodeMetrics::count(&counters.envelopes_sent);
            transmit(context, envelope, &node);
        }
        None => {
            NodeMetrics::count(&counters.refused_inflight_full);
            refuse(SendError::InFlightFull(node), receipt);
        }
    }
}

/// Whether `node` is in this node's overlay (alive, as far as it knows),
/// or the overlay is not known yet. A message for a node known dead is
/// refused at once rather than retried until it runs out of retries.
fn node_thought_live(context: &NodeContext, node: &str) -> bool {
    let view = context.routing_view();
    view.frame.me.is_none() || view.frame.overlay.index_of(node).is_some()
}

fn sign(context: &NodeContext, message: &OutboundMessage, sequence: u64) -> Envelope {
    let signed = SignedFields {
        version: crate::protocols::wire::limits::ENVELOPE_VERSION,
        kind: message.kind,
        origin_node: context.node_id.clone(),
        source_agent: message.source_agent.clone(),
        destination: Destination::Agent(message.destination_agent.clone()),
        sequence,
        ttl: context.config.limits.ttl,
        sent_at_micros: unix_micros(),
        payload: message.payload.clone(),
    };
    Envelope::sign(signed, &context.key)
}

/// Tells the sending agent, if it still runs, why its message failed.
fn answer_refusal(context: &NodeContext, source: &str, destination: &str, error: SendError) {
    if let Some(agent) = context.agents.get(source) {
        let _ = agent.actor.cast(AgentMsg::SendFailed {
            destination: destination.to_string(),
            error,
        });
    }
}

/// Sends an envelope this node originates (first time or again) toward
/// `destination_node` along the best path whose first link is up.
fn transmit(context: &NodeContext, mut envelope: Envelope, destination_node: &str) {
    let counters = &context.metrics.counters;
    if destination_node == context.node_id {
        return arrive(context, vec![envelope], false);
    }
    let view = context.routing_view();
    let link_up = |next: usize| context.peers.is_connected(view.frame.overlay.name(next));
    let (Some(me), Some(destination)) =
        (view.frame.me, view.frame.overlay.index_of(destination_node))
    else {
        return NodeMetrics::count(&counters.dropped_no_route);
    };
    let planned = view
        .table
        .as_ref()
        .and_then(|table| table.route(destination))
        .filter(|route| link_up(route.next_hop))
        .map(|route| route.path);
    let path = planned.or_else(|| {
        routing::path_avoiding(
            &view.frame.overlay,
            me,
            destination,
            &[me],
            |a, b| view.weight(a, b),
            link_up,
        )
    });
    let Some(path) = path else {
        return NodeMetrics::count(&counters.dropped_no_route);
    };
    if path.len() - 1 > envelope.signed.ttl as usize {
        return NodeMetrics::count(&counters.dropped_ttl_expired);
    }
    envelope.hop_count = 0;
    envelope.path = path
        .iter()
        .map(|&index| view.frame.wire_of_overlay[index])
        .collect();
    send_hop(context, &view, envelope, path[1]);
}

/// Sends `envelope` one hop, to overlay node `next`.
fn send_hop(context: &NodeContext, view: &RoutingView, mut envelope: Envelope, next: usize) {
    let counters = &context.metrics.counters;
    envelope.hop_count += 1;
    let class = match envelope.signed.kind {
        EnvelopeKind::Ack => TrafficClass::Control,
        EnvelopeKind::Data | EnvelopeKind::Reply => TrafficClass::Data,
    };
    let bytes = encode_frame(&Frame::Envelope(envelope));
    let length = bytes.len() as u64;
    let peer = view.frame.overlay.name(next);
    match context.peers.try_send(peer, (class, bytes.into())) {
        Ok(()) => {
            NodeMetrics::count(&counters.frames_sent);
            counters
                .bytes_sent
                .fetch_add(length, std::sync::atomic::Ordering::Relaxed);
        }
        Err(SendError::QueueFull(_)) => NodeMetrics::count(&counters.dropped_queue_full),
        Err(_) => NodeMetrics::count(&counters.dropped_peer_down),
    }
}

/// The node an envelope is going to, if it names one this cluster has.
fn destination_node<'c>(context: &'c NodeContext, envelope: &'c Envelope) -> Option<&'c str> {
    match &envelope.signed.destination {
        Destination::Agent(agent) => context.directory.agent_nodes.get(agent).map(String::as_str),
        Destination::Node(node) => context
            .directory
            .node_index
            .contains_key(node)
            .then_some(node.as_str()),
        Destination::Broadcast => None,
    }
}

/// Envelopes from a peer: passes on those for other nodes and returns
/// the rest, which are for this node. Called by the connection's reader
/// task itself: passing a transit envelope on needs only shared state (the
/// routing view, the peer table), and skipping the router's mailbox saves
/// a message per hop.
pub fn pass_on_transit(context: &NodeContext, envelopes: Vec<Envelope>) -> Vec<Envelope> {
    let mut here = Vec::with_capacity(envelopes.len());
    let view = context.routing_view();
    for envelope in envelopes {
        match destination_node(context, &envelope) {
            None => NodeMetrics::count(&context.metrics.counters.dropped_misrouted),
            Some(node) if node == context.node_id => here.push(envelope),
            Some(node) => {
                let node = node.to_string();
                forward(context, &view, envelope, &node);
            }
        }
    }
    here
}

/// Passes a transit envelope on along its path, or a detour.
fn forward(context: &NodeContext, view: &RoutingView, mut envelope: Envelope, node: &str) {
    let counters = &context.metrics.counters;
    let (Some(me), Some(destination)) = (view.frame.me, view.frame.overlay.index_of(node)) else {
        return NodeMetrics::count(&counters.dropped_no_route);
    };
    let known: Vec<usize> = envelope
        .path
        .iter()
        .map(|&wire| {
            view.frame
                .overlay_of_wire
                .get(wire as usize)
                .copied()
                .flatten()
                .unwrap_or(usize::MAX)
        })
        .collect();
    let position = Position {
        here: me,
        destination,
        path: &known,
        hops: envelope.hop_count as usize,
        ttl: envelope.signed.ttl as usize,
    };
    let link_up = |next: usize| context.peers.is_connected(view.frame.overlay.name(next));
    match routing::next_step(
        &view.frame.overlay,
        position,
        |a, b| view.weight(a, b),
        link_up,
    ) {
        Step::Forward { path } => {
            let next = path[envelope.hop_count as usize + 1];
            envelope.path = wire_path(view, &envelope.path, &known, &path);
            NodeMetrics::count(&counters.envelopes_forwarded);
            send_hop(context, view, envelope, next);
        }
        Step::TtlExpired => NodeMetrics::count(&counters.dropped_ttl_expired),
        Step::NoRoute => NodeMetrics::count(&counters.dropped_no_route),
        Step::Deliver | Step::Misrouted => NodeMetrics::count(&counters.dropped_misrouted),
    }
}

/// The wire form of `path`. Nodes this node does not know as live appear
/// in `known` (the old path in overlay indices) as usize::MAX; where the
/// new path keeps the old one's node, the old wire index is kept.
fn wire_path(view: &RoutingView, old_wire: &[u16], known: &[usize], path: &[usize]) -> Vec<u16> {
    path.iter()
        .enumerate()
        .map(|(position, &index)| match known.get(position) {
            Some(&old) if old == index && index == usize::MAX => old_wire[position],
            _ => view.frame.wire_of_overlay[index],
        })
        .collect()
}

/// Envelopes for this node: drop what was taken already (cheap, before
/// paying for verification: under loss most retransmissions are such),
/// authenticate the rest unless they never left this node, then take
/// acknowledgements and hand data to agents.
fn arrive(context: &NodeContext, mut envelopes: Vec<Envelope>, from_peer: bool) {
    let counters = &context.metrics.counters;
    envelopes.retain(|envelope| !taken_already(context, envelope));
    let verdicts = if from_peer {
        authenticate(&envelopes, context)
    } else {
        vec![Ok(()); envelopes.len()]
    };
    for (envelope, verdict) in envelopes.into_iter().zip(verdicts) {
        match verdict {
            Err(VerifyError::UnknownOrigin(_)) => {
                NodeMetrics::count(&counters.dropped_unknown_origin)
            }
            Err(VerifyError::BadSignature) => NodeMetrics::count(&counters.dropped_bad_signature),
            Ok(()) if envelope.signed.kind == EnvelopeKind::Ack => take_acks(context, &envelope),
            Ok(()) => hand_over(context, envelope),
        }
    }
}

/// Whether a data envelope's sequence was consumed already, waits in its
/// agent's inbox, or is too old to admit. Counts the drop, and
/// acknowledges a consumed one again: its acknowledgement must have been
/// lost. Safe without verifying: the answer depends only on the origin and
/// sequence, and acknowledging what was consumed is true whoever asks.
fn taken_already(context: &NodeContext, envelope: &Envelope) -> bool {
    let Destination::Agent(agent) = &envelope.signed.destination else {
        return false;
    };
    let (origin, sequence) = (&envelope.signed.origin_node, envelope.signed.sequence);
    if !window_admits(context, origin, sequence) {
        return true;
    }
    let waiting = context.agents.get(agent).is_some_and(|handle| {
        handle
            .in_inbox
            .lock()
            .expect("inbox set lock is never poisoned")
            .contains(&(origin.clone(), sequence))
    });
    if waiting {
        NodeMetrics::count(&context.metrics.counters.dropped_duplicate);
    }
    waiting
}

/// Whether `origin`'s window still admits `sequence`. If not, counts why,
/// and acknowledges a consumed one again.
fn window_admits(context: &NodeContext, origin: &str, sequence: u64) -> bool {
    let counters = &context.metrics.counters;
    let mut memory = context.memory();
    let admission = memory
        .windows
        .get(origin)
        .map_or(Admission::Fresh, |window| window.check(sequence));
    match admission {
        Admission::Fresh => true,
        Admission::Duplicate => {
            memory
                .acks_due
                .entry(origin.to_string())
                .or_default()
                .push(sequence);
            NodeMetrics::count(&counters.dropped_duplicate);
            false
        }
        Admission::TooOld => {
            NodeMetrics::count(&counters.dropped_too_old);
            false
        }
    }
}

/// An acknowledgement from a destination node: settle what it covers.
fn take_acks(context: &NodeContext, envelope: &Envelope) {
    let counters = &context.metrics.counters;
    let Ok(ranges) = decode_acks(&envelope.signed.payload) else {
        return NodeMetrics::count(&counters.frames_malformed);
    };
    let settled =
        context
            .memory()
            .sender
            .acknowledge(monotonic_ms(), &envelope.signed.origin_node, &ranges);
    for (_, in_flight) in settled {
        NodeMetrics::count(&counters.acknowledged);
        if let Some(stats) = context
            .agent_stats
            .get(&in_flight.envelope.signed.source_agent)
        {
            stats
                .acknowledged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(receipt) = in_flight.receipt {
            let _ = receipt.send(Ok(()));
        }
    }
}

/// Hands a verified, fresh data envelope to its agent.
fn hand_over(context: &NodeContext, envelope: Envelope) {
    let counters = &context.metrics.counters;
    let Destination::Agent(agent) = &envelope.signed.destination else {
        return NodeMetrics::count(&counters.dropped_misrouted);
    };
    let Some(handle) = context.agents.get(agent).map(|entry| entry.clone()) else {
        return NodeMetrics::count(&counters.dropped_agent_missing);
    };
    let key = (
        envelope.signed.origin_node.clone(),
        envelope.signed.sequence,
    );
    let mut in_inbox = handle
        .in_inbox
        .lock()
        .expect("inbox set lock is never poisoned");
    if in_inbox.contains(&key) {
        return NodeMetrics::count(&counters.dropped_duplicate);
    }
    // Checked again under the inbox lock: the agent may have consumed the
    // original since `taken_already` looked. It marks the window before it
    // leaves the inbox set, so one of the two still shows it.
    if !window_admits(context, &key.0, key.1) {
        return;
    }
    let Ok(permit) = handle.inbox.clone().try_acquire_owned() else {
        return NodeMetrics::count(&counters.dropped_agent_inbox_full);
    };
    let sent_at_micros = envelope.signed.sent_at_micros;
    let hops = envelope.hop_count;
    let origin = key.0.clone();
    if handle
        .actor
        .cast(AgentMsg::Deliver { envelope, permit })
        .is_err()
    {
        return NodeMetrics::count(&counters.dropped_agent_missing);
    }
    in_inbox.insert(key);
    drop(in_inbox);
    NodeMetrics::count(&counters.envelopes_delivered);

    let view = context.routing_view();
    let shortest = view
        .frame
        .overlay
        .index_of(&origin)
        .and_then(|origin| view.frame.hops_from_me.get(origin));
    if shortest == Some(&(hops as usize)) {
        NodeMetrics::count(&counters.delivered_on_shortest_path);
    }
    context
        .metrics
        .record_delivery(unix_micros().saturating_sub(sent_at_micros), hops);
}

/// Sends every due acknowledgement, one sealed envelope per origin node
/// (per ACK_RANGES_MAX ranges).
fn flush_acks(context: &NodeContext) {
    let due = std::mem::take(&mut context.memory().acks_due);
    for (origin, mut sequences) in due {
        if sequences.is_empty() {
            continue;
        }
        let ranges = to_ranges(&mut sequences);
        for chunk in ranges.chunks(ACK_RANGES_MAX) {
            let signed = SignedFields {
                version: crate::protocols::wire::limits::ENVELOPE_VERSION,
                kind: EnvelopeKind::Ack,
                origin_node: context.node_id.clone(),
                source_agent: context.node_id.clone(),
                destination: Destination::Node(origin.clone()),
                sequence: 0,
                ttl: context.config.limits.ttl,
                sent_at_micros: unix_micros(),
                payload: encode_acks(chunk),
            };
            let pair_key = (origin != context.node_id)
                .then(|| context.pair_key(&origin))
                .flatten();
            let envelope = match pair_key {
                Some(key) => {
                    NodeMetrics::count(&context.metrics.counters.acks_sent);
                    Envelope::seal(signed, &key)
                }
                // Never leaves the node: no MAC needed.
                None => Envelope {
                    signed,
                    hop_count: 0,
                    path: Vec::new(),
                    signature: [0; 64],
                },
            };
            transmit(context, envelope, &origin);
        }
    }
}

/// Retransmits what timed out and gives up on what ran out of retries.
fn retransmit_due(context: &NodeContext) {
    let counters = &context.metrics.counters;
    let mut memory = context.memory();
    let polled = memory.sender.poll_due(monotonic_ms(), RETRANSMIT_BATCH_MAX);
    let again: Vec<(Envelope, String)> = polled
        .retransmit
        .iter()
        .filter_map(|(node, sequence)| {
            let in_flight = memory.sender.get(node, *sequence)?;
            Some((in_flight.envelope.clone(), node.clone()))
        })
        .collect();
    drop(memory);
    for (node, _, in_flight) in polled.exhausted {
        NodeMetrics::count(&counters.lost_retries_exhausted);
        if !node_thought_live(context, &node) {
            NodeMetrics::count(&counters.lost_to_departed);
        }
        let error = SendError::RetriesExhausted(node);
        if let Some(receipt) = in_flight.receipt {
            let _ = receipt.send(Err(error.clone()));
        }
        let signed = &in_flight.envelope.signed;
        if let Destination::Agent(destination) = &signed.destination {
            answer_refusal(context, &signed.source_agent, destination, error);
        }
    }
    for (envelope, node) in again {
        NodeMetrics::count(&counters.retransmissions);
        transmit(context, envelope, &node);
    }
}
