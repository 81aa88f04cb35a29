//! A client of the PBFT group, in the replicas' process: it sends each
//! request to the primary it believes in, to every replica when no answer
//! comes within its timeout (again and again until its deadline), and
//! accepts a result once f + 1 replicas give the same one, so no f
//! faulty replicas can make it accept a wrong one.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::mpsc;

use crate::actors::messages::{ClientEvent, PbftMsg};
use crate::actors::node::NodeParts;
use crate::protocols::pbft::keys::Ed25519Keys;
use crate::protocols::pbft::{ClientKey, Operation, OperationResult, ReplicaId, Request};

/// Answers a client's channel holds before replicas' answers are dropped.
const EVENTS_MAX: usize = 1_024;

/// Where each replica of the group runs now, by replica id. It holds the
/// nodes weakly, so a stopped node's endpoint (and its address) is let go,
/// and whoever restarts a node puts the new one in its place.
#[derive(Debug)]
pub struct ReplicaSet {
    nodes: RwLock<Vec<Weak<NodeParts>>>,
}

impl ReplicaSet {
    /// The replicas running on `nodes`, in replica order.
    pub fn new(nodes: &[Arc<NodeParts>]) -> Arc<ReplicaSet> {
        Arc::new(ReplicaSet {
            nodes: RwLock::new(nodes.iter().map(Arc::downgrade).collect()),
        })
    }

    pub fn len(&self) -> usize {
        self.nodes.read().expect("never poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replica `replica` now runs on `node`.
    pub fn replace(&self, replica: usize, node: &Arc<NodeParts>) {
        self.nodes.write().expect("never poisoned")[replica] = Arc::downgrade(node);
    }

    /// Hands `message` to replica `replica`, if its node and actor run.
    fn cast(&self, replica: usize, message: PbftMsg) {
        let node = self.nodes.read().expect("never poisoned")[replica].upgrade();
        if let Some(actor) = node.and_then(|node| node.shared.mailboxes.pbft.get()) {
            let _ = actor.cast(message);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PbftClientError {
    #[error(
        "no f + 1 = {needed} replicas agreed on a result within {waited:?}; answers: {answers}"
    )]
    Timeout {
        needed: usize,
        waited: Duration,
        answers: String,
    },
    #[error("f + 1 replicas refused the request: {0}")]
    Refused(String),
}

pub struct PbftClient {
    replicas: Arc<ReplicaSet>,
    keys: Ed25519Keys,
    key: ClientKey,
    timestamp: u64,
    faults: usize,
    view: u64,
    /// How long it waits for f + 1 answers before asking every replica.
    pub retry_after: Duration,
    /// How long a call may take in all.
    pub deadline: Duration,
    sender: mpsc::Sender<ClientEvent>,
    events: mpsc::Receiver<ClientEvent>,
}

impl PbftClient {
    /// A client with key `signing` of the group whose replicas run on
    /// `replicas` (in replica order).
    pub fn new(
        replicas: Arc<ReplicaSet>,
        signing: SigningKey,
        retry_after: Duration,
    ) -> PbftClient {
        let faults = replicas.len().saturating_sub(1) / 3;
        let key = signing.verifying_key().to_bytes();
        let (sender, events) = mpsc::channel(EVENTS_MAX);
        PbftClient {
            replicas,
            keys: Ed25519Keys::new(signing, Vec::new()),
            key,
            timestamp: 0,
            faults,
            view: 0,
            retry_after,
            deadline: retry_after * 20,
            sender,
            events,
        }
    }

    /// Has the group execute `operation`; its result once f + 1 agree.
    pub async fn call(&mut self, operation: Operation) -> Result<OperationResult, PbftClientError> {
        self.timestamp += 1;
        let request = Request::new(self.key, self.timestamp, operation, &self.keys);
        let primary = (self.view % self.replicas.len() as u64) as usize;
        self.send(primary, &request);
        let started = Instant::now();
        let mut answers: BTreeMap<ReplicaId, (u64, OperationResult)> = BTreeMap::new();
        let mut refusals: BTreeMap<ReplicaId, String> = BTreeMap::new();
        let mut retry_at = started + self.retry_after;
        loop {
            let now = Instant::now();
            if now >= started + self.deadline {
                return Err(self.timed_out(started, &answers));
            }
            if now >= retry_at {
                for replica in 0..self.replicas.len() {
                    self.send(replica, &request);
                }
                retry_at = now + self.retry_after;
            }
            let wait = retry_at.min(started + self.deadline) - now;
            match tokio::time::timeout(wait, self.events.recv()).await {
                Ok(Some(ClientEvent::Reply(reply))) if reply.timestamp == self.timestamp => {
                    answers.insert(reply.replica, (reply.view, reply.result));
                    if let Some((view, result)) = self.agreed(&answers) {
                        self.view = self.view.max(view);
                        return Ok(result);
                    }
                }
                Ok(Some(ClientEvent::Refused { replica, reason })) => {
                    refusals.insert(replica, reason);
                    if refusals.len() > self.faults {
                        let reasons: Vec<String> = refusals.values().cloned().collect();
                        return Err(PbftClientError::Refused(reasons.join("; ")));
                    }
                }
                Ok(Some(ClientEvent::Reply(_))) | Err(_) => {}
                Ok(None) => unreachable!("the client holds a sender"),
            }
        }
    }

    /// The result f + 1 replicas gave, with the highest view among them.
    fn agreed(
        &self,
        answers: &BTreeMap<ReplicaId, (u64, OperationResult)>,
    ) -> Option<(u64, OperationResult)> {
        answers.values().find_map(|(_, result)| {
            let agreeing: Vec<u64> = answers
                .values()
                .filter(|(_, other)| other == result)
                .map(|(view, _)| *view)
                .collect();
            (agreeing.len() > self.faults)
                .then(|| (agreeing.into_iter().max().unwrap_or(0), result.clone()))
        })
    }

    fn timed_out(
        &self,
        started: Instant,
        answers: &BTreeMap<ReplicaId, (u64, OperationResult)>,
    ) -> PbftClientError {
        let answers = if answers.is_empty() {
            "none".to_string()
        } else {
            answers
                .iter()
                .map(|(replica, (_, result))| format!("replica {replica}: {result:?}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        PbftClientError::Timeout {
            needed: self.faults + 1,
            waited: started.elapsed(),
            answers,
        }
    }

    fn send(&self, replica: usize, request: &Request) {
        let message = PbftMsg::Request {
            request: request.clone(),
            replies: self.sender.clone(),
        };
        self.replicas.cast(replica, message);
    }
}
