//! A linearizability checker for key-value histories (Wing and Gong's
//! search, with Lowe's memoisation of visited states). Keys are
//! independent registers, and linearizability is local, so each key's
//! history is checked alone.
//!
//! A history is a list of [`Call`]s with virtual call and answer times. An
//! answered call must take effect at one instant between its call and its
//! answer; an unanswered one may take effect at any instant after its call,
//! or never. Calls that overlap in time (one's answer not before the
//! other's call) may be ordered either way.

use std::collections::{BTreeMap, HashSet};

use super::raft::{Call, CallKind};

/// Calls on one key a search takes on; beyond this the check refuses
/// rather than run for ever.
pub const CALLS_PER_KEY_MAX: usize = 2_000;

/// Why a history is not linearizable, or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLinearizable {
    #[error("no order of the {calls} calls on key {key:?} explains what they saw")]
    NoOrder { key: String, calls: usize },
    #[error("key {key:?} has {calls} calls, more than the {CALLS_PER_KEY_MAX} checked")]
    TooLong { key: String, calls: usize },
}

/// Checks every key of `history`.
pub fn check(history: &[Call]) -> Result<(), NotLinearizable> {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for call in history.iter().filter(|call| matters(call, history)) {
        by_key.entry(&call.key).or_default().push(call);
    }
    for (key, calls) in by_key {
        if calls.len() > CALLS_PER_KEY_MAX {
            return Err(NotLinearizable::TooLong {
                key: key.into(),
                calls: calls.len(),
            });
        }
        if !Search::new(&calls).run() {
            return Err(NotLinearizable::NoOrder {
                key: key.into(),
                calls: calls.len(),
            });
        }
    }
    Ok(())
}

/// Whether `call` can change the verdict. An unanswered get cannot. An
/// unanswered put that no get saw cannot either: wherever it might be
/// placed, no read falls between it and the next write (a read there
/// would have seen its value), so leaving it out, as if it never took
/// effect, explains the same reads. Leaving such calls out keeps the
/// search from trying every place for every lost write.
fn matters(call: &Call, history: &[Call]) -> bool {
    match (&call.kind, call.answered_ms) {
        (_, Some(_)) => true,
        (CallKind::Get(_), None) => false,
        // A compare-and-set lost on its way may still have enabled
        // another one: it stays in the search.
        (CallKind::CompareAndSet { .. }, None) => true,
        (CallKind::Put(written), None) => history.iter().any(|other| {
            other.key == call.key
                && matches!(&other.kind, CallKind::Get(Some(Some(read))) if read == written)
        }),
    }
}

struct Search<'h> {
    calls: Vec<&'h Call>,
    /// Answered calls: they must all be placed.
    required: usize,
    /// (placed set, register value) already explored and failed.
    seen: HashSet<(Vec<u64>, Option<Vec<u8>>)>,
}

impl<'h> Search<'h> {
    fn new(calls: &[&'h Call]) -> Search<'h> {
        Search {
            required: calls
                .iter()
                .filter(|call| call.answered_ms.is_some())
                .count(),
            calls: calls.to_vec(),
            seen: HashSet::new(),
        }
    }

    fn run(&mut self) -> bool {
        let placed = vec![0u64; self.calls.len().div_ceil(64)];
        self.place(placed, None, 0)
    }

    /// Depth-first: places one more call that may come next, while the
    /// register holds `value`.
    fn place(&mut self, placed: Vec<u64>, value: Option<Vec<u8>>, answered: usize) -> bool {
        if answered == self.required {
            return true;
        }
        if !self.seen.insert((placed.clone(), value.clone())) {
            return false;
        }
        let is_placed = |index: usize| placed[index / 64] & (1 << (index % 64)) != 0;
        // Whatever comes next was called before every unplaced answered
        // call was answered.
        let deadline = (0..self.calls.len())
            .filter(|&index| !is_placed(index))
            .filter_map(|index| self.calls[index].answered_ms)
            .min()
            .unwrap_or(u64::MAX);
        for index in 0..self.calls.len() {
            let call = self.calls[index];
            if is_placed(index) || call.called_ms > deadline {
                continue;
            }
            let after = match &call.kind {
                CallKind::Put(written) => Some(written.clone()),
                CallKind::Get(None) => value.clone(),
                CallKind::Get(Some(read)) if *read == value => value.clone(),
                CallKind::Get(Some(_)) => continue,
                CallKind::CompareAndSet {
                    from,
                    to,
                    create_if_missing,
                    written,
                } => {
                    let holds = match &value {
                        Some(held) => held == from,
                        None => *create_if_missing,
                    };
                    match (holds, written) {
                        (true, Some(false)) | (false, Some(true)) => continue,
                        (true, _) => Some(to.clone()),
                        (false, _) => value.clone(),
                    }
                }
            };
            let mut next = placed.clone();
            next[index / 64] |= 1 << (index % 64);
            let counted = answered + usize::from(call.answered_ms.is_some());
            if self.place(next, after, counted) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(called_ms: u64, answered_ms: Option<u64>, kind: CallKind) -> Call {
        Call {
            client: 1,
            key: "k".into(),
            called_ms,
            answered_ms,
            kind,
        }
    }

    fn put(called: u64, answered: Option<u64>, value: u8) -> Call {
        call(called, answered, CallKind::Put(vec![value]))
    }

    fn get(called: u64, answered: u64, value: Option<u8>) -> Call {
        call(
            called,
            Some(answered),
            CallKind::Get(Some(value.map(|v| vec![v]))),
        )
    }

    #[test]
    fn a_sequential_history_that_reads_its_writes_passes() {
        let history = [
            put(0, Some(1), 1),
            get(2, 3, Some(1)),
            put(4, Some(5), 2),
            get(6, 7, Some(2)),
        ];
        assert_eq!(check(&history), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_fails() {
        let history = [put(0, Some(1), 1), put(2, Some(3), 2), get(4, 5, Some(1))];
        assert!(check(&history).is_err());
    }

    #[test]
    fn overlapping_calls_may_go_either_way() {
        let history = [
            put(0, Some(10), 1),
            get(1, 2, None),
            get(3, 4, Some(1)),
            get(5, 6, Some(1)),
        ];
        assert_eq!(check(&history), Ok(()));
        // But once a read saw the write, a later read cannot unsee it.
        let history = [put(0, Some(10), 1), get(3, 4, Some(1)), get(5, 6, None)];
        assert!(check(&history).is_err());
    }

    fn cas(called: u64, answered: Option<u64>, from: u8, to: u8, written: Option<bool>) -> Call {
        let kind = CallKind::CompareAndSet {
            from: vec![from],
            to: vec![to],
            create_if_missing: from == 0,
            written,
        };
        call(called, answered, kind)
    }

    #[test]
    fn compare_and_set_succeeds_only_on_the_value_it_expects() {
        // 0 stands for "absent": those create the key.
        let counted = [
            cas(0, Some(1), 0, 1, Some(true)),
            cas(2, Some(3), 1, 2, Some(true)),
            cas(4, Some(5), 1, 3, Some(false)),
            get(6, 7, Some(2)),
        ];
        assert_eq!(check(&counted), Ok(()));
        let twice_from_one = [
            cas(0, Some(1), 0, 1, Some(true)),
            cas(2, Some(3), 1, 2, Some(true)),
            cas(4, Some(5), 1, 3, Some(true)),
        ];
        assert!(check(&twice_from_one).is_err());
        let failed_on_its_value = [put(0, Some(1), 1), cas(2, Some(3), 1, 2, Some(false))];
        assert!(check(&failed_on_its_value).is_err());
    }

    #[test]
    fn a_lost_compare_and_set_may_have_enabled_the_next() {
        let history = [
            cas(0, Some(1), 0, 1, Some(true)),
            cas(2, None, 1, 2, None),
            cas(10, Some(11), 2, 3, Some(true)),
        ];
        assert_eq!(check(&history), Ok(()));
        let never_written = [
            cas(0, Some(1), 0, 1, Some(true)),
            cas(10, Some(11), 2, 3, Some(true)),
        ];
        assert!(check(&never_written).is_err());
    }

    #[test]
    fn an_unanswered_write_may_take_effect_late_or_never() {
        let late = [put(0, None, 1), get(1, 2, None), get(5, 6, Some(1))];
        assert_eq!(check(&late), Ok(()));
        let never = [put(0, None, 1), get(1, 2, None), get(5, 6, None)];
        assert_eq!(check(&never), Ok(()));
        let from_nowhere = [get(1, 2, Some(9))];
        assert!(check(&from_nowhere).is_err());
    }
}
