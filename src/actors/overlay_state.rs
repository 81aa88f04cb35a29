//! What this node knows of the overlay, kept across the topology actor's
//! restarts: the neighbours it chose, the routing view the router and the
//! readers route by, the committed overlay it applies, and whether this
//! node's replica leads the control plane (the topology actor then
//! proposes changes). The topology actor writes it, the control-plane
//! replica records commits and leadership in it, the router reads it.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use crate::protocols::mesh::{OverlayCommit, RoutingView};

pub struct OverlayState {
    /// The neighbours the topology chose; the transport connects to these.
    pub neighbours: RwLock<Vec<String>>,
    pub routing: RwLock<Arc<RoutingView>>,
    /// The committed overlay this node applies (epoch 0, nobody down,
    /// until it learns one).
    pub committed_overlay: RwLock<Arc<OverlayCommit>>,
    pub replica_leading: AtomicBool,
}

impl OverlayState {
    /// Nothing known yet but `routing`.
    pub fn new(routing: RoutingView) -> OverlayState {
        OverlayState {
            neighbours: RwLock::new(Vec::new()),
            routing: RwLock::new(Arc::new(routing)),
            committed_overlay: RwLock::default(),
            replica_leading: AtomicBool::new(false),
        }
    }

    /// Records `commit` as the committed overlay if it is newer than the
    /// one recorded; says whether it was.
    pub fn record_overlay(&self, commit: &Arc<OverlayCommit>) -> bool {
        let mut recorded = self
            .committed_overlay
            .write()
            .expect("committed overlay lock is never poisoned");
        let newer = commit.epoch > recorded.epoch;
        if newer {
            *recorded = commit.clone();
        }
        newer
    }

    /// The committed overlay this node applies, with its directory of
    /// planned agents.
    pub fn committed(&self) -> Arc<OverlayCommit> {
        self.committed_overlay
            .read()
            .expect("committed overlay lock is never poisoned")
            .clone()
    }

    pub fn routing_view(&self) -> Arc<RoutingView> {
        self.routing
            .read()
            .expect("routing lock is never poisoned")
            .clone()
    }
}
