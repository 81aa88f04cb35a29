//! What this machine's envelope authentication costs, measured in the same
//! run as a benchmark, so a throughput figure can be read as a fraction of
//! what the machine can sign and verify at all, beside what sealing with a
//! pair key costs instead.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey, Verifier};
use serde::Serialize;

use crate::protocols::wire::pair_key::PairKey;

/// Signatures in one batch verification: about what a busy destination
/// verifies at once.
const BATCH: usize = 16;

#[derive(Clone, Debug, Serialize)]
pub struct CryptoCost {
    pub sign_us: f64,
    pub verify_us: f64,
    /// Per signature, in batches of BATCH.
    pub batch_verify_us: f64,
    /// Cores ÷ (sign + verify) per message: no end-to-end signed message
    /// rate on this machine can exceed it.
    pub ceiling_msgs_per_s: f64,
    /// Sealing an envelope with a pair key, and checking the seal.
    pub seal_us: f64,
    pub check_seal_us: f64,
}

/// Times each operation for about `budget` in total on a message of
/// `payload_bytes` plus an envelope's fields.
pub fn measure(payload_bytes: usize, budget: Duration, cores: usize) -> CryptoCost {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let message = vec![0x5a; payload_bytes + 96];
    let each = budget / 3;
    let sign_us = time_per_call(each, || {
        std::hint::black_box(key.sign(&message));
    });
    let signature = key.sign(&message);
    let verify_us = time_per_call(each, || {
        assert!(public.verify(&message, &signature).is_ok());
    });
    let messages: Vec<&[u8]> = vec![message.as_slice(); BATCH];
    let signatures = vec![signature; BATCH];
    let keys = vec![public; BATCH];
    let batch_us = time_per_call(each, || {
        assert!(ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok());
    });
    let pair = PairKey::derive(
        &key,
        "n1",
        &SigningKey::from_bytes(&[8; 32]).verifying_key(),
        "n2",
    );
    let seal_us = time_per_call(each / 4, || {
        std::hint::black_box(pair.mac(&message));
    });
    let tag = pair.mac(&message);
    let check_seal_us = time_per_call(each / 4, || {
        assert!(pair.check(&message, &tag));
    });
    CryptoCost {
        sign_us,
        verify_us,
        batch_verify_us: batch_us / BATCH as f64,
        ceiling_msgs_per_s: cores as f64 * 1e6 / (sign_us + verify_us),
        seal_us,
        check_seal_us,
    }
}

/// Mean microseconds per call of `call`, repeated for about `budget`.
fn time_per_call(budget: Duration, mut call: impl FnMut()) -> f64 {
    call();
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < 16 || started.elapsed() < budget {
        call();
        calls += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / calls as f64
}
