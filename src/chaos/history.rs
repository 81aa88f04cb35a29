//! The client history of a chaos run, written as `DIR/history.jsonl` in
//! the shape independent linearizability checkers read (Jepsen's: a
//! process, `invoke` then `ok`, `fail` or `info`, a function, a value), so
//! that a checker other than ours (Knossos, Porcupine) can be run over the
//! same operations.
//!
//! One line per event:
//!
//! ```text
//! {"index":0,"process":"raft-1","type":"invoke","f":"write","key":"k0-3","value":"c1-1","time":1203344}
//! {"index":1,"process":"raft-1","type":"ok","f":"write","key":"k0-3","value":"c1-1","time":2211094}
//! ```
//!
//! - `process`: `raft-N` or `pbft-N`, one operation at a time each, so an
//!   invocation's completion is the process's next event; the final reads
//!   are `raft-final` and `pbft-final`.
//! - `type`: `ok` (done), `fail` (certainly not done: a read that got no
//!   answer changes nothing) or `info` (unknown: a write or decision with no
//!   answer may still take effect).
//! - `f`: `read` (value: what was read, null when the key was absent),
//!   `write` (value: what was written), `decide` (PBFT's append to a log;
//!   `place` is where in the log it was given, once `ok`).
//! - `time`: nanoseconds on a monotonic clock from the workload's start.
//!
//! Keys are independent registers: check each key's operations on its own
//! (Knossos's `independent`, Porcupine's partitioned model). The Raft key
//! space and the PBFT one are separate systems; check them apart.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Events kept at most; beyond, they are counted as dropped and the
/// history says it is incomplete (a ten-minute run makes about a million).
pub const EVENTS_MAX: usize = 8_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Read,
    Write,
    /// Write only if the key has no value (PBFT's claim); `ok`'s value
    /// is the key's holder after it.
    Claim,
    Decide,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub index: u64,
    pub process: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: Function,
    pub key: String,
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<u64>,
    pub time: u64,
}

/// What every client of one run did, in the order it happened.
pub struct History {
    started: Instant,
    events: Mutex<Vec<Event>>,
    dropped: AtomicU64,
}

impl History {
    pub fn new(started: Instant) -> History {
        History {
            started,
            events: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records one event now. `value` bytes are shown as text (the
    /// workload writes text), lossily if they are not UTF-8.
    pub fn record(
        &self,
        process: &str,
        kind: Kind,
        f: Function,
        key: &str,
        value: Option<&[u8]>,
        place: Option<u64>,
    ) {
        let mut events = self.events.lock().expect("never poisoned");
        if events.len() >= EVENTS_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Taken under the lock, so times grow with the index.
        let time = self.started.elapsed().as_nanos() as u64;
        let event = Event {
            index: events.len() as u64,
            process: process.to_string(),
            kind,
            f,
            key: key.to_string(),
            value: value.map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
            place,
            time,
        };
        events.push(event);
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("never poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events not kept because the history was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes one JSON object per line to `path`.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let events = self.events.lock().expect("never poisoned");
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        for event in events.iter() {
            serde_json::to_writer(&mut file, event)?;
            file.write_all(b"\n")?;
        }
        file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_timed_in_order_and_written_a_line_each() {
        let history = History::new(Instant::now());
        history.record(
            "raft-0",
            Kind::Invoke,
            Function::Write,
            "k",
            Some(b"v"),
            None,
        );
        history.record("raft-0", Kind::Info, Function::Write, "k", Some(b"v"), None);
        history.record("pbft-1", Kind::Invoke, Function::Read, "p", None, None);
        history.record("pbft-1", Kind::Ok, Function::Read, "p", None, None);
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("history.jsonl");
        history.write_jsonl(&path).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1]["type"], "info");
        assert_eq!(lines[1]["f"], "write");
        assert_eq!(lines[1]["value"], "v");
        assert_eq!(lines[3]["value"], serde_json::Value::Null, "absent: null");
        assert!(lines
            .windows(2)
            .all(|pair| pair[0]["time"].as_u64() <= pair[1]["time"].as_u64()));
        assert_eq!(lines[3]["index"], 3);
    }
}
