//! Agents' asks of the control plane ([`crate::agent_api::control`]),
//! carried for agent actors and process agents alike.
//!
//! An agent on a node holding a replica asks that replica. An agent
//! elsewhere sends its ask as a [`Frame::Control`] to the call desk of a
//! replica's node (`call@<node>`), which asks its replica and sends the
//! answer back as a [`Frame::ControlAnswer`]. Either way the ask carries a
//! request id (a random client per incarnation, a sequence per ask), so
//! the cluster state applies a write once; and it waits at most the
//! control plane's request timeout and a grace, then is answered
//! [`ControlError::Indeterminate`]. An agent whose ask found no replica
//! able to serve it asks the next replica's desk next time.

use std::collections::HashSet;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;

use crate::agent_api::control::{ControlAnswer, ControlAsk, ControlError, ControlOutcome};
use crate::agent_api::frame::Frame;
use crate::agent_api::ControlTicket;
use crate::metrics::NodeMetrics;
use crate::protocols::cluster_state::{RequestId, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::protocols::control::{self, ClientReply, ClientRequest, Operation};
use crate::protocols::mesh::roster::desk_of;
use crate::protocols::mesh::SendError;
use crate::protocols::wire::EnvelopeKind;

use super::data_path::DataPath;
use super::messages::{AgentMsg, OutboundMessage, RaftMsg};
use super::router;
use super::shared::NodeShared;

/// What an ask needs of the node: its shared core and its data path.
pub type NodeRefs<'a> = (&'a NodeShared, &'a DataPath);

/// Asks one agent may have waiting for answers; more are refused at once
/// (`agent_control_asks_refused`).
pub const CONTROL_ASKS_MAX: usize = 1_024;
/// Asks a desk serves at once for agents on other nodes; more are
/// answered unavailable (`agent_control_asks_refused`).
pub const DESK_ASKS_MAX: usize = 4_096;
/// How much longer than the control plane's request timeout an ask waits
/// before it is answered indeterminate: enough for the desk's own answer
/// to travel back.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// One agent incarnation's asks under way.
pub struct ControlAsks {
    /// This incarnation's client id: random, so that a restarted agent
    /// never repeats an earlier incarnation's request ids.
    client: u64,
    sequence: u64,
    waiting: HashSet<u64>,
    /// Which replica's desk an agent on a node without one asks next.
    turn: usize,
}

impl ControlAsks {
    /// No asks yet, for agent `name` (whose name spreads the agents of a
    /// node over the replicas).
    pub fn new(name: &str) -> ControlAsks {
        ControlAsks {
            client: rand::random(),
            sequence: 0,
            waiting: HashSet::new(),
            turn: crate::protocols::stable_hash(name) as usize,
        }
    }

    /// Carries `ask` for agent `source`; its answer comes to `myself` as
    /// [`AgentMsg::ControlAnswered`] (or [`AgentMsg::ControlTimedOut`]).
    pub fn ask(
        &mut self,
        parts: NodeRefs<'_>,
        source: &str,
        myself: &ActorRef<AgentMsg>,
        ask: ControlAsk,
    ) -> Result<u64, ControlError> {
        check(&ask)?;
        let counters = &parts.0.metrics.counters;
        if self.waiting.len() >= CONTROL_ASKS_MAX {
            NodeMetrics::count(&counters.agent_control_asks_refused);
            let reason = format!("{CONTROL_ASKS_MAX} asks of agent {source} wait already");
            return Err(ControlError::Unavailable(reason));
        }
        let request = RequestId {
            client: self.client,
            sequence: self.sequence + 1,
        };
        let timeout_ms = parts.0.config.control.request_timeout_ms;
        if let Some(replica) = parts.0.mailboxes.replica.get() {
            let myself = myself.clone();
            tokio::spawn(async move {
                let outcome = ask_replica(replica, request, ask, timeout_ms).await;
                let _ = myself.cast(AgentMsg::ControlAnswered {
                    client: request.client,
                    sequence: request.sequence,
                    outcome,
                });
            });
        } else {
            let desk = self.desk(parts)?;
            let frame = Frame::Control {
                client: request.client,
                sequence: request.sequence,
                ask,
            };
            let sent = send_frame(parts, source, &desk, frame, EnvelopeKind::Data);
            if let Err(error) = sent {
                self.turn = self.turn.wrapping_add(1);
                return Err(refusal(error));
            }
        }
        self.sequence = request.sequence;
        self.waiting.insert(request.sequence);
        let after = Duration::from_millis(timeout_ms) + ANSWER_GRACE;
        let sequence = request.sequence;
        myself.send_after(after, move || AgentMsg::ControlTimedOut(sequence));
        Ok(sequence)
    }

    /// The desk an agent on this node (which holds no replica) asks: the
    /// replicas' nodes in turn, skipping those whose link is down.
    fn desk(&self, parts: NodeRefs<'_>) -> Result<String, ControlError> {
        let shared = parts.0;
        let replicas = &shared.config.control.replicas;
        if replicas.is_empty() {
            let reason = "the cluster has no control plane ([control] replicas is empty)";
            return Err(ControlError::Unavailable(reason.into()));
        }
        let connected = (0..replicas.len())
            .map(|offset| &replicas[(self.turn + offset) % replicas.len()])
            .find(|node| shared.peers.is_connected(node));
        let node = connected.unwrap_or(&replicas[self.turn % replicas.len()]);
        Ok(desk_of(node))
    }

    /// The ticket and outcome of an answer, if its ask still waits (not
    /// when it came too late, or is meant for an earlier incarnation).
    pub fn answered(
        &mut self,
        client: u64,
        sequence: u64,
        outcome: ControlOutcome,
    ) -> Option<(ControlTicket, ControlOutcome)> {
        if client != self.client || !self.waiting.remove(&sequence) {
            return None;
        }
        if matches!(
            outcome,
            Err(ControlError::Unavailable(_) | ControlError::Indeterminate(_))
        ) {
            self.turn = self.turn.wrapping_add(1);
        }
        Some((ControlTicket(sequence), outcome))
    }

    /// The ticket and outcome of ask `sequence` that waited too long, if
    /// it still waits.
    pub fn timed_out(
        &mut self,
        sequence: u64,
        timeout_ms: u64,
    ) -> Option<(ControlTicket, ControlOutcome)> {
        let ms = timeout_ms + ANSWER_GRACE.as_millis() as u64;
        let outcome = Err(ControlError::Indeterminate(format!("no answer in {ms} ms")));
        self.answered(self.client, sequence, outcome)
    }
}

/// Refuses an ask that breaks the cluster state's limits before it goes.
fn check(ask: &ControlAsk) -> Result<(), ControlError> {
    let key = ask.key().len();
    if key > KEY_BYTES_MAX {
        let reason = format!("a key of {key} bytes; keys are at most {KEY_BYTES_MAX}");
        return Err(ControlError::Invalid(reason));
    }
    let value = match ask {
        ControlAsk::Read { .. } => 0,
        ControlAsk::Write { value, .. } => value.len(),
        ControlAsk::CompareAndSet { from, to, .. } => from.len().max(to.len()),
    };
    if value > VALUE_BYTES_MAX {
        let reason = format!("a value of {value} bytes; values are at most {VALUE_BYTES_MAX}");
        return Err(ControlError::Invalid(reason));
    }
    Ok(())
}

/// An ask that could not leave this node changed nothing.
fn refusal(error: SendError) -> ControlError {
    match error {
        SendError::PayloadTooLarge { .. } => ControlError::Invalid(error.to_string()),
        error => ControlError::Unavailable(format!("cannot reach a replica's desk: {error}")),
    }
}

/// Sends `frame` from `source` to `to` through the router.
fn send_frame(
    parts: NodeRefs<'_>,
    source: &str,
    to: &str,
    frame: Frame,
    kind: EnvelopeKind,
) -> Result<(), SendError> {
    let message = OutboundMessage {
        source_agent: source.to_string(),
        destination_agent: to.to_string(),
        kind,
        payload: frame.encode(),
        receipt: None,
    };
    router::send(parts.0, parts.1, message)
}

/// Serves, at desk `desk`, the ask of agent `from` on another node: its
/// answer comes to `myself` as [`AgentMsg::ControlServed`]. Refused (and
/// answered at once) when `serving` asks are under way already or the
/// node holds no replica.
pub fn serve(
    parts: NodeRefs<'_>,
    desk: &str,
    myself: &ActorRef<AgentMsg>,
    serving: usize,
    (from, client, sequence, ask): (String, u64, u64, ControlAsk),
) -> bool {
    let refuse = |reason: String| {
        let outcome = Err(ControlError::Unavailable(reason));
        answer(parts, desk, &from, (client, sequence, outcome));
        false
    };
    let Some(replica) = parts.0.mailboxes.replica.get() else {
        let node = &parts.0.node_id;
        return refuse(format!("node {node} runs no replica now"));
    };
    if serving >= DESK_ASKS_MAX {
        NodeMetrics::count(&parts.0.metrics.counters.agent_control_asks_refused);
        return refuse(format!("{desk} serves {DESK_ASKS_MAX} asks already"));
    }
    let timeout_ms = parts.0.config.control.request_timeout_ms;
    let myself = myself.clone();
    tokio::spawn(async move {
        let request = RequestId { client, sequence };
        let outcome = ask_replica(replica, request, ask, timeout_ms).await;
        let served = AgentMsg::ControlServed {
            to: from,
            client,
            sequence,
            outcome,
        };
        let _ = myself.cast(served);
    });
    true
}

/// Sends a desk's answer back to the agent that asked.
pub fn answer(
    parts: NodeRefs<'_>,
    desk: &str,
    to: &str,
    (client, sequence, outcome): (u64, u64, ControlOutcome),
) {
    let frame = Frame::ControlAnswer {
        client,
        sequence,
        outcome,
    };
    if let Err(error) = send_frame(parts, desk, to, frame, EnvelopeKind::Reply) {
        // The asker times out and is answered indeterminate.
        tracing::debug!(%desk, %to, %error, "a control answer not sent");
    }
}

/// Asks the node's replica, waiting at most its request timeout and a
/// second.
async fn ask_replica(
    replica: ActorRef<RaftMsg>,
    request: RequestId,
    ask: ControlAsk,
    timeout_ms: u64,
) -> ControlOutcome {
    let writes = ask.writes();
    let request = ClientRequest {
        request,
        operation: operation_of(ask),
    };
    let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(1);
    let call = replica
        .call(|reply| RaftMsg::Client { request, reply }, Some(wait))
        .await;
    let stopped = "the replica stopped before it answered";
    match call {
        Ok(CallResult::Success(reply)) => outcome_of(reply),
        Ok(CallResult::Timeout) => Err(ControlError::Indeterminate(format!(
            "no answer from the replica in {} ms",
            wait.as_millis()
        ))),
        // The replica took the ask and dropped it: a write may be in its log.
        Ok(CallResult::SenderError) if writes => Err(ControlError::Indeterminate(stopped.into())),
        Ok(CallResult::SenderError) => Err(ControlError::Unavailable(stopped.into())),
        // The ask never reached the replica.
        Err(_) => Err(ControlError::Unavailable(
            "the replica is not running".into(),
        )),
    }
}

fn operation_of(ask: ControlAsk) -> Operation {
    match ask {
        ControlAsk::Read { key } => Operation::Get { key },
        ControlAsk::Write { key, value } => Operation::Put { key, value },
        ControlAsk::CompareAndSet {
            key,
            from,
            to,
            create_if_missing,
        } => Operation::CompareAndSet {
            key,
            from,
            to,
            create_if_missing,
        },
    }
}

/// What a replica's reply means to the agent that asked.
fn outcome_of(reply: ClientReply) -> ControlOutcome {
    match reply {
        ClientReply::Done => Ok(ControlAnswer::Written),
        ClientReply::NotFound => Ok(ControlAnswer::NotFound),
        ClientReply::Mismatch => Ok(ControlAnswer::Mismatch),
        ClientReply::Value(value) => Ok(ControlAnswer::Value(value)),
        ClientReply::Failed(error @ control::ControlError::Timeout { .. }) => {
            Err(ControlError::Indeterminate(error.to_string()))
        }
        ClientReply::Failed(control::ControlError::Invalid(reason)) => {
            Err(ControlError::Invalid(reason))
        }
        ClientReply::Failed(error) => Err(ControlError::Unavailable(error.to_string())),
        ClientReply::Status(_) | ClientReply::Answer(_) => Err(ControlError::Unavailable(
            "the replica answered something else".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_timeout_leaves_a_write_unknown() {
        let timeout = ClientReply::Failed(control::ControlError::Timeout { ms: 5 });
        assert!(matches!(
            outcome_of(timeout),
            Err(ControlError::Indeterminate(_))
        ));
        let busy = ClientReply::Failed(control::ControlError::Busy { pending_max: 1 });
        assert!(matches!(
            outcome_of(busy),
            Err(ControlError::Unavailable(_))
        ));
        assert_eq!(outcome_of(ClientReply::Done), Ok(ControlAnswer::Written));
        assert_eq!(
            outcome_of(ClientReply::Mismatch),
            Ok(ControlAnswer::Mismatch)
        );
    }

    #[test]
    fn asks_beyond_the_state_limits_are_refused_before_they_go() {
        let long_key = ControlAsk::Read {
            key: "k".repeat(KEY_BYTES_MAX + 1),
        };
        assert!(matches!(check(&long_key), Err(ControlError::Invalid(_))));
        let long_value = ControlAsk::CompareAndSet {
            key: "k".into(),
            from: vec![],
            to: vec![0; VALUE_BYTES_MAX + 1],
            create_if_missing: false,
        };
        assert!(matches!(check(&long_value), Err(ControlError::Invalid(_))));
        let fine = ControlAsk::Write {
            key: "k".into(),
            value: vec![1],
        };
        assert_eq!(check(&fine), Ok(()));
    }
}
