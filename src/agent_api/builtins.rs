//! The built-in behaviours, written against the same API as a user's:
//! `echo` answers, `sink` takes (its node records what it took, for the
//! exactly-once checks), `storm` sends at a steady rate.

use rand::Rng;
use serde::Deserialize;

use crate::config::target_matches;

use super::behaviour::{Behaviour, Context, Message};
use crate::config::{ParamError, Params};

use super::registry::{AgentSpec, Registry};

/// Registers `echo`, `sink` and `storm` in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register("echo", |spec| {
        no_params(spec.params, "echo")?;
        Ok(Box::new(Echo))
    });
    registry.register("sink", |spec| {
        no_params(spec.params, "sink")?;
        Ok(Box::new(Sink))
    });
    registry.register("storm", |spec| Ok(Box::new(Storm::from_spec(spec)?)));
}

/// Refuses any parameter, naming the first.
fn no_params(params: &Params, behaviour: &str) -> Result<(), ParamError> {
    match params.table().keys().next() {
        Some(key) => Err(ParamError::new(
            key.clone(),
            format!("not used by behaviour {behaviour:?}"),
        )),
        None => Ok(()),
    }
}

/// Takes every message and answers none.
pub struct Sink;

impl Behaviour for Sink {
    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}
}

/// Answers every message with its own body: a request with its response,
/// a plain message with a plain message back. Never answers an answer.
pub struct Echo;

impl Behaviour for Echo {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        if message.answer {
            return;
        }
        // A refused answer is counted by the node; an echo does not retry.
        let body = message.body.clone();
        let _ = context.reply(&message, body);
    }
}

/// The storm's parameters.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormParams {
    /// Messages per second, above 0 and up to 1,000,000.
    #[serde(default = "StormParams::default_rate")]
    pub rate: f64,
    /// Bytes of each message's body.
    #[serde(default = "StormParams::default_payload_bytes")]
    pub payload_bytes: usize,
    /// Agents to send to (names, or prefixes ending in `*`), one chosen at
    /// random per message. Empty: every other agent in the cluster.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Stop after this many messages (None: until the run ends).
    #[serde(default)]
    pub messages_max: Option<u64>,
    /// Milliseconds between ticks, 1 to 1,000.
    #[serde(default = "StormParams::default_tick_ms")]
    pub tick_ms: u64,
}

impl StormParams {
    fn default_rate() -> f64 {
        100.0
    }

    fn default_payload_bytes() -> usize {
        64
    }

    fn default_tick_ms() -> u64 {
        10
    }

    /// The parameters of `spec`, checked against its cluster.
    pub fn from_spec(spec: &AgentSpec<'_>) -> Result<StormParams, ParamError> {
        let params: StormParams = spec.params.parse()?;
        if params.rate == 0.0 {
            // A storm of rate 0 would start, say nothing and send nothing.
            return Err(ParamError::new(
                "rate",
                "0 would send nothing: give messages/s above 0, up to 1000000 (to send as fast as the nodes accept, give 1000000, which is what `bench storm --rate 0` does)",
            ));
        }
        if !params.rate.is_finite() || params.rate < 0.0 || params.rate > 1_000_000.0 {
            return Err(ParamError::new(
                "rate",
                format!(
                    "{} is not a rate above 0 and up to 1000000 messages/s",
                    params.rate
                ),
            ));
        }
        let payload_max = spec.config.limits.payload_bytes_max;
        if params.payload_bytes > payload_max {
            return Err(ParamError::new(
                "payload_bytes",
                format!(
                    "{} exceeds limits.payload_bytes_max ({payload_max})",
                    params.payload_bytes
                ),
            ));
        }
        if !(1..=1_000).contains(&params.tick_ms) {
            return Err(ParamError::new(
                "tick_ms",
                format!("{} is outside the allowed range 1 to 1000", params.tick_ms),
            ));
        }
        for (position, pattern) in params.targets.iter().enumerate() {
            let agents = &spec.config.agents;
            if !agents
                .iter()
                .any(|agent| target_matches(pattern, &agent.name))
            {
                return Err(ParamError::new(
                    format!("targets[{position}]"),
                    format!("{pattern:?} names no agent (use a name, or a prefix ending in '*')"),
                ));
            }
        }
        Ok(params)
    }
}

/// Sends messages at a steady rate to targets chosen at random.
pub struct Storm {
    params: StormParams,
    targets: Vec<String>,
    sent: u64,
    /// Messages owed by elapsed time but not sent yet.
    credit: f64,
    last_tick_micros: Option<u64>,
}

impl Storm {
    /// The storm `spec` configures.
    pub fn from_spec(spec: &AgentSpec<'_>) -> Result<Storm, ParamError> {
        let params = StormParams::from_spec(spec)?;
        let names = spec.config.agents.iter().map(|agent| agent.name.as_str());
        Ok(Storm::new(params, spec.name, names))
    }

    /// A storm of `own_name` sending among `agents` as `params` say.
    pub fn new<'n>(
        params: StormParams,
        own_name: &str,
        agents: impl Iterator<Item = &'n str>,
    ) -> Storm {
        let targets = agents
            .filter(|name| *name != own_name)
            .filter(|name| {
                params.targets.is_empty()
                    || params
                        .targets
                        .iter()
                        .any(|pattern| target_matches(pattern, name))
            })
            .map(str::to_string)
            .collect();
        Storm {
            params,
            targets,
            sent: 0,
            credit: 0.0,
            last_tick_micros: None,
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    fn remaining(&self) -> u64 {
        self.params
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
        let tick_ms = self.params.tick_ms;
        let per_message_ms = if self.params.rate > 0.0 {
            (1_000.0 / self.params.rate) as u64
        } else {
            1_000
        };
        Some(per_message_ms.clamp(tick_ms, tick_ms.max(1_000)))
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn tick(&mut self, context: &mut Context<'_>) {
        let now_micros = context.now_micros();
        let elapsed_micros = match self.last_tick_micros.replace(now_micros) {
            Some(last) => now_micros.saturating_sub(last),
            None => 0,
        };
        // Credit never exceeds one second of sending: after a stall the storm
        // resumes its rate instead of bursting to catch up.
        let credit_max = self.params.rate.max(1.0);
        self.credit =
            (self.credit + self.params.rate * elapsed_micros as f64 / 1e6).min(credit_max);
        if self.targets.is_empty() {
            return;
        }
        let due = (self.credit.floor() as u64).min(self.remaining());
        for _ in 0..due {
            let target = self.targets[context.rng().gen_range(0..self.targets.len())].clone();
            let body = vec![0u8; self.params.payload_bytes];
            if context.send(&target, body).is_err() {
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
    use crate::agent_api::behaviour::{Effects, RequestId, TimerError};
    use crate::agent_api::frame::Frame;
    use crate::protocols::mesh::SendError;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Records what a behaviour sends; refuses when told to.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<(String, Frame, bool)>,
        refuse: bool,
    }

    impl Effects for Recorder {
        fn send(
            &mut self,
            to: &str,
            frame: Frame,
            answer: bool,
            _timeout_ms: Option<u64>,
        ) -> Result<(), SendError> {
            if self.refuse {
                return Err(SendError::RouterBusy);
            }
            self.sent.push((to.to_string(), frame, answer));
            Ok(())
        }
        fn set_timer(&mut self, _tag: u64, _delay_ms: u64) -> Result<(), TimerError> {
            Ok(())
        }
        fn cancel_timer(&mut self, _tag: u64) {}
    }

    fn storm(rate: f64, messages_max: Option<u64>) -> Storm {
        let params = StormParams {
            rate,
            payload_bytes: 4,
            targets: vec!["echo-*".into()],
            messages_max,
            tick_ms: 10,
        };
        let agents = ["storm-0", "echo-0", "echo-1", "other"];
        Storm::new(params, "storm-0", agents.into_iter())
    }

    fn call(recorder: &mut Recorder, now_micros: u64, run: impl FnOnce(&mut Context<'_>)) {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut next_request = 0;
        let mut context = Context::new(
            "storm-0",
            "n1",
            now_micros,
            &mut rng,
            recorder,
            &mut next_request,
        );
        run(&mut context);
    }

    #[test]
    fn storm_sends_at_its_rate_to_its_targets_only() {
        let mut storm = storm(100.0, None);
        let mut recorder = Recorder::default();
        for step in 0..=100 {
            call(&mut recorder, step * 10_000, |context| storm.tick(context));
        }
        assert_eq!(recorder.sent.len(), 100, "one second at 100/s");
        assert!(recorder
            .sent
            .iter()
            .all(|(to, frame, reply)| to.starts_with("echo-")
                && matches!(frame, Frame::Tell(body) if body.len() == 4)
                && !reply));
    }

    #[test]
    fn storm_stops_at_messages_max_and_sheds_load_when_refused() {
        let mut storm = storm(1_000.0, Some(5));
        let mut recorder = Recorder {
            refuse: true,
            ..Recorder::default()
        };
        call(&mut recorder, 0, |context| storm.tick(context));
        call(&mut recorder, 100_000, |context| storm.tick(context));
        assert_eq!(storm.sent(), 0);
        recorder.refuse = false;
        call(&mut recorder, 200_000, |context| storm.tick(context));
        call(&mut recorder, 300_000, |context| storm.tick(context));
        assert_eq!(storm.sent(), 5);
        assert_eq!(recorder.sent.len(), 5);
    }

    #[test]
    fn echo_answers_requests_and_messages_but_never_an_answer() {
        let mut recorder = Recorder::default();
        let message = |request, answer| Message {
            from: "storm-0".into(),
            body: vec![1],
            request,
            answer,
            sent_at_micros: 0,
            topic: None,
        };
        call(&mut recorder, 0, |context| {
            Echo.message(context, message(None, false));
            Echo.message(context, message(Some(RequestId(7)), false));
            Echo.message(context, message(None, true));
        });
        assert_eq!(
            recorder.sent,
            [
                ("storm-0".to_string(), Frame::Tell(vec![1]), true),
                (
                    "storm-0".to_string(),
                    Frame::Response {
                        id: 7,
                        body: vec![1]
                    },
                    true
                ),
            ]
        );
    }
}
