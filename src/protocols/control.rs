//! The control plane's client protocol: what `agentmesh kv` and
//! `agentmesh status` ask a replica, and what it answers. Each request and
//! each reply is one length-delimited frame holding one bincode value.
//!
//! A write carries a [`RequestId`]; a client that retries after a lost
//! answer sends the same id again, and the cluster state applies it once.

use bincode::config::{self, Configuration, Limit};
use bincode::{Decode, Encode};

use super::cluster_state::{RequestId, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Largest client frame: a maximal value with its key and framing.
pub const CLIENT_FRAME_BYTES_MAX: usize = VALUE_BYTES_MAX + KEY_BYTES_MAX + 1024;

type ClientConfig =
    Configuration<config::LittleEndian, config::Varint, Limit<CLIENT_FRAME_BYTES_MAX>>;

const fn client_config() -> ClientConfig {
    config::standard().with_limit::<CLIENT_FRAME_BYTES_MAX>()
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Operation {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Get {
        key: String,
    },
    Delete {
        key: String,
    },
    /// Writes `to` under `key` if it holds `from` now (or, with
    /// `create_if_missing`, if it is not there).
    CompareAndSet {
        key: String,
        from: Vec<u8>,
        to: Vec<u8>,
        create_if_missing: bool,
    },
    Status,
    /// Add the standby replica of `node` as a learner; the leader promotes
    /// it to voter once it has caught up.
    AddReplica {
        node: String,
    },
    /// Remove the replica of `node` from the group (voter or learner).
    RemoveReplica {
        node: String,
    },
    /// Ask agent `agent` (anywhere in the cluster) with `body` as a
    /// request, waiting up to `timeout_ms` for its response: served by the
    /// node that takes the connection, not by a replica.
    CallAgent {
        agent: String,
        body: Vec<u8>,
        timeout_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClientRequest {
    pub request: RequestId,
    pub operation: Operation,
}

// One reply lives per request and is dropped once sent; a status is asked
// for once per `agentmesh status`, so its size costs nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ClientReply {
    /// The write is committed and applied.
    Done,
    /// The key is not in the key-value space (get, delete,
    /// compare-and-set).
    NotFound,
    /// A compare-and-set found its key holding something other than
    /// `from`; nothing changed.
    Mismatch,
    Value(Vec<u8>),
    Status(ReplicaStatus),
    Failed(ControlError),
    /// An agent's response to [`Operation::CallAgent`].
    Answer(Vec<u8>),
}

/// Why a request failed. Every one leaves the state as it was, except
/// [`ControlError::Timeout`] of a write, which may or may not have taken
/// effect (retrying with the same request id applies it at most once).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum ControlError {
    /// The replica knows no leader: fewer than a majority of the replicas
    /// can reach each other, or an election is under way.
    /// `withheld` says why this replica may not vote, when it may not
    /// (empty otherwise): a group whose replicas are all connected but
    /// withhold their votes elects no leader either.
    #[error("no leader in term {term} (replica {replica} sees {reachable} of {replicas} replicas connected{withheld}); a majority must be up, connected and allowed to vote")]
    NoLeader {
        replica: String,
        term: u64,
        reachable: usize,
        replicas: usize,
        withheld: String,
    },
    /// No answer within the request timeout.
    #[error("no answer within {ms} ms (no quorum, or the leader changed); a write may still take effect")]
    Timeout { ms: u64 },
    /// The replica holds as many requests as it may.
    #[error("replica busy: {pending_max} requests already wait")]
    Busy { pending_max: usize },
    /// The request breaks a limit or is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Another membership change is under way (one at a time), or the
    /// leader asked to remove itself is handing over first.
    #[error("a membership change or a leadership hand-over is under way; try again shortly")]
    ChangePending,
    /// The node answering holds no replica (or it is restarting).
    #[error("node {0} has no running control-plane replica")]
    NoReplica(String),
    /// A call to an agent got no response: refused on its way, or none
    /// within its timeout.
    #[error("the call failed: {0}")]
    CallFailed(String),
}

/// What one replica knows of the group.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct ReplicaStatus {
    pub node: String,
    pub id: u64,
    /// leader, follower, candidate or pre-candidate.
    pub role: String,
    /// The leader's node, if known.
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The last index in the log.
    pub last_index: u64,
    /// Index of the latest snapshot.
    pub snapshot_index: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub overlay_epoch: u64,
    /// The nodes the committed overlay leaves out.
    pub overlay_down: Vec<String>,
    /// Planned agents the committed directory places, and the first
    /// STATUS_PLACEMENTS_MAX of them as (agent, node), by agent name.
    pub placed_agents: u64,
    pub placements: Vec<(String, String)>,
    pub keys: u64,
    pub fsync: bool,
    /// Whether it may vote (`Voting`'s words), and why not when it may not.
    pub voting: String,
    pub voting_reason: String,
    /// Requests for its vote it left unanswered since it started.
    pub votes_withheld: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientCodecError {
    #[error("malformed control frame: {0}")]
    Malformed(String),
    #[error("{0} bytes left over after the control frame")]
    TrailingBytes(usize),
}

/// Most placements a status lists (the count covers them all), so a
/// status stays well inside a client frame.
pub const STATUS_PLACEMENTS_MAX: usize = 1_000;

pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, config::standard()).expect("encoding into a Vec is infallible")
}

pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, ClientCodecError> {
    let (value, used) = bincode::decode_from_slice(bytes, client_config())
        .map_err(|error| ClientCodecError::Malformed(error.to_string()))?;
    if used != bytes.len() {
        return Err(ClientCodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_garbage_is_refused() {
        let request = ClientRequest {
            request: RequestId {
                client: 9,
                sequence: 3,
            },
            operation: Operation::Put {
                key: "k".into(),
                value: b"v".to_vec(),
            },
        };
        assert_eq!(decode::<ClientRequest>(&encode(&request)).unwrap(), request);
        let reply = ClientReply::Failed(ControlError::Timeout { ms: 5 });
        assert_eq!(decode::<ClientReply>(&encode(&reply)).unwrap(), reply);
        assert!(decode::<ClientRequest>(&[0xff; 7]).is_err());
        let mut padded = encode(&request);
        padded.push(0);
        assert!(matches!(
            decode::<ClientRequest>(&padded),
            Err(ClientCodecError::TrailingBytes(1))
        ));
    }
}
