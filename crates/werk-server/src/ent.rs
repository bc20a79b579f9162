//! Faktory Enterprise commands: `BATCH NEW|OPEN|COMMIT|STATUS` and `TRACK SET|GET`.
//!
//! Parsing ([`parse_batch`], [`parse_track`]) is pure; the handlers turn a parsed command into
//! one store call and its reply.

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use werk_core::text::no_nul;
use werk_core::time::{format_millis, now_millis, parse_rfc3339};
use werk_core::{Job, Millis};
use werk_protocol::Reply;
use werk_store::{BatchStatus, NewBatch, Store, TrackUpdate, Tracked};

use crate::Shared;

/// A `BATCH` sub-command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCommand {
    /// `BATCH NEW {json}`: the JSON text.
    New(String),
    Open(String),
    Commit(String),
    Status(String),
}

/// A `TRACK` sub-command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackCommand {
    /// `TRACK SET {json}`: the JSON text.
    Set(String),
    Get(String),
}

/// Splits `SUB rest`, the sub-command matched case-insensitively.
fn split(arg: &str) -> (String, &str) {
    let arg = arg.trim_start();
    match arg.split_once(' ') {
        Some((sub, rest)) => (sub.to_ascii_uppercase(), rest.trim()),
        None => (arg.to_ascii_uppercase(), ""),
    }
}

/// An id argument: one non-empty word, without NUL ([`werk_core::text`]).
fn id(rest: &str, what: &'static str, cmd: &str) -> Result<String, String> {
    match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
        [one] => no_nul(what, one)
            .map(|()| one.to_string())
            .map_err(|e| format!("{cmd}: {e}")),
        [] => Err(format!("{cmd} needs a {what}")),
        _ => Err(format!("{cmd} takes one {what}")),
    }
}

/// Parses the text after `BATCH `.
pub fn parse_batch(arg: &str) -> Result<BatchCommand, String> {
    let (sub, rest) = split(arg);
    match sub.as_str() {
        "NEW" if rest.is_empty() => Err("BATCH NEW needs a JSON batch description".into()),
        "NEW" => Ok(BatchCommand::New(rest.to_string())),
        "OPEN" => id(rest, "batch id", "BATCH OPEN").map(BatchCommand::Open),
        "COMMIT" => id(rest, "batch id", "BATCH COMMIT").map(BatchCommand::Commit),
        "STATUS" => id(rest, "batch id", "BATCH STATUS").map(BatchCommand::Status),
        "" => Err("BATCH needs a sub-command: NEW, OPEN, COMMIT or STATUS".into()),
        other => Err(format!(
            "unknown BATCH sub-command {other:?}: expected NEW, OPEN, COMMIT or STATUS"
        )),
    }
}

/// Parses the text after `TRACK `.
pub fn parse_track(arg: &str) -> Result<TrackCommand, String> {
    let (sub, rest) = split(arg);
    match sub.as_str() {
        "SET" if rest.is_empty() => Err("TRACK SET needs a JSON progress update".into()),
        "SET" => Ok(TrackCommand::Set(rest.to_string())),
        "GET" => id(rest, "jid", "TRACK GET").map(TrackCommand::Get),
        "" => Err("TRACK needs a sub-command: SET or GET".into()),
        other => Err(format!(
            "unknown TRACK sub-command {other:?}: expected SET or GET"
        )),
    }
}

/// `Err` if a string the store keeps as text contains NUL ([`werk_core::text`]).
fn nul_free(what: &'static str, text: Option<&str>) -> Result<(), String> {
    no_nul(what, text.unwrap_or_default()).map_err(|e| e.to_string())
}

/// A new batch id: `b-` and 14 URL-safe base64 characters (Faktory's form).
pub fn new_bid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..14)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("b-{tail}")
}

/// A callback job from `BATCH NEW`, with the defaults clients leave out (jid, args, queue)
/// filled in and validated as a PUSH would be.
fn callback(raw: &RawValue, which: &str, now: Millis) -> Result<Job, String> {
    let mut job = Job::decode(raw.get()).map_err(|e| format!("invalid {which} callback: {e}"))?;
    if job.jid.is_empty() {
        job.jid = new_bid().replacen("b-", "cb-", 1);
    }
    if job.args.is_none() {
        job.args = RawValue::from_string("[]".to_string()).ok();
    }
    // Callback jobs are not members of any batch (Faktory's never carry `custom.bid`).
    if let Some(custom) = job.custom.as_ref().filter(|c| c.get().contains("\"bid\"")) {
        let mut map: std::collections::BTreeMap<String, Box<RawValue>> =
            serde_json::from_str(custom.get())
                .map_err(|e| format!("invalid {which} callback: custom: {e}"))?;
        map.remove("bid");
        job.custom = serde_json::value::to_raw_value(&map).ok();
    }
    job.validate_for_push(now)
        .map(|(job, _)| job)
        .map_err(|e| format!("invalid {which} callback: {e}"))
}

/// `BATCH NEW`'s JSON.
#[derive(Deserialize)]
struct NewBatchJson {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parent_bid: Option<String>,
    #[serde(default)]
    success: Option<Box<RawValue>>,
    #[serde(default)]
    complete: Option<Box<RawValue>>,
}

/// Decodes `BATCH NEW`'s JSON into a batch with a fresh bid.
pub fn decode_new_batch(text: &str, now: Millis) -> Result<NewBatch, String> {
    let b: NewBatchJson = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if b.success.is_none() && b.complete.is_none() {
        return Err("a batch needs a success or complete callback job".into());
    }
    nul_free("parent_bid", b.parent_bid.as_deref())?;
    nul_free("description", b.description.as_deref())?;
    Ok(NewBatch {
        bid: new_bid(),
        parent_bid: b.parent_bid.filter(|p| !p.is_empty()),
        description: b.description.filter(|d| !d.is_empty()),
        complete: b
            .complete
            .map(|raw| callback(&raw, "complete", now))
            .transpose()?,
        success: b
            .success
            .map(|raw| callback(&raw, "success", now))
            .transpose()?,
    })
}

/// `BATCH STATUS`'s JSON.
#[derive(Serialize)]
struct StatusJson<'a> {
    bid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_bid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    created_at: String,
    total: u64,
    pending: u64,
    failed: u64,
    complete_st: &'static str,
    success_st: &'static str,
}

pub fn status_json(s: &BatchStatus) -> String {
    serde_json::to_string(&StatusJson {
        bid: &s.bid,
        parent_bid: s.parent_bid.as_deref(),
        description: s.description.as_deref(),
        created_at: s.created_stamp.clone(),
        total: s.total,
        pending: s.pending,
        failed: s.failed,
        complete_st: s.complete_st.wire(),
        success_st: s.success_st.wire(),
    })
    .expect("status serialises")
}

/// `TRACK SET`'s JSON.
#[derive(Deserialize)]
struct TrackSetJson {
    #[serde(default)]
    jid: Option<String>,
    #[serde(default)]
    percent: Option<serde_json::Value>,
    #[serde(default)]
    desc: Option<String>,
    #[serde(default)]
    reserve_until: Option<String>,
}

/// Decodes `TRACK SET`'s JSON.
pub fn decode_track_set(text: &str) -> Result<TrackUpdate, String> {
    let t: TrackSetJson = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let jid = t
        .jid
        .filter(|j| !j.is_empty())
        .ok_or("TRACK SET needs a jid")?;
    nul_free("jid", Some(&jid))?;
    nul_free("desc", t.desc.as_deref())?;
    let percent = match t.percent {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(|p| p.round() as u8)
                .ok_or_else(|| format!("percent must be a number from 0 to 100, not {v}"))?,
        ),
    };
    let reserve_until = match t.reserve_until.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            Some(parse_rfc3339(&s).map_err(|e| format!("invalid reserve_until {s:?}: {e}"))?)
        }
    };
    Ok(TrackUpdate {
        jid,
        percent,
        desc: t.desc,
        reserve_until,
    })
}

/// `TRACK GET`'s JSON; unknown or untracked jobs get `state: "unknown"` and an empty
/// `updated_at`, as Faktory answers.
pub fn tracked_json(jid: &str, t: Option<&Tracked>) -> String {
    #[derive(Serialize)]
    struct Json<'a> {
        jid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        desc: Option<&'a str>,
        state: &'static str,
        updated_at: String,
    }
    let json = match t {
        Some(t) => Json {
            jid,
            percent: t.percent,
            desc: t.desc.as_deref(),
            state: t.state.wire(),
            updated_at: format_millis(t.updated_at),
        },
        None => Json {
            jid,
            percent: None,
            desc: None,
            state: "unknown",
            updated_at: String::new(),
        },
    };
    serde_json::to_string(&json).expect("progress serialises")
}

fn store_error(e: werk_store::StoreError) -> Reply {
    Reply::error(e.to_string())
}

pub async fn batch<S: Store>(shared: &Shared<S>, arg: &str) -> Reply {
    let cmd = match parse_batch(arg) {
        Ok(c) => c,
        Err(e) => return Reply::error(e),
    };
    let store = &shared.store;
    let now = now_millis();
    match cmd {
        BatchCommand::New(text) => {
            let b = match decode_new_batch(&text, now) {
                Ok(b) => b,
                Err(e) => return Reply::error(e),
            };
            let bid = b.bid.clone();
            match store.batch_new(b, now).await {
                Ok(Ok(())) => Reply::bulk(bid),
                Ok(Err(e)) => Reply::error(e.to_string()),
                Err(e) => store_error(e),
            }
        }
        BatchCommand::Open(bid) => match store.batch_open(bid.clone(), now).await {
            Ok(Ok(())) => Reply::bulk(bid),
            Ok(Err(e)) => Reply::error(e.to_string()),
            Err(e) => store_error(e),
        },
        BatchCommand::Commit(bid) => match store.batch_commit(bid, now).await {
            Ok(Ok(())) => Reply::Ok,
            Ok(Err(e)) => Reply::error(e.to_string()),
            Err(e) => store_error(e),
        },
        BatchCommand::Status(bid) => match store.batch_status(bid.clone(), now).await {
            Ok(Some(s)) => Reply::bulk(status_json(&s)),
            Ok(None) => Reply::error(werk_store::BatchError::NoSuchBatch(bid).to_string()),
            Err(e) => store_error(e),
        },
    }
}

pub async fn track<S: Store>(shared: &Shared<S>, arg: &str) -> Reply {
    let cmd = match parse_track(arg) {
        Ok(c) => c,
        Err(e) => return Reply::error(e),
    };
    let now = now_millis();
    match cmd {
        TrackCommand::Set(text) => {
            let update = match decode_track_set(&text) {
                Ok(u) => u,
                Err(e) => return Reply::error(e),
            };
            match shared.store.track_set(update, now).await {
                Ok(_) => Reply::Ok,
                Err(e) => store_error(e),
            }
        }
        TrackCommand::Get(jid) => match shared.store.track_get(jid.clone(), now).await {
            Ok(t) => Reply::bulk(tracked_json(&jid, t.as_ref())),
            Err(e) => store_error(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use werk_store::{CallbackState, TrackState};

    #[test]
    fn parses_sub_commands() {
        assert_eq!(
            parse_batch(r#"NEW {"a": 1}"#),
            Ok(BatchCommand::New(r#"{"a": 1}"#.into()))
        );
        assert_eq!(
            parse_batch("open b-1"),
            Ok(BatchCommand::Open("b-1".into()))
        );
        assert_eq!(
            parse_batch("COMMIT  b-1 "),
            Ok(BatchCommand::Commit("b-1".into()))
        );
        assert_eq!(
            parse_batch("STATUS b-1"),
            Ok(BatchCommand::Status("b-1".into()))
        );
        assert!(parse_batch("").unwrap_err().contains("sub-command"));
        assert!(parse_batch("NEW").unwrap_err().contains("JSON"));
        assert!(parse_batch("OPEN").unwrap_err().contains("batch id"));
        assert!(parse_batch("OPEN a b")
            .unwrap_err()
            .contains("one batch id"));
        assert!(parse_batch("CHILD a b").unwrap_err().contains("CHILD"));
        assert_eq!(parse_track("GET j1"), Ok(TrackCommand::Get("j1".into())));
        assert_eq!(
            parse_track(r#"SET {"jid":"x"}"#),
            Ok(TrackCommand::Set(r#"{"jid":"x"}"#.into()))
        );
        assert!(parse_track("GET").is_err());
        assert!(parse_track("DEL j").is_err());
    }

    #[test]
    fn nul_is_refused_in_ids_and_descriptions() {
        let nul = "must not contain NUL (U+0000)";
        for e in [
            parse_batch("OPEN b-\0").unwrap_err(),
            parse_batch("COMMIT \0").unwrap_err(),
            parse_batch("STATUS b\0x").unwrap_err(),
            parse_track("GET j\0").unwrap_err(),
            decode_new_batch(r#"{"parent_bid":"b-\u0000","complete":{"jobtype":"D"}}"#, 0)
                .unwrap_err(),
            decode_new_batch(r#"{"description":"\u0000","complete":{"jobtype":"D"}}"#, 0)
                .unwrap_err(),
            decode_new_batch(r#"{"complete":{"jobtype":"D\u0000"}}"#, 0).unwrap_err(),
            decode_track_set(r#"{"jid":"j\u0000"}"#).unwrap_err(),
            decode_track_set(r#"{"jid":"j","desc":"half\u0000way"}"#).unwrap_err(),
        ] {
            assert!(e.contains(nul), "{e}");
        }
        assert_eq!(
            parse_batch("OPEN b-\0").unwrap_err(),
            "BATCH OPEN: batch id must not contain NUL (U+0000)"
        );
    }

    #[test]
    fn bids_look_like_faktorys() {
        let a = new_bid();
        assert_eq!(a.len(), 16);
        assert!(a.starts_with("b-"));
        assert!(a[2..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, new_bid());
    }

    #[test]
    fn new_batch_needs_a_callback_and_fills_callback_defaults() {
        let now = 1_700_000_000_000;
        let e = decode_new_batch(r#"{"description":"d"}"#, now).unwrap_err();
        assert!(e.contains("callback"), "{e}");
        assert!(decode_new_batch("{", now)
            .unwrap_err()
            .contains("invalid JSON"));
        let b = decode_new_batch(
            r#"{"bid":"","description":"","parent_bid":"","complete":{"jobtype":"Done"}}"#,
            now,
        )
        .unwrap();
        assert!(b.description.is_none() && b.parent_bid.is_none() && b.success.is_none());
        let cb = b.complete.unwrap();
        assert_eq!(cb.queue, "default");
        assert!(cb.jid.len() >= 8);
        assert_eq!(cb.args.as_ref().unwrap().get(), "[]");
        let b = decode_new_batch(
            r#"{"success":{"jobtype":"T","custom":{"bid":"b-other","keep":[1, 2]}}}"#,
            now,
        )
        .unwrap();
        let custom = b.success.unwrap().custom.unwrap();
        assert_eq!(custom.get(), r#"{"keep":[1, 2]}"#);
        let e = decode_new_batch(r#"{"success":{"jid":"x","jobtype":"T","args":[]}}"#, now)
            .unwrap_err();
        assert!(e.contains("invalid success callback"), "{e}");
    }

    #[test]
    fn status_json_has_faktorys_shape() {
        let s = BatchStatus {
            bid: "b-1".into(),
            parent_bid: None,
            description: Some("d".into()),
            created_at: 0,
            created_stamp: "1970-01-01T00:00:00.000123456Z".into(),
            committed: true,
            total: 3,
            pending: 1,
            failed: 0,
            complete_st: CallbackState::Enqueued,
            success_st: CallbackState::Pending,
        };
        assert_eq!(
            status_json(&s),
            r#"{"bid":"b-1","description":"d","created_at":"1970-01-01T00:00:00.000123456Z","total":3,"pending":1,"failed":0,"complete_st":"1","success_st":""}"#
        );
    }

    #[test]
    fn track_set_json() {
        let u = decode_track_set(
            r#"{"jid":"j1","percent":12,"desc":null,"reserve_until":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(u.percent, Some(12));
        assert_eq!(u.desc, None);
        assert_eq!(u.reserve_until, Some(1_704_067_200_000));
        assert!(decode_track_set(r#"{"percent":1}"#)
            .unwrap_err()
            .contains("jid"));
        assert!(decode_track_set(r#"{"jid":"j","percent":101}"#).is_err());
        assert!(decode_track_set(r#"{"jid":"j","reserve_until":"soon"}"#).is_err());
    }

    #[test]
    fn tracked_json_shapes() {
        assert_eq!(
            tracked_json("j1", None),
            r#"{"jid":"j1","state":"unknown","updated_at":""}"#
        );
        let t = Tracked {
            jid: "j1".into(),
            state: TrackState::Working,
            percent: Some(50),
            desc: Some("half".into()),
            updated_at: 0,
        };
        assert_eq!(
            tracked_json("j1", Some(&t)),
            r#"{"jid":"j1","percent":50,"desc":"half","state":"working","updated_at":"1970-01-01T00:00:00Z"}"#
        );
    }
}
