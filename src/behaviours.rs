//! Agent behaviours, chosen by name in the cluster config.
//!
//! A behaviour is plain logic: it is given the time, a seeded RNG and an
//! outbox through [`AgentContext`], and never touches a clock, a socket or
//! an actor itself. The agent actor feeds it deliveries and ticks.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::config::{target_matches, AgentConfig, BehaviourConfig, StormConfig};
use crate::protocols::mesh::SendError;
use crate::protocols::wire::EnvelopeKind;

/// A message handed to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub from_agent: String,
    pub kind: EnvelopeKind,
    pub payload: Vec<u8>,
    pub sent_at_micros: u64,
}

/// Where a behaviour's messages go.
pub trait Outbox {
    fn send(&mut self, to: &str, kind: EnvelopeKind, payload: Vec<u8>) -> Result<(), SendError>;
}

/// What a behaviour may see and do during one call.
pub struct AgentContext<'a> {
    pub name: &'a str,
    /// Wall-clock microseconds, supplied by the agent actor.
    pub now_micros: u64,
    pub rng: &'a mut ChaCha8Rng,
    pub outbox: &'a mut dyn Outbox,
}

impl AgentContext<'_> {
    pub fn send(
        &mut self,
        to: &str,
        kind: EnvelopeKind,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        self.outbox.send(to, kind, payload)
    }
}

pub trait Behaviour: Send + 'static {
    /// Milliseconds between ticks, or None for a behaviour that only reacts.
    fn tick_interval_ms(&self) -> Option<u64> {
        None
    }
    fn start(&mut self, _context: &mut AgentContext<'_>) {}
    fn message(&mut self, context: &mut AgentContext<'_>, delivery: Delivery);
    fn tick(&mut self, _context: &mut AgentContext<'_>) {}
    /// The router refused a message this agent sent.
    fn send_failed(
        &mut self,
        _context: &mut AgentContext<'_>,
        _destination: &str,
        _error: &SendError,
    ) {
    }
}

/// Makes the behaviour `agent` is configured with. `agents` is the whole
/// cluster's agent list, for behaviours that pick destinations.
pub fn make(agent: &AgentConfig, agents: &[AgentConfig]) -> Box<dyn Behaviour> {
    match &agent.behaviour {
        BehaviourConfig::Echo => Box::new(Echo),
        BehaviourConfig::Storm(storm) => Box::new(Storm::new(storm.clone(), &agent.name, agents)),
        BehaviourConfig::Sink => Box::new(Sink),
    }
}

/// Takes every message and answers none (the agent actor records them).
pub struct Sink;

impl Behaviour for Sink {
    fn message(&mut self, _context: &mut AgentContext<'_>, _delivery: Delivery) {}
}

/// Answers every data message with a reply carrying the same payload.
pub struct Echo;

impl Behaviour for Echo {
    fn message(&mut self, context: &mut AgentContext<'_>, delivery: Delivery) {
        if delivery.kind == EnvelopeKind::Data {
            // A refused reply is counted by the outbox; an echo does not retry.
            let _ = context.send(&delivery.from_agent, EnvelopeKind::Reply, delivery.payload);
        }
    }
}

/// Sends messages at a steady rate to targets chosen at random.
pub struct Storm {
    config: StormConfig,
    targets: Vec<String>,
    sent: u64,
    /// Messages owed by elapsed time but not sent yet.
    credit: f64,
    last_tick_micros: Option<u64>,
}

impl Storm {
    pub fn new(config: StormConfig, own_name: &str, agents: &[AgentConfig]) -> Storm {
        let targets = agents
            .iter()
            .map(|agent| agent.name.clone())
            .filter(|name| name != own_name)
            .filter(|name| {
                config.targets.is_empty() || config.targets.iter().any(|p| target_matches(p, name))
            })
            .collect();
        Storm {
            config,
            targets,
            sent: 0,
            credit: 0.0,
            last_tick_micros: None,
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn remaining(&self) -> u64 {
        self.config
            .messages_max
            .map_or(u64::MAX, |max| max.saturating_sub(self.sent))
    }
}

impl Behaviour for Storm {
    /// Every `tick_ms`, or, when the rate owes less than a message a
    /// tick, about once a message (at most once a second): a thousand
    /// agents sending twice a second would otherwise wake a hundred
    /// thousand times a second to send nothing.
    fn tick_interval_ms(&self) -> Option<u64> {
        let tick_ms = self.config.tick_ms;
        let per_message_ms = if self.config.rate > 0.0 {
            (1_000.0 / self.config.rate) as u64
        } else {
            1_000
        };
        Some(per_message_ms.clamp(tick_ms, tick_ms.max(1_000)))
    }

    fn message(&mut self, _context: &mut AgentContext<'_>, _delivery: Delivery) {}

    fn tick(&mut self, context: &mut AgentContext<'_>) {
        let elapsed_micros = match self.last_tick_micros.replace(context.now_micros) {
            Some(last) => context.now_micros.saturating_sub(last),
            None => 0,
        };
        // Credit never exceeds one second of sending: after a stall the storm
        // resumes its rate instead of bursting to catch up.
        let credit_max = self.config.rate.max(1.0);
        self.credit =
            (self.credit + self.config.rate * elapsed_micros as f64 / 1e6).min(credit_max);
        if self.targets.is_empty() {
            return;
        }
        let due = (self.credit.floor() as u64).min(self.remaining());
        for _ in 0..due {
            let target = &self.targets[context.rng.gen_range(0..self.targets.len())];
            let payload = vec![0u8; self.config.payload_bytes];
            if context.send(target, EnvelopeKind::Data, payload).is_err() {
                // Shed load: the rest of this tick's credit is given up.
                self.credit = 0.0;
                return;
            }
            self.sent += 1;
            self.credit -= 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[derive(Default)]
    struct Recorder {
        sent: Vec<(String, EnvelopeKind)>,
        refuse: bool,
    }

    impl Outbox for Recorder {
        fn send(
            &mut self,
            to: &str,
            kind: EnvelopeKind,
            _payload: Vec<u8>,
        ) -> Result<(), SendError> {
            if self.refuse {
                return Err(SendError::RouterBusy);
            }
            self.sent.push((to.to_string(), kind));
            Ok(())
        }
    }

    fn agents(names: &[&str]) -> Vec<AgentConfig> {
        names
            .iter()
            .map(|name| AgentConfig {
                name: name.to_string(),
                node: "n1".into(),
                behaviour: BehaviourConfig::Echo,
            })
            .collect()
    }

    fn storm(rate: f64, messages_max: Option<u64>) -> Storm {
        let config = StormConfig {
            rate,
            payload_bytes: 4,
            targets: vec!["echo-*".into()],
            messages_max,
            tick_ms: 10,
        };
        Storm::new(
            config,
            "storm-0",
            &agents(&["storm-0", "echo-0", "echo-1", "other"]),
        )
    }

    fn tick(storm: &mut Storm, outbox: &mut Recorder, now_micros: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut context = AgentContext {
            name: "storm-0",
            now_micros,
            rng: &mut rng,
            outbox,
        };
        storm.tick(&mut context);
    }

    #[test]
    fn storm_sends_at_its_rate_to_its_targets_only() {
        let mut storm = storm(100.0, None);
        let mut outbox = Recorder::default();
        for step in 0..=100 {
            tick(&mut storm, &mut outbox, step * 10_000);
        }
        assert_eq!(outbox.sent.len(), 100, "one second at 100/s");
        assert!(outbox
            .sent
            .iter()
            .all(|(to, kind)| to.starts_with("echo-") && *kind == EnvelopeKind::Data));
    }

    #[test]
    fn storm_stops_at_messages_max_and_sheds_load_when_refused() {
        let mut storm = storm(1_000.0, Some(5));
        let mut outbox = Recorder {
            refuse: true,
            ..Recorder::default()
        };
        tick(&mut storm, &mut outbox, 0);
        tick(&mut storm, &mut outbox, 100_000);
        assert_eq!(storm.sent(), 0);
        outbox.refuse = false;
        tick(&mut storm, &mut outbox, 200_000);
        tick(&mut storm, &mut outbox, 300_000);
        assert_eq!(storm.sent(), 5);
        assert_eq!(outbox.sent.len(), 5);
    }

    #[test]
    fn echo_answers_data_but_never_replies() {
        let mut outbox = Recorder::default();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut context = AgentContext {
            name: "echo-0",
            now_micros: 0,
            rng: &mut rng,
            outbox: &mut outbox,
        };
        let delivery = |kind| Delivery {
            from_agent: "storm-0".into(),
            kind,
            payload: vec![1],
            sent_at_micros: 0,
        };
        Echo.message(&mut context, delivery(EnvelopeKind::Data));
        Echo.message(&mut context, delivery(EnvelopeKind::Reply));
        assert_eq!(outbox.sent, [("storm-0".to_string(), EnvelopeKind::Reply)]);
    }
}
