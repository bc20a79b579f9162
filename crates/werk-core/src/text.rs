//! Strings a store keeps or looks up as text of their own, outside any JSON document: jids, job
//! types, queue names, batch ids, worker ids, hostnames and labels, batch and progress
//! descriptions.
//!
//! None of them may contain NUL (U+0000). PostgreSQL's `text` cannot hold it at all (a statement
//! with such a parameter fails with SQLSTATE 22021), and the embedded store would keep it; so
//! that a client gets the same answer whichever store serves it, Werk refuses such a string with
//! a clear `-ERR` before it reaches any store. (Faktory, on Redis, accepts NUL anywhere; no
//! client library sends one unless its caller put it there.) JSON content is not affected:
//! `args`, `custom` and a failure's message are stored as JSON text, where a NUL is written
//! `\u0000`.

/// A string that must not contain NUL did: `what` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} must not contain NUL (U+0000)")]
pub struct NulInText(pub &'static str);

/// `Ok` unless `value` contains NUL; `what` names the string in the error (`"jid"`,
/// `"queue name"`, …).
pub fn no_nul(what: &'static str, value: &str) -> Result<(), NulInText> {
    match value.contains('\0') {
        true => Err(NulInText(what)),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_anywhere_is_refused_and_named() {
        assert_eq!(no_nul("jid", "abc"), Ok(()));
        assert_eq!(no_nul("jid", ""), Ok(()));
        assert_eq!(no_nul("jid", "é\u{1}\u{7f}"), Ok(()));
        for bad in ["\0", "a\0", "\0a", "a\0b", "\0\0"] {
            assert_eq!(
                no_nul("queue name", bad),
                Err(NulInText("queue name")),
                "{bad:?}"
            );
        }
        assert_eq!(
            NulInText("queue name").to_string(),
            "queue name must not contain NUL (U+0000)"
        );
    }
}
