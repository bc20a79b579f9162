//! Fuzzes `werk_protocol::LineCodec` (the command-port line framing).
//!
//! Input layout: `[max_line, split_seed, payload...]`.
//!
//! * `max_line` is the first byte (0..=255), so the length cap is small and over-long lines,
//!   lines of exactly the cap and a cap of 0 are all reached quickly.
//! * `split_seed` drives a tiny PRNG that cuts the payload into chunks (including empty
//!   chunks, i.e. extra `decode` calls with nothing new), fed one after the other into the
//!   same buffer as a socket would (chunk sizes 0..=1 up to 0..=300 depending on the seed, so
//!   byte-by-byte feeding is one of the patterns). The payload is also decoded in one piece.
//!
//! After each chunk `decode` is called until it returns `Ok(None)`; after the last one,
//! `decode_eof` likewise, as `tokio_util::codec::FramedRead` does.
//!
//! Checked:
//! * no panics;
//! * every line is at most `max_line` bytes and contains no `\n`;
//! * while a partial line waits (`Ok(None)`), at most `max_line + 1` bytes stay buffered (the
//!   cap bounds memory), and after end of stream the buffer is empty;
//! * the sequence of results (lines and `LineTooLong` errors) is the same however the payload is
//!   split, and equals a simple whole-input model of the documented framing rules. The codec
//!   documents that decoding continues with the next line after an error, so the whole
//!   sequence is compared, not only the part before the first error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use werk_protocol::{CodecError, LineCodec};

/// One decoder result: a line, or `LineTooLong`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Line(Vec<u8>),
    TooLong,
}

fn check_line(line: &[u8], max: usize) {
    assert!(
        line.len() <= max,
        "line of {} bytes exceeds max_line {max}",
        line.len()
    );
    assert!(!line.contains(&b'\n'), "line contains a newline: {line:?}");
}

/// Calls `decode` (or `decode_eof`) until it returns `Ok(None)`.
fn drain(codec: &mut LineCodec, buf: &mut BytesMut, eof: bool, out: &mut Vec<Event>) {
    let max = codec.max_line();
    // Every call either consumes input or returns Ok(None); bound the loop anyway so a codec
    // that stops making progress is reported instead of hanging the fuzzer.
    for _ in 0..=2 * buf.len() + 2 {
        let res = if eof {
            codec.decode_eof(buf)
        } else {
            codec.decode(buf)
        };
        match res {
            Ok(Some(line)) => {
                check_line(&line, max);
                out.push(Event::Line(line.to_vec()));
            }
            Ok(None) => {
                if eof {
                    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
                } else {
                    assert!(
                        buf.len() <= max.saturating_add(1),
                        "{} bytes buffered with max_line {max}",
                        buf.len()
                    );
                }
                return;
            }
            Err(CodecError::LineTooLong { max: m }) => {
                assert_eq!(m, max);
                out.push(Event::TooLong);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    panic!("decoder made no progress");
}

/// Feeds `chunks` one after the other, then signals end of stream.
fn run<'a>(max: usize, chunks: impl Iterator<Item = &'a [u8]>) -> Vec<Event> {
    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        drain(&mut codec, &mut buf, false, &mut out);
    }
    drain(&mut codec, &mut buf, true, &mut out);
    // A second end-of-stream call finds nothing.
    drain(&mut codec, &mut buf, true, &mut out.clone());
    out
}

/// The framing rules applied to the whole input at once (section 1.2 of the protocol notes):
/// lines end at `\n`, one `\r` before it is stripped, content longer than `max` is an error,
/// and an unterminated tail is dropped, unless it is already certainly too long.
fn model(input: &[u8], max: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let mut line = &rest[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.push(if line.len() > max {
            Event::TooLong
        } else {
            Event::Line(line.to_vec())
        });
        rest = &rest[nl + 1..];
    }
    let certain = rest.len() - usize::from(rest.last() == Some(&b'\r'));
    if certain > max {
        out.push(Event::TooLong);
    }
    out
}

/// Chunk boundaries from a xorshift PRNG: chunk sizes in `0..=limit`, where `limit` is also
/// derived from the seed so that both tiny and large chunks occur.
fn chunks(payload: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(0x7F4A_7C15)
        | 1;
    let limit = [1usize, 2, 3, 5, 8, 16, 64, 300][usize::from(seed & 7)];
    let mut out = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % (limit + 1)).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (max, seed, payload) = match data {
        [m, s, rest @ ..] => (usize::from(*m), *s, rest),
        _ => return,
    };

    let whole = run(max, std::iter::once(payload));
    assert_eq!(
        whole,
        model(payload, max),
        "whole-input decoding differs from the model"
    );

    // (Seeds with `seed & 7 == 0` give chunks of 0 or 1 byte: byte-by-byte feeding.)
    let split = run(max, chunks(payload, seed).into_iter());
    assert_eq!(split, whole, "chunked decoding (seed {seed}) differs");
    // (Equal full sequences imply equal lines up to the first error, which is all a caller that
    // stops at the first error, like FramedRead, relies on.)
});
