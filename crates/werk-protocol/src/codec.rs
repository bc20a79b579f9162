//! Line framing for the command port (section 1.2) and reply encoding (section 1.3).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::reply::Reply;

/// The default line cap suggested by the reference (64 MiB).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024 * 1024;

/// Errors produced by [`LineCodec`].
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A line (without its terminator) exceeded the configured limit.
    #[error("line too long (limit {max} bytes)")]
    LineTooLong { max: usize },
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Frames client command lines and encodes [`Reply`] values.
///
/// Decoding yields each line without its `\n` or `\r\n` terminator (bare LF is what the Ruby
/// client sends). A line whose content is longer than `max_line` bytes yields
/// [`CodecError::LineTooLong`] as soon as that is certain, without buffering the rest of it:
///
/// * the buffered part of the offending line is dropped at once;
/// * if its terminator has not arrived yet, the rest of the line is discarded as it arrives.
///
/// A caller that keeps decoding after the error therefore continues with the next line.
/// (`FramedRead` ends the stream after a decoder error, which is what the server wants: reply
/// `-ERR` and close.) At end of stream, a trailing line without a terminator is dropped.
///
/// Bytes are scanned once: the decoder remembers how far it has searched for a newline.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line: usize,
    /// Offset into the buffer up to which no `\n` exists.
    next_index: usize,
    /// Skipping the remainder of an over-long line.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of at most `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line,
            next_index: 0,
            discarding: false,
        }
    }

    /// The configured line limit in bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    fn too_long(&self) -> CodecError {
        CodecError::LineTooLong { max: self.max_line }
    }

    /// Drops everything up to and including the next `\n`; returns whether one was found.
    fn discard(&mut self, buf: &mut BytesMut) -> bool {
        self.next_index = 0;
        match memchr_newline(buf) {
            Some(nl) => {
                buf.advance(nl + 1);
                self.discarding = false;
                true
            }
            None => {
                buf.clear();
                false
            }
        }
    }
}

impl Default for LineCodec {
    /// A codec with [`DEFAULT_MAX_LINE`].
    fn default() -> Self {
        LineCodec::new(DEFAULT_MAX_LINE)
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl Decoder for LineCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if self.discarding && !self.discard(buf) {
            return Ok(None);
        }

        // A line whose content fits has its '\n' at index <= max_line + 1 (content, optional
        // '\r', '\n'), so never look further than that.
        let window_end = buf.len().min(self.max_line.saturating_add(2));
        let start = self.next_index.min(window_end);
        let found = buf
            .get(start..window_end)
            .and_then(memchr_newline)
            .map(|offset| start + offset);

        match found {
            Some(nl) => {
                self.next_index = 0;
                let mut line = buf.split_to(nl + 1);
                line.truncate(nl);
                if line.last() == Some(&b'\r') {
                    line.truncate(nl - 1);
                }
                if line.len() > self.max_line {
                    return Err(self.too_long());
                }
                Ok(Some(line.freeze()))
            }
            None => {
                let len = buf.len();
                // Without a newline, `len` bytes are all content, except that a final '\r' may
                // still turn out to be part of a CRLF terminator.
                let certain_content = if buf.last() == Some(&b'\r') {
                    len - 1
                } else {
                    len
                };
                if certain_content > self.max_line {
                    // Skip the offending line (its end may already be buffered beyond the
                    // search window) and report it.
                    self.discarding = true;
                    self.discard(buf);
                    return Err(self.too_long());
                }
                self.next_index = len;
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.decode(buf)? {
            Some(line) => Ok(Some(line)),
            None => {
                // A trailing line without a terminator is not a command.
                buf.clear();
                self.next_index = 0;
                self.discarding = false;
                Ok(None)
            }
        }
    }
}

impl Encoder<Reply> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        reply.encode(dst);
        Ok(())
    }
}

impl Encoder<&Reply> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: &Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        reply.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes everything currently decodable; `Err(())` marks a LineTooLong.
    fn drain(codec: &mut LineCodec, buf: &mut BytesMut) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        loop {
            match codec.decode(buf) {
                Ok(Some(line)) => out.push(Ok(line.to_vec())),
                Ok(None) => return out,
                Err(CodecError::LineTooLong { .. }) => out.push(Err(())),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }

    fn drain_eof(codec: &mut LineCodec, buf: &mut BytesMut) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        loop {
            match codec.decode_eof(buf) {
                Ok(Some(line)) => out.push(Ok(line.to_vec())),
                Ok(None) => return out,
                Err(CodecError::LineTooLong { .. }) => out.push(Err(())),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }

    fn ok(s: &str) -> Result<Vec<u8>, ()> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn crlf_and_lf() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"INFO\r\nEND\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok("INFO"), ok("END")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_lines() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"\r\n\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok(""), ok("")]);
    }

    #[test]
    fn only_one_cr_is_stripped() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"a\r\r\nb\rc\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok("a\r"), ok("b\rc")]);
    }

    #[test]
    fn pipelined_lines_in_one_buffer() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"PUSH {\"a\": 1}\r\nFETCH a b\nACK {}\r\nBE"[..]);
        assert_eq!(
            drain(&mut c, &mut buf),
            vec![ok("PUSH {\"a\": 1}"), ok("FETCH a b"), ok("ACK {}")]
        );
        assert_eq!(&buf[..], b"BE");
        buf.extend_from_slice(b"AT {}\r\n");
        assert_eq!(drain(&mut c, &mut buf), vec![ok("BEAT {}")]);
    }

    #[test]
    fn line_split_across_several_decode_calls() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in b"HELLO {\"v\":2}\r\nINFO\r\n" {
            buf.extend_from_slice(&[b]);
            got.extend(drain(&mut c, &mut buf));
        }
        assert_eq!(got, vec![ok("HELLO {\"v\":2}"), ok("INFO")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn remembers_how_far_it_searched() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"FETCH de"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(c.next_index, 8);
        buf.extend_from_slice(b"fault");
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(c.next_index, 13);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            c.decode(&mut buf).unwrap().as_deref(),
            Some(&b"FETCH default"[..])
        );
        assert_eq!(c.next_index, 0);
    }

    #[test]
    fn too_long_without_newline() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcde"[..]);
        let err = c.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::LineTooLong { max: 4 }));
        assert_eq!(err.to_string(), "line too long (limit 4 bytes)");
        // Nothing is kept, and the rest of the line is discarded as it arrives.
        assert!(buf.is_empty());
        buf.extend_from_slice(b"fghij");
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"kl\r\nEND\r\n");
        assert_eq!(drain(&mut c, &mut buf), vec![ok("END")]);
    }

    #[test]
    fn too_long_with_newline() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcde\r\nEND\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![Err(()), ok("END")]);
    }

    #[test]
    fn too_long_is_detected_without_waiting_for_newline_far_away() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdefghijklmnop\nEND\n"[..]);
        // The search window stops after max_line + 2 bytes; the line is still skipped
        // as a whole and the following line survives.
        assert_eq!(drain(&mut c, &mut buf), vec![Err(()), ok("END")]);
    }

    #[test]
    fn exactly_max_line_is_accepted() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcd\r\nwxyz\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok("abcd"), ok("wxyz")]);

        // Max-length content plus a '\r' still waiting for its '\n'.
        let mut buf = BytesMut::from(&b"abcd\r"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(c.decode(&mut buf).unwrap().as_deref(), Some(&b"abcd"[..]));
    }

    #[test]
    fn one_byte_over_is_rejected() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcde\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![Err(())]);
        let mut buf = BytesMut::from(&b"abcd\rx"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![Err(())]);
    }

    #[test]
    fn zero_max_line() {
        let mut c = LineCodec::new(0);
        let mut buf = BytesMut::from(&b"\r\n\nx\n"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok(""), ok(""), Err(())]);
    }

    #[test]
    fn huge_max_line_does_not_overflow() {
        let mut c = LineCodec::new(usize::MAX);
        let mut buf = BytesMut::from(&b"INFO\r\nEND"[..]);
        assert_eq!(drain(&mut c, &mut buf), vec![ok("INFO")]);
    }

    #[test]
    fn eof_drops_partial_line_but_returns_complete_ones() {
        let mut c = LineCodec::new(100);
        let mut buf = BytesMut::from(&b"INFO\r\nFLUSH\nPUSH {\"jid\""[..]);
        assert_eq!(drain_eof(&mut c, &mut buf), vec![ok("INFO"), ok("FLUSH")]);
        assert!(buf.is_empty());
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn eof_after_discarding() {
        let mut c = LineCodec::new(2);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert!(c.decode(&mut buf).is_err());
        buf.extend_from_slice(b"gh");
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
        assert!(!c.discarding);
    }

    #[test]
    fn encoder_uses_reply_encoding() {
        let mut c = LineCodec::default();
        assert_eq!(c.max_line(), DEFAULT_MAX_LINE);
        let mut dst = BytesMut::new();
        c.encode(Reply::Ok, &mut dst).unwrap();
        c.encode(&Reply::Null, &mut dst).unwrap();
        c.encode(Reply::error("x"), &mut dst).unwrap();
        assert_eq!(&dst[..], b"+OK\r\n$-1\r\n-ERR x\r\n");
    }

    #[test]
    fn io_error_converts() {
        let e: CodecError = std::io::Error::other("boom").into();
        assert_eq!(e.to_string(), "boom");
    }

    /// Reference model: what a whole-input, unchunked reading should produce.
    fn model(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, ()>> {
        let mut out = Vec::new();
        let mut rest = input;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            out.push(if line.len() > max {
                Err(())
            } else {
                Ok(line.to_vec())
            });
            rest = &rest[nl + 1..];
        }
        let certain = rest.len() - usize::from(rest.last() == Some(&b'\r'));
        if certain > max {
            out.push(Err(()));
        }
        out
    }

    proptest! {
        #[test]
        fn decoder_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            max in 0usize..80,
        ) {
            let mut c = LineCodec::new(max);
            let mut buf = BytesMut::new();
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                let _ = drain(&mut c, &mut buf);
            }
            let _ = drain_eof(&mut c, &mut buf);
        }

        #[test]
        fn chunking_does_not_change_the_result(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
            max in 0usize..24,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let mut c = LineCodec::new(max);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut prev = 0;
            for cut in cuts {
                buf.extend_from_slice(&input[prev..cut]);
                prev = cut;
                got.extend(drain(&mut c, &mut buf));
            }
            got.extend(drain_eof(&mut c, &mut buf));
            prop_assert_eq!(got, model(&input, max));
        }
    }
}
