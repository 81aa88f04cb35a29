//! The view change: timing the primary out, proving what was prepared, and
//! the new primary's new view, which every replica checks by computing it
//! again from the same view changes.

use std::collections::{BTreeMap, BTreeSet};

use super::machine::Machine;
use super::messages::{batch_digest, Body, Digest, Keys, PreparedProof, Request, Signed, Signer};
use super::replica::{Changing, Replica};

/// Longest a view change waits before the next, in request timeouts.
const VIEW_CHANGE_BACKOFF_MAX: u32 = 3;

/// What a new view orders: per sequence number, a digest and its batch.
type Ordering = BTreeMap<u64, (Digest, Vec<Request>)>;

impl<K: Keys> Replica<K> {
    /// Times the view on waiting requests, and a view change on its new
    /// view.
    pub(super) fn check_timers(&mut self) {
        let timeout = self.config.request_timeout_ticks;
        match self.changing {
            Some(changing) => {
                let Some(since) = changing.quorum_since else {
                    return self.note_view_change_quorum();
                };
                let skipped = changing.target - self.view - 1;
                let backoff = skipped.min(u64::from(VIEW_CHANGE_BACKOFF_MAX));
                if self.ticks >= since + (timeout << backoff) {
                    self.start_view_change(changing.target + 1);
                }
            }
            // The primary times itself out too. A backup that executed
            // everything waits on nothing, and one already moving on is
            // not enough alone; were the primary the only other correct
            // replica still waiting, no one would ever move.
            None => {
                let late = self
                    .timer_since
                    .is_some_and(|since| self.ticks >= since + timeout);
                if late {
                    self.start_view_change(self.view + 1);
                }
            }
        }
    }

    /// Starts timing the view change once 2f + 1 replicas (this one among
    /// them) move to its target or beyond: before that, the next view
    /// could not have started anyway, and moving on alone would only
    /// scatter the replicas over views. Those beyond count because one
    /// that moved past the target will never help start it: the replicas
    /// left behind must time out and follow, or, with 2f + 1 needed and
    /// one view change held per replica, they would wait for it forever.
    fn note_view_change_quorum(&mut self) {
        let Some(changing) = self.changing.filter(|c| c.quorum_since.is_none()) else {
            return;
        };
        let moving = self
            .view_changes
            .values()
            .filter(|m| m.view >= changing.target)
            .count();
        if moving >= self.config.quorum() {
            self.changing = Some(super::replica::Changing {
                quorum_since: Some(self.ticks),
                ..changing
            });
        }
    }

    /// Moves to view `target`: stops the normal case and says so, with the
    /// stable checkpoint's proof and every prepared certificate above it.
    pub(super) fn start_view_change(&mut self, target: u64) {
        if target <= self.view || self.changing.is_some_and(|c| c.target >= target) {
            return;
        }
        self.changing = Some(Changing {
            target,
            quorum_since: None,
        });
        self.counters.view_changes_started += 1;
        let prepared: Vec<PreparedProof> = self
            .slots
            .range(self.stable.sequence + 1..)
            .filter_map(|(_, slot)| slot.prepared.clone())
            .collect();
        let body = Body::ViewChange {
            checkpoint: self.stable.sequence,
            checkpoint_state: self.stable.state,
            checkpoint_proof: self.stable.proof.clone(),
            prepared,
        };
        let message = self.sign(target, body);
        self.view_changes.insert(self.id, message.clone());
        self.broadcast(message);
        self.note_view_change_quorum();
        self.maybe_new_view(target);
    }

    pub(super) fn on_view_change(&mut self, message: Signed) {
        let target = message.view;
        if target <= self.view {
            return;
        }
        // Only a view change for a view above the one held from its sender
        // is checked: checking means verifying every signature of every
        // prepared certificate it carries, and each replica sends its view
        // change again every retransmit interval until the new view comes.
        let newer = self
            .view_changes
            .get(&message.from)
            .is_none_or(|held| held.view < target);
        if newer {
            self.counters.view_changes_checked += 1;
            if !self.view_change_is_valid(&message) {
                self.counters.rejected_invalid += 1;
                return;
            }
            self.view_changes.insert(message.from, message);
        }
        self.join_view_change();
        if let Some(changing) = self.changing {
            self.note_view_change_quorum();
            self.maybe_new_view(changing.target);
        }
    }

    /// With f + 1 replicas moving to views above this one's, this replica
    /// moves to the lowest of them: a view change only faulty replicas
    /// asked for cannot gather them.
    fn join_view_change(&mut self) {
        let current = self.changing.map_or(self.view, |changing| changing.target);
        // One view change per replica is kept, so each counts once.
        let higher: Vec<u64> = self
            .view_changes
            .iter()
            .filter(|(from, m)| **from != self.id && m.view > current)
            .map(|(_, m)| m.view)
            .collect();
        if higher.len() > self.faults() {
            let lowest = *higher.iter().min().expect("more than f");
            self.start_view_change(lowest);
        }
    }

    /// Checks a view change's checkpoint proof and prepared certificates,
    /// signatures included.
    fn view_change_is_valid(&mut self, message: &Signed) -> bool {
        let Body::ViewChange {
            checkpoint,
            checkpoint_state,
            checkpoint_proof,
            prepared,
        } = &message.body
        else {
            return false;
        };
        let mut signed: Vec<&Signed> = Vec::new();
        if *checkpoint == 0 {
            if *checkpoint_state != Machine::default().digest() || !checkpoint_proof.is_empty() {
                return false;
            }
        } else {
            let signers: BTreeSet<u32> = checkpoint_proof.iter().map(|m| m.from).collect();
            let agree = checkpoint_proof.iter().all(|m| {
                matches!(m.body, Body::Checkpoint { sequence, state }
                    if sequence == *checkpoint && state == *checkpoint_state)
            });
            if !agree || signers.len() < self.config.quorum() {
                return false;
            }
            signed.extend(checkpoint_proof);
        }
        let mut sequences = BTreeSet::new();
        for proof in prepared {
            let Some(sequence) = self.proof_sequence(proof, *checkpoint, message.view) else {
                return false;
            };
            if !sequences.insert(sequence) {
                return false;
            }
            signed.push(&proof.pre_prepare);
            signed.extend(&proof.prepares);
        }
        self.all_signed(&signed)
    }

    /// The sequence number a prepared certificate is for, if it is well
    /// formed: a pre-prepare of its view's primary, within the window above
    /// `checkpoint`, for a view below `target`, and 2f prepares of distinct
    /// backups matching it (signatures are checked by the caller).
    fn proof_sequence(
        &mut self,
        proof: &PreparedProof,
        checkpoint: u64,
        target: u64,
    ) -> Option<u64> {
        let pre_prepare = &proof.pre_prepare;
        let Body::PrePrepare {
            sequence,
            digest,
            batch,
        } = &pre_prepare.body
        else {
            return None;
        };
        let view = pre_prepare.view;
        let primary = self.config.primary_of(view);
        let in_window = *sequence > checkpoint && *sequence <= checkpoint + self.config.window;
        if pre_prepare.from != primary || view >= target || !in_window {
            return None;
        }
        if !self.batch_is_valid(*digest, batch) {
            return None;
        }
        let backups: BTreeSet<u32> = proof
            .prepares
            .iter()
            .filter(|m| {
                m.view == view
                    && m.from != primary
                    && matches!(m.body, Body::Prepare { sequence: s, digest: d } if s == *sequence && d == *digest)
            })
            .map(|m| m.from)
            .collect();
        (backups.len() >= 2 * self.faults() && backups.len() == proof.prepares.len())
            .then_some(*sequence)
    }

    fn all_signed(&self, messages: &[&Signed]) -> bool {
        let items: Vec<(Signer, Vec<u8>, [u8; 64])> = messages
            .iter()
            .map(|m| (Signer::Replica(m.from), m.own_signing_bytes(), m.signature))
            .collect();
        messages.iter().all(|m| m.from < self.config.replicas)
            && self.keys.verify_all(&items).into_iter().all(|good| good)
    }

    /// The new primary, with 2f + 1 view changes for its view, starts it.
    fn maybe_new_view(&mut self, target: u64) {
        if self.config.primary_of(target) != self.id
            || self.changing.is_none_or(|c| c.target != target)
        {
            return;
        }
        let view_changes: Vec<Signed> = self
            .view_changes
            .values()
            .filter(|m| m.view == target)
            .take(self.config.quorum())
            .cloned()
            .collect();
        if view_changes.len() < self.config.quorum() {
            return;
        }
        let (low, ordering) = new_view_ordering(&view_changes);
        let pre_prepares: Vec<Signed> = ordering
            .into_iter()
            .map(|(sequence, (digest, batch))| {
                let body = Body::PrePrepare {
                    sequence,
                    digest,
                    batch,
                };
                self.sign(target, body)
            })
            .collect();
        let body = Body::NewView {
            view_changes,
            pre_prepares,
        };
        let new_view = self.sign(target, body);
        self.broadcast(new_view.clone());
        self.enter_view(new_view, low);
    }

    pub(super) fn on_new_view(&mut self, message: Signed) {
        let target = message.view;
        if target <= self.view {
            return;
        }
        match self.new_view_low(&message) {
            Some(low) => self.enter_view(message, low),
            None => self.counters.rejected_invalid += 1,
        }
    }

    /// Checks a new view: its primary's, 2f + 1 valid view changes from
    /// distinct replicas for its view, and exactly the pre-prepares they
    /// determine. Returns the sequence number it starts above.
    fn new_view_low(&mut self, message: &Signed) -> Option<u64> {
        let Body::NewView {
            view_changes,
            pre_prepares,
        } = &message.body
        else {
            return None;
        };
        let target = message.view;
        if message.from != self.config.primary_of(target) {
            return None;
        }
        let senders: BTreeSet<u32> = view_changes.iter().map(|m| m.from).collect();
        if senders.len() < self.config.quorum() || senders.len() != view_changes.len() {
            return None;
        }
        let signed: Vec<&Signed> = view_changes.iter().chain(pre_prepares).collect();
        if !self.all_signed(&signed) {
            return None;
        }
        for view_change in view_changes {
            if view_change.view != target || !self.view_change_is_valid(view_change) {
                return None;
            }
        }
        let (low, ordering) = new_view_ordering(view_changes);
        let expected: Vec<(u64, Digest, &Vec<Request>)> = ordering
            .iter()
            .map(|(sequence, (digest, batch))| (*sequence, *digest, batch))
            .collect();
        let given: Vec<(u64, Digest, &Vec<Request>)> = pre_prepares
            .iter()
            .filter(|m| m.from == message.from && m.view == target)
            .filter_map(|m| match &m.body {
                Body::PrePrepare {
                    sequence,
                    digest,
                    batch,
                } => Some((*sequence, *digest, batch)),
                _ => None,
            })
            .collect();
        (given == expected && given.len() == pre_prepares.len()).then_some(low)
    }

    /// Enters the view `new_view` starts: the stable checkpoint it shows,
    /// a fresh normal case, and the pre-prepares it carries.
    fn enter_view(&mut self, new_view: Signed, low: u64) {
        let target = new_view.view;
        let Body::NewView {
            view_changes,
            pre_prepares,
        } = &new_view.body
        else {
            unreachable!("a new view");
        };
        if let Some((state, proof)) = checkpoint_of(view_changes, low) {
            self.become_stable(low, state, proof);
        }
        let pre_prepares = pre_prepares.clone();
        self.view = target;
        self.changing = None;
        self.new_view = Some(new_view);
        self.new_view_sent.clear();
        self.view_changes.retain(|_, m| m.view > target);
        for slot in self.slots.values_mut() {
            slot.pre_prepare = None;
            slot.prepares.clear();
            slot.commits.clear();
            slot.sent_commit = false;
            slot.committed = false;
        }
        // What this view's primary ordered in the old view is gone unless
        // the new view orders it again: only what is held stays known.
        self.drop_executed_pending();
        self.known = self.pending.iter().map(Request::key).collect();
        self.counters.views_entered += 1;
        self.outputs.entered_view = Some(target);
        self.next_sequence = self.stable.sequence.max(low);
        for pre_prepare in pre_prepares {
            if let Body::PrePrepare { sequence, .. } = pre_prepare.body {
                self.next_sequence = self.next_sequence.max(sequence);
                if self.in_window(sequence) {
                    self.accept_pre_prepare(pre_prepare);
                }
            }
        }
        self.timer_since =
            (!self.pending.is_empty() || !self.known.is_empty()).then_some(self.ticks);
        self.forward_pending();
        self.propose();
    }

    /// A backup passes the requests it holds to the new primary.
    fn forward_pending(&mut self) {
        if self.is_primary() {
            return;
        }
        let primary = self.config.primary_of(self.view);
        for request in &self.pending {
            self.outputs.sends.push((
                super::replica::Target::Replica(primary),
                super::replica::Outgoing::Request(request.clone()),
            ));
        }
    }
}

/// The pre-prepares a new view carries, computed from its view changes:
/// above the highest stable checkpoint among them, for each sequence number
/// up to the highest prepared one, the batch of the certificate with the
/// highest view, or an empty batch where none prepared. Returns the
/// checkpoint and the ordering.
pub(super) fn new_view_ordering(view_changes: &[Signed]) -> (u64, Ordering) {
    let mut low = 0;
    let mut best: BTreeMap<u64, (u64, Digest, Vec<Request>)> = BTreeMap::new();
    for message in view_changes {
        let Body::ViewChange {
            checkpoint,
            prepared,
            ..
        } = &message.body
        else {
            continue;
        };
        low = low.max(*checkpoint);
        for proof in prepared {
            let view = proof.pre_prepare.view;
            if let Body::PrePrepare {
                sequence,
                digest,
                batch,
            } = &proof.pre_prepare.body
            {
                let better = best
                    .get(sequence)
                    .is_none_or(|(held, held_digest, _)| (view, *digest) > (*held, *held_digest));
                if better {
                    best.insert(*sequence, (view, *digest, batch.clone()));
                }
            }
        }
    }
    let high = best.keys().last().copied().unwrap_or(low).max(low);
    let ordering = (low + 1..=high)
        .map(|sequence| match best.remove(&sequence) {
            Some((_, digest, batch)) => (sequence, (digest, batch)),
            None => (sequence, (batch_digest(&[]), Vec::new())),
        })
        .collect();
    (low, ordering)
}

/// The state digest and proof of the checkpoint at `sequence` among view
/// changes (none for the initial state).
fn checkpoint_of(view_changes: &[Signed], sequence: u64) -> Option<(Digest, Vec<Signed>)> {
    view_changes.iter().find_map(|message| match &message.body {
        Body::ViewChange {
            checkpoint,
            checkpoint_state,
            checkpoint_proof,
            ..
        } if *checkpoint == sequence && sequence > 0 => {
            Some((*checkpoint_state, checkpoint_proof.clone()))
        }
        _ => None,
    })
}
