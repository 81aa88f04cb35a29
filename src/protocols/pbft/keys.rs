//! Two kinds of [`Keys`]: Ed25519 for real replicas and clients, and a
//! keyed hash for simulations, where hundreds of seeds must run in seconds.
//! The stand-in is as unforgeable as the simulation needs: a Byzantine
//! replica there signs only with its own secret.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};

use super::messages::{digest_of, Keys, ReplicaId, Signature, Signer};

/// Client keys kept decompressed: decompressing a key costs about as much
/// as half a verification, and a client sends many requests.
const CLIENT_KEYS_CACHED_MAX: usize = 65_536;

/// A replica's or client's Ed25519 key, and the replicas' public keys.
pub struct Ed25519Keys {
    signing: SigningKey,
    replicas: Vec<VerifyingKey>,
    clients: Mutex<HashMap<[u8; 32], VerifyingKey>>,
}

impl Ed25519Keys {
    pub fn new(signing: SigningKey, replicas: Vec<VerifyingKey>) -> Ed25519Keys {
        Ed25519Keys {
            signing,
            replicas,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn key_of(&self, signer: Signer) -> Option<VerifyingKey> {
        match signer {
            Signer::Replica(id) => self.replicas.get(id as usize).copied(),
            Signer::Client(bytes) => {
                let mut clients = self
                    .clients
                    .lock()
                    .expect("client keys lock is never poisoned");
                if let Some(key) = clients.get(&bytes) {
                    return Some(*key);
                }
                let key = VerifyingKey::from_bytes(&bytes).ok()?;
                if clients.len() >= CLIENT_KEYS_CACHED_MAX {
                    clients.clear();
                }
                clients.insert(bytes, key);
                Some(key)
            }
        }
    }
}

impl Keys for Ed25519Keys {
    fn sign(&self, bytes: &[u8]) -> Signature {
        self.signing.sign(bytes).to_bytes()
    }

    fn verify(&self, signer: Signer, bytes: &[u8], signature: &Signature) -> bool {
        let Some(key) = self.key_of(signer) else {
            return false;
        };
        key.verify_strict(bytes, &Ed25519Signature::from_bytes(signature))
            .is_ok()
    }

    /// One batch verification for all; if it fails, each alone, to find
    /// which.
    fn verify_all(&self, items: &[(Signer, Vec<u8>, Signature)]) -> Vec<bool> {
        let keys: Option<Vec<VerifyingKey>> =
            items.iter().map(|(s, _, _)| self.key_of(*s)).collect();
        if let (Some(keys), true) = (keys, items.len() > 1) {
            let messages: Vec<&[u8]> = items.iter().map(|(_, bytes, _)| bytes.as_slice()).collect();
            let signatures: Vec<Ed25519Signature> = items
                .iter()
                .map(|(_, _, signature)| Ed25519Signature::from_bytes(signature))
                .collect();
            if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
                return vec![true; items.len()];
            }
        }
        items
            .iter()
            .map(|(signer, bytes, signature)| self.verify(*signer, bytes, signature))
            .collect()
    }
}

/// The simulation's keys: a signature is the SHA-256 of the signer's
/// secret and the bytes, twice over.
#[derive(Clone)]
pub struct SimKeys {
    seed: u64,
    me: Signer,
}

impl SimKeys {
    pub fn replica(seed: u64, id: ReplicaId) -> SimKeys {
        SimKeys {
            seed,
            me: Signer::Replica(id),
        }
    }

    /// A client's keys; its public key is [`SimKeys::client_key`].
    pub fn client(seed: u64, client: u64) -> SimKeys {
        SimKeys {
            seed,
            me: Signer::Client(Self::client_key(client)),
        }
    }

    pub fn client_key(client: u64) -> [u8; 32] {
        let mut key = [0xc1; 32];
        key[..8].copy_from_slice(&client.to_le_bytes());
        key
    }

    fn signature_for(&self, signer: Signer, bytes: &[u8]) -> Signature {
        let mut input = self.seed.to_le_bytes().to_vec();
        match signer {
            Signer::Replica(id) => input.extend_from_slice(&id.to_le_bytes()),
            Signer::Client(key) => input.extend_from_slice(&key),
        }
        input.extend_from_slice(bytes);
        let first = digest_of(&input);
        let second = digest_of(&first);
        let mut signature = [0; 64];
        signature[..32].copy_from_slice(&first);
        signature[32..].copy_from_slice(&second);
        signature
    }
}

impl Keys for SimKeys {
    fn sign(&self, bytes: &[u8]) -> Signature {
        self.signature_for(self.me, bytes)
    }

    fn verify(&self, signer: Signer, bytes: &[u8], signature: &Signature) -> bool {
        self.signature_for(signer, bytes) == *signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_verify_alone_and_in_batches_and_find_the_bad_one() {
        let signing: Vec<SigningKey> = (0..4u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect();
        let public: Vec<VerifyingKey> = signing.iter().map(|k| k.verifying_key()).collect();
        let keys: Vec<Ed25519Keys> = signing
            .iter()
            .map(|k| Ed25519Keys::new(k.clone(), public.clone()))
            .collect();
        let mut items: Vec<(Signer, Vec<u8>, Signature)> = (0..4u32)
            .map(|id| {
                let bytes = format!("message {id}").into_bytes();
                let signature = keys[id as usize].sign(&bytes);
                (Signer::Replica(id), bytes, signature)
            })
            .collect();
        assert_eq!(keys[0].verify_all(&items), vec![true; 4]);
        items[2].2[5] ^= 1;
        assert_eq!(keys[0].verify_all(&items), vec![true, true, false, true]);
        let client = SigningKey::from_bytes(&[9; 32]);
        let client_keys = Ed25519Keys::new(client.clone(), public);
        let signature = client_keys.sign(b"request");
        let as_client = Signer::Client(client.verifying_key().to_bytes());
        assert!(keys[1].verify(as_client, b"request", &signature));
        assert!(!keys[1].verify(Signer::Replica(0), b"request", &signature));
    }
}
