//! The Faktory wire protocol, as spoken by Werk.
//!
//! This crate is the pure bottom layer of the server: it performs no I/O, owns no runtime and
//! never panics on client input, so every function here can be fuzzed directly.
//!
//! * [`codec`]: [`LineCodec`], a `tokio_util` codec that frames client command lines (CRLF or
//!   bare LF, with a hard length cap) and encodes [`Reply`] values.
//! * [`command`]: [`parse_hello`] for the handshake line and [`parse_command`] for every later
//!   line, producing typed [`Command`] values or the exact `-ERR` text in a [`CommandError`].
//! * [`reply`]: [`Reply`], the RESP2 subset the server sends (`+`, `-`, `$`, `$-1`).
//! * [`auth`]: the HI greeting payload and the iterated SHA-256 password hash.
//!
//! Section numbers in the documentation refer to `shared/faktory-protocol.md`.
//!
//! A connection typically looks like this (error handling elided):
//!
//! ```
//! use bytes::BytesMut;
//! use tokio_util::codec::{Decoder, Encoder};
//! use werk_protocol::{hi_payload, parse_command, parse_hello, Command, LineCodec, Reply};
//!
//! let mut codec = LineCodec::new(1024);
//! let mut out = BytesMut::new();
//! codec.encode(Reply::Simple(format!("HI {}", hi_payload(None))), &mut out).unwrap();
//! assert_eq!(&out[..], b"+HI {\"v\":2}\r\n");
//!
//! let mut input = BytesMut::from(&b"HELLO {\"v\":2}\r\nFETCH critical default\n"[..]);
//! let hello = parse_hello(&codec.decode(&mut input).unwrap().unwrap()).unwrap();
//! assert_eq!(hello.v, Some(2));
//! let line = codec.decode(&mut input).unwrap().unwrap();
//! assert_eq!(
//!     parse_command(&line),
//!     Ok(Command::Fetch(vec!["critical".into(), "default".into()]))
//! );
//! ```

pub mod auth;
pub mod codec;
pub mod command;
pub mod reply;

pub use auth::{hi_payload, password_hash, verify_password};
pub use codec::{CodecError, LineCodec};
pub use command::{
    parse_command, parse_hello, AckArgs, BeatArgs, Command, CommandError, FailArgs, Hello,
    HelloError, MutateArgs, MutateFilter, MutateOp, MutateTarget, QueueCommand, QueueSelector,
};
pub use reply::Reply;
