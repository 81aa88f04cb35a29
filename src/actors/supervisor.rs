//! Restart bookkeeping shared by the node's supervisors.
//!
//! ractor reports a child's end as a supervision event and restarts
//! nothing. [`Children`] maps each event to the child it concerns, asks the
//! pure [`RestartBudget`] what to do, and either names the child to restart
//! after a delay or returns the error that escalates to the supervisor's own
//! supervisor. While the supervisor is stopping on purpose, exits are
//! expected and nothing restarts.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorProcessingErr, SupervisionEvent};

use crate::metrics::NodeMetrics;
use crate::protocols::supervision::{RestartBudget, RestartDecision, RestartPolicy};

pub struct Children<K> {
    by_id: HashMap<ActorId, K>,
    budget: RestartBudget,
    started: Instant,
    /// Set when the supervisor stops its children on purpose.
    pub stopping: bool,
    /// Who supervises, for logs and errors.
    supervisor: String,
}

impl<K: Clone + Debug> Children<K> {
    pub fn new(policy: RestartPolicy, seed: u64, supervisor: String) -> Children<K> {
        Children {
            by_id: HashMap::new(),
            budget: RestartBudget::new(policy, seed),
            started: Instant::now(),
            stopping: false,
            supervisor,
        }
    }

    pub fn insert(&mut self, id: ActorId, child: K) {
        self.by_id.insert(id, child);
    }

    pub fn contains(&self, child_matches: impl Fn(&K) -> bool) -> bool {
        self.by_id.values().any(child_matches)
    }

    /// Every child running now.
    pub fn running(&self) -> impl Iterator<Item = &K> {
        self.by_id.values()
    }

    /// Forgets the children `child_matches` picks, so their end, when the
    /// supervisor stops them on purpose, restarts nothing.
    pub fn forget(&mut self, child_matches: impl Fn(&K) -> bool) {
        self.by_id.retain(|_, child| !child_matches(child));
    }

    /// Decides what a supervision event means. `Ok(Some((child, delay)))`:
    /// restart `child` after `delay`. `Ok(None)`: nothing to do. `Err`: the
    /// restart budget is spent; returning it fails this supervisor.
    pub fn on_event(
        &mut self,
        event: &SupervisionEvent,
        metrics: &NodeMetrics,
    ) -> Result<Option<(K, Duration)>, ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.clone().unwrap_or_else(|| "stopped".into()))
            }
            SupervisionEvent::ActorFailed(cell, error) => (cell, format!("failed: {error}")),
            _ => return Ok(None),
        };
        let Some(child) = self.by_id.remove(&cell.get_id()) else {
            return Ok(None);
        };
        if self.stopping {
            return Ok(None);
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        match self.budget.on_failure(now_ms) {
            RestartDecision::RestartAfter { delay_ms } => {
                tracing::warn!(supervisor = %self.supervisor, ?child, %reason, delay_ms, "child ended; restarting");
                NodeMetrics::count(&metrics.counters.actor_restarts);
                Ok(Some((child, Duration::from_millis(delay_ms))))
            }
            RestartDecision::Escalate { failures_in_window } => {
                let policy = self.budget.policy();
                tracing::error!(
                    supervisor = %self.supervisor, ?child, %reason, failures_in_window,
                    restarts_max = policy.restarts_max, window_ms = policy.window_ms,
                    "restart budget spent; escalating"
                );
                NodeMetrics::count(&metrics.counters.supervisor_escalations);
                Err(format!(
                    "{}: restart budget spent ({failures_in_window} failures within {} ms, at most {} restarts); last: {child:?} {reason}",
                    self.supervisor, policy.window_ms, policy.restarts_max
                )
                .into())
            }
        }
    }
}
