//! The envelope: the authenticated unit a router carries from origin to
//! destination.
//!
//! The origin node authenticates every field except the hop count and the
//! path, which routers change on the way, in one of two ways
//! ([`Authenticator`]): sealed with a MAC under the [`PairKey`] it shares
//! with the destination node (the default, [`Authentication::PairKey`]:
//! about a microsecond each way), or signed with its Ed25519 key
//! ([`Authentication::Signature`]: tens of microseconds, but anyone holding
//! the cluster config can check it later). Either way no transit router
//! can forge or alter an envelope unnoticed, and its destination checks it
//! alone before admitting the sequence number through its duplicate
//! window. Acknowledgements are always sealed. Sealing, signing and
//! checking are pure functions of keys and bytes; this module never
//! touches a clock or a socket.

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use super::codec;
use super::limits::{NAME_BYTES_MAX, PATH_NODES_MAX, PAYLOAD_BYTES_MAX, TTL_MAX};
use super::pair_key::{PairKey, MAC_BYTES};

/// Domain separation: a signature over an envelope can never be mistaken for
/// a signature over anything else this node signs.
const SIGNING_CONTEXT: &[u8] = b"agentmesh/envelope/v1\0";

/// How a node authenticates the data envelopes it originates (the
/// `[delivery] authentication` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authentication {
    /// A MAC under the origin and destination nodes' pair key: proves the
    /// envelope to its destination, and to no one else.
    #[default]
    PairKey,
    /// The origin's Ed25519 signature: also proves it to any third party.
    Signature,
}

/// What proves an envelope came unchanged from its origin node.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Authenticator {
    /// The origin's Ed25519 signature over the signed fields.
    Signature([u8; 64]),
    /// HMAC-SHA256 of the signed fields under the pair key of the origin
    /// and destination nodes.
    Seal([u8; MAC_BYTES]),
    /// None: the envelope never leaves its node. Refused from a peer.
    Local,
}

/// Where an envelope is going.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Destination {
    /// One agent, by its cluster-unique name.
    Agent(String),
    /// A node itself (control traffic), by node id.
    Node(String),
    /// Every agent in the cluster.
    Broadcast,
    /// A planned agent on the node the sender's directory placed it on:
    /// every hop routes to that node whatever its own directory says, so
    /// the envelope is numbered, delivered and acknowledged by one node
    /// even while a new directory is still spreading.
    Placed { agent: String, node: String },
}

impl Destination {
    /// The agent an envelope is for, if it is for one.
    pub fn agent(&self) -> Option<&str> {
        match self {
            Destination::Agent(agent) | Destination::Placed { agent, .. } => Some(agent),
            Destination::Node(_) | Destination::Broadcast => None,
        }
    }
}

/// What an envelope means to its receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EnvelopeKind {
    /// Application data from one agent to another.
    Data,
    /// An answer to a `Data` envelope; never answered itself.
    Reply,
    /// End-to-end acknowledgement from a destination node to an origin
    /// node: the payload lists the sequence numbers its agents consumed.
    /// Never acknowledged itself, and idempotent, so it has no sequence.
    /// Always sealed with the two nodes' pair key.
    Ack,
}

impl EnvelopeKind {
    /// Every kind, for tests and exhaustive reports.
    pub const ALL: [EnvelopeKind; 3] = [EnvelopeKind::Data, EnvelopeKind::Reply, EnvelopeKind::Ack];
}

/// The fields the origin node authenticates.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SignedFields {
    pub version: u8,
    pub kind: EnvelopeKind,
    /// Node whose key authenticates this envelope.
    pub origin_node: String,
    pub source_agent: String,
    pub destination: Destination,
    /// Per-origin-node sequence number; the duplicate window keys on it.
    pub sequence: u64,
    /// Most hops this envelope may travel.
    pub ttl: u8,
    /// Origin's wall clock at signing, microseconds since the Unix epoch.
    pub sent_at_micros: u64,
    pub payload: Vec<u8>,
}

/// An authenticated envelope as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Envelope {
    pub signed: SignedFields,
    /// Hops travelled so far; not authenticated because every router
    /// raises it.
    pub hop_count: u8,
    /// The route, as node indices in the cluster's sorted node list, from
    /// the origin (`path[0]`) to the destination; `path[hop_count]` is the
    /// node holding the envelope. Not authenticated: routers may re-route.
    pub path: Vec<u16>,
    pub authenticator: Authenticator,
}

/// Why an envelope failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The origin node is not one the cluster config lists.
    #[error("envelope from unknown origin node {0:?}")]
    UnknownOrigin(String),
    /// The signature or seal does not match the fields and the origin's
    /// key, or is of a kind this envelope may not carry.
    #[error("envelope signature or seal does not verify")]
    BadSignature,
}

/// Why a decoded envelope is not acceptable even though its bytes parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A different, unsupported envelope format.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// A node or agent name is empty or longer than NAME_BYTES_MAX.
    #[error("{field} is {bytes} bytes; names are 1 to {NAME_BYTES_MAX} bytes")]
    BadName { field: &'static str, bytes: usize },
    /// The payload is longer than PAYLOAD_BYTES_MAX.
    #[error("payload of {0} bytes exceeds {PAYLOAD_BYTES_MAX}")]
    PayloadTooLarge(usize),
    /// TTL is zero or above TTL_MAX.
    #[error("ttl {0} is outside 1..={TTL_MAX}")]
    BadTtl(u8),
    /// The envelope has travelled more hops than its TTL allows.
    #[error("hop count {hop_count} exceeds ttl {ttl}")]
    HopCountExceedsTtl { hop_count: u8, ttl: u8 },
    /// The path is longer than TTL_MAX + 1 nodes.
    #[error("path of {0} nodes exceeds {PATH_NODES_MAX}")]
    PathTooLong(usize),
}

impl SignedFields {
    /// The exact bytes the origin signs or seals.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SIGNING_CONTEXT.len() + 128 + self.payload.len());
        bytes.extend_from_slice(SIGNING_CONTEXT);
        codec::encode_into(self, &mut bytes);
        bytes
    }

    /// Checks every bound a well-behaved origin respects.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.version != super::limits::ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(self.version));
        }
        check_name("origin_node", &self.origin_node)?;
        check_name("source_agent", &self.source_agent)?;
        match &self.destination {
            Destination::Agent(name) => check_name("destination agent", name)?,
            Destination::Node(name) => check_name("destination node", name)?,
            Destination::Placed { agent, node } => {
                check_name("destination agent", agent)?;
                check_name("destination node", node)?;
            }
            Destination::Broadcast => {}
        }
        if self.payload.len() > PAYLOAD_BYTES_MAX {
            return Err(EnvelopeError::PayloadTooLarge(self.payload.len()));
        }
        if self.ttl == 0 || self.ttl > TTL_MAX {
            return Err(EnvelopeError::BadTtl(self.ttl));
        }
        Ok(())
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), EnvelopeError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(EnvelopeError::BadName {
            field,
            bytes: name.len(),
        });
    }
    Ok(())
}

impl Envelope {
    /// Signs `signed` with the origin node's key. The fields must be valid:
    /// a node never emits what its peers would refuse.
    pub fn sign(signed: SignedFields, key: &SigningKey) -> Envelope {
        debug_assert_eq!(signed.validate(), Ok(()));
        let signature = key.sign(&signed.signing_bytes()).to_bytes();
        Envelope::starting(signed, Authenticator::Signature(signature))
    }

    /// Seals `signed` for the one node that shares `key` with its origin.
    pub fn seal(signed: SignedFields, key: &PairKey) -> Envelope {
        debug_assert_eq!(signed.validate(), Ok(()));
        let tag = key.mac(&signed.signing_bytes());
        Envelope::starting(signed, Authenticator::Seal(tag))
    }

    /// An envelope that never leaves its origin node.
    pub fn local(signed: SignedFields) -> Envelope {
        Envelope::starting(signed, Authenticator::Local)
    }

    fn starting(signed: SignedFields, authenticator: Authenticator) -> Envelope {
        Envelope {
            signed,
            hop_count: 0,
            path: Vec::new(),
            authenticator,
        }
    }

    /// Checks the fields' bounds and that hops have not outrun the TTL.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        self.signed.validate()?;
        if self.path.len() > PATH_NODES_MAX {
            return Err(EnvelopeError::PathTooLong(self.path.len()));
        }
        if self.hop_count > self.signed.ttl {
            return Err(EnvelopeError::HopCountExceedsTtl {
                hop_count: self.hop_count,
                ttl: self.signed.ttl,
            });
        }
        Ok(())
    }

    /// Verifies the origin's signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), VerifyError> {
        let Authenticator::Signature(signature) = &self.authenticator else {
            return Err(VerifyError::BadSignature);
        };
        let signature = Signature::from_bytes(signature);
        key.verify(&self.signed.signing_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// Checks the MAC [`Envelope::seal`] made with `key`.
    pub fn check_seal(&self, key: &PairKey) -> Result<(), VerifyError> {
        match &self.authenticator {
            Authenticator::Seal(tag) if key.check(&self.signed.signing_bytes(), tag) => Ok(()),
            _ => Err(VerifyError::BadSignature),
        }
    }
}

/// What a receiving node knows to authenticate envelopes from `origin`.
pub trait OriginKeys {
    /// The origin's public key, if the cluster has such a node.
    fn verifying_key(&self, origin: &str) -> Option<&VerifyingKey>;
    /// The key this node shares with the origin, if the cluster has it.
    fn pair_key(&self, origin: &str) -> Option<std::sync::Arc<PairKey>>;
}

/// Authenticates envelopes from peers for this node: sealed ones by their
/// MAC, signed ones as one batch, which costs about half as much per
/// envelope as one by one. An acknowledgement must be sealed, and nothing
/// from a peer may be [`Authenticator::Local`]. Returns one result per
/// envelope, in order.
pub fn authenticate(
    envelopes: &[Envelope],
    keys: &impl OriginKeys,
) -> Vec<Result<(), VerifyError>> {
    let unknown =
        |envelope: &Envelope| VerifyError::UnknownOrigin(envelope.signed.origin_node.clone());
    let mut results = Vec::with_capacity(envelopes.len());
    let mut signed = Vec::with_capacity(envelopes.len());
    for (index, envelope) in envelopes.iter().enumerate() {
        let is_ack = envelope.signed.kind == EnvelopeKind::Ack;
        match &envelope.authenticator {
            Authenticator::Seal(_) => {
                let sealed = keys.pair_key(&envelope.signed.origin_node);
                results.push(match sealed {
                    Some(key) => envelope.check_seal(&key),
                    None => Err(unknown(envelope)),
                });
            }
            Authenticator::Signature(_) if !is_ack => {
                results.push(Ok(()));
                signed.push(index);
            }
            Authenticator::Signature(_) | Authenticator::Local => {
                results.push(Err(VerifyError::BadSignature));
            }
        }
    }
    let batch: Vec<&Envelope> = signed.iter().map(|&index| &envelopes[index]).collect();
    let verdicts = verify_batch(&batch, |origin| keys.verifying_key(origin));
    for (index, verdict) in signed.into_iter().zip(verdicts) {
        results[index] = verdict;
    }
    results
}

/// Verifies many envelopes at once, which costs about half as much per
/// envelope as one by one. Returns one result per envelope, in order.
/// `key_of` maps an origin node to its key; `None` means unknown. An
/// envelope that is not signed fails.
pub fn verify_batch<'k>(
    envelopes: &[&Envelope],
    key_of: impl Fn(&str) -> Option<&'k VerifyingKey>,
) -> Vec<Result<(), VerifyError>> {
    let mut results: Vec<Result<(), VerifyError>> = Vec::with_capacity(envelopes.len());
    let mut messages = Vec::with_capacity(envelopes.len());
    let mut signatures = Vec::with_capacity(envelopes.len());
    let mut keys = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let Authenticator::Signature(signature) = &envelope.authenticator else {
            results.push(Err(VerifyError::BadSignature));
            continue;
        };
        match key_of(&envelope.signed.origin_node) {
            Some(key) => {
                results.push(Ok(()));
                messages.push(envelope.signed.signing_bytes());
                signatures.push(Signature::from_bytes(signature));
                keys.push(*key);
            }
            None => {
                let origin = envelope.signed.origin_node.clone();
                results.push(Err(VerifyError::UnknownOrigin(origin)));
            }
        }
    }
    let message_slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    if keys.is_empty() {
        return results;
    }
    if keys.len() > 1 && ed25519_dalek::verify_batch(&message_slices, &signatures, &keys).is_ok() {
        return results;
    }
    // One envelope (a batch of one costs more than a single check), or a
    // batch holding a bad signature: check one by one.
    let mut known = 0;
    for (index, envelope) in envelopes.iter().enumerate() {
        if results[index].is_err() {
            continue;
        }
        let verified = keys[known].verify(message_slices[known], &signatures[known]);
        if verified.is_err() {
            results[index] = Err(VerifyError::BadSignature);
        }
        debug_assert_eq!(
            envelope.authenticator,
            Authenticator::Signature(signatures[known].to_bytes())
        );
        known += 1;
    }
    results
}
