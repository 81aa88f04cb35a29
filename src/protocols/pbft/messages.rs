//! What PBFT replicas and clients send each other, how it is signed, and
//! the checks a message must pass before the protocol looks at it.
//!
//! Every replica message is a [`Signed`]: the sender, the view it is in, a
//! [`Body`], and an Ed25519 signature over all three (domain-separated),
//! so a message can be shown to a third replica as proof (prepared
//! certificates and checkpoint proofs inside view changes). Client
//! requests are signed by the client's own key, which is also its
//! identity. Signing and checking go through [`Keys`], so the simulation
//! can use a cheap deterministic stand-in.

use bincode::{Decode, Encode};

/// A replica's place in the group, 0 to n - 1.
pub type ReplicaId = u32;
pub type Signature = [u8; 64];
pub type Digest = [u8; 32];
/// A client's public key: its identity.
pub type ClientKey = [u8; 32];

/// The digest of an empty batch, which a new primary proposes for a
/// sequence number no view change certificate prepared.
pub const NULL_DIGEST: Digest = [0; 32];

/// Longest key and value an operation may carry, in bytes.
pub const KEY_BYTES_MAX: usize = 256;
pub const VALUE_BYTES_MAX: usize = 64 * 1024;
/// Most requests in one batch.
pub const BATCH_REQUESTS_MAX: usize = 1_024;

const SIGNING_DOMAIN: &[u8] = b"agentmesh/pbft/v1\0";
const REQUEST_DOMAIN: &[u8] = b"agentmesh/pbft-request/v1\0";

/// Who signed something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    Replica(ReplicaId),
    Client(ClientKey),
}

/// Signing with this replica's key, and checking others' signatures.
pub trait Keys {
    fn sign(&self, bytes: &[u8]) -> Signature;
    fn verify(&self, signer: Signer, bytes: &[u8], signature: &Signature) -> bool;
    /// Checks many at once; the verdicts in order. Implementations may
    /// batch (Ed25519 batch verification); by default each is checked.
    fn verify_all(&self, items: &[(Signer, Vec<u8>, Signature)]) -> Vec<bool> {
        items
            .iter()
            .map(|(signer, bytes, signature)| self.verify(*signer, bytes, signature))
            .collect()
    }
}

/// What a client asks the replicated state machine to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Operation {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Get {
        key: String,
    },
    /// Sets `key` to `value` only if it has no value: of concurrent claims
    /// on one key, the one ordered first wins and the others learn who.
    Claim {
        key: String,
        value: Vec<u8>,
    },
    /// Appends `entry` to the decision log named `log`.
    Decide {
        log: String,
        entry: Vec<u8>,
    },
}

/// What executing an operation gave.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum OperationResult {
    Done,
    Value(Option<Vec<u8>>),
    /// A claim: whether this one won, and the value the key holds now.
    Claimed {
        won: bool,
        holder: Vec<u8>,
    },
    /// A decision: its place in its log.
    Decided {
        index: u64,
    },
}

/// A client's request, signed with its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Request {
    pub client: ClientKey,
    /// The client's own counter: a replica executes a client's requests in
    /// increasing timestamps, each once.
    pub timestamp: u64,
    pub operation: Operation,
    pub signature: Signature,
}

impl Request {
    /// Who sent it and when: one request per client and timestamp.
    pub fn key(&self) -> (ClientKey, u64) {
        (self.client, self.timestamp)
    }

    pub fn signing_bytes(client: &ClientKey, timestamp: u64, operation: &Operation) -> Vec<u8> {
        let mut bytes = REQUEST_DOMAIN.to_vec();
        bytes.extend_from_slice(client);
        bytes.extend_from_slice(&timestamp.to_le_bytes());
        bytes.extend(encode(operation));
        bytes
    }

    /// A request signed by `keys` as the client `client`.
    pub fn new(
        client: ClientKey,
        timestamp: u64,
        operation: Operation,
        keys: &dyn Keys,
    ) -> Request {
        let signature = keys.sign(&Request::signing_bytes(&client, timestamp, &operation));
        Request {
            client,
            timestamp,
            operation,
            signature,
        }
    }

    pub fn own_signing_bytes(&self) -> Vec<u8> {
        Request::signing_bytes(&self.client, self.timestamp, &self.operation)
    }

    /// Checks the bounds of the operation (not the signature).
    pub fn check(&self) -> Result<(), MessageError> {
        let (key, value) = match &self.operation {
            Operation::Put { key, value } | Operation::Claim { key, value } => (key, value.len()),
            Operation::Get { key } => (key, 0),
            Operation::Decide { log, entry } => (log, entry.len()),
        };
        if key.len() > KEY_BYTES_MAX {
            return Err(MessageError::Invalid(format!(
                "key of {} bytes; at most {KEY_BYTES_MAX}",
                key.len()
            )));
        }
        if value > VALUE_BYTES_MAX {
            return Err(MessageError::Invalid(format!(
                "value of {value} bytes; at most {VALUE_BYTES_MAX}"
            )));
        }
        Ok(())
    }
}

/// A prepared certificate: a pre-prepare and 2f matching prepares.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PreparedProof {
    pub pre_prepare: Signed,
    pub prepares: Vec<Signed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    PrePrepare {
        sequence: u64,
        digest: Digest,
        batch: Vec<Request>,
    },
    Prepare {
        sequence: u64,
        digest: Digest,
    },
    Commit {
        sequence: u64,
        digest: Digest,
    },
    Checkpoint {
        sequence: u64,
        state: Digest,
    },
    /// The sender moves to view `Signed::view`: its stable checkpoint with
    /// 2f + 1 signatures, and every certificate it prepared above it.
    ViewChange {
        checkpoint: u64,
        checkpoint_state: Digest,
        checkpoint_proof: Vec<Signed>,
        prepared: Vec<PreparedProof>,
    },
    /// The primary of `Signed::view` starts it: 2f + 1 view changes, and
    /// the pre-prepares they determine.
    NewView {
        view_changes: Vec<Signed>,
        pre_prepares: Vec<Signed>,
    },
    /// Sent every retransmit interval: how far the sender executed, so
    /// replicas ahead of it send it what it misses.
    Status {
        executed: u64,
    },
    /// The state at a stable checkpoint, for a replica left behind.
    FetchState {
        sequence: u64,
    },
    State {
        sequence: u64,
        state: Vec<u8>,
    },
    /// To a client: what its request gave.
    Reply {
        client: ClientKey,
        timestamp: u64,
        result: OperationResult,
    },
}

/// A replica's signed message.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Signed {
    pub from: ReplicaId,
    /// The view the sender is in (for a view change: the view it moves to).
    pub view: u64,
    pub body: Body,
    pub signature: Signature,
}

impl Signed {
    pub fn signing_bytes(from: ReplicaId, view: u64, body: &Body) -> Vec<u8> {
        let mut bytes = SIGNING_DOMAIN.to_vec();
        bytes.extend_from_slice(&from.to_le_bytes());
        bytes.extend_from_slice(&view.to_le_bytes());
        bytes.extend(encode(body));
        bytes
    }

    pub fn new(from: ReplicaId, view: u64, body: Body, keys: &dyn Keys) -> Signed {
        let signature = keys.sign(&Signed::signing_bytes(from, view, &body));
        Signed {
            from,
            view,
            body,
            signature,
        }
    }

    pub fn own_signing_bytes(&self) -> Vec<u8> {
        Signed::signing_bytes(self.from, self.view, &self.body)
    }

    pub fn verified(&self, keys: &dyn Keys) -> bool {
        keys.verify(
            Signer::Replica(self.from),
            &self.own_signing_bytes(),
            &self.signature,
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("bad signature from {0:?}")]
    BadSignature(Signer),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Bytes one message may decode from, at most: lengths inside a message
/// cannot make a replica allocate more.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MESSAGE_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MESSAGE_BYTES_MAX>()
}

/// What crosses between two replicas: a replica's message, or a client's
/// request passed on to the primary.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Packet {
    Message(Signed),
    Request(Request),
}

pub fn decode_packet(bytes: &[u8]) -> Result<Packet, MessageError> {
    let (packet, used): (Packet, usize) = bincode::decode_from_slice(bytes, config())
        .map_err(|error| MessageError::Malformed(error.to_string()))?;
    if used != bytes.len() {
        return Err(MessageError::Malformed("trailing bytes".into()));
    }
    Ok(packet)
}

pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, config()).expect("messages encode into memory")
}

/// Decodes a replica message of at most `bytes_max` bytes.
pub fn decode_signed(bytes: &[u8], bytes_max: usize) -> Result<Signed, MessageError> {
    if bytes.len() > bytes_max {
        return Err(MessageError::Malformed(format!(
            "{} bytes; at most {bytes_max}",
            bytes.len()
        )));
    }
    let (message, used): (Signed, usize) = bincode::decode_from_slice(bytes, config())
        .map_err(|error| MessageError::Malformed(error.to_string()))?;
    if used != bytes.len() {
        return Err(MessageError::Malformed("trailing bytes".into()));
    }
    Ok(message)
}

/// SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> Digest {
    let hash = ring::digest::digest(&ring::digest::SHA256, bytes);
    hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The digest a batch is ordered under; an empty batch has NULL_DIGEST.
pub fn batch_digest(batch: &[Request]) -> Digest {
    if batch.is_empty() {
        return NULL_DIGEST;
    }
    digest_of(&encode(&batch.to_vec()))
}
