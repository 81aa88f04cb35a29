//! Who is in the cluster, as the data path needs it: every node's name,
//! wire index and key, and which node hosts each agent. Built once per
//! process from the config and shared by its nodes.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::protocols::wire::Destination;

pub struct Roster {
    /// Every configured node id, sorted; a node's index here is how paths
    /// name it on the wire.
    pub node_names: Vec<String>,
    pub node_index: HashMap<String, u16>,
    /// Every node's key.
    pub node_keys: HashMap<String, VerifyingKey>,
    /// Which node hosts each agent.
    pub agent_nodes: HashMap<String, String>,
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
        }
    }

    /// The node an envelope is going to, if it names one this cluster has.
    pub fn node_of<'r>(&'r self, destination: &'r Destination) -> Option<&'r str> {
        match destination {
            Destination::Agent(agent) => self.agent_nodes.get(agent).map(String::as_str),
            Destination::Node(node) => self.node_index.contains_key(node).then_some(node.as_str()),
            Destination::Broadcast => None,
        }
    }
}
