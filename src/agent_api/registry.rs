//! Behaviours by name: the factories a node makes its agents with, each
//! given the agent's typed parameters (`[agents.params]` in the config).
//! A node binary registers its own beside the built-ins; the config names
//! one per agent, and [`Registry::check`] finds every unknown name and
//! every bad parameter before anything starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{AgentConfig, ClusterConfig, ConfigError, ConfigProblem, ParamError, Params};

use super::behaviour::Behaviour;

/// What a factory is given to make one agent's behaviour.
pub struct AgentSpec<'a> {
    /// The agent's name.
    pub name: &'a str,
    /// The node it runs on.
    pub node: &'a str,
    /// Its parameters.
    pub params: &'a Params,
    /// The whole cluster's config (its agents, for behaviours that pick
    /// destinations; its limits).
    pub config: &'a ClusterConfig,
}

/// Makes a behaviour from an agent's spec, or says which parameter is wrong.
pub type Factory =
    Arc<dyn Fn(&AgentSpec<'_>) -> Result<Box<dyn Behaviour>, ParamError> + Send + Sync>;

/// Why a behaviour could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MakeError {
    /// No factory has the name.
    #[error("unknown behaviour {name:?}; available: {available}")]
    Unknown {
        /// The name the config gave.
        name: String,
        /// The registered names, comma-separated.
        available: String,
    },
    /// The factory refused the parameters.
    #[error("{0}")]
    Params(#[from] ParamError),
}

/// The behaviour name of agents that are processes speaking Maelstrom's
/// protocol (`agent_api::maelstrom`): the node runs those itself, so no
/// factory makes them, and every registry knows the name.
pub const PROCESS: &str = "process";

/// Behaviours by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Registry {
    /// No behaviour at all.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The built-in behaviours: `echo`, `sink` and `storm`.
    pub fn with_builtins() -> Registry {
        let mut registry = Registry::empty();
        super::builtins::register(&mut registry);
        registry
    }

    /// Registers `factory` under `name`, replacing one of the same name.
    ///
    /// # Panics
    ///
    /// If `name` is `process`, which names the agents the node runs as
    /// processes.
    pub fn register<F>(&mut self, name: &str, factory: F) -> &mut Registry
    where
        F: Fn(&AgentSpec<'_>) -> Result<Box<dyn Behaviour>, ParamError> + Send + Sync + 'static,
    {
        assert_ne!(
            name, PROCESS,
            "\"process\" names agents the node runs as processes"
        );
        self.factories.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// The registered names and `process`, in order.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        names.push(PROCESS);
        names.sort();
        names
    }

    /// Makes the behaviour of `agent`.
    pub fn make(
        &self,
        agent: &AgentConfig,
        config: &ClusterConfig,
    ) -> Result<Box<dyn Behaviour>, MakeError> {
        let factory = self
            .factories
            .get(&agent.behaviour)
            .ok_or_else(|| MakeError::Unknown {
                name: agent.behaviour.clone(),
                available: self.names().join(", "),
            })?;
        let spec = AgentSpec {
            name: &agent.name,
            node: &agent.node,
            params: &agent.params,
            config,
        };
        Ok(factory(&spec)?)
    }

    /// Makes every agent's behaviour once (and drops it), so that an
    /// unknown behaviour or a bad parameter is found before anything
    /// starts.
    pub fn check(&self, config: &ClusterConfig) -> Result<(), ConfigError> {
        let problems = self.problems(config);
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError {
            file: config.source.clone(),
            problems,
        })
    }

    /// What [`Registry::check`] finds, naming each config entry and key
    /// (once per entry): the config's [`crate::config::BehaviourCheck`].
    pub fn problems(&self, config: &ClusterConfig) -> Vec<ConfigProblem> {
        let mut problems: Vec<ConfigProblem> = Vec::new();
        let mut entries_seen = std::collections::BTreeSet::new();
        for agent in &config.agents {
            if !entries_seen.insert(agent.entry) {
                continue;
            }
            let made = match agent.behaviour == PROCESS {
                true => process_params(agent, config),
                false => self.make(agent, config).map(drop),
            };
            let problem = match made {
                Ok(()) => continue,
                Err(error @ MakeError::Unknown { .. }) => ConfigProblem {
                    key_path: format!("agents[{}].behaviour", agent.entry),
                    reason: error.to_string(),
                },
                Err(MakeError::Params(error)) => ConfigProblem {
                    key_path: agent.params.key_path(agent.entry, &error.key),
                    reason: error.reason,
                },
            };
            problems.push(problem);
        }
        problems
    }
}

/// Checks the parameters of a process agent.
fn process_params(agent: &AgentConfig, config: &ClusterConfig) -> Result<(), MakeError> {
    let spec = AgentSpec {
        name: &agent.name,
        node: &agent.node,
        params: &agent.params,
        config,
    };
    super::maelstrom::ProcessParams::from_spec(&spec)?;
    Ok(())
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(agents: &str) -> Result<ClusterConfig, ConfigError> {
        let text = format!(
            "[cluster]\nname = \"t\"\n[[nodes]]\nid = \"n1\"\nlisten = \"127.0.0.1:0\"\n{agents}"
        );
        let registry = Registry::with_builtins();
        crate::config::parse_checked(&text, "t.toml", std::path::Path::new("."), &|config| {
            registry.problems(config)
        })
    }

    fn problems(agents: &str) -> Vec<(String, String)> {
        let error = config(agents).expect_err("the config has a problem");
        (error.problems.into_iter())
            .map(|problem| (problem.key_path, problem.reason))
            .collect()
    }

    #[test]
    fn storm_keys_are_found_on_the_entry_or_under_params() {
        let on_entry = "[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\nrate = 5\n";
        let under = "[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\n[agents.params]\nrate = 5\n";
        for text in [on_entry, under] {
            let config = config(text).unwrap();
            assert_eq!(
                config.agents[0].params.table()["rate"].as_integer(),
                Some(5)
            );
        }
        let both = "[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\nrate = 5\n[agents.params]\nrate = 6\n";
        assert_eq!(
            problems(both),
            [(
                "agents[0].rate".to_string(),
                "also given as params.rate: give it once".to_string()
            )]
        );
    }

    #[test]
    fn a_problem_names_the_key_where_it_was_written() {
        let on_entry = "[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\ntick_ms = 0\n";
        assert_eq!(problems(on_entry)[0].0, "agents[0].tick_ms");
        let under = "[[agents]]\nname = \"s\"\nbehaviour = \"storm\"\n[agents.params]\nspeed = 1\n";
        let (key_path, reason) = problems(under).remove(0);
        assert!(key_path.starts_with("agents[0].params"), "{key_path}");
        assert!(reason.contains("unknown field `speed`"), "{reason}");
        let echo = "[[agents]]\nname = \"e\"\nbehaviour = \"echo\"\n[agents.params]\nx = 1\n";
        assert_eq!(
            problems(echo),
            [(
                "agents[0].params.x".to_string(),
                "not used by behaviour \"echo\"".to_string()
            )]
        );
    }
}
