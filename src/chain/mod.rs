//! The chain: blocks, their hashes and genesis (`block`), the network's producer keys and block
//! signatures (`producer`), the redb-backed store that survives kill -9 (`store`) and the
//! offline producer (`produce`). One error enum for the layer lives here. The sync engine
//! (`crate::sync`) is the only writer while a node runs.

pub mod access;
pub mod block;
pub mod produce;
pub mod producer;
pub mod reader;
pub mod store;
pub mod writer;

pub use access::Chain;
pub use block::{genesis_for, genesis_hash, short_hex, to_hex, Block, BlockHash};
pub use produce::{produce, random_block};
pub use producer::{ChainParams, ProducerKey, PublicKey};
pub use reader::{ChainReader, IndexUpdate};
pub use store::{ChainStore, DB_FILE_NAME};
pub use writer::{ChainView, ChainWriter};

/// Errors of the chain layer.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The database could not be opened, read or written (boxed: redb's error is large).
    #[error("chain database: {0}")]
    Db(Box<redb::Error>),
    /// The data directory could not be created.
    #[error("chain directory {path}: {source}")]
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store belongs to another network.
    #[error("chain store belongs to network {stored:?}, not {wanted:?}")]
    WrongNetwork {
        /// Network name recorded in the store.
        stored: String,
        /// Network name asked for.
        wanted: String,
    },
    /// The store's genesis block is not the one of the parameters asked for (same network
    /// name, another producer set).
    #[error("chain store holds another genesis than network {network:?} with the configured producers (another producer set?)")]
    WrongGenesis {
        /// Network name.
        network: String,
    },
    /// The producer key file cannot be created or read.
    #[error("producer key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A stored record is not a valid block encoding.
    #[error("undecodable block record: {0}")]
    Decode(String),
    /// A block does not extend the chain where it was meant to go.
    #[error("block {height} does not extend the chain: {reason}")]
    InvalidBlock {
        /// The offending block's height.
        height: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A reorg was asked for below genesis or above the tip.
    #[error("cannot reorg to ancestor {ancestor}: tip is {tip}")]
    BadReorg {
        /// The requested ancestor height.
        ancestor: u64,
        /// The current tip height.
        tip: u64,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ChainError {
            fn from(e: $t) -> Self {
                ChainError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
