//! The client API of a node: a TCP listener on the node's `client_listen`
//! address (loopback only, as the config enforces: callers are not
//! authenticated), whose connections carry length-delimited
//! [`ClientRequest`] frames, each answered in order by one [`ClientReply`]
//! frame: from the node's control-plane replica, or, for a call to an
//! agent (`agentmesh call`), from the node's call desk (`call@<node>`, an
//! agent the agent supervisor runs on every node that serves clients).
//!
//! The listener outlives restarts of the replica actor and the desk: each
//! request goes to the current incarnation, and while there is none the
//! answer says so.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ractor::rpc::CallResult;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::protocols::control::{
    self, ClientReply, ClientRequest, ControlError, CLIENT_FRAME_BYTES_MAX,
};

use crate::protocols::control::Operation;
use crate::protocols::mesh::roster::desk_of;

use super::data_path::DataPath;
use super::messages::{AgentMsg, RaftMsg};
use super::shared::NodeShared;

/// The longest a call may wait for its agent's response.
pub const CALL_TIMEOUT_MS_MAX: u64 = 60_000;

/// Client connections served at once; more are answered busy and closed.
const CLIENT_CONNECTIONS_MAX: usize = 1_024;
/// How much longer than the replica's own request timeout the API waits
/// for the replica's answer before it answers the timeout itself.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The framing of client connections, for servers and clients alike.
pub fn client_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(CLIENT_FRAME_BYTES_MAX)
        .new_codec()
}

/// Accepts client connections until `token` is cancelled.
pub async fn serve(
    (shared, data_path): (Arc<NodeShared>, Arc<DataPath>),
    listener: TcpListener,
    token: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(CLIENT_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let node = (shared.clone(), data_path.clone());
        let token = token.clone();
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => {}
                        _ = serve_connection(&node, stream) => {}
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut framed = Framed::new(stream, client_codec());
                    let busy = ClientReply::Failed(ControlError::Busy {
                        pending_max: CLIENT_CONNECTIONS_MAX,
                    });
                    let _ = framed
                        .send(bytes::Bytes::from(control::encode(&busy)))
                        .await;
                });
            }
        }
    }
}

/// Answers one connection's requests in order until it closes or sends
/// something that is not a request.
async fn serve_connection(node: &(Arc<NodeShared>, Arc<DataPath>), stream: TcpStream) {
    let mut framed = Framed::new(stream, client_codec());
    while let Some(Ok(frame)) = framed.next().await {
        let (reply, well_formed) = match control::decode::<ClientRequest>(&frame) {
            Ok(ClientRequest {
                operation:
                    Operation::CallAgent {
                        agent,
                        body,
                        timeout_ms,
                    },
                ..
            }) => (call_agent(node, agent, body, timeout_ms).await, true),
            Ok(request) => (ask_replica(&node.0, request).await, true),
            Err(error) => (
                ClientReply::Failed(ControlError::Invalid(error.to_string())),
                false,
            ),
        };
        if framed
            .send(bytes::Bytes::from(control::encode(&reply)))
            .await
            .is_err()
            || !well_formed
        {
            return;
        }
    }
}

/// Asks `agent` through this node's call desk and answers with its
/// response.
async fn call_agent(
    (shared, data_path): &(Arc<NodeShared>, Arc<DataPath>),
    agent: String,
    body: Vec<u8>,
    timeout_ms: u64,
) -> ClientReply {
    let failed = |reason: String| ClientReply::Failed(ControlError::CallFailed(reason));
    if !(1..=CALL_TIMEOUT_MS_MAX).contains(&timeout_ms) {
        let reason = format!("a timeout of {timeout_ms} ms: give 1 to {CALL_TIMEOUT_MS_MAX}");
        return ClientReply::Failed(ControlError::Invalid(reason));
    }
    let desk = desk_of(&shared.node_id);
    let Some(handle) = data_path.agents.get(&desk).map(|entry| entry.actor.clone()) else {
        return failed(format!(
            "node {}'s call desk is not running (yet)",
            shared.node_id
        ));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let call = AgentMsg::Call {
        to: agent,
        body,
        timeout_ms,
        reply,
    };
    if handle.cast(call).is_err() {
        return failed(format!("node {}'s call desk stopped", shared.node_id));
    }
    match answer.await {
        Ok(Ok(body)) => ClientReply::Answer(body),
        Ok(Err(reason)) => failed(reason),
        Err(_) => failed(format!(
            "node {}'s call desk stopped before the answer",
            shared.node_id
        )),
    }
}

async fn ask_replica(shared: &NodeShared, request: ClientRequest) -> ClientReply {
    let no_replica = || ClientReply::Failed(ControlError::NoReplica(shared.node_id.clone()));
    let Some(replica) = shared.mailboxes.replica.get() else {
        return no_replica();
    };
    let timeout_ms = shared.config.control.request_timeout_ms;
    let wait = Duration::from_millis(timeout_ms) + ANSWER_GRACE;
    match replica
        .call(|reply| RaftMsg::Client { request, reply }, Some(wait))
        .await
    {
        Ok(CallResult::Success(reply)) => reply,
        Ok(CallResult::Timeout) => ClientReply::Failed(ControlError::Timeout { ms: timeout_ms }),
        // The replica stopped (or restarted) before it answered.
        Ok(CallResult::SenderError) | Err(_) => no_replica(),
    }
}
