//! A client of the control plane's API, as `agentmesh kv`, `agentmesh
//! status`, the Raft benchmark and the tests use it. It finds the replicas'
//! client addresses in the cluster config and keeps one connection open to
//! the replica that answered last.
//!
//! A request that a replica cannot serve (no leader, restarting, no answer
//! in time, unreachable) is tried at the next replica, round after round,
//! until one answers or the call's deadline passes. Every try of one write
//! carries the same request id, so the cluster applies it at most once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::actors::client_api::client_codec;
use crate::config::ClusterConfig;
use crate::protocols::cluster_state::RequestId;
use crate::protocols::control::{
    self, ClientReply, ClientRequest, ControlError, Operation, ReplicaStatus,
};

/// How long a connection attempt to one replica may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between rounds over every replica, while an election settles.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the config names no replica with a client_listen address ([control] replicas, and client_listen on their [[nodes]] entries)")]
    NoClientAddress,
    /// No replica served the request before the deadline; says what each
    /// replica answered last.
    #[error("no replica could serve the request within {seconds:.1} s:{}", tries.iter().map(|line| format!("\n  {line}")).collect::<String>())]
    Unavailable { seconds: f64, tries: Vec<String> },
    /// Every replica refused the connection in one round: none is running
    /// (or `client_listen` points elsewhere). The request reached none.
    #[error("no replica is running: every one refused the connection:{}", .0.iter().map(|line| format!("\n  {line}")).collect::<String>())]
    NoneRunning(Vec<String>),
    #[error("{0}")]
    Refused(ControlError),
    #[error("unexpected answer from the replica: {0}")]
    Unexpected(String),
}

pub struct ControlClient {
    replicas: Vec<(String, SocketAddr)>,
    client: u64,
    sequence: u64,
    /// The whole call, over every try.
    deadline: Duration,
    /// The replica that answered last, and the open connection to it.
    current: Option<(
        usize,
        Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    )>,
    preferred: usize,
}

impl ControlClient {
    pub fn from_config(config: &ClusterConfig) -> Result<ControlClient, ClientError> {
        let replicas: Vec<(String, SocketAddr)> = config
            .control
            .replica_nodes()
            .filter_map(|replica| {
                let node = config.nodes.iter().find(|node| node.id == *replica)?;
                Some((replica.clone(), node.client_listen?))
            })
            .collect();
        if replicas.is_empty() {
            return Err(ClientError::NoClientAddress);
        }
        let deadline = Duration::from_millis(config.control.request_timeout_ms * 2);
        Ok(ControlClient {
            replicas,
            client: rand::random(),
            sequence: 0,
            deadline,
            current: None,
            preferred: 0,
        })
    }

    /// A client for calls to agents (`agentmesh call`), through any node
    /// with a `client_listen` address.
    pub fn for_calls(config: &ClusterConfig) -> Result<ControlClient, ClientError> {
        let nodes: Vec<(String, SocketAddr)> = (config.nodes.iter())
            .filter_map(|node| Some((node.id.clone(), node.client_listen?)))
            .collect();
        if nodes.is_empty() {
            return Err(ClientError::NoClientAddress);
        }
        let mut client = ControlClient::from_nodes(nodes);
        client.deadline = Duration::from_millis(config.control.request_timeout_ms * 2);
        Ok(client)
    }

    fn from_nodes(replicas: Vec<(String, SocketAddr)>) -> ControlClient {
        ControlClient {
            replicas,
            client: rand::random(),
            sequence: 0,
            deadline: Duration::from_secs(10),
            current: None,
            preferred: 0,
        }
    }

    /// Asks `agent` with `body`, waiting up to `timeout_ms` for its
    /// response's body.
    pub async fn call_agent(
        &mut self,
        agent: &str,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<Vec<u8>, ClientError> {
        self.deadline = Duration::from_millis(timeout_ms) + Duration::from_secs(2);
        let operation = Operation::CallAgent {
            agent: agent.into(),
            body,
            timeout_ms,
        };
        match self.call(operation).await? {
            ClientReply::Answer(body) => Ok(body),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Gives up a call after `deadline` (default: twice the request timeout).
    pub fn with_deadline(mut self, deadline: Duration) -> ControlClient {
        self.deadline = deadline;
        self
    }

    /// Sends requests to `node` first (the leader, to save a hop).
    pub fn prefer(&mut self, node: &str) {
        if let Some(index) = self.replicas.iter().position(|(name, _)| name == node) {
            self.preferred = index;
        }
    }

    pub async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ClientError> {
        let operation = Operation::Put {
            key: key.into(),
            value,
        };
        match self.call(operation).await? {
            ClientReply::Done => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The value at `key`, or None when it is absent.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(Operation::Get { key: key.into() }).await? {
            ClientReply::Value(value) => Ok(Some(value)),
            ClientReply::NotFound => Ok(None),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Writes `to` under `key` if it holds `from` (or, with
    /// `create_if_missing`, is absent). The reply says which: `Done`,
    /// `NotFound` or `Mismatch`.
    pub async fn compare_and_set(
        &mut self,
        key: &str,
        from: Vec<u8>,
        to: Vec<u8>,
        create_if_missing: bool,
    ) -> Result<ClientReply, ClientError> {
        let operation = Operation::CompareAndSet {
            key: key.into(),
            from,
            to,
            create_if_missing,
        };
        match self.call(operation).await? {
            reply @ (ClientReply::Done | ClientReply::NotFound | ClientReply::Mismatch) => {
                Ok(reply)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Deletes `key`; false when it was absent.
    pub async fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        match self.call(Operation::Delete { key: key.into() }).await? {
            ClientReply::Done => Ok(true),
            ClientReply::NotFound => Ok(false),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Adds `node`'s standby replica to the group as a learner (promoted to
    /// voter by the leader once caught up), or removes it.
    pub async fn change_membership(&mut self, node: &str, add: bool) -> Result<(), ClientError> {
        let node = node.to_string();
        let operation = match add {
            true => Operation::AddReplica { node },
            false => Operation::RemoveReplica { node },
        };
        match self.call(operation).await? {
            ClientReply::Done => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every replica's status, or why it could not be had.
    pub async fn statuses(&mut self) -> Vec<(String, Result<ReplicaStatus, String>)> {
        let mut statuses = Vec::new();
        for index in 0..self.replicas.len() {
            let request = self.request(Operation::Status);
            let status = match self.try_at(index, &request).await {
                Ok(ClientReply::Status(status)) => Ok(status),
                Ok(ClientReply::Failed(error)) => Err(error.to_string()),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(error) => Err(error.reason),
            };
            statuses.push((self.replicas[index].0.clone(), status));
        }
        statuses
    }

    fn request(&mut self, operation: Operation) -> ClientRequest {
        self.sequence += 1;
        ClientRequest {
            request: RequestId {
                client: self.client,
                sequence: self.sequence,
            },
            operation,
        }
    }

    /// Sends one request, trying replica after replica.
    async fn call(&mut self, operation: Operation) -> Result<ClientReply, ClientError> {
        let request = self.request(operation);
        let started = Instant::now();
        let mut tries = vec![String::new(); self.replicas.len()];
        loop {
            // A round in which every replica refused the connection at once
            // says no replica runs: waiting out the deadline would only
            // hide that. (The request reached none, so none applies it.)
            let mut refused_everywhere = true;
            for offset in 0..self.replicas.len() {
                let index = (self.preferred + offset) % self.replicas.len();
                let outcome = match self.try_at(index, &request).await {
                    Ok(ClientReply::Failed(error)) => {
                        refused_everywhere = false;
                        match error {
                            // A failed call is not made again: it may have
                            // reached its agent.
                            ControlError::Invalid(_)
                            | ControlError::Busy { .. }
                            | ControlError::CallFailed(_) => {
                                return Err(ClientError::Refused(error))
                            }
                            retry => retry.to_string(),
                        }
                    }
                    Ok(reply) => {
                        self.preferred = index;
                        return Ok(reply);
                    }
                    Err(error) => {
                        refused_everywhere &= error.connection_refused;
                        error.reason
                    }
                };
                tries[index] = format!("{}: {outcome}", self.replicas[index].0);
                if started.elapsed() >= self.deadline {
                    return Err(ClientError::Unavailable {
                        seconds: started.elapsed().as_secs_f64(),
                        tries: tries.into_iter().filter(|line| !line.is_empty()).collect(),
                    });
                }
            }
            if refused_everywhere {
                return Err(ClientError::NoneRunning(tries));
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }

    /// One request to replica `index`, over the open connection when it is
    /// that replica's. Err: the replica could not be reached or answer.
    async fn try_at(
        &mut self,
        index: usize,
        request: &ClientRequest,
    ) -> Result<ClientReply, TryError> {
        let reusable = matches!(&self.current, Some((open, _)) if *open == index);
        if !reusable {
            self.current = None;
            let address = self.replicas[index].1;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
                .await
                .map_err(|_| {
                    TryError::other(format!(
                        "no connection to {address} within {CONNECT_TIMEOUT:?}"
                    ))
                })?
                .map_err(|error| TryError {
                    connection_refused: error.kind() == std::io::ErrorKind::ConnectionRefused,
                    reason: format!("cannot connect to {address}: {error}"),
                })?;
            let _ = stream.set_nodelay(true);
            self.current = Some((index, Framed::new(stream, client_codec())));
        }
        let (_, framed) = self.current.as_mut().expect("just opened");
        let answer = async {
            framed
                .send(bytes::Bytes::from(control::encode(request)))
                .await
                .map_err(|error| format!("send failed: {error}"))?;
            match framed.next().await {
                Some(Ok(frame)) => {
                    control::decode::<ClientReply>(&frame).map_err(|error| error.to_string())
                }
                Some(Err(error)) => Err(format!("receive failed: {error}")),
                None => Err("the replica closed the connection".to_string()),
            }
        };
        let reply = tokio::time::timeout(self.deadline, answer)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.deadline)));
        if reply.is_err() {
            self.current = None;
        }
        reply.map_err(TryError::other)
    }
}

/// Why one try at one replica failed.
struct TryError {
    reason: String,
    /// Nothing listens there: the connection was refused outright.
    connection_refused: bool,
}

impl TryError {
    fn other(reason: String) -> TryError {
        TryError {
            reason,
            connection_refused: false,
        }
    }
}
