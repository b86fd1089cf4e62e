//! [`RecordCipher`]: the AEAD state of one direction of a connection (the AES-256-GCM key that
//! the Noise `Split()` gave that direction, its counter nonce and its rekey schedule), used by
//! the record layer. It exists so that the reader and the writer of a connection each own their
//! direction outright: no lock shared between them, no boxed cipher objects, and nothing kept
//! from the handshake once the keys are split.
//!
//! The primitive is AWS-LC's AEAD (`aws-lc-rs`, `AES_256_GCM`: its VAES AVX-512 code runs
//! 64 KiB records 1.2-1.3x faster than ring on this machine, and it seals out of place, so the
//! record writer encrypts straight from the queued frames into its output buffer); this file
//! only composes it the way Noise
//! specifies (revision 34, section 5.1 and 11.3), byte for byte what `snow`'s transport state
//! did, so the records of PROTOCOL.md section 1.1 are unchanged:
//!
//! - nonce: 4 zero bytes, then the direction's counter `n` as a 64-bit big-endian number;
//!   associated data empty;
//! - `n` = 2^64 - 1 is never used for a record ([`SecureError::Exhausted`]): it is reserved for
//!   `REKEY()`;
//! - `REKEY(k)`: the new key is the first 32 bytes of `ENCRYPT(k, 2^64 - 1, empty, 32 zero
//!   bytes)`; the counter continues.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroize;

use super::{SecureError, TAG_BYTES};

/// Length of a direction's key.
pub const KEY_BYTES: usize = 32;

/// The cipher of one direction: key, counter nonce, and the number of records until both ends
/// rekey it. Owned by the [`super::SecureWrite`] (sending direction) or the
/// [`super::SecureRead`] (receiving direction) of one connection.
pub struct RecordCipher {
    key: LessSafeKey,
    /// Counter nonce of the next record.
    n: u64,
    /// Records left under the current key before the rekey.
    until_rekey: u64,
    /// Records per key.
    rekey_after: u64,
}

impl std::fmt::Debug for RecordCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("RecordCipher")
            .field("n", &self.n)
            .field("until_rekey", &self.until_rekey)
            .finish_non_exhaustive()
    }
}

fn aead_key(raw: &[u8; KEY_BYTES]) -> LessSafeKey {
    // AWS-LC refuses a key only if its length is wrong, and KEY_BYTES is AES-256's length.
    match UnboundKey::new(&AES_256_GCM, raw) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
    }
}

fn nonce(n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

impl RecordCipher {
    /// A direction keyed with `raw` (one half of the Noise split), counter at 0, rekeying after
    /// every `rekey_after` records (at least 1). `raw` is wiped.
    pub(crate) fn new(raw: &mut [u8; KEY_BYTES], rekey_after: u64) -> Self {
        let key = aead_key(raw);
        raw.zeroize();
        let rekey_after = rekey_after.max(1);
        Self {
            key,
            n: 0,
            until_rekey: rekey_after,
            rekey_after,
        }
    }

    /// Changes the rekey interval (both ends must use the same; tests use small values). Only
    /// before the first record.
    pub fn set_rekey_after(&mut self, rekey_after: u64) {
        self.rekey_after = rekey_after.max(1);
        self.until_rekey = self.rekey_after;
    }

    /// Counter nonce of the next record.
    pub fn nonce(&self) -> u64 {
        self.n
    }

    /// Encrypts `record[..len - TAG_BYTES]` in place under the next nonce and writes the tag
    /// into the last [`TAG_BYTES`] (the tests' reference for [`RecordCipher::seal_from`]).
    #[cfg(test)]
    pub(crate) fn seal(&mut self, record: &mut [u8]) -> Result<(), SecureError> {
        if self.n == u64::MAX || record.len() < TAG_BYTES {
            return Err(SecureError::Exhausted);
        }
        let (plain, tag_out) = record.split_at_mut(record.len() - TAG_BYTES);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(self.n), Aad::empty(), plain)
            .map_err(|_| SecureError::Exhausted)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.advance();
        Ok(())
    }

    /// Encrypts `plain` under the next nonce into `record`, which must be `plain.len() +
    /// TAG_BYTES` long: the ciphertext, then the tag. The plaintext is read once, not copied
    /// first.
    pub(crate) fn seal_from(&mut self, plain: &[u8], record: &mut [u8]) -> Result<(), SecureError> {
        if self.n == u64::MAX || record.len() != plain.len() + TAG_BYTES {
            return Err(SecureError::Exhausted);
        }
        let (out, tag) = record.split_at_mut(plain.len());
        self.key
            .seal_out_of_place_scatter(nonce(self.n), Aad::empty(), plain, out, &[], tag)
            .map_err(|_| SecureError::Exhausted)?;
        self.advance();
        Ok(())
    }

    /// Authenticates and decrypts `record` (ciphertext then tag) in place under the next nonce;
    /// returns the plaintext, the first `len - TAG_BYTES` bytes. On failure the content of
    /// `record` is unspecified and must not be used.
    pub(crate) fn open<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a mut [u8], SecureError> {
        if record.len() < TAG_BYTES {
            return Err(SecureError::RecordTooShort(record.len()));
        }
        if self.n == u64::MAX {
            return Err(SecureError::Exhausted);
        }
        let plain = self
            .key
            .open_in_place(nonce(self.n), Aad::empty(), record)
            .map_err(|_| SecureError::Decrypt)?;
        self.advance();
        Ok(plain)
    }

    /// Authenticates and decrypts `record` (ciphertext then tag) under the next nonce into
    /// `out`, which must be `record.len() - TAG_BYTES` long. On failure the content of `out` is
    /// unspecified and must not be used.
    pub(crate) fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<(), SecureError> {
        if record.len() < TAG_BYTES {
            return Err(SecureError::RecordTooShort(record.len()));
        }
        if self.n == u64::MAX || out.len() != record.len() - TAG_BYTES {
            return Err(SecureError::Exhausted);
        }
        let (ct, tag) = record.split_at(out.len());
        self.key
            .open_separate_gather(nonce(self.n), Aad::empty(), ct, tag, out)
            .map_err(|_| SecureError::Decrypt)?;
        self.advance();
        Ok(())
    }

    /// Counts a record; applies `REKEY()` when the interval is reached.
    fn advance(&mut self) {
        self.n += 1;
        self.until_rekey -= 1;
        if self.until_rekey == 0 {
            self.rekey();
            self.until_rekey = self.rekey_after;
        }
    }

    /// Noise `REKEY()`: the key becomes the first 32 bytes of the encryption of 32 zero bytes
    /// under nonce 2^64 - 1.
    fn rekey(&mut self) {
        let mut next = [0u8; KEY_BYTES];
        // Sealing 32 bytes cannot exceed the AEAD's input limit; the tag is not used.
        let _ = self
            .key
            .seal_in_place_separate_tag(nonce(u64::MAX), Aad::empty(), &mut next);
        self.key = aead_key(&next);
        next.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `REKEY()` and the counter nonce match snow's transport state (the Noise reference this
    /// project used before the split), record after record, across several rekeys.
    #[test]
    fn records_match_snow_across_rekeys() {
        let params: snow::params::NoiseParams = super::super::NOISE_PARAMS.parse().unwrap();
        let (ki, kr) = (
            snow::Builder::new(params.clone())
                .generate_keypair()
                .unwrap(),
            snow::Builder::new(params.clone())
                .generate_keypair()
                .unwrap(),
        );
        let mut i = snow::Builder::new(params.clone())
            .local_private_key(&ki.private)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params)
            .local_private_key(&kr.private)
            .unwrap()
            .build_responder()
            .unwrap();
        let mut buf = [0u8; 256];
        let mut p = [0u8; 256];
        let n = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..n], &mut p).unwrap();
        let n = r.write_message(&[], &mut buf).unwrap();
        i.read_message(&buf[..n], &mut p).unwrap();
        let n = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..n], &mut p).unwrap();
        let (mut k1, mut k2) = i.dangerously_get_raw_split();
        let mut snow_i = i.into_transport_mode().unwrap();
        let mut snow_r = r.into_transport_mode().unwrap();
        let mut ours_send = RecordCipher::new(&mut k1, 3);
        let mut ours_recv = RecordCipher::new(&mut k2, 3);
        assert_eq!(k1, [0; 32], "the raw key is wiped");
        for round in 0..10u8 {
            let plain = vec![round; 1 + round as usize * 7];
            let mut theirs = vec![0u8; plain.len() + TAG_BYTES];
            snow_i.write_message(&plain, &mut theirs).unwrap();
            let mut mine = plain.clone();
            mine.resize(plain.len() + TAG_BYTES, 0);
            ours_send.seal(&mut mine).unwrap();
            assert_eq!(mine, theirs, "initiator record {round}");
            // The responder's direction, opened by our receiving half.
            let mut back = vec![0u8; plain.len() + TAG_BYTES];
            snow_r.write_message(&plain, &mut back).unwrap();
            assert_eq!(ours_recv.open(&mut back).unwrap(), &plain[..]);
            if round % 3 == 2 {
                snow_i.rekey_outgoing();
                snow_r.rekey_outgoing();
            }
        }
    }

    /// Sealing out of place gives the very record sealing in place gives, nonce for nonce.
    #[test]
    fn seal_from_matches_seal_in_place() {
        let (mut a, mut b) = ([9u8; 32], [9u8; 32]);
        let (mut in_place, mut from) = (RecordCipher::new(&mut a, 2), RecordCipher::new(&mut b, 2));
        for len in [0usize, 1, 15, 16, 17, 1000, 65_519] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            let mut rec1 = plain.clone();
            rec1.resize(len + TAG_BYTES, 0);
            in_place.seal(&mut rec1).unwrap();
            let mut rec2 = vec![0xAA; len + TAG_BYTES];
            from.seal_from(&plain, &mut rec2).unwrap();
            assert_eq!(rec1, rec2, "{len} bytes");
        }
        let mut short = vec![0u8; 4 + TAG_BYTES - 1];
        assert!(from.seal_from(&[1, 2, 3, 4], &mut short).is_err());
    }

    #[test]
    fn tampered_and_short_records_fail() {
        let mut key = [7u8; 32];
        let mut send = RecordCipher::new(&mut key, 100);
        let mut key = [7u8; 32];
        let mut recv = RecordCipher::new(&mut key, 100);
        let mut rec = b"hello world".to_vec();
        rec.resize(rec.len() + TAG_BYTES, 0);
        send.seal(&mut rec).unwrap();
        let mut bad = rec.clone();
        bad[3] ^= 1;
        assert!(matches!(recv.open(&mut bad), Err(SecureError::Decrypt)));
        assert!(matches!(
            recv.open(&mut [0u8; 5]),
            Err(SecureError::RecordTooShort(5))
        ));
    }

    #[test]
    fn the_last_nonce_is_never_used_for_a_record() {
        let mut key = [1u8; 32];
        let mut c = RecordCipher::new(&mut key, u64::MAX);
        c.n = u64::MAX - 1;
        let mut rec = vec![0u8; TAG_BYTES + 4];
        c.seal(&mut rec).unwrap();
        assert!(matches!(c.seal(&mut rec), Err(SecureError::Exhausted)));
        assert!(matches!(c.open(&mut rec), Err(SecureError::Exhausted)));
    }
}
