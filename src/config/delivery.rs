//! The `[delivery]` section: acknowledgements, retransmission,
//! admission, per-agent rates, and how envelopes are authenticated.

use super::*;

/// End-to-end acknowledgements, retransmission and per-source rate limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// How often the router sends acknowledgements and checks for
    /// retransmissions.
    pub tick_ms: u64,
    pub retransmit_timeout_ms: u64,
    pub retransmit_timeout_max_ms: u64,
    /// Retransmissions before a message is given up (retries_exhausted).
    pub retries_max: u32,
    /// Messages a node keeps awaiting acknowledgement.
    pub inflight_max: usize,
    /// Messages per second one agent may send; 0 means no limit.
    pub source_rate_max: f64,
    /// Messages one agent may send at once above its rate.
    pub source_burst_max: u32,
    /// How a node authenticates the data envelopes it originates:
    /// "pair-key" (a MAC only the destination node can check, about a
    /// microsecond) or "signature" (Ed25519, which anyone holding the
    /// config can check, at tens of microseconds per envelope).
    pub authentication: Authentication,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            tick_ms: 20,
            retransmit_timeout_ms: 500,
            retransmit_timeout_max_ms: 4_000,
            retries_max: 8,
            inflight_max: 65_536,
            source_rate_max: 0.0,
            source_burst_max: 1_000,
            authentication: Authentication::PairKey,
        }
    }
}

pub(super) fn validate_delivery(delivery: &DeliveryConfig, checker: &mut Checker) {
    checker.range("delivery.tick_ms", delivery.tick_ms, 1, 1_000);
    checker.range(
        "delivery.retransmit_timeout_ms",
        delivery.retransmit_timeout_ms,
        delivery.tick_ms,
        600_000,
    );
    checker.range(
        "delivery.retransmit_timeout_max_ms",
        delivery.retransmit_timeout_max_ms,
        delivery.retransmit_timeout_ms,
        3_600_000,
    );
    checker.range("delivery.retries_max", delivery.retries_max, 0, 60);
    checker.range(
        "delivery.inflight_max",
        delivery.inflight_max,
        1,
        10_000_000,
    );
    if !(delivery.source_rate_max.is_finite() && delivery.source_rate_max >= 0.0) {
        checker.fail(
            "delivery.source_rate_max",
            format!(
                "{} is not a rate (0 for no limit)",
                delivery.source_rate_max
            ),
        );
    }
    checker.range(
        "delivery.source_burst_max",
        delivery.source_burst_max,
        1,
        10_000_000,
    );
}
