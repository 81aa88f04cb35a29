//! The wire's promises: every frame kind round-trips; no byte string makes
//! the decoder panic; a flipped bit in any signed field fails verification;
//! a replayed envelope is refused by the duplicate window; an
//! acknowledgement's MAC holds only under the key its two nodes share.

use std::collections::HashMap;
use std::sync::Arc;

use agentmesh::protocols::wire::envelope::{authenticate, verify_batch, OriginKeys};
use agentmesh::protocols::wire::limits::{FRAME_BYTES_MAX, NAME_BYTES_MAX};
use agentmesh::protocols::wire::pair_key::PairKey;
use agentmesh::protocols::wire::{
    decode_frame, encode_frame, Admission, DecodeError, Destination, DuplicateWindow, Envelope,
    EnvelopeKind, Frame, SignedFields, StreamHeader, TrafficClass, VerifyError,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use proptest::prelude::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9-]{{1,{NAME_BYTES_MAX}}}")).unwrap()
}

fn destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        name().prop_map(Destination::Agent),
        name().prop_map(Destination::Node),
        Just(Destination::Broadcast),
        (name(), name()).prop_map(|(agent, node)| Destination::Placed { agent, node })
    ]
}

prop_compose! {
    fn signed_fields()(
        kind in proptest::sample::select(EnvelopeKind::ALL.to_vec()),
        origin_node in name(), source_agent in name(), destination in destination(),
        sequence in any::<u64>(), ttl in 1u8..=agentmesh::protocols::wire::limits::TTL_MAX, sent_at_micros in any::<u64>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) -> SignedFields {
        SignedFields { version: agentmesh::protocols::wire::limits::ENVELOPE_VERSION, kind, origin_node, source_agent, destination, sequence, ttl, sent_at_micros, payload }
    }
}

proptest! {
    #[test]
    fn every_frame_round_trips(signed in signed_fields(), hops in 0u8..=1) {
        let mut envelope = Envelope::sign(signed, &key(1));
        envelope.hop_count = hops;
        let frame = Frame::Envelope(envelope);
        prop_assert_eq!(decode_frame(&encode_frame(&frame)), Ok(frame));
    }

    #[test]
    fn truncated_frames_are_errors(signed in signed_fields(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_frame(&Frame::Envelope(Envelope::sign(signed, &key(1))));
        let cut = cut.index(bytes.len());
        prop_assert!(decode_frame(&bytes[..cut]).is_err());
    }

    #[test]
    fn trailing_bytes_are_errors(signed in signed_fields(), extra in proptest::collection::vec(any::<u8>(), 1..16)) {
        let mut bytes = encode_frame(&Frame::Envelope(Envelope::sign(signed, &key(1))));
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(decode_frame(&bytes), Err(DecodeError::TrailingBytes(extra.len())));
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn any_flipped_bit_of_a_signed_field_fails_verification(signed in signed_fields(), bit in any::<prop::sample::Index>()) {
        let signer = key(2);
        let envelope = Envelope::sign(signed, &signer);
        let bytes = encode_frame(&Frame::Envelope(envelope.clone()));
        // The signed fields are everything but the last 65 bytes (hop count, signature).
        let signed_bits = (bytes.len() - 65) * 8;
        let bit = bit.index(signed_bits) + 8; // skip the frame tag
        let mut tampered = bytes.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        // A flip may break the frame (an error), or re-encode the same values
        // (bincode accepts non-canonical varints; nothing signed changed, and
        // the signature covers the canonical encoding), or change a field,
        // which must fail verification.
        if let Ok(Frame::Envelope(tampered)) = decode_frame(&tampered) {
            let expected = if tampered.signed == envelope.signed { Ok(()) } else { Err(VerifyError::BadSignature) };
            prop_assert_eq!(tampered.verify(&signer.verifying_key()), expected);
        }
    }
}

fn sample(sequence: u64) -> SignedFields {
    SignedFields {
        version: agentmesh::protocols::wire::limits::ENVELOPE_VERSION,
        kind: EnvelopeKind::Data,
        origin_node: "n1".into(),
        source_agent: "storm-0".into(),
        destination: Destination::Agent("echo-1".into()),
        sequence,
        ttl: 8,
        sent_at_micros: 1_700_000_000_000_000,
        payload: vec![7; 16],
    }
}

#[test]
fn hop_count_is_not_signed_but_bounded_by_ttl() {
    let signer = key(3);
    let mut envelope = Envelope::sign(sample(1), &signer);
    envelope.hop_count = 5;
    assert_eq!(envelope.verify(&signer.verifying_key()), Ok(()));
    envelope.hop_count = 9;
    assert!(matches!(
        decode_frame(&encode_frame(&Frame::Envelope(envelope))),
        Err(DecodeError::InvalidEnvelope(_))
    ));
}

#[test]
fn changing_any_signed_field_fails_verification_and_the_seal() {
    let signer = key(9);
    let envelope = Envelope::sign(sample(1), &signer);
    let pair = PairKey::derive(&signer, "n1", &key(2).verifying_key(), "n2");
    let sealed = Envelope::seal(sample(1), &pair);
    assert_eq!(sealed.check_seal(&pair), Ok(()));
    type Tampering = (&'static str, fn(&mut SignedFields));
    let tamperings: [Tampering; 9] = [
        ("version", |s| s.version ^= 1),
        ("kind", |s| s.kind = EnvelopeKind::Reply),
        ("origin_node", |s| s.origin_node.push('x')),
        ("source_agent", |s| s.source_agent = "storm-1".into()),
        ("destination", |s| s.destination = Destination::Broadcast),
        ("sequence", |s| s.sequence += 1),
        ("ttl", |s| s.ttl -= 1),
        ("sent_at_micros", |s| s.sent_at_micros -= 1),
        ("payload", |s| s.payload[15] ^= 0x80),
    ];
    for (field, tamper) in tamperings {
        let mut tampered = envelope.clone();
        tamper(&mut tampered.signed);
        assert_eq!(
            tampered.verify(&signer.verifying_key()),
            Err(VerifyError::BadSignature),
            "field {field}"
        );
        let mut tampered = sealed.clone();
        tamper(&mut tampered.signed);
        assert_eq!(
            tampered.check_seal(&pair),
            Err(VerifyError::BadSignature),
            "sealed, field {field}"
        );
    }
}

#[test]
fn a_signature_by_another_key_fails() {
    let envelope = Envelope::sign(sample(1), &key(4));
    assert_eq!(
        envelope.verify(&key(5).verifying_key()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn batch_verification_singles_out_bad_and_unknown_envelopes() {
    let signer = key(6);
    let public = signer.verifying_key();
    let mut envelopes: Vec<Envelope> = (0..10)
        .map(|sequence| Envelope::sign(sample(sequence), &signer))
        .collect();
    envelopes[3].signed.payload[0] ^= 1;
    envelopes[7].signed.origin_node = "stranger".into();
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    let results = verify_batch(&batch, |origin| (origin == "n1").then_some(&public));
    for (index, result) in results.iter().enumerate() {
        match index {
            3 => assert_eq!(*result, Err(VerifyError::BadSignature)),
            7 => assert_eq!(*result, Err(VerifyError::UnknownOrigin("stranger".into()))),
            _ => assert_eq!(*result, Ok(())),
        }
    }
}

/// What node "n2" knows of the others, as a router would.
struct Keys {
    own: SigningKey,
    public: HashMap<String, VerifyingKey>,
}

impl OriginKeys for Keys {
    fn verifying_key(&self, origin: &str) -> Option<&VerifyingKey> {
        self.public.get(origin)
    }

    fn pair_key(&self, origin: &str) -> Option<Arc<PairKey>> {
        let other = self.public.get(origin)?;
        Some(Arc::new(PairKey::derive(&self.own, "n2", other, origin)))
    }
}

fn ack(sequence: u64) -> SignedFields {
    SignedFields {
        kind: EnvelopeKind::Ack,
        destination: Destination::Node("n2".into()),
        ..sample(sequence)
    }
}

#[test]
fn both_ends_derive_the_same_pair_key_and_no_third_node_does() {
    let (one, two, three) = (key(1), key(2), key(3));
    let at_one = PairKey::derive(&one, "n1", &two.verifying_key(), "n2");
    let at_two = PairKey::derive(&two, "n2", &one.verifying_key(), "n1");
    let at_three = PairKey::derive(&three, "n3", &two.verifying_key(), "n2");
    let tag = at_one.mac(b"acknowledged");
    assert!(at_two.check(b"acknowledged", &tag));
    assert!(!at_two.check(b"acknowledgee", &tag));
    assert!(!at_three.check(b"acknowledged", &tag));
}

#[test]
fn sealed_envelopes_check_by_mac_signed_ones_by_signature_and_acks_only_by_mac() {
    let (one, three) = (key(1), key(3));
    let keys = Keys {
        own: key(2),
        public: [("n1", &one), ("n3", &three)]
            .into_iter()
            .map(|(id, key)| (id.to_string(), key.verifying_key()))
            .collect(),
    };
    let to_two = |key: &SigningKey| PairKey::derive(key, "n1", &keys.own.verifying_key(), "n2");
    let mut envelopes = vec![
        Envelope::sign(sample(1), &one),
        Envelope::seal(ack(2), &to_two(&one)),
        Envelope::seal(ack(3), &to_two(&one)),
        // Claims n1 but is sealed with a key n1 does not hold.
        Envelope::seal(ack(4), &to_two(&three)),
        Envelope::seal(ack(5), &to_two(&one)),
        // A signature where a MAC belongs.
        Envelope::sign(ack(6), &one),
        Envelope::sign(sample(7), &one),
        Envelope::seal(sample(8), &to_two(&one)),
        // Data sealed for another node, and data claiming it never left.
        Envelope::seal(
            sample(9),
            &PairKey::derive(&one, "n1", &three.verifying_key(), "n3"),
        ),
        Envelope::local(sample(10)),
    ];
    envelopes[2].signed.payload[0] ^= 1;
    envelopes[4].signed.origin_node = "stranger".into();
    let results = authenticate(&envelopes, &keys);
    let expected = [
        Ok(()),
        Ok(()),
        Err(VerifyError::BadSignature),
        Err(VerifyError::BadSignature),
        Err(VerifyError::UnknownOrigin("stranger".into())),
        Err(VerifyError::BadSignature),
        Ok(()),
        Ok(()),
        Err(VerifyError::BadSignature),
        Err(VerifyError::BadSignature),
    ];
    assert_eq!(results, expected);
}

#[test]
fn a_replayed_envelope_is_refused() {
    let signer = key(7);
    let envelope = Envelope::sign(sample(42), &signer);
    let replay = decode_frame(&encode_frame(&Frame::Envelope(envelope.clone()))).unwrap();
    let mut window = DuplicateWindow::new();
    assert_eq!(window.admit(envelope.signed.sequence), Admission::Fresh);
    let Frame::Envelope(replay) = replay else {
        panic!("an envelope frame decodes as an envelope");
    };
    assert_eq!(
        replay.verify(&signer.verifying_key()),
        Ok(()),
        "a replay carries a valid signature"
    );
    assert_eq!(window.admit(replay.signed.sequence), Admission::Duplicate);
}

#[test]
fn oversized_frames_and_bad_stream_headers_are_errors() {
    assert_eq!(
        decode_frame(&vec![0; FRAME_BYTES_MAX + 1]),
        Err(DecodeError::FrameTooLarge(FRAME_BYTES_MAX + 1))
    );
    for class in TrafficClass::ALL {
        assert_eq!(
            StreamHeader::decode(StreamHeader { class }.encode()),
            Ok(StreamHeader { class })
        );
    }
    assert_eq!(
        StreamHeader::decode([9, 0]),
        Err(DecodeError::UnsupportedStreamVersion(9))
    );
    assert_eq!(
        StreamHeader::decode([agentmesh::protocols::wire::codec::STREAM_VERSION, 9]),
        Err(DecodeError::UnknownTrafficClass(9))
    );
    // A length field claiming far more than the frame holds allocates nothing.
    let mut huge_payload = encode_frame(&Frame::Envelope(Envelope::sign(sample(1), &key(8))));
    huge_payload.truncate(40);
    huge_payload.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0x7f]);
    assert!(decode_frame(&huge_payload).is_err());
}
