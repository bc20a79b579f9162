//! Server → client replies: the RESP2 subset of section 1.3.

use bytes::{BufMut, Bytes, BytesMut};

/// One reply frame. Every encoding ends with `\r\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK\r\n`
    Ok,
    /// `+<text>\r\n`; CR and LF in the text are replaced by spaces.
    Simple(String),
    /// `-ERR <msg>\r\n`; CR and LF in the message are replaced by spaces.
    Error(String),
    /// `-<CODE> <msg>\r\n`, e.g. `-NOTUNIQUE Job not unique`; CR and LF are replaced by spaces.
    Coded { code: String, message: String },
    /// `$<len>\r\n<bytes>\r\n`; the payload is sent verbatim.
    Bulk(Bytes),
    /// `$-1\r\n` (FETCH with no job).
    Null,
}

impl Reply {
    /// A [`Reply::Simple`] from anything string-like.
    pub fn simple(text: impl Into<String>) -> Self {
        Reply::Simple(text.into())
    }

    /// A [`Reply::Error`] (sent as `-ERR <msg>`) from anything string-like.
    pub fn error(message: impl Into<String>) -> Self {
        Reply::Error(message.into())
    }

    /// A [`Reply::Coded`] error (sent as `-<CODE> <msg>`).
    pub fn coded(code: impl Into<String>, message: impl Into<String>) -> Self {
        Reply::Coded {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A [`Reply::Bulk`] from anything convertible to [`Bytes`].
    pub fn bulk(payload: impl Into<Bytes>) -> Self {
        Reply::Bulk(payload.into())
    }

    /// A bulk reply carrying `v` serialised as compact JSON.
    ///
    /// Serialisation of ordinary data (structs, `serde_json::Value`, maps with string keys)
    /// cannot fail. If it does (e.g. a map with non-string keys), the reply is
    /// `-ERR internal error: <reason>` rather than a panic; use [`Reply::try_bulk_json`] to
    /// handle that case yourself.
    pub fn bulk_json<T: serde::Serialize>(v: &T) -> Reply {
        Self::try_bulk_json(v).unwrap_or_else(|e| Reply::Error(format!("internal error: {e}")))
    }

    /// Like [`Reply::bulk_json`] but returns the serialisation error.
    pub fn try_bulk_json<T: serde::Serialize>(v: &T) -> Result<Reply, serde_json::Error> {
        serde_json::to_vec(v).map(|json| Reply::Bulk(Bytes::from(json)))
    }

    /// Whether this is an error reply (`-ERR` or `-<CODE>`).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_) | Reply::Coded { .. })
    }

    /// Appends the wire encoding of this reply to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Reply::Ok => dst.put_slice(b"+OK\r\n"),
            Reply::Simple(text) => {
                dst.reserve(text.len() + 3);
                dst.put_u8(b'+');
                put_sanitized(dst, text);
                dst.put_slice(b"\r\n");
            }
            Reply::Error(message) => {
                dst.reserve(message.len() + 7);
                dst.put_slice(b"-ERR ");
                put_sanitized(dst, message);
                dst.put_slice(b"\r\n");
            }
            Reply::Coded { code, message } => {
                dst.reserve(code.len() + message.len() + 4);
                dst.put_u8(b'-');
                put_sanitized(dst, code);
                dst.put_u8(b' ');
                put_sanitized(dst, message);
                dst.put_slice(b"\r\n");
            }
            Reply::Bulk(payload) => {
                let len = payload.len().to_string();
                dst.reserve(len.len() + payload.len() + 5);
                dst.put_u8(b'$');
                dst.put_slice(len.as_bytes());
                dst.put_slice(b"\r\n");
                dst.put_slice(payload);
                dst.put_slice(b"\r\n");
            }
            Reply::Null => dst.put_slice(b"$-1\r\n"),
        }
    }

    /// The wire encoding of this reply.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Writes `text`, replacing CR and LF with spaces so a reply can never span lines.
fn put_sanitized(dst: &mut BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        dst.put_slice(&rest[..pos]);
        dst.put_u8(b' ');
        rest = &rest[pos + 1..];
    }
    dst.put_slice(rest);
}

impl From<crate::command::CommandError> for Reply {
    /// A command error becomes `-ERR <text>`.
    fn from(err: crate::command::CommandError) -> Self {
        Reply::Error(err.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandError;

    fn enc(r: Reply) -> Vec<u8> {
        r.to_bytes().to_vec()
    }

    #[test]
    fn ok() {
        assert_eq!(enc(Reply::Ok), b"+OK\r\n");
    }

    #[test]
    fn simple() {
        assert_eq!(enc(Reply::simple(r#"HI {"v":2}"#)), b"+HI {\"v\":2}\r\n");
        assert_eq!(enc(Reply::Simple(String::new())), b"+\r\n");
    }

    #[test]
    fn simple_sanitizes_newlines() {
        assert_eq!(enc(Reply::simple("a\r\nb\nc\rd")), b"+a  b c d\r\n");
    }

    #[test]
    fn error() {
        assert_eq!(
            enc(Reply::error("unknown command push")),
            b"-ERR unknown command push\r\n"
        );
        assert_eq!(
            enc(Reply::error("unknown command ")),
            b"-ERR unknown command \r\n"
        );
        assert_eq!(enc(Reply::error("bad\r\nthing")), b"-ERR bad  thing\r\n");
    }

    #[test]
    fn coded() {
        assert_eq!(
            enc(Reply::coded("NOTUNIQUE", "Job not unique")),
            b"-NOTUNIQUE Job not unique\r\n"
        );
        assert_eq!(enc(Reply::coded("X\n", "a\rb")), b"-X  a b\r\n");
    }

    #[test]
    fn bulk() {
        assert_eq!(
            enc(Reply::bulk(&b"{\"state\":\"quiet\"}"[..])),
            b"$17\r\n{\"state\":\"quiet\"}\r\n"
        );
        assert_eq!(
            enc(Reply::bulk(&b"{\"state\":\"terminate\"}"[..])),
            b"$21\r\n{\"state\":\"terminate\"}\r\n"
        );
        assert_eq!(enc(Reply::bulk(Bytes::new())), b"$0\r\n\r\n");
        // Bulk payloads are binary-safe: no sanitisation.
        assert_eq!(enc(Reply::bulk(&b"a\r\nb"[..])), b"$4\r\na\r\nb\r\n");
    }

    #[test]
    fn bulk_length_is_in_bytes() {
        assert_eq!(enc(Reply::bulk("é".to_string())), "$2\r\né\r\n".as_bytes());
    }

    #[test]
    fn null() {
        assert_eq!(enc(Reply::Null), b"$-1\r\n");
    }

    #[test]
    fn bulk_json_is_compact() {
        let v = serde_json::json!({"state": "quiet"});
        assert_eq!(
            enc(Reply::bulk_json(&v)),
            b"$17\r\n{\"state\":\"quiet\"}\r\n"
        );
        let empty = serde_json::Map::new();
        assert_eq!(enc(Reply::bulk_json(&empty)), b"$2\r\n{}\r\n");
    }

    #[test]
    fn pushb_example_from_reference() {
        let mut m = serde_json::Map::new();
        m.insert(
            "f6g7h8i9j0".into(),
            "jobs must have a jobtype parameter".into(),
        );
        assert_eq!(
            enc(Reply::bulk_json(&m)),
            b"$51\r\n{\"f6g7h8i9j0\":\"jobs must have a jobtype parameter\"}\r\n"
        );
    }

    #[test]
    fn bulk_json_failure_is_an_error_reply() {
        let mut m = std::collections::HashMap::new();
        m.insert(vec![1u8], 1);
        let r = Reply::bulk_json(&m);
        assert!(r.is_error());
        assert!(Reply::try_bulk_json(&m).is_err());
    }

    #[test]
    fn encode_appends() {
        let mut buf = BytesMut::new();
        Reply::Ok.encode(&mut buf);
        Reply::Null.encode(&mut buf);
        assert_eq!(&buf[..], b"+OK\r\n$-1\r\n");
    }

    #[test]
    fn from_command_error() {
        let r: Reply = CommandError("invalid format".into()).into();
        assert_eq!(enc(r), b"-ERR invalid format\r\n");
    }

    #[test]
    fn is_error() {
        assert!(Reply::error("x").is_error());
        assert!(Reply::coded("A", "b").is_error());
        assert!(!Reply::Ok.is_error());
        assert!(!Reply::Null.is_error());
    }
}
