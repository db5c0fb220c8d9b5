//! ttrpc's wire format, for the shim's own server ([`crate::server`]) and event client
//! ([`crate::events`]).
//!
//! Every message is one frame: a 10-byte header, then `length` bytes of payload.
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | `length` | payload length, big-endian, at most [`MAX_PAYLOAD`] |
//! | 4..8 | `stream_id` | big-endian; a client numbers its requests 1, 3, 5, ...; the response carries the request's id |
//! | 8 | `type` | 1 request, 2 response, 3 data (streaming, not used by the Task API) |
//! | 9 | `flags` | streaming flags, ignored here |
//!
//! A request's payload is a `ttrpc.Request` (service, method, payload, timeout, metadata), a
//! response's a `ttrpc.Response` (status, payload); both are protobuf messages from the ttrpc crate.
//!
//! A frame longer than [`MAX_PAYLOAD`] is not kept: its payload is skipped as it arrives, and the
//! reader answers its stream with `ResourceExhausted` and goes on with the next frame, as ttrpc-go
//! does.

/// The header's size.
pub const HEADER_LEN: usize = 10;
/// The largest payload ttrpc accepts (4 MiB).
pub const MAX_PAYLOAD: usize = 4 << 20;
/// A request frame.
pub const TYPE_REQUEST: u8 = 1;
/// A response frame.
pub const TYPE_RESPONSE: u8 = 2;
/// A stream data frame.
pub const TYPE_DATA: u8 = 3;

/// A frame that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {length} exceed maximum message size of {MAX_PAYLOAD}")]
    TooLong { length: usize, stream_id: u32 },
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    /// The header as it goes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8] = self.kind;
        b[9] = self.flags;
        b
    }

    /// A header read from the wire.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            length: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: b[8],
            flags: b[9],
        }
    }
}

/// Append one frame (header and payload) to `out`.
pub fn put_frame(out: &mut Vec<u8>, stream_id: u32, kind: u8, payload: &[u8]) {
    let header = Header {
        length: payload.len() as u32,
        stream_id,
        kind,
        flags: 0,
    };
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
}

/// Splits a byte stream into frames as the bytes arrive.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
    /// Where the unparsed bytes start in `buf`.
    start: usize,
    /// Bytes of an over-long frame still to be discarded as they arrive.
    skip: usize,
}

impl Frames {
    /// Add bytes read from the connection.
    pub fn extend(&mut self, data: &[u8]) {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        let data = &data[skipped..];
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived. An over-long frame is an error for its
    /// stream only: its payload is discarded (now and as it arrives) and the next frame follows.
    pub fn next_frame(&mut self) -> Result<Option<(Header, Vec<u8>)>, WireError> {
        let avail = &self.buf[self.start..];
        let Some(head) = avail.first_chunk::<HEADER_LEN>() else {
            self.release();
            return Ok(None);
        };
        let header = Header::decode(head);
        let len = header.length as usize;
        if len > MAX_PAYLOAD {
            let here = (avail.len() - HEADER_LEN).min(len);
            self.start += HEADER_LEN + here;
            self.skip = len - here;
            self.release();
            return Err(WireError::TooLong {
                length: len,
                stream_id: header.stream_id,
            });
        }
        if avail.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        self.release();
        Ok(Some((header, payload)))
    }

    /// Whether part of a frame is waiting for the rest.
    #[cfg(test)]
    pub fn is_partial(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Bytes held for frames not complete yet (at most a header and [`MAX_PAYLOAD`]).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Give the memory back once everything was parsed: idle connections hold no buffer.
    fn release(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            length: 0x0102_0304,
            stream_id: 7,
            kind: TYPE_RESPONSE,
            flags: 4,
        };
        let b = h.encode();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..8], &[0, 0, 0, 7]);
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn frames_split_and_joined_arbitrarily() {
        let mut wire = Vec::new();
        put_frame(&mut wire, 1, TYPE_REQUEST, b"hello");
        put_frame(&mut wire, 3, TYPE_REQUEST, b"");
        put_frame(&mut wire, 5, TYPE_REQUEST, &[9u8; 300]);
        for chunk in [1, 3, 10, 11, 64, wire.len()] {
            let mut frames = Frames::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                frames.extend(piece);
                while let Some((h, p)) = frames.next_frame().unwrap() {
                    assert_eq!(h.kind, TYPE_REQUEST);
                    got.push((h.stream_id, p));
                }
            }
            assert!(!frames.is_partial());
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[0], (1, b"hello".to_vec()));
            assert_eq!(got[1], (3, Vec::new()));
            assert_eq!(got[2], (5, vec![9u8; 300]));
            assert_eq!(
                frames.buf.capacity(),
                0,
                "the buffer is released when empty"
            );
        }
    }

    #[test]
    fn a_partial_frame_waits_and_an_oversized_one_is_refused() {
        let mut frames = Frames::default();
        let mut wire = Vec::new();
        put_frame(&mut wire, 1, TYPE_REQUEST, b"abc");
        frames.extend(&wire[..12]);
        assert_eq!(frames.next_frame().unwrap(), None);
        assert!(frames.is_partial());
        frames.extend(&wire[12..]);
        assert_eq!(frames.next_frame().unwrap().unwrap().1, b"abc".to_vec());

        let big = Header {
            length: (MAX_PAYLOAD + 1) as u32,
            stream_id: 1,
            kind: TYPE_REQUEST,
            flags: 0,
        };
        frames.extend(&big.encode());
        frames.extend(&[7u8; 100]);
        assert_eq!(
            frames.next_frame(),
            Err(WireError::TooLong {
                length: MAX_PAYLOAD + 1,
                stream_id: 1
            })
        );
        // The rest of its payload is dropped as it comes, never held; the next frame follows.
        for _ in 0..MAX_PAYLOAD / 65536 - 1 {
            frames.extend(&[7u8; 65536]);
            assert_eq!(frames.next_frame(), Ok(None));
            assert_eq!(frames.pending(), 0);
        }
        let mut rest = vec![7u8; MAX_PAYLOAD + 1 - 100 - (MAX_PAYLOAD / 65536 - 1) * 65536];
        put_frame(&mut rest, 3, TYPE_REQUEST, b"next");
        frames.extend(&rest);
        let (h, p) = frames.next_frame().unwrap().unwrap();
        assert_eq!((h.stream_id, p), (3, b"next".to_vec()));
    }
}
