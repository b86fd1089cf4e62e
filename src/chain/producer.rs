//! Who may extend the chain: [`ChainParams`] (the network's name and its block producers' public
//! keys, which the genesis block commits to) and [`ProducerKey`] (a producer's ed25519 signing
//! key, kept in a 0600 file in the data directory). Signing and checking one block's signature
//! live here, beside the keys; the rule that applies them to incoming blocks is
//! `crate::sync::rule::ProducerRule`.
//!
//! ## What is signed
//!
//! A producer signs, with ed25519 (RFC 8032, `ed25519-dalek`), the 49-byte message
//! `"peerlink-block-v1"` (17 ASCII bytes, domain separation) followed by the block's 32-byte
//! hash. The hash commits to the producer's public key (see [`crate::chain::block`]), not to the
//! signature, so a block's identity does not depend on the signature bytes; signatures are
//! checked with `verify_strict` (no malleable encodings).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;

use crate::chain::{BlockHash, ChainError};

/// A producer's public key (ed25519, 32 bytes).
pub type PublicKey = [u8; 32];

/// An ed25519 signature (64 bytes).
pub type SignatureBytes = [u8; 64];

/// Domain separation prefix of the signed message.
pub const SIGNING_DOMAIN: &[u8; 17] = b"peerlink-block-v1";

/// Name of the producer key file inside the data directory.
pub const PRODUCER_KEY_FILE: &str = "producer.key";

/// The message a producer signs for a block with `hash`.
pub fn signing_message(hash: &BlockHash) -> [u8; 49] {
    let mut m = [0u8; 49];
    m[..17].copy_from_slice(SIGNING_DOMAIN);
    m[17..].copy_from_slice(hash);
    m
}

/// What defines a network's chain: its name and the producers allowed to sign blocks. Two
/// networks with the same name but different producer sets have different genesis hashes, so
/// their nodes refuse each other at the handshake (`wrong_genesis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    /// Network name ("devnet", ...).
    pub network: String,
    /// Producer public keys, sorted and without duplicates (the genesis commits to this order).
    producers: Vec<PublicKey>,
}

impl ChainParams {
    /// The parameters of network `network` whose blocks `producers` may sign (any order;
    /// duplicates are dropped).
    pub fn new(network: impl Into<String>, producers: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut producers: Vec<PublicKey> = producers.into_iter().collect();
        producers.sort_unstable();
        producers.dedup();
        Self {
            network: network.into(),
            producers,
        }
    }

    /// The producer keys, sorted.
    pub fn producers(&self) -> &[PublicKey] {
        &self.producers
    }

    /// Whether `key` may sign blocks.
    pub fn is_producer(&self, key: &PublicKey) -> bool {
        self.producers.binary_search(key).is_ok()
    }
}

/// A network name alone: no producer may sign its blocks (only its genesis exists for sync
/// purposes). Useful for stores read offline and for tests that build chains without sync.
impl From<&str> for ChainParams {
    fn from(network: &str) -> Self {
        ChainParams::new(network, [])
    }
}

impl From<&ChainParams> for ChainParams {
    fn from(p: &ChainParams) -> Self {
        p.clone()
    }
}

/// Parses a public key written as 64 hex digits.
pub fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    let bytes = from_hex(s.trim())
        .ok_or_else(|| format!("malformed producer key `{s}`: expected 64 hex digits"))?;
    let key: PublicKey = bytes
        .try_into()
        .map_err(|_| format!("malformed producer key `{s}`: expected 64 hex digits"))?;
    VerifyingKey::from_bytes(&key)
        .map_err(|_| format!("producer key `{s}` is not a valid ed25519 public key"))?;
    Ok(key)
}

/// Lowercase hex digits of `bytes`, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a string of hex digits (`None` if it is not whole hex bytes).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A block producer's signing key.
pub struct ProducerKey(SigningKey);

impl std::fmt::Debug for ProducerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProducerKey({})", hex(&self.public()))
    }
}

impl Clone for ProducerKey {
    fn clone(&self) -> Self {
        ProducerKey(SigningKey::from_bytes(&self.0.to_bytes()))
    }
}

impl ProducerKey {
    /// A new random key (from the operating system's generator through `rand`).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The key whose RFC 8032 secret seed is `seed` (test vectors, fixed test keys).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        ProducerKey(SigningKey::from_bytes(&seed))
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.0.verifying_key().to_bytes()
    }

    /// Signs the block with `hash` (see the module docs for the message).
    pub fn sign(&self, hash: &BlockHash) -> SignatureBytes {
        self.0.sign(&signing_message(hash)).to_bytes()
    }

    /// Path of the key file in `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(PRODUCER_KEY_FILE)
    }

    /// Writes a new random key to `data_dir/producer.key` (64 hex digits of the secret seed and
    /// a newline), created with mode 0600; refuses to overwrite an existing file.
    pub fn create_in(data_dir: &Path) -> Result<ProducerKey, ChainError> {
        let path = Self::path_in(data_dir);
        let io = |source| ChainError::Key {
            path: path.clone(),
            reason: format!("{source}"),
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let key = ProducerKey::generate();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ChainError::Key {
                    path: path.clone(),
                    reason: "already exists; not overwriting a producer key".into(),
                }
            } else {
                io(e)
            }
        })?;
        let mut text = hex(&key.0.to_bytes());
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(io)?;
        Ok(key)
    }

    /// Reads the key written by [`ProducerKey::create_in`] from `data_dir`.
    pub fn load_from(data_dir: &Path) -> Result<ProducerKey, ChainError> {
        let path = Self::path_in(data_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| ChainError::Key {
            path: path.clone(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "no producer key (create one with `peerlink keygen --data-dir DIR`)".into()
            } else {
                e.to_string()
            },
        })?;
        let seed: [u8; 32] = from_hex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ChainError::Key {
                path: path.clone(),
                reason: "not 64 hex digits".into(),
            })?;
        Ok(ProducerKey::from_seed(seed))
    }
}

/// Checks one signature by `producer` over the block with `hash` (strict verification).
pub fn verify_one(producer: &PublicKey, hash: &BlockHash, sig: &SignatureBytes) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(producer) else {
        return false;
    };
    key.verify_strict(&signing_message(hash), &Signature::from_bytes(sig))
        .is_ok()
}

/// Checks many signatures at once (ed25519 batch verification, about twice as fast per
/// signature as one by one). `true` only if every signature is valid; on `false` the caller
/// finds the culprit with [`verify_one`].
pub fn verify_batch(items: &[(PublicKey, BlockHash, SignatureBytes)]) -> bool {
    let mut keys = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut msgs = Vec::with_capacity(items.len());
    for (pk, hash, sig) in items {
        let Ok(key) = VerifyingKey::from_bytes(pk) else {
            return false;
        };
        // Batch verification accepts some encodings strict verification refuses; reject
        // weak keys here so that both paths agree.
        if key.is_weak() {
            return false;
        }
        keys.push(key);
        sigs.push(Signature::from_bytes(sig));
        msgs.push(signing_message(hash));
    }
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_one_and_in_batches() {
        let k = ProducerKey::from_seed([1; 32]);
        let hash = [9u8; 32];
        let sig = k.sign(&hash);
        assert!(verify_one(&k.public(), &hash, &sig));
        assert!(!verify_one(&k.public(), &[8; 32], &sig));
        let other = ProducerKey::from_seed([2; 32]);
        assert!(!verify_one(&other.public(), &hash, &sig));
        let items: Vec<_> = (0..10u8)
            .map(|i| {
                let h = [i; 32];
                (k.public(), h, k.sign(&h))
            })
            .collect();
        assert!(verify_batch(&items));
        let mut bad = items.clone();
        bad[3].2[0] ^= 1;
        assert!(!verify_batch(&bad));
    }

    #[test]
    fn params_sort_and_dedup_producers() {
        let a = ChainParams::new("n", [[2; 32], [1; 32], [2; 32]]);
        assert_eq!(a.producers(), &[[1; 32], [2; 32]]);
        assert!(a.is_producer(&[2; 32]));
        assert!(!a.is_producer(&[3; 32]));
        assert_eq!(a, ChainParams::new("n", [[1; 32], [2; 32]]));
    }

    #[test]
    fn key_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let k = ProducerKey::create_in(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ProducerKey::path_in(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(ProducerKey::create_in(dir.path()).is_err());
        assert_eq!(
            ProducerKey::load_from(dir.path()).unwrap().public(),
            k.public()
        );
    }

    #[test]
    fn public_keys_parse_from_hex() {
        let k = ProducerKey::from_seed([1; 32]);
        assert_eq!(parse_public_key(&hex(&k.public())).unwrap(), k.public());
        assert!(parse_public_key("abc").is_err());
    }
}
