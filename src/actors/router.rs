//! The router: the only actor that signs and verifies envelopes.
//!
//! Outbound, it stamps the node's next sequence number and the send time,
//! signs, and hands the encoded frame to the destination node's connection
//! queue (or straight to a local agent). Inbound, it verifies a batch of
//! envelopes at once, admits each through its origin's duplicate window and
//! delivers it to the agent's bounded inbox. In this version the overlay is a
//! full mesh, so every envelope travels one hop.
//!
//! Every refusal answers the sending agent with a typed [`SendError`] and
//! moves a counter; every drop moves a counter.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::NodeMetrics;
use crate::protocols::wire::envelope::verify_batch;
use crate::protocols::wire::{
    encode_frame, Admission, Destination, Envelope, EnvelopeKind, Frame, SignedFields,
    TrafficClass, VerifyError,
};

use super::agent::AgentMsg;
use super::context::{unix_micros, NodeContext, SendError};

/// A message an agent asks the router to carry.
#[derive(Clone, Debug)]
pub struct OutboundMessage {
    pub source_agent: String,
    pub destination_agent: String,
    pub kind: EnvelopeKind,
    pub payload: Vec<u8>,
}

pub enum RouterMsg {
    /// From a local agent. The permit holds the message's place in the
    /// router's bounded queue until it is handled.
    Send {
        message: OutboundMessage,
        permit: OwnedSemaphorePermit,
    },
    /// Decoded envelopes from one peer connection.
    Inbound {
        envelopes: Vec<Envelope>,
        permit: OwnedSemaphorePermit,
    },
}

/// Hands `message` to the node's router without waiting.
pub fn send(context: &NodeContext, message: OutboundMessage) -> Result<(), SendError> {
    let payload_max = context.config.limits.payload_bytes_max;
    if message.payload.len() > payload_max {
        NodeMetrics::count(&context.metrics.counters.refused_payload_too_large);
        return Err(SendError::PayloadTooLarge {
            bytes: message.payload.len(),
            max: payload_max,
        });
    }
    let permit = context.try_reserve_router()?;
    let router = context.router.get().ok_or(SendError::RouterBusy)?;
    router
        .cast(RouterMsg::Send { message, permit })
        .map_err(|_| SendError::RouterBusy)
}

pub struct Router;

impl Actor for Router {
    type Msg = RouterMsg;
    type State = Arc<NodeContext>;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        myself: ActorRef<RouterMsg>,
        context: Arc<NodeContext>,
    ) -> Result<Arc<NodeContext>, ActorProcessingErr> {
        context.router.set(Some(myself));
        Ok(context)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        message: RouterMsg,
        context: &mut Arc<NodeContext>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RouterMsg::Send { message, permit } => {
                let source = message.source_agent.clone();
                let destination = message.destination_agent.clone();
                if let Err(error) = send_envelope(context, message) {
                    answer_refusal(context, &source, destination, error);
                }
                drop(permit);
            }
            RouterMsg::Inbound { envelopes, permit } => {
                receive(context, envelopes);
                drop(permit);
            }
        }
        Ok(())
    }
}

fn send_envelope(context: &NodeContext, message: OutboundMessage) -> Result<(), SendError> {
    let counters = &context.metrics.counters;
    let Some(node) = context.agent_nodes.get(&message.destination_agent) else {
        NodeMetrics::count(&counters.refused_no_route);
        return Err(SendError::NoRoute(message.destination_agent));
    };
    let sequence = {
        let mut memory = context
            .router_memory
            .lock()
            .expect("router memory lock is never poisoned");
        memory.next_sequence += 1;
        memory.next_sequence
    };
    let signed = SignedFields {
        version: crate::protocols::wire::limits::ENVELOPE_VERSION,
        kind: message.kind,
        origin_node: context.node_id.clone(),
        source_agent: message.source_agent,
        destination: Destination::Agent(message.destination_agent),
        sequence,
        ttl: context.config.limits.ttl,
        sent_at_micros: unix_micros(),
        payload: message.payload,
    };
    let envelope = Envelope::sign(signed, &context.key);
    if *node == context.node_id {
        NodeMetrics::count(&counters.envelopes_sent);
        deliver(context, envelope);
        return Ok(());
    }
    let bytes = encode_frame(&Frame::Envelope(envelope));
    let length = bytes.len() as u64;
    context
        .peers
        .try_send(node, (TrafficClass::Data, bytes.into()))
        .inspect_err(|error| {
            let counter = match error {
                SendError::QueueFull(_) => &counters.refused_queue_full,
                _ => &counters.refused_peer_down,
            };
            NodeMetrics::count(counter);
        })?;
    NodeMetrics::count(&counters.envelopes_sent);
    counters
        .frames_sent
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    counters
        .bytes_sent
        .fetch_add(length, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Tells the sending agent, if it still runs, why its message was refused.
fn answer_refusal(context: &NodeContext, source: &str, destination: String, error: SendError) {
    if let Some(agent) = context.agents.get(source) {
        let _ = agent
            .actor
            .cast(AgentMsg::SendFailed { destination, error });
    }
}

fn receive(context: &NodeContext, envelopes: Vec<Envelope>) {
    let counters = &context.metrics.counters;
    let (local, misrouted): (Vec<Envelope>, Vec<Envelope>) = envelopes
        .into_iter()
        .partition(|envelope| is_local(context, envelope));
    for _ in &misrouted {
        NodeMetrics::count(&counters.dropped_misrouted);
    }
    let verdicts = verify_batch(&local, |origin| context.node_keys.get(origin));
    let mut memory = context
        .router_memory
        .lock()
        .expect("router memory lock is never poisoned");
    let mut fresh = Vec::with_capacity(local.len());
    for (envelope, verdict) in local.into_iter().zip(verdicts) {
        match verdict {
            Err(VerifyError::UnknownOrigin(_)) => {
                NodeMetrics::count(&counters.dropped_unknown_origin)
            }
            Err(VerifyError::BadSignature) => NodeMetrics::count(&counters.dropped_bad_signature),
            Ok(()) => {
                let window = memory
                    .windows
                    .entry(envelope.signed.origin_node.clone())
                    .or_default();
                match window.admit(envelope.signed.sequence) {
                    Admission::Fresh => fresh.push(envelope),
                    Admission::Duplicate => NodeMetrics::count(&counters.dropped_duplicate),
                    Admission::TooOld => NodeMetrics::count(&counters.dropped_too_old),
                }
            }
        }
    }
    drop(memory);
    for envelope in fresh {
        deliver(context, envelope);
    }
}

fn is_local(context: &NodeContext, envelope: &Envelope) -> bool {
    match &envelope.signed.destination {
        Destination::Agent(agent) => context.agent_nodes.get(agent) == Some(&context.node_id),
        Destination::Node(node) => *node == context.node_id,
        Destination::Broadcast => false,
    }
}

/// Hands a verified, fresh envelope to its agent's bounded inbox.
fn deliver(context: &NodeContext, envelope: Envelope) {
    let counters = &context.metrics.counters;
    let Destination::Agent(agent) = &envelope.signed.destination else {
        NodeMetrics::count(&counters.dropped_misrouted);
        return;
    };
    let Some(handle) = context.agents.get(agent).map(|entry| entry.clone()) else {
        NodeMetrics::count(&counters.dropped_agent_missing);
        return;
    };
    let Ok(permit) = handle.inbox.clone().try_acquire_owned() else {
        NodeMetrics::count(&counters.dropped_agent_inbox_full);
        return;
    };
    let sent_at_micros = envelope.signed.sent_at_micros;
    if handle
        .actor
        .cast(AgentMsg::Deliver { envelope, permit })
        .is_err()
    {
        NodeMetrics::count(&counters.dropped_agent_missing);
        return;
    }
    NodeMetrics::count(&counters.envelopes_delivered);
    context
        .metrics
        .record_latency(unix_micros().saturating_sub(sent_at_micros));
}
