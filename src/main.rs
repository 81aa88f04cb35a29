//! The `agentmesh` command line: parses arguments, sets up logging, and
//! calls the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use agentmesh::commands;

#[derive(Parser)]
#[command(
    name = "agentmesh",
    version,
    about = "A runtime for swarms of cooperating agents over authenticated QUIC"
)]
struct Cli {
    /// Log line format (logs go to stderr; RUST_LOG sets the level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every node of a cluster in this process, show progress, print a summary.
    Up {
        /// Cluster config (default: the embedded config/local.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How long to run the load, e.g. 10s, 2m.
        #[arg(long, allow_hyphen_values = true, default_value = "30s", value_parser = commands::parse_duration)]
        duration: Duration,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// Stop this percentage of the nodes mid-run (chosen by the
        /// config's seed) and report how fast the rest converge.
        #[arg(long, value_name = "PERCENT", value_parser = parse_kill_percent)]
        kill: Option<f64>,
        /// When to stop them, into the load (default: half way).
        #[arg(long, allow_hyphen_values = true, value_parser = commands::parse_duration, requires = "kill")]
        kill_after: Option<Duration>,
        /// How they stop: leave (they tell their peers) or crash (without
        /// a word; the failure detectors find out).
        #[arg(long, value_enum, default_value = "leave", requires = "kill")]
        kill_how: agentmesh::cluster::Departure,
    },
    /// Run one node of a multi-host cluster.
    Node {
        #[arg(long)]
        config: PathBuf,
        /// The node's id in the config.
        #[arg(long)]
        id: String,
        /// The node's private key file (default: key_file in the config).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Stop after this long (default: run until Ctrl-C or SIGTERM).
        #[arg(long, allow_hyphen_values = true, value_parser = commands::parse_duration)]
        duration: Option<Duration>,
        /// How often to print a JSON status line to stdout.
        #[arg(long, allow_hyphen_values = true, default_value = "5s", value_parser = commands::parse_duration)]
        status_interval: Duration,
    },
    /// Make Ed25519 node keys and print their config entries.
    Keygen {
        /// Folder to write <id>.key files to.
        #[arg(long, default_value = "keys")]
        out: PathBuf,
        /// Take the node ids from this config instead of the command line.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Node ids.
        ids: Vec<String>,
        /// With one id: the node's QUIC address, printed in its entry.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// With one id: its replica's client API address (loopback).
        #[arg(long)]
        client_listen: Option<std::net::SocketAddr>,
    },
    /// Validate a config without starting anything, and what the command
    /// that will run it needs (key files, fixed ports, data_dir).
    Check {
        #[arg(long)]
        config: PathBuf,
        /// The command that will run it: `up` (every node here) or `node`
        /// (one node per process). Default: node when the config lists
        /// public keys, up otherwise.
        #[arg(long = "for", value_enum)]
        target: Option<commands::CheckFor>,
        /// With --for node: check only this node's private key (on a host
        /// that holds only its own key).
        #[arg(long)]
        id: Option<String>,
    },
    /// Build an overlay (from a config, or from --nodes/--k/--kind) and print it with its metrics.
    Topology(commands::TopologyOptions),
    /// Print the plan a config's placement makes (each agent's node, each
    /// node's use, the bound, latency and balance) without starting
    /// anything; --down shows the rebalancing when nodes die.
    Place(commands::PlaceOptions),
    /// Put, get or delete a key in the control plane's key-value space.
    #[command(subcommand)]
    Kv(commands::KvAction),
    /// Send one request to any agent (through a node's client_listen) and
    /// print its response.
    Call(commands::CallOptions),
    /// Add a standby replica to the control plane, or remove a replica.
    #[command(subcommand)]
    Members(commands::MembersAction),
    /// Show each control-plane replica's role, leader, term, indices and members.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a benchmark and write its report (JSON, Markdown, SVG plots).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the cluster under a mixed workload while killing actors and
    /// nodes, partitioning links and turning a PBFT replica hostile; then
    /// check that nothing acknowledged was lost and write a report.
    Chaos(agentmesh::chaos::ChaosOptions),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// A message storm through every node's actor tree.
    Storm(agentmesh::bench::StormOptions),
    /// The Raft control plane: commits/s, commit latency, leader failover
    /// and snapshot transfer.
    Raft(agentmesh::bench::RaftOptions),
    /// The PBFT group: ops/s, operation latency, view changes, safety,
    /// with up to f (or, forced, more) replicas misbehaving.
    Pbft(agentmesh::bench::PbftOptions),
    /// Request/reply between agents on two nodes: round trips/s and their
    /// latency, to a Rust responder and to a Python process agent.
    Agents(agentmesh::bench::AgentsOptions),
    /// Publish/subscribe fan-out: one publisher, one subscriber on each
    /// node; copies delivered/s, their latency, exactly once.
    Fanout(agentmesh::bench::FanoutOptions),
    /// The placement planner: bin-packing quality against the best known
    /// (on OR-Library files given with --instances, or generated ones),
    /// plan and rebalancing speed, and geography.
    Placement(agentmesh::bench::PlacementOptions),
    /// Every report.json below a folder in one Markdown table.
    Summary {
        #[arg(default_value = "bench-results")]
        folder: PathBuf,
    },
    /// One worker process of `storm --processes P` (started by it).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        config: PathBuf,
        /// The node ids this worker runs, comma-separated.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
    },
}

fn parse_kill_percent(text: &str) -> Result<f64, String> {
    let percent: f64 = text
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (try 10)"))?;
    if !(percent > 0.0 && percent < 100.0) {
        return Err(format!(
            "{text:?}: the percentage of nodes to stop must be above 0 and below 100"
        ));
    }
    Ok(percent)
}

fn init_logging(format: LogFormat, default_level: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // raft-engine reports what it finds when a log opens in its own words,
    // and again when the log is opened a second time to cut a torn tail;
    // the replica says it once, naming the file. RUST_LOG=raft_engine=warn
    // shows raft-engine's own lines.
    let engine_asked = std::env::var("RUST_LOG").is_ok_and(|value| value.contains("raft_engine"));
    if !engine_asked {
        filter = filter.add_directive("raft_engine=off".parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Node { .. } => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up {
                config,
                duration,
                json,
                kill,
                kill_after,
                kill_how,
            } => {
                commands::up(commands::UpOptions {
                    config,
                    duration,
                    kill_percent: kill,
                    kill_after,
                    kill_how,
                    json,
                })
                .await
            }
            Command::Node {
                config,
                id,
                key,
                duration,
                status_interval,
            } => {
                commands::node(commands::NodeOptions {
                    config,
                    id,
                    key,
                    duration,
                    status_interval,
                })
                .await
            }
            Command::Keygen {
                out,
                config,
                ids,
                listen,
                client_listen,
            } => commands::keygen(
                &out,
                &ids,
                config.as_deref(),
                commands::Addresses {
                    listen,
                    client_listen,
                },
            ),
            Command::Check { config, target, id } => {
                commands::check(&config, target, id.as_deref())
            }
            Command::Topology(options) => commands::topology(&options),
            Command::Place(options) => commands::place(&options),
            Command::Kv(action) => commands::kv(&action).await,
            Command::Call(options) => commands::call(&options).await,
            Command::Members(action) => commands::members(&action).await,
            Command::Status { config, json } => commands::status(&config, json).await,
            Command::Chaos(options) => agentmesh::chaos::chaos(options).await,
            Command::Bench(BenchCommand::Storm(options)) => agentmesh::bench::storm(options).await,
            Command::Bench(BenchCommand::Raft(options)) => agentmesh::bench::raft(options).await,
            Command::Bench(BenchCommand::Pbft(options)) => agentmesh::bench::pbft(options).await,
            Command::Bench(BenchCommand::Agents(options)) => {
                agentmesh::bench::agents(options).await
            }
            Command::Bench(BenchCommand::Placement(options)) => {
                agentmesh::bench::placement(options).await
            }
            Command::Bench(BenchCommand::Fanout(options)) => {
                agentmesh::bench::fanout(options).await
            }
            Command::Bench(BenchCommand::Worker { config, nodes }) => {
                agentmesh::bench::workers::serve(&config, &nodes).await
            }
            Command::Bench(BenchCommand::Summary { folder }) => agentmesh::bench::summary(&folder)
                .map(|table| {
                    print!("{table}");
                    0
                }),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// A hundred nodes in one process allocate and free small buffers on every
/// hop from both worker threads; glibc's allocator spent a fifth of the CPU
/// on it (and its lock), mimalloc's per-thread heaps a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
