//! `agentmesh kv` and `agentmesh status`: the control plane's key-value
//! space and the replicas' view of the Raft group, from the command line.

use std::path::Path;

use crate::clients::control::ControlClient;
use crate::protocols::control::{ClientReply, ReplicaStatus};

/// What `agentmesh kv` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum KvAction {
    /// Set KEY to VALUE (committed by a majority of the replicas).
    Put {
        #[command(flatten)]
        cluster: ConfigFile,
        key: String,
        value: String,
    },
    /// Print the value at KEY (a linearizable read); exit 1 if absent.
    Get {
        #[command(flatten)]
        cluster: ConfigFile,
        key: String,
    },
    /// Remove KEY; exit 1 if it was absent.
    Delete {
        #[command(flatten)]
        cluster: ConfigFile,
        key: String,
    },
    /// Set KEY to TO if it holds FROM now; exit 1 if it is absent (unless
    /// --create), 3 if it holds something else (nothing changes).
    Cas {
        #[command(flatten)]
        cluster: ConfigFile,
        key: String,
        from: String,
        to: String,
        /// Also set it when KEY is absent.
        #[arg(long)]
        create: bool,
    },
}

/// What `agentmesh members` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum MembersAction {
    /// Add NODE's standby replica ([control] standby) as a learner; the
    /// leader makes it a voter once it has caught up.
    Add {
        #[command(flatten)]
        cluster: ConfigFile,
        node: String,
    },
    /// Remove NODE's replica from the group.
    Remove {
        #[command(flatten)]
        cluster: ConfigFile,
        node: String,
    },
    /// On NODE's host, with the node stopped: move NODE's replica folder
    /// aside (kept, untouched) and start it empty, its votes withheld
    /// until a leader elected without it has caught it up. For a log that
    /// cannot be read past; a log that lost data is found and withheld
    /// without this.
    Rebuild {
        #[command(flatten)]
        cluster: ConfigFile,
        node: String,
        /// The highest term any replica reports (`agentmesh status`),
        /// when the folder's identity record is unreadable too.
        #[arg(long)]
        term_lost: Option<u64>,
    },
}

/// Changes the group's membership; exit 0 once the change is committed.
pub async fn members(action: &MembersAction) -> anyhow::Result<i32> {
    let (cluster, node, add) = match action {
        MembersAction::Add { cluster, node } => (cluster, node, true),
        MembersAction::Remove { cluster, node } => (cluster, node, false),
        MembersAction::Rebuild {
            cluster,
            node,
            term_lost,
        } => return rebuild(&cluster.config, node, *term_lost),
    };
    let config = crate::config::load(&cluster.config)?;
    let mut client = ControlClient::from_config(&config)?;
    client.change_membership(node, add).await?;
    let done = if add {
        "added as a learner; it votes once it has caught up"
    } else {
        "removed"
    };
    println!("{node}: {done}");
    Ok(0)
}

fn rebuild(config: &std::path::Path, node: &str, term_lost: Option<u64>) -> anyhow::Result<i32> {
    let config = crate::config::load(config)?;
    let control = &config.control;
    let raft_id = control.replica_id(node).ok_or_else(|| {
        anyhow::anyhow!("{node} holds no control-plane replica in {}", config.source)
    })?;
    let data_dir = control.data_dir.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{} sets no control.data_dir: there is no replica folder to rebuild",
            config.source
        )
    })?;
    let owner = crate::actors::raft_replica::identity::Owner {
        cluster: config.name.clone(),
        node: node.to_string(),
        raft_id,
    };
    let rebuilt =
        crate::actors::raft_replica::log::rebuild(&data_dir.join(node), &owner, term_lost)
            .map_err(|reason| anyhow::anyhow!("{node}: {reason}"))?;
    println!(
        "{node}: the replica folder as it was is kept in {}; it starts empty, votes {}. Start the node again.",
        rebuilt.kept.display(),
        rebuilt.voting
    );
    Ok(0)
}

/// The cluster config a client command reads the replicas' addresses from.
#[derive(Clone, Debug, clap::Args)]
pub struct ConfigFile {
    #[arg(long)]
    pub config: std::path::PathBuf,
}

/// What `agentmesh call` is told.
#[derive(Clone, Debug, clap::Args)]
pub struct CallOptions {
    /// The cluster's config: a node with `client_listen` takes the call.
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// The agent to ask.
    pub agent: String,
    /// The request's body: a JSON body for a process agent (Maelstrom's
    /// `{"type": ...}`), any text for a Rust agent.
    pub body: String,
    /// How long to wait for the agent's response.
    #[arg(long, default_value = "5s", value_parser = crate::commands::parse_duration)]
    pub timeout: std::time::Duration,
}

/// Sends one request to an agent and prints its response's body (JSON on
/// one line when it is JSON). Exit 0 answered, 2 no answer or refused.
pub async fn call(options: &CallOptions) -> anyhow::Result<i32> {
    let config = crate::config::load(&options.config)?;
    let mut client = ControlClient::for_calls(&config).map_err(|_| {
        anyhow::anyhow!(
            "{} gives no node a client_listen address: agentmesh call asks through one",
            config.source
        )
    })?;
    let timeout_ms = options.timeout.as_millis().max(1) as u64;
    let body = options.body.as_bytes().to_vec();
    let answer = client.call_agent(&options.agent, body, timeout_ms).await?;
    match serde_json::from_slice::<serde_json::Value>(&answer) {
        Ok(json) => println!("{json}"),
        Err(_) => println!("{}", String::from_utf8_lossy(&answer)),
    }
    Ok(0)
}

/// Runs one key-value operation. Exit codes: 0 done, 1 no such key,
/// 2 any error (no quorum, no answer, bad input), 3 a compare-and-set
/// found another value.
pub async fn kv(action: &KvAction) -> anyhow::Result<i32> {
    let (KvAction::Put { cluster, .. }
    | KvAction::Get { cluster, .. }
    | KvAction::Delete { cluster, .. }
    | KvAction::Cas { cluster, .. }) = action;
    let config = crate::config::load(&cluster.config)?;
    let mut client = ControlClient::from_config(&config)?;
    match action {
        KvAction::Put { key, value, .. } => {
            client.put(key, value.as_bytes().to_vec()).await?;
            Ok(0)
        }
        KvAction::Get { key, .. } => match client.get(key).await? {
            Some(value) => {
                println!("{}", String::from_utf8_lossy(&value));
                Ok(0)
            }
            None => {
                eprintln!("no key {key:?}");
                Ok(1)
            }
        },
        KvAction::Cas {
            key,
            from,
            to,
            create,
            ..
        } => {
            let (from, to) = (from.as_bytes().to_vec(), to.as_bytes().to_vec());
            match client.compare_and_set(key, from, to, *create).await? {
                ClientReply::Done => Ok(0),
                ClientReply::NotFound => {
                    eprintln!("no key {key:?} (--create sets it anyway)");
                    Ok(1)
                }
                _ => {
                    eprintln!("{key:?} holds another value; nothing changed");
                    Ok(3)
                }
            }
        }
        KvAction::Delete { key, .. } => {
            if client.delete(key).await? {
                Ok(0)
            } else {
                eprintln!("no key {key:?}");
                Ok(1)
            }
        }
    }
}

/// Prints every replica's status; exits 0 when one of them knows a leader.
pub async fn status(config: &Path, json: bool) -> anyhow::Result<i32> {
    let config = crate::config::load(config)?;
    let mut client = ControlClient::from_config(&config)?;
    let statuses = client.statuses().await;
    let leader_known = statuses
        .iter()
        .any(|(_, status)| status.as_ref().is_ok_and(|status| status.leader.is_some()));
    if json {
        let rows: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(node, status)| match status {
                Ok(status) => serde_json::to_value(status).expect("status serialises"),
                Err(error) => serde_json::json!({"node": node, "error": error}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", status_table(&statuses));
    }
    Ok(if leader_known { 0 } else { 2 })
}

fn status_table(statuses: &[(String, Result<ReplicaStatus, String>)]) -> String {
    let mut text = String::from(
        "replica  role            leader  term  commit  applied  last  snapshot  keys  epoch  fsync  members\n",
    );
    for (node, status) in statuses {
        match status {
            Ok(status) => {
                let members = match status.learners.is_empty() {
                    true => status.voters.join(","),
                    false => format!(
                        "{} (learners {})",
                        status.voters.join(","),
                        status.learners.join(",")
                    ),
                };
                text.push_str(&format!(
                    "{:<8} {:<15} {:<7} {:>4} {:>7} {:>8} {:>5} {:>9} {:>5} {:>6}  {:<5}  {}\n",
                    status.node,
                    status.role,
                    status.leader.as_deref().unwrap_or("-"),
                    status.term,
                    status.commit_index,
                    status.applied_index,
                    status.last_index,
                    status.snapshot_index,
                    status.keys,
                    status.overlay_epoch,
                    if status.fsync { "on" } else { "off" },
                    members,
                ));
            }
            Err(error) => text.push_str(&format!("{node:<8} unreachable: {error}\n")),
        }
    }
    for status in statuses
        .iter()
        .filter_map(|(_, status)| status.as_ref().ok())
    {
        if status.voting != "allowed" {
            text.push_str(&format!(
                "{}: voting {}; {} vote requests left unanswered{}\n",
                status.node,
                status.voting,
                status.votes_withheld,
                match status.voting_reason.is_empty() {
                    true => String::new(),
                    false => format!(" ({})", status.voting_reason),
                }
            ));
        }
    }
    // The overlay as the replica that applied the most has it.
    let latest = statuses
        .iter()
        .filter_map(|(_, status)| status.as_ref().ok())
        .max_by_key(|status| status.applied_index);
    if let Some(status) = latest {
        let down = match status.overlay_down.is_empty() {
            true => "none".to_string(),
            false => status.overlay_down.join(","),
        };
        text.push_str(&format!(
            "overlay epoch {} (applied by {}), nodes down: {down}\n",
            status.overlay_epoch, status.node
        ));
        text.push_str(&placements_text(status));
    }
    text
}

/// The committed directory of planned agents, node by node.
fn placements_text(status: &ReplicaStatus) -> String {
    if status.placed_agents == 0 {
        return String::new();
    }
    let mut by_node: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (agent, node) in &status.placements {
        by_node.entry(node).or_default().push(agent);
    }
    let mut text = format!("placements: {} planned agents\n", status.placed_agents);
    for (node, agents) in by_node {
        text.push_str(&format!("  {node:<8} {}\n", agents.join(", ")));
    }
    let listed = status.placements.len() as u64;
    if listed < status.placed_agents {
        let more = status.placed_agents - listed;
        text.push_str(&format!(
            "  … and {more} more (--json lists the first {listed})\n"
        ));
    }
    text
}
