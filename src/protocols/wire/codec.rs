//! The byte encoding of everything on the wire: bincode 2.0.1, standard
//! configuration (little-endian, variable-length integers), with a decode
//! limit so a length field can never make a reader allocate more than a
//! frame's worth.
//!
//! Encoding is infallible; decoding is fallible and never panics. A stream
//! starts with a two-byte [`StreamHeader`], then carries length-delimited
//! frames (the length prefix belongs to the transport's framing codec), each
//! frame exactly one encoded [`Frame`] with no bytes left over.

use bincode::config::{self, Configuration, Limit};
use bincode::{Decode, Encode};

use super::envelope::{Envelope, EnvelopeError};
use super::limits::FRAME_BYTES_MAX;
use crate::protocols::delivery::{AckRange, ACK_RANGES_MAX};
use crate::protocols::membership::MemberRecord;

type WireConfig = Configuration<config::LittleEndian, config::Varint, Limit<FRAME_BYTES_MAX>>;

pub(super) const fn wire_config() -> WireConfig {
    config::standard().with_limit::<FRAME_BYTES_MAX>()
}

/// One message on a stream.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Frame {
    /// An envelope travelling toward its destination.
    Envelope(Envelope),
    /// Liveness and link latency, between direct neighbours only. The QUIC
    /// connection authenticates it, so it is not signed.
    Heartbeat(Heartbeat),
    /// Membership records passed between direct neighbours.
    Members(Vec<MemberRecord>),
    /// Part of a Raft message between two control-plane replicas (the QUIC
    /// connection authenticates both ends). A message larger than a frame
    /// is split into parts sent in order on one stream: every part but the
    /// last says `more`.
    Raft(RaftPart),
    /// The overlay the control plane committed, passed from node to node
    /// so nodes without a replica apply it too.
    Overlay(CommittedOverlay),
    /// Part of a PBFT message between two PBFT replicas, split like a
    /// Raft message when larger than a frame.
    Pbft(RaftPart),
}

/// The committed overlay: its epoch, the nodes it leaves out (by index in
/// the sorted node list), and the directory of planned agents (agent by
/// index in the sorted agent list, node by index; empty until the planner
/// commits one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct CommittedOverlay {
    pub epoch: u64,
    pub down: Vec<u16>,
    pub placed: Vec<(u32, u16)>,
}

/// Most nodes one committed overlay may leave out.
pub const OVERLAY_DOWN_MAX: usize = super::limits::NODES_MAX;
/// Most planned agents one committed overlay may place.
pub const OVERLAY_PLACED_MAX: usize = super::limits::PLACED_AGENTS_MAX;
// At five bytes for an index up to u32 and three for a node's, and three
// per node down, the largest committed overlay fits one frame.
const _: () = assert!(OVERLAY_PLACED_MAX * 8 + OVERLAY_DOWN_MAX * 3 + 64 <= FRAME_BYTES_MAX);

/// One part of a protobuf-encoded Raft message.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RaftPart {
    pub more: bool,
    pub bytes: Vec<u8>,
}

/// Bytes of a Raft message carried in one frame.
pub const RAFT_PART_BYTES_MAX: usize = FRAME_BYTES_MAX - 1024;
/// Largest Raft message a replica accepts, in all its parts: room for a
/// snapshot of a full key-value space.
pub const RAFT_MESSAGE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Most membership records in one frame (a larger view is sent in parts).
pub const MEMBER_RECORDS_MAX: usize = 1_024;
/// Most link weights one heartbeat reports.
pub const HEARTBEAT_LINKS_MAX: usize = 1_024;

/// What a node tells each neighbour every heartbeat interval.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Heartbeat {
    /// The sender's incarnation (its boot time, raised to refute rumours).
    pub incarnation: u64,
    /// The sender's clock when sending, microseconds (only the sender
    /// compares it, when it comes back as `echo_micros`).
    pub sent_micros: u64,
    /// The last `sent_micros` received from this neighbour (0: none yet)
    /// and how long it was held here before this heartbeat left, so the
    /// neighbour can compute the round trip.
    pub echo_micros: u64,
    pub held_micros: u64,
    /// Digest of the sender's membership view.
    pub view_digest: u64,
    /// The sender's smoothed round-trip time to each of its neighbours, as
    /// (node index in the sorted node list, microseconds).
    pub links: Vec<(u16, u32)>,
    /// The epoch of the committed overlay the sender applies (0: the base
    /// overlay), so a neighbour with a newer one passes it on.
    pub overlay_epoch: u64,
}

/// The traffic classes, each on its own long-lived unidirectional stream so
/// that bulk data never queues behind control traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TrafficClass {
    Control = 0,
    Data = 1,
    Consensus = 2,
    Bulk = 3,
    /// A stream carrying one chunk of a snapshot transfer
    /// ([`super::transfer`]) instead of frames; never queued as frames, so
    /// not in `ALL`.
    Transfer = 4,
}

impl TrafficClass {
    pub const ALL: [TrafficClass; 4] = [
        TrafficClass::Control,
        TrafficClass::Data,
        TrafficClass::Consensus,
        TrafficClass::Bulk,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The first bytes of every stream: protocol version, then traffic class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    pub class: TrafficClass,
}

/// The stream protocol version this build speaks.
pub const STREAM_VERSION: u8 = 2;

impl StreamHeader {
    pub const BYTES: usize = 2;

    pub fn encode(self) -> [u8; Self::BYTES] {
        [STREAM_VERSION, self.class as u8]
    }

    pub fn decode(bytes: [u8; Self::BYTES]) -> Result<StreamHeader, DecodeError> {
        if bytes[0] != STREAM_VERSION {
            return Err(DecodeError::UnsupportedStreamVersion(bytes[0]));
        }
        let class = match bytes[1] {
            0 => TrafficClass::Control,
            1 => TrafficClass::Data,
            2 => TrafficClass::Consensus,
            3 => TrafficClass::Bulk,
            4 => TrafficClass::Transfer,
            other => return Err(DecodeError::UnknownTrafficClass(other)),
        };
        Ok(StreamHeader { class })
    }
}

/// Why bytes from a peer are not a frame. Every variant means the peer is
/// broken or hostile: a correct peer never sends any of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is longer than FRAME_BYTES_MAX.
    #[error("frame of {0} bytes exceeds {FRAME_BYTES_MAX}")]
    FrameTooLarge(usize),
    /// bincode rejected the bytes: truncated, unknown tag, bad UTF-8, ...
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decoded but bytes were left over.
    #[error("{0} bytes left over after the frame")]
    TrailingBytes(usize),
    /// The frame decoded but its envelope breaks a bound.
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(#[from] EnvelopeError),
    /// The stream header names a version this build does not speak.
    #[error("unsupported stream version {0}")]
    UnsupportedStreamVersion(u8),
    /// The stream header names no known traffic class.
    #[error("unknown traffic class {0}")]
    UnknownTrafficClass(u8),
    /// A control frame carries more entries than its limit.
    #[error("{what}: {count} entries exceed {max}")]
    TooManyEntries {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// Appends the encoding of `value` to `bytes`.
pub(crate) fn encode_into<T: Encode>(value: &T, bytes: &mut Vec<u8>) {
    // Writing to a Vec cannot fail and our types have no fallible Encode.
    bincode::encode_into_std_write(value, bytes, config::standard())
        .expect("encoding into a Vec is infallible");
}

/// Encodes one frame.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    encode_into(frame, &mut bytes);
    debug_assert!(
        bytes.len() <= FRAME_BYTES_MAX,
        "a node must never emit an oversized frame"
    );
    bytes
}

/// Encodes the payload of an acknowledgement envelope.
pub fn encode_acks(ranges: &[AckRange]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ranges.len() * 12);
    encode_into(&ranges.to_vec(), &mut bytes);
    bytes
}

/// Decodes the payload of an acknowledgement envelope.
pub fn decode_acks(bytes: &[u8]) -> Result<Vec<AckRange>, DecodeError> {
    let (ranges, used): (Vec<AckRange>, usize) =
        bincode::decode_from_slice(bytes, wire_config())
            .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    if ranges.len() > ACK_RANGES_MAX {
        return Err(DecodeError::TooManyEntries {
            what: "acknowledged ranges",
            count: ranges.len(),
            max: ACK_RANGES_MAX,
        });
    }
    Ok(ranges)
}

/// Decodes one frame and checks every bound of what it carries.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, DecodeError> {
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(DecodeError::FrameTooLarge(bytes.len()));
    }
    let (frame, used): (Frame, usize) = bincode::decode_from_slice(bytes, wire_config())
        .map_err(|error| DecodeError::Malformed(error.to_string()))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    let too_many = |what, count, max| DecodeError::TooManyEntries { what, count, max };
    match &frame {
        Frame::Envelope(envelope) => envelope.validate()?,
        Frame::Heartbeat(heartbeat) if heartbeat.links.len() > HEARTBEAT_LINKS_MAX => {
            return Err(too_many(
                "heartbeat links",
                heartbeat.links.len(),
                HEARTBEAT_LINKS_MAX,
            ));
        }
        Frame::Members(records) if records.len() > MEMBER_RECORDS_MAX => {
            return Err(too_many(
                "member records",
                records.len(),
                MEMBER_RECORDS_MAX,
            ));
        }
        Frame::Raft(part) if part.bytes.len() > RAFT_PART_BYTES_MAX => {
            return Err(too_many(
                "raft message part bytes",
                part.bytes.len(),
                RAFT_PART_BYTES_MAX,
            ));
        }
        Frame::Overlay(overlay) if overlay.down.len() > OVERLAY_DOWN_MAX => {
            return Err(too_many(
                "overlay nodes down",
                overlay.down.len(),
                OVERLAY_DOWN_MAX,
            ));
        }
        Frame::Overlay(overlay) if overlay.placed.len() > OVERLAY_PLACED_MAX => {
            return Err(too_many(
                "overlay agents placed",
                overlay.placed.len(),
                OVERLAY_PLACED_MAX,
            ));
        }
        Frame::Pbft(part) if part.bytes.len() > RAFT_PART_BYTES_MAX => {
            return Err(too_many(
                "pbft message part bytes",
                part.bytes.len(),
                RAFT_PART_BYTES_MAX,
            ));
        }
        Frame::Heartbeat(_)
        | Frame::Members(_)
        | Frame::Raft(_)
        | Frame::Overlay(_)
        | Frame::Pbft(_) => {}
    }
    Ok(frame)
}

/// A Raft message in the frames that carry it, in order.
pub fn encode_raft_message(message: &raft::eraftpb::Message) -> Vec<Vec<u8>> {
    use protobuf::Message as _;
    let bytes = message
        .write_to_bytes()
        .expect("a Raft message always encodes");
    in_parts(&bytes, Frame::Raft)
}

/// `bytes` cut into parts of at most RAFT_PART_BYTES_MAX, each in the
/// frame `frame` makes of it, in order; every part but the last says
/// `more`.
fn in_parts(bytes: &[u8], frame: fn(RaftPart) -> Frame) -> Vec<Vec<u8>> {
    let count = bytes.len().div_ceil(RAFT_PART_BYTES_MAX).max(1);
    (0..count)
        .map(|index| {
            let start = index * RAFT_PART_BYTES_MAX;
            let end = (start + RAFT_PART_BYTES_MAX).min(bytes.len());
            encode_frame(&frame(RaftPart {
                more: index + 1 < count,
                bytes: bytes[start..end].to_vec(),
            }))
        })
        .collect()
}

/// Decodes a Raft message from its parts' bytes, joined.
pub fn decode_raft_message(bytes: &[u8]) -> Result<raft::eraftpb::Message, DecodeError> {
    use protobuf::Message as _;
    raft::eraftpb::Message::parse_from_bytes(bytes)
        .map_err(|error| DecodeError::Malformed(format!("raft message: {error}")))
}

/// Joins the parts of Raft messages arriving on one stream.
#[derive(Default)]
pub struct RaftAssembler {
    bytes: Vec<u8>,
}

impl RaftAssembler {
    /// Adds a part; returns the whole message once its last part came.
    pub fn add(&mut self, part: RaftPart) -> Result<Option<raft::eraftpb::Message>, DecodeError> {
        if self.bytes.len() + part.bytes.len() > RAFT_MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooManyEntries {
                what: "raft message bytes",
                count: self.bytes.len() + part.bytes.len(),
                max: RAFT_MESSAGE_BYTES_MAX,
            });
        }
        if !part.more && self.bytes.is_empty() {
            return decode_raft_message(&part.bytes).map(Some);
        }
        self.bytes.extend_from_slice(&part.bytes);
        if part.more {
            return Ok(None);
        }
        let message = decode_raft_message(&self.bytes);
        self.bytes = Vec::new();
        message.map(Some)
    }
}

/// Largest PBFT message a replica accepts, in all its parts: a new view
/// carrying full batches, or a state transfer.
pub const PBFT_MESSAGE_BYTES_MAX: usize = crate::protocols::pbft::messages::MESSAGE_BYTES_MAX;

/// A PBFT packet in the frames that carry it, in order.
pub fn encode_pbft_packet(packet: &crate::protocols::pbft::messages::Packet) -> Vec<Vec<u8>> {
    in_parts(
        &crate::protocols::pbft::messages::encode(packet),
        Frame::Pbft,
    )
}

/// Joins the parts of PBFT messages arriving on one stream.
#[derive(Default)]
pub struct PbftAssembler {
    bytes: Vec<u8>,
}

impl PbftAssembler {
    /// Adds a part; returns the whole message once its last part came.
    pub fn add(
        &mut self,
        part: RaftPart,
    ) -> Result<Option<crate::protocols::pbft::messages::Packet>, DecodeError> {
        if self.bytes.len() + part.bytes.len() > PBFT_MESSAGE_BYTES_MAX {
            return Err(DecodeError::TooManyEntries {
                what: "pbft message bytes",
                count: self.bytes.len() + part.bytes.len(),
                max: PBFT_MESSAGE_BYTES_MAX,
            });
        }
        self.bytes.extend_from_slice(&part.bytes);
        if part.more {
            return Ok(None);
        }
        let bytes = std::mem::take(&mut self.bytes);
        crate::protocols::pbft::messages::decode_packet(&bytes)
            .map(Some)
            .map_err(|error| DecodeError::Malformed(format!("pbft message: {error}")))
    }
}
