//! Operating a running server from the shell, over the protocol like any client (issue 14):
//! `werk info`, `werk queue list|pause|resume|clear`, `werk job push`, `werk
//! retries|scheduled|dead list|requeue|delete|kill`, `werk batch status`.
//!
//! The server is `--url` or `FAKTORY_URL` (`tcp://[:PASSWORD@]HOST:PORT`, `tcp+tls://…`), as
//! for every Faktory client. Output is a human table by default, JSON with `--json`. Exit
//! codes: 0 done; 1 the server refused the command (its reason is printed); 2 bad usage;
//! 3 the server could not be reached or the connection failed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{parse_url, Client, Reply, DEFAULT_URL};

/// Exit codes.
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The server: tcp://[:PASSWORD@]HOST:PORT or tcp+tls://… (also FAKTORY_URL).
    #[arg(long, env = "FAKTORY_URL", hide_env_values = true, default_value = DEFAULT_URL, global = true)]
    url: String,
    /// A CA certificate (PEM) to trust for tcp+tls://, besides the system's.
    #[arg(long, value_name = "FILE", global = true)]
    tls_ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: QueueCmd,
}

#[derive(Subcommand, Debug)]
enum QueueCmd {
    /// The queues and their sizes.
    List,
    /// Pause queues (FETCH skips them); `--all` for every queue.
    Pause(QueueNames),
    /// Resume paused queues.
    Resume(QueueNames),
    /// Delete the queues and every job in them.
    Clear(QueueNames),
}

#[derive(Args, Debug)]
struct QueueNames {
    names: Vec<String>,
    /// Every queue.
    #[arg(long, conflicts_with = "names")]
    all: bool,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: JobCmd,
}

#[derive(Subcommand, Debug)]
enum JobCmd {
    /// Push a job; prints its jid.
    Push(PushArgs),
}

#[derive(Args, Debug)]
struct PushArgs {
    /// The job type.
    jobtype: String,
    /// Arguments: each is taken as JSON if it parses (42, true, {"a":1}), else as a string.
    args: Vec<String>,
    #[arg(long, default_value = "default")]
    queue: String,
    /// Run at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
    #[arg(long, conflicts_with = "in")]
    at: Option<String>,
    /// Run after this long: 90s, 15m, 2h, 1d (or plain seconds).
    #[arg(long = "in", value_name = "DURATION")]
    r#in: Option<String>,
    /// Retries before the job dies (-1: dies at once, 0: discarded when it fails).
    #[arg(long, allow_negative_numbers = true)]
    retry: Option<i64>,
    /// The job's `custom` object (JSON).
    #[arg(long, value_name = "JSON")]
    custom: Option<String>,
    /// The jid (default: a new random one).
    #[arg(long)]
    jid: Option<String>,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: SetCmd,
}

#[derive(Subcommand, Debug)]
enum SetCmd {
    /// List the set's jobs (oldest first).
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Move matching jobs to their queues now.
    Requeue(Action),
    /// Delete matching jobs.
    Delete(Action),
    /// Move matching jobs to the dead set.
    Kill(Action),
}

#[derive(Args, Debug, Clone, Default)]
struct Filter {
    /// Only jobs whose JSON matches this Redis glob (e.g. '*user-42*').
    #[arg(long, value_name = "GLOB")]
    filter: Option<String>,
    /// Only jobs of this type.
    #[arg(long, value_name = "TYPE")]
    jobtype: Option<String>,
}

#[derive(Args, Debug)]
struct Action {
    /// These jids only (repeatable).
    #[arg(long = "jid", value_name = "JID")]
    jids: Vec<String>,
    #[command(flatten)]
    filter: Filter,
    /// Act on every job of the set (needed when no filter is given).
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: BatchCmd,
}

#[derive(Subcommand, Debug)]
enum BatchCmd {
    /// A batch's progress.
    Status { bid: String },
}

/// Which set `werk retries|scheduled|dead` acts on: MUTATE's and LIST's target name.
#[derive(Clone, Copy, Debug)]
pub enum Set {
    Retries,
    Scheduled,
    Dead,
}

impl Set {
    fn target(self) -> &'static str {
        match self {
            Set::Retries => "retries",
            Set::Scheduled => "scheduled",
            Set::Dead => "dead",
        }
    }
}

/// Why a command failed, for the exit code.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Runs one shell command and exits with its code.
pub fn exit_with(result: Result<()>) -> ! {
    let code = match &result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<Refused>().is_some() => EXIT_REFUSED,
        Err(e) if e.downcast_ref::<Usage>().is_some() => EXIT_USAGE,
        Err(_) => EXIT_UNREACHABLE,
    };
    if let Err(e) = result {
        eprintln!("werk: {e:#}");
    }
    std::process::exit(code)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(conn: &Conn) -> Result<Client> {
    let target = parse_url(&conn.url).map_err(|e| Usage(format!("{e:#}")))?;
    Client::connect(&target, conn.tls_ca.as_deref()).await
}

/// Sends `line`; `-ERR` becomes [`Refused`].
async fn call(c: &mut Client, line: &str) -> Result<Reply> {
    match c.call(line).await? {
        Reply::Error(e) => Err(Refused(e).into()),
        r => Ok(r),
    }
}

async fn call_json(c: &mut Client, line: &str) -> Result<Value> {
    match call(c, line).await? {
        Reply::Bulk(Some(text)) => serde_json::from_str(&text).context("the answer is not JSON"),
        Reply::Bulk(None) => Ok(Value::Null),
        other => bail!("unexpected answer {other:?}"),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn info(a: InfoArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut c = connect(&a.conn).await?;
        let v = call_json(&mut c, "INFO").await?;
        if a.conn.json {
            print_json(&v);
            return Ok(());
        }
        let f = &v["faktory"];
        let s = &v["server"];
        println!(
            "{} {} (Faktory {} protocol), up {} s, {} connections",
            s["description"].as_str().unwrap_or("server"),
            s["werk_version"].as_str().unwrap_or(""),
            s["faktory_version"].as_str().unwrap_or("?"),
            s["uptime"],
            s["connections"]
        );
        println!(
            "processed {}, failures {}, enqueued {} in {} queues",
            f["total_processed"], f["total_failures"], f["total_enqueued"], f["total_queues"]
        );
        let sets = &f["sets"];
        println!(
            "scheduled {}, retries {}, dead {}, working {}",
            sets["scheduled"], sets["retries"], sets["dead"], sets["working"]
        );
        Ok(())
    })
}

pub fn queue(a: QueueArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut c = connect(&a.conn).await?;
        let names = |n: &QueueNames| -> Result<String> {
            if n.all {
                Ok("*".to_string())
            } else if n.names.is_empty() {
                Err(Usage("name the queues, or --all".into()).into())
            } else {
                Ok(n.names.join(" "))
            }
        };
        let (verb, n) = match &a.cmd {
            QueueCmd::List => {
                let v = call_json(&mut c, "INFO").await?;
                let queues = v["faktory"]["queues"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if a.conn.json {
                    print_json(&Value::Object(queues));
                } else {
                    let rows: Vec<Vec<String>> = queues
                        .iter()
                        .map(|(q, n)| vec![q.clone(), n.to_string()])
                        .collect();
                    table(&["QUEUE", "SIZE"], &rows);
                }
                return Ok(());
            }
            QueueCmd::Pause(n) => ("PAUSE", n),
            QueueCmd::Resume(n) => ("RESUME", n),
            QueueCmd::Clear(n) => ("REMOVE", n),
        };
        call(&mut c, &format!("QUEUE {verb} {}", names(n)?)).await?;
        if a.conn.json {
            print_json(&json!({"ok": true}));
        }
        Ok(())
    })
}

/// `90s`, `15m`, `2h`, `1d` or plain seconds, in milliseconds.
fn duration_ms(text: &str) -> Result<i64> {
    let (num, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| Usage(format!("bad duration {text:?} (use 90s, 15m, 2h, 1d)")))?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "d" => 86400e3,
        _ => return Err(Usage(format!("bad duration unit in {text:?} (ms, s, m, h, d)")).into()),
    };
    Ok((n * scale) as i64)
}

pub fn job(a: JobArgs) -> Result<()> {
    let JobCmd::Push(p) = a.cmd;
    let args: Vec<Value> = p
        .args
        .iter()
        .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())))
        .collect();
    let jid = p.jid.clone().unwrap_or_else(|| {
        use rand::Rng;
        let mut r = rand::rng();
        (0..12)
            .map(|_| format!("{:02x}", r.random::<u8>()))
            .collect()
    });
    let mut job = json!({"jid": jid, "jobtype": p.jobtype, "args": args, "queue": p.queue});
    if let Some(at) = &p.at {
        werk_core::time::parse_rfc3339(at)
            .map_err(|e| Usage(format!("--at {at:?} is not an RFC 3339 time: {e}")))?;
        job["at"] = json!(at);
    }
    if let Some(d) = &p.r#in {
        let at = werk_core::time::now_millis() + duration_ms(d)?;
        job["at"] = json!(werk_core::time::format_millis(at));
    }
    if let Some(r) = p.retry {
        job["retry"] = json!(r);
    }
    if let Some(custom) = &p.custom {
        let v: Value = serde_json::from_str(custom)
            .map_err(|e| Usage(format!("--custom is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(Usage("--custom must be a JSON object".into()).into());
        }
        job["custom"] = v;
    }
    runtime()?.block_on(async {
        let mut c = connect(&a.conn).await?;
        call(&mut c, &format!("PUSH {job}")).await?;
        if a.conn.json {
            print_json(&json!({"jid": jid}));
        } else {
            println!("{jid}");
        }
        Ok(())
    })
}

pub fn set(which: Set, a: SetArgs) -> Result<()> {
    runtime()?.block_on(async {
        let mut c = connect(&a.conn).await?;
        let target = which.target();
        let (cmd, act) = match &a.cmd {
            SetCmd::List { filter, limit } => {
                return list(&mut c, target, filter, *limit, a.conn.json).await;
            }
            SetCmd::Requeue(act) => ("requeue", act),
            SetCmd::Delete(act) => ("discard", act),
            SetCmd::Kill(act) => ("kill", act),
        };
        if matches!((which, cmd), (Set::Dead, "kill")) {
            return Err(Usage("dead jobs are dead already".into()).into());
        }
        let has_filter =
            !act.jids.is_empty() || act.filter.filter.is_some() || act.filter.jobtype.is_some();
        if !has_filter && !act.all {
            return Err(Usage(format!(
                "this acts on every job in {target}: give --jid, --filter or --jobtype, or --all"
            ))
            .into());
        }
        let mut m = json!({"cmd": cmd, "target": target});
        if has_filter {
            let mut f = json!({});
            if !act.jids.is_empty() {
                f["jids"] = json!(act.jids);
            }
            if let Some(g) = &act.filter.filter {
                f["regexp"] = json!(g);
            }
            if let Some(t) = &act.filter.jobtype {
                f["jobtype"] = json!(t);
            }
            m["filter"] = f;
        }
        call(&mut c, &format!("MUTATE {m}")).await?;
        if a.conn.json {
            print_json(&json!({"ok": true}));
        }
        Ok(())
    })
}

/// Pages through LIST (Werk's own command) until `limit` jobs or the end.
async fn list(c: &mut Client, target: &str, f: &Filter, limit: u64, as_json: bool) -> Result<()> {
    let mut jobs: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = json!({"target": target, "limit": (limit - jobs.len() as u64).min(1000)});
        if let Some(g) = &f.filter {
            q["regexp"] = json!(g);
        }
        if let Some(t) = &f.jobtype {
            q["jobtype"] = json!(t);
        }
        if let Some(a) = &after {
            q["after"] = json!(a);
        }
        let page = call_json(c, &format!("LIST {q}")).await?;
        jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
        after = page["next"].as_str().map(str::to_string);
        if after.is_none() || jobs.len() as u64 >= limit {
            break;
        }
    }
    if as_json {
        print_json(&Value::Array(jobs));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|item| {
            let j = &item["job"];
            let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_default();
            let failure = &j["failure"];
            let err = match (failure["errtype"].as_str(), failure["message"].as_str()) {
                (Some(t), Some(m)) => format!("{t}: {m}"),
                (Some(t), None) => t.to_string(),
                (None, Some(m)) => m.to_string(),
                _ => String::new(),
            };
            let mut err: String = err.chars().take(60).collect();
            if failure.is_object() {
                err = format!("[{}] {err}", failure["retry_count"]);
            }
            vec![
                s(&item["at"]),
                s(&j["jid"]),
                s(&j["jobtype"]),
                s(&j["queue"]),
                err,
            ]
        })
        .collect();
    table(&["AT", "JID", "TYPE", "QUEUE", "ERROR"], &rows);
    Ok(())
}

pub fn batch(a: BatchArgs) -> Result<()> {
    let BatchCmd::Status { bid } = &a.cmd;
    runtime()?.block_on(async {
        let mut c = connect(&a.conn).await?;
        let v = call_json(&mut c, &format!("BATCH STATUS {bid}")).await?;
        if a.conn.json {
            print_json(&v);
            return Ok(());
        }
        let s = |k: &str| match &v[k] {
            Value::String(t) => t.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        table(
            &[
                "BID",
                "TOTAL",
                "PENDING",
                "FAILED",
                "COMPLETE",
                "SUCCESS",
                "DESCRIPTION",
            ],
            &[vec![
                s("bid"),
                s("total"),
                s("pending"),
                s("failed"),
                s("complete_st"),
                s("success_st"),
                s("description"),
            ]],
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("90s").unwrap(), 90_000);
        assert_eq!(duration_ms("15m").unwrap(), 900_000);
        assert_eq!(duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(duration_ms("1d").unwrap(), 86_400_000);
        assert_eq!(duration_ms("30").unwrap(), 30_000);
        assert!(duration_ms("5w").is_err());
        assert!(duration_ms("x").is_err());
    }
}
