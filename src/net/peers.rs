//! The live links of one node: for each connected peer its connection,
//! its two bounded send queues (data, and heartbeats and membership frames
//! written first) and when it last carried traffic. The transport fills
//! the table as connections come and go; the router, the topology and the
//! replicas queue frames through it without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::clock::monotonic_micros;
use crate::protocols::mesh::SendError;
use crate::protocols::wire::TrafficClass;

/// One frame queued for a peer: its class and its encoded bytes.
pub type OutboundFrame = (TrafficClass, Bytes);

/// The sending side of one live connection.
#[derive(Clone)]
pub struct PeerLink {
    /// Distinguishes this connection from an earlier or later one to the
    /// same peer, so a closing connection never unregisters its successor.
    pub connection_id: usize,
    /// For streams of their own (snapshot transfers).
    pub connection: quinn::Connection,
    pub queue: mpsc::Sender<OutboundFrame>,
    /// Heartbeats and membership frames, written before anything waiting
    /// in `queue`: a backlog of data must not make this node look dead.
    pub control: mpsc::Sender<OutboundFrame>,
    pub activity: Arc<LinkActivity>,
}

/// When a link last carried traffic each way, in monotonic microseconds
/// (0: never). The topology actor counts any frame received as a sign of
/// life, and heartbeats only links that carried no traffic lately.
#[derive(Default)]
pub struct LinkActivity {
    pub sent_micros: AtomicU64,
    pub received_micros: AtomicU64,
}

impl LinkActivity {
    pub fn sent_now(&self) {
        self.sent_micros
            .store(monotonic_micros(), Ordering::Relaxed);
    }

    pub fn received_now(&self) {
        self.received_micros
            .store(monotonic_micros(), Ordering::Relaxed);
    }
}

/// Live connections by peer node id.
#[derive(Default)]
pub struct PeerTable {
    links: DashMap<String, PeerLink>,
}

impl PeerTable {
    /// Queues a frame of traffic for `peer` without waiting; it tells the
    /// peer this node is alive, so the link needs no heartbeat for a while.
    pub fn try_send(&self, peer: &str, frame: OutboundFrame) -> Result<(), SendError> {
        self.queue(peer, frame, true)
    }

    /// Queues a heartbeat or membership frame for `peer` without waiting,
    /// on the link's control queue, which is written first; unlike
    /// [`PeerTable::try_send`], it does not count as traffic.
    pub fn try_send_control(&self, peer: &str, frame: OutboundFrame) -> Result<(), SendError> {
        self.queue(peer, frame, false)
    }

    /// Never waits, so holding the table's read guard meanwhile is fine.
    fn queue(&self, peer: &str, frame: OutboundFrame, traffic: bool) -> Result<(), SendError> {
        let link = self
            .links
            .get(peer)
            .ok_or_else(|| SendError::PeerDown(peer.to_string()))?;
        let queue = if traffic { &link.queue } else { &link.control };
        queue.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_string()),
            mpsc::error::TrySendError::Closed(_) => SendError::PeerDown(peer.to_string()),
        })?;
        if traffic {
            link.activity.sent_now();
        }
        Ok(())
    }

    /// Queues `frames` for `peer` all or none, without waiting: the parts
    /// of one message must not be cut short by a full queue.
    pub fn try_send_all(&self, peer: &str, frames: Vec<OutboundFrame>) -> Result<(), SendError> {
        let link = self
            .links
            .get(peer)
            .ok_or_else(|| SendError::PeerDown(peer.to_string()))?;
        let permits = link
            .queue
            .try_reserve_many(frames.len())
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_string()),
                mpsc::error::TrySendError::Closed(_) => SendError::PeerDown(peer.to_string()),
            })?;
        for (permit, frame) in permits.zip(frames) {
            permit.send(frame);
        }
        link.activity.sent_now();
        Ok(())
    }

    /// The connection to `peer`, if it is up.
    pub fn connection(&self, peer: &str) -> Option<quinn::Connection> {
        self.links.get(peer).map(|link| link.connection.clone())
    }

    pub fn insert(&self, peer: &str, link: PeerLink) {
        self.links.insert(peer.to_string(), link);
    }

    /// Removes `peer`'s link only if it is still `connection_id`.
    pub fn remove_if_current(&self, peer: &str, connection_id: usize) {
        self.links
            .remove_if(peer, |_, link| link.connection_id == connection_id);
    }

    /// Frames the send queue to `peer` has room for, if connected.
    pub fn queue_room(&self, peer: &str) -> Option<usize> {
        self.links.get(peer).map(|link| link.queue.capacity())
    }

    pub fn is_connected(&self, peer: &str) -> bool {
        self.links
            .get(peer)
            .is_some_and(|link| !link.queue.is_closed())
    }

    pub fn activity(&self, peer: &str) -> Option<Arc<LinkActivity>> {
        self.links.get(peer).map(|link| link.activity.clone())
    }

    pub fn connected(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.links.iter().map(|entry| entry.key().clone()).collect();
        peers.sort();
        peers
    }
}
