//! QUIC for one node: the endpoint's transport parameters and TLS
//! configs, the close codes that tell a peer why, the rule that picks one
//! dialer per pair, and a link's framing: length-delimited frames on one
//! long-lived unidirectional stream per traffic class, written from the
//! link's send queues control first.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, VarInt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use crate::config::TransportConfig;
use crate::protocols::wire::{StreamHeader, TrafficClass};

use super::peers::OutboundFrame;
use super::tls::{self, NodeCertificate, PinnedKeys};

/// Application close codes, so a peer's log says why it was dropped.
pub const CLOSE_SHUTDOWN: u32 = 0;
pub const CLOSE_MALFORMED_FRAME: u32 = 1;
pub const CLOSE_WRONG_DIALER: u32 = 2;
pub const CLOSE_REPLACED: u32 = 3;
/// The node is shutting down for good: its peers may count it gone at
/// once instead of waiting for the failure detector.
pub const CLOSE_LEAVING: u32 = 4;

/// Frames written between two flushes of a stream.
const WRITE_BATCH_MAX: usize = 64;
/// Heartbeat and membership frames one link holds waiting to be written:
/// a few per heartbeat interval, so this much is a link that is stuck.
pub const CONTROL_SEND_QUEUE_MAX: usize = 256;

/// Ack-eliciting packets a peer may receive before it must ACK.
const ACK_ELICITING_THRESHOLD: u32 = 16;
/// Longest a peer may hold back an ACK.
const ACK_DELAY_MAX: Duration = Duration::from_millis(50);

/// The quinn transport parameters from the config.
pub fn quic_transport_config(config: &TransportConfig) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)));
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .expect("validated idle timeout fits a QUIC varint");
    transport.max_idle_timeout(Some(idle));
    // Each overlay link carries a few dozen small frames a second: acking
    // every other packet at once would send nearly one bare ACK packet per
    // frame. Asking the peer to wait lets ACKs ride on its own traffic.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD))
        .max_ack_delay(Some(ACK_DELAY_MAX));
    transport.ack_frequency_config(Some(acks));
    Arc::new(transport)
}

/// The server side of a node's endpoint.
pub fn quic_server_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, tls::TlsError> {
    let crypto = QuicServerConfig::try_from(tls::server_config(certificate, pinned)?)
        .map_err(|error| tls::TlsError::Config(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(quic_transport_config(config));
    Ok(server)
}

/// The client side for dialing one peer whose key must be `peer_key`.
pub fn quic_client_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, tls::TlsError> {
    let crypto = QuicClientConfig::try_from(tls::client_config(certificate, pinned)?)
        .map_err(|error| tls::TlsError::Config(error.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(quic_transport_config(config));
    Ok(client)
}

/// The deterministic rule that picks one dialer per pair: the lower id.
pub fn dials(own_id: &str, peer_id: &str) -> bool {
    own_id < peer_id
}

/// Whether the peer closed `connection` saying it leaves the cluster.
pub fn peer_left(connection: &Connection) -> bool {
    matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == VarInt::from_u32(CLOSE_LEAVING)
    )
}

/// Length-delimited frames of at most `frame_bytes_max` bytes.
pub fn frame_codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

type StreamWriter = FramedWrite<quinn::SendStream, LengthDelimitedCodec>;

/// Drains the peer's send queue into one stream per traffic class, flushing
/// after each batch. Returns when the queue closes or the connection fails.
pub async fn write_frames(
    connection: &Connection,
    mut control: mpsc::Receiver<OutboundFrame>,
    mut outbound: mpsc::Receiver<OutboundFrame>,
) -> &'static str {
    let mut streams: [Option<StreamWriter>; 4] = Default::default();
    let mut batch = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut control_batch = Vec::with_capacity(WRITE_BATCH_MAX);
    loop {
        // Control frames first: at most one batch of data is ahead of a
        // heartbeat, however long the data queue (both are cancel safe).
        let received = tokio::select! {
            biased;
            count = control.recv_many(&mut control_batch, WRITE_BATCH_MAX) => count,
            count = outbound.recv_many(&mut batch, WRITE_BATCH_MAX) => count,
        };
        if received == 0 {
            break;
        }
        let mut dirty = [false; 4];
        for (class, bytes) in control_batch.drain(..).chain(batch.drain(..)) {
            let Some(stream) = stream_for(connection, &mut streams, class).await else {
                return "cannot open a stream";
            };
            if stream.feed(bytes).await.is_err() {
                return "stream write failed";
            }
            dirty[class.index()] = true;
        }
        for (stream, dirty) in streams.iter_mut().zip(dirty) {
            if let (Some(stream), true) = (stream, dirty) {
                if SinkExt::<bytes::Bytes>::flush(stream).await.is_err() {
                    return "stream flush failed";
                }
            }
        }
    }
    "send queue closed"
}

async fn stream_for<'s>(
    connection: &Connection,
    streams: &'s mut [Option<StreamWriter>; 4],
    class: TrafficClass,
) -> Option<&'s mut StreamWriter> {
    // Transfer streams are opened per snapshot, never queued as frames.
    let slot = streams.get_mut(class.index())?;
    if slot.is_none() {
        let mut stream = connection.open_uni().await.ok()?;
        stream
            .write_all(&StreamHeader { class }.encode())
            .await
            .ok()?;
        // The writer never sends more than the peer accepts.
        *slot = Some(FramedWrite::new(stream, frame_codec(usize::MAX >> 1)));
    }
    slot.as_mut()
}
