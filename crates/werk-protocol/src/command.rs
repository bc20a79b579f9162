//! Parsing client command lines (sections 2.3 and 3).
//!
//! [`parse_hello`] handles the single handshake line; [`parse_command`] handles every line after
//! it. Both take a line without its terminator (as produced by [`crate::LineCodec`]), never
//! panic, and return either a typed value or an error whose text is what the server sends.
//!
//! Only the *shape* of each command is checked here (JSON syntax and field types). Domain rules
//! such as jid length, FAIL message truncation or queue-name syntax belong to the layers above.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Longest verb or sub-command (in characters) echoed back in an error message.
const MAX_ECHOED_WORD: usize = 64;

/// Longest payload (in characters) echoed back in an `invalid ACK/FAIL/BEAT` message.
const MAX_ECHOED_PAYLOAD: usize = 1024;

// ---------------------------------------------------------------------------------------------
// HELLO
// ---------------------------------------------------------------------------------------------

/// The handshake sent by the client after `HI` (section 2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version (0–255); `None` when absent or `null` (the Python client omits it).
    pub v: Option<i64>,
    /// Password hash; empty when absent.
    pub pwdhash: String,
    /// Worker process id; empty for producers.
    pub wid: String,
    pub hostname: String,
    pub pid: i64,
    pub labels: Vec<String>,
    /// Sent by Go and Ruby clients; unused by the server.
    pub username: String,
}

/// Why a HELLO line was rejected. Faktory answers neither case; it closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The line does not start with `HELLO {` (e.g. a TLS ClientHello on the plaintext port).
    #[error("expected HELLO")]
    NotHello,
    /// The JSON is malformed or a field has the wrong type.
    #[error("invalid HELLO: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct RawHello {
    v: Option<u8>,
    pwdhash: Option<String>,
    wid: Option<String>,
    hostname: Option<String>,
    pid: Option<i64>,
    labels: Option<Vec<String>>,
    username: Option<String>,
}

/// Parses the handshake line `HELLO {json}`.
///
/// The line must start with exactly the 7 bytes `HELLO {`, else [`HelloError::NotHello`].
/// `null` is treated like an absent field; unknown fields are ignored; a wrong type (including
/// `v` outside 0–255) is [`HelloError::Invalid`].
pub fn parse_hello(line: &[u8]) -> Result<Hello, HelloError> {
    const PREFIX: &[u8] = b"HELLO {";
    if !line.starts_with(PREFIX) {
        return Err(HelloError::NotHello);
    }
    // Keep the '{' that ends the prefix.
    let json = &line[PREFIX.len() - 1..];
    let raw: RawHello = parse_object_bytes(json).map_err(|e| HelloError::Invalid(e.to_string()))?;
    Ok(Hello {
        v: raw.v.map(i64::from),
        pwdhash: raw.pwdhash.unwrap_or_default(),
        wid: raw.wid.unwrap_or_default(),
        hostname: raw.hostname.unwrap_or_default(),
        pid: raw.pid.unwrap_or_default(),
        labels: raw.labels.unwrap_or_default(),
        username: raw.username.unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A command line after the handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    End,
    Flush,
    Info,
    /// The raw JSON text after `PUSH ` (not validated here).
    Push(String),
    /// The raw JSON text after `PUSHB ` (not validated here).
    PushB(String),
    /// Queue names in the order given; `["default"]` when none were given.
    Fetch(Vec<String>),
    Ack(AckArgs),
    Fail(FailArgs),
    Beat(BeatArgs),
    Mutate(MutateArgs),
    Queue(QueueCommand),
    /// The raw text after `BATCH ` (empty when there is none).
    Batch(String),
    /// The raw text after `TRACK ` (empty when there is none).
    Track(String),
    /// Werk's own `LIST {json}` (not Faktory's): one page of the scheduled, retry or dead set,
    /// for `werk retries|scheduled|dead list`. The raw JSON text (empty when there is none).
    List(String),
    /// A HELLO line after the handshake; the server answers with an error.
    Hello,
}

impl Command {
    /// The wire verb, for metrics and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::End => "END",
            Command::Flush => "FLUSH",
            Command::Info => "INFO",
            Command::Push(_) => "PUSH",
            Command::PushB(_) => "PUSHB",
            Command::Fetch(_) => "FETCH",
            Command::Ack(_) => "ACK",
            Command::Fail(_) => "FAIL",
            Command::Beat(_) => "BEAT",
            Command::Mutate(_) => "MUTATE",
            Command::Queue(_) => "QUEUE",
            Command::Batch(_) => "BATCH",
            Command::Track(_) => "TRACK",
            Command::List(_) => "LIST",
            Command::Hello => "HELLO",
        }
    }
}

/// `ACK {"jid":"..."}` (section 3.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckArgs {
    pub jid: String,
}

/// `FAIL {...}` (section 3.8). Values are as sent: trimming, truncation and the `"unknown"`
/// defaults are applied by the domain layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailArgs {
    /// Never empty.
    pub jid: String,
    pub errtype: String,
    pub message: String,
    pub backtrace: Vec<String>,
}

/// `BEAT {...}` (section 3.9). Missing fields default to empty / 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeatArgs {
    pub wid: String,
    pub current_state: String,
    pub rss_kb: i64,
}

/// The `cmd` of a MUTATE command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutateOp {
    Clear,
    Discard,
    Kill,
    Requeue,
}

impl MutateOp {
    /// The wire name (`"clear"`, `"discard"`, `"kill"`, `"requeue"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MutateOp::Clear => "clear",
            MutateOp::Discard => "discard",
            MutateOp::Kill => "kill",
            MutateOp::Requeue => "requeue",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "clear" => MutateOp::Clear,
            "discard" => MutateOp::Discard,
            "kill" => MutateOp::Kill,
            "requeue" => MutateOp::Requeue,
            _ => return None,
        })
    }
}

/// The `target` set of a MUTATE command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MutateTarget {
    Retries,
    Scheduled,
    Dead,
}

impl MutateTarget {
    /// The wire name (`"retries"`, `"scheduled"`, `"dead"`).
    pub fn as_str(self) -> &'static str {
        match self {
            MutateTarget::Retries => "retries",
            MutateTarget::Scheduled => "scheduled",
            MutateTarget::Dead => "dead",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        Some(match s {
            "retries" => MutateTarget::Retries,
            "scheduled" => MutateTarget::Scheduled,
            "dead" => MutateTarget::Dead,
            _ => return None,
        })
    }
}

/// The optional `filter` of a MUTATE command; absent or `null` fields are empty.
/// Matching rules (jids first, then the glob `regexp`, then `jobtype`) are in section 3.11.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutateFilter {
    pub jids: Vec<String>,
    pub regexp: String,
    pub jobtype: String,
}

/// `MUTATE {"cmd":...,"target":...,"filter":{...}}` (section 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutateArgs {
    pub op: MutateOp,
    pub target: MutateTarget,
    /// `None` when `filter` is absent or `null` (for `discard` that means "everything").
    pub filter: Option<MutateFilter>,
}

/// Which queues a QUEUE PAUSE/RESUME/REMOVE applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelector {
    /// `*`: every known queue.
    All,
    /// The named queues, in the order given.
    Names(Vec<String>),
}

/// `QUEUE <SUB> ...` (section 3.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    Pause(QueueSelector),
    Resume(QueueSelector),
    Remove(QueueSelector),
    /// Never empty; wildcards are rejected.
    Latency(Vec<String>),
}

/// A malformed command. The text is what the server sends after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl CommandError {
    fn new(msg: impl Into<String>) -> Self {
        CommandError(msg.into())
    }
}

/// Parses one command line (without its terminator).
///
/// The verb is the text before the first space and is case-sensitive; the argument is
/// everything after that space, so JSON arguments may contain spaces (including MUTATE, unlike
/// Faktory). `END`, `FLUSH` and `INFO` ignore any argument.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line =
        std::str::from_utf8(line).map_err(|_| CommandError::new("invalid UTF-8 in command"))?;
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, Some(arg)),
        None => (line, None),
    };
    match verb {
        "END" => Ok(Command::End),
        "FLUSH" => Ok(Command::Flush),
        "INFO" => Ok(Command::Info),
        "HELLO" => Ok(Command::Hello),
        "PUSH" => Ok(Command::Push(required("PUSH", arg)?.to_owned())),
        "PUSHB" => Ok(Command::PushB(required("PUSHB", arg)?.to_owned())),
        "FETCH" => Ok(Command::Fetch(parse_fetch(arg))),
        "ACK" => parse_ack(required("ACK", arg)?).map(Command::Ack),
        "FAIL" => parse_fail(required("FAIL", arg)?).map(Command::Fail),
        "BEAT" => parse_beat(required("BEAT", arg)?).map(Command::Beat),
        "MUTATE" => parse_mutate(arg).map(Command::Mutate),
        "QUEUE" => parse_queue(arg).map(Command::Queue),
        "BATCH" => Ok(Command::Batch(arg.unwrap_or_default().to_owned())),
        "TRACK" => Ok(Command::Track(arg.unwrap_or_default().to_owned())),
        "LIST" => Ok(Command::List(arg.unwrap_or_default().to_owned())),
        _ => Err(CommandError(format!(
            "unknown command {}",
            truncate_chars(verb, MAX_ECHOED_WORD)
        ))),
    }
}

/// The argument, unless it is missing or blank.
fn required<'a>(verb: &str, arg: Option<&'a str>) -> Result<&'a str, CommandError> {
    match arg {
        Some(arg) if !arg.trim().is_empty() => Ok(arg),
        _ => Err(CommandError(format!("{verb} requires an argument"))),
    }
}

fn parse_fetch(arg: Option<&str>) -> Vec<String> {
    let queues: Vec<String> = words(arg.unwrap_or_default()).map(str::to_owned).collect();
    if queues.is_empty() {
        vec!["default".to_owned()]
    } else {
        queues
    }
}

/// Space-separated words, skipping empty ones (doubled or trailing spaces).
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|w| !w.is_empty())
}

fn invalid(verb: &str, payload: &str) -> CommandError {
    CommandError(format!(
        "invalid {verb} {}",
        truncate_chars(payload, MAX_ECHOED_PAYLOAD)
    ))
}

fn parse_ack(arg: &str) -> Result<AckArgs, CommandError> {
    #[derive(Deserialize)]
    struct Raw {
        jid: String,
    }
    let raw: Raw = parse_object(arg).map_err(|_| invalid("ACK", arg))?;
    Ok(AckArgs { jid: raw.jid })
}

fn parse_fail(arg: &str) -> Result<FailArgs, CommandError> {
    #[derive(Deserialize)]
    struct Raw {
        jid: Option<String>,
        errtype: Option<String>,
        message: Option<String>,
        backtrace: Option<Vec<String>>,
    }
    let raw: Raw = parse_object(arg).map_err(|_| invalid("FAIL", arg))?;
    let jid = raw
        .jid
        .filter(|jid| !jid.is_empty())
        .ok_or_else(|| CommandError::new("missing JID"))?;
    Ok(FailArgs {
        jid,
        errtype: raw.errtype.unwrap_or_default(),
        message: raw.message.unwrap_or_default(),
        backtrace: raw.backtrace.unwrap_or_default(),
    })
}

fn parse_beat(arg: &str) -> Result<BeatArgs, CommandError> {
    #[derive(Deserialize)]
    struct Raw {
        wid: Option<String>,
        current_state: Option<String>,
        rss_kb: Option<i64>,
    }
    let raw: Raw = parse_object(arg).map_err(|_| invalid("BEAT", arg))?;
    Ok(BeatArgs {
        wid: raw.wid.unwrap_or_default(),
        current_state: raw.current_state.unwrap_or_default(),
        rss_kb: raw.rss_kb.unwrap_or_default(),
    })
}

fn parse_mutate(arg: Option<&str>) -> Result<MutateArgs, CommandError> {
    #[derive(Deserialize)]
    struct Raw {
        cmd: Option<String>,
        target: Option<String>,
        filter: Option<Object<RawFilter>>,
    }
    #[derive(Deserialize)]
    struct RawFilter {
        jids: Option<Vec<String>>,
        regexp: Option<String>,
        jobtype: Option<String>,
    }

    let arg = match arg {
        Some(arg) if !arg.trim().is_empty() => arg,
        _ => return Err(CommandError::new("invalid format")),
    };
    let raw: Raw = parse_object(arg).map_err(|e| CommandError(e.to_string()))?;
    let target = raw
        .target
        .as_deref()
        .and_then(MutateTarget::from_wire)
        .ok_or_else(|| CommandError::new("invalid target for mutation command"))?;
    let op = raw
        .cmd
        .as_deref()
        .and_then(MutateOp::from_wire)
        .ok_or_else(|| CommandError::new("unknown mutate operation"))?;
    let filter = raw.filter.map(|Object(f)| MutateFilter {
        jids: f.jids.unwrap_or_default(),
        regexp: f.regexp.unwrap_or_default(),
        jobtype: f.jobtype.unwrap_or_default(),
    });
    Ok(MutateArgs { op, target, filter })
}

fn parse_queue(arg: Option<&str>) -> Result<QueueCommand, CommandError> {
    let mut tokens = words(arg.unwrap_or_default());
    let sub = tokens
        .next()
        .ok_or_else(|| {
            CommandError::new("QUEUE requires a subcommand (PAUSE, RESUME, REMOVE or LATENCY)")
        })?
        .to_uppercase();
    let names: Vec<String> = tokens.map(str::to_owned).collect();

    let selector_command: fn(QueueSelector) -> QueueCommand = match sub.as_str() {
        "PAUSE" => QueueCommand::Pause,
        "RESUME" => QueueCommand::Resume,
        "REMOVE" => QueueCommand::Remove,
        "LATENCY" => {
            if names.is_empty() {
                return Err(CommandError::new(
                    "QUEUE LATENCY requires at least one queue name",
                ));
            }
            if names.iter().any(|n| n == "*") {
                return Err(CommandError::new(
                    "QUEUE LATENCY does not support wildcards",
                ));
            }
            return Ok(QueueCommand::Latency(names));
        }
        _ => {
            return Err(CommandError(format!(
                "no such QUEUE subcommand: {}",
                truncate_chars(&sub, MAX_ECHOED_WORD)
            )))
        }
    };
    if names.is_empty() {
        return Err(CommandError(format!(
            "QUEUE {sub} requires at least one queue name (or *)"
        )));
    }
    let selector = if names.iter().any(|n| n == "*") {
        QueueSelector::All
    } else {
        QueueSelector::Names(names)
    };
    Ok(selector_command(selector))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// At most `max` characters of `s`, with `...` appended when something was cut.
fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        Some((cut, _)) => Cow::Owned(format!("{}...", &s[..cut])),
        None => Cow::Borrowed(s),
    }
}

/// Deserialises `T` from a JSON value that must be an object.
///
/// Derived struct deserialisers also accept JSON arrays (fields by position); this wrapper
/// insists on a map, so `["abc"]` is not a valid ACK.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

fn parse_object<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    serde_json::from_str::<Object<T>>(json).map(|Object(v)| v)
}

fn parse_object_bytes<T: DeserializeOwned>(json: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice::<Object<T>>(json).map(|Object(v)| v)
}

#[cfg(test)]
mod tests;
