//! What every node of a cluster knows about all of them: the roster
//! (names and their wire indices, keys, which node hosts each agent),
//! addresses, and the base overlay. Built once per process and shared by its nodes: with
//! 1,000 nodes in one process a copy per node would cost about a megabyte
//! and a ten-millisecond overlay build each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::config::ClusterConfig;
use crate::net::tls::PinnedKeys;
use crate::protocols::mesh::Roster;
use crate::protocols::topology::Topology;

pub struct Directory {
    /// Names, wire indices and keys of every node, and which node hosts
    /// each agent.
    pub roster: Arc<Roster>,
    /// The same keys as the TLS verifiers check them.
    pub pinned: PinnedKeys,
    /// Where every node listens.
    pub node_addresses: HashMap<String, SocketAddr>,
    /// The overlay's shape and its base over every configured node.
    pub topology: Topology,
}

impl Directory {
    pub fn new(
        config: &ClusterConfig,
        node_keys: HashMap<String, VerifyingKey>,
        node_addresses: HashMap<String, SocketAddr>,
    ) -> Directory {
        let pinned = PinnedKeys::new(node_keys.iter().map(|(id, key)| (id.clone(), *key)));
        let roster = Roster::new(
            config.nodes.iter().map(|node| node.id.clone()),
            node_keys,
            config
                .agents
                .iter()
                .map(|agent| (agent.name.clone(), agent.node.clone())),
        )
        .with_subscriptions(config.agents.iter().flat_map(|agent| {
            (agent.subscribe.iter()).map(|topic| (topic.clone(), agent.name.clone()))
        }));
        let shape = config.topology.shape(roster.node_names.len());
        let topology = Topology::new(shape, &roster.node_names, config.seed);
        Directory {
            roster: Arc::new(roster),
            pinned,
            node_addresses,
            topology,
        }
    }
}
