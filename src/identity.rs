//! Node identities: Ed25519 keys, their text forms and their files.
//!
//! A public key is written in the cluster config as unpadded standard base64
//! of its 32 bytes; a private key file holds base64 of the 32-byte seed on
//! one line and is created readable by its owner only.

use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not base64 of a 32-byte Ed25519 key")]
    BadKeyText(String),
    #[error("{0:?} is not a valid Ed25519 public key")]
    BadPublicKey(String),
    #[error("cannot read key file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot write key file {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("key file {0} already exists; refusing to overwrite a node identity")]
    Exists(String),
    #[error("key file {path} may be read by others (mode {mode:03o}): a private key must be the owner's alone; chmod 600 {path}")]
    Exposed { path: String, mode: u32 },
}

pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

pub fn public_key_text(key: &VerifyingKey) -> String {
    STANDARD_NO_PAD.encode(key.as_bytes())
}

fn key_bytes(text: &str) -> Result<[u8; 32], IdentityError> {
    let trimmed = text.trim().trim_end_matches('=');
    let bytes = STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|_| IdentityError::BadKeyText(text.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| IdentityError::BadKeyText(text.to_string()))
}

pub fn parse_public_key(text: &str) -> Result<VerifyingKey, IdentityError> {
    VerifyingKey::from_bytes(&key_bytes(text)?)
        .map_err(|_| IdentityError::BadPublicKey(text.to_string()))
}

/// Reads a private key; refused when the file's group or others may read
/// or write it, as ssh refuses such a key.
pub fn read_key_file(path: &Path) -> Result<SigningKey, IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let display = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|source| IdentityError::Read {
        path: display.clone(),
        cause: source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed {
            path: display,
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: display.clone(),
        cause: source,
    })?;
    Ok(SigningKey::from_bytes(&key_bytes(&text)?))
}

/// Writes `key` to a new file readable by its owner only.
pub fn write_key_file(path: &Path, key: &SigningKey) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let display = path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => IdentityError::Exists(display.clone()),
            _ => IdentityError::Write {
                path: display.clone(),
                cause: source,
            },
        })?;
    writeln!(file, "{}", STANDARD_NO_PAD.encode(key.to_bytes())).map_err(|source| {
        IdentityError::Write {
            path: display,
            cause: source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_round_trips() {
        let key = generate_key().verifying_key();
        assert_eq!(parse_public_key(&public_key_text(&key)).unwrap(), key);
        assert!(parse_public_key("not base64!").is_err());
        assert!(parse_public_key("AAAA").is_err());
    }

    #[test]
    fn key_file_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.key");
        let key = generate_key();
        write_key_file(&path, &key).unwrap();
        assert_eq!(read_key_file(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(matches!(
            write_key_file(&path, &key),
            Err(IdentityError::Exists(_))
        ));
    }
}
