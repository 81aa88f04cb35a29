//! What a chaos run checks once the faults are over: pure functions over
//! what the workload recorded, so each can be shown to catch what it is
//! for with made-up histories.
//!
//! - Storm messages: every message whose sender was told "acknowledged" was
//!   consumed by its sink; none was consumed twice by one incarnation of a
//!   node; nothing was consumed that was never sent.
//! - Raft key-value calls: the history is linearizable, and the final read
//!   of each key shows no acknowledged write lost.
//! - PBFT operations: the final value of each key is its last acknowledged
//!   write or one attempted after it, and no two acknowledged decisions got
//!   the same place in the log.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::sim::linearizability;
use crate::sim::raft::{Call, CallKind};

/// Starts every storm payload of a chaos run, before the message id.
pub const STORM_TAG: &[u8; 4] = b"chs1";

/// A storm payload: the tag, the id, then `payload_bytes` filled out.
pub fn storm_payload(id: u64, payload_bytes: usize) -> Vec<u8> {
    let mut payload = Vec::with_capacity(payload_bytes.max(12));
    payload.extend_from_slice(STORM_TAG);
    payload.extend_from_slice(&id.to_le_bytes());
    payload.resize(payload_bytes.max(12), b'.');
    payload
}

/// The id in a storm payload, or None for anything else.
pub fn storm_id(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(STORM_TAG)?;
    Some(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?))
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StormCheck {
    pub acknowledged: u64,
    /// Distinct messages some sink consumed.
    pub delivered: u64,
    /// Acknowledged, yet consumed by no sink.
    pub acked_lost: u64,
    /// Consumptions beyond the first of a message, in all.
    pub duplicates_delivered: u64,
    /// Of those, consumptions a second time by the same incarnation of a
    /// node: the duplicate window promises there are none.
    pub duplicates_within_incarnation: u64,
    /// Consumed, but never sent (or not a storm payload at all).
    pub invented: u64,
}

/// `acknowledged`: the ids senders were told were delivered; `issued`:
/// ids below it were sent; `consumed`: per incarnation of a node, the ids
/// its sinks consumed.
pub fn check_storm(acknowledged: &HashSet<u64>, issued: u64, consumed: &[Vec<u64>]) -> StormCheck {
    let mut times: HashMap<u64, u64> = HashMap::new();
    let mut check = StormCheck {
        acknowledged: acknowledged.len() as u64,
        ..StormCheck::default()
    };
    for incarnation in consumed {
        let mut here = HashSet::with_capacity(incarnation.len());
        for &id in incarnation {
            if id >= issued {
                check.invented += 1;
                continue;
            }
            if !here.insert(id) {
                check.duplicates_within_incarnation += 1;
            }
            *times.entry(id).or_default() += 1;
        }
    }
    check.delivered = times.len() as u64;
    check.duplicates_delivered = times.values().map(|count| count - 1).sum();
    check.acked_lost = acknowledged
        .iter()
        .filter(|id| !times.contains_key(id))
        .count() as u64;
    check
}

/// The client id final reads are made under.
pub const FINAL_READER: u64 = u64::MAX;

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RaftCheck {
    pub calls: u64,
    pub answered: u64,
    pub puts_acknowledged: u64,
    pub keys: u64,
    pub linearizable: bool,
    /// Why not, when not.
    pub not_linearizable: Option<String>,
    /// Keys whose final read shows an acknowledged write lost.
    pub committed_lost: u64,
    /// Keys whose final read got no answer.
    pub unread: Vec<String>,
}

/// Checks a key-value history whose puts write values never written
/// before, ending with one read of every key by [`FINAL_READER`] after
/// every other call.
pub fn check_raft(history: &[Call]) -> RaftCheck {
    let mut check = RaftCheck {
        calls: history.len() as u64,
        answered: history.iter().filter(|c| c.answered_ms.is_some()).count() as u64,
        ..RaftCheck::default()
    };
    match linearizability::check(history) {
        Ok(()) => check.linearizable = true,
        Err(error) => check.not_linearizable = Some(error.to_string()),
    }
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in history {
        by_key.entry(&call.key).or_default().push(call);
    }
    check.keys = by_key.len() as u64;
    for (key, calls) in by_key {
        let puts: Vec<&Call> = calls
            .iter()
            .copied()
            .filter(|call| matches!(call.kind, CallKind::Put(_)))
            .collect();
        check.puts_acknowledged += puts.iter().filter(|p| p.answered_ms.is_some()).count() as u64;
        let final_read = calls.iter().find(|call| call.client == FINAL_READER);
        match final_read.map(|call| &call.kind) {
            Some(CallKind::Get(Some(value))) => {
                if lost_under(value.as_deref(), &puts) {
                    check.committed_lost += 1;
                }
            }
            _ => check.unread.push(key.to_string()),
        }
    }
    check
}

/// Whether a final read of `value` hides an acknowledged write: none was
/// read though one was acknowledged, or the write read finished before an
/// acknowledged one began (so that one came later and must show instead).
fn lost_under(value: Option<&[u8]>, puts: &[&Call]) -> bool {
    let acknowledged = || puts.iter().filter(|put| put.answered_ms.is_some());
    let Some(value) = value else {
        return acknowledged().next().is_some();
    };
    let written = puts
        .iter()
        .find(|put| matches!(&put.kind, CallKind::Put(v) if v.as_slice() == value));
    match written {
        None => true,
        Some(put) => match put.answered_ms {
            Some(answered) => acknowledged().any(|later| later.called_ms > answered),
            None => false,
        },
    }
}

/// One PBFT client's writes to one key, in the order it made them (a
/// client makes one call at a time).
#[derive(Clone, Debug, Default)]
pub struct PbftKeyWrites {
    /// Each value written, and whether f + 1 replicas acknowledged it.
    pub writes: Vec<(Vec<u8>, bool)>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PbftCheck {
    pub operations: u64,
    pub answered: u64,
    pub keys: u64,
    /// Keys whose final value is older than their last acknowledged write.
    pub committed_lost: u64,
    /// Places in a decision log given to two acknowledged decisions.
    pub decisions_sharing_a_place: u64,
    pub unread: Vec<String>,
}

/// `finals`: each key's value read at the end (None inside: absent; None:
/// the read got no answer). `decided`: the places acknowledged decisions
/// were given.
pub fn check_pbft(
    writes: &BTreeMap<String, PbftKeyWrites>,
    finals: &BTreeMap<String, Option<Option<Vec<u8>>>>,
    decided: &[u64],
) -> PbftCheck {
    let mut check = PbftCheck {
        keys: writes.len() as u64,
        ..PbftCheck::default()
    };
    for (key, key_writes) in writes {
        let Some(Some(value)) = finals.get(key) else {
            check.unread.push(key.clone());
            continue;
        };
        let last_acknowledged = key_writes.writes.iter().rposition(|(_, acked)| *acked);
        let Some(last) = last_acknowledged else {
            continue;
        };
        let allowed = &key_writes.writes[last..];
        let shows = value
            .as_ref()
            .is_some_and(|value| allowed.iter().any(|(written, _)| written == value));
        if !shows {
            check.committed_lost += 1;
        }
    }
    let mut places = HashSet::new();
    check.decisions_sharing_a_place = decided
        .iter()
        .filter(|place| !places.insert(**place))
        .count() as u64;
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_payloads_carry_their_id() {
        let payload = storm_payload(77, 64);
        assert_eq!(payload.len(), 64);
        assert_eq!(storm_id(&payload), Some(77));
        assert_eq!(storm_id(b"chs1abc"), None);
        assert_eq!(storm_id(b"other payload here"), None);
    }

    #[test]
    fn the_storm_check_finds_lost_doubled_and_invented_messages() {
        let acknowledged: HashSet<u64> = [0, 1, 2, 3].into();
        let clean = check_storm(&acknowledged, 5, &[vec![0, 1], vec![2, 3, 4]]);
        assert_eq!(clean.acked_lost, 0);
        assert_eq!(clean.delivered, 5);
        assert_eq!(clean.duplicates_delivered, 0);
        let bad = check_storm(&acknowledged, 5, &[vec![0, 1, 1], vec![1, 2, 9]]);
        assert_eq!(bad.acked_lost, 1, "3 was acknowledged but never consumed");
        assert_eq!(bad.duplicates_delivered, 2);
        assert_eq!(bad.duplicates_within_incarnation, 1);
        assert_eq!(bad.invented, 1);
    }

    fn put(client: u64, key: &str, value: &str, called: u64, answered: Option<u64>) -> Call {
        Call {
            client,
            key: key.into(),
            called_ms: called,
            answered_ms: answered,
            kind: CallKind::Put(value.as_bytes().to_vec()),
        }
    }

    fn final_read(key: &str, value: Option<&str>, at: u64) -> Call {
        Call {
            client: FINAL_READER,
            key: key.into(),
            called_ms: at,
            answered_ms: Some(at + 1),
            kind: CallKind::Get(Some(value.map(|v| v.as_bytes().to_vec()))),
        }
    }

    #[test]
    fn the_raft_check_passes_a_clean_history() {
        let history = vec![
            put(1, "k", "a", 0, Some(2)),
            put(2, "k", "b", 1, None),
            final_read("k", Some("b"), 10),
        ];
        let check = check_raft(&history);
        assert!(check.linearizable);
        assert_eq!(check.committed_lost, 0);
        assert!(check.unread.is_empty());
    }

    #[test]
    fn the_raft_check_finds_a_lost_write() {
        let history = vec![
            put(1, "k", "a", 0, Some(2)),
            put(1, "k", "b", 3, Some(4)),
            final_read("k", Some("a"), 10),
        ];
        let check = check_raft(&history);
        assert_eq!(check.committed_lost, 1);
        assert!(!check.linearizable);
        let vanished = vec![put(1, "j", "a", 0, Some(2)), final_read("j", None, 10)];
        assert_eq!(check_raft(&vanished).committed_lost, 1);
    }

    #[test]
    fn the_pbft_check_finds_lost_writes_and_shared_places() {
        let writes = BTreeMap::from([
            (
                "a".to_string(),
                PbftKeyWrites {
                    writes: vec![(b"1".to_vec(), true), (b"2".to_vec(), false)],
                },
            ),
            (
                "b".to_string(),
                PbftKeyWrites {
                    writes: vec![(b"1".to_vec(), true), (b"2".to_vec(), true)],
                },
            ),
        ]);
        let good = BTreeMap::from([
            ("a".to_string(), Some(Some(b"2".to_vec()))),
            ("b".to_string(), Some(Some(b"2".to_vec()))),
        ]);
        let check = check_pbft(&writes, &good, &[0, 1, 2]);
        assert_eq!(check.committed_lost, 0);
        assert_eq!(check.decisions_sharing_a_place, 0);
        let bad = BTreeMap::from([
            ("a".to_string(), Some(None)),
            ("b".to_string(), Some(Some(b"1".to_vec()))),
        ]);
        let check = check_pbft(&writes, &bad, &[0, 1, 1]);
        assert_eq!(check.committed_lost, 2);
        assert_eq!(check.decisions_sharing_a_place, 1);
    }
}
