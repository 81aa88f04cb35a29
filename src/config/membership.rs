//! The `[membership]` section: heartbeats and the phi-accrual failure
//! detector.

use super::*;

/// Heartbeats and the phi-accrual failure detector: the `[membership]`
/// section is the detector's settings.
pub type MembershipConfig = DetectorConfig;

pub(super) fn validate_membership(membership: &MembershipConfig, checker: &mut Checker) {
    checker.range(
        "membership.heartbeat_interval_ms",
        membership.heartbeat_interval_ms,
        10,
        60_000,
    );
    let phi_ok = |phi: f64| phi.is_finite() && (0.5..=100.0).contains(&phi);
    if !phi_ok(membership.suspect_phi) {
        checker.fail(
            "membership.suspect_phi",
            format!("{} is outside 0.5 to 100", membership.suspect_phi),
        );
    }
    if !phi_ok(membership.dead_phi) || membership.dead_phi < membership.suspect_phi {
        checker.fail(
            "membership.dead_phi",
            format!(
                "{} must be from suspect_phi ({}) to 100",
                membership.dead_phi, membership.suspect_phi
            ),
        );
    }
    checker.range(
        "membership.acceptable_pause_ms",
        membership.acceptable_pause_ms,
        0,
        600_000,
    );
    checker.range(
        "membership.min_std_deviation_ms",
        membership.min_std_deviation_ms,
        1,
        60_000,
    );
    checker.range(
        "membership.first_heartbeat_grace_ms",
        membership.first_heartbeat_grace_ms,
        0,
        600_000,
    );
}
