//! X25519 for the Noise handshake and the node keys, on AWS-LC (`aws-lc-rs`): its X25519 is
//! s2n-bignum's formally verified assembly, 2.2x faster than curve25519-dalek's Montgomery
//! ladder on this machine (24.7 us against 53.3 us per shared secret, 7.4 us against 16.6 us
//! per public key), and the handshake is almost all X25519. snow keeps everything else (its
//! ring resolver for SHA-256 and the handshake's AES-GCM, its own RNG).
//!
//! One difference from snow's default resolver, on purpose: a shared secret of all zeros (the
//! peer sent a small-order point, which no honest X25519 key is) fails the handshake instead of
//! keying the session with a value an attacker knows (RFC 7748 section 6.1).

use std::sync::Arc;

use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

/// Length of X25519 keys and shared secrets.
pub const KEY_BYTES: usize = 32;

/// A key pair built once and shared by every handshake of a node: AWS-LC's key object and its
/// public half (deriving it is a scalar multiplication, 7.4 us here).
pub struct StaticKey {
    key: PrivateKey,
    /// The public half.
    pub public: [u8; KEY_BYTES],
    /// Fingerprint of the secret (BLAKE3), to recognise it in [`Dh::set`] without keeping or
    /// comparing the secret itself.
    id: [u8; 32],
}

impl StaticKey {
    /// The key pair of an X25519 secret scalar (clamped by X25519 itself), or `None` if AWS-LC
    /// refuses the scalar (it does not for any 32 bytes).
    pub fn new(secret: &[u8; KEY_BYTES]) -> Option<Self> {
        let (key, public) = key_pair(secret)?;
        Some(Self {
            key,
            public,
            id: fingerprint(secret),
        })
    }
}

/// AWS-LC's key object for `secret` and the public half it derives.
fn key_pair(secret: &[u8; KEY_BYTES]) -> Option<(PrivateKey, [u8; KEY_BYTES])> {
    let key = PrivateKey::from_private_key(&X25519, secret).ok()?;
    let public = key.compute_public_key().ok()?.as_ref().try_into().ok()?;
    Some((key, public))
}

fn fingerprint(secret: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(b"peerlink x25519 static key id..!", secret).as_bytes()
}

/// snow's resolver with X25519 replaced: [`AwsLcX25519`] for the DH, ring then snow's defaults
/// for the rest (what `snow::Builder::new` uses with the `ring-accelerated` feature). Given the
/// node's [`StaticKey`], the DH snow sets to that secret uses it as it is.
pub(crate) struct Resolver {
    rest: FallbackResolver,
    known: Option<Arc<StaticKey>>,
}

impl Resolver {
    pub(crate) fn new(known: Option<Arc<StaticKey>>) -> Self {
        Self {
            rest: FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)),
            known,
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.rest.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(AwsLcX25519 {
                key: None,
                privkey: [0; KEY_BYTES],
                pubkey: [0; KEY_BYTES],
                known: self.known.clone(),
            })),
            _ => self.rest.resolve_dh(choice),
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.rest.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.rest.resolve_cipher(choice)
    }
}

/// One X25519 key pair of a handshake (the static or the ephemeral), for snow.
pub(crate) struct AwsLcX25519 {
    /// The key set: built by `set`/`generate` (which derives the public half), or the node's
    /// static key.
    key: Option<Key>,
    privkey: [u8; KEY_BYTES],
    pubkey: [u8; KEY_BYTES],
    /// The node's static key, used as it is when `set` is given its secret.
    known: Option<Arc<StaticKey>>,
}

enum Key {
    Own(PrivateKey),
    Static(Arc<StaticKey>),
}

impl Key {
    fn private(&self) -> &PrivateKey {
        match self {
            Key::Own(k) => k,
            Key::Static(s) => &s.key,
        }
    }
}

impl Drop for AwsLcX25519 {
    fn drop(&mut self) {
        self.privkey.zeroize();
    }
}

impl Dh for AwsLcX25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_BYTES
    }

    fn priv_len(&self) -> usize {
        KEY_BYTES
    }

    fn set(&mut self, privkey: &[u8]) {
        self.key = None;
        self.pubkey = [0; KEY_BYTES];
        self.privkey = [0; KEY_BYTES];
        let Ok(bytes) = <[u8; KEY_BYTES]>::try_from(privkey) else {
            // Wrong length: no key; `dh` fails.
            return;
        };
        self.privkey = bytes;
        if let Some(known) = self.known.as_ref().filter(|k| k.id == fingerprint(&bytes)) {
            self.pubkey = known.public;
            self.key = Some(Key::Static(known.clone()));
            return;
        }
        if let Some((key, public)) = key_pair(&bytes) {
            self.pubkey = public;
            self.key = Some(Key::Own(key));
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = [0u8; KEY_BYTES];
        rng.try_fill_bytes(&mut bytes)?;
        self.set(&bytes);
        bytes.zeroize();
        if self.key.is_none() {
            return Err(snow::Error::Dh);
        }
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.pubkey
    }

    fn privkey(&self) -> &[u8] {
        &self.privkey
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?.private();
        // snow may hand over a longer buffer holding the key at its head.
        let (Some(pubkey), true) = (pubkey.get(..KEY_BYTES), out.len() >= KEY_BYTES) else {
            return Err(snow::Error::Dh);
        };
        // AWS-LC refuses a small-order peer key (all-zero shared secret).
        agree(
            key,
            UnparsedPublicKey::new(&X25519, pubkey),
            snow::Error::Dh,
            |secret| {
                out[..KEY_BYTES].copy_from_slice(secret);
                Ok(())
            },
        )
    }
}
