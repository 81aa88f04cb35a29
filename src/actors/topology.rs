//! The topology actor: chooses this node's overlay neighbours and tells the
//! transport to hold connections to exactly those.
//!
//! This version builds a full mesh among the configured nodes; the shapes
//! that choose fewer neighbours (partial mesh, ring, tree, ...) plug in here.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::context::NodeContext;
use super::transport::TransportMsg;

pub enum TopologyMsg {
    /// Tell the transport the current neighbours again (after it restarts).
    Publish,
}

pub struct Topology;

/// The neighbours of this node in the configured overlay.
pub fn neighbours_of(context: &NodeContext) -> Vec<String> {
    let config = &context.config;
    let names: Vec<String> = config.nodes.iter().map(|node| node.id.clone()).collect();
    let shape = config.topology.shape(names.len());
    crate::protocols::topology::build(shape, &names, config.seed).neighbours_of(&context.node_id)
}

fn publish(context: &NodeContext) {
    let neighbours = neighbours_of(context);
    *context
        .neighbours
        .write()
        .expect("neighbours lock is never poisoned") = neighbours.clone();
    if let Some(transport) = context.transport.get() {
        let _ = transport.cast(TransportMsg::SetNeighbours(neighbours));
    }
}

impl Actor for Topology {
    type Msg = TopologyMsg;
    type State = Arc<NodeContext>;
    type Arguments = Arc<NodeContext>;

    async fn pre_start(
        &self,
        _myself: ActorRef<TopologyMsg>,
        context: Arc<NodeContext>,
    ) -> Result<Arc<NodeContext>, ActorProcessingErr> {
        publish(&context);
        Ok(context)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TopologyMsg>,
        message: TopologyMsg,
        context: &mut Arc<NodeContext>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TopologyMsg::Publish => publish(context),
        }
        Ok(())
    }
}
