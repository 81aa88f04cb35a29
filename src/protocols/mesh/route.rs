//! Where an envelope goes next: the path an origin gives it, and the hop a
//! transit node passes it on to. Pure functions of the routing view and of
//! which links are up; no state. The mesh core uses them, and so do the
//! connection readers, which pass transit envelopes on without a trip
//! through the router.

use crate::protocols::routing::{self, Position, Step};
use crate::protocols::wire::Envelope;

use super::counters::MeshCounters;
use super::roster::Roster;
use super::view::RoutingView;

/// Why an envelope was not sent on (each moves the counter of its name;
/// the origin retransmits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// No path avoiding the nodes already visited, or no overlay yet.
    NoRoute,
    /// The path would be longer than the envelope's TTL allows.
    TtlExpired,
    /// The envelope's path does not pass through here, or names no node.
    Misrouted,
}

impl Dropped {
    pub fn count(self, counters: &mut MeshCounters) {
        match self {
            Dropped::NoRoute => counters.dropped_no_route += 1,
            Dropped::TtlExpired => counters.dropped_ttl_expired += 1,
            Dropped::Misrouted => counters.dropped_misrouted += 1,
        }
    }
}

/// Which links are up, by peer node name.
pub type LinkUp<'a> = &'a dyn Fn(&str) -> bool;

/// This node's and `destination_node`'s overlay indices, if both are in
/// the overlay.
fn ends(view: &RoutingView, destination_node: &str) -> Result<(usize, usize), Dropped> {
    let destination = view.frame.overlay.index_of(destination_node);
    match (view.frame.me, destination) {
        (Some(me), Some(destination)) => Ok((me, destination)),
        _ => Err(Dropped::NoRoute),
    }
}

/// Gives an envelope this node originates (first time or again) the best
/// path to `destination_node` whose first link is up, and returns the
/// overlay index of its first hop, with the hop count raised.
pub fn plan(
    view: &RoutingView,
    envelope: &mut Envelope,
    destination_node: &str,
    link_up: LinkUp<'_>,
) -> Result<usize, Dropped> {
    let overlay = &view.frame.overlay;
    let (me, destination) = ends(view, destination_node)?;
    let up = |next: usize| link_up(overlay.name(next));
    let planned = view
        .table
        .as_ref()
        .and_then(|table| table.route(destination))
        .filter(|route| up(route.next_hop))
        .map(|route| route.path);
    let path = planned
        .or_else(|| {
            routing::path_avoiding(
                overlay,
                me,
                destination,
                &[me],
                |a, b| view.weight(a, b),
                up,
            )
        })
        .ok_or(Dropped::NoRoute)?;
    if path.len() < 2 {
        return Err(Dropped::Misrouted);
    }
    if path.len() - 1 > envelope.signed.ttl as usize {
        return Err(Dropped::TtlExpired);
    }
    envelope.hop_count = 1;
    envelope.path = path
        .iter()
        .map(|&index| view.frame.wire_of_overlay[index])
        .collect();
    Ok(path[1])
}

/// Passes a transit envelope for `destination_node` on along its path, or
/// a detour through nodes it has not visited when the next link is down.
/// Returns the overlay index of the next hop, with the hop count raised.
pub fn forward(
    view: &RoutingView,
    envelope: &mut Envelope,
    destination_node: &str,
    link_up: LinkUp<'_>,
) -> Result<usize, Dropped> {
    let overlay = &view.frame.overlay;
    let (me, destination) = ends(view, destination_node)?;
    let known: Vec<usize> = envelope
        .path
        .iter()
        .map(|&wire| {
            view.frame
                .overlay_of_wire
                .get(wire as usize)
                .copied()
                .flatten()
                .unwrap_or(usize::MAX)
        })
        .collect();
    let position = Position {
        here: me,
        destination,
        path: &known,
        hops: envelope.hop_count as usize,
        ttl: envelope.signed.ttl as usize,
    };
    let up = |next: usize| link_up(overlay.name(next));
    match routing::next_step(overlay, position, |a, b| view.weight(a, b), up) {
        Step::Forward { path } => {
            let next = path[envelope.hop_count as usize + 1];
            envelope.path = wire_path(view, &envelope.path, &known, &path);
            envelope.hop_count += 1;
            Ok(next)
        }
        Step::TtlExpired => Err(Dropped::TtlExpired),
        Step::NoRoute => Err(Dropped::NoRoute),
        Step::Deliver | Step::Misrouted => Err(Dropped::Misrouted),
    }
}

/// The wire form of `path`. Nodes this node does not know as live appear
/// in `known` (the old path in overlay indices) as usize::MAX; where the
/// new path keeps the old one's node, the old wire index is kept.
fn wire_path(view: &RoutingView, old_wire: &[u16], known: &[usize], path: &[usize]) -> Vec<u16> {
    path.iter()
        .enumerate()
        .map(|(position, &index)| match known.get(position) {
            Some(&old) if old == index && index == usize::MAX => old_wire[position],
            _ => view.frame.wire_of_overlay[index],
        })
        .collect()
}

/// Envelopes from peers, sorted: those for this node are returned; those
/// for other nodes are passed on (`send(next_overlay_index, envelope)`)
/// or dropped and counted.
pub fn pass_on(
    me: &str,
    roster: &Roster,
    view: &RoutingView,
    envelopes: Vec<Envelope>,
    link_up: LinkUp<'_>,
    counters: &mut MeshCounters,
    mut send: impl FnMut(usize, Envelope),
) -> Vec<Envelope> {
    let mut here = Vec::with_capacity(envelopes.len());
    for mut envelope in envelopes {
        let Some(node) = roster.node_of(&envelope.signed.destination) else {
            counters.dropped_misrouted += 1;
            continue;
        };
        if node == me {
            here.push(envelope);
            continue;
        }
        let node = node.to_string();
        match forward(view, &mut envelope, &node, link_up) {
            Ok(next) => {
                counters.envelopes_forwarded += 1;
                send(next, envelope);
            }
            Err(dropped) => dropped.count(counters),
        }
    }
    here
}
