//! The replicated state machine: what the Raft group agrees on. Commands
//! are applied in log order and every replica that applies the same log
//! holds the same state. It holds the user key-value space and the
//! committed overlay: its epoch, the nodes it leaves out as down, and the
//! directory of planned agents (agent → node) the placement planner
//! committed. Overlay changes and directories share one epoch, so a plan
//! is made against one overlay and is stale once another commits.
//!
//! Snapshots are the bincode encoding of the whole state, compressed with
//! zstd.
//!
//! A command carries the id of the client request that proposed it, so the
//! replica the client asked can answer it once the command is applied, and
//! a request retried after a lost answer is applied once.

use std::collections::{BTreeMap, BTreeSet};

use bincode::{Decode, Encode};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1_024;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Largest state a snapshot may decompress to: a corrupt or hostile
/// snapshot cannot make a replica allocate more.
pub const SNAPSHOT_STATE_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// zstd's fastest level: a snapshot goes to a replica that waits for it,
/// and incompressible values cost almost nothing at this level.
const SNAPSHOT_ZSTD_LEVEL: i32 = 1;
/// Client requests remembered for de-duplication, per client.
const REQUESTS_REMEMBERED_MAX: usize = 1_024;
/// Clients remembered for de-duplication: past it, the client whose last
/// request applied longest ago is forgotten (clients are short-lived: a
/// CLI run, an agent incarnation), so a retry from it would apply again.
const CLIENTS_REMEMBERED_MAX: usize = 4_096;

pub use crate::protocols::wire::limits::PLACED_AGENTS_MAX;

/// Overlay proposals carry the client id `OVERLAY_CLIENT_BASE - i` from
/// the node at index `i` of the sorted node list, so each node's sequence
/// numbers are its own.
pub const OVERLAY_CLIENT_BASE: u64 = u64::MAX;

/// Identifies one client request: the client, and its own sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct RequestId {
    pub client: u64,
    pub sequence: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Command {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Writes `to` under `key` if it holds `from` now; a missing key is
    /// written only when `create_if_missing` (Maelstrom's `cas`).
    CompareAndSet {
        key: String,
        from: Vec<u8>,
        to: Vec<u8>,
        create_if_missing: bool,
    },
    /// The planned agents' directory becomes `directory` (agent → node),
    /// moving the overlay to the next epoch, if the state is still at
    /// `after_epoch`: a plan made against an older overlay (other nodes
    /// down, or another plan since) is stale and changes nothing.
    Place {
        after_epoch: u64,
        directory: BTreeMap<String, String>,
    },
    /// The overlay moves to the next epoch, leaving out the nodes in
    /// `down`, if the state is still at `after_epoch`: a proposal made from
    /// an older epoch (by a leader that had not seen the latest yet) is
    /// stale and changes nothing.
    Overlay {
        after_epoch: u64,
        down: BTreeSet<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Proposal {
    pub request: RequestId,
    pub command: Command,
}

/// What applying a command did. A retried request (applied before) is
/// answered with the outcome it had the first time and changes nothing
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Outcome {
    Done,
    /// A delete or compare-and-set of a key that was not there.
    NotFound,
    /// A compare-and-set whose key held something other than `from`.
    Mismatch,
    /// An overlay change or a directory proposed from an epoch that is no
    /// longer current.
    Stale,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("key of {0} bytes; keys are at most {KEY_BYTES_MAX} bytes")]
    KeyTooLong(usize),
    #[error("value of {0} bytes; values are at most {VALUE_BYTES_MAX} bytes")]
    ValueTooLarge(usize),
    #[error("a directory of {0} agents; at most {PLACED_AGENTS_MAX}")]
    DirectoryTooLarge(usize),
    #[error("malformed log entry or snapshot: {0}")]
    Malformed(String),
}

impl Proposal {
    /// Checks limits and encodes, for `Replica::propose`.
    pub fn encode(&self) -> Result<Vec<u8>, StateError> {
        if let Command::Put { key, .. }
        | Command::Delete { key }
        | Command::CompareAndSet { key, .. } = &self.command
        {
            if key.len() > KEY_BYTES_MAX {
                return Err(StateError::KeyTooLong(key.len()));
            }
        }
        if let Command::Put { value, .. } | Command::CompareAndSet { to: value, .. } = &self.command
        {
            if value.len() > VALUE_BYTES_MAX {
                return Err(StateError::ValueTooLarge(value.len()));
            }
        }
        if let Command::Place { directory, .. } = &self.command {
            if directory.len() > PLACED_AGENTS_MAX {
                return Err(StateError::DirectoryTooLarge(directory.len()));
            }
        }
        Ok(bincode::encode_to_vec(self, bincode::config::standard()).expect("proposals encode"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Proposal, StateError> {
        let (proposal, used) = bincode::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|error| StateError::Malformed(error.to_string()))?;
        if used != bytes.len() {
            return Err(StateError::Malformed("trailing bytes".into()));
        }
        Ok(proposal)
    }
}

/// The cluster's shared state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct ClusterState {
    /// The last log index applied.
    pub applied: u64,
    pub kv: BTreeMap<String, Vec<u8>>,
    /// The committed directory of planned agents (agent → node); empty
    /// until the placement planner commits one.
    pub placed: BTreeMap<String, String>,
    /// Bumped by every overlay change and every committed directory; 0 is
    /// the base overlay, all up, planned agents where the config plans
    /// them.
    pub overlay_epoch: u64,
    /// The nodes the committed overlay leaves out.
    pub overlay_down: BTreeSet<String>,
    /// Per client, the sequences of its latest applied requests and what
    /// each did.
    seen: BTreeMap<u64, ClientRequests>,
}

/// What one client's latest requests did, for answering its retries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
struct ClientRequests {
    /// The log index of the client's latest applied request.
    applied_last: u64,
    outcomes: BTreeMap<u64, Outcome>,
}

impl ClusterState {
    /// Applies the entry at `index` (an empty entry, as a new leader
    /// appends, only moves `applied`).
    pub fn apply(
        &mut self,
        index: u64,
        data: &[u8],
    ) -> Result<Option<(RequestId, Outcome)>, StateError> {
        assert!(
            index > self.applied,
            "entries apply in order: {index} after {}",
            self.applied
        );
        self.applied = index;
        if data.is_empty() {
            return Ok(None);
        }
        let proposal = Proposal::decode(data)?;
        let request = proposal.request;
        if let Some(&outcome) = self
            .seen
            .get(&request.client)
            .and_then(|client| client.outcomes.get(&request.sequence))
        {
            return Ok(Some((request, outcome)));
        }
        let outcome = self.execute(proposal.command);
        self.remember(index, request, outcome);
        Ok(Some((request, outcome)))
    }

    fn remember(&mut self, index: u64, request: RequestId, outcome: Outcome) {
        if !self.seen.contains_key(&request.client) && self.seen.len() >= CLIENTS_REMEMBERED_MAX {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, client)| client.applied_last)
                .map(|(&id, _)| id)
                .expect("the map is full, so not empty");
            self.seen.remove(&oldest);
        }
        let client = self.seen.entry(request.client).or_default();
        client.applied_last = index;
        client.outcomes.insert(request.sequence, outcome);
        if client.outcomes.len() > REQUESTS_REMEMBERED_MAX {
            client.outcomes.pop_first();
        }
        assert!(self.seen.len() <= CLIENTS_REMEMBERED_MAX);
    }

    fn execute(&mut self, command: Command) -> Outcome {
        match command {
            Command::Put { key, value } => {
                self.kv.insert(key, value);
                Outcome::Done
            }
            Command::Delete { key } => match self.kv.remove(&key) {
                Some(_) => Outcome::Done,
                None => Outcome::NotFound,
            },
            Command::CompareAndSet {
                key,
                from,
                to,
                create_if_missing,
            } => match self.kv.get_mut(&key) {
                Some(current) if *current == from => {
                    *current = to;
                    Outcome::Done
                }
                Some(_) => Outcome::Mismatch,
                None if create_if_missing => {
                    self.kv.insert(key, to);
                    Outcome::Done
                }
                None => Outcome::NotFound,
            },
            Command::Place {
                after_epoch,
                directory,
            } => {
                if after_epoch != self.overlay_epoch {
                    return Outcome::Stale;
                }
                self.overlay_epoch += 1;
                self.placed = directory;
                Outcome::Done
            }
            Command::Overlay { after_epoch, down } => {
                if after_epoch != self.overlay_epoch {
                    return Outcome::Stale;
                }
                self.overlay_epoch += 1;
                self.overlay_down = down;
                Outcome::Done
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }

    /// The whole state, encoded and compressed (zstd), for a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut encoder = zstd::Encoder::new(Vec::new(), SNAPSHOT_ZSTD_LEVEL)
            .expect("a zstd encoder into memory starts");
        bincode::encode_into_std_write(self, &mut encoder, bincode::config::standard())
            .expect("state encodes into memory");
        encoder
            .finish()
            .expect("compressing into memory cannot fail")
    }

    pub fn restore(bytes: &[u8]) -> Result<ClusterState, StateError> {
        use std::io::Read;
        let malformed = |error: &dyn std::fmt::Display| StateError::Malformed(error.to_string());
        let decoder = zstd::Decoder::with_buffer(bytes).map_err(|error| malformed(&error))?;
        let mut limited = decoder.take(SNAPSHOT_STATE_BYTES_MAX);
        bincode::decode_from_std_read(&mut limited, bincode::config::standard())
            .map_err(|error| malformed(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(sequence: u64, command: Command) -> Vec<u8> {
        let request = RequestId {
            client: 7,
            sequence,
        };
        Proposal { request, command }.encode().unwrap()
    }

    fn put(key: &str, value: &[u8]) -> Command {
        Command::Put {
            key: key.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn commands_apply_once_in_order_and_survive_a_snapshot() {
        let mut state = ClusterState::default();
        assert_eq!(state.apply(1, &[]).unwrap(), None, "a leader's empty entry");
        let outcome = |result: Option<(RequestId, Outcome)>| result.unwrap().1;
        assert_eq!(
            outcome(state.apply(2, &proposal(1, put("k", b"v"))).unwrap()),
            Outcome::Done
        );
        let retry = state.apply(3, &proposal(1, put("k", b"other"))).unwrap();
        assert_eq!(outcome(retry), Outcome::Done, "answered as the first time");
        assert_eq!(state.get("k"), Some(&b"v"[..]));
        let missing = Command::Delete { key: "gone".into() };
        assert_eq!(
            outcome(state.apply(4, &proposal(2, missing)).unwrap()),
            Outcome::NotFound
        );
        let down: BTreeSet<String> = ["n2".to_string()].into();
        let first = Command::Overlay {
            after_epoch: 0,
            down: down.clone(),
        };
        assert_eq!(
            outcome(state.apply(5, &proposal(3, first)).unwrap()),
            Outcome::Done
        );
        let stale = Command::Overlay {
            after_epoch: 0,
            down: BTreeSet::new(),
        };
        assert_eq!(
            outcome(state.apply(6, &proposal(4, stale)).unwrap()),
            Outcome::Stale,
            "a change made from an older epoch"
        );
        assert_eq!((state.overlay_epoch, &state.overlay_down), (1, &down));
        let directory: BTreeMap<String, String> = [("a".to_string(), "n1".to_string())].into();
        let plan = |after_epoch| Command::Place {
            after_epoch,
            directory: directory.clone(),
        };
        assert_eq!(
            outcome(state.apply(7, &proposal(5, plan(0))).unwrap()),
            Outcome::Stale,
            "a plan made against an older overlay"
        );
        assert!(state.placed.is_empty());
        assert_eq!(
            outcome(state.apply(8, &proposal(6, plan(1))).unwrap()),
            Outcome::Done
        );
        assert_eq!((state.overlay_epoch, &state.placed), (2, &directory));
        let snapshot = state.snapshot();
        let restored = ClusterState::restore(&snapshot).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.applied, 8);
        assert!(
            ClusterState::restore(&snapshot[..snapshot.len() / 2]).is_err(),
            "cut short"
        );
        assert!(ClusterState::restore(b"not zstd at all").is_err());
    }

    fn compare_and_set(key: &str, from: &[u8], to: &[u8], create_if_missing: bool) -> Command {
        Command::CompareAndSet {
            key: key.into(),
            from: from.to_vec(),
            to: to.to_vec(),
            create_if_missing,
        }
    }

    #[test]
    fn compare_and_set_writes_only_over_the_expected_value_and_a_retry_answers_alike() {
        let mut state = ClusterState::default();
        let mut apply = |index: u64, sequence: u64, command: Command| {
            state
                .apply(index, &proposal(sequence, command))
                .unwrap()
                .unwrap()
                .1
        };
        let missing = compare_and_set("k", b"0", b"1", false);
        assert_eq!(apply(1, 1, missing), Outcome::NotFound);
        assert_eq!(
            apply(2, 2, compare_and_set("k", b"0", b"1", true)),
            Outcome::Done
        );
        assert_eq!(
            apply(3, 3, compare_and_set("k", b"0", b"2", false)),
            Outcome::Mismatch
        );
        assert_eq!(
            apply(4, 4, compare_and_set("k", b"1", b"2", false)),
            Outcome::Done
        );
        // The mismatch retried after its key changed to what it expected:
        // still the mismatch it was, and the value stays.
        assert_eq!(
            apply(5, 3, compare_and_set("k", b"2", b"9", false)),
            Outcome::Mismatch
        );
        assert_eq!(state.get("k"), Some(&b"2"[..]));
    }

    #[test]
    fn the_client_idle_longest_is_forgotten_past_the_client_limit() {
        let mut state = ClusterState::default();
        let apply = |state: &mut ClusterState, index: u64, client: u64, command: Command| {
            let request = RequestId {
                client,
                sequence: 1,
            };
            let proposal = Proposal { request, command }.encode().unwrap();
            state.apply(index, &proposal).unwrap().unwrap().1
        };
        let increment = || compare_and_set("k", b"0", b"1", true);
        assert_eq!(apply(&mut state, 1, 0, increment()), Outcome::Done);
        for client in 1..=CLIENTS_REMEMBERED_MAX as u64 {
            apply(
                &mut state,
                1 + client,
                client,
                put(&format!("key {client}"), b""),
            );
        }
        let index = 2 + CLIENTS_REMEMBERED_MAX as u64;
        assert_eq!(
            apply(
                &mut state,
                index,
                CLIENTS_REMEMBERED_MAX as u64,
                put("k", b"0")
            ),
            Outcome::Done,
            "the newest client's retry is still answered from memory"
        );
        assert_eq!(state.get("k"), Some(&b"1"[..]));
        assert_eq!(
            apply(&mut state, index + 1, 0, increment()),
            Outcome::Mismatch,
            "the first client was forgotten, so its retry executes again"
        );
        assert_eq!(state.seen.len(), CLIENTS_REMEMBERED_MAX);
    }

    #[test]
    fn oversized_keys_and_values_and_garbage_are_refused() {
        let request = RequestId {
            client: 1,
            sequence: 1,
        };
        let long_key = Proposal {
            request,
            command: put(&"k".repeat(KEY_BYTES_MAX + 1), b""),
        };
        assert!(matches!(long_key.encode(), Err(StateError::KeyTooLong(_))));
        let big_value = Proposal {
            request,
            command: put("k", &vec![0; VALUE_BYTES_MAX + 1]),
        };
        assert!(matches!(
            big_value.encode(),
            Err(StateError::ValueTooLarge(_))
        ));
        let mut state = ClusterState::default();
        assert!(matches!(
            state.apply(1, &[0xff, 0xff]),
            Err(StateError::Malformed(_))
        ));
    }
}
