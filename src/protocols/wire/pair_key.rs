//! Pairwise keys: a secret two nodes share, and the MACs it makes.
//!
//! An acknowledgement must be authentic end to end (a transit router that
//! could forge one would make its origin forget a message), but it is
//! read only by the one node it is addressed to, so it needs no signature
//! anyone can check: a MAC keyed by a secret only the two ends hold does,
//! at about a microsecond instead of the tens a signature and its
//! verification cost. The secret is the static X25519 Diffie–Hellman of the
//! two nodes' Ed25519 identities (the birational map libsodium also uses),
//! hashed with both node ids in sorted order, so each side derives the same
//! key without a message.

use ed25519_dalek::{SigningKey, VerifyingKey};
use ring::hmac;

/// Domain separation for the key derivation.
const KEY_CONTEXT: &[u8] = b"agentmesh/pair-key/v1\0";

/// Bytes of a MAC.
pub const MAC_BYTES: usize = 32;

/// The secret one node shares with one other node.
pub struct PairKey {
    key: hmac::Key,
}

impl PairKey {
    /// The key `own_id` (holding `own_key`) shares with `other_id`.
    pub fn derive(
        own_key: &SigningKey,
        own_id: &str,
        other_key: &VerifyingKey,
        other_id: &str,
    ) -> PairKey {
        let shared = other_key.to_montgomery() * own_key.to_scalar();
        let (low, high) = if own_id <= other_id {
            (own_id, other_id)
        } else {
            (other_id, own_id)
        };
        let mut material = Vec::with_capacity(KEY_CONTEXT.len() + 32 + low.len() + high.len() + 2);
        material.extend_from_slice(KEY_CONTEXT);
        material.extend_from_slice(shared.as_bytes());
        // Lengths first, so ("ab", "c") and ("a", "bc") never collide.
        material.push(low.len() as u8);
        material.extend_from_slice(low.as_bytes());
        material.push(high.len() as u8);
        material.extend_from_slice(high.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &material);
        PairKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref()),
        }
    }

    /// The MAC of `bytes`.
    pub fn mac(&self, bytes: &[u8]) -> [u8; MAC_BYTES] {
        let tag = hmac::sign(&self.key, bytes);
        tag.as_ref()
            .try_into()
            .expect("HMAC-SHA256 tags are 32 bytes")
    }

    /// Whether `tag` is the MAC of `bytes`, compared in constant time.
    pub fn check(&self, bytes: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, bytes, tag).is_ok()
    }
}
