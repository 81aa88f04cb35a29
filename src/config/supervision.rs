//! The `[supervision]` section: restart budgets, and how long a node
//! waits for its agents to start.

use super::*;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// Restarts a supervisor allows within `restart_window_ms`; one more
    /// failure escalates to its own supervisor.
    pub restarts_max: u32,
    pub restart_window_ms: u64,
    pub restart_backoff_min_ms: u64,
    pub restart_backoff_max_ms: u64,
    /// Agents start when every neighbour is connected, or after this long.
    pub agents_start_timeout_ms: u64,
}

impl Default for SupervisionConfig {
    fn default() -> SupervisionConfig {
        SupervisionConfig {
            restarts_max: 5,
            restart_window_ms: 10_000,
            restart_backoff_min_ms: 10,
            restart_backoff_max_ms: 1_000,
            agents_start_timeout_ms: 10_000,
        }
    }
}

impl SupervisionConfig {
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            restarts_max: self.restarts_max,
            window_ms: self.restart_window_ms,
            backoff_min_ms: self.restart_backoff_min_ms,
            backoff_max_ms: self.restart_backoff_max_ms,
        }
    }
}

pub(super) fn validate_supervision(supervision: &SupervisionConfig, checker: &mut Checker) {
    checker.range(
        "supervision.restarts_max",
        supervision.restarts_max,
        0,
        1_000,
    );
    checker.range(
        "supervision.restart_window_ms",
        supervision.restart_window_ms,
        1,
        3_600_000,
    );
    checker.range(
        "supervision.restart_backoff_min_ms",
        supervision.restart_backoff_min_ms,
        1,
        60_000,
    );
    checker.range(
        "supervision.restart_backoff_max_ms",
        supervision.restart_backoff_max_ms,
        supervision.restart_backoff_min_ms,
        600_000,
    );
    checker.range(
        "supervision.agents_start_timeout_ms",
        supervision.agents_start_timeout_ms,
        0,
        600_000,
    );
}
