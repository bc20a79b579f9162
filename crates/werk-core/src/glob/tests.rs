use super::*;
use proptest::prelude::*;

fn m(p: &str, s: &str) -> bool {
    redis_match(p.as_bytes(), s.as_bytes())
}

/// (pattern, subject, expected), each derived by hand from Redis' `stringmatchlen`.
const TABLE: &[(&str, &str, bool)] = &[
    // Literals.
    ("", "", true),
    ("", "a", false),
    ("abc", "abc", true),
    ("abc", "abd", false),
    ("abc", "ab", false),
    ("ab", "abc", false),
    ("a", "", false),
    // `*`.
    ("*", "anything", true),
    ("*", "", false), // Redis: the loop never runs on an empty subject
    ("**", "", false),
    ("a*", "a", true),
    ("a*", "abc", true),
    ("a**", "a", true),
    ("*c", "abc", true),
    ("*c", "abd", false),
    ("a*c", "ac", true),
    ("a*c", "abbbc", true),
    ("a*c", "abbbd", false),
    ("a***c", "abc", true),
    ("*a*b*c*", "xxaxxbxxcxx", true),
    ("*a*b*c*", "xxaxxcxxbxx", false),
    ("*ab", "aab", true),
    ("*aab", "aaab", true),
    ("*\"args\":[1]*", "{\"args\":[1]}", false), // `[1]` is a class
    // `?`.
    ("?", "a", true),
    ("?", "", false),
    ("?", "ab", false),
    ("a?c", "abc", true),
    ("a?c", "ac", false),
    ("*?", "a", true),
    // Escapes.
    ("\\*", "*", true),
    ("\\*", "a", false),
    ("\\?", "?", true),
    ("\\?", "a", false),
    ("\\[a]", "[a]", true),
    ("\\[a]", "a", false),
    ("\\\"", "\"", true),
    ("\\a", "a", true),
    ("\\\\", "\\", true),
    ("a\\", "a\\", true), // a trailing backslash is literal
    ("a\\", "a", false),
    ("\\", "\\", true),
    ("*\\*", "abc*", true),
    ("*\\*", "abc", false),
    // Classes.
    ("[abc]", "b", true),
    ("[abc]", "d", false),
    ("[abc]", "", false),
    ("[abc]", "ab", false),
    ("[^abc]", "d", true),
    ("[^abc]", "a", false),
    ("[a-c]", "b", true),
    ("[a-c]", "d", false),
    ("[c-a]", "b", true), // backwards range: the same range
    ("[z-a]", "m", true),
    ("[z-a]", "A", false),
    ("[^a-c]", "b", false),
    ("[^a-c]", "x", true),
    ("[a-cx-z]", "y", true),
    ("[a-cx-z]", "m", false),
    ("[-a]", "-", true),
    ("[a-]", "]", true), // `a-]` is the range `]`..`a`, and the class is left unclosed
    ("[a-]", "^", true),
    ("[a-]", "-", false),
    ("[a-]b", "b", true), // ... so `b` is in the class, not after it
    ("[a-]b", "ab", false),
    ("[\\]]", "]", true),
    ("[\\]]", "\\", false),
    ("[\\-a]", "-", true),
    ("[\\-a]", "b", false),
    ("[a\\-z]", "-", true),
    ("[a\\-z]", "m", false),
    ("[\\^a]", "^", true),
    ("[]", "]", false), // `[]` is an empty class, then `]`... an empty class matches nothing
    ("[]]", "]", false),
    ("[^]", "x", true), // negated empty class: any byte
    ("[^]x", "ax", true),
    ("[", "[", false), // unclosed empty class: nothing
    ("[", "a", false),
    ("[^", "a", true), // unclosed negated empty class: any byte
    ("[^", "", false),
    ("[ab", "a", true), // unclosed: the class ends with the pattern
    ("[ab", "b", true),
    ("[ab", "c", false),
    ("[ab", "ab", false),
    ("[a\\", "\\", true), // a trailing backslash in a class is literal
    ("[a\\", "a", true),
    ("[*]", "*", true),
    ("[*]", "a", false),
    ("[?]", "a", false),
    ("*[0-9]", "job-7", true),
    ("*[0-9]", "job-x", false),
    ("a[bc]*d", "abxxd", true),
    ("a[bc]*d", "adxxd", false),
];

#[test]
fn table() {
    for &(p, s, want) in TABLE {
        assert_eq!(m(p, s), want, "pattern {p:?} subject {s:?}");
    }
}

#[test]
fn the_faktory_crate_filter_matches_a_stored_job() {
    let job = r#"{"retry":25,"jid":"j1","queue":"default","jobtype":"T","args":["x"],"failure":{"message":"boom"}}"#;
    assert!(m(r#"*\"args\":\[\"x\"\]*"#, job));
    assert!(!m(r#"*\"args\":\[\"y\"\]*"#, job));
    // Unescaped, `[\"x\"]` is a class: one of `"` and `x`.
    assert!(!m(r#"*"args":["x"]*"#, job));
    assert!(m(r#"*"jobtype":"T"*"#, job));
}

#[test]
fn bytes_are_compared_raw() {
    assert!(redis_match("é".as_bytes(), "é".as_bytes()));
    assert!(!redis_match(b"?", "é".as_bytes())); // two bytes
    assert!(redis_match(b"??", "é".as_bytes()));
    assert!(redis_match(b"[\x80-\xff][\x80-\xff]", "é".as_bytes()));
    assert!(!m("A", "a"), "case-sensitive");
}

#[test]
fn nesting_is_bounded_like_redis() {
    // MAX_NESTING separate `*`s still match; one more does not.
    let ok = "*a".repeat(MAX_NESTING as usize);
    let too_deep = "*a".repeat(MAX_NESTING as usize + 1);
    let s = "a".repeat(MAX_NESTING as usize + 1);
    assert!(redis_match(ok.as_bytes(), s.as_bytes()));
    assert!(!redis_match(too_deep.as_bytes(), s.as_bytes()));
}

#[test]
fn many_stars_on_a_long_subject_stay_fast() {
    let s = "a".repeat(10_000);
    let p = format!("{}b", "*a".repeat(20));
    let t = std::time::Instant::now();
    assert!(!redis_match(p.as_bytes(), s.as_bytes()));
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

/// An independent matcher for the proptest: the pattern parsed into tokens, then matched by
/// dynamic programming (no backtracking, no early exit).
#[derive(Debug)]
enum Tok {
    Star,
    One(Box<[bool; 256]>),
}

fn tokens(p: &[u8]) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    let lit = |b: u8| {
        let mut set = Box::new([false; 256]);
        set[b as usize] = true;
        Tok::One(set)
    };
    while i < p.len() {
        match p[i] {
            b'*' => {
                out.push(Tok::Star);
                i += 1;
            }
            b'?' => {
                out.push(Tok::One(Box::new([true; 256])));
                i += 1;
            }
            b'\\' if i + 1 < p.len() => {
                out.push(lit(p[i + 1]));
                i += 2;
            }
            b'[' => {
                let mut set = Box::new([false; 256]);
                i += 1;
                let neg = p.get(i) == Some(&b'^');
                if neg {
                    i += 1;
                }
                while i < p.len() && p[i] != b']' {
                    if p[i] == b'\\' && i + 1 < p.len() {
                        set[p[i + 1] as usize] = true;
                        i += 2;
                    } else if i + 2 < p.len() && p[i + 1] == b'-' {
                        let (a, b) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                        for c in a..=b {
                            set[c as usize] = true;
                        }
                        i += 3;
                    } else {
                        set[p[i] as usize] = true;
                        i += 1;
                    }
                }
                i += 1; // the `]` (or past the end)
                if neg {
                    for v in set.iter_mut() {
                        *v = !*v;
                    }
                }
                out.push(Tok::One(set));
            }
            b => {
                out.push(lit(b));
                i += 1;
            }
        }
    }
    out
}

fn oracle(p: &[u8], s: &[u8]) -> bool {
    if s.is_empty() {
        // Redis never enters its loop: only the empty pattern matches.
        return p.is_empty();
    }
    let t = tokens(p);
    // dp[j]: the tokens so far match s[..j].
    let mut dp = vec![false; s.len() + 1];
    dp[0] = true;
    for tok in &t {
        let mut next = vec![false; s.len() + 1];
        match tok {
            Tok::Star => {
                let mut any = false;
                for j in 0..=s.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            Tok::One(set) => {
                for j in 1..=s.len() {
                    next[j] = dp[j - 1] && set[s[j - 1] as usize];
                }
            }
        }
        dp = next;
    }
    dp[s.len()]
}

#[test]
fn oracle_agrees_with_the_table() {
    for &(p, s, want) in TABLE {
        assert_eq!(
            oracle(p.as_bytes(), s.as_bytes()),
            want,
            "oracle: {p:?} {s:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn agrees_with_the_token_oracle(
        p in proptest::collection::vec(
            prop::sample::select(b"ab*?[]^-\\z".to_vec()), 0..12),
        s in proptest::collection::vec(prop::sample::select(b"ab]-^\\z*".to_vec()), 0..12),
    ) {
        prop_assert_eq!(redis_match(&p, &s), oracle(&p, &s),
            "pattern {:?} subject {:?}", String::from_utf8_lossy(&p), String::from_utf8_lossy(&s));
    }
}
