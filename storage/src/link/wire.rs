//! How frames ride on WebSocket messages. Each binary message starts with a
//! tag byte:
//!
//! - `0` ‖ a whole frame (postcard);
//! - `1` ‖ body length (u64, little-endian) ‖ a frame whose message body was
//!   taken out;
//! - `2` ‖ the next piece (at most [`CHUNK`] bytes) of that body.
//!
//! A message body of [`CHUNK`] bytes or more (a large append, delivery or
//! raw read) travels beside its frame in pieces: the sender never copies it
//! whole, and the receiver collects it straight into the buffer that becomes
//! the message's `Vec` — one copy of the body on each side, never two. A
//! connection's writer sends one frame's messages back to back, so pieces
//! of two bodies never interleave.

use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::{DecodeError, Frame, Limits, decode, encode};

/// Bodies this large or larger are sent in pieces of this size.
pub const CHUNK: usize = 1 << 20;

const WHOLE: u8 = 0;
const HEAD: u8 = 1;
const PIECE: u8 = 2;

/// What a connection's writer sends.
#[derive(Debug)]
pub enum Out {
    /// One frame (and its body's pieces, if it was split).
    Frame {
        /// The tagged first message.
        head: Vec<u8>,
        /// The body sent after it in pieces.
        body: Option<Vec<u8>>,
    },
    /// A WebSocket message as it is (close).
    Raw(Message),
}

/// Prepares a frame for sending, taking a large body out of it.
pub fn outgoing(mut frame: Frame) -> Out {
    match frame.take_body() {
        Some(body) if body.len() >= CHUNK => {
            let mut head = vec![HEAD];
            head.extend_from_slice(&(body.len() as u64).to_le_bytes());
            head.extend_from_slice(&encode(&frame));
            Out::Frame {
                head,
                body: Some(body),
            }
        }
        small => {
            if let Some(body) = small {
                // It came out of this very frame, so it fits back in.
                let _ = frame.put_body(body);
            }
            whole(&frame)
        }
    }
}

/// A frame in one message (handshakes, small requests and answers).
pub fn whole(frame: &Frame) -> Out {
    let mut head = vec![WHOLE];
    head.extend_from_slice(&encode(frame));
    Out::Frame { head, body: None }
}

/// The WebSocket messages that carry `out`, in order.
pub fn messages(out: Out) -> impl Iterator<Item = Message> {
    let (first, body) = match out {
        Out::Frame { head, body } => (Message::Binary(Bytes::from(head)), body),
        Out::Raw(m) => (m, None),
    };
    let body = body.unwrap_or_default();
    let count = body.len().div_ceil(CHUNK);
    std::iter::once(first).chain((0..count).map(move |i| {
        let piece = &body[i * CHUNK..((i + 1) * CHUNK).min(body.len())];
        let mut m = Vec::with_capacity(piece.len() + 1);
        m.push(PIECE);
        m.extend_from_slice(piece);
        Message::Binary(Bytes::from(m))
    }))
}

/// Puts frames back together from the messages of one connection.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<(Frame, Vec<u8>, usize)>,
}

impl Assembler {
    /// Takes the next message; returns a frame when one is complete.
    pub fn push(&mut self, message: &[u8], limits: Limits) -> Result<Option<Frame>, DecodeError> {
        let malformed = |why: &str| DecodeError::Malformed(why.to_string());
        let (&tag, rest) = message
            .split_first()
            .ok_or_else(|| malformed("empty message"))?;
        match (tag, self.pending.take()) {
            (WHOLE, None) => decode(rest, limits).map(Some),
            (HEAD, None) => {
                let (len, frame) = rest
                    .split_first_chunk::<8>()
                    .ok_or_else(|| malformed("short body header"))?;
                let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
                if len > limits.max_frame {
                    return Err(DecodeError::TooLarge {
                        size: len,
                        limit: limits.max_frame,
                    });
                }
                let mut frame = decode(frame, limits)?;
                if frame.take_body().is_none() {
                    return Err(malformed("a body for a frame that has none"));
                }
                self.pending = Some((frame, Vec::with_capacity(len), len));
                Ok(None)
            }
            (PIECE, Some((mut frame, mut body, len))) => {
                if body.len() + rest.len() > len {
                    return Err(malformed("body longer than announced"));
                }
                body.extend_from_slice(rest);
                if body.len() < len {
                    self.pending = Some((frame, body, len));
                    return Ok(None);
                }
                frame
                    .put_body(body)
                    .map_err(|_| malformed("a body for a frame that has none"))?;
                Ok(Some(frame))
            }
            (PIECE, None) => Err(malformed("a body piece without its frame")),
            (WHOLE | HEAD, Some(_)) => Err(malformed("a new frame before the last body ended")),
            _ => Err(malformed("unknown message tag")),
        }
    }
}
