//! A node binary with behaviours of its own, run from a TOML file.
//!
//! `counter` agents add `step` for every message and answer each request
//! with the count so far; the count survives the agent's restarts
//! (`snapshot` and `restore`). An `asker` requests every counter's count
//! on a timer, with a timeout, and prints what comes back. Both are
//! registered beside the built-ins (`echo` answers with what it was sent),
//! and the config picks them by name with typed `[agents.params]`.
//!
//! ```text
//! cargo run --release --example custom_agent -- [CONFIG] [SECONDS]
//! ```
//!
//! CONFIG defaults to `examples/counter.toml`, SECONDS to 3.

use std::path::PathBuf;
use std::time::Duration;

use agentmesh::agent_api::{
    Behaviour, Context, Message, ParamError, Registry, RequestError, RequestId,
};
use agentmesh::cluster::LocalCluster;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterParams {
    #[serde(default = "one")]
    step: u64,
}

fn one() -> u64 {
    1
}

/// Counts what it is told; answers requests with the count.
struct Counter {
    step: u64,
    count: u64,
    changed: bool,
}

impl Behaviour for Counter {
    fn message(&mut self, context: &mut Context<'_>, message: Message) {
        self.count += self.step;
        self.changed = true;
        if message.request.is_some() {
            let _ = context.reply(&message, self.count.to_be_bytes().to_vec());
        }
    }

    fn snapshot(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.changed).then(|| self.count.to_be_bytes().to_vec())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "not 8 bytes")?;
        self.count = u64::from_be_bytes(bytes);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskerParams {
    counters: Vec<String>,
    every_ms: u64,
    timeout_ms: u64,
}

/// Asks each counter for its count every `every_ms`.
struct Asker {
    params: AskerParams,
    asked: std::collections::HashMap<RequestId, String>,
}

const ASK: u64 = 1;

impl Behaviour for Asker {
    fn start(&mut self, context: &mut Context<'_>) {
        let _ = context.set_timer(ASK, self.params.every_ms);
    }

    fn message(&mut self, _context: &mut Context<'_>, _message: Message) {}

    fn timer(&mut self, context: &mut Context<'_>, _tag: u64) {
        for counter in &self.params.counters {
            let body = b"how many?".to_vec();
            match context.request(counter, body, self.params.timeout_ms) {
                Ok(request) => {
                    self.asked.insert(request, counter.clone());
                }
                Err(error) => println!("{}: cannot ask {counter}: {error}", context.name()),
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
        let counter = self.asked.remove(&request).unwrap_or_default();
        match outcome {
            Ok(answer) if answer.body.len() == 8 => {
                let count = u64::from_be_bytes(answer.body.try_into().expect("8 bytes"));
                println!("{counter} has counted {count}");
            }
            Ok(answer) => println!(
                "{counter} answered {:?}",
                String::from_utf8_lossy(&answer.body)
            ),
            Err(error) => println!("{counter}: {error}"),
        }
    }
}

fn registry() -> Registry {
    let mut registry = Registry::with_builtins();
    registry.register("counter", |spec| {
        let params: CounterParams = spec.params.parse()?;
        if params.step == 0 {
            return Err(ParamError::new("step", "0 would count nothing"));
        }
        let counter = Counter {
            step: params.step,
            count: 0,
            changed: false,
        };
        Ok(Box::new(counter))
    });
    registry.register("asker", |spec| {
        let params: AskerParams = spec.params.parse()?;
        Ok(Box::new(Asker {
            params,
            asked: Default::default(),
        }))
    });
    registry
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or("examples/counter.toml".into()));
    let seconds: u64 = args.next().map_or(Ok(3), |text| text.parse())?;
    let config = agentmesh::config::load(&path)?;
    let cluster = LocalCluster::start_with(config, registry()).await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for node in &cluster.nodes {
        for entry in node.parts.data_path.agent_stats.iter() {
            let stats = entry.value();
            let received = stats
                .received_data
                .load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "{} on {}: {received} messages received",
                entry.key(),
                node.id
            );
        }
    }
    cluster.shutdown().await;
    Ok(())
}
