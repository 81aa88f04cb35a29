//! What every node of a cluster knows about all of them: names and their
//! wire indices, keys, addresses, which node hosts each agent, and the
//! base overlay. Built once per process and shared by its nodes: with
//! 1,000 nodes in one process a copy per node would cost about a megabyte
//! and a ten-millisecond overlay build each.

use std::collections::HashMap;
use std::net::SocketAddr;

use ed25519_dalek::VerifyingKey;

use crate::config::ClusterConfig;
use crate::protocols::topology::Topology;
use crate::tls::PinnedKeys;

pub struct Directory {
    /// Every configured node id, sorted; a node's index here is how paths
    /// name it on the wire.
    pub node_names: Vec<String>,
    pub node_index: HashMap<String, u16>,
    /// Every node's key.
    pub node_keys: HashMap<String, VerifyingKey>,
    /// The same keys as the TLS verifiers check them.
    pub pinned: PinnedKeys,
    /// Where every node listens.
    pub node_addresses: HashMap<String, SocketAddr>,
    /// Which node hosts each agent.
    pub agent_nodes: HashMap<String, String>,
    /// The overlay's shape and its base over every configured node.
    pub topology: Topology,
}

impl Directory {
    pub fn new(
        config: &ClusterConfig,
        node_keys: HashMap<String, VerifyingKey>,
        node_addresses: HashMap<String, SocketAddr>,
    ) -> Directory {
        let mut node_names: Vec<String> = config.nodes.iter().map(|n| n.id.clone()).collect();
        node_names.sort();
        let node_index = node_names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let index = u16::try_from(index).expect("config limits nodes to NODES_MAX");
                (name.clone(), index)
            })
            .collect();
        let agent_nodes = config
            .agents
            .iter()
            .map(|agent| (agent.name.clone(), agent.node.clone()))
            .collect();
        let pinned = PinnedKeys::new(node_keys.iter().map(|(id, key)| (id.clone(), *key)));
        let shape = config.topology.shape(node_names.len());
        let topology = Topology::new(shape, &node_names, config.seed);
        Directory {
            node_names,
            node_index,
            node_keys,
            pinned,
            node_addresses,
            agent_nodes,
            topology,
        }
    }
}
