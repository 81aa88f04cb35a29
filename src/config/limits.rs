//! The `[limits]` section: payload, inbox and TTL bounds.

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages waiting in a router's mailbox, from agents and the network.
    pub router_queue_max: usize,
    /// Deliveries waiting in one agent's mailbox.
    pub agent_inbox_max: usize,
    pub payload_bytes_max: usize,
    /// Hops an envelope may travel.
    pub ttl: u8,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            router_queue_max: 16_384,
            agent_inbox_max: 4_096,
            payload_bytes_max: 64 * 1024,
            ttl: 8,
        }
    }
}

pub(super) fn validate_limits(limits: &LimitsConfig, checker: &mut Checker) {
    checker.range(
        "limits.router_queue_max",
        limits.router_queue_max,
        1,
        1_000_000,
    );
    checker.range(
        "limits.agent_inbox_max",
        limits.agent_inbox_max,
        1,
        1_000_000,
    );
    checker.range(
        "limits.payload_bytes_max",
        limits.payload_bytes_max,
        0,
        PAYLOAD_BYTES_MAX,
    );
    checker.range("limits.ttl", limits.ttl, 1, TTL_MAX);
}
