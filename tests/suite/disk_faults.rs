//! Damage to every file a Raft replica writes, on real files: a log is
//! written (entries over two terms, a vote, a snapshot with entries after
//! it), closed, damaged in one way, and opened again. Every case must end
//! in one of three ways, never a fourth:
//! - the log opens with everything it held (nothing was lost, or the copy
//!   of the identity record that was damaged had a twin);
//! - the log opens with voting withheld and says why (state was lost, and
//!   the replica knows it);
//! - opening fails with an error naming the file or folder.
//!
//! A folder emptied whole, identity record and all, opens as new, with
//! votes only for candidates whose log is empty too (`Voting::Fresh`).

use std::fs;
use std::path::{Path, PathBuf};

use agentmesh::actors::raft_replica::identity::Owner;
use agentmesh::actors::raft_replica::log::RaftLog;
use agentmesh::protocols::raft::{Durable, LogPosition, Persist, Voting};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};

fn owner() -> Owner {
    Owner {
        cluster: "disk-faults".into(),
        node: "n2".into(),
        raft_id: 2,
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("value {index}").into_bytes().into(),
        ..Default::default()
    }
}

fn persist(number: u64, entries: Vec<Entry>, term: u64, vote: u64) -> Persist {
    let commit = entries.last().map_or(0, |entry| entry.index);
    Persist {
        number,
        hard_state: Some(HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }),
        entries,
        snapshot: None,
    }
}

/// A log with entries 1..=60 (term 1 to 40, term 2 after), a vote in term
/// 2, and a snapshot at 30. Returns what it holds.
fn write_log(folder: &Path) -> Durable {
    let log = RaftLog::open(folder, &owner(), true).expect("a new log opens");
    assert_eq!(log.opened().voting, Voting::Fresh, "a new folder is fresh");
    for batch in 0..6u64 {
        let entries = (batch * 10 + 1..=batch * 10 + 10)
            .map(|index| entry(index, if index <= 40 { 1 } else { 2 }))
            .collect();
        let term = if batch < 4 { 1 } else { 2 };
        log.write(&[persist(batch + 1, entries, term, 1)]).unwrap();
        if batch == 3 {
            let mut snapshot = Snapshot {
                data: b"state at 30".to_vec().into(),
                ..Default::default()
            };
            snapshot.mut_metadata().index = 30;
            snapshot.mut_metadata().term = 1;
            snapshot
                .mut_metadata()
                .set_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
            log.compacted(&snapshot).unwrap();
        }
    }
    assert_eq!(
        log.voting(),
        Voting::Allowed,
        "a replica holding entries votes"
    );
    log.load().unwrap()
}

fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for item in fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_folder(&item.path(), &target);
        } else {
            fs::copy(item.path(), target).unwrap();
        }
    }
}

#[derive(Clone, Debug)]
enum Damage {
    TruncateAt(u64),
    FlipAt(u64),
    Remove,
    Garbage,
}

fn apply(file: &Path, damage: &Damage) {
    match damage {
        Damage::TruncateAt(offset) => fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(*offset)
            .unwrap(),
        Damage::FlipAt(offset) => {
            let mut bytes = fs::read(file).unwrap();
            bytes[*offset as usize] ^= 0x5a;
            fs::write(file, bytes).unwrap();
        }
        Damage::Remove => fs::remove_file(file).unwrap(),
        Damage::Garbage => {
            let length = fs::metadata(file).unwrap().len() as usize;
            let garbage: Vec<u8> = (0..length)
                .map(|index| (index.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect();
            fs::write(file, garbage).unwrap();
        }
    }
}

fn damages(length: u64) -> Vec<Damage> {
    let mut offsets: Vec<u64> = [0, 1, 16, 100, 4_200, length / 3, length / 2, length - 1]
        .into_iter()
        .filter(|&offset| offset < length)
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    let mut all: Vec<Damage> = offsets
        .iter()
        .map(|&offset| Damage::TruncateAt(offset))
        .collect();
    all.extend(offsets.iter().map(|&offset| Damage::FlipAt(offset)));
    all.extend([Damage::Remove, Damage::Garbage]);
    all
}

/// Opens the damaged folder twice (the second time as a restart after the
/// first) and checks the outcome is one of the three allowed, the same
/// both times.
fn check(folder: &Path, written: &Durable, case: &str) -> &'static str {
    let first = outcome(folder, written, case);
    let second = outcome(folder, written, case);
    assert_eq!(
        first, second,
        "{case}: a restart must find what the first open found"
    );
    first
}

fn outcome(folder: &Path, written: &Durable, case: &str) -> &'static str {
    let log = match RaftLog::open(folder, &owner(), true) {
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains(&folder.display().to_string()),
                "{case}: the error names no file in the folder: {message}"
            );
            return "refused";
        }
        Ok(log) => log,
    };
    let opened = log.opened().clone();
    let read = log.load().expect("an opened log reads back");
    match opened.voting {
        Voting::Withheld { lost } => {
            assert!(
                lost.term >= 2,
                "{case}: withheld below the term it voted in"
            );
            assert!(
                opened
                    .notes
                    .iter()
                    .any(|note| note.contains("votes withheld")),
                "{case}: withheld without saying why: {:?}",
                opened.notes
            );
            "withheld"
        }
        Voting::Allowed => {
            assert_eq!(
                read.entries, written.entries,
                "{case}: votes, but lost entries"
            );
            assert_eq!(
                read.hard_state.term, written.hard_state.term,
                "{case}: lost its term"
            );
            assert_eq!(
                read.hard_state.vote, written.hard_state.vote,
                "{case}: lost its vote"
            );
            assert_eq!(
                read.snapshot.map(|snapshot| snapshot.get_metadata().index),
                Some(30),
                "{case}: lost its snapshot"
            );
            "intact"
        }
        Voting::Fresh => panic!("{case}: opens as new though it held state: {opened:?}"),
    }
}

fn files_of(folder: &Path) -> Vec<PathBuf> {
    let mut files = vec![folder.join("identity"), folder.join("snapshot")];
    let mut engine: Vec<PathBuf> = fs::read_dir(folder.join("engine"))
        .unwrap()
        .map(|item| item.unwrap().path())
        .filter(|path| path.is_file() && !path.ends_with("LOCK"))
        .collect();
    engine.sort();
    assert!(!engine.is_empty(), "raft-engine wrote no file");
    files.extend(engine);
    files
}

#[test]
fn every_damage_to_every_file_keeps_the_log_withholds_votes_or_refuses() {
    let root = tempfile::tempdir().unwrap();
    let pristine = root.path().join("pristine");
    let written = write_log(&pristine);
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    let mut case_number = 0;
    for file in files_of(&pristine) {
        let relative = file.strip_prefix(&pristine).unwrap().to_path_buf();
        let length = fs::metadata(&file).unwrap().len();
        for damage in damages(length) {
            case_number += 1;
            let folder = root.path().join(format!("case-{case_number}"));
            copy_folder(&pristine, &folder);
            apply(&folder.join(&relative), &damage);
            let case = format!("{} {damage:?}", relative.display());
            let result = check(&folder, &written, &case);
            *tally
                .entry(format!("{}: {result}", relative.display()))
                .or_default() += 1;
            fs::remove_dir_all(&folder).unwrap();
        }
    }
    println!("{tally:#?}");
    // Whatever was damaged, something says so for the files that hold
    // the log itself: damage there is never "intact" unless harmless.
    assert!(
        tally.keys().any(|key| key.ends_with("withheld")),
        "{tally:?}"
    );
    assert!(
        tally.keys().any(|key| key.ends_with("refused")),
        "{tally:?}"
    );
}

#[test]
fn an_emptied_engine_folder_withholds_votes_and_an_emptied_replica_folder_starts_fresh() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("replica");
    let written = write_log(&folder);
    fs::remove_dir_all(folder.join("engine")).unwrap();
    assert_eq!(
        check(&folder, &written, "engine folder emptied"),
        "withheld"
    );

    let folder = root.path().join("second");
    write_log(&folder);
    for item in fs::read_dir(&folder).unwrap() {
        let path = item.unwrap().path();
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }
    let log = RaftLog::open(&folder, &owner(), true).unwrap();
    assert_eq!(log.opened().voting, Voting::Fresh);
}

#[test]
fn a_crash_in_the_middle_of_a_write_is_repaired_without_withholding() {
    // What a crash leaves: the last write's bytes half there, never
    // synced, so never recorded in the identity file.
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("replica");
    let written = write_log(&folder);
    let engine_file = files_of(&folder).pop().unwrap();
    let mut bytes = fs::read(&engine_file).unwrap();
    bytes.extend_from_slice(&[0x17; 300]);
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&engine_file, bytes).unwrap();
    assert_eq!(check(&folder, &written, "torn last write"), "intact");
    let kept: Vec<_> = fs::read_dir(&folder)
        .unwrap()
        .filter(|item| {
            item.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("damaged-")
        })
        .collect();
    assert!(
        kept.is_empty(),
        "nothing acknowledged was cut, so nothing is kept aside"
    );
}

#[test]
fn a_withheld_replica_votes_again_once_its_log_holds_an_entry_of_a_later_term() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("replica");
    write_log(&folder);
    fs::remove_dir_all(folder.join("engine")).unwrap();
    let log = RaftLog::open(&folder, &owner(), true).unwrap();
    let lost = LogPosition {
        term: 2,
        last_index: 60,
        last_term: 2,
    };
    assert_eq!(log.voting(), Voting::Withheld { lost });
    // Caught up from a leader of term 2 (not later): still withheld.
    let caught_up: Vec<Entry> = (1..=60)
        .map(|index| entry(index, if index <= 40 { 1 } else { 2 }))
        .collect();
    log.write(&[persist(1, caught_up, 2, 0)]).unwrap();
    assert_eq!(log.voting(), Voting::Withheld { lost });
    drop(log);
    let log = RaftLog::open(&folder, &owner(), true).unwrap();
    assert_eq!(
        log.voting(),
        Voting::Withheld { lost },
        "kept across a restart"
    );
    // A leader of term 3, elected without it, appends its first entry.
    log.write(&[persist(2, vec![entry(61, 3)], 3, 0)]).unwrap();
    assert_eq!(log.voting(), Voting::Allowed);
    drop(log);
    let log = RaftLog::open(&folder, &owner(), true).unwrap();
    assert_eq!(log.voting(), Voting::Allowed, "and after a restart");
}

#[test]
fn a_log_that_cannot_be_read_is_rebuilt_empty_with_votes_withheld_and_the_old_folder_kept() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("n2");
    write_log(&folder);
    {
        let running = RaftLog::open(&folder, &owner(), true).unwrap();
        let refused =
            agentmesh::actors::raft_replica::log::rebuild(&folder, &owner(), None).unwrap_err();
        assert!(refused.contains("the node still runs"), "{refused}");
        drop(running);
    }
    apply(&folder.join("snapshot"), &Damage::FlipAt(40));
    let error = RaftLog::open(&folder, &owner(), true)
        .err()
        .expect("a damaged snapshot is refused");
    assert!(error.to_string().contains("snapshot"), "{error}");

    let rebuilt = agentmesh::actors::raft_replica::log::rebuild(&folder, &owner(), None).unwrap();
    let lost = LogPosition {
        term: 2,
        last_index: 60,
        last_term: 2,
    };
    assert_eq!(rebuilt.voting, Voting::Withheld { lost });
    assert!(
        rebuilt.kept.join("snapshot").exists(),
        "the old folder is kept whole"
    );
    let log = RaftLog::open(&folder, &owner(), true).unwrap();
    assert_eq!(log.voting(), Voting::Withheld { lost });
    assert!(log.load().unwrap().entries.is_empty());
    assert!(
        log.voting_reason().contains("rebuilt"),
        "{}",
        log.voting_reason()
    );
    drop(log);

    // With the identity record unreadable as well, the operator says which
    // term was lost; without it nothing is changed.
    std::fs::write(folder.join("identity"), b"garbage").unwrap();
    let refused =
        agentmesh::actors::raft_replica::log::rebuild(&folder, &owner(), None).unwrap_err();
    assert!(refused.contains("--term-lost"), "{refused}");
    let rebuilt =
        agentmesh::actors::raft_replica::log::rebuild(&folder, &owner(), Some(7)).unwrap();
    assert!(matches!(rebuilt.voting, Voting::Withheld { lost } if lost.term == 7));
}
