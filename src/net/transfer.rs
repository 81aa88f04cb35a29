//! Snapshot transfers on the wire: the sending side opens a stream per
//! chunk and writes it without copying; the receiving side reads each
//! stream into place and returns the whole snapshot for the replica. The
//! format and its checks are pure, in [`crate::protocols::wire::transfer`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use quinn::Connection;
use raft::eraftpb::Message;

use crate::protocols::wire::transfer::{
    chunk_range, decode_transfer_header, encode_transfer_header, split_snapshot, streams_for,
    TransferHeader, Transfers, TRANSFER_HEAD_BYTES_MAX,
};
use crate::protocols::wire::{StreamHeader, TrafficClass};

/// Numbers this process's transfers, so a receiver tells them apart.
static NEXT_TRANSFER: AtomicU64 = AtomicU64::new(1);

/// Largest piece read from a stream at once.
const READ_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// Sends a snapshot message on `connection`, its data cut into chunks on
/// streams of their own, all at once. Returns once every stream is
/// written (not when it arrived: the follower's answer says that).
pub async fn send_snapshot(connection: Connection, message: Message) -> Result<(), String> {
    let (head, data) = split_snapshot(message);
    let total = data.len() as u64;
    let streams = streams_for(total);
    let transfer = NEXT_TRANSFER.fetch_add(1, Ordering::Relaxed);
    let writes = (0..streams).map(|index| {
        let range = chunk_range(total, streams, index);
        let chunk = data.slice(range.start as usize..range.end as usize);
        let header = TransferHeader {
            transfer,
            index,
            streams,
            total,
            head: head.clone(),
        };
        let connection = connection.clone();
        async move {
            let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
            let class = TrafficClass::Transfer;
            let mut start = StreamHeader { class }.encode().to_vec();
            start.extend_from_slice(&encode_transfer_header(&header));
            stream.write_all(&start).await.map_err(|e| e.to_string())?;
            stream.write_chunk(chunk).await.map_err(|e| e.to_string())?;
            stream.finish().map_err(|e| e.to_string())
        }
    });
    futures::future::try_join_all(writes).await.map(|_| ())
}

/// Reads one transfer stream (its stream header already read) into the
/// connection's `transfers`, and returns the snapshot when this stream
/// brought its last chunk. Returns `Err` when the peer sent
/// something malformed; a stream that merely breaks off abandons its
/// transfer (the leader sends the snapshot again).
pub async fn read_transfer(
    mut stream: quinn::RecvStream,
    transfers: &Mutex<Transfers>,
) -> Result<Option<Message>, String> {
    let mut length = [0u8; 4];
    if stream.read_exact(&mut length).await.is_err() {
        return Ok(None);
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > TRANSFER_HEAD_BYTES_MAX + 64 {
        return Err(format!("transfer header of {length} bytes"));
    }
    let mut header = vec![0u8; length];
    if stream.read_exact(&mut header).await.is_err() {
        return Ok(None);
    }
    let header = decode_transfer_header(&header).map_err(|error| error.to_string())?;
    let (transfer, index) = (header.transfer, header.index);
    let range = lock(transfers)
        .open(header)
        .map_err(|error| error.to_string())?;
    let mut offset = range.start;
    while offset < range.end {
        let left = (range.end - offset) as usize;
        match stream
            .read_chunk(left.min(READ_CHUNK_BYTES_MAX), true)
            .await
        {
            Ok(Some(chunk)) => {
                lock(transfers).fill(transfer, offset, &chunk.bytes);
                offset += chunk.bytes.len() as u64;
            }
            Ok(None) | Err(_) => {
                lock(transfers).abandon(transfer);
                return Ok(None);
            }
        }
    }
    // The chunk is complete: the stream must end here.
    match stream.read_chunk(1, true).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err("a transfer stream ran past its chunk".into()),
        Err(_) => {
            lock(transfers).abandon(transfer);
            return Ok(None);
        }
    }
    lock(transfers)
        .complete(transfer, index)
        .map_err(|error| error.to_string())
}

fn lock(transfers: &Mutex<Transfers>) -> std::sync::MutexGuard<'_, Transfers> {
    transfers.lock().expect("transfers lock is never poisoned")
}
