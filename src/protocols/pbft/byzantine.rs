//! Byzantine behaviours a replica can be made to show, for tests and
//! benchmarks (never on by default): what each does to the messages and
//! replies a correct replica would send. The simulation and the actor
//! share these; delays and replays are carried out by whoever sends.

use super::messages::{batch_digest, Body, Keys, OperationResult, Signed};
use super::replica::Reply;

/// How a replica misbehaves; the names are those of the config and bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    Correct,
    /// Sends nothing at all (a crash).
    Silent,
    /// As primary, sends every replica a different pre-prepare (so none
    /// gathers a quorum); as a backup, conflicting prepares and commits;
    /// lies to clients.
    Equivocate,
    /// Every signature it sends is broken.
    CorruptSignatures,
    /// Everything it sends arrives late.
    Delay,
    /// Also sends again, to anyone, old messages it saw.
    Replay,
    /// Its checkpoints name a wrong state digest; lies to clients.
    LieCheckpoint,
}

impl Behaviour {
    pub const BYZANTINE: [Behaviour; 6] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::CorruptSignatures,
        Behaviour::Delay,
        Behaviour::Replay,
        Behaviour::LieCheckpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Correct => "correct",
            Behaviour::Silent => "silent",
            Behaviour::Equivocate => "equivocate",
            Behaviour::CorruptSignatures => "corrupt-signatures",
            Behaviour::Delay => "delay",
            Behaviour::Replay => "replay",
            Behaviour::LieCheckpoint => "lie-checkpoint",
        }
    }

    /// The behaviour called `name`, or a message listing the names.
    pub fn from_name(name: &str) -> Result<Behaviour, String> {
        let all = std::iter::once(Behaviour::Correct).chain(Behaviour::BYZANTINE);
        all.clone().find(|b| b.name() == name).ok_or_else(|| {
            let names: Vec<&str> = all.map(Behaviour::name).collect();
            format!(
                "unknown behaviour {name:?}; use one of {}",
                names.join(", ")
            )
        })
    }

    /// What this behaviour makes of `message`, sent to the `place`-th of
    /// its receivers; re-signed with the replica's own `keys` when changed.
    pub fn message(self, message: &Signed, place: usize, keys: &dyn Keys) -> Signed {
        let mut message = message.clone();
        let resign = |message: Signed| Signed::new(message.from, message.view, message.body, keys);
        match (self, &mut message.body) {
            (Behaviour::CorruptSignatures, _) => {
                message.signature[7] ^= 0x40;
                message
            }
            (Behaviour::Equivocate, Body::PrePrepare { digest, batch, .. }) if place > 0 => {
                // Each receiver's batch differs: its first request again
                // as many times as the receiver's place.
                if let Some(first) = batch.first().cloned() {
                    batch.extend(std::iter::repeat_n(first, place));
                }
                *digest = batch_digest(batch);
                resign(message)
            }
            (Behaviour::Equivocate, Body::Prepare { digest, .. } | Body::Commit { digest, .. })
                if place % 2 == 1 =>
            {
                digest[0] ^= 0xff;
                resign(message)
            }
            (Behaviour::LieCheckpoint, Body::Checkpoint { state, .. }) => {
                state[0] ^= 0xff;
                resign(message)
            }
            _ => message,
        }
    }

    /// What this behaviour tells a client; None: nothing.
    pub fn reply(self, mut reply: Reply) -> Option<Reply> {
        match self {
            Behaviour::Silent => None,
            Behaviour::Equivocate | Behaviour::LieCheckpoint => {
                reply.result = OperationResult::Value(Some(b"a lie".to_vec()));
                Some(reply)
            }
            _ => Some(reply),
        }
    }
}
