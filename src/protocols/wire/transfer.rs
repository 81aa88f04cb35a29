//! Snapshot transfers: a Raft snapshot travels beside the frame streams, on
//! streams of its own, several at once when it is large.
//!
//! The sender takes the snapshot's data out of the message, so what is
//! left (the head: metadata and membership) is small, and cuts the data
//! into `streams` equal chunks. Stream `index` carries a
//! [`TransferHeader`] (length-prefixed bincode) and then exactly chunk
//! `index`'s bytes, raw: no frame encoding and no copy on the way out. The
//! receiver ([`Transfers`], one per connection) copies each stream's bytes
//! into place in one buffer and hands the message on when every chunk has
//! come. Chunks are fixed by `total` and `streams`, so no two streams can
//! claim the same bytes.
//!
//! A large snapshot no longer queues in front of a peer's heartbeats and
//! votes, and it skips the frame codec's copies on both ends.

use std::collections::BTreeMap;
use std::ops::Range;

use bincode::{Decode, Encode};
use bytes::Bytes;
use raft::eraftpb::{Message, MessageType};

use super::codec::{decode_raft_message, wire_config, DecodeError, RAFT_MESSAGE_BYTES_MAX};

/// Most streams one transfer uses.
pub const TRANSFER_STREAMS_MAX: u32 = 4;
/// Bytes one stream carries before another stream is used. Each stream
/// has its own flow-control window, so on a link with a long round trip
/// several streams carry more than one.
pub const TRANSFER_STREAM_BYTES: u64 = 4 * 1024 * 1024;
/// Longest header (the message without its data) a transfer may have.
pub const TRANSFER_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Transfers a connection may have in progress; a newer one displaces the
/// oldest (its sender gave up on it and sends it again).
pub const TRANSFERS_IN_PROGRESS_MAX: usize = 2;

/// What opens each stream of a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TransferHeader {
    /// Distinguishes this transfer from the sender's others.
    pub transfer: u64,
    /// Which chunk this stream carries.
    pub index: u32,
    pub streams: u32,
    /// Bytes of the whole snapshot data.
    pub total: u64,
    /// The protobuf-encoded Raft message, its snapshot data left out.
    pub head: Vec<u8>,
}

/// How many streams a snapshot of `total` bytes goes on.
pub fn streams_for(total: u64) -> u32 {
    let streams = total.div_ceil(TRANSFER_STREAM_BYTES).max(1);
    streams.min(u64::from(TRANSFER_STREAMS_MAX)) as u32
}

/// The bytes of the data that chunk `index` of `streams` carries.
pub fn chunk_range(total: u64, streams: u32, index: u32) -> Range<u64> {
    let chunk = total.div_ceil(u64::from(streams.max(1)));
    let start = (chunk * u64::from(index)).min(total);
    start..(start + chunk).min(total)
}

/// Splits a snapshot message into its head (the message without data,
/// encoded) and its data.
pub fn split_snapshot(mut message: Message) -> (Vec<u8>, Bytes) {
    use protobuf::Message as _;
    let data = message.mut_snapshot().take_data();
    let head = message
        .write_to_bytes()
        .expect("a Raft message always encodes");
    (head, data)
}

/// The header's bytes on the stream: a 4-byte big-endian length, then the
/// header.
pub fn encode_transfer_header(header: &TransferHeader) -> Vec<u8> {
    let body = bincode::encode_to_vec(header, wire_config()).expect("headers encode");
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes and checks a header (the bytes after its length prefix).
pub fn decode_transfer_header(bytes: &[u8]) -> Result<TransferHeader, DecodeError> {
    let (header, used): (TransferHeader, usize) = bincode::decode_from_slice(bytes, wire_config())
        .map_err(|error| DecodeError::Malformed(format!("transfer header: {error}")))?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    let bad = |reason: String| Err(DecodeError::Malformed(format!("transfer header: {reason}")));
    if header.streams == 0 || header.streams > TRANSFER_STREAMS_MAX {
        return bad(format!("{} streams", header.streams));
    }
    if header.index >= header.streams {
        return bad(format!("chunk {} of {}", header.index, header.streams));
    }
    if header.total > RAFT_MESSAGE_BYTES_MAX as u64 {
        return bad(format!(
            "{} bytes exceed {RAFT_MESSAGE_BYTES_MAX}",
            header.total
        ));
    }
    if header.head.len() > TRANSFER_HEAD_BYTES_MAX {
        return bad(format!("head of {} bytes", header.head.len()));
    }
    Ok(header)
}

/// One transfer being received.
struct Transfer {
    streams: u32,
    total: u64,
    head: Vec<u8>,
    data: Vec<u8>,
    /// Chunks opened by a stream, and chunks complete, as bit sets.
    opened: u64,
    complete: u64,
}

/// The transfers one connection is receiving.
#[derive(Default)]
pub struct Transfers {
    active: BTreeMap<u64, Transfer>,
}

impl Transfers {
    /// A stream of `header`'s transfer opened: returns the bytes it must
    /// bring. A stream that disagrees with its transfer's other streams, or
    /// claims a chunk already claimed, is malformed.
    pub fn open(&mut self, header: TransferHeader) -> Result<Range<u64>, DecodeError> {
        let bad = |reason: &str| Err(DecodeError::Malformed(format!("transfer: {reason}")));
        if !self.active.contains_key(&header.transfer) {
            while self.active.len() >= TRANSFERS_IN_PROGRESS_MAX {
                self.active.pop_first();
            }
            let transfer = Transfer {
                streams: header.streams,
                total: header.total,
                head: header.head.clone(),
                data: vec![0; header.total as usize],
                opened: 0,
                complete: 0,
            };
            self.active.insert(header.transfer, transfer);
        }
        let transfer = self
            .active
            .get_mut(&header.transfer)
            .expect("inserted above");
        if transfer.streams != header.streams
            || transfer.total != header.total
            || transfer.head != header.head
        {
            return bad("streams of one transfer disagree");
        }
        let bit = 1u64 << header.index;
        if transfer.opened & bit != 0 {
            return bad("a chunk came twice");
        }
        transfer.opened |= bit;
        Ok(chunk_range(header.total, header.streams, header.index))
    }

    /// Copies bytes a stream brought to `offset` of its transfer's data.
    /// The stream's reader keeps within its chunk; a transfer displaced
    /// meanwhile takes nothing.
    pub fn fill(&mut self, transfer: u64, offset: u64, bytes: &[u8]) {
        if let Some(transfer) = self.active.get_mut(&transfer) {
            let start = offset as usize;
            transfer.data[start..start + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Chunk `index` of `transfer` is complete; returns the whole message
    /// when it was the last.
    pub fn complete(&mut self, transfer: u64, index: u32) -> Result<Option<Message>, DecodeError> {
        let Some(entry) = self.active.get_mut(&transfer) else {
            return Ok(None);
        };
        entry.complete |= 1u64 << index;
        if entry.complete.count_ones() < entry.streams {
            return Ok(None);
        }
        let entry = self.active.remove(&transfer).expect("looked up above");
        let mut message = decode_raft_message(&entry.head)?;
        if message.get_msg_type() != MessageType::MsgSnapshot {
            let kind = message.get_msg_type();
            return Err(DecodeError::Malformed(format!(
                "transfer of a {kind:?}, not a snapshot"
            )));
        }
        message.mut_snapshot().set_data(Bytes::from(entry.data));
        Ok(Some(message))
    }

    /// A stream broke off: its transfer cannot complete.
    pub fn abandon(&mut self, transfer: u64) {
        self.active.remove(&transfer);
    }

    pub fn in_progress(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_message(data: Vec<u8>) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.to = 2;
        message.from = 1;
        message.mut_snapshot().mut_metadata().index = 77;
        message.mut_snapshot().set_data(Bytes::from(data));
        message
    }

    /// Sends `message` through a Transfers table as its streams would,
    /// chunks in the order `order` gives.
    fn carry(message: Message, order: &[u32]) -> Option<Message> {
        let (head, data) = split_snapshot(message);
        let total = data.len() as u64;
        let streams = streams_for(total);
        let mut transfers = Transfers::default();
        let mut whole = None;
        for &index in order.iter().filter(|&&index| index < streams) {
            let header = TransferHeader {
                transfer: 9,
                index,
                streams,
                total,
                head: head.clone(),
            };
            let wire = encode_transfer_header(&header);
            let header = decode_transfer_header(&wire[4..]).unwrap();
            let range = transfers.open(header).unwrap();
            let bytes = &data[range.start as usize..range.end as usize];
            for (step, piece) in bytes.chunks(1_000_003).enumerate() {
                let offset = range.start + (step * 1_000_003) as u64;
                transfers.fill(9, offset, piece);
            }
            whole = transfers.complete(9, index).unwrap();
        }
        whole
    }

    #[test]
    fn a_large_snapshot_crosses_on_several_streams_in_any_order() {
        let data: Vec<u8> = (0..40_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let streams = streams_for(data.len() as u64);
        assert_eq!(streams, TRANSFER_STREAMS_MAX, "4 MiB a stream, at most 4");
        let whole = carry(snapshot_message(data.clone()), &[2, 0, 3, 1]).expect("complete");
        assert_eq!(whole.get_snapshot().get_data(), &data[..]);
        assert_eq!(whole.get_snapshot().get_metadata().index, 77);
        assert_eq!((whole.from, whole.to), (1, 2));
        let small = carry(snapshot_message(b"tiny".to_vec()), &[0]).expect("one stream");
        assert_eq!(small.get_snapshot().get_data(), b"tiny");
        let empty = carry(snapshot_message(Vec::new()), &[0]).expect("no data at all");
        assert!(empty.get_snapshot().get_data().is_empty());
    }

    #[test]
    fn chunks_cover_the_data_once() {
        for total in [0u64, 1, 5, 16 << 20, (64 << 20) + 3, 512 << 20] {
            let streams = streams_for(total);
            let mut next = 0;
            for index in 0..streams {
                let range = chunk_range(total, streams, index);
                assert_eq!(range.start, next, "{total} bytes, chunk {index}");
                next = range.end;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn hostile_headers_and_streams_are_refused() {
        let header = |index, streams, total| TransferHeader {
            transfer: 1,
            index,
            streams,
            total,
            head: Vec::new(),
        };
        let refused = |header: &TransferHeader| {
            let wire = encode_transfer_header(header);
            decode_transfer_header(&wire[4..]).is_err()
        };
        assert!(refused(&header(0, 0, 10)), "no streams");
        assert!(refused(&header(4, 4, 10)), "chunk past the last");
        assert!(refused(&header(0, TRANSFER_STREAMS_MAX + 1, 10)));
        assert!(refused(&header(0, 1, RAFT_MESSAGE_BYTES_MAX as u64 + 1)));
        let mut transfers = Transfers::default();
        transfers.open(header(0, 2, 10)).unwrap();
        assert!(transfers.open(header(0, 2, 10)).is_err(), "chunk twice");
        assert!(transfers.open(header(1, 3, 10)).is_err(), "disagrees");
        for transfer in 2..10 {
            let mut other = header(0, 1, 10);
            other.transfer = transfer;
            transfers.open(other).unwrap();
        }
        assert_eq!(transfers.in_progress(), TRANSFERS_IN_PROGRESS_MAX);
        let mut not_snapshot = header(0, 1, 0);
        not_snapshot.transfer = 20;
        not_snapshot.head = {
            use protobuf::Message as _;
            Message::default().write_to_bytes().unwrap()
        };
        transfers.open(not_snapshot).unwrap();
        assert!(
            transfers.complete(20, 0).is_err(),
            "an append, not a snapshot"
        );
    }
}
