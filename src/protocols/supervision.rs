//! The restart policy of a supervisor: how long to wait before restarting a
//! failed child, and when to give up and escalate.
//!
//! ractor restarts nothing by itself; a supervisor asks a [`RestartBudget`]
//! on every child failure. At most `restarts_max` restarts are allowed within
//! any `window_ms`; one more escalates. Delays grow exponentially from
//! `backoff_min_ms` to `backoff_max_ms` with jitter drawn from a seeded RNG,
//! so that restarting siblings do not retry in lockstep and a run replays.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Limits of one supervisor's restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts within `window_ms`; the next failure escalates.
    pub restarts_max: u32,
    pub window_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            restarts_max: 5,
            window_ms: 10_000,
            backoff_min_ms: 10,
            backoff_max_ms: 1_000,
        }
    }
}

/// What the supervisor must do about a failed child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the child after this many milliseconds.
    RestartAfter { delay_ms: u64 },
    /// The budget is spent: fail upward.
    Escalate { failures_in_window: u32 },
}

/// Counts restarts over a sliding window of (caller-supplied) time.
#[derive(Clone, Debug)]
pub struct RestartBudget {
    policy: RestartPolicy,
    /// Times of the failures inside the window, oldest first; never more
    /// than `restarts_max + 1` entries.
    failures_ms: VecDeque<u64>,
    rng: ChaCha8Rng,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy, seed: u64) -> RestartBudget {
        assert!(policy.backoff_min_ms <= policy.backoff_max_ms);
        RestartBudget {
            policy,
            failures_ms: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Records a failure at `now_ms` and decides what to do.
    pub fn on_failure(&mut self, now_ms: u64) -> RestartDecision {
        let window_start = now_ms.saturating_sub(self.policy.window_ms);
        while self
            .failures_ms
            .front()
            .is_some_and(|&at| at < window_start)
        {
            self.failures_ms.pop_front();
        }
        self.failures_ms.push_back(now_ms);
        let failures = self.failures_ms.len() as u32;
        if failures > self.policy.restarts_max {
            return RestartDecision::Escalate {
                failures_in_window: failures,
            };
        }
        debug_assert!(self.failures_ms.len() <= self.policy.restarts_max as usize);
        let delay_ms = jittered_delay_ms(
            &mut self.rng,
            self.policy.backoff_min_ms,
            self.policy.backoff_max_ms,
            failures - 1,
        );
        RestartDecision::RestartAfter { delay_ms }
    }
}

/// `min_ms` doubled `attempt` times, capped at `max_ms`, then jittered into
/// [half, whole]: never zero, and never in lockstep with a sibling.
fn jittered_delay_ms(rng: &mut ChaCha8Rng, min_ms: u64, max_ms: u64, attempt: u32) -> u64 {
    let ceiling = min_ms.saturating_mul(1u64 << attempt.min(32)).min(max_ms);
    rng.gen_range(ceiling / 2..=ceiling)
}

/// Exponential backoff with jitter for retries that never give up on their
/// own (reconnecting to a peer): the caller resets it on success.
#[derive(Clone, Debug)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: ChaCha8Rng,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        assert!(min_ms <= max_ms);
        Backoff {
            min_ms,
            max_ms,
            attempt: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt; each call doubles the next one.
    pub fn next_delay_ms(&mut self) -> u64 {
        let delay = jittered_delay_ms(&mut self.rng, self.min_ms, self.max_ms, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            restarts_max: 3,
            window_ms: 1_000,
            backoff_min_ms: 10,
            backoff_max_ms: 50,
        }
    }

    #[test]
    fn escalates_after_budget_within_window() {
        let mut budget = RestartBudget::new(policy(), 7);
        for now in [0, 10, 20] {
            assert!(matches!(
                budget.on_failure(now),
                RestartDecision::RestartAfter { .. }
            ));
        }
        assert_eq!(
            budget.on_failure(30),
            RestartDecision::Escalate {
                failures_in_window: 4
            }
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut budget = RestartBudget::new(policy(), 7);
        for now in [0, 10, 20] {
            budget.on_failure(now);
        }
        assert!(matches!(
            budget.on_failure(2_000),
            RestartDecision::RestartAfter { .. }
        ));
    }

    #[test]
    fn backoff_grows_and_is_capped_and_replays_by_seed() {
        let delays = |seed| {
            let mut budget = RestartBudget::new(policy(), seed);
            (0..3)
                .map(|i| match budget.on_failure(i) {
                    RestartDecision::RestartAfter { delay_ms } => delay_ms,
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        let first = delays(42);
        assert_eq!(first, delays(42));
        assert!((5..=10).contains(&first[0]));
        assert!((10..=20).contains(&first[1]));
        assert!((20..=40).contains(&first[2]));
    }

    #[test]
    fn reconnect_backoff_doubles_caps_and_resets() {
        let mut backoff = Backoff::new(10, 50, 3);
        let delays: Vec<u64> = (0..5).map(|_| backoff.next_delay_ms()).collect();
        assert!((5..=10).contains(&delays[0]));
        assert!((10..=20).contains(&delays[1]));
        assert!(delays[3..].iter().all(|delay| (25..=50).contains(delay)));
        backoff.reset();
        assert!(backoff.next_delay_ms() <= 10);
    }
}
