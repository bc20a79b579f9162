//! `werk import faktory`: takes over a Faktory server's jobs from its Redis.
//!
//! # Faktory's layout in Redis
//!
//! (From Faktory's `storage/redis.go`, `storage/queue_redis.go`, `storage/sorted_redis.go` and
//! `manager/working.go`.)
//!
//! * SET `queues`: the names of the queues. Each queue is a LIST whose key is `q:` and the
//!   queue's name (Faktory 1.10, checked against the real server; `storage/migration.go`'s
//!   `prefixQueues` renamed the lists from the bare name, which older Faktory data still
//!   uses: the import takes `q:NAME`, else a list named `NAME`). Faktory LPUSHes new jobs and
//!   RPOPs to fetch, so the oldest job is at the tail (index -1). Members are job JSON.
//! * SET `paused`: the names of the paused queues.
//! * ZSETs `scheduled`, `retries` and `dead`: member = job JSON, score = the job's time in unix
//!   seconds (a float): when it runs (scheduled), its next try (retries), when it died (dead).
//! * ZSET `working`: member = a reservation `{"job":{…},"reserved_at":…,"expires_at":…,
//!   "wid":…}`, score = when the reservation expires.
//!
//! # What the import does
//!
//! The sets are read in this order: `working`, the queues (by name), `scheduled`, `retries`,
//! `dead`. Each job is decoded and validated exactly as a PUSH would be
//! ([`Job::decode`], [`Job::validate_for_push`]); its `failure` (retry count, error, backtrace),
//! `created_at`, `enqueued_at`, `args` and `custom` are kept as they are (`args` and `custom`
//! byte for byte). Then it is stored with [`Store::import`]:
//!
//! * a queue's jobs are appended to the Werk queue of the same name, oldest first, so workers
//!   fetch them in the order Faktory would have served them. A job whose `queue` field differs
//!   from the list it sits in goes to the list's queue (where Faktory would have served it);
//! * `scheduled`, `retries` and `dead` jobs go to the same set in Werk, at the ZSET score's time
//!   (a retry keeps its retry count, so its backoff and its remaining tries go on from there);
//! * the jobs of `working` are enqueued again (their reservations belonged to the old server
//!   and its workers), before the queues' jobs: they were fetched before any job still waiting;
//! * queues paused in Faktory are paused in Werk after their first jobs are stored (a queue
//!   Werk does not know yet, because no job of it was stored, cannot be paused and is named in
//!   the summary).
//!
//! # Guarantees
//!
//! * **Read-only on Redis.** Only SMEMBERS, TYPE, LLEN, ZCARD, LRANGE and ZRANGE are sent:
//!   Faktory's data is never changed, so the import can be tried, checked and run again, and
//!   Faktory can be started again on the same Redis if needed.
//! * **Bounded memory.** Lists and sorted sets are read in pages of [`PAGE`] members (a list
//!   from its tail with negative indices, a sorted set by rank) and stored in chunks of at most
//!   [`PAGE`] jobs and [`CHUNK_BYTES`] bytes, one store commit per chunk.
//! * **Nothing stored twice.** A jid already stored in Werk is left as it is and counted as
//!   "already stored": an interrupted import is finished by running it again. (A job Werk has
//!   meanwhile run to completion is no longer stored, so run the import before workers start.)
//! * **Nothing dropped silently.** A job Werk refuses (not JSON, no jobtype, invalid queue
//!   name, …) is listed with its set, its jid when it has one and the reason; the rest goes on
//!   and the exit status is non-zero.
//! * **A consistent copy needs a stopped Faktory.** Stop Faktory (or at least its producers and
//!   workers) first: sizes are compared before and after, and a change is reported as an error.
//! * **The embedded store is locked by a running `werk serve`**: stop it first, or import into
//!   PostgreSQL with `--database-url`, which running servers share.
//!
//! `--dry-run` reads and validates everything and reports what would be stored, without opening
//! the Werk store at all.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use redis::Value;
use serde::Deserialize;
use serde_json::value::RawValue;
use werk_core::time::{now_millis, MAX_MILLIS};
use werk_core::{Job, JobState, Millis};
use werk_server::QueueSignals;
use werk_store::{ImportOutcome, ImportedJob, QueueSelector, Store, StoreConfig};
use werk_store_sqlite::{OpenError, SqliteOptions, SqliteStore};

/// Members read from Redis per command, and most jobs per store commit.
pub const PAGE: usize = 500;
/// Most job bytes per store commit (a chunk is committed early when its jobs are this large).
pub const CHUNK_BYTES: usize = 16 << 20;
/// Refused jobs printed in the summary (the total is always printed).
const MAX_REFUSED_LINES: usize = 100;

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: ImportSource,
}

#[derive(Subcommand)]
enum ImportSource {
    /// Take over a Faktory server's jobs from its Redis (read-only): queues (oldest first),
    /// scheduled, retries, dead, and the jobs in progress (enqueued again). Stop Faktory first.
    Faktory(FaktoryArgs),
}

#[derive(Args)]
struct FaktoryArgs {
    /// Faktory's Redis: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `unix:///path/to/redis.sock`
    /// (`?db=N` selects a database).
    #[arg(long, value_name = "URL")]
    redis: String,
    /// Directory of the embedded store to import into (no `werk serve` may be running on it).
    #[arg(short = 'd', long = "data-dir", default_value = "./werk-data")]
    data_dir: PathBuf,
    /// Import into this PostgreSQL database instead of the embedded store (as `werk serve
    /// --database-url`; servers on it may keep running). Also `[storage] url` in conf.d.
    #[arg(
        long,
        env = "WERK_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Configuration directory whose conf.d may name the database (`[storage] url`) [default:
    /// the data directory].
    #[arg(short = 'c', long = "config-dir")]
    config_dir: Option<PathBuf>,
    /// Read and check everything, print what would be stored per set, store nothing (the Werk
    /// store is not opened).
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: ImportArgs) -> Result<()> {
    match args.source {
        ImportSource::Faktory(a) => faktory(a),
    }
}

// -------------------------------------------------------------------------------------------
// Sets and counts
// -------------------------------------------------------------------------------------------

/// Where in Faktory a job was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Working,
    Queue(String),
    Scheduled,
    Retries,
    Dead,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Working => f.write_str("working"),
            Source::Queue(q) => write!(f, "queue {q}"),
            Source::Scheduled => f.write_str("scheduled"),
            Source::Retries => f.write_str("retries"),
            Source::Dead => f.write_str("dead"),
        }
    }
}

impl Source {
    /// The Redis key holding this set.
    fn key(&self) -> &str {
        match self {
            Source::Working => "working",
            Source::Queue(q) => q,
            Source::Scheduled => "scheduled",
            Source::Retries => "retries",
            Source::Dead => "dead",
        }
    }

    /// The Werk state its jobs are stored in.
    fn state(&self) -> JobState {
        match self {
            Source::Working | Source::Queue(_) => JobState::Enqueued,
            Source::Scheduled => JobState::Scheduled,
            Source::Retries => JobState::Retry,
            Source::Dead => JobState::Dead,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, Source::Queue(_))
    }
}

#[derive(Debug, Default, Clone)]
struct Counts {
    /// Members in Redis when the import started.
    size_before: u64,
    /// Members read.
    found: u64,
    stored: u64,
    already: u64,
    refused: u64,
}

/// A job Werk refused, for the summary.
struct Refused {
    source: Source,
    jid: Option<String>,
    /// The start of the member when it has no jid (bad JSON).
    snippet: Option<String>,
    reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.jid, &self.snippet) {
            (Some(jid), _) => write!(f, "{}: jid {jid:?}: {}", self.source, self.reason),
            (None, Some(s)) => write!(
                f,
                "{}: no jid (member starts {s:?}): {}",
                self.source, self.reason
            ),
            (None, None) => write!(f, "{}: no jid: {}", self.source, self.reason),
        }
    }
}

// -------------------------------------------------------------------------------------------
// Decoding Faktory's members
// -------------------------------------------------------------------------------------------

/// A reservation in Faktory's `working` set; only its job matters.
#[derive(Deserialize)]
struct Reservation<'a> {
    #[serde(borrow, default)]
    job: Option<&'a RawValue>,
}

/// Turns one member of `source` into the job to store, or the reason it is refused.
fn decode_member(
    source: &Source,
    member: &[u8],
    score: Option<f64>,
    now: Millis,
) -> std::result::Result<ImportedJob, String> {
    let text = std::str::from_utf8(member).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let job_text = match source {
        Source::Working => {
            let r: Reservation =
                serde_json::from_str(text).map_err(|e| format!("invalid reservation JSON: {e}"))?;
            match r.job {
                Some(j) if j.get().trim() != "null" => j.get(),
                _ => return Err("the reservation has no job".to_string()),
            }
        }
        _ => text,
    };
    let mut job = Job::decode(job_text).map_err(|e| e.to_string())?;
    if let Source::Queue(q) = source {
        // Faktory serves a job from the list it sits in, whatever its `queue` field says.
        if job.queue != *q {
            job.queue = q.clone();
        }
    }
    let (job, _) = job.validate_for_push(now).map_err(|e| e.to_string())?;
    let at = match source {
        Source::Working | Source::Queue(_) => now,
        _ => {
            let score = score.ok_or("no score")?;
            let ms = (score * 1000.0).round();
            if !ms.is_finite() || ms < 0.0 || ms > MAX_MILLIS as f64 {
                return Err(format!("invalid time (score {score})"));
            }
            ms as Millis
        }
    };
    Ok(ImportedJob {
        job,
        state: source.state(),
        at,
    })
}

/// The jid of a refused member, when its JSON has one.
fn loose_jid(source: &Source, member: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(member).ok()?;
    let job = match source {
        Source::Working => v.get("job")?,
        _ => &v,
    };
    job.get("jid")?.as_str().map(str::to_string)
}

fn snippet(member: &[u8]) -> String {
    let s = String::from_utf8_lossy(&member[..member.len().min(60)]).into_owned();
    if member.len() > 60 {
        format!("{s}…")
    } else {
        s
    }
}

// -------------------------------------------------------------------------------------------
// Reading Redis (read-only commands only)
// -------------------------------------------------------------------------------------------

struct Faktory {
    con: redis::Connection,
    /// Each queue's list key, once looked up (see [`Faktory::queue_key`]).
    queue_keys: BTreeMap<String, String>,
}

impl Faktory {
    fn connect(url: &str) -> Result<Faktory> {
        let shown = redact(url);
        let client =
            redis::Client::open(url).with_context(|| format!("invalid Redis URL {shown:?}"))?;
        let con = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .with_context(|| format!("cannot connect to Faktory's Redis at {shown}"))?;
        con.set_read_timeout(Some(Duration::from_secs(120)))
            .context("cannot set the Redis read timeout")?;
        Ok(Faktory {
            con,
            queue_keys: BTreeMap::new(),
        })
    }

    /// A queue's list: `q:NAME` (Faktory 1.10, and any Faktory after the `prefixQueues`
    /// migration of its `storage/migration.go`), else the bare `NAME` (older Faktory data, e.g.
    /// an old `dump.rdb`). An empty queue has no list at all: then `q:NAME`, which reads as
    /// empty.
    fn queue_key(&mut self, name: &str) -> Result<String> {
        if let Some(k) = self.queue_keys.get(name) {
            return Ok(k.clone());
        }
        let prefixed = format!("q:{name}");
        let key = if self.key_type(&prefixed)? == "none" && self.key_type(name)? == "list" {
            name.to_string()
        } else {
            prefixed
        };
        self.queue_keys.insert(name.to_string(), key.clone());
        Ok(key)
    }

    /// The Redis key of `source` in this Faktory's layout.
    fn key(&mut self, source: &Source) -> Result<String> {
        match source {
            Source::Queue(q) => self.queue_key(q),
            other => Ok(other.key().to_string()),
        }
    }

    fn smembers(&mut self, key: &str) -> Result<Vec<String>> {
        let mut v: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query(&mut self.con)
            .with_context(|| format!("SMEMBERS {key}"))?;
        v.sort();
        Ok(v)
    }

    fn key_type(&mut self, key: &str) -> Result<String> {
        let t: String = redis::cmd("TYPE")
            .arg(key)
            .query(&mut self.con)
            .with_context(|| format!("TYPE {key}"))?;
        Ok(t)
    }

    /// The number of members of `source`'s key (0 when it does not exist); an error when the
    /// key is not of the type Faktory gives it.
    fn size(&mut self, source: &Source) -> Result<u64> {
        let key = self.key(source)?;
        let key = key.as_str();
        let want = if source.is_list() { "list" } else { "zset" };
        let t = self.key_type(key)?;
        if t == "none" {
            return Ok(0);
        }
        if t != want {
            bail!("Redis key {key:?} ({source}) is a {t}, not a {want} as Faktory keeps it");
        }
        let cmd = if source.is_list() { "LLEN" } else { "ZCARD" };
        redis::cmd(cmd)
            .arg(key)
            .query(&mut self.con)
            .with_context(|| format!("{cmd} {key}"))
    }

    /// Members `skip..skip+PAGE` of a queue counted from its tail (oldest first).
    fn list_page(&mut self, key: &str, skip: usize) -> Result<Vec<(Vec<u8>, Option<f64>)>> {
        let start = -((skip + PAGE) as i64);
        let stop = -((skip + 1) as i64);
        let mut page: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(start)
            .arg(stop)
            .query(&mut self.con)
            .with_context(|| format!("LRANGE {key} {start} {stop}"))?;
        // LRANGE answers head to tail, i.e. newest first.
        page.reverse();
        Ok(page.into_iter().map(|m| (m, None)).collect())
    }

    /// Members of rank `skip..skip+PAGE` of a sorted set, with their scores.
    fn zset_page(&mut self, key: &str, skip: usize) -> Result<Vec<(Vec<u8>, Option<f64>)>> {
        let (start, stop) = (skip as i64, (skip + PAGE - 1) as i64);
        let reply: Value = redis::cmd("ZRANGE")
            .arg(key)
            .arg(start)
            .arg(stop)
            .arg("WITHSCORES")
            .query(&mut self.con)
            .with_context(|| format!("ZRANGE {key} {start} {stop} WITHSCORES"))?;
        zrange_pairs(reply).with_context(|| format!("ZRANGE {key}: unexpected reply"))
    }
}

/// The (member, score) pairs of a ZRANGE … WITHSCORES reply: a flat array in RESP2, an array
/// of pairs in RESP3.
fn zrange_pairs(reply: Value) -> Result<Vec<(Vec<u8>, Option<f64>)>> {
    let Value::Array(items) = reply else {
        bail!("not an array: {reply:?}");
    };
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(pair) => flat.extend(pair),
            other => flat.push(other),
        }
    }
    if flat.len() % 2 != 0 {
        bail!("an odd number of members and scores");
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        let member = match m {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            other => bail!("a member is not a string: {other:?}"),
        };
        let score = match s {
            Value::Double(d) => Some(d),
            Value::BulkString(b) => std::str::from_utf8(&b).ok().and_then(parse_score),
            Value::SimpleString(s) => parse_score(&s),
            Value::Int(i) => Some(i as f64),
            _ => None,
        };
        out.push((member, score));
    }
    Ok(out)
}

fn parse_score(s: &str) -> Option<f64> {
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// The URL without a password (and without a query, which may hold one), for messages.
fn redact(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

// -------------------------------------------------------------------------------------------
// Where jobs go
// -------------------------------------------------------------------------------------------

/// The Werk store (or nothing, for a dry run).
trait Sink {
    fn import(&mut self, jobs: Vec<ImportedJob>, now: Millis) -> Result<Vec<ImportOutcome>>;
    /// Pauses a queue Werk knows; `false` when it does not pause it (dry run).
    fn pause(&mut self, queue: &str) -> Result<bool>;
}

struct DryRun;

impl Sink for DryRun {
    fn import(&mut self, jobs: Vec<ImportedJob>, _now: Millis) -> Result<Vec<ImportOutcome>> {
        Ok(vec![ImportOutcome::Stored; jobs.len()])
    }
    fn pause(&mut self, _queue: &str) -> Result<bool> {
        Ok(false)
    }
}

/// Imports everything into `store`, then closes it (also after a failure).
fn into_store<S: Store>(
    import: &mut Import,
    redis: &mut Faktory,
    sources: &[Source],
    runtime: &tokio::runtime::Runtime,
    store: &S,
) -> Result<()> {
    let result = import.all(redis, sources, &mut StoreSink { runtime, store });
    runtime.block_on(store.close());
    result
}

struct StoreSink<'a, S: Store> {
    runtime: &'a tokio::runtime::Runtime,
    store: &'a S,
}

impl<S: Store> Sink for StoreSink<'_, S> {
    fn import(&mut self, jobs: Vec<ImportedJob>, now: Millis) -> Result<Vec<ImportOutcome>> {
        let n = jobs.len();
        let outcomes = self
            .runtime
            .block_on(self.store.import(jobs, now))
            .context("storing imported jobs failed (this chunk was not stored)")?;
        if outcomes.len() != n {
            bail!(
                "the store answered {} outcomes for {n} jobs",
                outcomes.len()
            );
        }
        Ok(outcomes)
    }
    fn pause(&mut self, queue: &str) -> Result<bool> {
        self.runtime
            .block_on(
                self.store
                    .set_paused(QueueSelector::Names(vec![queue.to_string()]), true),
            )
            .with_context(|| format!("cannot pause queue {queue}"))?;
        Ok(true)
    }
}

// -------------------------------------------------------------------------------------------
// The import
// -------------------------------------------------------------------------------------------

struct Import {
    counts: BTreeMap<Source, Counts>,
    refused: Vec<Refused>,
    paused_in_faktory: Vec<String>,
    /// Paused queues paused in Werk by this run.
    paused_now: Vec<String>,
    progress: indicatif::ProgressBar,
    /// Set when a chunk could not be stored: the import stops there.
    failed: Option<anyhow::Error>,
}

fn faktory(args: FaktoryArgs) -> Result<()> {
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.clone());
    let database_url = match &args.database_url {
        Some(url) => Some(url.clone()),
        None => {
            let conf = crate::settings::parse(&crate::cron_cmd::read_conf_d(&config_dir)?)
                .map_err(anyhow::Error::msg)?;
            conf.storage_url
        }
    };
    let mut redis = Faktory::connect(&args.redis)?;

    // What is there, before anything is read.
    let queues = redis.smembers("queues")?;
    let paused = redis.smembers("paused")?;
    let mut sources = vec![Source::Working];
    sources.extend(queues.iter().cloned().map(Source::Queue));
    sources.extend([Source::Scheduled, Source::Retries, Source::Dead]);
    let mut counts = BTreeMap::new();
    for s in &sources {
        let size = redis.size(s)?;
        counts.insert(
            s.clone(),
            Counts {
                size_before: size,
                ..Counts::default()
            },
        );
    }
    let total: u64 = counts.values().map(|c| c.size_before).sum();

    let target = match (&database_url, args.dry_run) {
        (_, true) => "nowhere (dry run)".to_string(),
        (Some(_), false) => "the PostgreSQL store".to_string(),
        (None, false) => format!("the embedded store in {}", args.data_dir.display()),
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "Importing {total} jobs from Faktory at {} into {target}",
            redact(&args.redis)
        )?;
        writeln!(
            out,
            "  {} queues{}; scheduled {}, retries {}, dead {}, working {}",
            queues.len(),
            if paused.is_empty() {
                String::new()
            } else {
                format!(" ({} paused: {})", paused.len(), paused.join(", "))
            },
            counts[&Source::Scheduled].size_before,
            counts[&Source::Retries].size_before,
            counts[&Source::Dead].size_before,
            counts[&Source::Working].size_before,
        )?;
    }

    let progress = if std::io::stdout().is_terminal() {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stdout(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} eta {eta} {wide_msg}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut import = Import {
        counts,
        refused: Vec::new(),
        paused_in_faktory: paused,
        paused_now: Vec::new(),
        progress,
        failed: None,
    };

    if args.dry_run {
        import.all(&mut redis, &sources, &mut DryRun)?;
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let signals = Arc::new(QueueSignals::default());
        match &database_url {
            Some(url) => {
                let store = runtime
                    .block_on(werk_store_postgres::PgStore::connect(
                        url,
                        StoreConfig::default(),
                        signals,
                    ))
                    .context("cannot open the PostgreSQL store")?;
                into_store(&mut import, &mut redis, &sources, &runtime, &store)?;
            }
            None => {
                let data_dir = &args.data_dir;
                let store = {
                    let _guard = runtime.enter();
                    SqliteStore::open_with(
                        data_dir,
                        StoreConfig::default(),
                        signals,
                        SqliteOptions::default(),
                    )
                };
                let store = match store {
                    Ok(s) => s,
                    Err(e @ OpenError::Locked(..)) => {
                        return Err(anyhow::Error::new(e).context(format!(
                            "cannot import into {}: a werk server is running on it; stop the \
                             server first or use --database-url",
                            data_dir.display()
                        )))
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("cannot open the store in {}", data_dir.display())))
                    }
                };
                into_store(&mut import, &mut redis, &sources, &runtime, &store)?;
                drop(store);
            }
        }
    }
    import.progress.finish_and_clear();

    // Did Faktory change meanwhile? (Only when the whole import ran.)
    let mut changed = Vec::new();
    if import.failed.is_none() {
        for (s, c) in &import.counts {
            let now = redis.size(s)?;
            if now != c.size_before || c.found != c.size_before {
                changed.push(format!(
                    "{s}: {} members at the start, {} read, {now} now",
                    c.size_before, c.found
                ));
            }
        }
        let queues_now = redis.smembers("queues")?;
        if queues_now != queues {
            changed.push(format!(
                "the set of queues changed: {queues:?} at the start, {queues_now:?} now"
            ));
        }
    }

    import.summary(args.dry_run, &changed)?;
    if let Some(e) = import.failed {
        return Err(e.context("the import stopped; what is listed above as stored is stored"));
    }
    let refused: u64 = import.counts.values().map(|c| c.refused).sum();
    if !changed.is_empty() {
        bail!(
            "Faktory's data changed during the import (is Faktory still running?): stop it and \
             run the import again (jobs already stored are not stored twice)"
        );
    }
    if refused > 0 {
        bail!("{refused} job(s) were refused (listed above)");
    }
    Ok(())
}

impl Import {
    /// Reads and stores every set; a failed chunk stops the import (recorded in `failed`).
    fn all(&mut self, redis: &mut Faktory, sources: &[Source], sink: &mut dyn Sink) -> Result<()> {
        for source in sources {
            if self.failed.is_some() {
                break;
            }
            if self.counts[source].size_before == 0 {
                continue;
            }
            self.progress.set_message(source.to_string());
            if let Err(e) = self.one(redis, source, sink) {
                self.failed = Some(e);
            }
        }
        Ok(())
    }

    fn one(&mut self, redis: &mut Faktory, source: &Source, sink: &mut dyn Sink) -> Result<()> {
        // A queue paused in Faktory is paused in Werk once Werk knows it (its first jobs are
        // stored); unknown queues cannot be paused.
        let mut pause = match source {
            Source::Queue(q) if self.paused_in_faktory.contains(q) => Some(q.clone()),
            _ => None,
        };
        let mut skip = 0;
        loop {
            let page = if source.is_list() {
                let key = redis.key(source)?;
                redis.list_page(&key, skip)?
            } else {
                let key = redis.key(source)?;
                redis.zset_page(&key, skip)?
            };
            if page.is_empty() {
                break;
            }
            let full = page.len() == PAGE;
            skip += page.len();
            let now = now_millis();
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for (member, score) in page {
                self.counts.get_mut(source).expect("counted").found += 1;
                match decode_member(source, &member, score, now) {
                    Ok(job) => {
                        bytes += member.len();
                        chunk.push(job);
                        if bytes >= CHUNK_BYTES {
                            self.store(source, std::mem::take(&mut chunk), now, sink)?;
                            bytes = 0;
                        }
                    }
                    Err(reason) => {
                        let jid = loose_jid(source, &member);
                        self.refused.push(Refused {
                            source: source.clone(),
                            snippet: jid.is_none().then(|| snippet(&member)),
                            jid,
                            reason,
                        });
                        self.counts.get_mut(source).expect("counted").refused += 1;
                        self.progress.inc(1);
                    }
                }
            }
            self.store(source, chunk, now, sink)?;
            let c = &self.counts[source];
            self.progress.set_message(format!(
                "{source}: {} read, {} stored, {} already stored, {} refused",
                c.found, c.stored, c.already, c.refused
            ));
            if self.counts[source].stored > 0 {
                if let Some(q) = pause.take() {
                    if sink.pause(&q)? {
                        self.paused_now.push(q);
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    fn store(
        &mut self,
        source: &Source,
        chunk: Vec<ImportedJob>,
        now: Millis,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        let outcomes = sink.import(chunk, now)?;
        let c = self.counts.get_mut(source).expect("counted");
        for o in outcomes {
            match o {
                ImportOutcome::Stored => c.stored += 1,
                ImportOutcome::AlreadyStored => c.already += 1,
            }
        }
        self.progress.inc(n);
        Ok(())
    }

    fn summary(&self, dry_run: bool, changed: &[String]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let width = self
            .counts
            .keys()
            .map(|s| s.to_string().chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        if dry_run {
            writeln!(
                out,
                "{:<width$}  {:>9}  {:>11}  {:>9}",
                "set", "found", "would store", "refused"
            )?;
        } else {
            writeln!(
                out,
                "{:<width$}  {:>9}  {:>9}  {:>14}  {:>9}",
                "set", "found", "stored", "already stored", "refused"
            )?;
        }
        let mut total = Counts::default();
        let rows = self
            .counts
            .iter()
            .map(|(s, c)| (s.to_string(), c.clone()))
            .collect::<Vec<_>>();
        for (_, c) in &rows {
            total.found += c.found;
            total.stored += c.stored;
            total.already += c.already;
            total.refused += c.refused;
        }
        for (name, c) in rows.iter().chain([("total".to_string(), total)].iter()) {
            if dry_run {
                writeln!(
                    out,
                    "{name:<width$}  {:>9}  {:>11}  {:>9}",
                    c.found, c.stored, c.refused
                )?;
            } else {
                writeln!(
                    out,
                    "{name:<width$}  {:>9}  {:>9}  {:>14}  {:>9}",
                    c.found, c.stored, c.already, c.refused
                )?;
            }
        }
        for q in &self.paused_in_faktory {
            if self.paused_now.contains(q) {
                writeln!(out, "queue {q}: paused in Faktory, paused in Werk")?;
            } else if dry_run {
                writeln!(out, "queue {q}: paused in Faktory, would be paused in Werk")?;
            } else {
                writeln!(
                    out,
                    "queue {q}: paused in Faktory, not paused by this import (no job of it was \
                     stored now); to pause it in Werk: QUEUE PAUSE {q}"
                )?;
            }
        }
        if dry_run {
            writeln!(
                out,
                "dry run: nothing was stored (jobs already in Werk would be left as they are)"
            )?;
        }
        for line in changed {
            writeln!(out, "changed during the import: {line}")?;
        }
        if !self.refused.is_empty() {
            writeln!(out, "refused: {} job(s)", self.refused.len())?;
            for r in self.refused.iter().take(MAX_REFUSED_LINES) {
                writeln!(out, "  {r}")?;
            }
            if self.refused.len() > MAX_REFUSED_LINES {
                writeln!(
                    out,
                    "  … and {} more ({} refused in all)",
                    self.refused.len() - MAX_REFUSED_LINES,
                    self.refused.len()
                )?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:pw@host:6379/2"), "redis://***@host:6379/2");
        assert_eq!(redact("redis://u:pw@host"), "redis://***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("unix:///run/redis.sock?db=1&pass=x"),
            "unix:///run/redis.sock"
        );
    }

    #[test]
    fn zrange_replies_of_both_protocols() {
        let resp2 = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"1.5".to_vec()),
        ]);
        assert_eq!(
            zrange_pairs(resp2).unwrap(),
            vec![(b"a".to_vec(), Some(1.5))]
        );
        let resp3 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"b".to_vec()),
            Value::Double(2.25),
        ])]);
        assert_eq!(
            zrange_pairs(resp3).unwrap(),
            vec![(b"b".to_vec(), Some(2.25))]
        );
    }

    #[test]
    fn decodes_members() {
        let now = 1_700_000_000_000;
        let job = r#"{"jid":"abcdefgh1","jobtype":"T","args":[1],"queue":"q",
            "failure":{"retry_count":3,"failed_at":"2024-01-01T00:00:00Z","message":"boom"},
            "enqueued_at":"2024-01-01T00:00:00.5Z","created_at":"2023-12-31T00:00:00Z"}"#;
        let j = decode_member(&Source::Retries, job.as_bytes(), Some(1700000001.25), now).unwrap();
        assert_eq!(j.state, JobState::Retry);
        assert_eq!(j.at, 1_700_000_001_250);
        assert_eq!(j.job.failure.as_ref().unwrap().retry_count, 3);
        assert_eq!(j.job.enqueued_at, "2024-01-01T00:00:00.5Z");
        assert_eq!(j.job.created_at, "2023-12-31T00:00:00Z");

        let res = format!(r#"{{"job":{job},"reserved_at":"x","expires_at":"y","wid":"w"}}"#);
        let j = decode_member(&Source::Working, res.as_bytes(), Some(1.0), now).unwrap();
        assert_eq!((j.state, j.at), (JobState::Enqueued, now));

        // The list a job sits in wins over its `queue` field.
        let j = decode_member(&Source::Queue("other".into()), job.as_bytes(), None, now).unwrap();
        assert_eq!(j.job.queue, "other");

        let bad = decode_member(
            &Source::Queue("bad queue".into()),
            job.as_bytes(),
            None,
            now,
        );
        assert!(bad.unwrap_err().contains("queue names must match"));
        assert!(decode_member(&Source::Dead, b"{nope", Some(1.0), now).is_err());
        assert!(
            decode_member(&Source::Working, br#"{"wid":"w"}"#, None, now)
                .unwrap_err()
                .contains("no job")
        );
        assert_eq!(
            loose_jid(&Source::Working, res.as_bytes()).as_deref(),
            Some("abcdefgh1")
        );
    }
}
