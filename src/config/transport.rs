//! The `[transport]` section: QUIC keep-alive and timeouts, redial
//! backoff, and what one peer connection may queue and send.

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// QUIC keep-alive interval; quinn sends none unless told.
    pub keep_alive_ms: u64,
    /// A connection silent this long is closed.
    pub idle_timeout_ms: u64,
    /// A dial that has not completed its handshake by then is abandoned.
    pub connect_timeout_ms: u64,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Frames waiting for one peer's connection; a full queue refuses sends.
    pub peer_send_queue_max: usize,
    pub frame_bytes_max: usize,
    /// Decoded frames handed to the router in one message.
    pub receive_batch_max: usize,
    /// Envelopes per second one peer connection may hand this node (0: no
    /// limit); beyond it they are dropped before any signature is checked
    /// and counted, so a flooding peer cannot starve the others. The
    /// senders' retransmissions make good what an honest peer loses.
    pub peer_envelopes_per_second_max: f64,
    /// Envelopes a peer may send at once above that rate.
    pub peer_envelope_burst_max: u32,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            keep_alive_ms: 1_000,
            idle_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 5_000,
            peer_send_queue_max: 8_192,
            frame_bytes_max: FRAME_BYTES_MAX,
            receive_batch_max: 128,
            peer_envelopes_per_second_max: 200_000.0,
            peer_envelope_burst_max: 50_000,
        }
    }
}

pub(super) fn validate_transport(transport: &TransportConfig, checker: &mut Checker) {
    if !(transport.peer_envelopes_per_second_max >= 0.0
        && transport.peer_envelopes_per_second_max.is_finite())
    {
        checker.fail(
            "transport.peer_envelopes_per_second_max",
            format!(
                "{}: give envelopes per second, or 0 for no limit",
                transport.peer_envelopes_per_second_max
            ),
        );
    }
    checker.range(
        "transport.peer_envelope_burst_max",
        transport.peer_envelope_burst_max,
        1,
        10_000_000,
    );
    checker.range(
        "transport.keep_alive_ms",
        transport.keep_alive_ms,
        10,
        60_000,
    );
    checker.range(
        "transport.idle_timeout_ms",
        transport.idle_timeout_ms,
        100,
        600_000,
    );
    if transport.idle_timeout_ms <= transport.keep_alive_ms {
        checker.fail(
            "transport.idle_timeout_ms",
            format!(
                "{} must exceed keep_alive_ms ({}), or live connections time out",
                transport.idle_timeout_ms, transport.keep_alive_ms
            ),
        );
    }
    checker.range(
        "transport.connect_timeout_ms",
        transport.connect_timeout_ms,
        10,
        600_000,
    );
    checker.range(
        "transport.reconnect_backoff_min_ms",
        transport.reconnect_backoff_min_ms,
        1,
        60_000,
    );
    checker.range(
        "transport.reconnect_backoff_max_ms",
        transport.reconnect_backoff_max_ms,
        transport.reconnect_backoff_min_ms,
        600_000,
    );
    checker.range(
        "transport.peer_send_queue_max",
        transport.peer_send_queue_max,
        1,
        1_000_000,
    );
    checker.range(
        "transport.frame_bytes_max",
        transport.frame_bytes_max,
        1_024,
        FRAME_BYTES_MAX,
    );
    checker.range(
        "transport.receive_batch_max",
        transport.receive_batch_max,
        1,
        4_096,
    );
}
