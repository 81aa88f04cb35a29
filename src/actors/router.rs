//! The router: the shell around this node's [`MeshCore`].
//!
//! It feeds the core what arrives (local agents' messages, envelopes from
//! peer connections, agents' reports of what they consumed, a tick every
//! `delivery.tick_ms`) with the time and the routing view, then does what
//! the core decided: encodes envelopes onto peer connections, hands
//! deliveries to agents' bounded inboxes, and tells senders each message's
//! outcome. Every decision (numbering, signing, routing, the duplicate
//! window, acknowledgements, retransmission, admission) is the core's; see
//! `protocols::mesh`.
//!
//! Two shortcuts skip the router's mailbox: connection readers pass
//! transit envelopes on themselves ([`pass_on_transit`], with the same
//! pure routing the core uses), and a sender is refused on its own task
//! when the admission window the router last published is full
//! ([`send`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::metrics::NodeMetrics;
use crate::protocols::mesh::route;
use crate::protocols::mesh::{Delivery, Event, MeshCore, MeshCounters, Now, Paths, Transmit};
use crate::protocols::wire::{encode_frame, Envelope, EnvelopeKind, Frame, TrafficClass};

use crate::clock::{monotonic_ms, unix_micros};

use super::data_path::{AgentReport, AgentStats, DataPath};
use super::messages::{AgentMsg, OutboundMessage, QueuedPlace, Receipt, ReceiptSender, RouterMsg};
use super::overlay_state::OverlayState;
use super::shared::{NodeShared, Ticker};
use crate::protocols::mesh::SendError;

/// Hands `message` to the node's router without waiting.
pub fn send(
    shared: &NodeShared,
    data_path: &DataPath,
    message: OutboundMessage,
) -> Result<(), SendError> {
    let counters = &shared.metrics.counters;
    let payload_max = shared.config.limits.payload_bytes_max;
    if message.payload.len() > payload_max {
        NodeMetrics::count(&counters.refused_payload_too_large);
        return Err(SendError::PayloadTooLarge {
            bytes: message.payload.len(),
            max: payload_max,
        });
    }
    check_rate(shared, data_path, &message.source_agent)?;
    let sender = data_path.stats_of(&message.source_agent);
    check_inflight(shared, data_path, &sender)?;
    let place = QueuedPlace::new(shared.try_reserve_router()?, sender.queued.clone());
    let router = shared.mailboxes.router.get().ok_or(SendError::RouterBusy)?;
    router
        .cast(RouterMsg::Send { message, place })
        .map_err(|_| SendError::RouterBusy)
}

/// Sends `body` from `source_agent` as its behaviour's
/// [`Context::send`](crate::agent_api::Context::send) would (a plain
/// message), and returns where the outcome will be told: for code outside
/// the agents (load generators, tests) that sends in an agent's name.
pub fn send_with_receipt(
    shared: &NodeShared,
    data_path: &DataPath,
    source_agent: &str,
    destination_agent: &str,
    body: Vec<u8>,
) -> Result<oneshot::Receiver<Receipt>, SendError> {
    let (sender, receiver) = oneshot::channel();
    let message = OutboundMessage {
        source_agent: source_agent.to_string(),
        destination_agent: destination_agent.to_string(),
        kind: EnvelopeKind::Data,
        payload: crate::agent_api::frame::tell(body),
        receipt: Some(sender),
    };
    send(shared, data_path, message)?;
    Ok(receiver)
}

/// Refuses at once, rather than after a trip through the router's queue,
/// when the node's messages awaiting acknowledgement, with those queued
/// for the router, fill the admission window the core last reported
/// (which follows what the paths take, within `delivery.inflight_max`):
/// a sender pushing as fast as it can learns it at the cost of two atomic
/// loads, and does not fill the router's queue with messages it would
/// only refuse. While the window itself has room, a sender with nothing
/// queued may still queue one, so that others' queued messages (a flood
/// to nowhere, say, that will take no place in the window) never shut it
/// out.
fn check_inflight(
    shared: &NodeShared,
    data_path: &DataPath,
    sender: &AgentStats,
) -> Result<(), SendError> {
    let room = shared.mailboxes.router_queue.available_permits();
    let queued = shared.config.limits.router_queue_max - room;
    let inflight = data_path.admission.inflight.load(Ordering::Relaxed);
    let window = data_path.admission.window.load(Ordering::Relaxed);
    let idle = sender.queued.load(Ordering::Relaxed) == 0;
    if inflight + queued < window || (idle && inflight < window) {
        return Ok(());
    }
    NodeMetrics::count(&shared.metrics.counters.refused_inflight_full);
    Err(SendError::InFlightFull(shared.node_id.clone()))
}

/// Takes a token from the agent's bucket when rate limits are on.
fn check_rate(shared: &NodeShared, data_path: &DataPath, agent: &str) -> Result<(), SendError> {
    let delivery = &shared.config.delivery;
    if delivery.source_rate_max <= 0.0 {
        return Ok(());
    }
    let now = unix_micros();
    let mut bucket = data_path
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
        NodeMetrics::count(&shared.metrics.counters.refused_rate_limited);
        Err(SendError::RateLimited(agent.to_string()))
    }
}

pub struct Router;

/// What a router's incarnation starts from: the node's shared core, the
/// data path it keeps there across its restarts, and the overlay whose
/// routing view it routes by.
#[derive(Clone)]
pub struct RouterParts {
    pub shared: Arc<NodeShared>,
    pub data_path: Arc<DataPath>,
    pub overlay: Arc<OverlayState>,
}

pub struct RouterState {
    parts: RouterParts,
    myself: ActorRef<RouterMsg>,
    /// Ticks every `delivery.tick_ms` while the core has work (messages
    /// awaiting acknowledgement, deliveries not yet consumed, anything
    /// due), and is stopped while it has none: a thousand idle nodes in one
    /// process would otherwise tick fifty thousand times a second. A send
    /// or an arrival, the only things that give the core work, starts it.
    ticker: Option<Ticker>,
}

impl RouterState {
    fn tick_while_busy(&mut self, busy: bool) {
        match (busy, self.ticker.is_some()) {
            (true, false) => {
                let every = Duration::from_millis(self.parts.shared.config.delivery.tick_ms);
                let ticker = self.myself.send_interval(every, || RouterMsg::Tick);
                self.ticker = Some(Ticker::new(ticker));
            }
            (false, true) => self.ticker = None,
            _ => {}
        }
    }
}

/// Whether the core has work a tick may be needed for.
fn busy(data_path: &DataPath, core: &MeshCore<ReceiptSender>) -> bool {
    core.inflight() > 0
        || core.deliveries_waiting() > 0
        || core.poll_timeout().is_some()
        || !data_path.agent_reports.is_empty()
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterParts;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        parts: RouterParts,
    ) -> Result<RouterState, ActorProcessingErr> {
        parts.shared.mailboxes.router.set(Some(myself.clone()));
        let mut state = RouterState {
            parts,
            myself,
            ticker: None,
        };
        // What an earlier incarnation left (the core outlives it) is
        // ticked for as anything else.
        state.tick_while_busy(true);
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let RouterParts {
            shared,
            data_path,
            overlay,
        } = &state.parts;
        let now = Now {
            monotonic_ms: monotonic_ms(),
            unix_micros: unix_micros(),
        };
        if matches!(message, RouterMsg::Tick) {
            let core = data_path.mesh_core();
            if idle(data_path, &core, now) {
                let busy = busy(data_path, &core);
                drop(core);
                state.tick_while_busy(busy);
                return Ok(());
            }
        }
        let view = overlay.routing_view();
        let committed = overlay.committed();
        let link_up = |peer: &str| shared.peers.is_connected(peer);
        let paths = Paths {
            view: &view,
            link_up: &link_up,
            placed: &committed.placed,
        };
        let mut core = data_path.mesh_core();
        take_reports(data_path, &mut core, now);
        match message {
            RouterMsg::Send { message, place } => {
                core.send(now, paths, message);
                drop(place);
            }
            RouterMsg::Inbound { envelopes, permit } => {
                core.handle_envelopes(now, paths, envelopes);
                drop(permit);
            }
            RouterMsg::Tick => core.handle_timeout(now, paths),
        }
        carry_out(shared, data_path, &mut core);
        let busy = busy(data_path, &core);
        drop(core);
        state.tick_while_busy(busy);
        Ok(())
    }
}

/// Whether a tick has nothing to do: no agent reported anything and the
/// core has nothing due yet. Most ticks of a node waiting on
/// acknowledgements are such.
fn idle(data_path: &DataPath, core: &MeshCore<ReceiptSender>, now: Now) -> bool {
    let due = core.poll_timeout();
    data_path.agent_reports.is_empty() && due.is_none_or(|due| due > now.monotonic_ms)
}

/// Gives the core what agents reported since the last message.
fn take_reports(data_path: &DataPath, core: &mut MeshCore<ReceiptSender>, now: Now) {
    for report in data_path.agent_reports.take() {
        match report {
            AgentReport::Started { agent, incarnation } => {
                core.agent_restarted(&agent, incarnation)
            }
            AgentReport::Consumed {
                agent,
                origin,
                sequence,
            } => core.consumed(now, &agent, &origin, sequence),
        }
    }
}

/// Does what the core decided, in the core's order, then publishes its
/// counters and admission.
fn carry_out(shared: &NodeShared, data_path: &DataPath, core: &mut MeshCore<ReceiptSender>) {
    while let Some(Transmit { peer, envelope }) = core.poll_transmit() {
        send_hop(shared, &peer, envelope);
    }
    while let Some(delivery) = core.poll_deliver() {
        let agent = delivery.agent.clone();
        let signed = &delivery.envelope.signed;
        let (origin, sequence) = (signed.origin_node.clone(), signed.sequence);
        if !hand_over(shared, data_path, delivery) {
            core.undelivered(&agent, &origin, sequence);
        }
    }
    while let Some(event) = core.poll_event() {
        tell_outcome(data_path, event);
    }
    shared
        .metrics
        .counters
        .add_moved(core.take_counters().moved());
    let admission = &data_path.admission;
    admission.inflight.store(core.inflight(), Ordering::Relaxed);
    admission.window.store(core.window(), Ordering::Relaxed);
}

/// Sends `envelope` one hop, to `peer`.
fn send_hop(shared: &NodeShared, peer: &str, envelope: Envelope) {
    let counters = &shared.metrics.counters;
    let class = match envelope.signed.kind {
        EnvelopeKind::Ack => TrafficClass::Control,
        EnvelopeKind::Data | EnvelopeKind::Reply => TrafficClass::Data,
    };
    let bytes = encode_frame(&Frame::Envelope(envelope));
    let length = bytes.len() as u64;
    match shared.peers.try_send(peer, (class, bytes.into())) {
        Ok(()) => {
            NodeMetrics::count(&counters.frames_sent);
            counters.bytes_sent.fetch_add(length, Ordering::Relaxed);
        }
        Err(SendError::QueueFull(_)) => NodeMetrics::count(&counters.dropped_queue_full),
        Err(_) => NodeMetrics::count(&counters.dropped_peer_down),
    }
}

/// Envelopes from a peer: passes on those for other nodes and returns
/// the rest, which are for this node. Called by the connection's reader
/// task itself: passing a transit envelope on needs only shared state (the
/// routing view, the peer table), and skipping the router's mailbox saves
/// a message per hop.
pub fn pass_on_transit(
    shared: &NodeShared,
    overlay: &OverlayState,
    envelopes: Vec<Envelope>,
) -> Vec<Envelope> {
    let view = overlay.routing_view();
    let link_up = |peer: &str| shared.peers.is_connected(peer);
    let mut counters = MeshCounters::default();
    let here = route::pass_on(
        &shared.node_id,
        &shared.directory.roster,
        &view,
        envelopes,
        &link_up,
        &mut counters,
        |next, envelope| send_hop(shared, view.frame.overlay.name(next), envelope),
    );
    shared.metrics.counters.add_moved(counters.moved());
    here
}

/// Hands a delivery to its agent's bounded inbox; if it cannot, counts
/// why and returns false (the core forgets it, and the origin
/// retransmits).
fn hand_over(shared: &NodeShared, data_path: &DataPath, delivery: Delivery) -> bool {
    let counters = &shared.metrics.counters;
    let Delivery {
        agent,
        incarnation,
        envelope,
        shortest_path,
    } = delivery;
    // A handle of another incarnation: the core learns of the restart
    // with the next report, and the retransmission is handed to it then.
    let handle = data_path
        .agents
        .get(&agent)
        .filter(|handle| handle.incarnation == incarnation)
        .map(|handle| handle.clone());
    let Some(handle) = handle else {
        NodeMetrics::count(&counters.dropped_agent_missing);
        return false;
    };
    let Ok(permit) = handle.inbox.clone().try_acquire_owned() else {
        NodeMetrics::count(&counters.dropped_agent_inbox_full);
        return false;
    };
    let sent_at_micros = envelope.signed.sent_at_micros;
    let hops = envelope.hop_count;
    if handle
        .actor
        .cast(AgentMsg::Deliver { envelope, permit })
        .is_err()
    {
        NodeMetrics::count(&counters.dropped_agent_missing);
        return false;
    }
    NodeMetrics::count(&counters.envelopes_delivered);
    if shortest_path {
        NodeMetrics::count(&counters.delivered_on_shortest_path);
    }
    shared
        .metrics
        .record_delivery(unix_micros().saturating_sub(sent_at_micros), hops);
    true
}

/// Tells a message's sender its outcome: the receipt if it asked for one,
/// and the sending agent (if it still runs) when the message failed.
fn tell_outcome(data_path: &DataPath, event: Event<ReceiptSender>) {
    match event {
        Event::Acknowledged {
            source_agent,
            receipt,
        } => {
            if let Some(stats) = data_path.agent_stats.get(&source_agent) {
                stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(receipt) = receipt {
                let _ = receipt.send(Ok(()));
            }
        }
        Event::Failed {
            source_agent,
            destination_agent,
            error,
            receipt,
        } => {
            if let Some(receipt) = receipt {
                let _ = receipt.send(Err(error.clone()));
            }
            if let Some(agent) = data_path.agents.get(&source_agent) {
                let _ = agent.actor.cast(AgentMsg::SendFailed {
                    destination: destination_agent,
                    error,
                });
            }
        }
    }
}
