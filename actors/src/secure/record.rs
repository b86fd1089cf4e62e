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

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{RecordCipher, SecureError, MAX_RECORD_BYTES, MAX_RECORD_PLAINTEXT_BYTES, TAG_BYTES};

/// Record length prefix.
const LEN_BYTES: usize = 2;

/// Buffer space kept while a direction waits for the peer; larger buffers are freed (all of
/// them: a waiting session holds no ciphertext buffer).
pub const IDLE_KEEP_BYTES: usize = 0;

/// Smallest read from the socket while a record is incomplete: small records (pings, a few
/// messages) come in one read, large ones in as few as their size allows. The space is not
/// zeroed (reads go to the spare capacity of a `BytesMut`), so a fresh buffer after an idle
/// period costs one allocation, not a 16 KiB memset.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Plaintext encrypted per `poll_write` call before the ciphertext is handed to the socket: four
/// full records (256 KiB) per write system call.
const WRITE_BATCH_BYTES: usize = 4 * MAX_RECORD_PLAINTEXT_BYTES;

/// Decrypting read half: yields the plaintext of authenticated records.
pub struct SecureRead<R> {
    inner: R,
    /// The receiving direction's cipher; `None` on the plaintext transport.
    cipher: Option<RecordCipher>,
    /// Ciphertext read but not yet decrypted, from the head of a record on.
    cbuf: BytesMut,
    /// Plaintext of the last record decrypted (in place, in the buffer it was read into) that
    /// the caller has not taken yet.
    plain: BytesMut,
    /// A record failed: the stream is dead.
    failed: bool,
}

impl<R> SecureRead<R> {
    /// A decrypting reader over the receiving direction's cipher; `None` makes it a
    /// pass-through (plaintext transport).
    pub fn new(inner: R, cipher: Option<RecordCipher>) -> Self {
        Self {
            inner,
            cipher,
            cbuf: BytesMut::new(),
            plain: BytesMut::new(),
            failed: false,
        }
    }

    /// Bytes of buffer space held (ciphertext and undelivered plaintext).
    pub fn buffer_bytes(&self) -> usize {
        self.cbuf.capacity() + self.plain.capacity()
    }

    /// Length of the record at the head of the buffer, if its header is there.
    fn head_len(&self) -> Option<usize> {
        (self.cbuf.len() >= LEN_BYTES)
            .then(|| u16::from_be_bytes([self.cbuf[0], self.cbuf[1]]) as usize)
    }

    fn fail(&mut self, e: SecureError) -> Poll<io::Result<()>> {
        self.failed = true;
        self.cbuf = BytesMut::new();
        self.plain = BytesMut::new();
        Poll::Ready(Err(e.into()))
    }

    /// Decrypts the complete record at the head of the buffer, if there is one, into `plain`.
    /// `Ok(false)`: no complete record buffered.
    fn open_head(&mut self) -> Result<bool, SecureError> {
        let Some(len) = self.head_len() else {
            return Ok(false);
        };
        if self.cbuf.len() < LEN_BYTES + len {
            return Ok(false);
        }
        let Some(cipher) = self.cipher.as_mut() else {
            return Ok(false);
        };
        let mut record = self.cbuf.split_to(LEN_BYTES + len);
        record.advance(LEN_BYTES);
        let n = cipher.open(&mut record)?.len();
        record.truncate(n);
        self.plain = record;
        Ok(true)
    }
}

impl<R> SecureRead<R> {
    /// Decrypts the complete record at the head of the buffer into `buf` if its plaintext fits
    /// there. `Ok(false)`: no complete record buffered, or it does not fit.
    fn open_head_into(&mut self, buf: &mut ReadBuf<'_>) -> Result<bool, SecureError> {
        let Some(len) = self.head_len() else {
            return Ok(false);
        };
        if self.cbuf.len() < LEN_BYTES + len || len < TAG_BYTES {
            return Ok(false);
        }
        let plain = len - TAG_BYTES;
        if buf.remaining() < plain {
            return Ok(false);
        }
        let Some(cipher) = self.cipher.as_mut() else {
            return Ok(false);
        };
        let out = &mut buf.initialize_unfilled_to(plain)[..plain];
        cipher.open_into(&self.cbuf[LEN_BYTES..LEN_BYTES + len], out)?;
        buf.advance(plain);
        self.cbuf.advance(LEN_BYTES + len);
        Ok(true)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for SecureRead<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cipher.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.failed {
            return Poll::Ready(Err(SecureError::Decrypt.into()));
        }
        loop {
            // Hand out decrypted plaintext, then decrypt the next buffered records while the
            // caller has room: one read of the socket serves many records.
            let mut produced = false;
            loop {
                if !this.plain.is_empty() {
                    let n = buf.remaining().min(this.plain.len());
                    buf.put_slice(&this.plain[..n]);
                    this.plain.advance(n);
                    produced |= n > 0;
                    if !this.plain.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                if buf.remaining() == 0 {
                    break;
                }
                // A whole record that fits the caller's space is decrypted straight into it
                // (out of place: one pass instead of decrypting in place and copying).
                match this.open_head_into(buf) {
                    Ok(true) => {
                        produced = true;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) if produced => {
                        let _ = this.fail(e);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) => return this.fail(e),
                }
                match this.open_head() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    // Deliver the authentic records before it; the next read fails.
                    Err(e) if produced => {
                        let _ = this.fail(e);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) => return this.fail(e),
                }
            }
            if produced {
                return Poll::Ready(Ok(()));
            }
            let need = match this.head_len() {
                Some(len) => LEN_BYTES + len - this.cbuf.len(),
                None => LEN_BYTES - this.cbuf.len(),
            };
            // The plaintext handed out shared this allocation; once it is gone `reserve` reuses
            // the space.
            this.plain = BytesMut::new();
            this.cbuf.reserve(need.max(READ_CHUNK_BYTES));
            let n = match tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.cbuf,
            ) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Waiting for the peer with nothing half read: an idle session keeps no
                    // buffers (the socket holds no reference to them).
                    if this.cbuf.is_empty() && this.cbuf.capacity() > IDLE_KEEP_BYTES {
                        this.cbuf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            };
            if n == 0 {
                if this.cbuf.is_empty() {
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
    /// The sending direction's cipher; `None` on the plaintext transport.
    cipher: Option<RecordCipher>,
    /// Ciphertext to send is `out[start..end]`; `out` keeps its length as scratch space.
    out: Vec<u8>,
    start: usize,
    end: usize,
}

impl<W> SecureWrite<W> {
    /// An encrypting writer over the sending direction's cipher; `None` makes it a
    /// pass-through (plaintext transport).
    pub fn new(inner: W, cipher: Option<RecordCipher>) -> Self {
        Self {
            inner,
            cipher,
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

    /// Encrypts `plain` (at most one record's worth) as the next record at `out[end..]`, next
    /// to its length: sealed out of place, so the plaintext is read once and never copied.
    fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        let Some(cipher) = self.cipher.as_mut() else {
            return Ok(());
        };
        let len = plain.len() + TAG_BYTES;
        debug_assert!(len <= MAX_RECORD_BYTES);
        let at = self.end + LEN_BYTES;
        let need = at + len;
        if self.out.len() < need {
            self.out.resize(need, 0);
        }
        self.out[self.end..at].copy_from_slice(&(len as u16).to_be_bytes());
        cipher.seal_from(plain, &mut self.out[at..need])?;
        self.end = need;
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
        if this.cipher.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        ready!(this.poll_drain(cx))?;
        let take = buf.len().min(WRITE_BATCH_BYTES);
        for chunk in buf[..take].chunks(MAX_RECORD_PLAINTEXT_BYTES) {
            this.seal(chunk)?;
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
