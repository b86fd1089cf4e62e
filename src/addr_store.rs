//! The node's [`AddrStore`]: discovery's address book, its bucket secret and the anchors, kept
//! as one record in a table of the chain's redb file (`<data_dir>/chain.redb`, table
//! `addr_book`, key `book`), so that the node has one store, one lock and one durability story.
//! Each save is one write transaction committed with immediate durability: after a kill -9 the
//! file holds the last committed record whole.
//!
//! The record is a versioned MessagePack document (PROTOCOL.md section 12, with a hex vector
//! that [`tests`] reads): version 1 is `[1, secret, entries, anchors]`. A record that does not
//! decode (a damaged disk, a future version) is an error: the networking subsystem logs it and
//! starts with an empty book, and the next save overwrites it. Nothing a peer sends reaches this
//! file unchecked: entries pass the address book's caps before they are stored, and again when
//! they are restored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use peerlink_actors::discovery::{AddrBookSnapshot, StoredAddr};
use peerlink_actors::{AddrStore, AddrStoreError, StoredBook};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};

/// The table of the address book record in the chain's redb file.
pub const ADDR_BOOK_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("addr_book");

/// The key of the one record in [`ADDR_BOOK_TABLE`].
pub const ADDR_BOOK_KEY: &str = "book";

/// The record format written by this build.
pub const ADDR_BOOK_VERSION: u8 = 1;

/// Most entries a record may hold: far above any book (5,000 by default), far below what would
/// hurt to allocate; a larger count is a damaged record.
pub const MAX_STORED_ENTRIES: usize = 100_000;

/// Most anchors a record may hold.
pub const MAX_STORED_ANCHORS: usize = 64;

/// Why a stored record is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AddrRecordError {
    /// The record is not a MessagePack array starting with a version.
    #[error("address book record is not a versioned record")]
    NotARecord,
    /// Written by another version of the node.
    #[error(
        "address book record has unsupported version {0} (this build reads {ADDR_BOOK_VERSION})"
    )]
    Version(u8),
    /// The record does not decode.
    #[error("address book record does not decode: {0}")]
    Decode(String),
    /// A field is out of range (secret length, IP length, counts).
    #[error("address book record is invalid: {0}")]
    Invalid(String),
}

#[derive(Serialize, Deserialize)]
struct RecordV1 {
    version: u8,
    #[serde(with = "serde_bytes")]
    secret: Vec<u8>,
    entries: Vec<EntryV1>,
    anchors: Vec<AddrV1>,
}

#[derive(Serialize, Deserialize)]
struct EntryV1 {
    #[serde(with = "serde_bytes")]
    ip: Vec<u8>,
    port: u16,
    #[serde(with = "serde_bytes")]
    source: Vec<u8>,
    last_seen: u64,
    last_success: u64,
    failures: u32,
    tried: bool,
}

#[derive(Serialize, Deserialize)]
struct AddrV1 {
    #[serde(with = "serde_bytes")]
    ip: Vec<u8>,
    port: u16,
}

fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match peerlink_actors::canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip_from_bytes(b: &[u8]) -> Result<IpAddr, AddrRecordError> {
    match b.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(b).unwrap_or_default())),
        16 => Ok(peerlink_actors::canonical_ip(IpAddr::from(
            <[u8; 16]>::try_from(b).unwrap_or_default(),
        ))),
        n => Err(AddrRecordError::Invalid(format!("an IP of {n} bytes"))),
    }
}

/// Encodes a stored book as a version-1 record.
pub fn encode_record(book: &StoredBook) -> Vec<u8> {
    let record = RecordV1 {
        version: ADDR_BOOK_VERSION,
        secret: book.book.secret.to_vec(),
        entries: book
            .book
            .entries
            .iter()
            .map(|e| EntryV1 {
                ip: ip_to_bytes(e.addr.ip()),
                port: e.addr.port(),
                source: ip_to_bytes(e.source),
                last_seen: e.last_seen,
                last_success: e.last_success,
                failures: e.failures,
                tried: e.tried,
            })
            .collect(),
        anchors: book
            .anchors
            .iter()
            .map(|a| AddrV1 {
                ip: ip_to_bytes(a.ip()),
                port: a.port(),
            })
            .collect(),
    };
    // Plain data of known shape: encoding into a Vec cannot fail.
    rmp_serde::to_vec(&record).unwrap_or_default()
}

/// Decodes a record; anything but a well-formed version-1 record is an error.
pub fn decode_record(bytes: &[u8]) -> Result<StoredBook, AddrRecordError> {
    // [version, ...]: a fixarray marker, then the version as a positive fixint.
    match bytes {
        [0x90..=0x9f, v, ..] if *v < 0x80 => {
            if *v != ADDR_BOOK_VERSION {
                return Err(AddrRecordError::Version(*v));
            }
        }
        _ => return Err(AddrRecordError::NotARecord),
    }
    let record: RecordV1 =
        rmp_serde::from_slice(bytes).map_err(|e| AddrRecordError::Decode(e.to_string()))?;
    let secret: [u8; 32] = record.secret.as_slice().try_into().map_err(|_| {
        AddrRecordError::Invalid(format!("a secret of {} bytes", record.secret.len()))
    })?;
    if record.entries.len() > MAX_STORED_ENTRIES || record.anchors.len() > MAX_STORED_ANCHORS {
        return Err(AddrRecordError::Invalid(format!(
            "{} entries, {} anchors",
            record.entries.len(),
            record.anchors.len()
        )));
    }
    let entries = record
        .entries
        .iter()
        .map(|e| {
            Ok(StoredAddr {
                addr: SocketAddr::new(ip_from_bytes(&e.ip)?, e.port),
                source: ip_from_bytes(&e.source)?,
                last_seen: e.last_seen,
                last_success: e.last_success,
                failures: e.failures,
                tried: e.tried,
            })
        })
        .collect::<Result<Vec<_>, AddrRecordError>>()?;
    let anchors = record
        .anchors
        .iter()
        .map(|a| Ok(SocketAddr::new(ip_from_bytes(&a.ip)?, a.port)))
        .collect::<Result<Vec<_>, AddrRecordError>>()?;
    Ok(StoredBook {
        book: AddrBookSnapshot { secret, entries },
        anchors,
    })
}

/// The address book store on the chain's redb database (see the module docs).
pub struct RedbAddrStore {
    db: Arc<Database>,
}

impl RedbAddrStore {
    /// A store on `db` (the chain store's database: [`crate::chain::ChainStore::addr_store`]).
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// The raw record, if any (for tests and diagnostics).
    pub fn raw(&self) -> Result<Option<Vec<u8>>, AddrStoreError> {
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(ADDR_BOOK_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(Box::new(e)),
        };
        let value = table.get(ADDR_BOOK_KEY)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    /// Replaces the raw record, durably (for tests and repairs).
    pub fn put_raw(&self, bytes: &[u8]) -> Result<(), AddrStoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(ADDR_BOOK_TABLE)?
            .insert(ADDR_BOOK_KEY, bytes)?;
        tx.commit()?;
        Ok(())
    }
}

impl AddrStore for RedbAddrStore {
    fn load(&mut self) -> Result<Option<StoredBook>, AddrStoreError> {
        match self.raw()? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_record(&bytes)?)),
        }
    }

    fn save(&mut self, book: &StoredBook) -> Result<(), AddrStoreError> {
        self.put_raw(&encode_record(book))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
