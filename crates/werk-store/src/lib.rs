//! The storage trait every Werk backend implements.
//!
//! The domain and server reach storage only through [`Store`]. Each method is one atomic,
//! durable step of `shared/job-state-machine.md`: when its future resolves `Ok`, the change is
//! committed and on disk, and nothing else has been changed half-way. Every transition is
//! conditional on the state the caller expects (an ACK only acts on a `working` job, a promotion
//! only on a due `scheduled` job, ...), so racing callers can never produce two copies or none.
//!
//! Time is always passed in (`now`, milliseconds since the epoch), so tests drive the clock.
//! The conformance suite (feature `conformance`) checks these rules for any backend.

use std::future::Future;
use std::sync::Arc;

use werk_core::worker::WorkerState;
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis, PushError};

#[cfg(feature = "conformance")]
pub mod conformance;

/// A storage failure (I/O, full disk, corrupt data, shutting down). The change was not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend could not commit; nothing of the request was applied.
    #[error("storage error: {0}")]
    Backend(String),
    /// The disk (or database) is full; nothing of the request was applied.
    #[error("storage is full: {0}")]
    Full(String),
    /// The store is closing and takes no more requests.
    #[error("storage is shutting down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A job to store, as validated by [`Job::validate_for_push`].
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job: Job,
    /// The job's `at` time, if it has one. Due or past ⇒ enqueued now; future ⇒ scheduled.
    pub at: Option<Millis>,
}

/// A job taken over from another server (`werk import faktory`), stored directly in the state
/// it had there.
#[derive(Debug, Clone)]
pub struct ImportedJob {
    /// Valid as a PUSH would have it; its `failure` (retry count, error) is kept as it is.
    pub job: Job,
    /// Where it goes: [`JobState::Enqueued`] (its queue's tail), [`JobState::Scheduled`] (to
    /// run at `at`), [`JobState::Retry`] (next try at `at`) or [`JobState::Dead`] (died at
    /// `at`; purged `dead_retention` after that). Other states are refused.
    pub state: JobState,
    pub at: Millis,
}

impl ImportedJob {
    /// What every backend stores (call it first): refuses the call unless every job's state
    /// is one [`Store::import`] takes (so that nothing is stored), and writes the job's time
    /// into its payload as a job that got there here would have it — a scheduled job's `at`,
    /// a retry's `failure.next_at` (a retry without `failure` gets one with no error and a
    /// retry count of 0).
    pub fn prepare(jobs: Vec<ImportedJob>) -> Result<Vec<ImportedJob>> {
        if let Some(j) = jobs.iter().find(|j| {
            !matches!(
                j.state,
                JobState::Enqueued | JobState::Scheduled | JobState::Retry | JobState::Dead
            )
        }) {
            return Err(StoreError::Backend(format!(
                "cannot import job {} as {}: only enqueued, scheduled, retry and dead jobs are imported",
                j.job.jid, j.state
            )));
        }
        Ok(jobs
            .into_iter()
            .map(|mut j| {
                match j.state {
                    JobState::Scheduled => j.job.at = werk_core::time::format_millis(j.at),
                    JobState::Retry => {
                        let retry = j.job.retry_limit().max(0);
                        let f = j
                            .job
                            .failure
                            .get_or_insert_with(|| werk_core::retry::Failure {
                                failed_at: werk_core::time::format_millis(j.at),
                                next_at: String::new(),
                                message: String::new(),
                                errtype: String::new(),
                                backtrace: Vec::new(),
                                retry_count: 0,
                                remaining: retry,
                            });
                        f.next_at = werk_core::time::format_millis(j.at);
                    }
                    _ => {}
                }
                j
            })
            .collect())
    }

    /// A job's time in the set of `state` when it was imported with `at`: `at` (scheduled,
    /// retry), `at` + `dead_retention` (dead: when it is purged, as for a job that died here).
    pub fn set_time(state: JobState, at: Millis, dead_retention: Millis) -> Millis {
        match state {
            JobState::Dead => at.saturating_add(dead_retention),
            _ => at,
        }
    }
}

/// What [`Store::import`] did with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored in its state.
    Stored,
    /// A job with this jid is stored already (an import run again): nothing changed.
    AlreadyStored,
}

/// A stored job and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    pub jid: String,
    pub state: JobState,
    pub queue: String,
    pub jobtype: String,
    /// The job's JSON as it will be served (`enqueued_at`, `failure` up to date).
    pub payload: String,
    /// The time the state is ordered by: `at` (scheduled), `reserved_until` (working),
    /// `failure.next_at` (retry), `dead_until` (dead); for `enqueued`, the enqueue time.
    pub at: Millis,
    /// For `working` jobs: when it was reserved and by which worker process (may be empty).
    pub reservation: Option<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub reserved_at: Millis,
    pub expires_at: Millis,
    pub wid: String,
}

/// The outcome of [`Store::fire_cron`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronFire {
    /// The job was stored and the tick recorded, in one commit.
    Fired,
    /// The entry already fired for this tick or a later one: nothing changed.
    AlreadyFired,
    /// The tick was recorded but the job was refused (its PUSH error); it will not be retried.
    Refused(PushError),
}

/// How long an uncommitted batch waits for its `BATCH COMMIT` (from `BATCH NEW` or
/// `BATCH OPEN`) before it expires and never fires (Faktory: 30 minutes).
pub const BATCH_COMMIT_DEADLINE: Millis = 30 * 60 * 1000;
/// How long a batch is kept after it succeeded (its success callback was ACKed or, without one,
/// its success condition held). A batch that has not succeeded is kept for
/// [`StoreConfig::dead_retention`] after its last change (a member job's push, finish, a
/// callback, a child's progress, OPEN, COMMIT). An uncommitted batch past its deadline is
/// dropped by the sweep and its parent stops waiting for it. A member job removed otherwise
/// than by ACK, FAIL or expiry (MUTATE delete, QUEUE REMOVE, dead-job purge) stays pending.
pub const BATCH_RETENTION: Millis = 7 * 24 * 3600 * 1000;
pub use werk_core::tracking::{TrackState, TRACK_RETENTION};

/// `BATCH NEW`, as validated by the server.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The new batch id (chosen by the caller, unique).
    pub bid: String,
    /// The parent batch: it must exist; its callbacks then wait for this batch's.
    pub parent_bid: Option<String>,
    pub description: Option<String>,
    /// The callback jobs, validated for push. At least one is present.
    pub complete: Option<Job>,
    pub success: Option<Job>,
}

/// A batch callback's state, as `BATCH STATUS` shows it (`complete_st` / `success_st`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackState {
    /// Not enqueued yet (`""`). Also always shown for a callback the batch does not have.
    Pending,
    /// The callback job was enqueued (`"1"`); it stays so while it fails and retries.
    Enqueued,
    /// The callback job was ACKed (`"2"`).
    Succeeded,
}

impl CallbackState {
    /// The wire form: `""`, `"1"`, `"2"`.
    pub fn wire(self) -> &'static str {
        match self {
            CallbackState::Pending => "",
            CallbackState::Enqueued => "1",
            CallbackState::Succeeded => "2",
        }
    }
}

/// `BATCH STATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    pub bid: String,
    pub parent_bid: Option<String>,
    pub description: Option<String>,
    pub created_at: Millis,
    /// `created_at` as served: RFC 3339 with nanoseconds, never before BATCH NEW arrived
    /// ([`werk_core::time::format_stamp`]).
    pub created_stamp: String,
    /// Committed and not reopened.
    pub committed: bool,
    /// Jobs pushed into this batch (child batches' jobs are not counted).
    pub total: u64,
    /// Jobs that have not finished (ACK or FAIL) even once.
    pub pending: u64,
    /// Jobs whose last run failed and that have not succeeded since.
    pub failed: u64,
    pub complete_st: CallbackState,
    pub success_st: CallbackState,
}

/// Why a batch command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Unknown, expired before its commit, or purged after it finished. The text matches
    /// Faktory's (the Rust client's `open_batch` looks for `No such batch`).
    #[error("No such batch {0}")]
    NoSuchBatch(String),
}

/// `TRACK SET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackUpdate {
    pub jid: String,
    /// 0–100; `None` keeps the last value.
    pub percent: Option<u8>,
    /// `None` keeps the last value.
    pub desc: Option<String>,
    /// Extends a working job's reservation to this time (never shortens it; at most one day
    /// after now).
    pub reserve_until: Option<Millis>,
}

/// `TRACK GET` of a tracked job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub jid: String,
    pub state: TrackState,
    pub percent: Option<u8>,
    pub desc: Option<String>,
    /// The last push, fetch, ACK, FAIL or TRACK SET of the job.
    pub updated_at: Millis,
}

pub use werk_core::throttle::{Throttle, ThrottleLimit};

/// A position in a state's order, for keyset paging: the job's order key (`score`: enqueue
/// sequence number for enqueued jobs, else [`StoredJob::at`]) and a backend-specific tie-breaker
/// (a row id). Opaque to callers; [`std::fmt::Display`] / [`std::str::FromStr`] give a URL-safe
/// form (`"<score>.<id>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub score: i64,
    pub id: i64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.score, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Cursor, String> {
        let (a, b) = s
            .split_once('.')
            .ok_or_else(|| format!("bad cursor {s:?}"))?;
        Ok(Cursor {
            score: a.parse().map_err(|_| format!("bad cursor {s:?}"))?,
            id: b.parse().map_err(|_| format!("bad cursor {s:?}"))?,
        })
    }
}

/// What a page shows: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Exactly this queue.
    pub queue: Option<String>,
    /// Exactly this jobtype.
    pub jobtype: Option<String>,
    /// Exactly this jid.
    pub jid: Option<String>,
    /// An ASCII-case-insensitive substring of the job's stored JSON (args, custom, the error
    /// message and backtrace, ...).
    pub text: Option<String>,
}

/// One page of one state's jobs ([`Store::page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub state: JobState,
    pub filter: JobFilter,
    /// Start after this position (`None`: from the first job).
    pub after: Option<Cursor>,
    pub limit: u64,
}

/// A page of jobs and the cursor of the next page (`None`: this is the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<(Cursor, StoredJob)>,
    pub next: Option<Cursor>,
}

/// The outcome of an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The job was working and is now gone; `processed` was counted.
    Acked,
    /// A late ACK: the job was no longer working but enqueued, in the retry set or dead (its
    /// reservation expired while the worker still ran it, or the reservation of an early FETCH
    /// was never committed). The worker reports it done, so it is removed (→ gone, `processed`
    /// counted): an ACK answered `+OK` is never followed by another delivery. Faktory answers
    /// `+OK` here too but leaves the job to run again.
    AckedLate(JobState),
    /// No job has this jid (already acknowledged, discarded, never pushed), or it is
    /// scheduled (never delivered). Nothing changed.
    NotWorking,
}

/// The outcome of a FAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReply {
    /// The job was working; it went where the retry policy says.
    Failed(FailOutcome),
    /// No working job has this jid. Nothing changed.
    NotWorking,
}

/// Which queues a QUEUE command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSelector {
    /// `*`: every known queue.
    All,
    Names(Vec<String>),
}

/// MUTATE's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutateOp {
    /// Remove the whole set (the filter is ignored).
    Clear,
    /// Remove matching entries (no filter at all ⇒ the same as clear).
    Discard,
    /// Move matching entries to the dead set.
    Kill,
    /// Move matching entries to their queue.
    Requeue,
}

/// MUTATE's filter. Priority: `jids` (when non-empty, the others are ignored), then `regexp`
/// (a glob over the stored JSON, `*` `?` `[...]`) and/or `jobtype`, else everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutateFilter {
    pub jids: Vec<String>,
    pub regexp: Option<String>,
    pub jobtype: Option<String>,
}

/// A MUTATE request. `target` is one of `Scheduled`, `Retry` or `Dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub op: MutateOp,
    pub target: JobState,
    pub filter: Option<MutateFilter>,
}

/// One known queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub name: String,
    pub size: u64,
    pub paused: bool,
}

/// Sizes and counters, as of the last commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Known queues (ever enqueued to and not removed), sorted by name.
    pub queues: Vec<QueueStats>,
    pub scheduled: u64,
    pub retries: u64,
    pub dead: u64,
    pub working: u64,
    /// ACKs plus failures.
    pub processed: u64,
    pub failures: u64,
    /// Jobs dropped because they expired ([`Job::expiry`]) before a worker fetched them.
    pub expired: u64,
}

impl Stats {
    pub fn enqueued(&self) -> u64 {
        self.queues.iter().map(|q| q.size).sum()
    }
}

/// One day of history (day in the server's local time zone, `YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayStats {
    pub day: String,
    pub processed: u64,
    pub failures: u64,
}

/// Told after commit about every job that became fetchable, so blocked FETCHes wake at once.
pub trait EnqueueListener: Send + Sync + 'static {
    fn enqueued(&self, queue: &str);

    /// Wakes every blocked FETCH, whatever its queues, to look again: a shared store calls it
    /// when it may have missed enqueues (its cross-node listener was lost or is back).
    fn wake_all(&self) {}
}

/// A listener that ignores everything.
pub struct NoListener;
impl EnqueueListener for NoListener {
    fn enqueued(&self, _queue: &str) {}
}

pub type Listener = Arc<dyn EnqueueListener>;

/// Settings every backend honours.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How long a dead job is kept (ms). Faktory: 180 days.
    pub dead_retention: Millis,
    /// Multiplies retry backoff delays and reservation lengths. 1.0 in production; tests and
    /// the torture harness compress time with e.g. 0.01 (a 60 s reservation lasts 600 ms).
    pub time_scale: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dead_retention: 180 * 24 * 3600 * 1000,
            time_scale: 1.0,
        }
    }
}

impl StoreConfig {
    /// A duration in ms after [`StoreConfig::time_scale`] (at least 1 ms).
    pub fn scaled(&self, ms: Millis) -> Millis {
        if self.time_scale == 1.0 {
            ms
        } else {
            ((ms as f64 * self.time_scale) as Millis).max(1)
        }
    }
}

/// A worker process: a client whose HELLO carried a `wid` (the Busy page's row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub wid: String,
    pub hostname: String,
    pub pid: i64,
    pub labels: Vec<String>,
    /// When the first connection of the process registered (HELLO).
    pub started_at: Millis,
    /// Its last BEAT (the registration time until the first BEAT).
    pub last_beat: Millis,
    pub state: WorkerState,
    /// The `rss_kb` of its last BEAT (0 until one reports it).
    pub rss_kb: i64,
    /// Its open connections (in the shared registry: summed over the nodes that are alive).
    pub connections: usize,
}

/// What a HELLO with a `wid` says about the worker process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHello {
    pub wid: String,
    pub hostname: String,
    pub pid: i64,
    pub labels: Vec<String>,
}

/// The outcome of [`Store::worker_sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSync {
    /// Workers this call removed because their last BEAT (on any node) was before the cutoff.
    pub expired: usize,
    /// For each wid asked about, in order: its state, or `None` when it is no longer registered
    /// (expired, or its last connection closed): this node then closes its connections of it.
    pub states: Vec<Option<WorkerState>>,
}

fn no_shared_workers<T>() -> Result<T> {
    Err(StoreError::Backend(
        "this store keeps no shared worker registry (the server keeps it in memory)".into(),
    ))
}

/// A storage backend. Every mutating method resolves only after its change is durable.
pub trait Store: Send + Sync + 'static {
    /// (new) → enqueued, or → scheduled when `at` is in the future. Each job is independent: one
    /// result per job, in order (a duplicate jid is refused, others still stored).
    ///
    /// A job with a uniqueness lock ([`Job::uniqueness`]) is refused with
    /// [`PushError::NotUnique`] while another job holds its identity's lock (unexpired);
    /// otherwise it takes the lock in the same commit. The lock is released, in the commit of
    /// the job's move, by its ACK (or its FETCH for `unique_until = "start"`) and by automatic
    /// death or discard on FAIL/expiry of the reservation; a failure with retries left, a manual
    /// kill or delete keep it until it runs out.
    fn push(
        &self,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<std::result::Result<(), PushError>>>> + Send;

    /// enqueued → working for the oldest job of the first non-empty, unpaused queue of `queues`
    /// (in the given order), reserved until now + clamp(`reserve_for`). `None` if all are empty.
    /// An expired job ([`Job::expiry`] ≤ now, computed at push) met on the way is dropped
    /// (enqueued → gone, counted in [`Stats::expired`]) and the fetch goes on.
    fn fetch(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> impl Future<Output = Result<Option<StoredJob>>> + Send;

    /// [`Store::fetch`] that may resolve before the reservation is durable (the server uses
    /// it to answer FETCH without waiting for an fsync). A crash before the reservation is
    /// committed leaves the job enqueued, so it is delivered again: never lost. A read right
    /// after it may not see the reservation yet, but every change requested after it resolves
    /// (ACK, FAIL, ...) is applied after it.
    /// Backends without a cheaper path keep this default.
    fn fetch_early(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> impl Future<Output = Result<Option<StoredJob>>> + Send {
        self.fetch(queues, wid, now)
    }

    /// working → gone; a late ACK also takes an enqueued, retry or dead job → gone
    /// ([`AckOutcome::AckedLate`]).
    fn ack(&self, jid: String, now: Millis) -> impl Future<Output = Result<AckOutcome>> + Send;

    /// working → retry / dead / gone, by the retry policy.
    fn fail(
        &self,
        jid: String,
        info: FailInfo,
        now: Millis,
    ) -> impl Future<Output = Result<FailReply>> + Send;

    /// scheduled (`at` ≤ now) and retry (`next_at` ≤ now) → enqueued, at most `limit` jobs.
    /// Returns how many moved.
    fn promote_due(&self, now: Millis, limit: usize) -> impl Future<Output = Result<usize>> + Send;

    /// working with `reserved_until` ≤ now → as a FAIL with `ReservationExpired`, at most
    /// `limit` jobs. Returns how many.
    fn reap_expired(&self, now: Millis, limit: usize)
        -> impl Future<Output = Result<usize>> + Send;

    /// enqueued and expired ([`Job::expiry`] ≤ now) → gone, at most `limit`, counted in
    /// [`Stats::expired`]: expired jobs do not pile up in queues nobody fetches. Returns how many.
    /// The same pass drops (at most `limit` each) expired unique locks, uncommitted batches
    /// past their deadline, batches past their retention ([`BATCH_RETENTION`]) and tracking
    /// data of gone jobs past [`TRACK_RETENTION`].
    fn sweep_expired(
        &self,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<usize>> + Send;

    /// dead with `dead_until` ≤ now → gone, at most `limit`. Returns how many.
    fn purge_dead(&self, now: Millis, limit: usize) -> impl Future<Output = Result<usize>> + Send;

    /// MUTATE. Returns how many jobs were affected.
    fn mutate(&self, m: Mutation, now: Millis) -> impl Future<Output = Result<u64>> + Send;

    /// QUEUE PAUSE / RESUME. Unknown queues are ignored. Persisted.
    fn set_paused(
        &self,
        queues: QueueSelector,
        paused: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// QUEUE REMOVE: the queues' jobs → gone, and the queues are forgotten. Returns jobs removed.
    fn remove_queues(&self, queues: QueueSelector) -> impl Future<Output = Result<u64>> + Send;

    /// QUEUE LATENCY: for each queue, seconds since the `enqueued_at` of its next job; 0 for
    /// empty or unknown queues.
    fn queue_latency(
        &self,
        queues: Vec<String>,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<f64>>> + Send;

    /// FLUSH: everything → gone (jobs, queues, paused flags, counters, history).
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;

    /// Queue sizes, set sizes and counters.
    fn stats(&self) -> impl Future<Output = Result<Stats>> + Send;

    /// Daily processed/failed counts for the `days` days up to and including `today`'s day,
    /// oldest first, days without activity included with zeros.
    fn history(
        &self,
        days: u32,
        today: Millis,
    ) -> impl Future<Output = Result<Vec<DayStats>>> + Send;

    /// One job by jid, wherever it is.
    fn get(&self, jid: String) -> impl Future<Output = Result<Option<StoredJob>>> + Send;

    /// A page of one state's jobs in that state's order (for `Enqueued`, optionally one queue).
    fn list(
        &self,
        state: JobState,
        queue: Option<String>,
        offset: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<StoredJob>>> + Send;

    /// A page of one state's jobs matching `filter`, in the state's order — enqueued jobs in
    /// enqueue order (across queues: the global enqueue sequence), the sets by their time —
    /// with ties broken by the backend's row order, after `after`. Keyset paging: the cost does
    /// not grow with the page number, and a page stays correct while jobs move.
    fn page(&self, q: PageQuery) -> impl Future<Output = Result<Page>> + Send;

    /// Stores jobs taken over from another server, each in its state (see [`ImportedJob`]), in
    /// order, in one commit: enqueued jobs go to their queue's tail in the order given (the
    /// queue becomes known), the others into their set at `at`. A jid already stored, or
    /// twice in `jobs`, is [`ImportOutcome::AlreadyStored`] and changes nothing, so an import
    /// can be run again. Imported jobs take no uniqueness lock, belong to no batch and are
    /// not tracked; they count in no processed/failed total. A state other than enqueued,
    /// scheduled, retry or dead is an error, and nothing is stored.
    fn import(
        &self,
        jobs: Vec<ImportedJob>,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<ImportOutcome>>> + Send;

    /// Deletes the jobs with these jids that are in `state` (enqueued, scheduled, retry or
    /// dead; working jobs are never deleted this way): → gone, as MUTATE discard does for the
    /// sets. Returns how many.
    fn delete_jobs(
        &self,
        state: JobState,
        jids: Vec<String>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Cron: one tick of one entry. In one commit: if `entry` has not fired for `tick` or a
    /// later tick, push `job` (as [`Store::push`] would) and record `tick` as the entry's last
    /// tick; otherwise change nothing. So a tick is enqueued exactly once however often it is
    /// tried, across crashes and restarts and by several nodes at once. Fire records survive
    /// FLUSH (they describe the configuration, not the jobs).
    fn fire_cron(
        &self,
        entry: String,
        tick: Millis,
        job: NewJob,
        now: Millis,
    ) -> impl Future<Output = Result<CronFire>> + Send;

    /// The last tick recorded by [`Store::fire_cron`] for each entry (`None`: never fired).
    fn cron_last_fired(
        &self,
        entries: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Option<Millis>>>> + Send;

    /// BATCH NEW: creates an uncommitted batch (it expires [`BATCH_COMMIT_DEADLINE`] after
    /// `now` unless committed), created at `now`. A parent must exist; the new batch is its
    /// child: the parent's callbacks wait for the child's (see [`Store::batch_commit`]).
    fn batch_new(
        &self,
        batch: NewBatch,
        now: Millis,
    ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send;

    /// BATCH OPEN: the batch is uncommitted again (until `now` + [`BATCH_COMMIT_DEADLINE`]) so
    /// jobs and child batches can be added; callbacks that already fired never fire again.
    fn batch_open(
        &self,
        bid: String,
        now: Millis,
    ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send;

    /// BATCH COMMIT: the batch is committed, and its callbacks fire if it is already done.
    ///
    /// The rules, checked in the same commit as every change they depend on (commit, a member
    /// job's ACK, FAIL, expiry, a callback's ACK, a child's progress):
    /// * A member job (pushed with `custom.bid`) counts in `total` and `pending` at push. Its
    ///   first ACK or FAIL (or its expiry) takes it out of `pending`; a FAIL (or expiry) puts
    ///   it in `failed` until an ACK takes it out again.
    /// * **complete**: when the batch is committed, `pending` = 0 and every child batch is
    ///   complete, its complete callback is enqueued (`"1"`); the batch is complete when that
    ///   callback is ACKed (`"2"`) — at once if it has none.
    /// * **success**: when the batch is complete, `pending` = 0, `failed` = 0 and every child
    ///   batch has succeeded, its success callback is enqueued; the batch has succeeded when
    ///   that is ACKed — at once if it has none.
    /// * Each callback is enqueued at most once. Callback jobs of a child batch get
    ///   `custom._pbid` = the parent's bid; they are not members of any batch.
    fn batch_commit(
        &self,
        bid: String,
        now: Millis,
    ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send;

    /// BATCH STATUS (`None`: no such batch, as for [`BatchError::NoSuchBatch`]).
    fn batch_status(
        &self,
        bid: String,
        now: Millis,
    ) -> impl Future<Output = Result<Option<BatchStatus>>> + Send;

    /// Batches, newest first (by `created_at`, then bid, both descending), strictly after
    /// `after` (the `(created_at, bid)` of the previous page's last batch), at most `limit`.
    /// Uncommitted batches past their deadline are not listed.
    fn list_batches(
        &self,
        after: Option<(Millis, String)>,
        limit: u64,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<BatchStatus>>> + Send;

    /// TRACK SET: stores `percent` / `desc` of a tracked job (pushed with `custom.track` = 1;
    /// ignored for others) and extends a working job's reservation to `reserve_until` (tracked
    /// or not; capped at now + 24 h, never shortened). Returns whether anything was stored.
    fn track_set(
        &self,
        update: TrackUpdate,
        now: Millis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// TRACK GET: `None` for a job that is not tracked, unknown, or gone for longer than
    /// [`TRACK_RETENTION`] since its last update.
    fn track_get(
        &self,
        jid: String,
        now: Millis,
    ) -> impl Future<Output = Result<Option<Tracked>>> + Send;

    /// Replaces the throttles [`Store::fetch`] obeys: a FETCH treats a throttled queue as
    /// empty while its limit is reached (counting the queue's working jobs fetched less than
    /// `timeout` ago, all of them or, for [`ThrottleLimit::PerWorker`], the fetching wid's).
    /// Configuration, not data: not persisted.
    fn set_throttles(&self, throttles: Vec<Throttle>);

    /// How long a blocked FETCH may wait for a wake-up before it looks again by itself. `None`
    /// (the default): the listener hears of every enqueue, so a FETCH waits up to its timeout.
    /// A shared store returns an interval while it cannot hear other nodes' enqueues.
    fn wake_poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether the store can serve requests now (the web UI's `/health`): `Err` says why not,
    /// e.g. the database is unreachable. The embedded stores are always reachable.
    fn health(&self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    // ---- the shared worker registry --------------------------------------------------------
    //
    // Worker processes (HELLO with a `wid`, BEAT, quiet/terminate, heartbeat expiry) are soft
    // state. A store that serves a single node (SQLite, memory) leaves them to the server, which
    // keeps them in memory as Faktory does: these methods keep their defaults and are never
    // called. A store that several nodes share (PostgreSQL) keeps one registry for the whole
    // cluster, so a worker process whose connections land on different nodes is one worker.
    // Each store instance is one node: it tells its own connections apart from other nodes'.
    // The state rule is [`WorkerState::advance`] (only forward), applied by the store.

    /// Whether the worker registry is kept by the store, for every node ([`Store::worker_hello`]
    /// and the methods after it), rather than by the server in memory.
    fn shared_workers(&self) -> bool {
        false
    }

    /// HELLO with a `wid`: registers connection `conn` (an id unique on this node) of the worker
    /// process. The first connection of a wid creates the worker (running, `started_at` =
    /// `last_beat` = `now`); later ones, on any node, join it. Returns the worker's state.
    fn worker_hello(
        &self,
        hello: WorkerHello,
        conn: u64,
        now: Millis,
    ) -> impl Future<Output = Result<WorkerState>> + Send {
        let _ = (hello, conn, now);
        async { no_shared_workers() }
    }

    /// A registered connection of this node closed. The worker goes with its last connection on
    /// the nodes alive since `alive_since` (this node counts as alive).
    fn worker_bye(
        &self,
        wid: String,
        conn: u64,
        alive_since: Millis,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (wid, conn, alive_since);
        async { no_shared_workers() }
    }

    /// BEAT: records the heartbeat (`last_beat` = `now`, `rss_kb`) and advances the state by
    /// `requested`; returns the new state, which reflects a quiet or terminate signalled through
    /// any node. `None` if the wid is not registered.
    fn worker_beat(
        &self,
        wid: String,
        requested: WorkerState,
        rss_kb: i64,
        now: Millis,
    ) -> impl Future<Output = Result<Option<WorkerState>>> + Send {
        let _ = (wid, requested, rss_kb, now);
        async { no_shared_workers() }
    }

    /// Moves one worker (or every one, with `None`) forward to `to` (the web UI's quiet /
    /// terminate). Returns how many workers it matched.
    fn worker_signal(
        &self,
        wid: Option<String>,
        to: WorkerState,
    ) -> impl Future<Output = Result<usize>> + Send {
        let _ = (wid, to);
        async { no_shared_workers() }
    }

    /// The registered workers with at least one connection on a node alive since `alive_since`
    /// (this node counts as alive), sorted by wid; `connections` sums those nodes' connections.
    fn worker_list(
        &self,
        alive_since: Millis,
    ) -> impl Future<Output = Result<Vec<WorkerInfo>>> + Send {
        let _ = alive_since;
        async { no_shared_workers() }
    }

    /// The periodic step each node runs (more often than `now - cutoff`): records that this
    /// node is alive at `now` (its connections count for the others while its last sync is at or
    /// after their cutoff); removes the workers whose last BEAT, on any node, is before `cutoff`
    /// (heartbeat expiry) and nodes silent since before `cutoff` that hold no connection; and
    /// reads the state of `wids` (this node's workers) for its FETCH check.
    fn worker_sync(
        &self,
        wids: Vec<String>,
        cutoff: Millis,
        now: Millis,
    ) -> impl Future<Output = Result<WorkerSync>> + Send {
        let _ = (wids, cutoff, now);
        async { no_shared_workers() }
    }

    /// Waits until every accepted request is committed and stops taking new ones.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
