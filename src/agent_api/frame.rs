//! What an agent's message carries inside its envelope: the body, and
//! whether it is a plain message, a request awaiting a response, or the
//! response to one. The mesh carries these bytes as it carries any
//! payload; only agents read them.

use bincode::{Decode, Encode};

use super::control::{ControlAsk, ControlOutcome};

/// One agent-to-agent message as it travels in an envelope's payload.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Frame {
    /// A message that expects no answer.
    Tell(Vec<u8>),
    /// A request; the sender waits for a [`Frame::Response`] with the same
    /// id until its timeout.
    Request {
        /// Unique among the sender's requests.
        id: u64,
        /// What the request carries.
        body: Vec<u8>,
    },
    /// The answer to the sender's request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// What the response carries.
        body: Vec<u8>,
    },
    /// A message published on `topic`: one copy travels to each of the
    /// topic's subscribers, as a message of its own.
    Publish {
        /// The topic it was published on.
        topic: String,
        /// What it carries.
        body: Vec<u8>,
    },
    /// An agent's ask of the control plane, sent to the call desk of a
    /// node holding a replica (`call@<node>`) by an agent on a node
    /// without one.
    Control {
        /// The asking incarnation, random: an answer meant for an earlier
        /// incarnation is told apart.
        client: u64,
        /// Unique among the incarnation's asks.
        sequence: u64,
        /// The question.
        ask: ControlAsk,
    },
    /// The desk's answer to the ask `(client, sequence)`.
    ControlAnswer {
        /// The asking incarnation.
        client: u64,
        /// The ask's sequence.
        sequence: u64,
        /// The answer, or why there is none.
        outcome: ControlOutcome,
    },
}

impl Frame {
    /// The message's body, whatever its kind (empty for the control
    /// plane's asks and answers, which carry no agent's body).
    pub fn body(&self) -> &[u8] {
        match self {
            Frame::Tell(body)
            | Frame::Request { body, .. }
            | Frame::Response { body, .. }
            | Frame::Publish { body, .. } => body,
            Frame::Control { .. } | Frame::ControlAnswer { .. } => &[],
        }
    }

    /// The payload bytes for an envelope.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, bincode::config::standard())
            .expect("encoding a frame into a Vec cannot fail")
    }

    /// Reads a payload; `Err` says why it is not a frame (all of it must be
    /// one frame).
    pub fn decode(payload: &[u8]) -> Result<Frame, String> {
        let config = bincode::config::standard().with_limit::<{ FRAME_DECODE_BYTES_MAX }>();
        let (frame, read) = bincode::decode_from_slice(payload, config)
            .map_err(|error| format!("not an agent frame: {error}"))?;
        if read != payload.len() {
            return Err(format!(
                "not an agent frame: {} bytes after the frame",
                payload.len() - read
            ));
        }
        Ok(frame)
    }
}

/// Most bytes a frame may decode to: more than any payload the mesh
/// carries (`PAYLOAD_BYTES_MAX`), so only a lying length is refused.
const FRAME_DECODE_BYTES_MAX: usize = 1 << 20;

/// The payload of a plain message carrying `body`: what code outside an
/// agent (tests, load generators) sends with `router::send_with_receipt`.
pub fn tell(body: Vec<u8>) -> Vec<u8> {
    Frame::Tell(body).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::control::{ControlAnswer, ControlError};

    #[test]
    fn frames_read_back_as_written() {
        for frame in [
            Frame::Tell(vec![1, 2, 3]),
            Frame::Request {
                id: 7,
                body: vec![],
            },
            Frame::Response {
                id: u64::MAX,
                body: vec![9; 300],
            },
            Frame::Publish {
                topic: "prices".into(),
                body: vec![4, 2],
            },
            Frame::Control {
                client: 9,
                sequence: 1,
                ask: ControlAsk::CompareAndSet {
                    key: "k".into(),
                    from: vec![1],
                    to: vec![2],
                    create_if_missing: true,
                },
            },
            Frame::ControlAnswer {
                client: 9,
                sequence: 1,
                outcome: Err(ControlError::Indeterminate("lost".into())),
            },
            Frame::ControlAnswer {
                client: 9,
                sequence: 2,
                outcome: Ok(ControlAnswer::Value(vec![3])),
            },
        ] {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn bytes_that_are_not_one_frame_are_refused() {
        assert!(Frame::decode(&[]).is_err());
        assert!(Frame::decode(&[9, 1, 2]).is_err(), "no such variant");
        let mut trailing = tell(vec![1]);
        trailing.push(0);
        let error = Frame::decode(&trailing).unwrap_err();
        assert!(error.contains("1 bytes after"), "{error}");
        // A Tell claiming a body longer than the limit.
        let lying = [0u8, 253, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(Frame::decode(&lying).is_err());
    }
}
