//! Node identity: the static X25519 key pair a node is known by ([`NodeKey`]), its public half
//! ([`PublicKey`], lowercase hex wherever a person sees it), peer entries that pin a key
//! (`KEYHEX@IP:PORT`, [`PeerAddr`]), the key file a node keeps in its data dir, and the choice
//! of transport ([`Transport`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Public half of a node's static key: 32 bytes, shown and parsed as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses a key from the 32 bytes a handshake authenticated (`None` if not 32 bytes).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| format!("not a public key (64 hex digits): {e}"))?;
        Ok(PublicKey(out))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's static X25519 key pair: its identity on the network. The secret never appears in
/// `Debug` output or logs.
#[derive(Clone)]
pub struct NodeKey {
    secret: [u8; 32],
    public: PublicKey,
    /// The secret as AWS-LC's key object, built once: every handshake's static DH uses it
    /// without deriving the public key again.
    agreement: std::sync::Arc<super::x25519::StaticKey>,
}

impl PartialEq for NodeKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for NodeKey {}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS; the scalar is clamped by X25519 itself.
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        Self::from_secret(secret)
    }

    /// The key pair of a given secret scalar (the public half is derived).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        // X25519 clamps the scalar itself: every 32 bytes are a valid secret, and AWS-LC
        // derives the public half of any of them.
        let agreement = super::x25519::StaticKey::new(&secret)
            .expect("AWS-LC derives the public key of any 32-byte X25519 scalar");
        Self {
            secret,
            public: PublicKey(agreement.public),
            agreement: std::sync::Arc::new(agreement),
        }
    }

    /// The public half: what peers see and pin.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The secret scalar, for the handshake.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The secret as a ready DH key, for the handshake.
    pub(crate) fn agreement(&self) -> &std::sync::Arc<super::x25519::StaticKey> {
        &self.agreement
    }

    /// Loads the key from `path`, or creates it there (mode 0600) if the file does not exist.
    /// A key file that group or others may read or write is refused: the key is the node's
    /// identity, and the fix (`chmod 600`) is the operator's call. Returns the key and whether
    /// it was created now.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyFileError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path).map(|k| (k, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.create(path)?;
                Ok((key, true))
            }
            Err(e) => Err(KeyFileError::Io(path.to_path_buf(), e)),
        }
    }

    /// Loads the key from an existing file, checking its permissions first.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io = |e| KeyFileError::Io(path.to_path_buf(), e);
        let meta = std::fs::metadata(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::LoosePermissions(path.to_path_buf(), mode));
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret)
            .map_err(|e| KeyFileError::Malformed(path.to_path_buf(), e.to_string()))?;
        Ok(Self::from_secret(secret))
    }

    /// Writes the secret (64 hex digits and a newline) to a new file of mode 0600; never
    /// overwrites an existing file.
    pub fn create(&self, path: &Path) -> Result<(), KeyFileError> {
        use std::io::Write;
        let io = |e| KeyFileError::Io(path.to_path_buf(), e);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(io)?;
        file.write_all(format!("{}\n", hex::encode(self.secret)).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("key file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Group or others may access the file.
    #[error(
        "key file {0} has mode {1:03o}: it holds the node's secret key and must be readable by \
         its owner only (run `chmod 600 {0}`)"
    )]
    LoosePermissions(PathBuf, u32),
    /// The file does not hold 64 hex digits.
    #[error("key file {0} is not a node key (64 hex digits expected): {1}")]
    Malformed(PathBuf, String),
}

/// A peer to keep connected to, optionally with the key it must present: `IP:PORT` or
/// `KEYHEX@IP:PORT`. A connection to or from that IP presenting another key is refused with
/// `KeyMismatch`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// The key the peer must present, if pinned.
    pub key: Option<PublicKey>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self { key: None, addr }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{k}@{}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (key, addr) = match s.split_once('@') {
            Some((k, a)) => (Some(k.parse::<PublicKey>()?), a),
            None => (None, s),
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("not IP:PORT or KEYHEX@IP:PORT: {s:?}: {e}"))?;
        Ok(Self { key, addr })
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How connections are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Noise XX handshake, then AEAD records (the default).
    #[default]
    Noise,
    /// Clear text, unauthenticated: only for benchmarks and interop tests; logged as a
    /// warning at start.
    Plaintext,
}
