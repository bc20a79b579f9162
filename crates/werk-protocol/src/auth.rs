//! The HI greeting payload and password verification (sections 2.1 and 2.2).

use sha2::{Digest, Sha256};

/// The protocol version the server advertises in `HI`.
pub const PROTOCOL_VERSION: i64 = 2;

/// Computes the Faktory password hash (section 2.2).
///
/// SHA-256 is applied `iterations` times in total: first over `password ++ salt` (UTF-8 bytes),
/// then over the raw 32-byte digest of the previous round. `iterations` of 0 or 1 both mean a
/// single round. The result is 64 lowercase hex characters.
pub fn password_hash(password: &str, salt: &str, iterations: u32) -> String {
    let mut digest = Sha256::new()
        .chain_update(password.as_bytes())
        .chain_update(salt.as_bytes())
        .finalize();
    for _ in 1..iterations {
        digest = Sha256::digest(digest);
    }
    hex::encode(digest)
}

/// Checks the `pwdhash` a client sent in HELLO.
///
/// `iterations` and `salt` are the values this connection advertised in `HI`; `hello_v` is the
/// HELLO's `v`. Legacy rule: when `v` is missing or below 2 the client hashed only once, so a
/// single round is used regardless of `iterations`. The comparison is constant-time against the
/// lowercase hex digest (uppercase hex is rejected, as in Faktory).
pub fn verify_password(
    password: &str,
    salt: &str,
    iterations: u32,
    hello_v: Option<i64>,
    pwdhash: &str,
) -> bool {
    let rounds = match hello_v {
        Some(v) if v >= PROTOCOL_VERSION => iterations,
        _ => 1,
    };
    let expected = password_hash(password, salt, rounds);
    constant_time_eq(expected.as_bytes(), pwdhash.as_bytes())
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The JSON object sent after `HI ` in the greeting (section 2.1).
///
/// `None` gives `{"v":2}`; `Some((iterations, salt))` gives
/// `{"v":2,"i":<iterations>,"s":"<salt>"}` with exactly that key order and no spaces.
/// The caller sends `Reply::Simple(format!("HI {}", hi_payload(..)))`.
pub fn hi_payload(auth: Option<(u32, &str)>) -> String {
    match auth {
        None => format!("{{\"v\":{PROTOCOL_VERSION}}}"),
        Some((iterations, salt)) => {
            // The salt is hex in practice; encode it as a JSON string anyway so that an odd
            // configuration can never produce invalid JSON.
            let salt = serde_json::Value::from(salt);
            format!("{{\"v\":{PROTOCOL_VERSION},\"i\":{iterations},\"s\":{salt}}}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30";

    #[test]
    fn hash_test_vector() {
        assert_eq!(password_hash("foobar", "55104dc76695721d", 1545), VECTOR);
    }

    #[test]
    fn zero_and_one_iterations_are_a_single_sha256() {
        // sha256("foobar" ++ "salt")
        let once = hex::encode(Sha256::digest(b"foobarsalt"));
        assert_eq!(password_hash("foobar", "salt", 0), once);
        assert_eq!(password_hash("foobar", "salt", 1), once);
        assert_eq!(once.len(), 64);
    }

    #[test]
    fn rounds_hash_the_raw_digest_not_its_hex() {
        let first = Sha256::digest(b"pwsalt");
        let second = hex::encode(Sha256::digest(first));
        assert_eq!(password_hash("pw", "salt", 2), second);
    }

    #[test]
    fn hash_is_lowercase_hex() {
        let h = password_hash("foobar", "55104dc76695721d", 1545);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn verify_with_v2_uses_all_iterations() {
        assert!(verify_password(
            "foobar",
            "55104dc76695721d",
            1545,
            Some(2),
            VECTOR
        ));
        assert!(verify_password(
            "foobar",
            "55104dc76695721d",
            1545,
            Some(3),
            VECTOR
        ));
        let single = password_hash("foobar", "55104dc76695721d", 1);
        assert!(!verify_password(
            "foobar",
            "55104dc76695721d",
            1545,
            Some(2),
            &single
        ));
    }

    #[test]
    fn verify_legacy_rule_uses_one_iteration() {
        let single = password_hash("foobar", "55104dc76695721d", 1);
        for v in [None, Some(0), Some(1), Some(-5)] {
            assert!(
                verify_password("foobar", "55104dc76695721d", 1545, v, &single),
                "{v:?}"
            );
            assert!(
                !verify_password("foobar", "55104dc76695721d", 1545, v, VECTOR),
                "{v:?}"
            );
        }
    }

    #[test]
    fn verify_rejects_wrong_inputs() {
        let salt = "55104dc76695721d";
        assert!(!verify_password("foobaz", salt, 1545, Some(2), VECTOR));
        assert!(!verify_password(
            "foobar",
            "55104dc76695721e",
            1545,
            Some(2),
            VECTOR
        ));
        assert!(!verify_password("foobar", salt, 1545, Some(2), ""));
        assert!(!verify_password(
            "foobar",
            salt,
            1545,
            Some(2),
            &VECTOR[..63]
        ));
        assert!(!verify_password(
            "foobar",
            salt,
            1545,
            Some(2),
            &VECTOR.to_uppercase()
        ));
        assert!(!verify_password(
            "foobar",
            salt,
            1545,
            Some(2),
            &format!("{VECTOR}0")
        ));
    }

    #[test]
    fn hi_payload_bytes() {
        assert_eq!(hi_payload(None), r#"{"v":2}"#);
        assert_eq!(
            hi_payload(Some((1545, "55104dc76695721d"))),
            r#"{"v":2,"i":1545,"s":"55104dc76695721d"}"#
        );
        assert_eq!(
            hi_payload(Some((4000, "a\"b"))),
            r#"{"v":2,"i":4000,"s":"a\"b"}"#
        );
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
