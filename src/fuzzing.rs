//! What the fuzz targets in `fuzz/` run, and the property tests over
//! arbitrary bytes in the normal suite (`tests/suite/hostile.rs`) too: each entry
//! takes any bytes, must never panic, and checks that a decoder neither
//! loses nor invents anything — whatever decodes encodes again to bytes that
//! decode to the same value, no longer than the input.
//!
//! Raft messages are decoded, bounded and reassembled here but not stepped
//! into a replica: Raft trusts its authenticated peers (raft-rs stops on a
//! message that contradicts its log), so hostile Raft input is kept out at
//! the handshake and by the sender check, not by the core. PBFT messages
//! are handed to a replica, re-signed so they pass the signature check and
//! reach the protocol's own checks.

use crate::protocols::pbft::keys::SimKeys;
use crate::protocols::pbft::messages::{decode_packet, encode, Packet, Signed};
use crate::protocols::pbft::{PbftConfig, Replica};
use crate::protocols::wire::codec::{
    decode_acks, decode_raft_message, encode_acks, PbftAssembler, RaftAssembler,
};
use crate::protocols::wire::transfer::decode_transfer_header;
use crate::protocols::wire::{decode_frame, encode_frame, Frame};

/// One frame's bytes.
pub fn frame(data: &[u8]) {
    let Ok(frame) = decode_frame(data) else {
        return;
    };
    let again = encode_frame(&frame);
    assert!(again.len() <= data.len(), "re-encoding grew the frame");
    assert_eq!(
        decode_frame(&again),
        Ok(frame),
        "re-encoding changed the frame"
    );
}

/// A stream's worth of frames, each prefixed by its length (two bytes,
/// little-endian), through the decoder and the Raft and PBFT reassemblers,
/// as a peer's data or consensus stream carries them.
pub fn stream(data: &[u8]) {
    let mut raft = RaftAssembler::default();
    let mut pbft = PbftAssembler::default();
    for bytes in length_prefixed(data) {
        let Ok(frame) = decode_frame(bytes) else {
            continue;
        };
        match frame {
            Frame::Raft(part) => {
                let _ = raft.add(part);
            }
            Frame::Pbft(part) => {
                let _ = pbft.add(part);
            }
            Frame::Envelope(envelope)
                if envelope.signed.kind == crate::protocols::wire::EnvelopeKind::Ack =>
            {
                acks(&envelope.signed.payload)
            }
            _ => {}
        }
    }
}

/// The items of `data`, each prefixed by its length (two bytes,
/// little-endian); the last may be cut short.
fn length_prefixed(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (prefix, body) = data.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_le_bytes(*prefix));
        let (item, rest) = body.split_at(length.min(body.len()));
        data = rest;
        Some(item)
    })
}

/// An acknowledgement envelope's payload.
pub fn acks(data: &[u8]) {
    if let Ok(ranges) = decode_acks(data) {
        let again = encode_acks(&ranges);
        assert_eq!(decode_acks(&again), Ok(ranges));
    }
}

/// A Raft message's bytes, and a snapshot stream's header.
pub fn raft(data: &[u8]) {
    if let Ok(mut message) = decode_raft_message(data) {
        // rust-protobuf's equality tells an empty sub-message that was
        // present from one built empty, and it writes unknown fields in
        // hash order; so stability is checked on the bytes of the known
        // fields: what a decoded message encodes to decodes and encodes
        // the same.
        use protobuf::Message as _;
        strip_unknown(&mut message);
        let again = message.write_to_bytes().expect("a decoded message encodes");
        let mut back = decode_raft_message(&again).expect("what encoded decodes");
        strip_unknown(&mut back);
        let twice = back.write_to_bytes().expect("a decoded message encodes");
        assert_eq!(again, twice, "re-encoding changed the Raft message");
    }
    let _ = decode_transfer_header(data);
}

/// Forgets the fields of `message` (and of the messages inside it) that
/// this build of raft-rs does not know.
fn strip_unknown(message: &mut raft::eraftpb::Message) {
    use protobuf::{Clear as _, Message as _};
    message.mut_unknown_fields().clear();
    for entry in message.mut_entries().iter_mut() {
        entry.mut_unknown_fields().clear();
    }
    let snapshot = message.mut_snapshot();
    snapshot.mut_unknown_fields().clear();
    let metadata = snapshot.mut_metadata();
    metadata.mut_unknown_fields().clear();
    metadata.mut_conf_state().mut_unknown_fields().clear();
}

/// Config text: refused with a reason, or accepted; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = crate::config::parse(text, "fuzz.toml", std::path::Path::new(".")) {
        assert!(!error.to_string().is_empty());
    }
}

/// The seed of the keys the PBFT entry signs with.
const KEYS_SEED: u64 = 0xf022;
/// Replicas of the group the PBFT entry's replica belongs to.
const GROUP: u32 = 4;

/// PBFT packets handed to replica 1 of 4, each prefixed by its length (two
/// bytes, little-endian): each replica message is signed again by the
/// replica it names (modulo the group), so it reaches the protocol's
/// checks; requests go in as clients send them.
pub fn pbft(data: &[u8]) {
    let mut config = PbftConfig::new(GROUP);
    config.checkpoint_interval = 4;
    config.window = 8;
    let mut replica = Replica::new(config, 1, SimKeys::replica(KEYS_SEED, 1));
    for bytes in length_prefixed(data) {
        let Ok(packet) = decode_packet(bytes) else {
            continue;
        };
        assert!(
            encode(&packet).len() <= bytes.len(),
            "re-encoding grew the packet"
        );
        match packet {
            Packet::Message(message) => {
                let from = message.from % GROUP;
                let keys = SimKeys::replica(KEYS_SEED, from);
                let signed = Signed::new(from, message.view, message.body, &keys);
                replica.receive(vec![signed]);
            }
            Packet::Request(request) => {
                let _ = replica.requests(vec![request]);
            }
        }
        replica.tick();
        let _ = replica.take_outputs();
    }
}
