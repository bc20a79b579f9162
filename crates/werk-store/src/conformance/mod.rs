//! The backend conformance suite: the rules of `shared/job-state-machine.md` and of the
//! [`Store`] contract, as tests any backend runs.
//!
//! A backend implements [`Harness`] (create a fresh store, reopen it as after a crash) and expands
//! [`conformance_tests!`](crate::conformance_tests) once in a test file:
//!
//! ```ignore
//! werk_store::conformance_tests!(SqliteHarness);
//! ```
//!
//! That expands to one `#[test]` per rule, each calling the `pub async fn` of the same name in
//! this module on a tokio runtime. The clock is fake: every case drives `now` from [`T0`].
//!
//! The cases live in one file per topic (`push.rs`, `fetch.rs`, `ack_fail.rs`, `sets.rs`,
//! `mutate.rs`, …, `model.rs` for the randomized model-based test), re-exported here; this file
//! holds what they share: [`Harness`], [`Ctx`], the helpers and the invariant checker. The
//! in-memory reference store that the suite must pass is the `werk-store-memory` crate.
//!
//! Every case ends with [`Ctx::finish`]: the cross-check of `stats` against `list` and `get`
//! ([`check_consistency`]), then a crash-reopen after which everything must be exactly as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use werk_core::job::reservation_seconds;
use werk_core::retry::backoff_seconds;
use werk_core::time::{format_millis, format_stamp, local_day, parse_rfc3339};
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis, PushError};

use crate::{
    AckOutcome, BatchError, BatchStatus, CallbackState, CronFire, Cursor, DayStats,
    EnqueueListener, FailReply, JobFilter, Listener, MutateFilter, MutateOp, Mutation, NewBatch,
    NewJob, Page, PageQuery, QueueSelector, QueueStats, Stats, Store, StoreConfig, StoreError,
    StoredJob, Throttle, ThrottleLimit, TrackState, TrackUpdate, Tracked, BATCH_COMMIT_DEADLINE,
    BATCH_RETENTION, TRACK_RETENTION,
};

use JobState::{Dead, Enqueued, Retry, Scheduled, Working};

// The cases, one file per topic; `conformance_tests!` names them as `conformance::<case>`.
mod ack_fail;
mod batches;
mod concurrency;
mod cron;
mod durability;
mod expiry;
mod fetch;
mod import;
mod model;
mod mutate;
mod paging;
mod push;
mod queues;
mod sets;
mod stats;
mod throttles;
mod tracking;
mod unique;

pub use ack_fail::*;
pub use batches::*;
pub use concurrency::*;
pub use cron::*;
pub use durability::*;
pub use expiry::*;
pub use fetch::*;
pub use import::*;
pub use model::*;
pub use mutate::*;
pub use paging::*;
pub use push::*;
pub use queues::*;
pub use sets::*;
pub use stats::*;
pub use throttles::*;
pub use tracking::*;
pub use unique::*;

/// What a backend provides to run the suite.
pub trait Harness: Sized + Send + Sync + 'static {
    type S: crate::Store;
    /// A fresh, empty store in its own temporary location, with this config and listener.
    fn create(
        config: crate::StoreConfig,
        listener: crate::Listener,
    ) -> impl std::future::Future<Output = Self> + Send;
    fn store(&self) -> &Self::S;
    /// Crash the store and open its data again, with the same config and listener: the data as
    /// it is at that moment, without the store's close path (no final commit or checkpoint), as
    /// a killed process leaves it. Every request answered before the call must survive. (The
    /// SQLite harness opens a copy of the files on disk while the old store is abandoned; the
    /// in-memory reference store keeps its committed state.)
    fn reopen(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// An [`EnqueueListener`] that records every queue name it is told about.
#[derive(Debug, Default)]
pub struct RecordingListener {
    queues: Mutex<Vec<String>>,
}

impl RecordingListener {
    pub fn new() -> Arc<RecordingListener> {
        Arc::new(RecordingListener::default())
    }

    /// The queue names recorded since the last `take`, in order, and forgets them.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.queues.lock().unwrap())
    }
}

impl EnqueueListener for RecordingListener {
    fn enqueued(&self, queue: &str) {
        self.queues.lock().unwrap().push(queue.to_string());
    }
}

/// Runs one case on a fresh multi-threaded tokio runtime, with a generous timeout so a backend
/// that hangs fails instead of blocking the test run. Used by [`conformance_tests!`].
#[doc(hidden)]
pub fn run<F: Future<Output = ()>>(case: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if tokio::time::timeout(std::time::Duration::from_secs(300), case)
            .await
            .is_err()
        {
            panic!("conformance case did not finish within 300 s (a store call hangs?)");
        }
    });
}

/// Expands to one `#[test]` per conformance case for the given [`Harness`] type.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:ty) => {
        $crate::__conformance_cases!(
            $harness;
            push_enqueues_job,
            push_with_future_at_schedules_job,
            push_with_due_or_past_at_enqueues_job,
            push_batch_results_are_independent,
            push_duplicate_jid_is_refused,
            push_duplicate_jid_within_batch_is_refused,
            push_retry_of_stored_job_is_ok_and_changes_nothing,
            push_retry_of_unique_or_batch_member_is_ok,
            push_of_gone_jid_is_accepted,
            args_and_custom_survive_byte_for_byte,
            fetch_is_fifo_within_queue,
            fetch_takes_first_non_empty_queue_in_given_order,
            fetch_of_unknown_queue_is_fine,
            fetch_reserves_job,
            fetch_skips_paused_queues,
            pause_survives_reopen,
            set_paused_all_and_unknown_queues,
            reenqueued_jobs_go_to_back_of_queue,
            ack_removes_working_job_and_counts_processed,
            late_ack_of_enqueued_retry_or_dead_job_removes_it_and_counts_processed,
            ack_of_scheduled_gone_or_unknown_job_changes_nothing,
            fail_moves_job_to_retry_with_failure_info,
            second_failure_counts_up_and_keeps_failed_at,
            fail_with_retry_zero_discards_job,
            fail_with_negative_retry_kills_job,
            fail_with_retries_exhausted_kills_job,
            fail_of_job_not_working_changes_nothing,
            promote_due_moves_only_due_jobs,
            promote_due_refreshes_enqueued_at_and_keeps_failure,
            promote_due_respects_limit,
            reap_expired_fails_expired_reservations,
            reap_expired_follows_retry_policy,
            reap_expired_respects_limit,
            late_ack_after_reap_removes_job_and_counts_processed,
            late_fail_after_reap_changes_nothing,
            purge_dead_removes_only_expired_dead_jobs,
            mutate_clear_empties_target_only,
            mutate_discard_without_filter_clears_target,
            mutate_kill_moves_jobs_to_dead,
            mutate_requeue_moves_jobs_to_their_queue,
            mutate_filter_jids_take_priority,
            mutate_filter_by_jobtype,
            mutate_filter_by_glob,
            mutate_filter_is_a_redis_glob,
            mutate_never_touches_other_states,
            remove_queues_deletes_enqueued_jobs_and_forgets_queue,
            remove_all_queues,
            queue_latency_measures_oldest_job,
            flush_wipes_everything,
            stats_list_known_queues_sorted_with_sizes,
            history_has_one_entry_per_day_oldest_first,
            every_state_survives_reopen,
            list_pages_in_state_order,
            get_reports_each_state,
            job_is_in_exactly_one_state_through_its_life,
            page_walks_each_state_in_order,
            page_filters_by_queue_jobtype_jid_and_text,
            page_stays_correct_while_jobs_move,
            delete_jobs_removes_only_jobs_in_that_state,
            delete_jobs_keeps_unique_locks_and_batch_counts,
            concurrent_fetches_deliver_each_job_once,
            fetch_early_delivers_once_and_later_requests_see_it,
            concurrent_pushes_of_one_jid_store_it_once,
            racing_ack_fail_reap_requeue_remove_acked_keep_one_copy_of_failed,
            close_commits_accepted_requests_and_refuses_later_ones,
            random_operations_match_model,
            cron_tick_fires_once,
            cron_refused_job_still_records_tick,
            cron_fire_records_survive_reopen_and_flush,
            concurrent_cron_fires_of_one_tick_enqueue_once,
            expired_jobs_are_dropped_at_fetch_and_counted,
            sweep_removes_only_expired_enqueued_jobs,
            expiry_survives_reopen,
            unique_job_refuses_copies_until_it_succeeds,
            unique_until_start_releases_at_fetch,
            unique_lock_expires_after_unique_for,
            unique_lock_outlives_failures_but_not_death,
            unique_lock_survives_reopen,
            batch_new_then_status,
            push_into_unknown_or_expired_batch_is_refused,
            batch_complete_fires_when_all_jobs_finished_and_committed,
            batch_success_waits_for_complete_callback_ack,
            batch_with_failures_completes_but_succeeds_only_after_retry_succeeds,
            empty_batch_commit_fires_callbacks,
            batch_callbacks_fire_at_most_once,
            batch_callback_with_taken_jid_gets_fresh_jid,
            child_batch_holds_parent_callbacks,
            batch_counts_survive_reopen,
            uncommitted_batch_expires,
            list_batches_newest_first_in_pages,
            late_ack_and_reaper_count_for_batches,
            expired_member_job_counts_as_failed,
            finished_batches_are_purged_after_retention,
            tracking_follows_job_states,
            track_set_keeps_progress_and_extends_reservation,
            track_data_purged_after_retention,
            untracked_job_has_no_tracking,
            throttle_concurrency_limits_fetch,
            throttle_per_worker_limits_fetch,
            throttle_timeout_reclaims_slot,
            throttled_queue_falls_through_to_next_queue,
            flush_forgets_batches_and_tracking,
            import_stores_each_job_in_its_state,
            import_refuses_other_states_and_stores_nothing,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run($crate::conformance::$case::<$harness>());
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Clock, job specs and small helpers
// ---------------------------------------------------------------------------------------------

/// The fake clock's origin (2023-11-14T22:13:20Z).
pub const T0: Millis = 1_700_000_000_000;
pub const SEC: Millis = 1_000;
pub const MIN: Millis = 60 * SEC;
pub const HOUR: Millis = 60 * MIN;
pub const DAY: Millis = 24 * HOUR;

const DEFAULT_RETENTION: Millis = 180 * DAY;
const BIG: u64 = 1_000_000;
const WID: &str = "wid-conformance";

/// A job to push, built up field by field.
#[derive(Debug, Clone)]
pub struct Spec {
    jid: String,
    queue: String,
    jobtype: String,
    retry: Option<i64>,
    at: Option<Millis>,
    reserve_for: Option<i64>,
    args: String,
    custom: Option<String>,
}

pub fn spec(jid: &str) -> Spec {
    Spec {
        jid: jid.to_string(),
        queue: "default".to_string(),
        jobtype: "TestJob".to_string(),
        retry: None,
        at: None,
        reserve_for: None,
        args: r#"[1,"a"]"#.to_string(),
        custom: None,
    }
}

/// A JSON string literal.
pub fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Spec {
    pub fn queue(mut self, q: &str) -> Spec {
        self.queue = q.to_string();
        self
    }
    pub fn jobtype(mut self, t: &str) -> Spec {
        self.jobtype = t.to_string();
        self
    }
    pub fn retry(mut self, r: i64) -> Spec {
        self.retry = Some(r);
        self
    }
    pub fn at(mut self, at: Millis) -> Spec {
        self.at = Some(at);
        self
    }
    pub fn reserve_for(mut self, secs: i64) -> Spec {
        self.reserve_for = Some(secs);
        self
    }
    pub fn args(mut self, raw: &str) -> Spec {
        self.args = raw.to_string();
        self
    }
    pub fn custom(mut self, raw: &str) -> Spec {
        self.custom = Some(raw.to_string());
        self
    }

    pub fn json(&self) -> String {
        let mut f = vec![
            format!("\"jid\":{}", js(&self.jid)),
            format!("\"queue\":{}", js(&self.queue)),
            format!("\"jobtype\":{}", js(&self.jobtype)),
            format!("\"args\":{}", self.args),
        ];
        if let Some(r) = self.retry {
            f.push(format!("\"retry\":{r}"));
        }
        if let Some(at) = self.at {
            f.push(format!("\"at\":{}", js(&format_millis(at))));
        }
        if let Some(rf) = self.reserve_for {
            f.push(format!("\"reserve_for\":{rf}"));
        }
        if let Some(c) = &self.custom {
            f.push(format!("\"custom\":{c}"));
        }
        format!("{{{}}}", f.join(","))
    }

    pub fn new_job(&self, now: Millis) -> NewJob {
        let (job, at) = Job::parse_for_push(&self.json(), now)
            .unwrap_or_else(|e| panic!("suite bug: invalid job {}: {e}", self.json()));
        NewJob { job, at }
    }
}

pub fn boom() -> FailInfo {
    FailInfo::new(
        "RuntimeError",
        "boom",
        vec!["app.rb:1".into(), "app.rb:2".into()],
    )
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn payload(j: &StoredJob) -> Job {
    Job::from_stored(&j.payload)
        .unwrap_or_else(|e| panic!("payload of {} is not a job ({e}): {}", j.jid, j.payload))
}

fn ts(s: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
}

/// Pushes jobs in one call and asserts every one was accepted.
async fn push<S: Store>(s: &S, specs: &[Spec], now: Millis) {
    let res = s
        .push(specs.iter().map(|j| j.new_job(now)).collect(), now)
        .await
        .expect("push");
    assert_eq!(res.len(), specs.len(), "push returns one result per job");
    for (r, j) in res.iter().zip(specs) {
        assert!(r.is_ok(), "push of {} was refused: {r:?}", j.jid);
    }
}

/// Pushes jobs in one call and returns the per-job results.
async fn push_results<S: Store>(s: &S, specs: &[Spec], now: Millis) -> Vec<Result<(), PushError>> {
    let res = s
        .push(specs.iter().map(|j| j.new_job(now)).collect(), now)
        .await
        .expect("push");
    assert_eq!(res.len(), specs.len(), "push returns one result per job");
    res
}

async fn fetch<S: Store>(s: &S, queues: &[&str], now: Millis) -> Option<StoredJob> {
    s.fetch(strings(queues), WID.to_string(), now)
        .await
        .expect("fetch")
}

async fn fetch_jid<S: Store>(s: &S, queues: &[&str], now: Millis) -> Option<String> {
    fetch(s, queues, now).await.map(|j| j.jid)
}

async fn ack<S: Store>(s: &S, jid: &str, now: Millis) -> AckOutcome {
    s.ack(jid.to_string(), now).await.expect("ack")
}

async fn fail<S: Store>(s: &S, jid: &str, now: Millis) -> FailReply {
    s.fail(jid.to_string(), boom(), now).await.expect("fail")
}

async fn get<S: Store>(s: &S, jid: &str) -> Option<StoredJob> {
    s.get(jid.to_string()).await.expect("get")
}

async fn must_get<S: Store>(s: &S, jid: &str) -> StoredJob {
    get(s, jid)
        .await
        .unwrap_or_else(|| panic!("job {jid} should be stored but get() found nothing"))
}

async fn state_of<S: Store>(s: &S, jid: &str) -> Option<JobState> {
    get(s, jid).await.map(|j| j.state)
}

async fn stats<S: Store>(s: &S) -> Stats {
    s.stats().await.expect("stats")
}

async fn list<S: Store>(s: &S, state: JobState, queue: Option<&str>) -> Vec<StoredJob> {
    s.list(state, queue.map(str::to_string), 0, BIG)
        .await
        .expect("list")
}

async fn jids<S: Store>(s: &S, state: JobState, queue: Option<&str>) -> Vec<String> {
    list(s, state, queue)
        .await
        .into_iter()
        .map(|j| j.jid)
        .collect()
}

async fn mutate<S: Store>(
    s: &S,
    op: MutateOp,
    target: JobState,
    filter: Option<MutateFilter>,
    now: Millis,
) -> u64 {
    s.mutate(Mutation { op, target, filter }, now)
        .await
        .expect("mutate")
}

fn by_jids(jids: &[&str]) -> Option<MutateFilter> {
    Some(MutateFilter {
        jids: strings(jids),
        ..MutateFilter::default()
    })
}

async fn promote<S: Store>(s: &S, now: Millis) -> usize {
    s.promote_due(now, 1000).await.expect("promote_due")
}

async fn reap<S: Store>(s: &S, now: Millis) -> usize {
    s.reap_expired(now, 1000).await.expect("reap_expired")
}

async fn history<S: Store>(s: &S, days: u32, today: Millis) -> Vec<DayStats> {
    s.history(days, today).await.expect("history")
}

/// The counters (processed, failures) of `stats`.
async fn counters<S: Store>(s: &S) -> (u64, u64) {
    let st = stats(s).await;
    (st.processed, st.failures)
}

fn queue_stats(name: &str, size: u64, paused: bool) -> QueueStats {
    QueueStats {
        name: name.to_string(),
        size,
        paused,
    }
}

/// Puts a job into `state` by the ordinary transitions, at `now`, and returns it as stored.
///
/// Working, retry and dead jobs are pushed and fetched from their own queue, which must hold no
/// older job. Retry needs `retry` > 0 (the default is fine); dead uses the failure outcome when it
/// is dead (`retry` < 0), else a MUTATE kill of the retried job.
async fn put<S: Store>(s: &S, spec: &Spec, state: JobState, now: Millis) -> StoredJob {
    match state {
        Scheduled => {
            let sp = match spec.at {
                Some(_) => spec.clone(),
                None => spec.clone().at(now + HOUR),
            };
            assert!(
                sp.at.unwrap() > now,
                "suite bug: a scheduled job needs a future at"
            );
            push(s, &[sp], now).await;
        }
        Enqueued => push(s, std::slice::from_ref(spec), now).await,
        Working | Retry | Dead => {
            push(s, std::slice::from_ref(spec), now).await;
            let got = fetch(s, &[&spec.queue], now).await;
            assert_eq!(
                got.as_ref().map(|j| j.jid.as_str()),
                Some(spec.jid.as_str()),
                "fetch from queue {} right after pushing {} to it",
                spec.queue,
                spec.jid
            );
            if state != Working {
                match fail(s, &spec.jid, now).await {
                    FailReply::Failed(FailOutcome::Retry { .. }) if state == Dead => {
                        let n = mutate(s, MutateOp::Kill, Retry, by_jids(&[&spec.jid]), now).await;
                        assert_eq!(n, 1, "MUTATE kill of retry job {}", spec.jid);
                    }
                    FailReply::Failed(FailOutcome::Retry { .. }) => {}
                    FailReply::Failed(FailOutcome::Dead) if state == Dead => {}
                    other => panic!("FAIL of working job {} gave {other:?}", spec.jid),
                }
            }
        }
    }
    let got = must_get(s, &spec.jid).await;
    assert_eq!(
        got.state, state,
        "job {} after putting it in {state}",
        spec.jid
    );
    got
}

// ---------------------------------------------------------------------------------------------
// The invariant checker and the per-case context
// ---------------------------------------------------------------------------------------------

/// Checks what must hold after any sequence of operations:
/// * `stats` counts equal what `list` returns for each state, and each queue's size what
///   `list(Enqueued, Some(queue))` returns; known queues are sorted by name, each once;
/// * no jid is listed in two states, and `get` returns exactly what `list` returned;
/// * each listed job is consistent: state field, payload jid/queue/jobtype, reservation only
///   and always for working jobs, `at` matching the reservation / `failure.next_at` / `at`.
pub async fn check_consistency<S: Store>(s: &S) {
    let st = stats(s).await;
    let names: Vec<&str> = st.queues.iter().map(|q| q.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        names, sorted,
        "stats: known queues are sorted by name, each once"
    );

    let mut seen: HashMap<String, JobState> = HashMap::new();
    for state in JobState::ALL {
        let jobs = list(s, state, None).await;
        let want = match state {
            Scheduled => st.scheduled,
            Enqueued => st.enqueued(),
            Working => st.working,
            Retry => st.retries,
            Dead => st.dead,
        };
        assert_eq!(
            jobs.len() as u64,
            want,
            "stats says {want} {state} jobs but list({state}) returns {}: {:?}",
            jobs.len(),
            jobs.iter().map(|j| &j.jid).collect::<Vec<_>>()
        );
        for j in &jobs {
            assert_eq!(j.state, state, "job {} listed under {state}", j.jid);
            if let Some(prev) = seen.insert(j.jid.clone(), state) {
                panic!("job {} is in two states: {prev} and {state}", j.jid);
            }
            let g = get(s, &j.jid).await;
            assert_eq!(
                g.as_ref(),
                Some(j),
                "get({}) must agree with list({state})",
                j.jid
            );
            assert_eq!(
                j.reservation.is_some(),
                state == Working,
                "job {} in {state}: a reservation exactly for working jobs",
                j.jid
            );
            let job = payload(j);
            assert_eq!(job.jid, j.jid, "payload jid of {}", j.jid);
            assert_eq!(job.queue, j.queue, "payload queue of {}", j.jid);
            assert_eq!(job.jobtype, j.jobtype, "payload jobtype of {}", j.jid);
            match state {
                Working => assert_eq!(
                    j.at,
                    j.reservation.as_ref().unwrap().expires_at,
                    "a working job's at is its reservation expiry ({})",
                    j.jid
                ),
                Retry => {
                    let f = job
                        .failure
                        .as_ref()
                        .unwrap_or_else(|| panic!("retry job {} has no failure", j.jid));
                    assert_eq!(
                        ts(&f.next_at),
                        j.at,
                        "a retry job's at is failure.next_at ({})",
                        j.jid
                    );
                }
                Scheduled => {
                    assert_eq!(
                        ts(&job.at),
                        j.at,
                        "a scheduled job's at is its payload at ({})",
                        j.jid
                    )
                }
                Enqueued => assert!(
                    st.queues.iter().any(|q| q.name == j.queue),
                    "enqueued job {} is in queue {} which stats does not list",
                    j.jid,
                    j.queue
                ),
                Dead => {}
            }
        }
    }
    for q in &st.queues {
        let jobs = list(s, Enqueued, Some(&q.name)).await;
        assert_eq!(
            jobs.len() as u64,
            q.size,
            "stats says queue {} holds {} jobs but list returns {}",
            q.name,
            q.size,
            jobs.len()
        );
        for j in &jobs {
            assert_eq!(
                j.queue, q.name,
                "list(Enqueued, {}) returned {}",
                q.name, j.jid
            );
        }
    }
}

/// Everything observable about a store, to compare before and after a reopen.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: Stats,
    lists: BTreeMap<JobState, Vec<StoredJob>>,
    queues: BTreeMap<String, Vec<StoredJob>>,
    history: Vec<DayStats>,
}

async fn snapshot<S: Store>(s: &S, today: Millis) -> Snapshot {
    let stats = stats(s).await;
    let mut lists = BTreeMap::new();
    for state in JobState::ALL {
        lists.insert(state, list(s, state, None).await);
    }
    let mut queues = BTreeMap::new();
    for q in &stats.queues {
        queues.insert(q.name.clone(), list(s, Enqueued, Some(&q.name)).await);
    }
    let history = history(s, 14, today).await;
    Snapshot {
        stats,
        lists,
        queues,
        history,
    }
}

fn assert_same_snapshot(before: &Snapshot, after: &Snapshot, what: &str) {
    assert_eq!(before.stats, after.stats, "{what}: stats changed");
    for state in JobState::ALL {
        assert_eq!(
            before.lists[&state], after.lists[&state],
            "{what}: the {state} jobs changed"
        );
    }
    assert_eq!(
        before.queues, after.queues,
        "{what}: queue contents or order changed"
    );
    assert_eq!(before.history, after.history, "{what}: history changed");
}

/// A case's store, its listener and its config.
pub struct Ctx<H: Harness> {
    h: H,
    rec: Arc<RecordingListener>,
    cfg: StoreConfig,
    watched: Mutex<Watched>,
}

/// Batches and tracked jobs whose `batch_status` / `track_get` [`Ctx::finish`] compares across
/// its crash-reopen.
#[derive(Debug, Default)]
struct Watched {
    bids: BTreeSet<String>,
    tracked: BTreeSet<String>,
}

/// The batch and tracking state of the watched ids.
type Extras = (Vec<Option<BatchStatus>>, Vec<Option<Tracked>>);

impl<H: Harness> Ctx<H> {
    async fn new() -> Ctx<H> {
        Ctx::with_config(StoreConfig::default()).await
    }

    async fn with_config(cfg: StoreConfig) -> Ctx<H> {
        let rec = RecordingListener::new();
        let listener: Listener = rec.clone();
        let h = H::create(cfg.clone(), listener).await;
        Ctx {
            h,
            rec,
            cfg,
            watched: Mutex::default(),
        }
    }

    /// [`Ctx::finish`] also checks that these batches' status survives its crash-reopen.
    fn watch_batches(&self, bids: &[&str]) {
        let mut w = self.watched.lock().unwrap();
        w.bids.extend(bids.iter().map(|b| b.to_string()));
    }

    /// [`Ctx::finish`] also checks that these jobs' tracking data survives its crash-reopen.
    fn watch_tracked(&self, jids: &[&str]) {
        let mut w = self.watched.lock().unwrap();
        w.tracked.extend(jids.iter().map(|j| j.to_string()));
    }

    async fn extras(&self, now: Millis) -> Extras {
        let (bids, tracked) = {
            let w = self.watched.lock().unwrap();
            (w.bids.clone(), w.tracked.clone())
        };
        let mut batches = Vec::new();
        for bid in bids {
            batches.push(self.s().batch_status(bid, now).await.expect("batch_status"));
        }
        let mut tracks = Vec::new();
        for jid in tracked {
            tracks.push(self.s().track_get(jid, now).await.expect("track_get"));
        }
        (batches, tracks)
    }

    fn s(&self) -> &H::S {
        self.h.store()
    }

    async fn reopen(&mut self) {
        self.h.reopen().await;
    }

    /// Ends a case: consistency, then a crash-reopen must change nothing observable.
    async fn finish(mut self, now: Millis) {
        check_consistency(self.s()).await;
        let before = snapshot(self.s(), now).await;
        let extras_before = self.extras(now).await;
        self.h.reopen().await;
        let after = snapshot(self.s(), now).await;
        assert_same_snapshot(
            &before,
            &after,
            "after a crash-reopen at the end of the case",
        );
        let extras_after = self.extras(now).await;
        assert_eq!(
            extras_before.0, extras_after.0,
            "after a crash-reopen at the end of the case: batch status changed"
        );
        assert_eq!(
            extras_before.1, extras_after.1,
            "after a crash-reopen at the end of the case: tracking data changed"
        );
        check_consistency(self.s()).await;
    }
}
