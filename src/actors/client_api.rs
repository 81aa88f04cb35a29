//! The control plane's client API on a replica node: a TCP listener on the
//! node's `client_listen` address (loopback only, as the config enforces:
//! callers are not authenticated), whose connections carry
//! length-delimited [`ClientRequest`] frames, each answered in order by one
//! [`ClientReply`] frame from the node's replica actor.
//!
//! The listener outlives restarts of the replica actor: each request goes
//! to the current incarnation, and while there is none the answer says so.

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

use super::messages::RaftMsg;
use super::shared::NodeShared;

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
pub async fn serve(shared: Arc<NodeShared>, listener: TcpListener, token: CancellationToken) {
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
        let shared = shared.clone();
        let token = token.clone();
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => {}
                        _ = serve_connection(&shared, stream) => {}
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
async fn serve_connection(shared: &NodeShared, stream: TcpStream) {
    let mut framed = Framed::new(stream, client_codec());
    while let Some(Ok(frame)) = framed.next().await {
        let (reply, well_formed) = match control::decode::<ClientRequest>(&frame) {
            Ok(request) => (ask_replica(shared, request).await, true),
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
