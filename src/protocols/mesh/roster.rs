//! Who is in the cluster, as the data path needs it: every node's name,
//! wire index and key, and which node hosts each agent. Built once per
//! process from the config and shared by its nodes.

use std::collections::HashMap;

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
    /// Which node hosts each agent.
    pub agent_nodes: HashMap<String, String>,
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
        Roster {
            node_names,
            node_index,
            node_keys,
            agent_nodes: agent_nodes.into_iter().collect(),
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
        let mut agents: Vec<String> = (self.agent_nodes.keys())
            .filter(|agent| agent.starts_with(prefix))
            .cloned()
            .collect();
        agents.sort();
        agents
    }

    /// The node hosting `agent`: a configured agent, or a node's call desk
    /// (`call@<node>`, see [`desk_of`]).
    pub fn agent_node<'r>(&'r self, agent: &'r str) -> Option<&'r str> {
        if let Some(node) = self.agent_nodes.get(agent) {
            return Some(node);
        }
        let node = agent.strip_prefix(DESK_PREFIX)?;
        self.node_index.contains_key(node).then_some(node)
    }

    /// The node an envelope is going to, if it names one this cluster has.
    pub fn node_of<'r>(&'r self, destination: &'r Destination) -> Option<&'r str> {
        match destination {
            Destination::Agent(agent) => self.agent_node(agent),
            Destination::Node(node) => self.node_index.contains_key(node).then_some(node.as_str()),
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
        assert_eq!(roster.agent_node("a"), Some("n1"));
        assert_eq!(roster.agent_node(&desk_of("n2")), Some("n2"));
        assert_eq!(roster.agent_node("call@n9"), None, "no such node");
        assert_eq!(roster.agent_node("b"), None);
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
