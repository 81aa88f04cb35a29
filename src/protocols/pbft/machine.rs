//! The state PBFT replicas agree on: a key-value map, append-only decision
//! logs, and per client the last request executed and what it gave (so a
//! retried request is answered, never executed twice). Executing the same
//! batches in the same order gives every correct replica the same state
//! and the same digest.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use super::messages::{
    digest_of, encode, ClientKey, Digest, MessageError, Operation, OperationResult, Request,
};

/// Clients remembered; past this, the one heard from longest ago is
/// forgotten (its next request is then new to every replica alike).
pub const CLIENTS_REMEMBERED_MAX: usize = 65_536;
/// Largest state a replica accepts in a state transfer.
pub const STATE_BYTES_MAX: usize = 256 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClientRecord {
    pub timestamp: u64,
    pub result: OperationResult,
    /// The sequence number that executed it.
    pub sequence: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Machine {
    pub kv: BTreeMap<String, Vec<u8>>,
    pub logs: BTreeMap<String, Vec<Vec<u8>>>,
    pub clients: BTreeMap<ClientKey, ClientRecord>,
}

/// What executing one request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executed {
    /// Executed now.
    Fresh(OperationResult),
    /// The client's latest request, executed before: its result again.
    Again(OperationResult),
    /// Older than the client's latest: nothing to say.
    Stale,
}

impl Machine {
    /// Executes `request`, ordered at `sequence`.
    pub fn execute(&mut self, sequence: u64, request: &Request) -> Executed {
        if let Some(record) = self.clients.get(&request.client) {
            if request.timestamp < record.timestamp {
                return Executed::Stale;
            }
            if request.timestamp == record.timestamp {
                return Executed::Again(record.result.clone());
            }
        }
        let result = self.apply(&request.operation);
        let record = ClientRecord {
            timestamp: request.timestamp,
            result: result.clone(),
            sequence,
        };
        self.clients.insert(request.client, record);
        if self.clients.len() > CLIENTS_REMEMBERED_MAX {
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(key, record)| (record.sequence, **key))
                .map(|(key, _)| *key)
                .expect("not empty");
            self.clients.remove(&oldest);
        }
        Executed::Fresh(result)
    }

    fn apply(&mut self, operation: &Operation) -> OperationResult {
        match operation {
            Operation::Put { key, value } => {
                self.kv.insert(key.clone(), value.clone());
                OperationResult::Done
            }
            Operation::Get { key } => OperationResult::Value(self.kv.get(key).cloned()),
            Operation::Claim { key, value } => match self.kv.get(key) {
                Some(holder) => OperationResult::Claimed {
                    won: false,
                    holder: holder.clone(),
                },
                None => {
                    self.kv.insert(key.clone(), value.clone());
                    OperationResult::Claimed {
                        won: true,
                        holder: value.clone(),
                    }
                }
            },
            Operation::Decide { log, entry } => {
                let entries = self.logs.entry(log.clone()).or_default();
                entries.push(entry.clone());
                OperationResult::Decided {
                    index: entries.len() as u64 - 1,
                }
            }
        }
    }

    /// Whether the request of this client and timestamp ([`Request::key`]),
    /// or a later one of its client, was executed.
    pub fn has_executed(&self, (client, timestamp): &(ClientKey, u64)) -> bool {
        self.last_of(client)
            .is_some_and(|record| record.timestamp >= *timestamp)
    }

    /// The last request of `client` executed, if remembered.
    pub fn last_of(&self, client: &ClientKey) -> Option<&ClientRecord> {
        self.clients.get(client)
    }

    pub fn encoded(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn digest(&self) -> Digest {
        digest_of(&self.encoded())
    }

    pub fn decode(bytes: &[u8]) -> Result<Machine, MessageError> {
        if bytes.len() > STATE_BYTES_MAX {
            return Err(MessageError::Malformed(format!(
                "state of {} bytes",
                bytes.len()
            )));
        }
        let (machine, used): (Machine, usize) =
            bincode::decode_from_slice(bytes, bincode::config::standard())
                .map_err(|error| MessageError::Malformed(error.to_string()))?;
        if used != bytes.len() {
            return Err(MessageError::Malformed("trailing bytes after state".into()));
        }
        Ok(machine)
    }
}
