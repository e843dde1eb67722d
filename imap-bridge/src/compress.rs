//! COMPRESS=DEFLATE (RFC 4978): the connection's bytes through raw DEFLATE
//! in both directions, each flush of ours ending in a sync flush so the
//! client can decode every response as soon as it arrives.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose bytes are DEFLATE-compressed on the wire.
pub struct Deflate<S> {
    inner: S,
    dec: Decompress,
    enc: Compress,
    /// Compressed bytes read, not yet decompressed.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Compressed bytes to write.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Input compressed since the last sync flush.
    dirty: bool,
    eof: bool,
}

impl<S> Deflate<S> {
    /// Wraps `inner`; `pending` holds bytes already read past the command.
    pub fn new(inner: S, pending: Vec<u8>) -> Self {
        Deflate {
            inner,
            dec: Decompress::new(false),
            enc: Compress::new(Compression::fast(), false),
            rbuf: pending,
            rpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            dirty: false,
            eof: false,
        }
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.rpos < this.rbuf.len() {
                let before_in = this.dec.total_in();
                let before_out = this.dec.total_out();
                let out = buf.initialize_unfilled();
                let status = this
                    .dec
                    .decompress(&this.rbuf[this.rpos..], out, FlushDecompress::None)
                    .map_err(bad)?;
                let used = (this.dec.total_in() - before_in) as usize;
                let made = (this.dec.total_out() - before_out) as usize;
                this.rpos += used;
                if this.rpos == this.rbuf.len() {
                    this.rbuf.clear();
                    this.rpos = 0;
                }
                if made > 0 {
                    buf.advance(made);
                    return Poll::Ready(Ok(()));
                }
                if status == Status::StreamEnd {
                    return Poll::Ready(Ok(()));
                }
                if used > 0 {
                    continue;
                }
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.rbuf.extend_from_slice(rb.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflate<S> {
    fn compress(&mut self, data: &[u8], flush: FlushCompress) -> io::Result<()> {
        let mut input = data;
        loop {
            self.wbuf.reserve(input.len() / 2 + 64);
            let before_in = self.enc.total_in();
            let before_out = self.enc.total_out();
            self.enc
                .compress_vec(input, &mut self.wbuf, flush)
                .map_err(bad)?;
            let used = (self.enc.total_in() - before_in) as usize;
            let made = (self.enc.total_out() - before_out) as usize;
            input = &input[used..];
            // Done when all input is in and the output had room to spare.
            if input.is_empty() && self.wbuf.len() < self.wbuf.capacity() {
                return Ok(());
            }
            if used == 0 && made == 0 {
                self.wbuf.reserve(4096);
            }
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wbuf.len() - this.wpos > 64 * 1024 {
            ready!(this.poll_drain(cx))?;
        }
        this.compress(data, FlushCompress::None)?;
        this.dirty |= !data.is_empty();
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dirty {
            this.compress(&[], FlushCompress::Sync)?;
            this.dirty = false;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
