//! The `[[nodes]]` entries: ids, addresses, keys and data folders.

use super::*;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: String,
    pub listen: SocketAddr,
    /// None in local runs, where identities are made in memory.
    pub public_key: Option<VerifyingKey>,
    /// The private key, for `agentmesh node`; relative paths are resolved
    /// against the config file's folder.
    pub key_file: Option<PathBuf>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Capacity per named dimension (`cpu`, `memory_mb`, …), for planned
    /// placement.
    pub capacity: BTreeMap<String, f64>,
    /// Free-form labels that placement rules test.
    pub labels: BTreeMap<String, String>,
    /// Where this node answers `agentmesh kv` and `agentmesh status`
    /// (control-plane replicas only; loopback only).
    pub client_listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    id: String,
    listen: String,
    public_key: Option<String>,
    key_file: Option<PathBuf>,
    region: Option<String>,
    zone: Option<String>,
    client_listen: Option<String>,
    #[serde(default)]
    capacity: BTreeMap<String, f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

pub(super) fn validate_nodes(
    raw: &[RawNode],
    base: &Path,
    checker: &mut Checker,
) -> Vec<NodeConfig> {
    if raw.is_empty() {
        checker.fail("nodes", "the cluster needs at least one [[nodes]] entry");
    }
    if raw.len() > NODES_MAX {
        checker.fail(
            "nodes",
            format!("{} nodes exceed the limit of {NODES_MAX}", raw.len()),
        );
    }
    let mut ids = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut keys = BTreeMap::new();
    let mut nodes = Vec::with_capacity(raw.len());
    for (index, node) in raw.iter().enumerate() {
        let at = |key: &str| format!("nodes[{index}].{key}");
        checker.name(&at("id"), &node.id);
        if let Some(first) = ids.insert(node.id.clone(), index) {
            checker.fail(
                at("id"),
                format!("duplicate node id {:?} (also nodes[{first}])", node.id),
            );
        }
        let listen = match node.listen.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                let reason = format!("{:?} is not an address like 127.0.0.1:7401", node.listen);
                checker.fail(at("listen"), reason);
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        if listen.port() != 0 {
            if let Some(first) = addresses.insert(listen, index) {
                let reason = format!("duplicate address {listen} (also nodes[{first}])");
                checker.fail(at("listen"), reason);
            }
        }
        let public_key =
            node.public_key
                .as_deref()
                .and_then(|text| match identity::parse_public_key(text) {
                    Ok(key) => {
                        if let Some(first) = keys.insert(key.to_bytes(), index) {
                            let reason = format!("the same public key as nodes[{first}]");
                            checker.fail(at("public_key"), reason);
                        }
                        Some(key)
                    }
                    Err(error) => {
                        checker.fail(at("public_key"), error.to_string());
                        None
                    }
                });
        if node.key_file.is_some() && node.public_key.is_none() {
            checker.fail(
                at("key_file"),
                "a key_file needs the node's public_key beside it",
            );
        }
        let client_listen = node.client_listen.as_deref().and_then(|text| {
            let parsed = text.parse::<SocketAddr>();
            if parsed.is_err() {
                let reason = format!("{text:?} is not an address like 127.0.0.1:7481");
                checker.fail(at("client_listen"), reason);
            }
            parsed.ok()
        });
        check_capacity_and_labels(node, &at, checker);
        nodes.push(NodeConfig {
            capacity: node.capacity.clone(),
            labels: node.labels.clone(),
            client_listen,
            id: node.id.clone(),
            listen,
            public_key,
            key_file: node.key_file.as_ref().map(|path| base.join(path)),
            region: node.region.clone(),
            zone: node.zone.clone(),
        });
    }
    let keyed = raw.iter().filter(|node| node.public_key.is_some()).count();
    if keyed != 0 && keyed != raw.len() {
        checker.fail(
            "nodes",
            format!("{keyed} of {} nodes have a public_key: give every node one, or none (identities are then made in memory)", raw.len()),
        );
    }
    nodes
}

/// Amounts must be amounts, and `region` and `zone` are given as keys of
/// their own, not as labels.
fn check_capacity_and_labels(node: &RawNode, at: &dyn Fn(&str) -> String, checker: &mut Checker) {
    for (dimension, amount) in &node.capacity {
        checker.name(&at("capacity"), dimension);
        if !(amount.is_finite() && *amount >= 0.0) {
            let reason = format!("{amount} is not a non-negative amount");
            checker.fail(at(&format!("capacity.{dimension}")), reason);
        }
    }
    for (key, value) in &node.labels {
        checker.name(&at("labels"), key);
        checker.name(&at(&format!("labels.{key}")), value);
        if key == "region" || key == "zone" || key == "node" {
            let reason =
                format!("{key:?} is not a free-form label: give the node's {key} as its own key");
            checker.fail(at(&format!("labels.{key}")), reason);
        }
    }
}

impl NodeConfig {
    /// The labels placement reads: the free-form ones, with `region` and
    /// `zone` where given.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        if let Some(region) = &self.region {
            labels.insert("region".into(), region.clone());
        }
        if let Some(zone) = &self.zone {
            labels.insert("zone".into(), zone.clone());
        }
        labels
    }
}
