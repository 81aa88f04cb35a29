//! Publish/subscribe and request/reply together, run from a TOML file.
//!
//! A `quotes` agent publishes a seeded random-walk price on topic
//! `prices` every `every_ms`. `average` agents subscribe to it (the
//! config's `subscribe = ["prices"]`) and keep a moving average of the
//! last `window` prices. A `desk` asks every agent whose name starts with
//! `average-` for its average, with a timeout, and prints what comes back.
//!
//! ```text
//! cargo run --release --example pubsub -- [CONFIG] [SECONDS]
//! ```
//!
//! CONFIG defaults to `examples/pubsub.toml`, SECONDS to 3.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use agentmesh::agent_api::{
    Behaviour, Context, Message, ParamError, Registry, RequestError, RequestId,
};
use agentmesh::cluster::LocalCluster;
use rand::Rng;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotesParams {
    every_ms: u64,
    #[serde(default = "hundred")]
    start: f64,
}

fn hundred() -> f64 {
    100.0
}

/// Publishes a price that moves by up to ±0.5 % per step.
struct Quotes {
    every_ms: u64,
    price: f64,
}

const PUBLISH: u64 = 1;

impl Behaviour for Quotes {
    fn start(&mut self, context: &mut Context<'_>) {
        let _ = context.set_timer(PUBLISH, self.every_ms);
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn timer(&mut self, context: &mut Context<'_>, _tag: u64) {
        let step: f64 = context.rng().gen_range(-0.005..0.005);
        self.price *= 1.0 + step;
        if let Err(error) = context.publish("prices", self.price.to_be_bytes().to_vec()) {
            println!("{}: {error}", context.name());
        }
        let _ = context.set_timer(PUBLISH, self.every_ms);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AverageParams {
    window: usize,
}

/// Averages the last `window` prices it was published; answers requests
/// with the average (8 bytes, big-endian f64; NaN before any price).
struct Average {
    window: usize,
    prices: VecDeque<f64>,
}

impl Behaviour for Average {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        if message.topic.as_deref() == Some("prices") {
            let Ok(bytes) = <[u8; 8]>::try_from(message.body.as_slice()) else {
                return;
            };
            if self.prices.len() == self.window {
                self.prices.pop_front();
            }
            self.prices.push_back(f64::from_be_bytes(bytes));
        } else if message.request.is_some() {
            let average = self.prices.iter().sum::<f64>() / self.prices.len() as f64;
            let _ = context.reply(&message, average.to_be_bytes().to_vec());
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeskParams {
    every_ms: u64,
    timeout_ms: u64,
}

/// Asks each `average-*` agent for its average every `every_ms`.
struct Desk {
    params: DeskParams,
    asked: HashMap<RequestId, String>,
}

const ASK: u64 = 1;

impl Behaviour for Desk {
    fn start(&mut self, context: &mut Context<'_>) {
        let _ = context.set_timer(ASK, self.params.every_ms);
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn timer(&mut self, context: &mut Context<'_>, _tag: u64) {
        for agent in context.agents_with_prefix("average-") {
            match context.request(&agent, Vec::new(), self.params.timeout_ms) {
                Ok(request) => {
                    self.asked.insert(request, agent);
                }
                Err(error) => println!("cannot ask {agent}: {error}"),
            }
        }
        let _ = context.set_timer(ASK, self.params.every_ms);
    }

    fn response(
        &mut self,
        _context: &mut Context<'_>,
        request: RequestId,
        outcome: Result<Message, RequestError>,
    ) {
        let agent = self.asked.remove(&request).unwrap_or_default();
        let average = outcome.map(|answer| <[u8; 8]>::try_from(answer.body.as_slice()));
        match average {
            Ok(Ok(bytes)) => println!("{agent}: average {:.3}", f64::from_be_bytes(bytes)),
            Ok(Err(_)) => println!("{agent}: an answer that is not 8 bytes"),
            Err(error) => println!("{agent}: {error}"),
        }
    }
}

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("quotes", |spec| {
        let params: QuotesParams = spec.params.parse()?;
        if params.every_ms == 0 {
            return Err(ParamError::new("every_ms", "give at least 1"));
        }
        Ok(Box::new(Quotes {
            every_ms: params.every_ms,
            price: params.start,
        }))
    });
    registry.register("average", |spec| {
        let params: AverageParams = spec.params.parse()?;
        if params.window == 0 {
            return Err(ParamError::new("window", "an average of nothing"));
        }
        Ok(Box::new(Average {
            window: params.window,
            prices: VecDeque::with_capacity(params.window),
        }))
    });
    registry.register("desk", |spec| {
        Ok(Box::new(Desk {
            params: spec.params.parse()?,
            asked: HashMap::new(),
        }))
    });
    registry
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or("examples/pubsub.toml".into()));
    let seconds: u64 = args.next().map_or(Ok(3), |text| text.parse())?;
    let config = agentmesh::config::load(&path)?;
    let cluster = LocalCluster::start_with(config, registry()).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    cluster.shutdown().await;
    Ok(())
}
