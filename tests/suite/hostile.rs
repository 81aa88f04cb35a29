//! Hostile input on the stable toolchain: the fuzz targets' entry points
//! (`agentmesh::fuzzing`) over arbitrary bytes and over valid encodings
//! with bytes changed, and over every input kept in the fuzz corpus
//! (`fuzz/corpus/<target>/`), so what the fuzzers found stays fixed.
//!
//! `AGENTMESH_WRITE_CORPUS=1 cargo test --release --test hostile` writes
//! the corpus seeds (valid encodings of each kind of input) again.

use std::path::{Path, PathBuf};

use agentmesh::fuzzing;
use agentmesh::protocols::delivery::AckRange;
use agentmesh::protocols::pbft::keys::SimKeys;
use agentmesh::protocols::pbft::messages::{encode, Body, Packet, Request, Signed};
use agentmesh::protocols::pbft::Operation;
use agentmesh::protocols::wire::codec::{encode_acks, encode_raft_message};
use agentmesh::protocols::wire::{
    encode_frame, Destination, Envelope, EnvelopeKind, Frame, SignedFields,
};
use proptest::prelude::*;

/// A fuzz target's name and entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 5] = [
    ("frame", fuzzing::frame),
    ("stream", fuzzing::stream),
    ("raft", fuzzing::raft),
    ("config", fuzzing::config),
    ("pbft", fuzzing::pbft),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Prefixes each item with its length, as the stream and PBFT entries read.
fn framed(items: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for item in items {
        bytes.extend_from_slice(&(item.len() as u16).to_le_bytes());
        bytes.extend_from_slice(item);
    }
    bytes
}

fn envelope(kind: EnvelopeKind, payload: Vec<u8>) -> Envelope {
    Envelope::sign(
        fields(kind, payload),
        &ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
    )
}

/// Sealed as a node seals its acknowledgements and, by default, its data.
fn sealed(kind: EnvelopeKind, payload: Vec<u8>) -> Envelope {
    let own = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key();
    let key = agentmesh::protocols::wire::pair_key::PairKey::derive(&own, "n1", &other, "n2");
    Envelope::seal(fields(kind, payload), &key)
}

fn fields(kind: EnvelopeKind, payload: Vec<u8>) -> SignedFields {
    SignedFields {
        version: agentmesh::protocols::wire::limits::ENVELOPE_VERSION,
        kind,
        origin_node: "n1".into(),
        source_agent: "storm-0".into(),
        destination: Destination::Agent("echo-1".into()),
        sequence: 7,
        ttl: 8,
        sent_at_micros: 1_700_000_000_000_000,
        payload,
    }
}

fn raft_frames() -> Vec<Vec<u8>> {
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    message.from = 1;
    message.to = 2;
    message.term = 3;
    message.index = 10;
    message.log_term = 2;
    message.commit = 9;
    let entry = raft::eraftpb::Entry {
        index: 11,
        term: 3,
        data: b"put k v".to_vec().into(),
        ..Default::default()
    };
    message.entries = vec![entry].into();
    encode_raft_message(&message)
}

fn pbft_packets() -> Vec<Vec<u8>> {
    let client = SimKeys::client(0xf022, 1);
    let request = Request::new(
        SimKeys::client_key(1),
        1,
        Operation::Put {
            key: "k".into(),
            value: b"v".to_vec(),
        },
        &client,
    );
    let primary = SimKeys::replica(0xf022, 0);
    let batch = vec![request.clone()];
    let digest = agentmesh::protocols::pbft::messages::digest_of(&encode(&batch));
    let bodies = [
        Body::PrePrepare {
            sequence: 1,
            digest,
            batch,
        },
        Body::Prepare {
            sequence: 1,
            digest,
        },
        Body::Commit {
            sequence: 1,
            digest,
        },
        Body::Checkpoint {
            sequence: 4,
            state: digest,
        },
    ];
    let mut packets: Vec<Vec<u8>> = bodies
        .into_iter()
        .map(|body| encode(&Packet::Message(Signed::new(0, 0, body, &primary))))
        .collect();
    packets.push(encode(&Packet::Request(request)));
    packets
}

/// Valid inputs of each target, as (target, name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let data = encode_frame(&Frame::Envelope(envelope(
        EnvelopeKind::Data,
        b"hello".to_vec(),
    )));
    let ranges = vec![AckRange { first: 1, count: 9 }];
    let ack = encode_frame(&Frame::Envelope(sealed(
        EnvelopeKind::Ack,
        encode_acks(&ranges),
    )));
    let data_sealed = encode_frame(&Frame::Envelope(sealed(
        EnvelopeKind::Data,
        b"hello".to_vec(),
    )));
    let raft = raft_frames();
    let raft_message = {
        use protobuf::Message as _;
        let mut message = raft::eraftpb::Message::default();
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        message.write_to_bytes().unwrap()
    };
    let overlay = encode_frame(&Frame::Overlay(
        agentmesh::protocols::wire::codec::CommittedOverlay {
            epoch: 3,
            down: vec![1],
            placed: vec![(0, 0), (1, 2)],
        },
    ));
    let mut seeds = vec![
        ("frame", "data".to_string(), data.clone()),
        ("frame", "overlay-placed".to_string(), overlay),
        ("frame", "ack".to_string(), ack.clone()),
        ("frame", "data-sealed".to_string(), data_sealed),
        ("frame", "raft-part".to_string(), raft[0].clone()),
        (
            "stream",
            "mixed".to_string(),
            framed(&[data, ack, raft[0].clone()]),
        ),
        ("raft", "heartbeat".to_string(), raft_message),
        ("pbft", "normal-case".to_string(), framed(&pbft_packets())),
    ];
    for name in ["local.toml", "chaos.toml", "mesh-100.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        seeds.push(("config", name.to_string(), std::fs::read(path).unwrap()));
    }
    seeds
}

/// The corpus starts from the seeds: each is kept in `fuzz/corpus`, byte
/// for byte (encodings are deterministic). With AGENTMESH_WRITE_CORPUS set,
/// the test writes them there instead.
#[test]
fn the_fuzz_corpus_holds_every_seed() {
    let write = std::env::var_os("AGENTMESH_WRITE_CORPUS").is_some();
    for (target, name, bytes) in seeds() {
        let folder = corpus_root().join(target);
        let path = folder.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let kept =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(kept, bytes, "{} differs from its seed", path.display());
    }
}

#[test]
fn valid_seeds_pass_every_entry() {
    for (target, name, bytes) in seeds() {
        let (_, entry) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        entry(&bytes);
        // A valid frame decodes: the entry's round-trip check ran on it.
        if target == "frame" {
            assert!(
                agentmesh::protocols::wire::decode_frame(&bytes).is_ok(),
                "{name}"
            );
        }
    }
}

#[test]
fn every_input_in_the_fuzz_corpus_passes() {
    let mut inputs = 0;
    for (target, entry) in TARGETS {
        let folder = corpus_root().join(target);
        let Ok(files) = std::fs::read_dir(&folder) else {
            panic!("no corpus for {target} in {}", folder.display());
        };
        for file in files {
            let path = file.unwrap().path();
            entry(&std::fs::read(&path).unwrap());
            inputs += 1;
        }
    }
    assert!(inputs >= TARGETS.len(), "the corpus is empty");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_any_entry(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for (_, entry) in TARGETS {
            entry(&bytes);
        }
    }

    #[test]
    fn valid_inputs_with_bytes_changed_never_panic(
        pick in any::<prop::sample::Index>(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let seeds = seeds();
        let (target, _, mut bytes) = seeds[pick.index(seeds.len())].clone();
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        let (_, entry) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        entry(&bytes);
    }
}
