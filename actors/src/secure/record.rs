//! The record layer: [`SecureWrite`] cuts the byte stream it is given into records of at most
//! [`MAX_RECORD_PLAINTEXT_BYTES`], each sent as a 2-byte big-endian length and the AEAD
//! ciphertext (plaintext + 16-byte tag) under the next counter nonce; [`SecureRead`] reads
//! records, authenticates and decrypts each one whole, and yields the plaintext bytes. A record
//! that fails authentication yields an error and nothing of its content, and every later read
//! fails too. Without a cipher both are plain pass-throughs (the plaintext transport).
//!
//! Buffers: a busy connection keeps one record's worth of ciphertext per direction; an idle one
//! frees anything above [`IDLE_KEEP_BYTES`] so that idle sessions stay small.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    SecureError, SharedCipher, MAX_RECORD_BYTES, MAX_RECORD_PLAINTEXT_BYTES, REKEY_AFTER_RECORDS,
    TAG_BYTES,
};

/// Record length prefix.
const LEN_BYTES: usize = 2;

/// Buffer space kept while a direction waits for the peer; larger buffers are freed (all of
/// them: a waiting session holds no ciphertext buffer).
pub const IDLE_KEEP_BYTES: usize = 0;

/// Smallest read from the socket while a record is incomplete: small records (pings, a few
/// messages) come in one read, large ones in as few as their size allows.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Plaintext encrypted per `poll_write` call before the ciphertext is handed to the socket: four
/// full records (256 KiB) per write system call.
const WRITE_BATCH_BYTES: usize = 4 * MAX_RECORD_PLAINTEXT_BYTES;

fn cipher_err(e: snow::Error) -> SecureError {
    match e {
        snow::Error::State(_) => SecureError::Exhausted,
        _ => SecureError::Decrypt,
    }
}

fn lock(c: &SharedCipher) -> std::sync::MutexGuard<'_, snow::TransportState> {
    // Held for one record's AEAD call, never across an await; a poisoned lock only means a
    // panic elsewhere mid-record, after which the connection is dropped anyway.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrypting read half: yields the plaintext of authenticated records.
pub struct SecureRead<R> {
    inner: R,
    cipher: Option<SharedCipher>,
    rekey_after: u64,
    /// Records received under the current key.
    received: u64,
    /// Ciphertext read but not yet decrypted is `cbuf[cstart..cend]`; `cbuf` keeps its length
    /// as space to read into (zeroed once, when it grows).
    cbuf: Vec<u8>,
    cstart: usize,
    cend: usize,
    /// Plaintext of a record that did not fit the caller's buffer, `pbuf[pstart..pend]`.
    pbuf: Vec<u8>,
    pstart: usize,
    pend: usize,
    /// A record failed: the stream is dead.
    failed: bool,
}

impl<R> SecureRead<R> {
    /// A decrypting reader; `None` makes it a pass-through (plaintext transport).
    pub fn new(inner: R, cipher: Option<SharedCipher>) -> Self {
        Self::with_rekey(inner, cipher, REKEY_AFTER_RECORDS)
    }

    /// As [`SecureRead::new`], rekeying after `rekey_after` records (tests use small values).
    pub fn with_rekey(inner: R, cipher: Option<SharedCipher>, rekey_after: u64) -> Self {
        Self {
            inner,
            cipher,
            rekey_after: rekey_after.max(1),
            received: 0,
            cbuf: Vec::new(),
            cstart: 0,
            cend: 0,
            pbuf: Vec::new(),
            pstart: 0,
            pend: 0,
            failed: false,
        }
    }

    /// Ciphertext bytes buffered.
    fn buffered(&self) -> usize {
        self.cend - self.cstart
    }

    /// Length of the record at the head of the buffer, if its header is there.
    fn head_len(&self) -> Option<usize> {
        (self.buffered() >= LEN_BYTES).then(|| {
            u16::from_be_bytes([self.cbuf[self.cstart], self.cbuf[self.cstart + 1]]) as usize
        })
    }

    /// Makes room for at least `want` more bytes after `cend`.
    fn make_room(&mut self, want: usize) {
        if self.cbuf.len() - self.cend >= want {
            return;
        }
        if self.cstart > 0 {
            self.cbuf.copy_within(self.cstart..self.cend, 0);
            self.cend -= self.cstart;
            self.cstart = 0;
        }
        if self.cbuf.len() - self.cend < want {
            self.cbuf.resize(self.cend + want, 0);
        }
    }

    fn fail(&mut self, e: SecureError) -> Poll<io::Result<()>> {
        self.failed = true;
        self.cbuf = Vec::new();
        self.cstart = 0;
        self.cend = 0;
        self.pbuf = Vec::new();
        self.pstart = 0;
        self.pend = 0;
        Poll::Ready(Err(e.into()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SecureRead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(cipher) = this.cipher.clone() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if this.failed {
            return Poll::Ready(Err(SecureError::Decrypt.into()));
        }
        loop {
            if this.pstart < this.pend {
                let n = buf.remaining().min(this.pend - this.pstart);
                buf.put_slice(&this.pbuf[this.pstart..this.pstart + n]);
                this.pstart += n;
                if this.pstart == this.pend {
                    this.pstart = 0;
                    this.pend = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut produced = false;
            while let Some(len) = this.head_len() {
                if this.buffered() < LEN_BYTES + len {
                    break;
                }
                if len < TAG_BYTES {
                    if produced {
                        // As for a record that fails authentication: the authentic records
                        // before it are delivered, the next read fails.
                        let _ = this.fail(SecureError::RecordTooShort(len));
                        return Poll::Ready(Ok(()));
                    }
                    return this.fail(SecureError::RecordTooShort(len));
                }
                let at = this.cstart + LEN_BYTES;
                let ct = &this.cbuf[at..at + len];
                let result = if buf.remaining() >= len {
                    // Straight into the caller's buffer; a failed record leaves nothing filled.
                    let out = buf.initialize_unfilled_to(len);
                    lock(&cipher).read_message(ct, out).map(|n| {
                        buf.advance(n);
                        produced = true;
                    })
                } else if produced {
                    break;
                } else {
                    if this.pbuf.len() < len {
                        this.pbuf.resize(len, 0);
                    }
                    lock(&cipher)
                        .read_message(ct, &mut this.pbuf[..len])
                        .map(|n| {
                            this.pstart = 0;
                            this.pend = n;
                        })
                };
                if let Err(e) = result {
                    if produced {
                        // Deliver the authentic records before it; the next read fails.
                        let _ = this.fail(cipher_err(e));
                        return Poll::Ready(Ok(()));
                    }
                    return this.fail(cipher_err(e));
                }
                this.cstart += LEN_BYTES + len;
                this.received += 1;
                if this.received == this.rekey_after {
                    lock(&cipher).rekey_incoming();
                    this.received = 0;
                }
                if this.pend > 0 {
                    break;
                }
            }
            if this.cstart == this.cend {
                this.cstart = 0;
                this.cend = 0;
            }
            if produced {
                return Poll::Ready(Ok(()));
            }
            if this.pend > 0 {
                continue;
            }
            let need = match this.head_len() {
                Some(len) => LEN_BYTES + len - this.buffered(),
                None => LEN_BYTES - this.buffered(),
            };
            this.make_room(need.max(READ_CHUNK_BYTES));
            let mut space = ReadBuf::new(&mut this.cbuf[this.cend..]);
            let n = match Pin::new(&mut this.inner).poll_read(cx, &mut space) {
                Poll::Ready(Ok(())) => space.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Waiting for the peer with nothing half read: an idle session keeps no
                    // large buffers (the socket holds no reference to them).
                    if this.cstart == this.cend && this.cbuf.len() > IDLE_KEEP_BYTES {
                        this.cbuf = Vec::new();
                    }
                    if this.pend == 0 && this.pbuf.len() > IDLE_KEEP_BYTES {
                        this.pbuf = Vec::new();
                    }
                    return Poll::Pending;
                }
            };
            this.cend += n;
            if n == 0 {
                if this.cstart == this.cend {
                    return Poll::Ready(Ok(()));
                }
                return this.fail(SecureError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a record",
                )));
            }
        }
    }
}

/// Encrypting write half: bytes written are sent as records. Records may stay buffered after
/// `poll_write` returns; `flush` (or `shutdown`) sends them.
pub struct SecureWrite<W> {
    inner: W,
    cipher: Option<SharedCipher>,
    rekey_after: u64,
    /// Records sent under the current key.
    sent_records: u64,
    /// Ciphertext to send is `out[start..end]`; `out` keeps its length as scratch space.
    out: Vec<u8>,
    start: usize,
    end: usize,
}

impl<W> SecureWrite<W> {
    /// An encrypting writer; `None` makes it a pass-through (plaintext transport).
    pub fn new(inner: W, cipher: Option<SharedCipher>) -> Self {
        Self::with_rekey(inner, cipher, REKEY_AFTER_RECORDS)
    }

    /// As [`SecureWrite::new`], rekeying after `rekey_after` records (tests use small values).
    pub fn with_rekey(inner: W, cipher: Option<SharedCipher>, rekey_after: u64) -> Self {
        Self {
            inner,
            cipher,
            rekey_after: rekey_after.max(1),
            sent_records: 0,
            out: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Bytes of scratch space held for ciphertext (kept between writes of a busy connection).
    pub fn scratch_bytes(&self) -> usize {
        self.out.len()
    }

    /// Frees the ciphertext scratch space if nothing is waiting in it (an idle connection).
    pub fn release_buffers(&mut self) {
        if self.start == self.end {
            self.out = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Encrypts `plain` (at most one record's worth) as the next record at `out[end..]`.
    fn seal(&mut self, cipher: &SharedCipher, plain: &[u8]) -> io::Result<()> {
        let len = plain.len() + TAG_BYTES;
        debug_assert!(len <= MAX_RECORD_BYTES);
        let need = self.end + LEN_BYTES + len;
        if self.out.len() < need {
            self.out.resize(need, 0);
        }
        self.out[self.end..self.end + LEN_BYTES].copy_from_slice(&(len as u16).to_be_bytes());
        let mut state = lock(cipher);
        let n = state
            .write_message(plain, &mut self.out[self.end + LEN_BYTES..need])
            .map_err(|e| io::Error::from(cipher_err(e)))?;
        debug_assert_eq!(n, len);
        self.end = need;
        self.sent_records += 1;
        if self.sent_records == self.rekey_after {
            state.rekey_outgoing();
            self.sent_records = 0;
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> SecureWrite<W> {
    /// Writes buffered ciphertext until none is left or the socket would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.start..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        self.start = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SecureWrite<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(cipher) = this.cipher.clone() else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        ready!(this.poll_drain(cx))?;
        let take = buf.len().min(WRITE_BATCH_BYTES);
        for chunk in buf[..take].chunks(MAX_RECORD_PLAINTEXT_BYTES) {
            this.seal(&cipher, chunk)?;
        }
        // Start sending now; what the socket does not take goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
