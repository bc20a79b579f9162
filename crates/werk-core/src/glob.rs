//! MUTATE's `filter.regexp`: a Redis `SCAN MATCH` glob.
//!
//! Faktory hands the pattern to Redis unchanged, so clients write Redis glob syntax (the Rust
//! `faktory` crate's `Filter::from_pattern(r#"*\"args\":\[\"x\"\]*"#)`, for instance). This is
//! the behaviour of Redis' `stringmatchlen` (case-sensitive), edge cases included:
//!
//! * `*` matches any run of bytes; consecutive `*` count as one. A pattern that is only `*`
//!   matches any non-empty subject, but not the empty one (Redis' quirk; stored jobs are never
//!   empty).
//! * `?` matches one byte.
//! * `\c` matches `c` literally (any `c`); a trailing `\` matches a backslash.
//! * `[...]` matches one byte from the class; `[^...]` one byte not in it. Inside, `\c` is the
//!   literal `c`, `a-z` a range (given backwards, `z-a`, it is the same range), and a `]` closes
//!   the class unless escaped. A class that is never closed ends with the pattern. `-` right
//!   before `]` makes a range ending at `]` (`[a-]` is `]`..`a`), as in Redis.
//! * Anything else matches itself, byte for byte.
//!
//! Like Redis, a pattern nested more than [`MAX_NESTING`] `*`s deep matches nothing, and once
//! the part after a `*` matched nowhere in the rest of the subject, earlier `*`s are not
//! retried (they could only hand it a shorter rest), so matching stays polynomial.

/// How many `*`s deep matching recurses before it gives up (Redis: 1000).
pub const MAX_NESTING: u32 = 1000;

/// Does `pattern` (Redis glob syntax) match all of `subject`?
pub fn redis_match(pattern: &[u8], subject: &[u8]) -> bool {
    let mut exhausted = false;
    match_from(pattern, subject, &mut exhausted, 0)
}

/// `exhausted`: a `*` already found that the pattern after it matches no suffix of the subject
/// it was given; every enclosing `*` can stop trying.
fn match_from(mut p: &[u8], mut s: &[u8], exhausted: &mut bool, depth: u32) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                let rest = &p[1..];
                if rest.is_empty() {
                    return true;
                }
                // The rest always needs at least one byte, so the empty suffix is not tried.
                while !s.is_empty() {
                    if match_from(rest, s, exhausted, depth + 1) {
                        return true;
                    }
                    if *exhausted {
                        return false;
                    }
                    s = &s[1..];
                }
                *exhausted = true;
                return false;
            }
            b'?' => p = &p[1..],
            b'[' => {
                let (hit, after) = class(&p[1..], sc);
                if !hit {
                    return false;
                }
                p = after;
            }
            b'\\' if p.len() >= 2 => {
                if p[1] != sc {
                    return false;
                }
                p = &p[2..];
            }
            _ => {
                if pc != sc {
                    return false;
                }
                p = &p[1..];
            }
        }
        s = &s[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Matches byte `c` against the class whose body starts at `body` (just after `[`). Returns
/// whether it matched and the pattern after the class.
fn class(body: &[u8], c: u8) -> (bool, &[u8]) {
    let negated = body.first() == Some(&b'^');
    let mut i = usize::from(negated);
    let mut hit = false;
    loop {
        let left = body.len() - i;
        match body.get(i) {
            // Unclosed: the class ends with the pattern.
            None => return (hit != negated, &body[body.len()..]),
            Some(b'\\') if left >= 2 => {
                hit |= body[i + 1] == c;
                i += 2;
            }
            Some(b']') => return (hit != negated, &body[i + 1..]),
            Some(&lo) if left >= 3 && body[i + 1] == b'-' => {
                let hi = body[i + 2];
                hit |= (lo.min(hi)..=lo.max(hi)).contains(&c);
                i += 3;
            }
            Some(&b) => {
                hit |= b == c;
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
