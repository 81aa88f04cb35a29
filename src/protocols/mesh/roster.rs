//! Who is in the cluster, as the data path needs it: every node's name,
//! wire index and key, and which node hosts each agent. Built once per
//! process from the config and shared by its nodes.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;

use crate::protocols::wire::Destination;

/// What a node's call desk is named after: `call@<node>`. Configured
/// names cannot hold `@`, so a desk's name is never an agent's.
pub const DESK_PREFIX: &str = "call@";

/// The name of `node`'s call desk: the agent that asks other agents on
/// behalf of clients outside the cluster (`agentmesh call`).
pub fn desk_of(node: &str) -> String {
    format!("{DESK_PREFIX}{node}")
}

pub struct Roster {
    /// Every configured node id, sorted; a node's index here is how paths
    /// name it on the wire.
    pub node_names: Vec<String>,
    pub node_index: HashMap<String, u16>,
    /// Every node's key.
    pub node_keys: HashMap<String, VerifyingKey>,
    /// Which node hosts each agent, as the config places it (a committed
    /// directory of planned agents overrides it; see
    /// [`super::OverlayCommit`]).
    pub agent_nodes: HashMap<String, String>,
    /// Every configured agent, sorted; an agent's index here is how a
    /// committed directory names it on the wire.
    pub agent_names: Vec<String>,
    pub agent_index: HashMap<String, u32>,
    /// Each topic's subscribers, sorted.
    pub topics: HashMap<String, Vec<String>>,
}

impl Roster {
    /// The roster of `node_names` with their keys, whose agents live
    /// where `agent_nodes` (agent, node) says. The caller checks that the
    /// nodes fit `NODES_MAX`.
    pub fn new(
        node_names: impl IntoIterator<Item = String>,
        node_keys: HashMap<String, VerifyingKey>,
        agent_nodes: impl IntoIterator<Item = (String, String)>,
    ) -> Roster {
        let mut node_names: Vec<String> = node_names.into_iter().collect();
        node_names.sort();
        let node_index = node_names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let index = u16::try_from(index).expect("config limits nodes to NODES_MAX");
                (name.clone(), index)
            })
            .collect();
        let agent_nodes: HashMap<String, String> = agent_nodes.into_iter().collect();
        let mut agent_names: Vec<String> = agent_nodes.keys().cloned().collect();
        agent_names.sort();
        let agent_index = (agent_names.iter().enumerate())
            .map(|(index, name)| {
                let index = u32::try_from(index).expect("config limits agents to AGENTS_MAX");
                (name.clone(), index)
            })
            .collect();
        Roster {
            node_names,
            node_index,
            node_keys,
            agent_nodes,
            agent_names,
            agent_index,
            topics: HashMap::new(),
        }
    }

    /// The roster with the subscriptions `(topic, agent)` added.
    pub fn with_subscriptions(
        mut self,
        subscriptions: impl IntoIterator<Item = (String, String)>,
    ) -> Roster {
        for (topic, agent) in subscriptions {
            self.topics.entry(topic).or_default().push(agent);
        }
        for subscribers in self.topics.values_mut() {
            subscribers.sort();
            subscribers.dedup();
        }
        self
    }

    /// The subscribers of `topic`, sorted (none for a topic nobody
    /// subscribes to).
    pub fn subscribers(&self, topic: &str) -> &[String] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Every agent whose name starts with `prefix`, sorted.
    pub fn agents_with_prefix(&self, prefix: &str) -> Vec<String> {
        (self.agent_names.iter())
            .filter(|agent| agent.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The node hosting `agent`: a planned agent where `placed` (a
    /// committed directory) has it, else where [`Roster::configured_node`]
    /// says.
    pub fn agent_node<'r>(
        &'r self,
        placed: &'r BTreeMap<String, String>,
        agent: &'r str,
    ) -> Option<&'r str> {
        match placed.get(agent) {
            Some(node) => Some(node),
            None => self.configured_node(agent),
        }
    }

    /// The node hosting `agent` as the config has it: a configured agent,
    /// or a node's call desk (`call@<node>`, see [`desk_of`]).
    pub fn configured_node<'r>(&'r self, agent: &'r str) -> Option<&'r str> {
        if let Some(node) = self.agent_nodes.get(agent) {
            return Some(node);
        }
        let node = agent.strip_prefix(DESK_PREFIX)?;
        self.node_index.contains_key(node).then_some(node)
    }

    /// The node an envelope is going to, if it names one this cluster has.
    pub fn node_of<'r>(&'r self, destination: &'r Destination) -> Option<&'r str> {
        match destination {
            Destination::Agent(agent) => self.configured_node(agent),
            Destination::Node(node) | Destination::Placed { node, .. } => {
                self.node_index.contains_key(node).then_some(node.as_str())
            }
            Destination::Broadcast => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_and_call_desks_are_found_on_their_nodes() {
        let nodes = ["n1".to_string(), "n2".to_string()];
        let roster = Roster::new(nodes, HashMap::new(), [("a".into(), "n1".into())]);
        let none = BTreeMap::new();
        assert_eq!(roster.agent_node(&none, "a"), Some("n1"));
        assert_eq!(roster.agent_node(&none, &desk_of("n2")), Some("n2"));
        assert_eq!(roster.agent_node(&none, "call@n9"), None, "no such node");
        assert_eq!(roster.agent_node(&none, "b"), None);
        let placed = [("a".to_string(), "n2".to_string())].into();
        assert_eq!(roster.agent_node(&placed, "a"), Some("n2"), "as placed");
        let moved = Destination::Placed {
            agent: "a".into(),
            node: "n2".into(),
        };
        assert_eq!(roster.node_of(&moved), Some("n2"));
        let desk = Destination::Agent(desk_of("n1"));
        assert_eq!(roster.node_of(&desk), Some("n1"));
    }

    #[test]
    fn topics_list_their_subscribers_once_each_in_order() {
        let nodes = ["n1".to_string()];
        let agents = ["b", "a", "c"].map(|agent| (agent.to_string(), "n1".to_string()));
        let roster = Roster::new(nodes, HashMap::new(), agents).with_subscriptions(
            [("t", "c"), ("t", "a"), ("t", "c"), ("u", "b")]
                .map(|(topic, agent)| (topic.to_string(), agent.to_string())),
        );
        assert_eq!(roster.subscribers("t"), ["a", "c"]);
        assert_eq!(roster.subscribers("u"), ["b"]);
        assert!(roster.subscribers("v").is_empty());
        assert_eq!(roster.agents_with_prefix("a"), ["a"]);
        assert_eq!(roster.agents_with_prefix(""), ["a", "b", "c"]);
    }
}
