//! Micro-benchmarks of the pure cores: envelope encoding and decoding,
//! signing and verifying (one and in batches), overlay building at 100,
//! 1,000 and 10,000 nodes, and routing tables. Run: `cargo bench`.

use agentmesh::protocols::routing;
use agentmesh::protocols::topology::{build, Overlay, Shape};
use agentmesh::protocols::wire::envelope::verify_batch;
use agentmesh::protocols::wire::{
    decode_frame, encode_frame, Destination, Envelope, EnvelopeKind, Frame, SignedFields,
};
use divan::{black_box, Bencher};
use ed25519_dalek::SigningKey;

fn main() {
    divan::main();
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn fields(sequence: u64) -> SignedFields {
    SignedFields {
        version: agentmesh::protocols::wire::limits::ENVELOPE_VERSION,
        kind: EnvelopeKind::Data,
        origin_node: "n042".into(),
        source_agent: "storm-42".into(),
        destination: Destination::Agent("storm-7".into()),
        sequence,
        ttl: 8,
        sent_at_micros: 1_700_000_000_000_000,
        payload: vec![0x5a; 64],
    }
}

#[divan::bench]
fn envelope_encode(bencher: Bencher) {
    let frame = Frame::Envelope(Envelope::sign(fields(1), &key()));
    bencher.bench(|| encode_frame(black_box(&frame)));
}

#[divan::bench]
fn envelope_decode(bencher: Bencher) {
    let bytes = encode_frame(&Frame::Envelope(Envelope::sign(fields(1), &key())));
    bencher.bench(|| decode_frame(black_box(&bytes)).expect("decodes"));
}

#[divan::bench]
fn envelope_sign(bencher: Bencher) {
    let key = key();
    bencher.bench(|| Envelope::sign(fields(black_box(1)), &key));
}

#[divan::bench]
fn envelope_verify(bencher: Bencher) {
    let key = key();
    let public = key.verifying_key();
    let envelope = Envelope::sign(fields(1), &key);
    bencher.bench(|| envelope.verify(black_box(&public)).expect("verifies"));
}

/// Per call: a batch of `N` envelopes.
#[divan::bench(consts = [1, 16, 64])]
fn envelope_verify_batch<const N: usize>(bencher: Bencher) {
    let key = key();
    let public = key.verifying_key();
    let envelopes: Vec<Envelope> = (0..N as u64)
        .map(|sequence| Envelope::sign(fields(sequence), &key))
        .collect();
    let batch: Vec<&Envelope> = envelopes.iter().collect();
    bencher.bench(|| {
        let verdicts = verify_batch(black_box(&batch), |_| Some(&public));
        assert!(verdicts.iter().all(Result::is_ok));
    });
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("n{index:05}")).collect()
}

#[divan::bench(args = [100, 1_000, 10_000])]
fn partial_mesh_build(bencher: Bencher, nodes: usize) {
    let names = names(nodes);
    let k = (2.0 * (nodes as f64).ln()).ceil() as usize;
    bencher.bench(|| build(Shape::PartialMesh { k }, black_box(&names), 1));
}

fn mesh(nodes: usize, k: usize) -> Overlay {
    build(Shape::PartialMesh { k }, &names(nodes), 1)
}

#[divan::bench(args = [100, 1_000])]
fn routing_table(bencher: Bencher, nodes: usize) {
    let overlay = mesh(nodes, 20.min(nodes - 1));
    let weight = |a: usize, b: usize| 500 + ((a * 31 + b * 17) % 400) as u64;
    bencher.bench(|| routing::compute(black_box(&overlay), 0, weight));
}
