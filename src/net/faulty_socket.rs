//! The fault-injecting UDP socket: a wrapper around the socket quinn sends
//! through, carrying out the fates [`crate::protocols::faults::FaultPlan`]
//! decides for each datagram — drop, delay, duplicate, reorder, and links
//! cut one or both ways — with a seeded RNG per socket.
//!
//! ```text
//! quinn endpoint ─try_send─▶ FaultySocket ─fate─▶ inner socket (now)
//!                                        └──────▶ held task ─sleep─▶ inner socket
//! ```
//!
//! [`FaultNet`] is shared by every node of a process: it holds the plan
//! (which a chaos run changes while the cluster runs), the nodes' addresses
//! and the counters. Receiving is untouched; faults are decided where a
//! datagram is sent. The layer exists only when the config has `[faults]`
//! or a chaos run asks for it.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, UdpPoller};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::FaultsConfig;
use crate::protocols::faults::{DropCause, Fate, FaultPlan, Link};
use crate::protocols::stable_hash;

/// Datagrams held back for a delay across every socket of a [`FaultNet`];
/// past this, a datagram picked for a delay is dropped and counted.
pub const HELD_DATAGRAMS_MAX: usize = 16_384;

/// What the fault layer did, over every socket.
#[derive(Debug, Default)]
pub struct FaultCounters {
    pub datagrams_sent: AtomicU64,
    pub dropped_cut: AtomicU64,
    pub dropped_loss: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
    /// Held datagrams dropped: too many held, or the socket was full when
    /// their time came.
    pub dropped_held: AtomicU64,
}

/// The faults of every node's socket in this process.
pub struct FaultNet {
    seed: u64,
    plan: RwLock<FaultPlan>,
    nodes_by_address: RwLock<HashMap<SocketAddr, String>>,
    /// Sockets made per node, so a restarted node draws fresh fates.
    sockets_made: Mutex<HashMap<String, u64>>,
    held: AtomicUsize,
    pub counters: FaultCounters,
}

impl fmt::Debug for FaultNet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FaultNet")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl FaultNet {
    pub fn new(config: &FaultsConfig) -> Arc<FaultNet> {
        Arc::new(FaultNet {
            seed: config.seed,
            plan: RwLock::new(config.plan.clone()),
            nodes_by_address: RwLock::new(HashMap::new()),
            sockets_made: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            counters: FaultCounters::default(),
        })
    }

    /// Datagrams to `address` are to `node`.
    pub fn learn(&self, node: &str, address: SocketAddr) {
        self.nodes_by_address
            .write()
            .expect("address lock is never poisoned")
            .insert(address, node.to_string());
    }

    /// `socket`, bound for `node`, as a socket that injects this net's faults.
    pub fn wrap(
        self: &Arc<FaultNet>,
        node: &str,
        socket: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        self.learn(node, socket.local_addr()?);
        let made = {
            let mut sockets = self.sockets_made.lock().expect("lock is never poisoned");
            let made = sockets.entry(node.to_string()).or_default();
            *made += 1;
            *made
        };
        let seed = self.seed ^ stable_hash(node) ^ made.rotate_left(32);
        Ok(Arc::new(FaultySocket {
            inner: quinn::TokioRuntime.wrap_udp_socket(socket)?,
            node: node.to_string(),
            net: self.clone(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }))
    }

    fn with_plan<T>(&self, change: impl FnOnce(&mut FaultPlan) -> T) -> T {
        change(&mut self.plan.write().expect("plan lock is never poisoned"))
    }

    /// Stops what `from` sends to `to`.
    pub fn cut(&self, from: &str, to: &str) {
        self.with_plan(|plan| plan.cut(from, to));
    }

    /// Cuts every link between `group` and the rest of `all`.
    pub fn partition(&self, group: &[String], all: &[String]) {
        self.with_plan(|plan| plan.partition(group, all));
    }

    /// Mends every cut link.
    pub fn heal(&self) {
        self.with_plan(FaultPlan::heal);
    }

    pub fn cut_links(&self) -> Vec<Link> {
        let plan = self.plan.read().expect("plan lock is never poisoned");
        plan.cut_links().cloned().collect()
    }

    fn node_at(&self, address: &SocketAddr) -> Option<String> {
        self.nodes_by_address
            .read()
            .expect("address lock is never poisoned")
            .get(address)
            .cloned()
    }

    fn fate(&self, from: &str, to: &str, rng: &Mutex<ChaCha8Rng>) -> Fate {
        let plan = self.plan.read().expect("plan lock is never poisoned");
        plan.fate(
            from,
            to,
            &mut *rng.lock().expect("rng lock is never poisoned"),
        )
    }
}

/// One node's socket, with its faults.
struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    node: String,
    net: Arc<FaultNet>,
    rng: Mutex<ChaCha8Rng>,
}

impl fmt::Debug for FaultySocket {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("FaultySocket")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl FaultySocket {
    /// Sends one datagram as its fate says.
    fn send_one(&self, transmit: &Transmit<'_>, to: &str) -> io::Result<()> {
        let counters = &self.net.counters;
        match self.net.fate(&self.node, to, &self.rng) {
            Fate::Drop(DropCause::Cut) => count(&counters.dropped_cut),
            Fate::Drop(DropCause::Loss) => count(&counters.dropped_loss),
            Fate::Send { copies, delay_ms } => {
                count(&counters.datagrams_sent);
                if copies > 1 {
                    count(&counters.duplicated);
                }
                for copy in 0..copies {
                    if delay_ms == 0 {
                        let sent = self.inner.try_send(transmit);
                        // A copy that finds the socket full is simply lost.
                        if copy == 0 {
                            sent?;
                        }
                    } else {
                        self.hold(transmit, Duration::from_millis(delay_ms));
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a copy of `transmit` after `delay`, unless too many are held.
    fn hold(&self, transmit: &Transmit<'_>, delay: Duration) {
        let net = &self.net;
        if net.held.fetch_add(1, Ordering::Relaxed) >= HELD_DATAGRAMS_MAX {
            net.held.fetch_sub(1, Ordering::Relaxed);
            return count(&net.counters.dropped_held);
        }
        count(&net.counters.delayed);
        let inner = self.inner.clone();
        let net = net.clone();
        let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
        let contents = transmit.contents.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let held = Transmit {
                destination,
                ecn,
                contents: &contents,
                segment_size: None,
                src_ip,
            };
            if inner.try_send(&held).is_err() {
                count(&net.counters.dropped_held);
            }
            net.held.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(to) = self.net.node_at(&transmit.destination) else {
            return self.inner.try_send(transmit);
        };
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len());
        // Each datagram of a batch meets its own fate.
        for contents in transmit.contents.chunks(segment.max(1)) {
            let single = Transmit {
                contents,
                segment_size: None,
                ..*transmit
            };
            self.send_one(&single, &to)?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per send, so each has a fate of its own.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
