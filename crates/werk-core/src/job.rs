//! The job payload and PUSH validation.
//!
//! `args` and `custom` are kept as the raw JSON text the client sent ([`RawValue`]), so large
//! integers and number formatting survive byte for byte. Known top-level fields are serialised in
//! Faktory's order; unknown top-level fields are dropped, as Faktory does (extensions belong in
//! `custom`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::retry::Failure;
use crate::text::{no_nul, NulInText};
use crate::time::{format_stamp, parse_rfc3339, Millis, MAX_MILLIS};

/// Retries given to a job that does not say.
pub const DEFAULT_RETRY: i64 = 25;
/// Reservation given to a job whose `reserve_for` is 0 or absent (seconds).
pub const DEFAULT_RESERVE_FOR: i64 = 1800;
/// Shortest reservation (seconds).
pub const MIN_RESERVE_FOR: i64 = 60;
/// Longest reservation (seconds); PUSH rejects more.
pub const MAX_RESERVE_FOR: i64 = 86_400;
/// Queue used when a job names none.
pub const DEFAULT_QUEUE: &str = "default";

/// A job as stored and as served to workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    #[serde(default)]
    pub retry: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub jid: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub queue: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub jobtype: String,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub enqueued_at: String,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    pub at: String,
    #[serde(default)]
    pub args: Option<Box<RawValue>>,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_zero"
    )]
    pub reserve_for: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "null_as_zero"
    )]
    pub backtrace: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or_default())
}

/// Why a PUSH was refused. `Display` is the text after `-ERR ` (and the value in PUSHB's map).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("jobs must have a reasonable jid parameter")]
    Jid,
    #[error("jobs must have a jobtype parameter")]
    Jobtype,
    #[error("jobs must have an args parameter")]
    Args,
    #[error("jobs cannot be reserved for more than one day")]
    ReserveFor,
    #[error("invalid timestamp for 'at': {0:?}: {1}")]
    At(String, String),
    #[error("cannot get {0:?} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z")]
    QueueName(String),
    /// A job with this jid is already stored (in the given state). Faktory does not detect
    /// duplicates and loses track of one copy; Werk refuses the second push.
    #[error("duplicate jid {0}: a job with this jid is already {1}")]
    DuplicateJid(String, String),
    /// `custom.expires_at` / `custom.expires_in` of the wrong type or unparseable.
    #[error("invalid custom.{0}: {1}")]
    Expiry(&'static str, String),
    /// `custom.unique_for` / `custom.unique_until` of the wrong type or value.
    #[error("invalid custom.{0}: {1}")]
    Unique(&'static str, String),
    /// Another job with the same type, queue and args holds the uniqueness lock
    /// (sent as `-NOTUNIQUE Job not unique`).
    #[error("Job not unique")]
    NotUnique,
    /// `custom.bid` names a batch that does not exist (never created, expired uncommitted, or
    /// purged after it finished).
    #[error("No such batch {0}")]
    NoSuchBatch(String),
    /// `custom.bid` of the wrong type.
    #[error("invalid custom.{0}: {1}")]
    Custom(&'static str, String),
    /// The jid, the jobtype or `custom.bid` contains NUL (see [`crate::text`]).
    #[error(transparent)]
    Nul(#[from] NulInText),
}

impl PushError {
    /// The error code of the reply: `NOTUNIQUE` for [`PushError::NotUnique`], else `ERR`.
    pub fn code(&self) -> &'static str {
        match self {
            PushError::NotUnique => "NOTUNIQUE",
            _ => "ERR",
        }
    }
}

/// A unique job's lock (Enterprise unique jobs): while it is held, another push of the same
/// type, queue and args is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uniqueness {
    /// Identity: SHA-256 (hex) of jobtype, queue and the args in canonical JSON.
    pub key: String,
    /// The lock expires at this time at the latest (`unique_for` after the push, or after `at`
    /// for a scheduled job).
    pub until: Millis,
    /// `unique_until = "start"`: released when the job is fetched; else when it succeeds.
    pub release_at_start: bool,
}

/// Is this a valid queue name (`^[a-zA-Z0-9._-]+$`)?
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Clamps a job's `reserve_for` to what a reservation lasts, in seconds.
pub fn reservation_seconds(reserve_for: i64) -> i64 {
    match reserve_for {
        0 => DEFAULT_RESERVE_FOR,
        n if n < MIN_RESERVE_FOR => MIN_RESERVE_FOR,
        n if n > MAX_RESERVE_FOR => MAX_RESERVE_FOR,
        n => n,
    }
}

impl Job {
    /// Parses one job from a PUSH argument and applies Faktory's validation and defaults.
    /// `now` fills an empty `created_at`. Returns the job and its `at` time when it has one.
    pub fn parse_for_push(text: &str, now: Millis) -> Result<(Job, Option<Millis>), PushError> {
        Job::decode(text)?.validate_for_push(now)
    }

    /// Decodes a job object (no validation). Anything but a JSON object of the right field
    /// types is `invalid JSON`.
    pub fn decode(text: &str) -> Result<Job, PushError> {
        if !text.trim_start().starts_with('{') {
            return Err(PushError::InvalidJson(
                "a job must be a JSON object".to_string(),
            ));
        }
        serde_json::from_str(text).map_err(|e| PushError::InvalidJson(e.to_string()))
    }

    /// Validation and defaults of PUSH for an already-decoded job (PUSHB decodes the array first).
    pub fn validate_for_push(mut self, now: Millis) -> Result<(Job, Option<Millis>), PushError> {
        if self.retry.is_none() {
            self.retry = Some(DEFAULT_RETRY);
        }
        if self.jid.len() < 8 {
            return Err(PushError::Jid);
        }
        no_nul("jid", &self.jid)?;
        if self.jobtype.is_empty() {
            return Err(PushError::Jobtype);
        }
        no_nul("jobtype", &self.jobtype)?;
        match &self.args {
            None => return Err(PushError::Args),
            Some(raw) if !raw.get().trim_start().starts_with('[') => {
                return Err(PushError::InvalidJson(
                    "args must be a JSON array".to_string(),
                ))
            }
            Some(_) => {}
        }
        if let Some(raw) = &self.custom {
            let text = raw.get().trim_start();
            if text == "null" {
                self.custom = None;
            } else if !text.starts_with('{') {
                return Err(PushError::InvalidJson(
                    "custom must be a JSON object".to_string(),
                ));
            } else if is_empty_object(text) {
                self.custom = None;
            }
        }
        if self.reserve_for > MAX_RESERVE_FOR {
            return Err(PushError::ReserveFor);
        }
        if self.created_at.is_empty() {
            self.created_at = format_stamp(now);
        }
        if self.queue.is_empty() {
            self.queue = DEFAULT_QUEUE.to_string();
        }
        let at = if self.at.is_empty() {
            None
        } else {
            Some(parse_rfc3339(&self.at).map_err(|e| PushError::At(self.at.clone(), e))?)
        };
        self.expiry(now)?;
        self.uniqueness(now, at)?;
        self.batch_id()?;
        // Faktory checks queue names only when a queue is first created by an immediate enqueue,
        // and silently loses scheduled jobs with bad names later. Werk checks every job up front.
        if !valid_queue_name(&self.queue) {
            return Err(PushError::QueueName(self.queue.clone()));
        }
        Ok((self, at))
    }

    /// When the job expires (Enterprise's expiring jobs): `custom.expires_at` (RFC 3339) or
    /// `custom.expires_in` (seconds after `pushed_at`, may be fractional); `expires_at` wins when
    /// both are given. `None`: never. An expired job is dropped instead of being fetched.
    pub fn expiry(&self, pushed_at: Millis) -> Result<Option<Millis>, PushError> {
        let Some(custom) = &self.custom else {
            return Ok(None);
        };
        // Most jobs have no expiry: skip parsing their custom object.
        if !custom.get().contains("expires_") {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Keys {
            expires_at: Option<serde_json::Value>,
            expires_in: Option<serde_json::Value>,
        }
        let keys: Keys = serde_json::from_str(custom.get())
            .map_err(|e| PushError::InvalidJson(e.to_string()))?;
        if let Some(v) = keys.expires_at.filter(|v| !v.is_null()) {
            let text = v.as_str().ok_or_else(|| {
                PushError::Expiry("expires_at", format!("{v} is not an RFC 3339 time string"))
            })?;
            return parse_rfc3339(text)
                .map(Some)
                .map_err(|e| PushError::Expiry("expires_at", format!("{text:?}: {e}")));
        }
        if let Some(v) = keys.expires_in.filter(|v| !v.is_null()) {
            let secs = v.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                PushError::Expiry("expires_in", format!("{v} is not a number of seconds"))
            })?;
            let ms = (secs * 1000.0).clamp(-(MAX_MILLIS as f64), MAX_MILLIS as f64) as Millis;
            return Ok(Some(pushed_at.saturating_add(ms).min(MAX_MILLIS)));
        }
        Ok(None)
    }

    /// The job's uniqueness lock, if it asks for one (`custom.unique_for` seconds > 0;
    /// `custom.unique_until` `"success"` (default) or `"start"`). `at`: its scheduled time.
    pub fn uniqueness(
        &self,
        now: Millis,
        at: Option<Millis>,
    ) -> Result<Option<Uniqueness>, PushError> {
        let Some(custom) = &self.custom else {
            return Ok(None);
        };
        if !custom.get().contains("unique_") {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Keys {
            unique_for: Option<serde_json::Value>,
            unique_until: Option<serde_json::Value>,
        }
        let keys: Keys = serde_json::from_str(custom.get())
            .map_err(|e| PushError::InvalidJson(e.to_string()))?;
        let Some(v) = keys.unique_for.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let secs = v
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or_else(|| {
                PushError::Unique(
                    "unique_for",
                    format!("{v} is not a positive number of seconds"),
                )
            })?;
        let release_at_start = match keys.unique_until.as_ref().filter(|v| !v.is_null()) {
            None => false,
            Some(serde_json::Value::String(s)) if s == "success" => false,
            Some(serde_json::Value::String(s)) if s == "start" => true,
            Some(other) => {
                return Err(PushError::Unique(
                    "unique_until",
                    format!("{other} is neither \"success\" nor \"start\""),
                ))
            }
        };
        let args: serde_json::Value = self
            .args
            .as_ref()
            .map(|a| serde_json::from_str(a.get()))
            .transpose()
            .map_err(|e| PushError::InvalidJson(e.to_string()))?
            .unwrap_or(serde_json::Value::Null);
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.jobtype.as_bytes());
        h.update([0]);
        h.update(self.queue.as_bytes());
        h.update([0]);
        h.update(args.to_string().as_bytes());
        let key = hex::encode(&h.finalize()[..16]);
        let from = at.map_or(now, |at| at.max(now));
        let ms = (secs * 1000.0).min(MAX_MILLIS as f64) as Millis;
        Ok(Some(Uniqueness {
            key,
            until: from.saturating_add(ms).min(MAX_MILLIS),
            release_at_start,
        }))
    }

    /// The batch the job joins (Enterprise batches): `custom.bid`, a non-empty string.
    pub fn batch_id(&self) -> Result<Option<String>, PushError> {
        let Some(custom) = &self.custom else {
            return Ok(None);
        };
        if !custom.get().contains("\"bid\"") {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Keys {
            bid: Option<serde_json::Value>,
        }
        let keys: Keys = serde_json::from_str(custom.get())
            .map_err(|e| PushError::InvalidJson(e.to_string()))?;
        match keys.bid {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => {
                no_nul("custom.bid", &s)?;
                Ok(Some(s))
            }
            Some(other) => Err(PushError::Custom(
                "bid",
                format!("{other} is not a batch id string"),
            )),
        }
    }

    /// Adds `key: value` at the front of `custom` (creating it), keeping the rest verbatim.
    /// Any earlier `key` is still there after it; JSON readers take the last duplicate, so
    /// callers only add keys the client does not set (such as `_pbid`).
    pub fn add_custom(&mut self, key: &str, value: &serde_json::Value) {
        let pair = format!("{}:{}", serde_json::Value::String(key.to_string()), value);
        let text = match &self.custom {
            Some(raw) if !is_empty_object(raw.get().trim()) => {
                let rest = raw.get().trim_start();
                format!("{{{pair},{}", &rest[1..])
            }
            _ => format!("{{{pair}}}"),
        };
        self.custom = RawValue::from_string(text).ok();
    }

    /// Whether the job is tracked (Enterprise tracking): `custom.track` is `1` or `true`.
    pub fn tracked(&self) -> bool {
        let Some(custom) = &self.custom else {
            return false;
        };
        if !custom.get().contains("\"track\"") {
            return false;
        }
        #[derive(Deserialize)]
        struct Keys {
            track: Option<serde_json::Value>,
        }
        match serde_json::from_str::<Keys>(custom.get()) {
            Ok(Keys {
                track: Some(serde_json::Value::Bool(b)),
            }) => b,
            Ok(Keys {
                track: Some(serde_json::Value::Number(n)),
            }) => n.as_f64() == Some(1.0),
            _ => false,
        }
    }

    /// The job's JSON, as stored and served.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serialises")
    }

    /// Parses a stored job. Stored payloads were written by [`Job::to_json`].
    pub fn from_stored(text: &str) -> Result<Job, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// `retry` with the default applied.
    pub fn retry_limit(&self) -> i64 {
        self.retry.unwrap_or(DEFAULT_RETRY)
    }

    /// Is this (validated) PUSH a retry of the push that stored `stored` under the same jid?
    ///
    /// A producer whose connection dropped (or whose server crashed) cannot know whether its
    /// PUSH committed, and client libraries retry with the same jid. Such a push names the same
    /// job: same jid, jobtype and queue, and args equal as JSON values (so formatting does not
    /// matter). It is answered `+OK` and changes nothing, whatever became of the stored job
    /// (enqueued, working, scheduled, retrying or dead). Any other job under a taken jid is a
    /// duplicate ([`PushError::DuplicateJid`]). Other fields (`at`, `custom`, `retry`,
    /// `created_at`, ...) are not compared: a retry may stamp them afresh, and the stored job
    /// has moved on since (its `failure`, its `enqueued_at`).
    pub fn is_retried_push_of(&self, stored: &Job) -> bool {
        fn value(args: &Option<Box<RawValue>>) -> Option<serde_json::Value> {
            args.as_ref()
                .and_then(|a| serde_json::from_str(a.get()).ok())
        }
        self.jid == stored.jid
            && self.jobtype == stored.jobtype
            && self.queue == stored.queue
            && match (value(&self.args), value(&stored.args)) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
    }
}

fn is_empty_object(text: &str) -> bool {
    let inner = text.trim();
    inner.starts_with('{') && inner.ends_with('}') && inner[1..inner.len() - 1].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn push(text: &str) -> Result<(Job, Option<Millis>), PushError> {
        Job::parse_for_push(text, NOW)
    }

    #[test]
    fn a_retried_push_is_the_same_jid_jobtype_queue_and_args() {
        let stored = push(
            r#"{"jid":"retried-1","jobtype":"T","queue":"q","args":[1,{"a":"b","c":[2]}],"custom":{"x":1}}"#,
        )
        .unwrap()
        .0;
        let again = |text: &str| push(text).unwrap().0.is_retried_push_of(&stored);
        // Formatting, key order, other fields: still the same job.
        assert!(again(
            r#"{"jid":"retried-1","jobtype":"T","queue":"q","args":[ 1, {"c":[2], "a":"b"} ],"retry":3,"at":"2030-01-01T00:00:00Z"}"#
        ));
        // Another jobtype, queue or args, or another jid: another job.
        assert!(!again(
            r#"{"jid":"retried-1","jobtype":"U","queue":"q","args":[1,{"a":"b","c":[2]}]}"#
        ));
        assert!(!again(
            r#"{"jid":"retried-1","jobtype":"T","args":[1,{"a":"b","c":[2]}]}"#
        ));
        assert!(!again(
            r#"{"jid":"retried-1","jobtype":"T","queue":"q","args":[1,{"a":"b","c":[3]}]}"#
        ));
        assert!(!again(
            r#"{"jid":"retried-1","jobtype":"T","queue":"q","args":[1]}"#
        ));
        assert!(!again(
            r#"{"jid":"retried-2","jobtype":"T","queue":"q","args":[1,{"a":"b","c":[2]}]}"#
        ));
        // The default queue is the same as naming it.
        let d = push(r#"{"jid":"retried-3","jobtype":"T","args":[]}"#)
            .unwrap()
            .0;
        let named = push(r#"{"jid":"retried-3","jobtype":"T","queue":"default","args":[]}"#);
        assert!(named.unwrap().0.is_retried_push_of(&d));
    }

    #[test]
    fn nul_is_refused_in_jid_jobtype_and_bid_but_kept_escaped_in_json_content() {
        let err = |text: &str| push(text).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"jid":"nul-\u0000-jid","jobtype":"X","args":[]}"#),
            "jid must not contain NUL (U+0000)"
        );
        assert_eq!(
            err(r#"{"jid":"nul-jobtype","jobtype":"X\u0000","args":[]}"#),
            "jobtype must not contain NUL (U+0000)"
        );
        assert_eq!(
            err(r#"{"jid":"nul-bid-1","jobtype":"X","args":[],"custom":{"bid":"b-\u0000"}}"#),
            "custom.bid must not contain NUL (U+0000)"
        );
        // In args and custom a NUL is JSON content: accepted, and written escaped, so the
        // stored text holds no NUL.
        let (job, _) = push(
            r#"{"jid":"nul-args-1","jobtype":"X","args":["a\u0000b",{"\u0000":0}],"custom":{"note":"\u0000"}}"#,
        )
        .unwrap();
        let json = job.to_json();
        assert!(!json.contains('\0'), "{json}");
        assert!(
            json.contains(r#""args":["a\u0000b",{"\u0000":0}]"#),
            "{json}"
        );
        let back = Job::from_stored(&json).unwrap();
        let args: serde_json::Value = serde_json::from_str(back.args.unwrap().get()).unwrap();
        assert_eq!(args, serde_json::json!(["a\u{0}b", {"\u{0}": 0}]));
    }

    #[test]
    fn fills_defaults() {
        let (job, at) = push(r#"{"jid":"0123456789","jobtype":"X","args":[]}"#).unwrap();
        assert_eq!(at, None);
        assert_eq!(job.retry, Some(25));
        assert_eq!(job.queue, "default");
        assert_eq!(parse_rfc3339(&job.created_at), Ok(NOW));
        assert_eq!(job.created_at.len(), "2023-11-14T22:13:20.000000000Z".len());
        assert_eq!(
            job.to_json(),
            r#"{"retry":25,"jid":"0123456789","queue":"default","jobtype":"X","created_at":"2023-11-14T22:13:20.000999999Z","args":[]}"#
        );
    }

    #[test]
    fn keeps_args_and_custom_verbatim() {
        let text = r#"{"jid":"0123456789","jobtype":"X","args":[12345678901234567890, 1.0, {"a" : "b"}],"custom":{"n":18446744073709551616}}"#;
        let (job, _) = push(text).unwrap();
        let out = job.to_json();
        assert!(
            out.contains(r#""args":[12345678901234567890, 1.0, {"a" : "b"}]"#),
            "{out}"
        );
        assert!(
            out.contains(r#""custom":{"n":18446744073709551616}"#),
            "{out}"
        );
    }

    #[test]
    fn drops_unknown_fields_and_priority() {
        let (job, _) =
            push(r#"{"jid":"0123456789","jobtype":"X","args":[],"priority":5,"zzz":1}"#).unwrap();
        let out = job.to_json();
        assert!(!out.contains("priority") && !out.contains("zzz"), "{out}");
    }

    #[test]
    fn validation_errors_in_faktory_order_and_text() {
        let cases = [
            (
                r#"{"jid":"short","jobtype":"","args":null}"#,
                "jobs must have a reasonable jid parameter",
            ),
            (
                r#"{"jobtype":"X","args":[]}"#,
                "jobs must have a reasonable jid parameter",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"","args":null}"#,
                "jobs must have a jobtype parameter",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"X"}"#,
                "jobs must have an args parameter",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"X","args":null}"#,
                "jobs must have an args parameter",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"X","args":[],"reserve_for":86401}"#,
                "jobs cannot be reserved for more than one day",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"X","args":[],"at":"tomorrow"}"#,
                "invalid timestamp for 'at': \"tomorrow\": premature end of input",
            ),
            (
                r#"{"jid":"0123456789","jobtype":"X","args":[],"queue":"a b"}"#,
                "cannot get \"a b\" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(push(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn json_errors() {
        for text in [
            "{",
            "[]",
            r#"{"jid":"0123456789","jobtype":"X","args":{}}"#,
            r#"{"jid":"0123456789","jobtype":"X","args":[],"retry":1.5}"#,
            r#"{"jid":"0123456789","jobtype":"X","args":[],"reserve_for":"60"}"#,
            r#"{"jid":12345678,"jobtype":"X","args":[]}"#,
            r#"{"jid":"0123456789","jobtype":"X","args":[],"custom":[1]}"#,
        ] {
            let err = push(text).unwrap_err();
            assert!(matches!(err, PushError::InvalidJson(_)), "{text}: {err}");
            assert!(err.to_string().starts_with("invalid JSON: "));
        }
    }

    #[test]
    fn at_is_parsed_and_kept() {
        let (job, at) = push(
            r#"{"jid":"0123456789","jobtype":"X","args":[],"at":"2030-01-01T00:00:00+02:00"}"#,
        )
        .unwrap();
        assert_eq!(at, Some(parse_rfc3339("2029-12-31T22:00:00Z").unwrap()));
        assert_eq!(job.at, "2030-01-01T00:00:00+02:00");
    }

    #[test]
    fn empty_custom_is_omitted() {
        let (job, _) =
            push(r#"{"jid":"0123456789","jobtype":"X","args":[],"custom":{ }}"#).unwrap();
        assert!(!job.to_json().contains("custom"));
    }

    #[test]
    fn reservation_clamping() {
        assert_eq!(reservation_seconds(0), 1800);
        assert_eq!(reservation_seconds(-5), 60);
        assert_eq!(reservation_seconds(1), 60);
        assert_eq!(reservation_seconds(600), 600);
        assert_eq!(reservation_seconds(100_000), 86_400);
    }

    #[test]
    fn queue_names() {
        assert!(valid_queue_name("critical.v2_x-y"));
        assert!(!valid_queue_name(""));
        assert!(!valid_queue_name("a/b"));
        assert!(!valid_queue_name("ü"));
    }

    #[test]
    fn stored_round_trip() {
        let (job, _) = push(r#"{"jid":"0123456789","jobtype":"X","args":[1,2],"reserve_for":600,"backtrace":5,"custom":{"k":"v"}}"#).unwrap();
        let text = job.to_json();
        assert_eq!(Job::from_stored(&text).unwrap().to_json(), text);
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn job(custom: &str) -> Result<Job, PushError> {
        let text =
            format!(r#"{{"jid":"expiry-test-1","jobtype":"T","args":[],"custom":{custom}}}"#);
        Job::parse_for_push(&text, NOW).map(|(j, _)| j)
    }

    #[test]
    fn expires_in_counts_from_the_push_and_expires_at_wins() {
        assert_eq!(
            job(r#"{"expires_in":60}"#).unwrap().expiry(NOW).unwrap(),
            Some(NOW + 60_000)
        );
        assert_eq!(
            job(r#"{"expires_in":1.5}"#).unwrap().expiry(NOW).unwrap(),
            Some(NOW + 1_500)
        );
        assert_eq!(
            job(r#"{"expires_at":"2023-11-14T22:14:20Z"}"#)
                .unwrap()
                .expiry(NOW)
                .unwrap(),
            Some(NOW + 60_000)
        );
        assert_eq!(
            job(r#"{"expires_in":5,"expires_at":"2023-11-14T22:13:21Z"}"#)
                .unwrap()
                .expiry(NOW)
                .unwrap(),
            Some(NOW + 1_000)
        );
        assert_eq!(
            job(r#"{"other":"expires_in"}"#)
                .unwrap()
                .expiry(NOW)
                .unwrap(),
            None
        );
        assert_eq!(
            job(r#"{"expires_in":null}"#).unwrap().expiry(NOW).unwrap(),
            None
        );
        assert_eq!(
            job(r#"{"expires_in":1e300}"#).unwrap().expiry(NOW).unwrap(),
            Some(MAX_MILLIS)
        );
    }

    #[test]
    fn wrong_types_are_refused_at_push() {
        let e = job(r#"{"expires_in":"600"}"#).unwrap_err().to_string();
        assert!(
            e.contains("custom.expires_in") && e.contains("\"600\""),
            "{e}"
        );
        let e = job(r#"{"expires_at":"tomorrow"}"#).unwrap_err().to_string();
        assert!(
            e.contains("custom.expires_at") && e.contains("tomorrow"),
            "{e}"
        );
        let e = job(r#"{"expires_at":12}"#).unwrap_err().to_string();
        assert!(e.contains("custom.expires_at"), "{e}");
    }
}

#[cfg(test)]
mod unique_tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn job(args: &str, queue: &str, custom: &str) -> Result<(Job, Option<Millis>), PushError> {
        let text = format!(
            r#"{{"jid":"unique-test-1","jobtype":"T","queue":"{queue}","args":{args},"custom":{custom}}}"#
        );
        Job::parse_for_push(&text, NOW)
    }

    fn lock(args: &str, queue: &str, custom: &str) -> Option<Uniqueness> {
        let (j, at) = job(args, queue, custom).unwrap();
        j.uniqueness(NOW, at).unwrap()
    }

    #[test]
    fn identity_is_type_queue_and_canonical_args() {
        let a = lock(r#"[1,{"b":2,"a":1}]"#, "q", r#"{"unique_for":60}"#).unwrap();
        let b = lock(r#"[1, {"a":1, "b":2}]"#, "q", r#"{"unique_for":60}"#).unwrap();
        assert_eq!(a.key, b.key, "whitespace and key order do not matter");
        assert_eq!(a.until, NOW + 60_000);
        assert!(!a.release_at_start);
        assert_ne!(a.key, lock("[1]", "q", r#"{"unique_for":60}"#).unwrap().key);
        assert_ne!(
            a.key,
            lock(r#"[1,{"b":2,"a":1}]"#, "other", r#"{"unique_for":60}"#)
                .unwrap()
                .key
        );
        let s = lock("[]", "q", r#"{"unique_for":1.5,"unique_until":"start"}"#).unwrap();
        assert!(s.release_at_start);
        assert_eq!(s.until, NOW + 1_500);
        assert_eq!(lock("[]", "q", r#"{"unique_until":"start"}"#), None);
        assert_eq!(lock("[]", "q", r#"{"note":"unique_for"}"#), None);
    }

    #[test]
    fn scheduled_jobs_hold_the_lock_until_at_plus_unique_for() {
        let text = r#"{"jid":"unique-test-2","jobtype":"T","args":[],"at":"2023-11-14T22:23:20Z","custom":{"unique_for":60}}"#;
        let (j, at) = Job::parse_for_push(text, NOW).unwrap();
        assert_eq!(
            j.uniqueness(NOW, at).unwrap().unwrap().until,
            NOW + 600_000 + 60_000
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (custom, field) in [
            (r#"{"unique_for":"600"}"#, "custom.unique_for"),
            (r#"{"unique_for":0}"#, "custom.unique_for"),
            (r#"{"unique_for":-5}"#, "custom.unique_for"),
            (
                r#"{"unique_for":60,"unique_until":"finish"}"#,
                "custom.unique_until",
            ),
        ] {
            let e = job("[]", "q", custom).unwrap_err().to_string();
            assert!(e.contains(field), "{custom}: {e}");
        }
        assert_eq!(PushError::NotUnique.to_string(), "Job not unique");
        assert_eq!(PushError::NotUnique.code(), "NOTUNIQUE");
    }
}
