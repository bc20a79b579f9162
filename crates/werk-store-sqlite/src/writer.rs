//! The single writer: every change goes through one thread that owns the writing connection,
//! takes whatever requests are waiting (up to [`MAX_BATCH`]), applies them in one transaction and
//! commits once (group commit). The callers are answered by the [`Syncer`] once the commit is
//! fsynced, so an answer always means "on disk"; meanwhile the writer goes on with the next
//! batch.
//!
//! If any request of a batch hits a database error, the whole transaction is rolled back and the
//! requests are retried one per transaction, so one bad request (or a full disk) fails only
//! itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;
use werk_core::job::{reservation_seconds, Uniqueness};
use werk_core::retry::apply_failure_with;
use werk_core::time::{format_stamp, local_day};
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, BatchError, CronFire, FailReply, Listener, MutateOp, Mutation, NewBatch, NewJob,
    QueueSelector, QueueStats, Reservation, Stats, StoreConfig, StoreError, StoredJob, Throttle,
    TrackUpdate,
};

use crate::syncer::Syncer;
use crate::Error;

mod ent;

/// Most requests committed together.
pub const MAX_BATCH: usize = 1024;

impl Op {
    /// Whether a caller may run this request on its own thread ([`Writer::run_here`]): the
    /// short, frequent ones, never a bulk change that could hold that thread for long.
    pub fn quick(&self) -> bool {
        match self {
            Op::Push { jobs } => jobs.len() <= 16,
            Op::Ack { .. } | Op::Fail { .. } => true,
            _ => false,
        }
    }
}

pub(crate) enum Op {
    Push {
        jobs: Vec<Prepared>,
    },
    Fetch {
        queues: Vec<String>,
        wid: String,
    },
    Ack {
        jid: String,
    },
    Fail {
        jid: String,
        info: FailInfo,
    },
    Promote {
        limit: usize,
    },
    Reap {
        limit: usize,
    },
    Purge {
        limit: usize,
    },
    Sweep {
        limit: usize,
    },
    Mutate {
        m: Mutation,
    },
    SetPaused {
        sel: QueueSelector,
        paused: bool,
    },
    Remove {
        sel: QueueSelector,
    },
    Flush,
    /// Recounts every queue's and set's size from the jobs and corrects the stored ones
    /// (asked by the background recount of a large database when it found a difference).
    Recount,
    FireCron {
        entry: String,
        tick: Millis,
        job: Box<Prepared>,
    },
    BatchNew {
        batch: Box<NewBatch>,
    },
    BatchOpen {
        bid: String,
    },
    BatchCommit {
        bid: String,
    },
    TrackSet {
        update: TrackUpdate,
    },
    DeleteJobs {
        state: JobState,
        jids: Vec<String>,
    },
    Import {
        jobs: Vec<Imported>,
    },
    /// Reserves again a job whose FETCH was answered before a commit that then failed (see
    /// [`Writer::abort`]); nothing if the job is no longer enqueued.
    Reserve {
        jid: String,
        wid: String,
        expires: Millis,
    },
}

/// An imported job ready to insert ([`werk_store::Store::import`]): its state and `at` (see
/// [`werk_store::ImportedJob`]), its JSON with `enqueued_at` set for an enqueued job.
pub(crate) struct Imported {
    pub jid: String,
    pub queue: String,
    pub jobtype: String,
    pub state: JobState,
    pub at: Millis,
    pub payload: String,
    pub expires: Option<Millis>,
}

impl Imported {
    pub fn new(ij: werk_store::ImportedJob, now: Millis) -> Imported {
        let at = ij.at;
        let mut job = ij.job;
        if ij.state == JobState::Enqueued {
            job.enqueued_at = format_stamp(now);
        }
        Imported {
            expires: job.expiry(now).ok().flatten(),
            payload: job.to_json(),
            jid: job.jid,
            queue: job.queue,
            jobtype: job.jobtype,
            state: ij.state,
            at,
        }
    }
}

/// A job ready to insert: everything that does not need the database (the state it enters,
/// its `enqueued_at`, its JSON) is worked out by the caller, off the writer thread.
pub(crate) struct Prepared {
    pub jid: String,
    pub queue: String,
    pub jobtype: String,
    /// `Some(at)`: scheduled for `at` (in the future); `None`: enqueued at `now`.
    pub scheduled_at: Option<Millis>,
    pub now: Millis,
    pub payload: String,
    /// When the job expires ([`Job::expiry`]).
    pub expires: Option<Millis>,
    /// Its unique-job lock ([`Job::uniqueness`]).
    pub uniq: Option<Uniqueness>,
    /// Its `batch` column: `m:<bid>` for a member (`custom.bid`), `c:`/`s:<bid>` for a
    /// batch's complete/success callback.
    pub batch: Option<String>,
    /// Tracked (`custom.track = 1`).
    pub track: bool,
}

impl Prepared {
    pub fn new(nj: NewJob, now: Millis) -> Prepared {
        let NewJob { mut job, at } = nj;
        let scheduled_at = at.filter(|&at| at > now);
        if scheduled_at.is_none() {
            job.enqueued_at = format_stamp(now);
        }
        let payload = job.to_json();
        // Validated at push; a job that slipped through unvalidated simply never expires.
        let expires = job.expiry(now).ok().flatten();
        let uniq = job.uniqueness(now, scheduled_at).ok().flatten();
        let batch = job.batch_id().ok().flatten().map(|bid| format!("m:{bid}"));
        Prepared {
            expires,
            uniq,
            batch,
            track: job.tracked(),
            jid: job.jid,
            queue: job.queue,
            jobtype: job.jobtype,
            scheduled_at,
            now,
            payload,
        }
    }
}

pub(crate) enum Resp {
    Push(Vec<Result<(), PushError>>),
    Fetch(Option<StoredJob>),
    Ack(AckOutcome),
    Fail(FailReply),
    Count(u64),
    Imported(Vec<werk_store::ImportOutcome>),
    Unit,
    Cron(CronFire),
    Batch(Result<(), BatchError>),
    Bool(bool),
}

pub(crate) struct Request {
    pub op: Op,
    pub now: Millis,
    /// Taken when the request is answered.
    pub reply: Option<oneshot::Sender<Result<Resp, StoreError>>>,
    /// Answer as soon as the change is applied, before its commit (only for FETCH; see
    /// [`Writer::try_batch`]).
    pub early: bool,
}

pub(crate) enum Msg {
    Req(Request),
    /// The syncer finished a flush.
    Synced,
    Close(oneshot::Sender<()>),
    /// A request run on its caller's thread ([`Writer::run_here`]) left a checkpoint due: the
    /// writer's thread runs it, not the caller's.
    Checkpoint,
    /// Makes the writer thread panic (tests of what a panic does: [`crate::SqliteStore::panic_writer`]).
    Panic,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueMem {
    pub size: i64,
    pub paused: bool,
}

/// Sizes and counters, mirrored in memory and persisted with every commit that changes them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mem {
    pub queues: BTreeMap<String, QueueMem>,
    pub scheduled: i64,
    pub working: i64,
    pub retries: i64,
    pub dead: i64,
    pub processed: i64,
    pub failures: i64,
    /// The next enqueue sequence number (FIFO order within queues).
    pub seq: i64,
    /// Jobs dropped because they expired before anyone fetched them.
    pub expired: i64,
}

impl Mem {
    pub fn stats(&self) -> Stats {
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Stats {
            queues: self
                .queues
                .iter()
                .map(|(name, q)| QueueStats {
                    name: name.clone(),
                    size: n(q.size),
                    paused: q.paused,
                })
                .collect(),
            scheduled: n(self.scheduled),
            retries: n(self.retries),
            dead: n(self.dead),
            working: n(self.working),
            processed: n(self.processed),
            failures: n(self.failures),
            expired: n(self.expired),
        }
    }

    const COUNTERS: [&'static str; 8] = [
        "scheduled",
        "working",
        "retries",
        "dead",
        "processed",
        "failures",
        "seq",
        "expired",
    ];

    fn counter_mut(&mut self, name: &str) -> Option<&mut i64> {
        Some(match name {
            "scheduled" => &mut self.scheduled,
            "working" => &mut self.working,
            "retries" => &mut self.retries,
            "dead" => &mut self.dead,
            "processed" => &mut self.processed,
            "failures" => &mut self.failures,
            "seq" => &mut self.seq,
            "expired" => &mut self.expired,
            _ => return None,
        })
    }

    fn counter(&self, name: &str) -> i64 {
        match name {
            "scheduled" => self.scheduled,
            "working" => self.working,
            "retries" => self.retries,
            "dead" => self.dead,
            "processed" => self.processed,
            "failures" => self.failures,
            "seq" => self.seq,
            "expired" => self.expired,
            _ => 0,
        }
    }

    fn scalars(&self) -> [i64; 8] {
        Mem::COUNTERS.map(|name| self.counter(name))
    }

    fn set_scalars(&mut self, values: [i64; 8]) {
        for (name, v) in Mem::COUNTERS.into_iter().zip(values) {
            if let Some(slot) = self.counter_mut(name) {
                *slot = v;
            }
        }
    }

    /// Recounts the queues' and sets' sizes from the jobs themselves (through their indexes)
    /// and corrects the mirror where the stored counts drifted; returns what was corrected.
    /// FETCH trusts a queue's size, so a drifted size would strand its jobs for good.
    pub fn verify(&mut self, conn: &Connection) -> rusqlite::Result<Vec<String>> {
        let mut fixed = Vec::new();
        let mut actual: BTreeMap<String, i64> = BTreeMap::new();
        let mut stmt =
            conn.prepare("SELECT queue, count(*) FROM jobs WHERE state = 1 GROUP BY queue")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (name, n) = row?;
            actual.insert(name, n);
        }
        for (name, q) in self.queues.iter_mut() {
            let n = actual.remove(name).unwrap_or(0);
            if q.size != n {
                fixed.push(format!("queue {name:?}: {} -> {n}", q.size));
                q.size = n;
            }
        }
        for (name, n) in actual {
            fixed.push(format!("queue {name:?}: missing -> {n}"));
            self.queues.insert(
                name,
                QueueMem {
                    size: n,
                    paused: false,
                },
            );
        }
        let mut sets = [0i64; 5];
        let mut stmt =
            conn.prepare("SELECT state, count(*) FROM jobs WHERE state <> 1 GROUP BY state")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (code, n) = row?;
            if let Some(slot) = usize::try_from(code).ok().and_then(|c| sets.get_mut(c)) {
                *slot = n;
            }
        }
        let codes = [
            (JobState::Scheduled, "scheduled"),
            (JobState::Working, "working"),
            (JobState::Retry, "retries"),
            (JobState::Dead, "dead"),
        ];
        for (state, name) in codes {
            let n = sets[state.code() as usize];
            let slot = self.counter_mut(name).expect("a counter");
            if *slot != n {
                fixed.push(format!("{name}: {} -> {n}", *slot));
                *slot = n;
            }
        }
        // The enqueue sequence must stay ahead of every queued job's score (FIFO order).
        let max: Option<i64> =
            conn.query_row("SELECT max(score) FROM jobs WHERE state = 1", [], |r| {
                r.get(0)
            })?;
        if let Some(max) = max.filter(|&m| m >= self.seq) {
            fixed.push(format!("seq: {} -> {}", self.seq, max + 1));
            self.seq = max + 1;
        }
        Ok(fixed)
    }

    /// Writes the whole mirror's sizes and counters (after [`Mem::verify`] corrected them).
    pub fn store(&self, conn: &Connection) -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        tx.execute("DELETE FROM queues", [])?;
        for (name, q) in &self.queues {
            tx.execute(
                "INSERT INTO queues (name, size, paused) VALUES (?1, ?2, ?3)",
                params![name, q.size, q.paused],
            )?;
        }
        for name in Mem::COUNTERS {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, self.counter(name)],
            )?;
        }
        tx.commit()
    }

    /// Loads the mirror from the database.
    pub fn load(conn: &Connection) -> rusqlite::Result<Mem> {
        let mut mem = Mem::default();
        let mut stmt = conn.prepare("SELECT name, size, paused FROM queues")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })?;
        for row in rows {
            let (name, size, paused) = row?;
            mem.queues.insert(name, QueueMem { size, paused });
        }
        let mut stmt = conn.prepare("SELECT name, value FROM counters")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (name, value) = row?;
            if let Some(slot) = mem.counter_mut(&name) {
                *slot = value;
            }
        }
        Ok(mem)
    }
}

/// What one batch changed, to persist before its commit and announce after it.
#[derive(Default)]
pub(crate) struct Batch {
    queues: BTreeSet<String>,
    history: BTreeMap<String, (i64, i64)>,
    notify: Vec<String>,
    /// How to undo the current request's changes to the mirror and to this batch, should the
    /// request fail (its SQL is undone by `ROLLBACK TO` its savepoint).
    undo: Undo,
    /// Set by a FETCH that took a job enqueued within the open transaction (see
    /// [`Writer::apply_round`]).
    fresh: bool,
}

/// Everything FLUSH replaces, as it was: the mirror, the batch's touched queues and its history.
type WholeState = (Mem, BTreeSet<String>, BTreeMap<String, (i64, i64)>);

/// The state before the current request, for [`Writer::undo`].
#[derive(Default)]
struct Undo {
    /// [`Mem::COUNTERS`] before the request.
    scalars: [i64; 8],
    /// Queues as they were before the request first touched them (`None`: did not exist).
    queues: Vec<(String, Option<QueueMem>)>,
    /// Taken by FLUSH, which replaces the whole mirror.
    whole: Option<Box<WholeState>>,
    /// `Batch::history` before the request first counted a processed job.
    history: Option<BTreeMap<String, (i64, i64)>>,
    /// `Batch::notify`'s length before the request.
    notify: usize,
}

/// A FETCH answered before its commit: if that commit fails, its reservation is made again
/// (see [`Writer::abort`]), so the job is not handed to a second worker.
struct Answered {
    jid: String,
    wid: String,
    now: Millis,
    expires: Millis,
}

/// The open transaction: requests applied but not yet committed.
#[derive(Default)]
struct Open {
    /// Requests to answer at (or after) the commit, with their results.
    reqs: Vec<Request>,
    results: Vec<Resp>,
    /// FETCHes already answered.
    answered: Vec<Answered>,
    ctx: Batch,
    /// The mirror before the transaction began.
    saved: Mem,
}

/// How a request failed.
enum Failure {
    /// Only this request was undone (rolled back to its savepoint); the transaction goes on.
    Request(Error),
    /// The whole transaction is gone (SQLite rolls back by itself on some errors, such as a
    /// full disk, or the savepoint could not be handled).
    Transaction(Error),
}

/// A stored job as the writer reads it to move it.
struct Row {
    id: i64,
    queue: String,
    payload: String,
    /// The `batch` column.
    batch: Option<String>,
    track: bool,
}

/// An enqueued job [`Writer::reserve_row`] reserves.
struct Reserved<'a> {
    id: i64,
    jid: &'a str,
    queue: &'a str,
    uniq: Option<&'a str>,
    track: bool,
}

/// The columns [`Row::read`] reads.
const ROW: &str = "id, queue, payload, batch, track";

impl Row {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            queue: r.get(1)?,
            payload: r.get(2)?,
            batch: r.get(3)?,
            track: r.get::<_, Option<i64>>(4)?.is_some(),
        })
    }
}

/// The writer and whether its thread is idle, shared by that thread and the callers that run
/// a request themselves ([`Writer::run_here`]) when it is.
pub(crate) struct Core {
    pub writer: Writer,
    /// The thread waits for a message with no transaction open and no flush running.
    pub idle: bool,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub config: StoreConfig,
    pub listener: Listener,
    pub mem: Mem,
    pub published: Arc<Mutex<Mem>>,
    /// The last batch failed to commit: answer FETCH only after commit until one succeeds.
    pub degraded: bool,
    /// Answers committed batches once they are durable.
    pub syncer: Syncer,
    /// The throttles FETCH obeys ([`werk_store::Store::set_throttles`]).
    pub throttles: Arc<Mutex<Vec<Throttle>>>,
    pub metrics: crate::SqliteMetrics,
    /// `Mem::seq` when the open transaction began: a queued job whose score is at least this
    /// was enqueued within it.
    pub txn_seq: i64,
    /// Pages in the WAL after the last commit (set by the connection's WAL hook).
    pub wal_pages: Arc<AtomicI64>,
}

/// The `uniq` column: the lock key, prefixed `start:` or `success:` by when it is released.
fn uniq_column(u: &Uniqueness) -> String {
    let when = if u.release_at_start {
        "start"
    } else {
        "success"
    };
    format!("{when}:{}", u.key)
}

fn lock_key(column: &str) -> &str {
    column.split_once(':').map_or(column, |(_, key)| key)
}

/// Registers `redis_match(pattern, text)`: MUTATE's `filter.regexp`, a Redis glob
/// ([`werk_core::glob::redis_match`]) over the job's JSON as stored and served; registered on
/// the writer's connection at open.
pub(crate) fn register_redis_match(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    fn bytes<'a>(v: ValueRef<'a>) -> &'a [u8] {
        match v {
            ValueRef::Text(b) | ValueRef::Blob(b) => b,
            _ => &[],
        }
    }
    conn.create_scalar_function(
        "redis_match",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(werk_core::glob::redis_match(
                bytes(ctx.get_raw(0)),
                bytes(ctx.get_raw(1)),
            ))
        },
    )
}

fn state_code(s: JobState) -> i64 {
    s.code()
}

fn describe(state: Option<JobState>) -> &'static str {
    match state {
        Some(JobState::Scheduled) => "scheduled",
        Some(JobState::Enqueued) => "enqueued",
        Some(JobState::Working) => "working",
        Some(JobState::Retry) => "in the retry set",
        Some(JobState::Dead) => "dead",
        None => "stored",
    }
}

/// Logs what [`Mem::verify`] corrected.
pub(crate) fn warn_rebuilt(fixed: &[String]) {
    tracing::warn!(
        corrected = %fixed.join(", "),
        "stored queue and set sizes did not match the stored jobs; rebuilt them"
    );
}

impl Writer {
    /// Runs until a close request arrives or every sender is gone.
    ///
    /// Requests are applied as they arrive, into one open transaction; that transaction is
    /// committed as soon as the syncer is idle (or it holds [`MAX_BATCH`] requests), so the
    /// requests that arrive during one flush are applied meanwhile and share the next flush.
    /// When no other request is waiting at the commit, the writer flushes the WAL itself
    /// instead (nothing could be applied during that flush anyway).
    ///
    /// Why: at low concurrency a hand-off to a sleeping syncer and its `Synced` back are two
    /// wake-ups per request, each costly on a virtual machine. Measured side by side (issue 15,
    /// 2026-12-03): mixed at 10 connections 5,958 → 7,070 jobs/s, PUSH at 1 connection 3,608
    /// → 3,789; PUSH at 10 and mixed at 100 connections unchanged.
    ///
    /// The thread holds the lock of `core` except while it sleeps with nothing open and no
    /// flush running (`Core::idle`): a lone quick request may then be run by its caller
    /// ([`Writer::run_here`]), which leaves nothing open behind it either.
    pub fn run(core: Arc<Mutex<Core>>, rx: Receiver<Msg>) {
        fn lock(core: &Mutex<Core>) -> std::sync::MutexGuard<'_, Core> {
            core.lock().unwrap_or_else(|p| p.into_inner())
        }
        let mut guard = lock(&core);
        guard.idle = false;
        let mut closing: Option<oneshot::Sender<()>> = None;
        let mut open: Option<Open> = None;
        let mut flushing = false;
        let mut stash: Option<Msg> = None;
        loop {
            let mut incoming = Vec::new();
            let received = match stash.take() {
                Some(msg) => Ok(msg),
                // Nothing open, nothing flushing: callers may run requests themselves while
                // this thread sleeps ([`Writer::run_here`]).
                None if open.is_none() && !flushing => {
                    guard.idle = true;
                    drop(guard);
                    let msg = rx.recv();
                    guard = lock(&core);
                    guard.idle = false;
                    msg
                }
                None => rx.recv(),
            };
            let this = &mut guard.writer;
            let mut handle = |msg: Msg, incoming: &mut Vec<Request>| match msg {
                Msg::Req(r) => incoming.push(r),
                Msg::Synced => flushing = false,
                // Only a wake-up: the checkpoint below runs whenever one is due.
                Msg::Checkpoint => {}
                Msg::Close(done) => closing = Some(done),
                Msg::Panic => panic!("panic requested by SqliteStore::panic_writer"),
            };
            match received {
                Ok(msg) => handle(msg, &mut incoming),
                Err(_) => break,
            }
            let held = open.as_ref().map_or(0, |o| o.reqs.len());
            while held + incoming.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => handle(msg, &mut incoming),
                    Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
                }
            }
            if !incoming.is_empty() {
                this.apply_round(&mut open, incoming);
            }
            let full = open.as_ref().is_some_and(|o| o.reqs.len() >= MAX_BATCH);
            if open.is_some() && (!flushing || full || closing.is_some()) {
                // Nothing else to apply and no flush running: nothing would overlap with a
                // flush by the syncer, so flush here and spare the two thread hand-offs (a
                // peeked message waits in `stash` for the next round).
                let here = !flushing
                    && match rx.try_recv() {
                        Ok(msg) => {
                            stash = Some(msg);
                            false
                        }
                        Err(_) => true,
                    };
                flushing |= this.commit(open.take().expect("checked"), here);
            }
            // After its commits (their answers with the syncer, so no COMMIT waits for it), or
            // when woken for a checkpoint a caller's commit left due ([`Msg::Checkpoint`]).
            if open.is_none() {
                this.checkpoint();
            }
            if closing.is_some() {
                break;
            }
        }
        let this = &mut guard.writer;
        if let Some(o) = open.take() {
            this.commit(o, false);
        }
        // Requests that raced with close: answer them so no caller waits forever.
        while let Some(msg) = stash.take().or_else(|| rx.try_recv().ok()) {
            match msg {
                Msg::Req(r) => this.run_single(r),
                Msg::Synced | Msg::Checkpoint | Msg::Panic => {}
                Msg::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        // Flush and answer everything committed before the final checkpoint.
        this.syncer.finish();
        if let Err(e) = crate::checkpoint::checkpoint(&this.conn, "TRUNCATE") {
            crate::checkpoint::fatal_or_retry(&e, "the checkpoint at close");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Applies requests into the open transaction (beginning one if needed), each under its own
    /// savepoint: a request that fails is undone alone and answered with its error, the others
    /// stay applied.
    ///
    /// An early FETCH ([`werk_store::Store::fetch_early`]) is answered once applied, before the
    /// commit and its fsync, when the job it took was enqueued by an earlier, committed
    /// transaction: the state machine allows it because a crash (or a failed commit) before
    /// then only leaves the job enqueued, to be delivered again — at-least-once, never lost.
    /// Workers so skip one fsync per job. A job enqueued within the open transaction (a PUSH
    /// or promotion not yet committed) is answered right after the commit instead: handing it
    /// out earlier could start a job whose PUSH then fails. PUSH, ACK, FAIL and every other
    /// change are answered after the fsync. After a failed commit (a full disk, say) FETCH
    /// waits for its commit until one succeeds, so it is refused instead of handing out a job
    /// it cannot reserve.
    ///
    /// Sizes are published and waiting FETCHes woken only after the commit ([`Writer::commit`]).
    fn apply_round(&mut self, open: &mut Option<Open>, incoming: Vec<Request>) {
        if open.is_none() {
            if let Err(e) = self
                .conn
                .prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut s| s.execute([]))
            {
                self.abort(None, incoming, Vec::new(), e.into());
                return;
            }
            self.txn_seq = self.mem.seq;
            *open = Some(Open {
                saved: self.mem.clone(),
                ..Open::default()
            });
        }
        let Some(mut o) = open.take() else { return };
        let mut incoming = incoming.into_iter();
        while let Some(mut req) = incoming.next() {
            match self.apply_one(&req, &mut o.ctx) {
                Ok(resp) => {
                    if req.early && !self.degraded && !o.ctx.fresh {
                        if let Resp::Fetch(Some(job)) = &resp {
                            // What the worker now knows is published at once (INFO right
                            // after the FETCH shows the job working), the rest at the commit.
                            self.publish_reserved(&job.queue);
                            if let Some(r) = &job.reservation {
                                o.answered.push(Answered {
                                    jid: job.jid.clone(),
                                    wid: r.wid.clone(),
                                    now: r.reserved_at,
                                    expires: r.expires_at,
                                });
                            }
                        }
                        if let Some(reply) = req.reply.take() {
                            let _ = reply.send(Ok(resp));
                        }
                        continue;
                    }
                    o.reqs.push(req);
                    o.results.push(resp);
                }
                Err(Failure::Request(e)) => {
                    let err = e.into_store_error();
                    tracing::error!(error = %err, "store request failed; it changed nothing");
                    if let Some(reply) = req.reply.take() {
                        let _ = reply.send(Err(err));
                    }
                }
                Err(Failure::Transaction(e)) => {
                    let mut all = o.reqs;
                    all.push(req);
                    all.extend(incoming);
                    self.abort(Some(o.saved), all, o.answered, e);
                    return;
                }
            }
        }
        *open = Some(o);
    }

    /// Applies one request under a savepoint; on failure undoes it alone.
    fn apply_one(&mut self, req: &Request, ctx: &mut Batch) -> Result<Resp, Failure> {
        ctx.undo = Undo {
            scalars: self.mem.scalars(),
            notify: ctx.notify.len(),
            ..Undo::default()
        };
        ctx.fresh = false;
        let stmt = |w: &Writer, sql: &str| -> Result<(), Error> {
            w.conn.prepare_cached(sql)?.execute([])?;
            Ok(())
        };
        stmt(self, "SAVEPOINT req").map_err(Failure::Transaction)?;
        match self.apply(&req.op, req.now, ctx) {
            Ok(resp) => {
                stmt(self, "RELEASE req").map_err(Failure::Transaction)?;
                Ok(resp)
            }
            Err(e) => {
                if self.conn.is_autocommit() {
                    return Err(Failure::Transaction(e));
                }
                if stmt(self, "ROLLBACK TO req")
                    .and_then(|()| stmt(self, "RELEASE req"))
                    .is_err()
                {
                    return Err(Failure::Transaction(e));
                }
                self.undo(ctx);
                Err(Failure::Request(e))
            }
        }
    }

    /// Restores the mirror and the batch as they were before the current request.
    fn undo(&mut self, ctx: &mut Batch) {
        let u = std::mem::take(&mut ctx.undo);
        if let Some(whole) = u.whole {
            let (mem, queues, history) = *whole;
            self.mem = mem;
            ctx.queues = queues;
            ctx.history = history;
        }
        for (name, q) in u.queues.into_iter().rev() {
            match q {
                Some(q) => self.mem.queues.insert(name, q),
                None => self.mem.queues.remove(&name),
            };
        }
        if let Some(h) = u.history {
            ctx.history = h;
        }
        self.mem.set_scalars(u.scalars);
        ctx.notify.truncate(u.notify);
    }

    /// Notes a queue's state before the current request first changes it (for [`Writer::undo`]).
    fn touch_queue(&self, name: &str, ctx: &mut Batch) {
        if ctx.undo.whole.is_none() && !ctx.undo.queues.iter().any(|(n, _)| n == name) {
            ctx.undo
                .queues
                .push((name.to_string(), self.mem.queues.get(name).copied()));
        }
    }

    /// Commits the open transaction, then publishes the new sizes, wakes waiting FETCHes,
    /// answers the early FETCHes held for this commit and hands every other answer to the
    /// syncer (or flushes on this thread first, if `here`); returns whether a flush is now
    /// running.
    fn commit(&mut self, mut o: Open, here: bool) -> bool {
        let started = std::time::Instant::now();
        let done = self
            .persist(&o.ctx, &o.saved)
            .and_then(|()| Ok(self.conn.prepare_cached("COMMIT")?.execute([])?));
        match done {
            Ok(_) => {
                let m = &self.metrics;
                m.commit_duration.observe(started.elapsed().as_secs_f64());
                m.commit_requests
                    .observe((o.reqs.len() + o.answered.len()) as f64);
                self.degraded = false;
                self.publish();
                for queue in o.ctx.notify.drain(..) {
                    self.listener.enqueued(&queue);
                }
                let mut answers = Vec::with_capacity(o.reqs.len());
                for (req, res) in o.reqs.into_iter().zip(o.results) {
                    let Some(reply) = req.reply else { continue };
                    if req.early {
                        let _ = reply.send(Ok(res));
                    } else {
                        answers.push((reply, res));
                    }
                }
                self.syncer.answer(answers, here)
            }
            Err(e) => {
                self.abort(Some(o.saved), o.reqs, o.answered, e);
                false
            }
        }
    }

    /// Checkpoints the WAL if it has grown enough (see [`crate::checkpoint`]); only the
    /// writer's thread does, between its commits.
    fn checkpoint(&mut self) {
        let Some(mode) = crate::checkpoint::due(self.wal_pages.load(Ordering::Relaxed)) else {
            return;
        };
        let started = std::time::Instant::now();
        match crate::checkpoint::checkpoint(&self.conn, mode) {
            Ok((busy, log, done)) => {
                self.metrics
                    .checkpoint_duration
                    .observe(started.elapsed().as_secs_f64());
                if log == done {
                    self.wal_pages.store(0, Ordering::Relaxed);
                }
                tracing::debug!(mode, busy, log, done, "WAL checkpoint");
            }
            Err(e) => crate::checkpoint::fatal_or_retry(&e, "a WAL checkpoint"),
        }
    }

    /// The open transaction is lost (a failed COMMIT, or SQLite rolled it back itself): rolls
    /// it back (restoring the mirror from `saved`), reserves again the jobs of FETCHes already
    /// answered, and replays the other requests one per transaction, so only a failing one
    /// fails.
    fn abort(
        &mut self,
        saved: Option<Mem>,
        mut reqs: Vec<Request>,
        answered: Vec<Answered>,
        e: Error,
    ) {
        let _ = self.conn.execute_batch("ROLLBACK");
        if let Some(saved) = saved {
            self.mem = saved;
        }
        self.degraded = true;
        for a in answered {
            self.run_single(Request {
                op: Op::Reserve {
                    jid: a.jid,
                    wid: a.wid,
                    expires: a.expires,
                },
                now: a.now,
                reply: None,
                early: false,
            });
        }
        reqs.retain(|r| r.reply.is_some());
        if reqs.len() <= 1 {
            let err = e.into_store_error();
            tracing::error!(error = %err, "store request failed; nothing was changed");
            for req in reqs {
                if let Some(reply) = req.reply {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        } else {
            for req in reqs {
                self.run_single(req);
            }
        }
    }

    /// Applies, commits and flushes one request on the caller's thread, as the writer thread
    /// would (called only while that thread is idle, under the lock it then waits for);
    /// returns whether a checkpoint is due, for the writer's thread to run: a checkpoint can
    /// take milliseconds, or wait for readers, and the caller is a thread serving clients.
    pub fn run_here(&mut self, req: Request) -> bool {
        let mut open = None;
        self.apply_round(&mut open, vec![req]);
        if let Some(o) = open {
            self.commit(o, true);
        }
        crate::checkpoint::due(self.wal_pages.load(Ordering::Relaxed)).is_some()
    }

    /// One request in its own transaction, committed at once.
    fn run_single(&mut self, req: Request) {
        let mut open = None;
        self.apply_round(&mut open, vec![req]);
        if let Some(o) = open {
            self.commit(o, false);
        }
    }

    /// Publishes the move of one job of `queue` to `working` (an early FETCH's, whose job was
    /// committed before: no size of an uncommitted change is published).
    fn publish_reserved(&self, queue: &str) {
        let mut p = self.published.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = p.queues.get_mut(queue) {
            q.size = (q.size - 1).max(0);
            p.working += 1;
        }
    }

    fn publish(&self) {
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = self.mem.clone();
    }

    /// Writes what the batch changed in the mirrored sizes and counters (`before` is the mirror
    /// at the start of the batch).
    fn persist(&mut self, ctx: &Batch, before: &Mem) -> Result<(), Error> {
        for name in &ctx.queues {
            match self.mem.queues.get(name) {
                Some(q) => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO queues (name, size, paused) VALUES (?1, ?2, ?3)
                             ON CONFLICT (name) DO UPDATE SET size = excluded.size, paused = excluded.paused",
                        )?
                        .execute(params![name, q.size, q.paused])?;
                }
                None => {
                    self.conn
                        .prepare_cached("DELETE FROM queues WHERE name = ?1")?
                        .execute([name])?;
                }
            }
        }
        for name in Mem::COUNTERS {
            if self.mem.counter(name) != before.counter(name) {
                self.conn
                    .prepare_cached(
                        "INSERT INTO counters (name, value) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![name, self.mem.counter(name)])?;
            }
        }
        for (day, (p, f)) in &ctx.history {
            self.conn
                .prepare_cached(
                    "INSERT INTO history (day, processed, failures) VALUES (?1, ?2, ?3)
                     ON CONFLICT (day) DO UPDATE SET processed = processed + excluded.processed,
                                                     failures = failures + excluded.failures",
                )?
                .execute(params![day, p, f])?;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op, now: Millis, ctx: &mut Batch) -> Result<Resp, Error> {
        Ok(match op {
            Op::Push { jobs } => Resp::Push(self.push(jobs, ctx)?),
            Op::Fetch { queues, wid } => Resp::Fetch(self.fetch(queues, wid, now, ctx)?),
            Op::Ack { jid } => Resp::Ack(self.ack(jid, now, ctx)?),
            Op::Fail { jid, info } => Resp::Fail(self.fail(jid, info, now, ctx)?),
            Op::Promote { limit } => Resp::Count(self.promote(now, *limit, ctx)?),
            Op::Reap { limit } => Resp::Count(self.reap(now, *limit, ctx)?),
            Op::Purge { limit } => Resp::Count(self.purge(now, *limit, ctx)?),
            Op::Sweep { limit } => Resp::Count(self.sweep(now, *limit, ctx)?),
            Op::Mutate { m } => Resp::Count(self.mutate(m, now, ctx)?),
            Op::SetPaused { sel, paused } => {
                self.set_paused(sel, *paused, ctx);
                Resp::Unit
            }
            Op::Remove { sel } => Resp::Count(self.remove(sel, ctx)?),
            Op::FireCron { entry, tick, job } => {
                Resp::Cron(self.fire_cron(entry, *tick, job, ctx)?)
            }
            Op::Flush => {
                self.flush(ctx)?;
                Resp::Unit
            }
            Op::Recount => Resp::Count(self.recount(ctx)?),
            Op::BatchNew { batch } => Resp::Batch(self.batch_new(batch, now)?),
            Op::BatchOpen { bid } => Resp::Batch(self.batch_open(bid, now)?),
            Op::BatchCommit { bid } => Resp::Batch(self.batch_commit(bid, now, ctx)?),
            Op::TrackSet { update } => Resp::Bool(self.track_set(update, now)?),
            Op::DeleteJobs { state, jids } => Resp::Count(self.delete_jobs(*state, jids, ctx)?),
            Op::Import { jobs } => Resp::Imported(self.import(jobs, now, ctx)?),
            Op::Reserve { jid, wid, expires } => {
                self.reserve_again(jid, wid, now, *expires, ctx)?;
                Resp::Unit
            }
        })
    }

    // ---- bookkeeping ------------------------------------------------------------------------

    /// Adds `delta` jobs to a state's size (for `Enqueued`, to `queue`'s size).
    fn count(&mut self, state: JobState, queue: &str, delta: i64, ctx: &mut Batch) {
        match state {
            JobState::Enqueued => {
                self.touch_queue(queue, ctx);
                let q = self.mem.queues.entry(queue.to_string()).or_default();
                q.size += delta;
                ctx.queues.insert(queue.to_string());
            }
            JobState::Scheduled => self.mem.scheduled += delta,
            JobState::Working => self.mem.working += delta,
            JobState::Retry => self.mem.retries += delta,
            JobState::Dead => self.mem.dead += delta,
        }
    }

    /// Counts one processed job (ACK or failure) in the totals and today's history.
    fn count_processed(&mut self, now: Millis, failed: bool, ctx: &mut Batch) {
        self.mem.processed += 1;
        if ctx.undo.history.is_none() {
            ctx.undo.history = Some(ctx.history.clone());
        }
        let day = ctx.history.entry(local_day(now)).or_insert((0, 0));
        day.0 += 1;
        if failed {
            self.mem.failures += 1;
            day.1 += 1;
        }
    }

    fn next_seq(&mut self) -> i64 {
        let s = self.mem.seq;
        self.mem.seq += 1;
        s
    }

    /// Moves a stored row onto its queue's tail with a fresh `enqueued_at`. A row whose JSON
    /// no longer parses is quarantined instead (see [`Writer::quarantine`]); returns whether the
    /// job was enqueued.
    fn enqueue_row(
        &mut self,
        row: &Row,
        from: JobState,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<bool, Error> {
        let mut job = match Job::from_stored(&row.payload) {
            Ok(job) => job,
            Err(e) => {
                self.quarantine(row, from, now, &e.to_string(), ctx)?;
                return Ok(false);
            }
        };
        job.enqueued_at = format_stamp(now);
        let seq = self.next_seq();
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = 1, score = ?2, ts = ?3, reserved_at = NULL, wid = NULL,
                 payload = ?4 WHERE id = ?1",
            )?
            .execute(params![row.id, seq, now, job.to_json()])?;
        self.count(from, &job.queue, -1, ctx);
        self.count(JobState::Enqueued, &job.queue, 1, ctx);
        ctx.notify.push(job.queue);
        Ok(true)
    }

    /// A stored job whose JSON no longer parses (damaged on disk) is moved, untouched, to the
    /// dead set, so it cannot block its queue, the scheduler or the reaper; it stays there for
    /// an operator to inspect. (Already dead: left where it is.)
    fn quarantine(
        &mut self,
        row: &Row,
        from: JobState,
        now: Millis,
        why: &str,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        tracing::error!(
            row = row.id,
            queue = %row.queue,
            state = %from,
            error = why,
            "stored job is damaged (its JSON does not parse); moved to the dead set"
        );
        if from == JobState::Dead {
            return Ok(());
        }
        let until = now.saturating_add(self.config.dead_retention);
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = 4, score = ?2, ts = ?2, reserved_at = NULL, wid = NULL
                 WHERE id = ?1",
            )?
            .execute(params![row.id, until])?;
        self.count(from, &row.queue, -1, ctx);
        self.count(JobState::Dead, &row.queue, 1, ctx);
        Ok(())
    }

    // ---- operations -------------------------------------------------------------------------

    fn push(
        &mut self,
        jobs: &[Prepared],
        ctx: &mut Batch,
    ) -> Result<Vec<Result<(), PushError>>, Error> {
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(bid) = job.batch.as_deref().and_then(|b| b.strip_prefix("m:")) {
                if !self.batch_accepts(bid, job.now)? {
                    // A retry of a member push that was stored is still answered OK.
                    let retried = matches!(self.stored_under_jid(job)?, Some((true, _)));
                    results.push(match retried {
                        true => Ok(()),
                        false => Err(PushError::NoSuchBatch(bid.to_string())),
                    });
                    continue;
                }
            }
            let (state, score, ts) = match job.scheduled_at {
                Some(at) => (JobState::Scheduled, at, at),
                None => (JobState::Enqueued, self.next_seq(), job.now),
            };
            if let Some(u) = &job.uniq {
                // A duplicate jid is reported as such, before uniqueness (as the reference does).
                let taken: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT 1 FROM jobs WHERE jid = ?1")?
                    .query_row([&job.jid], |r| r.get(0))
                    .optional()?;
                let held: Option<(i64, String)> = self
                    .conn
                    .prepare_cached("SELECT until, jid FROM unique_locks WHERE key = ?1")?
                    .query_row([&u.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((_, holder)) = held.filter(|h| taken.is_none() && h.0 > job.now) {
                    // The lock this very job took (same jid, same identity: a retried push of
                    // a job already fetched or gone) is no reason to refuse it: nothing changes.
                    results.push(match holder == job.jid {
                        true => Ok(()),
                        false => Err(PushError::NotUnique),
                    });
                    continue;
                }
            }
            // One index probe: the unique jid index refuses a duplicate, then we say where the
            // existing job is.
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload, expires, uniq,
                                       batch, track)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (jid) DO NOTHING",
                )?
                .execute(params![
                    job.jid,
                    state_code(state),
                    job.queue,
                    job.jobtype,
                    score,
                    ts,
                    job.payload,
                    job.expires,
                    job.uniq.as_ref().map(uniq_column),
                    job.batch,
                    job.track.then_some(1)
                ])?;
            if inserted == 0 {
                // A retry of the push that stored this job is answered OK and changes nothing.
                results.push(match self.stored_under_jid(job)? {
                    Some((true, _)) => Ok(()),
                    other => Err(PushError::DuplicateJid(
                        job.jid.clone(),
                        describe(other.and_then(|(_, state)| state)).to_string(),
                    )),
                });
                continue;
            }
            if let Some(u) = &job.uniq {
                self.conn
                    .prepare_cached(
                        "INSERT INTO unique_locks (key, jid, until) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET jid = excluded.jid, until = excluded.until",
                    )?
                    .execute(params![u.key, job.jid, u.until])?;
            }
            if let Some(bid) = job.batch.as_deref().and_then(|b| b.strip_prefix("m:")) {
                self.batch_member_added(bid, job.now)?;
            }
            if job.track {
                self.start_tracking(&job.jid, job.now)?;
            }
            self.count(state, &job.queue, 1, ctx);
            if state == JobState::Enqueued {
                ctx.notify.push(job.queue.clone());
            }
            results.push(Ok(()));
        }
        Ok(results)
    }

    /// [`werk_store::Store::import`]: each job into its state, unless its jid is taken.
    fn import(
        &mut self,
        jobs: &[Imported],
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<Vec<werk_store::ImportOutcome>, Error> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (score, ts) = match job.state {
                JobState::Enqueued => (self.next_seq(), now),
                state => {
                    let t = werk_store::ImportedJob::set_time(
                        state,
                        job.at,
                        self.config.dead_retention,
                    );
                    (t, t)
                }
            };
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (jid) DO NOTHING",
                )?
                .execute(params![
                    job.jid,
                    state_code(job.state),
                    job.queue,
                    job.jobtype,
                    score,
                    ts,
                    job.payload,
                    job.expires
                ])?;
            if inserted == 0 {
                out.push(werk_store::ImportOutcome::AlreadyStored);
                continue;
            }
            self.count(job.state, &job.queue, 1, ctx);
            if job.state == JobState::Enqueued {
                ctx.notify.push(job.queue.clone());
            }
            out.push(werk_store::ImportOutcome::Stored);
        }
        Ok(out)
    }

    /// The job stored under `job.jid`, if any: whether `job` is a retry of its push
    /// ([`Job::is_retried_push_of`]) and its state.
    fn stored_under_jid(&self, job: &Prepared) -> Result<Option<(bool, Option<JobState>)>, Error> {
        let stored: Option<(i64, String)> = self
            .conn
            .prepare_cached("SELECT state, payload FROM jobs WHERE jid = ?1")?
            .query_row([&job.jid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(stored.map(|(code, payload)| {
            let same = match (Job::from_stored(&job.payload), Job::from_stored(&payload)) {
                (Ok(new), Ok(old)) => new.is_retried_push_of(&old),
                _ => false,
            };
            (same, JobState::from_code(code))
        }))
    }

    fn fetch(
        &mut self,
        queues: &[String],
        wid: &str,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<Option<StoredJob>, Error> {
        for name in queues {
            loop {
                match self.mem.queues.get(name) {
                    Some(q) if !q.paused && q.size > 0 => {}
                    _ => break,
                }
                // A throttled queue at its limit counts as empty.
                if self.throttled(name, wid, now)? {
                    break;
                }
                struct Head {
                    id: i64,
                    score: i64,
                    jid: String,
                    jobtype: String,
                    payload: String,
                    expires: Option<Millis>,
                    uniq: Option<String>,
                    batch: Option<String>,
                    track: bool,
                }
                let row: Option<Head> = self
                    .conn
                    .prepare_cached(
                        "SELECT id, jid, jobtype, payload, expires, uniq, batch, track, score
                         FROM jobs WHERE state = 1 AND queue = ?1 ORDER BY score LIMIT 1",
                    )?
                    .query_row([name], |r| {
                        Ok(Head {
                            id: r.get(0)?,
                            jid: r.get(1)?,
                            jobtype: r.get(2)?,
                            payload: r.get(3)?,
                            expires: r.get(4)?,
                            uniq: r.get(5)?,
                            batch: r.get(6)?,
                            track: r.get::<_, Option<i64>>(7)?.is_some(),
                            score: r.get(8)?,
                        })
                    })
                    .optional()?;
                let Some(Head {
                    id,
                    score,
                    jid,
                    jobtype,
                    payload,
                    expires,
                    uniq,
                    batch,
                    track,
                }) = row
                else {
                    break;
                };
                if expires.is_some_and(|x| x <= now) {
                    self.conn
                        .prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                        .execute([id])?;
                    self.count(JobState::Enqueued, name, -1, ctx);
                    self.mem.expired += 1;
                    self.member_failed(batch.as_deref(), now, ctx)?;
                    if track {
                        self.forget_tracking("jid = ?1", &[jid.clone().into()])?;
                    }
                    tracing::info!(%jid, queue = %name, "job expired before it was fetched; dropped");
                    continue;
                }
                let job = match Job::from_stored(&payload) {
                    Ok(job) => job,
                    Err(e) => {
                        let row = Row {
                            id,
                            queue: name.clone(),
                            payload,
                            batch,
                            track,
                        };
                        self.quarantine(&row, JobState::Enqueued, now, &e.to_string(), ctx)?;
                        continue;
                    }
                };
                let expires = now.saturating_add(
                    self.config
                        .scaled(reservation_seconds(job.reserve_for) * 1000),
                );
                ctx.fresh = score >= self.txn_seq;
                let head = Reserved {
                    id,
                    jid: &jid,
                    queue: name,
                    uniq: uniq.as_deref(),
                    track,
                };
                self.reserve_row(&head, wid, now, expires, ctx)?;
                return Ok(Some(StoredJob {
                    jid,
                    state: JobState::Working,
                    queue: name.clone(),
                    jobtype,
                    payload,
                    at: expires,
                    reservation: Some(Reservation {
                        reserved_at: now,
                        expires_at: expires,
                        wid: wid.to_string(),
                    }),
                }));
            }
        }
        Ok(None)
    }

    /// Moves an enqueued job to `working` under a reservation until `expires`.
    fn reserve_row(
        &mut self,
        row: &Reserved<'_>,
        wid: &str,
        now: Millis,
        expires: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = 2, score = ?2, ts = ?2, reserved_at = ?3, wid = ?4
                 WHERE id = ?1",
            )?
            .execute(params![row.id, expires, now, wid])?;
        self.count(JobState::Enqueued, row.queue, -1, ctx);
        self.count(JobState::Working, row.queue, 1, ctx);
        if let Some(key) = row.uniq.and_then(|u| u.strip_prefix("start:")) {
            self.release_lock(key, row.jid)?;
        }
        if row.track {
            self.touch_tracking(row.jid, None, now)?;
        }
        Ok(())
    }

    /// [`Op::Reserve`].
    fn reserve_again(
        &mut self,
        jid: &str,
        wid: &str,
        now: Millis,
        expires: Millis,
        ctx: &mut Batch,
    ) -> Result<(), Error> {
        type Found = (i64, String, Option<String>, Option<i64>);
        let found: Option<Found> = self
            .conn
            .prepare_cached("SELECT id, queue, uniq, track FROM jobs WHERE jid = ?1 AND state = 1")?
            .query_row([jid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((id, queue, uniq, track)) = found else {
            return Ok(());
        };
        let row = Reserved {
            id,
            jid,
            queue: &queue,
            uniq: uniq.as_deref(),
            track: track.is_some(),
        };
        self.reserve_row(&row, wid, now, expires, ctx)
    }

    fn ack(&mut self, jid: &str, now: Millis, ctx: &mut Batch) -> Result<AckOutcome, Error> {
        // Any state but scheduled (a scheduled job was never delivered): see AckOutcome.
        type Gone = (i64, String, Option<String>, Option<String>, Option<i64>);
        let row: Option<Gone> = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE jid = ?1 AND state <> 0
                 RETURNING state, queue, uniq, batch, track",
            )?
            .query_row([jid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((code, queue, uniq, batch, track)) = row else {
            return Ok(AckOutcome::NotWorking);
        };
        if let Some(u) = uniq {
            self.release_lock(lock_key(&u), jid)?;
        }
        if let Some(batch) = batch {
            self.batch_job_acked(&batch, now, ctx)?;
        }
        if track.is_some() {
            self.touch_tracking(jid, Some("success"), now)?;
        }
        self.wake_throttled(&queue, ctx);
        let state = JobState::from_code(code).unwrap_or(JobState::Dead);
        self.count(state, &queue, -1, ctx);
        self.count_processed(now, false, ctx);
        Ok(match state {
            JobState::Working => AckOutcome::Acked,
            other => AckOutcome::AckedLate(other),
        })
    }

    fn fail(
        &mut self,
        jid: &str,
        info: &FailInfo,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<FailReply, Error> {
        let row: Option<Row> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW} FROM jobs WHERE jid = ?1 AND state = 2"
            ))?
            .query_row([jid], Row::read)
            .optional()?;
        match row {
            Some(row) => Ok(FailReply::Failed(self.fail_row(&row, info, now, ctx)?)),
            None => Ok(FailReply::NotWorking),
        }
    }

    /// working → retry / dead / gone for one row, counting the failure.
    fn fail_row(
        &mut self,
        row: &Row,
        info: &FailInfo,
        now: Millis,
        ctx: &mut Batch,
    ) -> Result<FailOutcome, Error> {
        let id = row.id;
        let mut job = match Job::from_stored(&row.payload) {
            Ok(job) => job,
            Err(e) => {
                self.quarantine(row, JobState::Working, now, &e.to_string(), ctx)?;
                self.count_processed(now, true, ctx);
                return Ok(FailOutcome::Dead);
            }
        };
        let r: u32 = rand::rng().random_range(0..=29);
        let config = &self.config;
        let outcome = apply_failure_with(&mut job, info, now, r, |ms| config.scaled(ms));
        let batch = self.member_failed(row.batch.as_deref(), now, ctx)?;
        if row.track {
            let last = matches!(outcome, FailOutcome::Discarded).then_some("failed");
            self.touch_tracking(&job.jid, last, now)?;
        }
        self.wake_throttled(&row.queue, ctx);
        if !matches!(outcome, FailOutcome::Retry { .. }) {
            // Automatic death (or discard): the job will never succeed; free its identity.
            if let Ok(Some(u)) = job.uniqueness(now, None) {
                self.release_lock(&u.key, &job.jid)?;
            }
        }
        let to = match outcome {
            FailOutcome::Retry { next_at } => Some((JobState::Retry, next_at)),
            FailOutcome::Dead => Some((
                JobState::Dead,
                now.saturating_add(self.config.dead_retention),
            )),
            FailOutcome::Discarded => None,
        };
        match to {
            Some((state, at)) => {
                self.conn
                    .prepare_cached(
                        "UPDATE jobs SET state = ?2, score = ?3, ts = ?3, reserved_at = NULL,
                         wid = NULL, payload = ?4, batch = ?5 WHERE id = ?1",
                    )?
                    .execute(params![id, state_code(state), at, job.to_json(), batch])?;
                self.count(state, &job.queue, 1, ctx);
            }
            None => {
                self.conn
                    .prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                    .execute([id])?;
            }
        }
        self.count(JobState::Working, &job.queue, -1, ctx);
        self.count_processed(now, true, ctx);
        Ok(outcome)
    }

    /// Rows of one non-enqueued state whose time is ≤ now, oldest first.
    fn due(&self, state: JobState, now: Millis, limit: usize) -> Result<Vec<Row>, Error> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW} FROM jobs WHERE state = ?1 AND state <> 1 AND score <= ?2
             ORDER BY score LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![state_code(state), now, limit as i64], Row::read)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn promote(&mut self, now: Millis, limit: usize, ctx: &mut Batch) -> Result<u64, Error> {
        let mut moved = 0;
        for state in [JobState::Scheduled, JobState::Retry] {
            for row in self.due(state, now, limit - moved)? {
                self.enqueue_row(&row, state, now, ctx)?;
                moved += 1;
            }
        }
        Ok(moved as u64)
    }

    fn reap(&mut self, now: Millis, limit: usize, ctx: &mut Batch) -> Result<u64, Error> {
        let info = FailInfo::reservation_expired();
        let rows = self.due(JobState::Working, now, limit)?;
        for row in &rows {
            self.fail_row(row, &info, now, ctx)?;
        }
        Ok(rows.len() as u64)
    }

    /// Frees a unique-job lock if `jid` still holds it.
    fn release_lock(&mut self, key: &str, jid: &str) -> Result<(), Error> {
        self.conn
            .prepare_cached("DELETE FROM unique_locks WHERE key = ?1 AND jid = ?2")?
            .execute([key, jid])?;
        Ok(())
    }

    fn sweep(&mut self, now: Millis, limit: usize, ctx: &mut Batch) -> Result<u64, Error> {
        self.forget_tracking("expires <= ?1 AND state = 1", &[now.into()])?;
        let gone: Vec<(String, Option<String>)> = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE expires <= ?1
                 AND state = 1 LIMIT ?2) RETURNING queue, batch",
            )?
            .query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut queues = Vec::with_capacity(gone.len());
        for (q, batch) in gone {
            self.count(JobState::Enqueued, &q, -1, ctx);
            self.member_failed(batch.as_deref(), now, ctx)?;
            queues.push(q);
        }
        self.sweep_ent(now, limit, ctx)?;
        self.mem.expired += queues.len() as i64;
        // Housekeeping in the same pass: unique-job locks past their time (no longer held).
        self.conn
            .prepare_cached(
                "DELETE FROM unique_locks WHERE key IN
                 (SELECT key FROM unique_locks WHERE until <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, limit as i64])?;
        Ok(queues.len() as u64)
    }

    fn purge(&mut self, now: Millis, limit: usize, ctx: &mut Batch) -> Result<u64, Error> {
        self.forget_tracking("state = 4 AND state <> 1 AND score <= ?1", &[now.into()])?;
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 4 AND state <> 1
                 AND score <= ?1 ORDER BY score LIMIT ?2)",
            )?
            .execute(params![now, limit as i64])?;
        self.count(JobState::Dead, "", -(n as i64), ctx);
        Ok(n as u64)
    }

    fn mutate(&mut self, m: &Mutation, now: Millis, ctx: &mut Batch) -> Result<u64, Error> {
        let target = m.target;
        if !matches!(
            target,
            JobState::Scheduled | JobState::Retry | JobState::Dead
        ) {
            return Ok(0);
        }
        // The filter as SQL over this state's rows. Jids win over everything else.
        let mut cond = String::from("state = ?1 AND state <> 1");
        let mut args: Vec<rusqlite::types::Value> = vec![state_code(target).into()];
        let filter = match (m.op, &m.filter) {
            (MutateOp::Clear, _) | (MutateOp::Discard, None) => None,
            (_, f) => f.as_ref(),
        };
        if let Some(f) = filter {
            if !f.jids.is_empty() {
                let list = serde_json::to_string(&f.jids).unwrap_or_else(|_| "[]".into());
                args.push(list.into());
                cond.push_str(&format!(
                    " AND jid IN (SELECT value FROM json_each(?{}))",
                    args.len()
                ));
            } else {
                if let Some(glob) = f.regexp.as_ref().filter(|g| !g.is_empty()) {
                    args.push(glob.clone().into());
                    cond.push_str(&format!(" AND redis_match(?{}, payload)", args.len()));
                }
                if let Some(jt) = f.jobtype.as_ref().filter(|j| !j.is_empty()) {
                    args.push(jt.clone().into());
                    cond.push_str(&format!(" AND jobtype = ?{}", args.len()));
                }
            }
        }
        let params = rusqlite::params_from_iter(args.iter());
        match m.op {
            MutateOp::Clear | MutateOp::Discard => {
                self.forget_tracking(&cond, &args)?;
                let n = self
                    .conn
                    .prepare(&format!("DELETE FROM jobs WHERE {cond}"))?
                    .execute(params)?;
                self.count(target, "", -(n as i64), ctx);
                Ok(n as u64)
            }
            MutateOp::Kill => {
                if target == JobState::Dead {
                    return Ok(0);
                }
                let until = now.saturating_add(self.config.dead_retention);
                args.push(until.into());
                let sql = format!(
                    "UPDATE jobs SET state = 4, score = ?{n}, ts = ?{n} WHERE {cond}",
                    n = args.len()
                );
                let n = self
                    .conn
                    .prepare(&sql)?
                    .execute(rusqlite::params_from_iter(args.iter()))?;
                self.count(target, "", -(n as i64), ctx);
                self.count(JobState::Dead, "", n as i64, ctx);
                Ok(n as u64)
            }
            MutateOp::Requeue => {
                let rows: Vec<Row> = {
                    let mut stmt = self.conn.prepare(&format!(
                        "SELECT {ROW} FROM jobs WHERE {cond} ORDER BY score"
                    ))?;
                    let rows = stmt.query_map(params, Row::read)?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut moved = 0;
                for row in &rows {
                    if self.enqueue_row(row, target, now, ctx)? {
                        moved += 1;
                    }
                }
                Ok(moved)
            }
        }
    }

    /// Deletes the jobs with these jids that are in `state` (never working ones).
    fn delete_jobs(
        &mut self,
        state: JobState,
        jids: &[String],
        ctx: &mut Batch,
    ) -> Result<u64, Error> {
        if state == JobState::Working || jids.is_empty() {
            return Ok(0);
        }
        let list = serde_json::to_string(jids).unwrap_or_else(|_| "[]".into());
        let cond = "state = ?1 AND jid IN (SELECT value FROM json_each(?2))";
        let args = [state_code(state).into(), list.clone().into()];
        self.forget_tracking(cond, &args)?;
        let queues: Vec<String> = self
            .conn
            .prepare_cached(&format!("DELETE FROM jobs WHERE {cond} RETURNING queue"))?
            .query_map(params![state_code(state), list], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for q in &queues {
            self.count(state, q, -1, ctx);
        }
        Ok(queues.len() as u64)
    }

    fn selected(&self, sel: &QueueSelector) -> Vec<String> {
        match sel {
            QueueSelector::All => self.mem.queues.keys().cloned().collect(),
            QueueSelector::Names(names) => names
                .iter()
                .filter(|n| self.mem.queues.contains_key(*n))
                .cloned()
                .collect(),
        }
    }

    fn set_paused(&mut self, sel: &QueueSelector, paused: bool, ctx: &mut Batch) {
        for name in self.selected(sel) {
            self.touch_queue(&name, ctx);
            if let Some(q) = self.mem.queues.get_mut(&name) {
                q.paused = paused;
                ctx.queues.insert(name);
            }
        }
        if !paused {
            // Wake fetchers that skipped these queues.
            ctx.notify.extend(self.selected(sel));
        }
    }

    fn remove(&mut self, sel: &QueueSelector, ctx: &mut Batch) -> Result<u64, Error> {
        let mut removed = 0;
        for name in self.selected(sel) {
            self.forget_tracking("state = 1 AND queue = ?1", &[name.clone().into()])?;
            removed += self
                .conn
                .prepare_cached("DELETE FROM jobs WHERE state = 1 AND queue = ?1")?
                .execute([&name])? as u64;
            self.touch_queue(&name, ctx);
            self.mem.queues.remove(&name);
            ctx.queues.insert(name);
        }
        Ok(removed)
    }

    /// One cron tick: records it and pushes its job, unless the entry already fired for this
    /// tick or a later one (see [`werk_store::Store::fire_cron`]).
    fn fire_cron(
        &mut self,
        entry: &str,
        tick: Millis,
        job: &Prepared,
        ctx: &mut Batch,
    ) -> Result<CronFire, Error> {
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT tick FROM cron_fires WHERE entry = ?1")?
            .query_row([entry], |r| r.get(0))
            .optional()?;
        if last.is_some_and(|last| last >= tick) {
            return Ok(CronFire::AlreadyFired);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO cron_fires (entry, tick, jid, fired_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (entry) DO UPDATE SET tick = excluded.tick, jid = excluded.jid,
                                                   fired_at = excluded.fired_at",
            )?
            .execute(params![entry, tick, job.jid, job.now])?;
        Ok(match self.push(std::slice::from_ref(job), ctx)?.pop() {
            Some(Err(e)) => CronFire::Refused(e),
            _ => CronFire::Fired,
        })
    }

    /// [`Op::Recount`]: corrects the mirror from the jobs themselves, within the transaction
    /// (so the corrected sizes are stored at its commit, and undone with it); after a correction
    /// every queue is announced, so FETCHes waiting on a queue that was wrongly empty wake.
    /// Returns how many sizes were corrected.
    fn recount(&mut self, ctx: &mut Batch) -> Result<u64, Error> {
        self.keep_whole(ctx);
        let fixed = self.mem.verify(&self.conn)?;
        if !fixed.is_empty() {
            warn_rebuilt(&fixed);
            for name in self.mem.queues.keys() {
                ctx.queues.insert(name.clone());
                ctx.notify.push(name.clone());
            }
        }
        Ok(fixed.len() as u64)
    }

    /// Before a request that replaces the whole mirror (FLUSH, a recount) first changes it:
    /// keeps the mirror and the batch's touched sets for [`Writer::undo`].
    fn keep_whole(&self, ctx: &mut Batch) {
        if ctx.undo.whole.is_none() {
            ctx.undo.whole = Some(Box::new((
                self.mem.clone(),
                ctx.queues.clone(),
                ctx.history.clone(),
            )));
        }
    }

    fn flush(&mut self, ctx: &mut Batch) -> Result<(), Error> {
        self.conn.execute_batch(
            "DELETE FROM jobs; DELETE FROM queues; DELETE FROM history; DELETE FROM unique_locks;
             DELETE FROM batches; DELETE FROM tracking; DELETE FROM counters WHERE name <> 'seq';",
        )?;
        self.keep_whole(ctx);
        let seq = self.mem.seq;
        self.mem = Mem {
            seq,
            ..Mem::default()
        };
        ctx.queues.clear();
        ctx.history.clear();
        Ok(())
    }
}
