//! Mutual TLS 1.3 for QUIC with pinned Ed25519 node keys.
//!
//! Each node presents a self-signed certificate made (with rcgen) from its
//! own Ed25519 key. There is no certificate authority: both sides accept a
//! peer only if the key inside its certificate is one the cluster config
//! lists, and the TLS handshake proves the peer holds that key. Unknown or
//! mismatched keys fail the handshake with a reason that is logged.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The one application protocol a node speaks.
pub const ALPN: &[u8] = b"agentmesh/1";
/// The name every node's certificate carries; identity comes from the key.
pub const SERVER_NAME: &str = "agentmesh.node";

/// The length of an Ed25519 SubjectPublicKeyInfo in DER and its fixed
/// prefix (SEQUENCE, AlgorithmIdentifier id-Ed25519, BIT STRING header).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate from the node key: {0}")]
    Certificate(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// Installs the process's one crypto provider (ring). Safe to call often.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The keys a node accepts, each with the node id it belongs to. Cheap to
/// clone: the TLS configs of every node in a process share one table.
#[derive(Clone, Debug, Default)]
pub struct PinnedKeys {
    by_key: Arc<HashMap<[u8; 32], String>>,
}

impl PinnedKeys {
    pub fn new(keys: impl IntoIterator<Item = (String, VerifyingKey)>) -> PinnedKeys {
        PinnedKeys {
            by_key: Arc::new(
                keys.into_iter()
                    .map(|(id, key)| (key.to_bytes(), id))
                    .collect(),
            ),
        }
    }

    /// The node id a certificate's key belongs to, or why it is refused.
    pub fn identify(&self, certificate: &CertificateDer<'_>) -> Result<String, rustls::Error> {
        let key = ed25519_key_of(certificate)?;
        self.by_key.get(&key).cloned().ok_or_else(|| {
            rustls::Error::General(format!(
                "peer key {} is not listed in the cluster config",
                crate::identity::public_key_text(
                    &VerifyingKey::from_bytes(&key).unwrap_or_default()
                )
            ))
        })
    }
}

/// The Ed25519 public key inside a certificate.
pub fn ed25519_key_of(certificate: &CertificateDer<'_>) -> Result<[u8; 32], rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(certificate)
        .map_err(|error| rustls::Error::General(format!("unparsable peer certificate: {error}")))?;
    let spki = parsed.subject_public_key_info();
    let bytes = spki.as_ref();
    match bytes.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(key.try_into().expect("length checked")),
        _ => Err(rustls::Error::General(
            "peer certificate key is not Ed25519".into(),
        )),
    }
}

/// A node's certificate chain and private key, made from its Ed25519 key.
pub struct NodeCertificate {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl NodeCertificate {
    pub fn new(key: &SigningKey) -> Result<NodeCertificate, TlsError> {
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|error| TlsError::Certificate(error.to_string()))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|error| TlsError::Certificate(error.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|error| TlsError::Certificate(error.to_string()))?;
        let certificate = params
            .self_signed(&key_pair)
            .map_err(|error| TlsError::Certificate(error.to_string()))?;
        Ok(NodeCertificate {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(pkcs8),
        })
    }
}

/// Accepts exactly the pinned keys, on either side of the handshake.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: PinnedKeys,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a node presents exactly one certificate".into(),
            ));
        }
        self.pinned.identify(end_entity).map(|_| ())
    }

    fn verify_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signed,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _certificate: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, certificate, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _certificate: &CertificateDer<'_>,
        _signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, certificate, signed)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn config_error(error: rustls::Error) -> TlsError {
    TlsError::Config(error.to_string())
}

/// The server side of a node: presents `certificate`, accepts clients whose
/// key is in `pinned`.
pub fn server_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier = Arc::new(PinnedVerifier {
        pinned,
        provider: provider(),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificate.chain.clone(), certificate.key.clone_key())
        .map_err(config_error)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    Ok(server)
}

/// The client side of a node dialing a peer: presents `certificate`, and
/// accepts the server only if its key is in `pinned` (when dialing one
/// peer, that peer's key alone).
pub fn client_config(
    certificate: &NodeCertificate,
    pinned: PinnedKeys,
) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(PinnedVerifier {
        pinned,
        provider: provider(),
    });
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certificate.chain.clone(), certificate.key.clone_key())
        .map_err(config_error)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(client)
}

/// The QUIC endpoint's settings, with its stateless-reset key and the key
/// its connection ids are made with derived from the node's own key, so
/// they outlive a restart. A peer still holding a connection to this
/// node's previous incarnation then gets a stateless reset (RFC 9000
/// §10.3) in answer to its next packet, drops that connection at once and
/// dials again, instead of waiting out the idle timeout. Secrets derived
/// from the node key leak nothing of it (SHA-256 of it with a label), and
/// knowing them lets one only reset this node's connections, which its
/// key already allows.
pub fn endpoint_config(key: &SigningKey) -> quinn::EndpointConfig {
    let derived = |label: &[u8]| {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(label);
        context.update(&key.to_bytes());
        context.finish()
    };
    let reset = derived(b"agentmesh quic stateless reset key\0");
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    let connection_ids = derived(b"agentmesh quic connection id key\0");
    let connection_id_key = u64::from_le_bytes(
        connection_ids.as_ref()[..8]
            .try_into()
            .expect("SHA-256 has 32 bytes"),
    );
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(
            connection_id_key,
        ))
    });
    config
}
