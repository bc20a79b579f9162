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
struct Spec {
    jid: String,
    queue: String,
    jobtype: String,
    retry: Option<i64>,
    at: Option<Millis>,
    reserve_for: Option<i64>,
    args: String,
    custom: Option<String>,
}

fn spec(jid: &str) -> Spec {
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

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Spec {
    fn queue(mut self, q: &str) -> Spec {
        self.queue = q.to_string();
        self
    }
    fn jobtype(mut self, t: &str) -> Spec {
        self.jobtype = t.to_string();
        self
    }
    fn retry(mut self, r: i64) -> Spec {
        self.retry = Some(r);
        self
    }
    fn at(mut self, at: Millis) -> Spec {
        self.at = Some(at);
        self
    }
    fn reserve_for(mut self, secs: i64) -> Spec {
        self.reserve_for = Some(secs);
        self
    }
    fn args(mut self, raw: &str) -> Spec {
        self.args = raw.to_string();
        self
    }
    fn custom(mut self, raw: &str) -> Spec {
        self.custom = Some(raw.to_string());
        self
    }

    fn json(&self) -> String {
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

    fn new_job(&self, now: Millis) -> NewJob {
        let (job, at) = Job::parse_for_push(&self.json(), now)
            .unwrap_or_else(|e| panic!("suite bug: invalid job {}: {e}", self.json()));
        NewJob { job, at }
    }
}

fn boom() -> FailInfo {
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

// ---------------------------------------------------------------------------------------------
// PUSH / PUSHB
// ---------------------------------------------------------------------------------------------

/// PUSH without `at`: (new) → enqueued, in stats, get and list, the listener told the queue, the
/// payload stamped with `enqueued_at`.
pub async fn push_enqueues_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[spec("jid-push-0001").queue("mail").jobtype("SendMail")],
        T0,
    )
    .await;

    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("mail", 1, false)],
        "stats after one push"
    );
    assert_eq!(
        (
            st.scheduled,
            st.retries,
            st.dead,
            st.working,
            st.processed,
            st.failures
        ),
        (0, 0, 0, 0, 0, 0),
        "stats after one push"
    );
    let got = must_get(s, "jid-push-0001").await;
    assert_eq!(got.state, Enqueued);
    assert_eq!(
        (got.queue.as_str(), got.jobtype.as_str()),
        ("mail", "SendMail")
    );
    assert_eq!(got.at, T0, "an enqueued job's at is its enqueue time");
    assert_eq!(got.reservation, None);
    let job = payload(&got);
    assert_eq!(parse_rfc3339(&job.enqueued_at), Ok(T0), "payload enqueued_at");
    // Written like Faktory, with nanoseconds, never before the push (parses back to it).
    assert_eq!(parse_rfc3339(&job.created_at), Ok(T0), "payload created_at");
    assert!(job.failure.is_none());
    assert_eq!(jids(s, Enqueued, Some("mail")).await, vec!["jid-push-0001"]);
    assert_eq!(jids(s, Enqueued, None).await, vec!["jid-push-0001"]);
    assert!(
        c.rec.take().iter().any(|q| q == "mail"),
        "the listener must be told about the queue a pushed job was enqueued to"
    );
    c.finish(T0).await;
}

/// PUSH with a future `at`: (new) → scheduled, not fetchable, ordered by `at`; the queue is not
/// created by a scheduled job.
pub async fn push_with_future_at_schedules_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let at = T0 + 10 * MIN;
    push(s, &[spec("jid-sched-0001").queue("later").at(at)], T0).await;

    let got = must_get(s, "jid-sched-0001").await;
    assert_eq!(got.state, Scheduled);
    assert_eq!(got.at, at, "a scheduled job's at is its at time");
    assert_eq!(got.queue, "later");
    let st = stats(s).await;
    assert_eq!(st.scheduled, 1);
    assert_eq!(st.enqueued(), 0);
    assert!(
        st.queues.is_empty(),
        "a queue is known once something was enqueued to it, not scheduled: {:?}",
        st.queues
    );
    assert_eq!(jids(s, Scheduled, None).await, vec!["jid-sched-0001"]);
    assert_eq!(
        fetch_jid(s, &["later"], T0 + SEC).await,
        None,
        "scheduled jobs are not fetchable"
    );
    assert_eq!(
        fetch_jid(s, &["later"], at + SEC).await,
        None,
        "not fetchable before promotion either"
    );
    c.finish(T0).await;
}

/// PUSH with `at` equal to now or in the past: (new) → enqueued at once.
pub async fn push_with_due_or_past_at_enqueues_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("jid-now-00001").at(T0),
            spec("jid-past-0001").at(T0 - HOUR),
        ],
        T0,
    )
    .await;
    for jid in ["jid-now-00001", "jid-past-0001"] {
        let got = must_get(s, jid).await;
        assert_eq!(got.state, Enqueued, "{jid}: at <= now is enqueued at once");
        assert_eq!(parse_rfc3339(&payload(&got).enqueued_at), Ok(T0));
    }
    assert_eq!(stats(s).await.scheduled, 0);
    assert!(c.rec.take().iter().any(|q| q == "default"));
    assert_eq!(
        fetch_jid(s, &["default"], T0).await.as_deref(),
        Some("jid-now-00001")
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0).await.as_deref(),
        Some("jid-past-0001")
    );
    c.finish(T0).await;
}

/// PUSHB: one result per job, in order; jobs of different queues and states stored
/// independently.
pub async fn push_batch_results_are_independent<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let batch = [
        spec("jid-batch-001").queue("a"),
        spec("jid-batch-002").queue("b").at(T0 + MIN),
        spec("jid-batch-003").queue("a"),
        spec("jid-batch-004").queue("c"),
    ];
    let res = push_results(s, &batch, T0).await;
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    assert_eq!(
        jids(s, Enqueued, Some("a")).await,
        vec!["jid-batch-001", "jid-batch-003"]
    );
    assert_eq!(jids(s, Enqueued, Some("c")).await, vec!["jid-batch-004"]);
    assert_eq!(jids(s, Scheduled, None).await, vec!["jid-batch-002"]);
    let told: BTreeSet<String> = c.rec.take().into_iter().collect();
    assert!(
        told.contains("a") && told.contains("c"),
        "the listener must be told about queues a and c: {told:?}"
    );
    c.finish(T0).await;
}

fn assert_duplicate(r: &Result<(), PushError>, jid: &str) {
    match r {
        Err(PushError::DuplicateJid(j, _)) => assert_eq!(j, jid, "DuplicateJid names the jid"),
        other => {
            panic!("push of duplicate jid {jid} must be refused with DuplicateJid, got {other:?}")
        }
    }
}

/// A jid already stored (in any state) is refused with DuplicateJid; the stored job is untouched
/// and the other jobs of the same batch are stored.
pub async fn push_duplicate_jid_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut t = T0;
    let mut originals = Vec::new();
    for state in JobState::ALL {
        let jid = format!("dup-{}", state.set_name());
        originals.push(
            put(
                s,
                &spec(&jid).queue(&format!("q-{}", state.set_name())),
                state,
                t,
            )
            .await,
        );
        t += SEC;
    }
    let mut batch = vec![spec("dup-fresh-001").queue("fresh")];
    for o in &originals {
        batch.push(spec(&o.jid).queue("fresh").args("[\"second copy\"]"));
    }
    batch.push(spec("dup-fresh-002").queue("fresh"));
    let res = push_results(s, &batch, t).await;
    assert!(res[0].is_ok(), "{:?}", res[0]);
    assert!(res[res.len() - 1].is_ok(), "{:?}", res[res.len() - 1]);
    for (o, r) in originals.iter().zip(&res[1..]) {
        assert_duplicate(r, &o.jid);
        assert_eq!(
            get(s, &o.jid).await.as_ref(),
            Some(o),
            "the stored {} job must be untouched by a duplicate push",
            o.state
        );
    }
    assert_eq!(
        jids(s, Enqueued, Some("fresh")).await,
        vec!["dup-fresh-001", "dup-fresh-002"]
    );
    c.finish(t).await;
}

/// A retried PUSH (the producer could not know whether its first PUSH committed): a jid
/// already stored, in any state, by the same job (jobtype, queue, and args equal as JSON values)
/// is answered OK and changes nothing; another job under that jid is still a duplicate.
pub async fn push_retry_of_stored_job_is_ok_and_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut t = T0;
    let mut originals = Vec::new();
    let first = |jid: &str, state: JobState| {
        spec(jid)
            .queue(&format!("q-{}", state.set_name()))
            .args(r#"[1,{"a":"b","c":[2]}]"#)
    };
    for state in JobState::ALL {
        let jid = format!("retried-{}", state.set_name());
        originals.push(put(s, &first(&jid, state), state, t).await);
        t += SEC;
    }
    let before = stats(s).await;
    let lists = all_lists(s).await;
    // The same jobs again (args formatted otherwise, another `retry`, scheduled): all OK.
    let again: Vec<Spec> = originals
        .iter()
        .map(|o| {
            first(&o.jid, o.state)
                .args(r#"[ 1, {"c":[2], "a":"b"} ]"#)
                .retry(3)
                .at(t + HOUR)
        })
        .collect();
    let res = push_results(s, &again, t).await;
    assert!(res.iter().all(|r| r.is_ok()), "retried pushes: {res:?}");
    for o in &originals {
        assert_eq!(get(s, &o.jid).await.as_ref(), Some(o), "{} untouched", o.state);
    }
    assert_eq!(all_lists(s).await, lists, "a retried push changes nothing");
    assert_eq!(stats(s).await, before, "a retried push changes no counter");
    // Another jobtype, queue or args under a taken jid: still refused.
    for o in &originals {
        let other = [
            first(&o.jid, o.state).jobtype("OtherJob"),
            first(&o.jid, o.state).queue("elsewhere"),
            first(&o.jid, o.state).args(r#"[1,{"a":"b","c":[3]}]"#),
        ];
        for r in push_results(s, &other, t).await {
            assert_duplicate(&r, &o.jid);
        }
    }
    // Within one PUSHB: the first copy is stored, an identical second one is OK.
    let res = push_results(s, &[spec("retried-pushb-1"), spec("retried-pushb-1")], t).await;
    assert_eq!(res, vec![Ok(()), Ok(())]);
    assert_eq!(jids(s, Enqueued, Some("default")).await, vec!["retried-pushb-1"]);
    c.finish(t).await;
}

/// A retried PUSH of a unique job is not refused as NOTUNIQUE because of the lock it took
/// itself; another jid with the same identity still is. A retried batch member is counted once.
pub async fn push_retry_of_unique_or_batch_member_is_ok<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = || uniq("retried-uniq-1", "[7]", r#"{"unique_for":3600}"#);
    assert_eq!(push_one(s, u(), T0).await, Ok(()));
    assert_eq!(push_one(s, u(), T0 + SEC).await, Ok(()), "retried unique push");
    assert_eq!(
        push_one(s, uniq("retried-uniq-2", "[7]", r#"{"unique_for":3600}"#), T0 + SEC).await,
        Err(PushError::NotUnique)
    );
    // Fetched (working), with the lock released at start: the retry is still the same job.
    let us = || uniq("retried-uniq-3", "[8]", r#"{"unique_for":3600,"unique_until":"start"}"#);
    assert_eq!(push_one(s, us(), T0).await, Ok(()));
    assert_eq!(fetch_jid(s, &["uq"], T0 + SEC).await.as_deref(), Some("retried-uniq-1"));
    assert_eq!(fetch_jid(s, &["uq"], T0 + SEC).await.as_deref(), Some("retried-uniq-3"));
    assert_eq!(push_one(s, us(), T0 + 2 * SEC).await, Ok(()));
    assert_eq!(state_of(s, "retried-uniq-3").await, Some(Working));
    assert_eq!(fetch_jid(s, &["uq"], T0 + 2 * SEC).await, None, "nothing was enqueued again");

    let bid = "bid-retried-01";
    batch_new(s, both_callbacks(bid), T0).await;
    assert_eq!(push_one(s, member("retried-mem-1", bid), T0).await, Ok(()));
    assert_eq!(push_one(s, member("retried-mem-1", bid), T0 + SEC).await, Ok(()));
    let st = status(s, bid, T0 + SEC).await;
    assert_eq!((st.total, st.pending), (1, 1), "the retried member is counted once");
    assert_eq!(jids(s, Enqueued, Some("bq")).await, vec!["retried-mem-1"]);
    c.finish(T0 + 2 * SEC).await;
}

/// The same jid twice in one PUSHB: the first is stored, the second refused.
pub async fn push_duplicate_jid_within_batch_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let batch = [
        spec("jid-twice-001").args("[\"first\"]"),
        spec("jid-other-001"),
        spec("jid-twice-001")
            .args("[\"second\"]")
            .queue("elsewhere"),
    ];
    let res = push_results(s, &batch, T0).await;
    assert!(res[0].is_ok() && res[1].is_ok(), "{res:?}");
    assert_duplicate(&res[2], "jid-twice-001");
    let got = must_get(s, "jid-twice-001").await;
    assert_eq!(got.queue, "default");
    assert!(
        got.payload.contains("[\"first\"]"),
        "the first copy is kept: {}",
        got.payload
    );
    assert_eq!(
        jids(s, Enqueued, Some("default")).await,
        vec!["jid-twice-001", "jid-other-001"]
    );
    assert_eq!(stats(s).await.enqueued(), 2);
    c.finish(T0).await;
}

/// A jid whose job is gone (acknowledged, discarded) can be pushed again.
pub async fn push_of_gone_jid_is_accepted<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("jid-again-001"), Working, T0).await;
    assert_eq!(ack(s, "jid-again-001", T0 + SEC).await, AckOutcome::Acked);
    push(s, &[spec("jid-again-001")], T0 + 2 * SEC).await;
    assert_eq!(state_of(s, "jid-again-001").await, Some(Enqueued));

    put(
        s,
        &spec("jid-again-002").queue("other").at(T0 + HOUR),
        Scheduled,
        T0,
    )
    .await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Discard,
            Scheduled,
            by_jids(&["jid-again-002"]),
            T0
        )
        .await,
        1
    );
    push(s, &[spec("jid-again-002").queue("other")], T0 + 3 * SEC).await;
    assert_eq!(state_of(s, "jid-again-002").await, Some(Enqueued));
    c.finish(T0 + 3 * SEC).await;
}

/// `args` and `custom` come back byte for byte (big integers, spaces, number formatting), from
/// get, fetch, through a failure and a promotion, and after a reopen.
pub async fn args_and_custom_survive_byte_for_byte<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let args =
        r#"[12345678901234567890, "two  spaces", {"a" : "b c"}, 1.0, 1.5e-7, -0, "\u00e9\n"]"#;
    let custom = r#"{"big" : 18446744073709551616, "s":"x y"}"#;
    let want_args = format!("\"args\":{args}");
    let want_custom = format!("\"custom\":{custom}");
    let check = |j: &StoredJob, when: &str| {
        assert!(
            j.payload.contains(&want_args),
            "{when}: args changed: {}",
            j.payload
        );
        assert!(
            j.payload.contains(&want_custom),
            "{when}: custom changed: {}",
            j.payload
        );
    };
    let s = c.s();
    push(s, &[spec("jid-bytes-001").args(args).custom(custom)], T0).await;
    check(
        &must_get(s, "jid-bytes-001").await,
        "get of the enqueued job",
    );
    check(
        &fetch(s, &["default"], T0).await.expect("fetch"),
        "fetched payload",
    );
    let next_at = match fail(s, "jid-bytes-001", T0 + SEC).await {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("FAIL gave {other:?}"),
    };
    check(&must_get(s, "jid-bytes-001").await, "get of the retry job");
    assert_eq!(promote(s, next_at).await, 1);
    check(
        &fetch(s, &["default"], next_at).await.expect("fetch"),
        "payload fetched after a retry",
    );
    c.reopen().await;
    check(&must_get(c.s(), "jid-bytes-001").await, "get after reopen");
    c.finish(next_at).await;
}

// ---------------------------------------------------------------------------------------------
// FETCH and pause
// ---------------------------------------------------------------------------------------------

/// Each queue is FIFO by arrival, whether jobs came in one PUSHB or separate PUSHes.
pub async fn fetch_is_fifo_within_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(s, &[spec("fifo-00000003")], T0).await;
    push(s, &[spec("fifo-00000001"), spec("fifo-00000005")], T0 + SEC).await;
    push(s, &[spec("fifo-00000002")], T0 + 2 * SEC).await;
    push(s, &[spec("fifo-00000004")], T0 + 3 * SEC).await;
    let want = [
        "fifo-00000003",
        "fifo-00000001",
        "fifo-00000005",
        "fifo-00000002",
        "fifo-00000004",
    ];
    assert_eq!(
        jids(s, Enqueued, Some("default")).await,
        want,
        "list(Enqueued) in FIFO order"
    );
    for (i, jid) in want.iter().enumerate() {
        let t = T0 + 10 * SEC + i as Millis;
        assert_eq!(
            fetch_jid(s, &["default"], t).await.as_deref(),
            Some(*jid),
            "fetch #{i}"
        );
    }
    assert_eq!(fetch_jid(s, &["default"], T0 + 20 * SEC).await, None);
    c.finish(T0 + 20 * SEC).await;
}

/// FETCH takes the oldest job of the first non-empty queue, in the order given.
pub async fn fetch_takes_first_non_empty_queue_in_given_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], T0).await,
        None,
        "nothing stored"
    );
    put(s, &spec("order-a-0001").queue("a"), Working, T0).await; // queue a known but empty
    push(s, &[spec("order-c-0001").queue("c")], T0).await;
    push(
        s,
        &[
            spec("order-b-0001").queue("b"),
            spec("order-b-0002").queue("b"),
        ],
        T0 + 1,
    )
    .await;
    push(s, &[spec("order-c-0002").queue("c")], T0 + 2).await;
    let t = T0 + SEC;
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-b-0001")
    );
    assert_eq!(
        fetch_jid(s, &["c", "b"], t).await.as_deref(),
        Some("order-c-0001")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-b-0002")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b", "c"], t).await.as_deref(),
        Some("order-c-0002")
    );
    assert_eq!(fetch_jid(s, &["a", "b", "c"], t).await, None);
    c.finish(t).await;
}

/// Unknown queue names in FETCH are fine, and are not created.
pub async fn fetch_of_unknown_queue_is_fine<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    assert_eq!(fetch_jid(s, &["nope"], T0).await, None);
    push(s, &[spec("known-000001")], T0).await;
    assert_eq!(
        fetch_jid(s, &["nope", "default"], T0).await.as_deref(),
        Some("known-000001")
    );
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("default", 0, false)],
        "FETCH does not create queues"
    );
    c.finish(T0).await;
}

/// FETCH: enqueued → working, reserved from now until now + clamp(reserve_for) (0 → 1800 s,
/// 30 → 60 s), with the fetching wid; payload carries `enqueued_at`.
pub async fn fetch_reserves_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let cases: [(&str, Option<i64>, i64); 5] = [
        ("resv-absent1", None, 1800),
        ("resv-zero001", Some(0), 1800),
        ("resv-thirty1", Some(30), 60),
        ("resv-ten-min", Some(600), 600),
        ("resv-one-day", Some(86_400), 86_400),
    ];
    for (i, (jid, rf, _)) in cases.iter().enumerate() {
        let mut sp = spec(jid).queue("resv");
        if let Some(rf) = rf {
            sp = sp.reserve_for(*rf);
        }
        push(s, &[sp], T0 + i as Millis).await;
    }
    let t = T0 + MIN;
    for (i, (jid, _, secs)) in cases.iter().enumerate() {
        let now = t + i as Millis * SEC;
        let wid = format!("worker-{i}");
        let got = s
            .fetch(strings(&["resv"]), wid.clone(), now)
            .await
            .expect("fetch")
            .expect("a job");
        assert_eq!(got.jid, *jid, "FIFO");
        assert_eq!(got.state, Working);
        let r = got
            .reservation
            .clone()
            .expect("a working job has a reservation");
        assert_eq!(r.reserved_at, now, "{jid}: reserved_at");
        assert_eq!(
            r.expires_at,
            now + secs * SEC,
            "{jid}: expires_at = now + {secs} s"
        );
        assert_eq!(r.wid, wid, "{jid}: wid");
        assert_eq!(
            got.at, r.expires_at,
            "{jid}: a working job's at is its expiry"
        );
        assert_eq!(
            parse_rfc3339(&payload(&got).enqueued_at),
            Ok(T0 + i as Millis),
            "{jid}: enqueued_at"
        );
        assert_eq!(
            get(s, jid).await.as_ref(),
            Some(&got),
            "get of {jid} equals what FETCH returned"
        );
    }
    let st = stats(s).await;
    assert_eq!(st.working, 5);
    assert_eq!(
        st.queues,
        vec![queue_stats("resv", 0, false)],
        "an emptied queue stays known"
    );
    assert_eq!((st.processed, st.failures), (0, 0), "FETCH counts nothing");
    c.finish(t + 10 * SEC).await;
}

/// Paused queues still take PUSHes, but FETCH skips them.
pub async fn fetch_skips_paused_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("pause-a-0001").queue("a"),
            spec("pause-b-0001").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    push(s, &[spec("pause-a-0002").queue("a")], T0 + 1).await;
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![queue_stats("a", 2, true), queue_stats("b", 1, false)]
    );
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await.as_deref(),
        Some("pause-b-0001")
    );
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await,
        None,
        "a is paused, b is empty"
    );
    assert_eq!(fetch_jid(s, &["a"], T0 + SEC).await, None, "a is paused");
    s.set_paused(QueueSelector::Names(strings(&["a"])), false)
        .await
        .expect("resume");
    assert!(!stats(s).await.queues[0].paused);
    assert_eq!(
        fetch_jid(s, &["a", "b"], T0 + SEC).await.as_deref(),
        Some("pause-a-0001")
    );
    c.finish(T0 + SEC).await;
}

/// Pause flags are persisted.
pub async fn pause_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    push(
        c.s(),
        &[
            spec("pause-keep-01").queue("a"),
            spec("pause-keep-02").queue("b"),
        ],
        T0,
    )
    .await;
    c.s()
        .set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    c.reopen().await;
    let s = c.s();
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("a", 1, true), queue_stats("b", 1, false)]
    );
    assert_eq!(
        fetch_jid(s, &["a"], T0).await,
        None,
        "a is still paused after reopen"
    );
    s.set_paused(QueueSelector::Names(strings(&["a"])), false)
        .await
        .expect("resume");
    c.reopen().await;
    assert_eq!(
        fetch_jid(c.s(), &["a"], T0).await.as_deref(),
        Some("pause-keep-01"),
        "resume persisted"
    );
    c.finish(T0).await;
}

/// PAUSE * pauses every known queue; naming an unknown queue is a silent no-op (a later push
/// creates it unpaused).
pub async fn set_paused_all_and_unknown_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("pall-a-00001").queue("a"),
            spec("pall-b-00001").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::All, true)
        .await
        .expect("pause *");
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("a", 1, true), queue_stats("b", 1, true)]
    );
    assert_eq!(fetch_jid(s, &["a", "b"], T0).await, None);

    s.set_paused(QueueSelector::Names(strings(&["ghost"])), true)
        .await
        .expect("pause ghost");
    assert_eq!(
        stats(s).await.queues.len(),
        2,
        "pausing an unknown queue does not create it"
    );
    push(s, &[spec("pall-ghost-01").queue("ghost")], T0).await;
    assert_eq!(
        stats(s).await.queues[2],
        queue_stats("ghost", 1, false),
        "pausing a queue before it existed has no effect"
    );
    assert_eq!(
        fetch_jid(s, &["a", "ghost"], T0).await.as_deref(),
        Some("pall-ghost-01")
    );

    s.set_paused(QueueSelector::All, false)
        .await
        .expect("resume *");
    assert!(stats(s).await.queues.iter().all(|q| !q.paused));
    assert_eq!(
        fetch_jid(s, &["b", "a"], T0).await.as_deref(),
        Some("pall-b-00001")
    );
    c.finish(T0).await;
}

/// Re-enqueued jobs (retry promotion, scheduled promotion, MUTATE requeue) go to the back of
/// their queue.
pub async fn reenqueued_jobs_go_to_back_of_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("back-retry-01"), Retry, T0).await;
    put(s, &spec("back-dead-001").retry(-1), Dead, T0).await;
    push(s, &[spec("back-sched-01").at(T0 + 30 * SEC)], T0).await;
    push(s, &[spec("back-early-01"), spec("back-early-02")], T0 + SEC).await;
    let t = T0 + MIN;
    assert_eq!(
        promote(s, t).await,
        2,
        "the retry and the scheduled job are due"
    );
    push(s, &[spec("back-early-03")], t + SEC).await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, None, t + 2 * SEC).await,
        1
    );
    let order = jids(s, Enqueued, Some("default")).await;
    assert_eq!(&order[..2], ["back-early-01", "back-early-02"], "{order:?}");
    let mut promoted = order[2..4].to_vec();
    promoted.sort();
    assert_eq!(promoted, ["back-retry-01", "back-sched-01"], "{order:?}");
    assert_eq!(&order[4..], ["back-early-03", "back-dead-001"], "{order:?}");
    for want in &order {
        assert_eq!(
            fetch_jid(s, &["default"], t + 3 * SEC).await.as_ref(),
            Some(want)
        );
    }
    c.finish(t + 3 * SEC).await;
}

// ---------------------------------------------------------------------------------------------
// ACK and FAIL
// ---------------------------------------------------------------------------------------------

/// ACK: working → gone, `processed` counted in total and in today's history.
pub async fn ack_removes_working_job_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("ack-me-00001"), Working, T0).await;
    put(s, &spec("ack-other-001").queue("other"), Working, T0).await;
    assert_eq!(ack(s, "ack-me-00001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        get(s, "ack-me-00001").await,
        None,
        "an acknowledged job is gone"
    );
    assert_eq!(
        state_of(s, "ack-other-001").await,
        Some(Working),
        "other reservations untouched"
    );
    let st = stats(s).await;
    assert_eq!((st.working, st.processed, st.failures), (1, 1, 0));
    let h = history(s, 1, T0 + SEC).await;
    assert_eq!(
        h,
        vec![DayStats {
            day: local_day(T0 + SEC),
            processed: 1,
            failures: 0
        }],
        "today's history counts the ACK"
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0 + 2 * SEC).await,
        None,
        "an acked job is never delivered again"
    );
    c.finish(T0 + SEC).await;
}

/// A late ACK — of a job that is enqueued, retry or dead because its reservation ended while the
/// worker still ran it — is AckedLate(that state): the job → gone, `processed` counted in total
/// and in today's history, `failures` unchanged, the queue or set it was in one smaller, and it is
/// never delivered again (an ACK answered `+OK` ends the job). Other jobs are untouched.
pub async fn late_ack_of_enqueued_retry_or_dead_job_removes_it_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut late = Vec::new();
    for (i, state) in [Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("lateack-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&jid)
            .retry(if state == Dead { -1 } else { 25 });
        late.push(put(s, &sp, state, T0 + i as Millis).await);
    }
    // A neighbour in each state (same queue for the enqueued one), which must stay.
    let mut kept = Vec::new();
    for (i, state) in [Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("lateack-kept-{}", state.set_name());
        let queue = if state == Enqueued {
            late[0].queue.clone()
        } else {
            jid.clone()
        };
        let sp = spec(&jid)
            .queue(&queue)
            .retry(if state == Dead { -1 } else { 25 });
        kept.push(put(s, &sp, state, T0 + 10 + i as Millis).await);
    }
    let before = stats(s).await;
    assert_eq!(
        (before.enqueued(), before.retries, before.dead),
        (2, 2, 2),
        "before the late ACKs"
    );
    // The ACKs come the next day, so that day's history holds only them.
    let t = T0 + DAY;
    for j in &late {
        assert_eq!(
            ack(s, &j.jid, t).await,
            AckOutcome::AckedLate(j.state),
            "late ACK of {} job {}",
            j.state,
            j.jid
        );
        assert_eq!(get(s, &j.jid).await, None, "a late-ACKed job is gone");
    }
    let st = stats(s).await;
    assert_eq!(
        (st.enqueued(), st.retries, st.dead, st.working),
        (1, 1, 1, 0),
        "each late ACK takes its job out of the queue or set it was in"
    );
    assert_eq!(
        st.queues,
        vec![
            queue_stats("lateack-dead", 0, false),
            queue_stats("lateack-enqueued", 1, false),
            queue_stats("lateack-kept-dead", 0, false),
            queue_stats("lateack-kept-retries", 0, false),
            queue_stats("lateack-retries", 0, false),
        ],
        "queue sizes after the late ACKs"
    );
    assert_eq!(
        (st.processed, st.failures),
        (before.processed + 3, before.failures),
        "a late ACK counts processed, never a failure"
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 3,
            failures: 0
        }],
        "the day's history counts the late ACKs"
    );
    for k in &kept {
        assert_eq!(
            get(s, &k.jid).await.as_ref(),
            Some(k),
            "a late ACK of another job leaves {} as it was",
            k.jid
        );
    }
    for j in &late {
        assert_eq!(
            ack(s, &j.jid, t).await,
            AckOutcome::NotWorking,
            "a second ACK of {} finds nothing",
            j.jid
        );
    }
    assert_eq!(
        counters(s).await,
        (st.processed, st.failures),
        "a second ACK counts nothing"
    );
    // Never delivered again: the retry tick, a requeue of the dead set and FETCHes of every
    // queue bring back only the kept jobs.
    let u = t + 100 * DAY;
    assert_eq!(
        promote(s, u).await,
        1,
        "only the kept retry is left to come due"
    );
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, None, u).await,
        1,
        "only the kept dead job is left to requeue"
    );
    let queues: Vec<String> = st.queues.iter().map(|q| q.name.clone()).collect();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut delivered = BTreeSet::new();
    while let Some(jid) = fetch_jid(s, &queues, u).await {
        delivered.insert(jid);
    }
    let want: BTreeSet<String> = kept.iter().map(|k| k.jid.clone()).collect();
    assert_eq!(delivered, want, "a late-ACKed job is never delivered again");
    c.finish(u).await;
}

/// ACK of a scheduled job (never delivered), of an unknown jid or of one already acknowledged is
/// NotWorking and changes nothing.
pub async fn ack_of_scheduled_gone_or_unknown_job_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let sched = put(s, &spec("noack-sched-01"), Scheduled, T0).await;
    put(s, &spec("noack-acked1"), Working, T0).await;
    assert_eq!(ack(s, "noack-acked1", T0).await, AckOutcome::Acked);
    let before = snapshot(s, T0 + SEC).await;
    for jid in ["noack-sched-01", "noack-unknown", "noack-acked1"] {
        assert_eq!(
            ack(s, jid, T0 + SEC).await,
            AckOutcome::NotWorking,
            "ACK of {jid}"
        );
    }
    let after = snapshot(s, T0 + SEC).await;
    assert_same_snapshot(&before, &after, "after refused ACKs");
    assert_eq!(
        get(s, "noack-sched-01").await.as_ref(),
        Some(&sched),
        "a refused ACK leaves the scheduled job as it was"
    );
    assert_eq!(
        promote(s, T0 + 2 * HOUR).await,
        1,
        "the scheduled job still comes due"
    );
    assert_eq!(
        fetch_jid(s, &["default"], T0 + 2 * HOUR).await.as_deref(),
        Some("noack-sched-01")
    );
    c.finish(T0 + 2 * HOUR).await;
}

/// FAIL with retries left: working → retry; `failure` filled as werk_core::retry says (first
/// failure: retry_count 0, remaining = retry, failed_at now, next_at in 15–44 s).
pub async fn fail_moves_job_to_retry_with_failure_info<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-me-00001").retry(25), Working, T0).await;
    let t = T0 + 2 * SEC;
    let next_at = match fail(s, "fail-me-00001", t).await {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("FAIL with retries left gave {other:?}"),
    };
    assert!(
        (t + 15 * SEC..=t + 44 * SEC).contains(&next_at),
        "first retry is 15–44 s after the failure, got {} s",
        (next_at - t) as f64 / 1000.0
    );
    let got = must_get(s, "fail-me-00001").await;
    assert_eq!(
        (got.state, got.at, got.reservation.clone()),
        (Retry, next_at, None)
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (0, 25));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    assert_eq!(f.next_at, format_millis(next_at));
    assert_eq!(
        (f.errtype.as_str(), f.message.as_str()),
        ("RuntimeError", "boom")
    );
    assert_eq!(f.backtrace, boom().backtrace);
    let st = stats(s).await;
    assert_eq!(
        (st.retries, st.working, st.processed, st.failures),
        (1, 0, 1, 1)
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 1,
            failures: 1
        }]
    );
    assert_eq!(jids(s, Retry, None).await, vec!["fail-me-00001"]);
    assert_eq!(
        fetch_jid(s, &["default"], t).await,
        None,
        "a retry job is not fetchable"
    );
    c.finish(t).await;
}

/// A later failure: retry_count + 1, remaining − 1, failed_at kept from the first failure, error
/// fields replaced, backoff 16–74 s.
pub async fn second_failure_counts_up_and_keeps_failed_at<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-twice-01").retry(25), Working, T0).await;
    let t1 = T0 + SEC;
    let FailReply::Failed(FailOutcome::Retry { next_at }) = fail(s, "fail-twice-01", t1).await
    else {
        panic!("first FAIL must retry")
    };
    assert_eq!(promote(s, next_at).await, 1);
    assert_eq!(
        fetch_jid(s, &["default"], next_at).await.as_deref(),
        Some("fail-twice-01")
    );
    let t2 = next_at + 5 * SEC;
    let info = FailInfo::new("OtherError", "again", Vec::new());
    let next2 = match s
        .fail("fail-twice-01".into(), info, t2)
        .await
        .expect("fail")
    {
        FailReply::Failed(FailOutcome::Retry { next_at }) => next_at,
        other => panic!("second FAIL with retries left gave {other:?}"),
    };
    assert!(
        (t2 + 16 * SEC..=t2 + 74 * SEC).contains(&next2),
        "second retry is 16–74 s after the failure, got {} s",
        (next2 - t2) as f64 / 1000.0
    );
    let got = must_get(s, "fail-twice-01").await;
    assert_eq!((got.state, got.at), (Retry, next2));
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (1, 24));
    assert_eq!(
        parse_rfc3339(&f.failed_at),
        Ok(t1),
        "failed_at keeps the first failure's time"
    );
    assert_eq!(f.next_at, format_millis(next2));
    assert_eq!(
        (f.errtype.as_str(), f.message.as_str()),
        ("OtherError", "again")
    );
    assert!(f.backtrace.is_empty());
    assert_eq!(counters(s).await, (2, 2));
    c.finish(t2).await;
}

/// FAIL with `retry` 0: working → gone (Discarded), still counted.
pub async fn fail_with_retry_zero_discards_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-zero-001").retry(0), Working, T0).await;
    assert_eq!(
        fail(s, "fail-zero-001", T0 + SEC).await,
        FailReply::Failed(FailOutcome::Discarded)
    );
    assert_eq!(
        get(s, "fail-zero-001").await,
        None,
        "a retry:0 job is dropped"
    );
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.dead, st.processed, st.failures),
        (0, 0, 0, 1, 1)
    );
    c.finish(T0 + SEC).await;
}

/// FAIL with `retry` < 0: working → dead until now + dead_retention; remaining is never negative.
pub async fn fail_with_negative_retry_kills_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-neg-0001").retry(-1), Working, T0).await;
    let t = T0 + SEC;
    assert_eq!(
        fail(s, "fail-neg-0001", t).await,
        FailReply::Failed(FailOutcome::Dead)
    );
    let got = must_get(s, "fail-neg-0001").await;
    assert_eq!(got.state, Dead);
    assert_eq!(
        got.at,
        t + DEFAULT_RETENTION,
        "dead_until = death + dead_retention"
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (0, 0));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.dead, st.processed, st.failures),
        (0, 0, 1, 1, 1)
    );
    assert_eq!(
        promote(s, t + 365 * DAY).await,
        0,
        "dead jobs are never promoted"
    );
    c.finish(t).await;
}

/// With `retry` N the job runs N + 1 times, then dies (retry: 1 ⇒ retry, then dead).
pub async fn fail_with_retries_exhausted_kills_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("fail-out-0001").retry(1), Working, T0).await;
    let FailReply::Failed(FailOutcome::Retry { next_at }) = fail(s, "fail-out-0001", T0).await
    else {
        panic!("first FAIL of a retry:1 job must retry")
    };
    assert_eq!(promote(s, next_at).await, 1);
    assert_eq!(
        fetch_jid(s, &["default"], next_at).await.as_deref(),
        Some("fail-out-0001")
    );
    let t = next_at + SEC;
    assert_eq!(
        fail(s, "fail-out-0001", t).await,
        FailReply::Failed(FailOutcome::Dead)
    );
    let got = must_get(s, "fail-out-0001").await;
    assert_eq!((got.state, got.at), (Dead, t + DEFAULT_RETENTION));
    let f = payload(&got).failure.expect("failure object");
    assert_eq!((f.retry_count, f.remaining), (1, 0));
    assert!(
        f.next_at.is_empty(),
        "a dead job has no next_at: {:?}",
        f.next_at
    );
    assert_eq!(counters(s).await, (2, 2));
    c.finish(t).await;
}

/// FAIL of a jid that is not working: NotWorking, nothing changes.
pub async fn fail_of_job_not_working_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut kept = Vec::new();
    for (i, state) in [Scheduled, Enqueued, Retry, Dead].into_iter().enumerate() {
        let jid = format!("nofail-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&jid)
            .retry(if state == Dead { -1 } else { 25 });
        kept.push(put(s, &sp, state, T0 + i as Millis).await);
    }
    put(s, &spec("nofail-acked1"), Working, T0).await;
    assert_eq!(ack(s, "nofail-acked1", T0).await, AckOutcome::Acked);
    let before = counters(s).await;
    for jid in ["nofail-unknown", "nofail-acked1"]
        .into_iter()
        .map(String::from)
        .chain(kept.iter().map(|j| j.jid.clone()))
    {
        assert_eq!(
            fail(s, &jid, T0 + SEC).await,
            FailReply::NotWorking,
            "FAIL of {jid}"
        );
    }
    assert_eq!(counters(s).await, before, "a refused FAIL counts nothing");
    for k in &kept {
        assert_eq!(
            get(s, &k.jid).await.as_ref(),
            Some(k),
            "a refused FAIL leaves {} as it was",
            k.jid
        );
    }
    c.finish(T0 + SEC).await;
}

// ---------------------------------------------------------------------------------------------
// Scheduler, retry tick, reaper, purge
// ---------------------------------------------------------------------------------------------

/// promote_due moves scheduled jobs with `at` ≤ now and retry jobs with `next_at` ≤ now, nothing
/// else; promoted jobs get a fresh `enqueued_at` and the listener hears of their queue.
pub async fn promote_due_moves_only_due_jobs<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let retry = put(s, &spec("prom-retry-01").queue("r"), Retry, T0).await;
    push(
        s,
        &[
            spec("prom-sched-01").queue("s1").at(T0 + 10 * SEC),
            spec("prom-sched-02").queue("s2").at(T0 + HOUR),
        ],
        T0,
    )
    .await;
    put(
        s,
        &spec("prom-work-001").queue("w").reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(s, &spec("prom-dead-001").queue("d").retry(-1), Dead, T0).await;
    c.rec.take();

    assert_eq!(promote(s, T0 + 10 * SEC - 1).await, 0, "nothing due yet");
    let t1 = T0 + 10 * SEC;
    assert_eq!(promote(s, t1).await, 1, "at == now is due");
    let got = must_get(s, "prom-sched-01").await;
    assert_eq!((got.state, got.at), (Enqueued, t1));
    assert_eq!(
        parse_rfc3339(&payload(&got).enqueued_at),
        Ok(t1),
        "promotion sets enqueued_at"
    );
    assert!(
        c.rec.take().iter().any(|q| q == "s1"),
        "the listener hears of promoted jobs"
    );
    assert!(
        stats(s).await.queues.iter().any(|q| q.name == "s1"),
        "promotion creates the queue"
    );

    assert_eq!(
        promote(s, retry.at - 1).await,
        0,
        "the retry is not due yet"
    );
    assert_eq!(promote(s, retry.at).await, 1, "next_at == now is due");
    assert_eq!(state_of(s, "prom-retry-01").await, Some(Enqueued));
    assert!(c.rec.take().iter().any(|q| q == "r"));

    let t2 = T0 + 10 * MIN;
    assert_eq!(
        promote(s, t2).await,
        0,
        "working and dead jobs are never promoted"
    );
    assert_eq!(state_of(s, "prom-sched-02").await, Some(Scheduled));
    assert_eq!(state_of(s, "prom-work-001").await, Some(Working));
    assert_eq!(state_of(s, "prom-dead-001").await, Some(Dead));
    assert_eq!(
        fetch_jid(s, &["s1", "r"], t2).await.as_deref(),
        Some("prom-sched-01")
    );
    assert_eq!(
        fetch_jid(s, &["s1", "r"], t2).await.as_deref(),
        Some("prom-retry-01")
    );
    c.finish(t2).await;
}

/// A promoted retry keeps its `failure` and gets a fresh `enqueued_at`.
pub async fn promote_due_refreshes_enqueued_at_and_keeps_failure<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let retry = put(s, &spec("prom-keep-001"), Retry, T0).await;
    let before = payload(&retry).failure.expect("failure");
    let t = retry.at + 3 * SEC;
    assert_eq!(promote(s, t).await, 1);
    let got = must_get(s, "prom-keep-001").await;
    assert_eq!((got.state, got.at), (Enqueued, t));
    let job = payload(&got);
    assert_eq!(
        parse_rfc3339(&job.enqueued_at),
        Ok(t),
        "enqueued_at is the promotion time"
    );
    assert_eq!(
        job.failure,
        Some(before),
        "promotion keeps the failure object"
    );
    let fetched = fetch(s, &["default"], t)
        .await
        .expect("promoted job is fetchable");
    assert_eq!(parse_rfc3339(&payload(&fetched).enqueued_at), Ok(t));
    c.finish(t).await;
}

/// promote_due moves at most `limit` jobs, earliest due first, and reports how many.
pub async fn promote_due_respects_limit<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let ats = [5, 1, 4, 2, 3];
    let specs: Vec<Spec> = ats
        .iter()
        .map(|k| spec(&format!("limit-at-{k:04}")).at(T0 + k * SEC))
        .collect();
    push(s, &specs, T0).await;
    let t = T0 + MIN;
    assert_eq!(s.promote_due(t, 2).await.expect("promote_due"), 2);
    assert_eq!(
        jids(s, Enqueued, None).await,
        vec!["limit-at-0001", "limit-at-0002"],
        "the two earliest-due jobs move first"
    );
    assert_eq!(stats(s).await.scheduled, 3);
    assert_eq!(s.promote_due(t, 10).await.expect("promote_due"), 3);
    assert_eq!(s.promote_due(t, 10).await.expect("promote_due"), 0);
    assert_eq!(stats(s).await.enqueued(), 5);
    c.finish(t).await;
}

/// The reaper: working with `reserved_until` ≤ now is failed as `ReservationExpired` (counted in
/// processed and failures); unexpired reservations are left alone.
pub async fn reap_expired_fails_expired_reservations<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(
        s,
        &spec("reap-short-01").queue("a").reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-long-001").queue("b").reserve_for(600),
        Working,
        T0,
    )
    .await;
    assert_eq!(reap(s, T0 + 60 * SEC - 1).await, 0, "nothing expired yet");
    let t = T0 + 60 * SEC;
    assert_eq!(reap(s, t).await, 1, "reserved_until == now is expired");
    let got = must_get(s, "reap-short-01").await;
    assert_eq!(got.state, Retry);
    assert!(
        (t + 15 * SEC..=t + 44 * SEC).contains(&got.at),
        "backoff of a first failure"
    );
    let f = payload(&got).failure.expect("failure object");
    assert_eq!(f.errtype, "ReservationExpired");
    assert_eq!(f.message, "Faktory job reservation expired");
    assert!(f.backtrace.is_empty());
    assert_eq!((f.retry_count, f.remaining), (0, 25));
    assert_eq!(parse_rfc3339(&f.failed_at), Ok(t));
    assert_eq!(
        state_of(s, "reap-long-001").await,
        Some(Working),
        "unexpired reservation untouched"
    );
    let st = stats(s).await;
    assert_eq!(
        (st.working, st.retries, st.processed, st.failures),
        (1, 1, 1, 1)
    );
    assert_eq!(
        history(s, 1, t).await,
        vec![DayStats {
            day: local_day(t),
            processed: 1,
            failures: 1
        }]
    );
    c.finish(t).await;
}

/// The reaper applies the retry policy: retry 0 → gone, retry < 0 → dead, else retry.
pub async fn reap_expired_follows_retry_policy<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(
        s,
        &spec("reap-zero-001").queue("a").retry(0).reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-neg-0001").queue("b").retry(-1).reserve_for(60),
        Working,
        T0,
    )
    .await;
    put(
        s,
        &spec("reap-some-001").queue("c").retry(3).reserve_for(60),
        Working,
        T0,
    )
    .await;
    let t = T0 + 2 * MIN;
    assert_eq!(reap(s, t).await, 3);
    assert_eq!(
        get(s, "reap-zero-001").await,
        None,
        "an expired retry:0 job is dropped"
    );
    let dead = must_get(s, "reap-neg-0001").await;
    assert_eq!((dead.state, dead.at), (Dead, t + DEFAULT_RETENTION));
    assert_eq!(state_of(s, "reap-some-001").await, Some(Retry));
    assert_eq!(counters(s).await, (3, 3));
    c.finish(t).await;
}

/// reap_expired handles at most `limit` reservations per call.
pub async fn reap_expired_respects_limit<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    for i in 0..3 {
        put(
            s,
            &spec(&format!("reap-lim-{i:04}")).reserve_for(60),
            Working,
            T0 + i,
        )
        .await;
    }
    let t = T0 + 5 * MIN;
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 2);
    assert_eq!(stats(s).await.working, 1);
    assert_eq!(
        state_of(s, "reap-lim-0002").await,
        Some(Working),
        "the earliest-expiring reservations are reaped first"
    );
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 1);
    assert_eq!(s.reap_expired(t, 2).await.expect("reap"), 0);
    assert_eq!(stats(s).await.retries, 3);
    c.finish(t).await;
}

/// After the reaper took a job, the worker that still ran it may ACK it late: AckedLate(retry),
/// the retry → gone, `processed` counted (once by the reaper's failure, once by the ACK), and it
/// never comes back. The same once the retry tick has put it back in its queue:
/// AckedLate(enqueued), and the queue is one smaller.
pub async fn late_ack_after_reap_removes_job_and_counts_processed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("late-ack-0001").reserve_for(60), Working, T0).await;
    put(
        s,
        &spec("late-ack-0002").queue("other").reserve_for(60),
        Working,
        T0,
    )
    .await;
    let t = T0 + 61 * SEC;
    assert_eq!(reap(s, t).await, 2);
    assert_eq!(state_of(s, "late-ack-0001").await, Some(Retry));
    assert_eq!(counters(s).await, (2, 2), "the reaper's two failures");

    assert_eq!(
        ack(s, "late-ack-0001", t + SEC).await,
        AckOutcome::AckedLate(Retry),
        "late ACK of the reaped job"
    );
    assert_eq!(
        get(s, "late-ack-0001").await,
        None,
        "a late ACK removes the retry"
    );
    let st = stats(s).await;
    assert_eq!(st.retries, 1, "only the other reaped job is left in retry");
    assert_eq!(
        (st.processed, st.failures),
        (3, 2),
        "the late ACK counts processed, not a failure"
    );

    // The other one comes due and is back in its queue when its worker's ACK arrives.
    let u = t + HOUR;
    assert_eq!(promote(s, u).await, 1);
    assert_eq!(state_of(s, "late-ack-0002").await, Some(Enqueued));
    assert_eq!(
        ack(s, "late-ack-0002", u).await,
        AckOutcome::AckedLate(Enqueued),
        "late ACK of the reaped job after the retry tick requeued it"
    );
    assert_eq!(get(s, "late-ack-0002").await, None);
    let st = stats(s).await;
    assert_eq!(
        (st.enqueued(), st.retries, st.working),
        (0, 0, 0),
        "nothing is left"
    );
    assert_eq!((st.processed, st.failures), (4, 2));
    assert_eq!(
        promote(s, u + DAY).await,
        0,
        "a late-ACKed job never comes due again"
    );
    assert_eq!(
        fetch_jid(s, &["default", "other"], u + DAY).await,
        None,
        "a late-ACKed job is never delivered again"
    );
    c.finish(u + DAY).await;
}

/// After the reaper took a job, a late FAIL is NotWorking and the job stays in retry as the
/// reaper left it (only the reaper's failure is counted).
pub async fn late_fail_after_reap_changes_nothing<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("late-fail-001").reserve_for(60), Working, T0).await;
    let t = T0 + 61 * SEC;
    assert_eq!(reap(s, t).await, 1);
    let reaped = must_get(s, "late-fail-001").await;
    assert_eq!(reaped.state, Retry);
    assert_eq!(
        fail(s, "late-fail-001", t + SEC).await,
        FailReply::NotWorking
    );
    assert_eq!(
        get(s, "late-fail-001").await,
        Some(reaped),
        "a late FAIL must not touch the retry"
    );
    assert_eq!(
        counters(s).await,
        (1, 1),
        "only the reaper's failure is counted"
    );
    c.finish(t + SEC).await;
}

/// purge_dead removes dead jobs with `dead_until` ≤ now (dead_until = death + dead_retention),
/// at most `limit`, and counts nothing.
pub async fn purge_dead_removes_only_expired_dead_jobs<H: Harness>() {
    let retention = 10 * MIN;
    let c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    assert_eq!(c.cfg.dead_retention, retention);
    let s = c.s();
    let d1 = put(s, &spec("purge-d1-0001").retry(-1), Dead, T0).await;
    assert_eq!(
        d1.at,
        T0 + retention,
        "dead_until uses the configured retention"
    );
    put(s, &spec("purge-d2-0001").retry(-1), Dead, T0 + 5 * MIN).await;
    let before = counters(s).await;
    assert_eq!(
        s.purge_dead(T0 + retention - 1, 100).await.expect("purge"),
        0
    );
    assert_eq!(
        s.purge_dead(T0 + retention, 100).await.expect("purge"),
        1,
        "dead_until == now"
    );
    assert_eq!(get(s, "purge-d1-0001").await, None);
    assert_eq!(state_of(s, "purge-d2-0001").await, Some(Dead));
    assert_eq!(s.purge_dead(T0 + 14 * MIN, 100).await.expect("purge"), 0);
    assert_eq!(s.purge_dead(T0 + 15 * MIN, 100).await.expect("purge"), 1);
    assert_eq!(stats(s).await.dead, 0);

    let t = T0 + 20 * MIN;
    for i in 0..3 {
        put(
            s,
            &spec(&format!("purge-lim-{i:04}")).retry(-1),
            Dead,
            t + i,
        )
        .await;
    }
    assert_eq!(
        s.purge_dead(t + HOUR, 2).await.expect("purge"),
        2,
        "at most limit"
    );
    assert_eq!(
        jids(s, Dead, None).await,
        vec!["purge-lim-0002"],
        "the oldest go first"
    );
    assert_eq!(s.purge_dead(t + HOUR, 2).await.expect("purge"), 1);
    assert_eq!(
        counters(s).await.0,
        before.0 + 3,
        "purging counts nothing (3 FAILs did)"
    );
    c.finish(t + HOUR).await;
}

// ---------------------------------------------------------------------------------------------
// MUTATE
// ---------------------------------------------------------------------------------------------

/// The fixture's three jobs per state: (kind, jobtype, color in `custom`).
const KINDS: [(&str, &str, &str); 3] = [
    ("alpha-red", "Alpha", "red"),
    ("alpha-blue", "Alpha", "blue"),
    ("beta-red", "Beta", "red"),
];

fn fx_prefix(state: JobState) -> &'static str {
    match state {
        Scheduled => "sched",
        Enqueued => "enq",
        Working => "work",
        Retry => "retry",
        Dead => "dead",
    }
}

fn fx_jid(state: JobState, kind: &str) -> String {
    format!("{}-{kind}", fx_prefix(state))
}

fn fx_queue(state: JobState) -> String {
    format!("q-{}", fx_prefix(state))
}

fn fx_jids(state: JobState) -> Vec<String> {
    KINDS.iter().map(|(k, _, _)| fx_jid(state, k)).collect()
}

/// Three jobs in every state (see [`KINDS`]), each state's in queue `q-<state>`, created from
/// `now` on in steps of 1.001 s (so no two share a time). Returns the time after the last.
async fn populate<S: Store>(s: &S, now: Millis) -> Millis {
    let mut t = now;
    for state in [Scheduled, Working, Retry, Dead, Enqueued] {
        for (kind, jobtype, color) in KINDS {
            let mut sp = spec(&fx_jid(state, kind))
                .queue(&fx_queue(state))
                .jobtype(jobtype)
                .custom(&format!("{{\"color\":\"{color}\"}}"));
            if state == Scheduled {
                sp = sp.at(t + HOUR);
            }
            if state == Dead {
                sp = sp.retry(-1);
            }
            put(s, &sp, state, t).await;
            t += SEC + 1;
        }
    }
    t
}

/// Every state's jobs, in list order.
async fn all_lists<S: Store>(s: &S) -> BTreeMap<JobState, Vec<StoredJob>> {
    let mut m = BTreeMap::new();
    for state in JobState::ALL {
        m.insert(state, list(s, state, None).await);
    }
    m
}

fn sorted_jids(jobs: &[StoredJob]) -> Vec<String> {
    let mut v: Vec<String> = jobs.iter().map(|j| j.jid.clone()).collect();
    v.sort();
    v
}

/// Asserts that the states other than `target` and `dest` are exactly as `before`.
fn assert_others_untouched(
    before: &BTreeMap<JobState, Vec<StoredJob>>,
    after: &BTreeMap<JobState, Vec<StoredJob>>,
    target: JobState,
    dest: Option<JobState>,
    what: &str,
) {
    for state in JobState::ALL {
        if state != target && Some(state) != dest {
            assert_eq!(
                before[&state], after[&state],
                "{what} must not touch {state} jobs"
            );
        }
    }
}

/// MUTATE clear removes the whole target set, ignoring any filter, and nothing else.
pub async fn mutate_clear_empties_target_only<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await;
        let before = all_lists(s).await;
        let filter = Some(MutateFilter {
            jids: strings(&["matches-nothing"]),
            regexp: None,
            jobtype: Some("Nothing".into()),
        });
        assert_eq!(
            mutate(s, MutateOp::Clear, target, filter, t).await,
            3,
            "clear {target}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "clear {target} empties it");
        assert_others_untouched(&before, &after, target, None, &format!("clear {target}"));
        for jid in fx_jids(target) {
            assert_eq!(get(s, &jid).await, None, "{jid} is gone after clear");
        }
        c.finish(t).await;
    }
}

/// MUTATE discard with no filter at all (or an empty filter) is the same as clear.
pub async fn mutate_discard_without_filter_clears_target<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        for filter in [None, Some(MutateFilter::default())] {
            let c = Ctx::<H>::new().await;
            let s = c.s();
            let t = populate(s, T0).await;
            let before = all_lists(s).await;
            let what = format!("discard {target} with filter {filter:?}");
            assert_eq!(
                mutate(s, MutateOp::Discard, target, filter, t).await,
                3,
                "{what}"
            );
            let after = all_lists(s).await;
            assert!(after[&target].is_empty(), "{what} empties it");
            assert_others_untouched(&before, &after, target, None, &what);
            c.finish(t).await;
        }
    }
}

/// MUTATE kill: scheduled / retry → dead until now + dead_retention, `failure` kept.
pub async fn mutate_kill_moves_jobs_to_dead<H: Harness>() {
    for target in [Scheduled, Retry] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await + MIN;
        let before = all_lists(s).await;
        let what = format!("kill {target}");
        assert_eq!(
            mutate(s, MutateOp::Kill, target, None, t).await,
            3,
            "{what}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Dead), &what);
        let dead = &after[&Dead];
        assert_eq!(
            &dead[..3],
            &before[&Dead][..],
            "{what}: earlier dead jobs untouched and first"
        );
        assert_eq!(
            sorted_jids(&dead[3..]),
            sorted_jids(&before[&target]),
            "{what}"
        );
        for old in &before[&target] {
            let got = must_get(s, &old.jid).await;
            assert_eq!(
                (got.state, got.at),
                (Dead, t + DEFAULT_RETENTION),
                "{what}: {}",
                old.jid
            );
            assert_eq!(
                payload(&got).failure,
                payload(old).failure,
                "{what} keeps failure"
            );
            assert_eq!(
                payload(&got).args.map(|a| a.get().to_string()),
                payload(old).args.map(|a| a.get().to_string())
            );
        }
        c.finish(t).await;
    }
}

/// MUTATE requeue: scheduled / retry / dead → enqueued at the back of the job's own queue, the
/// listener told, `failure` kept.
pub async fn mutate_requeue_moves_jobs_to_their_queue<H: Harness>() {
    for target in [Scheduled, Retry, Dead] {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await + MIN;
        let queue = fx_queue(target);
        push(s, &[spec("requeue-early").queue(&queue)], t).await;
        c.rec.take();
        let before = all_lists(s).await;
        let what = format!("requeue {target}");
        let t2 = t + SEC;
        assert_eq!(
            mutate(s, MutateOp::Requeue, target, None, t2).await,
            3,
            "{what}"
        );
        let after = all_lists(s).await;
        assert!(after[&target].is_empty(), "{what} empties it");
        assert_others_untouched(&before, &after, target, Some(Enqueued), &what);
        let in_queue = list(s, Enqueued, Some(&queue)).await;
        assert_eq!(
            in_queue[0].jid, "requeue-early",
            "{what}: requeued jobs go to the back"
        );
        assert_eq!(
            sorted_jids(&in_queue[1..]),
            sorted_jids(&before[&target]),
            "{what}"
        );
        for old in &before[&target] {
            let got = must_get(s, &old.jid).await;
            assert_eq!(
                (got.state, got.at),
                (Enqueued, t2),
                "{what}: {} enqueued now",
                old.jid
            );
            assert_eq!(
                payload(&got).failure,
                payload(old).failure,
                "{what} keeps failure"
            );
        }
        assert!(
            c.rec.take().contains(&queue),
            "{what}: the listener is told about {queue}"
        );
        for _ in 0..4 {
            assert!(
                fetch(s, &[&queue], t2).await.is_some(),
                "{what}: requeued jobs are fetchable"
            );
        }
        c.finish(t2).await;
    }
}

/// Applies one filter to each target with `op`, checks the count, the jobs affected and that
/// nothing else changed.
async fn check_filter<H: Harness>(op: MutateOp, filter: MutateFilter, kinds: &[&str], what: &str) {
    for target in [Scheduled, Retry, Dead] {
        if op == MutateOp::Kill && target == Dead {
            continue;
        }
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let t = populate(s, T0).await;
        let before = all_lists(s).await;
        let what = format!("{op:?} {target} {what}");
        let n = mutate(s, op, target, Some(filter.clone()), t).await;
        let hit: Vec<String> = kinds.iter().map(|k| fx_jid(target, k)).collect();
        let after = all_lists(s).await;
        let dest = match op {
            MutateOp::Kill => Some(Dead),
            MutateOp::Requeue => Some(Enqueued),
            _ => None,
        };
        assert_others_untouched(&before, &after, target, dest, &what);
        let want_left: Vec<String> = before[&target]
            .iter()
            .map(|j| j.jid.clone())
            .filter(|j| !hit.contains(j))
            .collect();
        let left: Vec<String> = after[&target].iter().map(|j| j.jid.clone()).collect();
        assert_eq!(left, want_left, "{what}: jobs left in {target}");
        assert_eq!(n, hit.len() as u64, "{what}: affected count");
        for jid in &hit {
            assert_eq!(state_of(s, jid).await, dest, "{what}: {jid}");
        }
        c.finish(t).await;
    }
}

/// A non-empty `jids` filter selects by jid and ignores `jobtype` and `regexp`.
pub async fn mutate_filter_jids_take_priority<H: Harness>() {
    let mut f = MutateFilter {
        jids: Vec::new(),
        regexp: Some("*\"color\":\"red\"*".into()),
        jobtype: Some("Beta".into()),
    };
    for target in [Scheduled, Retry, Dead] {
        f.jids.push(fx_jid(target, "alpha-blue"));
    }
    f.jids.push("no-such-jid-1".into());
    check_filter::<H>(MutateOp::Discard, f.clone(), &["alpha-blue"], "jids").await;
    check_filter::<H>(MutateOp::Kill, f.clone(), &["alpha-blue"], "jids").await;
    check_filter::<H>(MutateOp::Requeue, f, &["alpha-blue"], "jids").await;
}

/// A `jobtype` filter (without jids or regexp) selects that jobtype.
pub async fn mutate_filter_by_jobtype<H: Harness>() {
    let f = MutateFilter {
        jids: Vec::new(),
        regexp: None,
        jobtype: Some("Alpha".into()),
    };
    check_filter::<H>(
        MutateOp::Discard,
        f.clone(),
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
    check_filter::<H>(
        MutateOp::Kill,
        f.clone(),
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
    check_filter::<H>(
        MutateOp::Requeue,
        f,
        &["alpha-red", "alpha-blue"],
        "jobtype",
    )
    .await;
}

/// `regexp` is a glob (`*`, `?`, `[...]`) over the stored JSON; with `jobtype` both must match.
pub async fn mutate_filter_by_glob<H: Harness>() {
    let glob = |g: &str, jt: Option<&str>| MutateFilter {
        jids: Vec::new(),
        regexp: Some(g.to_string()),
        jobtype: jt.map(str::to_string),
    };
    let cases: [(MutateFilter, &[&str]); 6] = [
        (
            glob("*\"jobtype\":\"Alpha\"*", None),
            &["alpha-red", "alpha-blue"],
        ),
        (
            glob("*\"color\":\"red\"*", None),
            &["alpha-red", "beta-red"],
        ),
        (glob("*\"color\":\"red\"*", Some("Alpha")), &["alpha-red"]),
        (glob("*\"jobtype\":\"Bet?\"*", None), &["beta-red"]),
        (
            glob("*\"jobtype\":\"[AX]lpha\"*", None),
            &["alpha-red", "alpha-blue"],
        ),
        (glob("*\"color\":\"green\"*", None), &[]),
    ];
    for (f, kinds) in cases {
        let what = format!("glob {:?} jobtype {:?}", f.regexp, f.jobtype);
        check_filter::<H>(MutateOp::Discard, f, kinds, &what).await;
    }
    let f = glob("*\"color\":\"blue\"*", None);
    check_filter::<H>(MutateOp::Requeue, f.clone(), &["alpha-blue"], "glob blue").await;
    check_filter::<H>(MutateOp::Kill, f, &["alpha-blue"], "glob blue").await;
}

/// `regexp` is a Redis `SCAN MATCH` glob (Faktory hands it to Redis), matched against the job's
/// JSON as stored and served: `\` escapes the next character (the `faktory` crate's
/// `Filter::from_pattern(r#"*\"args\":\[\"x\"\]*"#)`), `[...]` is a class with ranges (also
/// backwards) and `^`, and an unescaped `[` always starts a class.
pub async fn mutate_filter_is_a_redis_glob<H: Harness>() {
    let cases: [(&str, &[&str]); 7] = [
        (r#"*\"args\":\[\"x\"\]*"#, &["glob-args-x"]),
        // Unescaped, `["x"]` is a class of one byte: nothing has `"args":"` or `"args":x`.
        (r#"*"args":["x"]*"#, &[]),
        (r#"*\"args\":\[\"[x-y]\"\]*"#, &["glob-args-x", "glob-args-y"]),
        (r#"*\"args\":\[\"[y-x]\"\]*"#, &["glob-args-x", "glob-args-y"]),
        (r#"*\"args\":\[\"[^x]\"\]*"#, &["glob-args-y"]),
        (r#"*\"args\":\[\"x\",*"#, &["glob-args-xy"]),
        (r#"*\[\"?\"\]*"#, &["glob-args-x", "glob-args-y"]),
    ];
    for (pattern, want) in cases {
        let c = Ctx::<H>::new().await;
        let s = c.s();
        let mut t = T0;
        for (kind, args) in [("x", r#"["x"]"#), ("y", r#"["y"]"#), ("xy", r#"["x","y"]"#)] {
            put(s, &spec(&format!("glob-args-{kind}")).args(args), Retry, t).await;
            t += SEC;
        }
        let filter = MutateFilter {
            jids: Vec::new(),
            regexp: Some(pattern.to_string()),
            jobtype: None,
        };
        let n = mutate(s, MutateOp::Requeue, Retry, Some(filter), t).await;
        assert_eq!(n, want.len() as u64, "requeue count for {pattern}");
        for kind in ["x", "y", "xy"] {
            let jid = format!("glob-args-{kind}");
            let expect = if want.contains(&jid.as_str()) { Enqueued } else { Retry };
            assert_eq!(state_of(s, &jid).await, Some(expect), "{pattern}: {jid}");
        }
        c.finish(t).await;
    }
}

/// MUTATE acts only on its target set, even when its jids name jobs in other states.
pub async fn mutate_never_touches_other_states<H: Harness>() {
    let everyone: Vec<String> = JobState::ALL.iter().flat_map(|s| fx_jids(*s)).collect();
    for target in [Scheduled, Retry, Dead] {
        for op in [MutateOp::Discard, MutateOp::Kill, MutateOp::Requeue] {
            if op == MutateOp::Kill && target == Dead {
                continue;
            }
            let f = MutateFilter {
                jids: everyone.clone(),
                ..MutateFilter::default()
            };
            let kinds: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
            check_filter::<H>(op, f, &kinds, "naming jobs of every state").await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queues: remove, latency
// ---------------------------------------------------------------------------------------------

/// QUEUE REMOVE: the queue's enqueued jobs → gone, the queue and its pause flag forgotten; jobs
/// of that queue in other states and other queues untouched; unknown names ignored.
pub async fn remove_queues_deletes_enqueued_jobs_and_forgets_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("rmq-a-work-01").queue("a"), Working, T0).await;
    put(s, &spec("rmq-a-retry-1").queue("a"), Retry, T0).await;
    put(s, &spec("rmq-a-sched-1").queue("a"), Scheduled, T0).await;
    push(
        s,
        &[
            spec("rmq-a-000001").queue("a"),
            spec("rmq-b-000001").queue("b"),
        ],
        T0,
    )
    .await;
    push(s, &[spec("rmq-a-000002").queue("a")], T0).await;
    s.set_paused(QueueSelector::Names(strings(&["a"])), true)
        .await
        .expect("pause");
    let n = s
        .remove_queues(QueueSelector::Names(strings(&["a", "unknown"])))
        .await
        .expect("remove");
    assert_eq!(n, 2, "remove returns the number of jobs removed");
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("b", 1, false)],
        "queue a is forgotten"
    );
    assert_eq!(get(s, "rmq-a-000001").await, None);
    assert_eq!(get(s, "rmq-a-000002").await, None);
    assert_eq!(state_of(s, "rmq-a-work-01").await, Some(Working));
    assert_eq!(state_of(s, "rmq-a-retry-1").await, Some(Retry));
    assert_eq!(state_of(s, "rmq-a-sched-1").await, Some(Scheduled));
    assert_eq!(state_of(s, "rmq-b-000001").await, Some(Enqueued));
    assert_eq!(
        ack(s, "rmq-a-work-01", T0).await,
        AckOutcome::Acked,
        "a working job of a removed queue"
    );
    push(s, &[spec("rmq-a-000003").queue("a")], T0 + SEC).await;
    assert_eq!(
        stats(s).await.queues[0],
        queue_stats("a", 1, false),
        "a queue pushed to after REMOVE is new and unpaused"
    );
    assert_eq!(
        fetch_jid(s, &["a"], T0 + SEC).await.as_deref(),
        Some("rmq-a-000003")
    );
    c.finish(T0 + SEC).await;
}

/// QUEUE REMOVE *: every queue and its enqueued jobs.
pub async fn remove_all_queues<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    put(s, &spec("rma-work-0001").queue("w"), Working, T0).await;
    push(
        s,
        &[
            spec("rma-a-000001").queue("a"),
            spec("rma-b-000001").queue("b"),
            spec("rma-b-000002").queue("b"),
        ],
        T0,
    )
    .await;
    s.set_paused(QueueSelector::Names(strings(&["b"])), true)
        .await
        .expect("pause");
    assert_eq!(
        s.remove_queues(QueueSelector::All).await.expect("remove *"),
        3
    );
    let st = stats(s).await;
    assert!(st.queues.is_empty(), "{:?}", st.queues);
    assert_eq!(st.working, 1);
    assert!(jids(s, Enqueued, None).await.is_empty());
    push(s, &[spec("rma-b-000003").queue("b")], T0).await;
    assert_eq!(
        fetch_jid(s, &["b"], T0).await.as_deref(),
        Some("rma-b-000003"),
        "b is no longer paused"
    );
    c.finish(T0).await;
}

fn assert_latency(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: one latency per queue, got {got:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 0.01,
            "{what}: latencies {got:?}, want {want:?}"
        );
    }
}

/// QUEUE LATENCY: seconds since the `enqueued_at` of each queue's next job, 0 for empty and
/// unknown queues, in the order asked.
pub async fn queue_latency_measures_oldest_job<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let lat = |qs: &[&str], now| s.queue_latency(strings(qs), now);
    assert_latency(
        &lat(&["a", "nope"], T0).await.expect("latency"),
        &[0.0, 0.0],
        "empty store",
    );
    put(s, &spec("lat-c-000001").queue("c"), Working, T0).await; // c known and empty
    push(s, &[spec("lat-a-000001").queue("a")], T0).await;
    push(s, &[spec("lat-b-000001").queue("b")], T0 + 500).await;
    push(s, &[spec("lat-a-000002").queue("a")], T0 + 1000).await;
    let got = lat(&["a", "b", "c", "nope"], T0 + 8140)
        .await
        .expect("latency");
    assert_latency(&got, &[8.14, 7.64, 0.0, 0.0], "a, b, c, nope");
    assert_eq!(
        fetch_jid(s, &["a"], T0 + 9000).await.as_deref(),
        Some("lat-a-000001")
    );
    assert_latency(
        &lat(&["a"], T0 + 10_000).await.expect("latency"),
        &[9.0],
        "a after a fetch",
    );
    s.set_paused(QueueSelector::Names(strings(&["b"])), true)
        .await
        .expect("pause");
    assert_latency(
        &lat(&["b"], T0 + 10_500).await.expect("latency"),
        &[10.0],
        "paused b",
    );
    push(s, &[spec("lat-d-000001").queue("d").at(T0 + 20 * SEC)], T0).await;
    assert_eq!(promote(s, T0 + 30 * SEC).await, 1);
    assert_latency(
        &lat(&["d"], T0 + 35 * SEC).await.expect("latency"),
        &[5.0],
        "promoted job",
    );
    c.finish(T0 + 35 * SEC).await;
}

// ---------------------------------------------------------------------------------------------
// FLUSH, stats, history
// ---------------------------------------------------------------------------------------------

/// FLUSH: every job gone, queues, pause flags, counters and history wiped.
pub async fn flush_wipes_everything<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let t = populate(s, T0).await;
    assert_eq!(
        ack(s, &fx_jid(Working, "alpha-red"), t).await,
        AckOutcome::Acked
    );
    s.set_paused(QueueSelector::Names(strings(&["q-enq"])), true)
        .await
        .expect("pause");
    assert_ne!(counters(s).await, (0, 0));
    s.flush().await.expect("flush");

    assert_eq!(stats(s).await, Stats::default(), "stats after FLUSH");
    for state in JobState::ALL {
        assert!(
            list(s, state, None).await.is_empty(),
            "no {state} jobs after FLUSH"
        );
        for jid in fx_jids(state) {
            assert_eq!(get(s, &jid).await, None, "{jid} after FLUSH");
        }
    }
    let h = history(s, 3, t).await;
    assert_eq!(h.len(), 3);
    assert!(
        h.iter().all(|d| d.processed == 0 && d.failures == 0),
        "history after FLUSH: {h:?}"
    );
    assert_eq!(
        ack(s, &fx_jid(Working, "beta-red"), t).await,
        AckOutcome::NotWorking
    );
    assert_eq!(fetch(s, &["q-enq"], t).await, None);
    assert_eq!(
        promote(s, t + DAY).await,
        0,
        "no scheduled or retry jobs survive FLUSH"
    );

    push(s, &[spec(&fx_jid(Enqueued, "alpha-red")).queue("q-enq")], t).await;
    assert_eq!(
        stats(s).await.queues,
        vec![queue_stats("q-enq", 1, false)],
        "pause flags wiped"
    );
    assert!(fetch(s, &["q-enq"], t).await.is_some());
    c.finish(t).await;
}

/// Stats list the known queues sorted by name with size and pause flag; a queue stays known
/// (size 0) when emptied; set sizes and counters are right.
pub async fn stats_list_known_queues_sorted_with_sizes<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("st-zeta-00001").queue("zeta"),
            spec("st-mid-000001").queue("mid"),
            spec("st-alpha-0001").queue("alpha"),
            spec("st-zeta-00002").queue("zeta"),
            spec("st-mid-000002").queue("mid"),
            spec("st-mid-000003").queue("mid"),
            spec("st-sched-0001").queue("onlyscheduled").at(T0 + HOUR),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_jid(s, &["alpha"], T0).await.as_deref(),
        Some("st-alpha-0001")
    );
    s.set_paused(QueueSelector::Names(strings(&["mid"])), true)
        .await
        .expect("pause");
    let st = stats(s).await;
    assert_eq!(
        st.queues,
        vec![
            queue_stats("alpha", 0, false),
            queue_stats("mid", 3, true),
            queue_stats("zeta", 2, false)
        ]
    );
    assert_eq!(st.enqueued(), 5);
    assert_eq!(
        (st.scheduled, st.working, st.retries, st.dead),
        (1, 1, 0, 0)
    );
    c.finish(T0).await;
}

/// history(days, today): `days` entries ending with today's day, oldest first, idle days zero.
pub async fn history_has_one_entry_per_day_oldest_first<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let d2 = T0 - 2 * DAY;
    put(s, &spec("hist-ack-0001"), Working, d2).await;
    assert_eq!(ack(s, "hist-ack-0001", d2).await, AckOutcome::Acked);
    put(s, &spec("hist-fail-001"), Working, d2).await;
    assert!(matches!(
        fail(s, "hist-fail-001", d2).await,
        FailReply::Failed(_)
    ));
    put(s, &spec("hist-ack-0002").queue("other"), Working, T0).await;
    assert_eq!(ack(s, "hist-ack-0002", T0).await, AckOutcome::Acked);

    let day = |k: i64| local_day(T0 - k * DAY);
    let zero = |k: i64| DayStats {
        day: day(k),
        processed: 0,
        failures: 0,
    };
    let h = history(s, 5, T0).await;
    assert_eq!(
        h,
        vec![
            zero(4),
            zero(3),
            DayStats {
                day: day(2),
                processed: 2,
                failures: 1
            },
            zero(1),
            DayStats {
                day: day(0),
                processed: 1,
                failures: 0
            },
        ]
    );
    assert_eq!(
        history(s, 1, T0).await,
        vec![DayStats {
            day: day(0),
            processed: 1,
            failures: 0
        }]
    );
    assert_eq!(
        history(s, 2, T0 - DAY).await,
        vec![
            DayStats {
                day: day(2),
                processed: 2,
                failures: 1
            },
            zero(1)
        ],
        "history ends with the day of `today`"
    );
    assert!(
        history(s, 0, T0).await.is_empty(),
        "history(0) has no entries"
    );
    assert_eq!(counters(s).await, (3, 1), "totals count every day");
    c.finish(T0).await;
}

// ---------------------------------------------------------------------------------------------
// Durability, listing, get
// ---------------------------------------------------------------------------------------------

/// After a crash-reopen every state, payload, reservation, counter, pause flag and history entry
/// is as before; a working job can still be ACKed or FAILed, FIFO order holds.
pub async fn every_state_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let y = T0 - DAY;
    {
        let s = c.s();
        put(s, &spec("dur-yest-ack1"), Working, y).await;
        assert_eq!(ack(s, "dur-yest-ack1", y).await, AckOutcome::Acked);
        put(s, &spec("dur-yest-fail"), Retry, y).await;
        populate(s, T0).await;
        push(s, &[spec("dur-paused-01").queue("paused")], T0 + MIN).await;
        s.set_paused(QueueSelector::Names(strings(&["paused"])), true)
            .await
            .expect("pause");
    }
    let t = T0 + 2 * MIN;
    let before = snapshot(c.s(), t).await;
    c.reopen().await;
    let after = snapshot(c.s(), t).await;
    assert_same_snapshot(&before, &after, "after a crash-reopen");
    c.reopen().await; // twice: reopening must not itself change anything
    let again = snapshot(c.s(), t).await;
    assert_same_snapshot(&before, &again, "after a second crash-reopen");

    let s = c.s();
    assert_eq!(
        ack(s, &fx_jid(Working, "alpha-red"), t).await,
        AckOutcome::Acked,
        "ACK after reopen"
    );
    assert!(
        matches!(
            fail(s, &fx_jid(Working, "alpha-blue"), t).await,
            FailReply::Failed(FailOutcome::Retry { .. })
        ),
        "FAIL after reopen"
    );
    assert_eq!(
        fetch_jid(s, &["paused", "q-enq"], t).await,
        Some(fx_jid(Enqueued, "alpha-red"))
    );
    assert_eq!(
        fetch_jid(s, &["q-enq"], t).await,
        Some(fx_jid(Enqueued, "alpha-blue"))
    );
    assert_eq!(
        counters(s).await,
        (before.stats.processed + 2, before.stats.failures + 1)
    );
    c.finish(t).await;
}

async fn assert_pages<S: Store>(s: &S, state: JobState, queue: Option<&str>, want: &[&str]) {
    let all = jids(s, state, queue).await;
    assert_eq!(all, want, "list({state}, {queue:?}) in the state's order");
    for (off, lim) in [
        (0u64, 2u64),
        (2, 2),
        (4, 2),
        (5, 2),
        (1, 3),
        (3, 100),
        (9, 1),
    ] {
        let page: Vec<String> = s
            .list(state, queue.map(str::to_string), off, lim)
            .await
            .expect("list")
            .into_iter()
            .map(|j| j.jid)
            .collect();
        let lo = (off as usize).min(want.len());
        let hi = ((off + lim) as usize).min(want.len());
        assert_eq!(
            page,
            want[lo..hi],
            "list({state}, {queue:?}, offset {off}, limit {lim})"
        );
    }
}

/// list pages (offset, limit) through each state in its order: scheduled by `at` then arrival,
/// enqueued FIFO, working by reservation expiry, retry by `next_at`, dead by time of death.
pub async fn list_pages_in_state_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    // Scheduled: at = [50, 10, 30, 10, 20] min; ties by arrival.
    for (i, m) in [50, 10, 30, 10, 20].into_iter().enumerate() {
        push(
            s,
            &[spec(&format!("pg-sched-{i:04}")).at(T0 + m * MIN)],
            T0 + i as Millis,
        )
        .await;
    }
    assert_pages(
        s,
        Scheduled,
        None,
        &[
            "pg-sched-0001",
            "pg-sched-0003",
            "pg-sched-0004",
            "pg-sched-0002",
            "pg-sched-0000",
        ],
    )
    .await;

    // Working: fetched in order 0..4, reserve_for = [600, 60, 300, 120, 900] s.
    for (i, rf) in [600, 60, 300, 120, 900].into_iter().enumerate() {
        put(
            s,
            &spec(&format!("pg-work-{i:04}")).queue("w").reserve_for(rf),
            Working,
            T0 + i as Millis,
        )
        .await;
    }
    assert_pages(
        s,
        Working,
        None,
        &[
            "pg-work-0001",
            "pg-work-0003",
            "pg-work-0002",
            "pg-work-0000",
            "pg-work-0004",
        ],
    )
    .await;

    // Retry: failed 100 s apart (more than the jitter) in the order 4, 2, 0, 3, 1.
    // Dead: died in the order 3, 1, 4, 0, 2.
    for (k, (r, d)) in [(4, 3), (2, 1), (0, 4), (3, 0), (1, 2)]
        .into_iter()
        .enumerate()
    {
        let t = T0 + k as Millis * 100 * SEC;
        put(s, &spec(&format!("pg-retry-{r:04}")).queue("r"), Retry, t).await;
        put(
            s,
            &spec(&format!("pg-dead-{d:04}")).queue("d").retry(-1),
            Dead,
            t,
        )
        .await;
    }
    assert_pages(
        s,
        Retry,
        None,
        &[
            "pg-retry-0004",
            "pg-retry-0002",
            "pg-retry-0000",
            "pg-retry-0003",
            "pg-retry-0001",
        ],
    )
    .await;
    assert_pages(
        s,
        Dead,
        None,
        &[
            "pg-dead-0003",
            "pg-dead-0001",
            "pg-dead-0004",
            "pg-dead-0000",
            "pg-dead-0002",
        ],
    )
    .await;

    // Enqueued: FIFO, in one queue and over all queues.
    push(
        s,
        &[
            spec("pg-enq-00003").queue("e"),
            spec("pg-enq-00000").queue("e"),
        ],
        T0 + HOUR,
    )
    .await;
    for jid in ["pg-enq-00004", "pg-enq-00001", "pg-enq-00002"] {
        push(s, &[spec(jid).queue("e")], T0 + HOUR + 1).await;
    }
    let fifo = [
        "pg-enq-00003",
        "pg-enq-00000",
        "pg-enq-00004",
        "pg-enq-00001",
        "pg-enq-00002",
    ];
    assert_pages(s, Enqueued, Some("e"), &fifo).await;
    assert_pages(s, Enqueued, None, &fifo).await;
    c.finish(T0 + HOUR).await;
}

/// get() reports each state with the job's queue and jobtype; unknown and gone jids are None.
pub async fn get_reports_each_state<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    for state in JobState::ALL {
        let jid = format!("get-{}", state.set_name());
        let queue = format!("q-{}", state.set_name());
        let sp = spec(&jid)
            .queue(&queue)
            .jobtype("GetJob")
            .retry(if state == Dead { -1 } else { 25 });
        put(s, &sp, state, T0).await;
        let got = must_get(s, &jid).await;
        assert_eq!((got.jid.as_str(), got.state), (jid.as_str(), state));
        assert_eq!(
            (got.queue.as_str(), got.jobtype.as_str()),
            (queue.as_str(), "GetJob")
        );
    }
    assert_eq!(get(s, "get-unknown-1").await, None);
    assert_eq!(ack(s, "get-working", T0).await, AckOutcome::Acked);
    assert_eq!(get(s, "get-working").await, None);
    c.finish(T0).await;
}

/// Asserts that the job is exactly in `state` (get and every list agree) or gone (None).
async fn assert_only_in<S: Store>(s: &S, jid: &str, state: Option<JobState>, step: &str) {
    assert_eq!(state_of(s, jid).await, state, "{step}: get({jid})");
    for st in JobState::ALL {
        let listed = jids(s, st, None).await.iter().filter(|j| *j == jid).count();
        let want = usize::from(Some(st) == state);
        assert_eq!(listed, want, "{step}: {jid} listed {listed} times in {st}");
    }
    check_consistency(s).await;
}

/// One job walked through every transition: it is in exactly one state after each.
pub async fn job_is_in_exactly_one_state_through_its_life<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let jid = "life-job-0001";
    let mut t = T0;
    push(s, &[spec(jid).retry(2).reserve_for(60).at(T0 + MIN)], t).await;
    assert_only_in(s, jid, Some(Scheduled), "push").await;
    t += MIN;
    assert_eq!(promote(s, t).await, 1);
    assert_only_in(s, jid, Some(Enqueued), "promote scheduled").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_only_in(s, jid, Some(Working), "fetch").await;
    assert!(matches!(
        fail(s, jid, t).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_only_in(s, jid, Some(Retry), "fail").await;
    t += MIN;
    assert_eq!(promote(s, t).await, 1);
    assert_only_in(s, jid, Some(Enqueued), "promote retry").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    t += 2 * MIN;
    assert_eq!(reap(s, t).await, 1);
    assert_only_in(s, jid, Some(Retry), "reap").await;
    assert_eq!(
        mutate(s, MutateOp::Kill, Retry, by_jids(&[jid]), t).await,
        1
    );
    assert_only_in(s, jid, Some(Dead), "kill").await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, by_jids(&[jid]), t).await,
        1
    );
    assert_only_in(s, jid, Some(Enqueued), "requeue dead").await;
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_eq!(
        fail(s, jid, t).await,
        FailReply::Failed(FailOutcome::Dead),
        "third failure of retry:2"
    );
    assert_only_in(s, jid, Some(Dead), "fail with retries exhausted").await;
    assert_eq!(
        mutate(s, MutateOp::Requeue, Dead, by_jids(&[jid]), t).await,
        1
    );
    assert_eq!(fetch_jid(s, &["default"], t).await.as_deref(), Some(jid));
    assert_eq!(ack(s, jid, t).await, AckOutcome::Acked);
    assert_only_in(s, jid, None, "ack").await;
    c.finish(t).await;
}

// ---------------------------------------------------------------------------------------------
// Keyset pages (page) and delete_jobs
// ---------------------------------------------------------------------------------------------

/// One [`Store::page`] call.
async fn page<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    after: Option<Cursor>,
    limit: u64,
) -> Page {
    s.page(PageQuery {
        state,
        filter: filter.clone(),
        after,
        limit,
    })
    .await
    .expect("page")
}

fn jf(
    queue: Option<&str>,
    jobtype: Option<&str>,
    jid: Option<&str>,
    text: Option<&str>,
) -> JobFilter {
    JobFilter {
        queue: queue.map(str::to_string),
        jobtype: jobtype.map(str::to_string),
        jid: jid.map(str::to_string),
        text: text.map(str::to_string),
    }
}

fn by_text(text: &str) -> JobFilter {
    jf(None, None, None, Some(text))
}

/// Whether the job matches the filter as [`JobFilter`] defines it.
fn matches_filter(j: &StoredJob, f: &JobFilter) -> bool {
    f.queue.as_ref().is_none_or(|q| *q == j.queue)
        && f.jobtype.as_ref().is_none_or(|t| *t == j.jobtype)
        && f.jid.as_ref().is_none_or(|x| *x == j.jid)
        && f.text.as_ref().is_none_or(|t| {
            j.payload
                .to_ascii_lowercase()
                .contains(&t.to_ascii_lowercase())
        })
}

fn page_jids(jobs: &[(Cursor, StoredJob)]) -> Vec<String> {
    jobs.iter().map(|(_, j)| j.jid.clone()).collect()
}

/// Pages through `state`'s jobs matching `filter` from `after` on, `limit` (> 0) at a time,
/// following `next` (through its URL form) until it is `None`; returns the jobs with their
/// cursors.
///
/// The paging rule the suite holds backends to: a page has at most `limit` jobs, each in `state`,
/// matching the filter and as `get` returns it, their cursors strictly increasing from `after`
/// on (for the sets the cursor's score is [`StoredJob::at`]); a page with fewer than `limit` jobs
/// has `next = None`; a full page has `None` or a cursor, which it may give even when no job
/// follows (the next page is then empty). So following `next` until `None` yields every matching
/// job exactly once, in order; that is all the cases rely on.
async fn walk_from<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    mut after: Option<Cursor>,
    limit: u64,
) -> Vec<(Cursor, StoredJob)> {
    let what = format!("page({state}, {filter:?}, limit {limit})");
    let mut out: Vec<(Cursor, StoredJob)> = Vec::new();
    for _ in 0..1000 {
        let p = page(s, state, filter, after, limit).await;
        let n = p.jobs.len() as u64;
        assert!(n <= limit, "{what} after {after:?} returned {n} jobs");
        for (c, j) in &p.jobs {
            assert_eq!(j.state, state, "{what} returned {}", j.jid);
            assert!(
                matches_filter(j, filter),
                "{what} returned {} which does not match: {}",
                j.jid,
                j.payload
            );
            assert_eq!(
                get(s, &j.jid).await.as_ref(),
                Some(j),
                "{what}: get({}) must agree with the page",
                j.jid
            );
            if state != Enqueued {
                assert_eq!(
                    c.score, j.at,
                    "{what}: the cursor score of {} is its at",
                    j.jid
                );
            }
            let prev = out.last().map(|(c, _)| *c).or(after);
            assert!(
                prev.is_none_or(|p| *c > p),
                "{what}: cursor {c} of {} does not follow {prev:?}",
                j.jid
            );
            out.push((*c, j.clone()));
        }
        match p.next {
            None => return out,
            Some(next) => {
                assert_eq!(
                    n, limit,
                    "{what} after {after:?}: a page of {n} (< limit) jobs must be the last (next {next})"
                );
                let form = next.to_string();
                after = Some(
                    form.parse()
                        .unwrap_or_else(|e| panic!("{what}: cursor {form:?} does not parse: {e}")),
                );
            }
        }
    }
    panic!("{what}: more than 1000 pages (next never None?)");
}

async fn walk<S: Store>(
    s: &S,
    state: JobState,
    filter: &JobFilter,
    limit: u64,
) -> Vec<(Cursor, StoredJob)> {
    walk_from(s, state, filter, None, limit).await
}

/// Asserts that walking `state`'s jobs matching `filter` yields `want`, in one page and in pages
/// of 1, 2 and 3, the same order each time. Jobs in one group of `want` share their order key:
/// their order among themselves is the backend's tie-breaker.
async fn assert_walks<S: Store>(s: &S, state: JobState, filter: &JobFilter, want: &[&[&str]]) {
    let what = format!("page({state}, {filter:?})");
    let full = page_jids(&walk(s, state, filter, 1000).await);
    let flat: Vec<&str> = want.iter().flat_map(|g| g.iter().copied()).collect();
    assert_eq!(
        full.len(),
        flat.len(),
        "{what}: got {full:?}, want {want:?}"
    );
    let mut i = 0;
    for g in want {
        let mut got: Vec<&str> = full[i..i + g.len()].iter().map(String::as_str).collect();
        let mut w = g.to_vec();
        got.sort_unstable();
        w.sort_unstable();
        assert_eq!(
            got, w,
            "{what}: got {full:?}, want {want:?} (a group in any order)"
        );
        i += g.len();
    }
    for limit in [1, 2, 3] {
        let got = page_jids(&walk(s, state, filter, limit).await);
        assert_eq!(
            got, full,
            "{what} in pages of {limit}: same jobs, same order as one page"
        );
    }
}

async fn delete<S: Store>(s: &S, state: JobState, jids: Vec<String>) -> u64 {
    s.delete_jobs(state, jids).await.expect("delete_jobs")
}

/// page walks each state in its order whatever the page size (the paging rule: [`walk_from`]):
/// scheduled by `at`, working by reservation expiry, retry by `next_at`, dead by time of death
/// (jobs sharing a time in a stable order, also when a page ends among them), enqueued by the
/// global enqueue sequence across queues (a requeued job at the end, though pushed first).
pub async fn page_walks_each_state_in_order<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let all = JobFilter::default();
    // Scheduled: at = [50, 10, 30, 10, 20, 10] min.
    for (i, m) in [50, 10, 30, 10, 20, 10].into_iter().enumerate() {
        push(
            s,
            &[spec(&format!("pw-sched-{i:04}")).at(T0 + m * MIN)],
            T0 + i as Millis,
        )
        .await;
    }
    assert_walks(
        s,
        Scheduled,
        &all,
        &[
            &["pw-sched-0001", "pw-sched-0003", "pw-sched-0005"],
            &["pw-sched-0004"],
            &["pw-sched-0002"],
            &["pw-sched-0000"],
        ],
    )
    .await;

    // Working: all fetched at T0, reserve_for = [600, 60, 300, 60, 900] s.
    for (i, rf) in [600, 60, 300, 60, 900].into_iter().enumerate() {
        put(
            s,
            &spec(&format!("pw-work-{i:04}"))
                .queue("pw-w")
                .reserve_for(rf),
            Working,
            T0,
        )
        .await;
    }
    assert_walks(
        s,
        Working,
        &all,
        &[
            &["pw-work-0001", "pw-work-0003"],
            &["pw-work-0002"],
            &["pw-work-0000"],
            &["pw-work-0004"],
        ],
    )
    .await;

    // Retry: failed 100 s apart (more than the jitter) in the order 4, 2, 0, 3, 1.
    for (k, r) in [4, 2, 0, 3, 1].into_iter().enumerate() {
        let t = T0 + k as Millis * 100 * SEC;
        put(
            s,
            &spec(&format!("pw-retry-{r:04}")).queue("pw-r"),
            Retry,
            t,
        )
        .await;
    }
    assert_walks(
        s,
        Retry,
        &all,
        &[
            &["pw-retry-0004"],
            &["pw-retry-0002"],
            &["pw-retry-0000"],
            &["pw-retry-0003"],
            &["pw-retry-0001"],
        ],
    )
    .await;

    // Dead: 3 and 1 died at once, then 4, 0, 2.
    for (k, d) in [(0, 3), (0, 1), (1, 4), (2, 0), (3, 2)] {
        put(
            s,
            &spec(&format!("pw-dead-{d:04}")).queue("pw-d").retry(-1),
            Dead,
            T0 + k * 100 * SEC,
        )
        .await;
    }
    assert_walks(
        s,
        Dead,
        &all,
        &[
            &["pw-dead-0003", "pw-dead-0001"],
            &["pw-dead-0004"],
            &["pw-dead-0000"],
            &["pw-dead-0002"],
        ],
    )
    .await;

    // Enqueued over three queues: 5 (pw-c) pushed first and failed; 3 (pw-a) and 0 (pw-b) in one
    // push, then 4 (pw-b), 1 (pw-a), 2 (pw-a); then 5 is requeued.
    let t = T0 + HOUR;
    put(s, &spec("pw-enq-00005").queue("pw-c"), Retry, t).await;
    push(
        s,
        &[
            spec("pw-enq-00003").queue("pw-a"),
            spec("pw-enq-00000").queue("pw-b"),
        ],
        t + 1,
    )
    .await;
    for (jid, q) in [
        ("pw-enq-00004", "pw-b"),
        ("pw-enq-00001", "pw-a"),
        ("pw-enq-00002", "pw-a"),
    ] {
        push(s, &[spec(jid).queue(q)], t + 2).await;
    }
    assert_eq!(
        mutate(
            s,
            MutateOp::Requeue,
            Retry,
            by_jids(&["pw-enq-00005"]),
            t + 3
        )
        .await,
        1
    );
    assert_walks(
        s,
        Enqueued,
        &all,
        &[
            &["pw-enq-00003"],
            &["pw-enq-00000"],
            &["pw-enq-00004"],
            &["pw-enq-00001"],
            &["pw-enq-00002"],
            &["pw-enq-00005"],
        ],
    )
    .await;
    c.finish(t + 3).await;
}

/// page filters: queue, jobtype and jid exactly; text as an ASCII-case-insensitive substring of
/// the stored JSON (args, jobtype, a failure's message, errtype and backtrace; `%` and `_` taken
/// literally); every given field must match; only jobs of the requested state. No match: an
/// empty page without `next`.
pub async fn page_filters_by_queue_jobtype_jid_and_text<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let hello = r#"["Hello World"]"#;
    let mailer = |jid: &str, q: &str| spec(jid).queue(q).jobtype("Mailer");
    put(
        s,
        &mailer("pf-sched-0001", "pf-a").args(hello),
        Scheduled,
        T0,
    )
    .await;
    put(
        s,
        &mailer("pf-dead-00001", "pf-a").args(hello).retry(-1),
        Dead,
        T0,
    )
    .await;
    put(
        s,
        &spec("pf-retry-0002").queue("pf-r").jobtype("Report"),
        Retry,
        T0,
    )
    .await;
    push(s, &[mailer("pf-retry-0001", "pf-r")], T0).await;
    assert_eq!(
        fetch_jid(s, &["pf-r"], T0).await.as_deref(),
        Some("pf-retry-0001")
    );
    let info = FailInfo::new(
        "Net::OpenTimeout",
        "Connection REFUSED by upstream",
        vec!["net.rb:7".into()],
    );
    assert!(matches!(
        s.fail("pf-retry-0001".into(), info, T0)
            .await
            .expect("fail"),
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    push(
        s,
        &[
            mailer("pf-enq-00001", "pf-a").args(hello),
            mailer("pf-enq-00002", "pf-b").args(r#"["x_y"]"#),
            spec("pf-enq-00003")
                .queue("pf-a")
                .jobtype("Report")
                .args(r#"["xzy","100% sure"]"#),
            mailer("pf-enq-000010", "pf-a"),
        ],
        T0 + SEC,
    )
    .await;

    const E1: &str = "pf-enq-00001";
    const E2: &str = "pf-enq-00002";
    const E3: &str = "pf-enq-00003";
    const E10: &str = "pf-enq-000010";
    const R1: &str = "pf-retry-0001";
    const R2: &str = "pf-retry-0002";
    let cases: Vec<(JobState, JobFilter, Vec<&[&str]>)> = vec![
        (
            Enqueued,
            jf(Some("pf-a"), None, None, None),
            vec![&[E1], &[E3], &[E10]],
        ),
        (
            Enqueued,
            jf(None, Some("Mailer"), None, None),
            vec![&[E1], &[E2], &[E10]],
        ),
        (Enqueued, jf(None, Some("mailer"), None, None), vec![]),
        (
            Enqueued,
            jf(Some("pf-a"), Some("Mailer"), None, None),
            vec![&[E1], &[E10]],
        ),
        (Enqueued, jf(None, Some("Report"), None, None), vec![&[E3]]),
        (Enqueued, jf(None, None, Some(E1), None), vec![&[E1]]),
        (Enqueued, jf(Some("pf-b"), None, Some(E1), None), vec![]),
        (Enqueued, jf(None, None, Some(R1), None), vec![]),
        (Retry, jf(None, None, Some(R1), None), vec![&[R1]]),
        (Retry, jf(Some("pf-r"), None, None, None), vec![&[R1, R2]]),
        (Retry, jf(Some("pf-a"), None, None, None), vec![]),
        (Enqueued, by_text("HELLO world"), vec![&[E1]]),
        (Enqueued, by_text(r#"["hello world"]"#), vec![&[E1]]),
        (Scheduled, by_text("hello WORLD"), vec![&["pf-sched-0001"]]),
        (Dead, by_text("hello"), vec![&["pf-dead-00001"]]),
        (Enqueued, by_text("x_y"), vec![&[E2]]),
        (Enqueued, by_text("%"), vec![&[E3]]),
        (Enqueued, by_text("0% SURE"), vec![&[E3]]),
        (Enqueued, by_text("MAILER"), vec![&[E1], &[E2], &[E10]]),
        (Enqueued, by_text(""), vec![&[E1], &[E2], &[E3], &[E10]]),
        (Retry, by_text("connection refused"), vec![&[R1]]),
        (Retry, by_text("openTIMEOUT"), vec![&[R1]]),
        (Retry, by_text("NET.RB:7"), vec![&[R1]]),
        (Retry, by_text("boom"), vec![&[R2]]),
        (
            Retry,
            jf(None, Some("Report"), None, Some("refused")),
            vec![],
        ),
        (
            Retry,
            jf(Some("pf-r"), Some("Mailer"), Some(R1), Some("Refused")),
            vec![&[R1]],
        ),
    ];
    for (state, filter, want) in &cases {
        assert_walks(s, *state, filter, want).await;
    }
    for state in JobState::ALL {
        for limit in [1, 10] {
            let p = page(s, state, &by_text("no such text anywhere"), None, limit).await;
            assert_eq!(
                p,
                Page {
                    jobs: Vec::new(),
                    next: None
                },
                "page({state}) with a text nothing matches, limit {limit}"
            );
        }
    }
    c.finish(T0 + SEC).await;
}

/// A walk stays correct while jobs move between its pages: from the cursor on it yields, once
/// each and in order, every job still in the state (also when the cursor's own job left), none
/// of those that left (ACK, FETCH, FAIL, kill), and those that arrived behind it (a push, a
/// requeue, a later failure).
pub async fn page_stays_correct_while_jobs_move<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let all = JobFilter::default();

    // Retry: six jobs failed 100 s apart, read two per page.
    for k in 1..=6 {
        let t = T0 + (k - 1) * 100 * SEC;
        put(
            s,
            &spec(&format!("pm-retry-{k:04}")).queue("pm-r"),
            Retry,
            t,
        )
        .await;
    }
    let t = T0 + 10 * MIN;
    let first = page(s, Retry, &all, None, 2).await;
    assert_eq!(page_jids(&first.jobs), ["pm-retry-0001", "pm-retry-0002"]);
    let next = first
        .next
        .expect("a full page with more jobs after it has a next cursor");
    // The cursor's own job is killed, an unseen one ACKed late, a new one fails after all.
    assert_eq!(
        mutate(s, MutateOp::Kill, Retry, by_jids(&["pm-retry-0002"]), t).await,
        1
    );
    assert_eq!(
        ack(s, "pm-retry-0004", t).await,
        AckOutcome::AckedLate(Retry)
    );
    put(s, &spec("pm-retry-0007").queue("pm-r"), Retry, t).await;
    for limit in [1, 2, 100] {
        assert_eq!(
            page_jids(&walk_from(s, Retry, &all, Some(next), limit).await),
            [
                "pm-retry-0003",
                "pm-retry-0005",
                "pm-retry-0006",
                "pm-retry-0007"
            ],
            "retry jobs after the first page, in pages of {limit}"
        );
    }

    // Enqueued: 1, 3, 5, 7 in pm-a and 2, 4, 6, 8 in pm-b, pushed in number order; three per page.
    let t = t + MIN;
    for k in 1..=8 {
        let q = if k % 2 == 1 { "pm-a" } else { "pm-b" };
        push(s, &[spec(&format!("pm-enq-{k:05}")).queue(q)], t).await;
    }
    let first = page(s, Enqueued, &all, None, 3).await;
    assert_eq!(
        page_jids(&first.jobs),
        ["pm-enq-00001", "pm-enq-00002", "pm-enq-00003"]
    );
    let next = first
        .next
        .expect("a full page with more jobs after it has a next cursor");
    // Seen 2 and unseen 4 are fetched (2 then fails and is requeued: to the end); the cursor's
    // own job 3 and unseen 6 are ACKed late; 9 is pushed.
    assert_eq!(
        fetch_jid(s, &["pm-b"], t).await.as_deref(),
        Some("pm-enq-00002")
    );
    assert_eq!(
        fetch_jid(s, &["pm-b"], t).await.as_deref(),
        Some("pm-enq-00004")
    );
    assert_eq!(
        ack(s, "pm-enq-00003", t).await,
        AckOutcome::AckedLate(Enqueued)
    );
    assert_eq!(
        ack(s, "pm-enq-00006", t).await,
        AckOutcome::AckedLate(Enqueued)
    );
    push(s, &[spec("pm-enq-00009").queue("pm-a")], t).await;
    assert!(matches!(
        fail(s, "pm-enq-00002", t).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_eq!(
        mutate(s, MutateOp::Requeue, Retry, by_jids(&["pm-enq-00002"]), t).await,
        1
    );
    for limit in [1, 2, 100] {
        assert_eq!(
            page_jids(&walk_from(s, Enqueued, &all, Some(next), limit).await),
            [
                "pm-enq-00005",
                "pm-enq-00007",
                "pm-enq-00008",
                "pm-enq-00009",
                "pm-enq-00002"
            ],
            "enqueued jobs after the first page, in pages of {limit}"
        );
    }
    c.finish(t).await;
}

/// How many jobs `stats` counts in `state`.
fn state_count(st: &mut Stats, state: JobState) -> &mut u64 {
    match state {
        Scheduled => &mut st.scheduled,
        Working => &mut st.working,
        Retry => &mut st.retries,
        Dead => &mut st.dead,
        Enqueued => panic!("suite bug: enqueued jobs are counted per queue"),
    }
}

/// delete_jobs deletes the named jobs that are in the given state and nothing else: jids of jobs
/// in other states, unknown or repeated jids count for nothing, and for working it deletes
/// nothing. Set and queue sizes follow (an emptied queue stays known), counters do not change, a
/// deleted tracked job's tracking data is forgotten, and its jid may be pushed again.
pub async fn delete_jobs_removes_only_jobs_in_that_state<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let t = populate(s, T0).await;
    put(s, &tracked("del-track-enq1", "q-tracked"), Enqueued, t).await;
    put(s, &tracked("del-track-rty1", "q-tracked-r"), Retry, t).await;
    c.watch_tracked(&["del-track-enq1", "del-track-rty1"]);

    for target in [Scheduled, Enqueued, Retry, Dead] {
        let before = all_lists(s).await;
        let mut want = stats(s).await;
        let victim = fx_jid(target, "alpha-red");
        let mut ask = vec![
            victim.clone(),
            "del-unknown-0001".to_string(),
            victim.clone(),
        ];
        ask.extend(
            JobState::ALL
                .into_iter()
                .filter(|x| *x != target)
                .map(|x| fx_jid(x, "beta-red")),
        );
        assert_eq!(
            delete(s, target, ask.clone()).await,
            1,
            "delete_jobs({target}, {ask:?})"
        );
        assert_eq!(get(s, &victim).await, None, "{victim} is gone");
        let after = all_lists(s).await;
        let what = format!("delete_jobs({target})");
        assert_others_untouched(&before, &after, target, None, &what);
        let rest: Vec<StoredJob> = before[&target]
            .iter()
            .filter(|j| j.jid != victim)
            .cloned()
            .collect();
        assert_eq!(after[&target], rest, "{what}: the other {target} jobs stay");
        if target == Enqueued {
            let q = want.queues.iter_mut().find(|q| q.name == "q-enq").unwrap();
            q.size -= 1;
        } else {
            *state_count(&mut want, target) -= 1;
        }
        assert_eq!(stats(s).await, want, "{what}: stats");
    }

    let before = all_lists(s).await;
    let st = stats(s).await;
    assert_eq!(
        delete(s, Working, fx_jids(Working)).await,
        0,
        "working jobs are never deleted"
    );
    assert_eq!(delete(s, Enqueued, Vec::new()).await, 0, "no jids");
    assert_eq!(
        all_lists(s).await,
        before,
        "nothing deleted, nothing changed"
    );
    assert_eq!(stats(s).await, st);

    assert_eq!(delete(s, Enqueued, fx_jids(Enqueued)).await, 2);
    assert!(
        stats(s)
            .await
            .queues
            .contains(&queue_stats("q-enq", 0, false)),
        "an emptied queue stays known: {:?}",
        stats(s).await.queues
    );

    assert_eq!(delete(s, Scheduled, strings(&["del-track-enq1"])).await, 0);
    assert_eq!(
        track_state(s, "del-track-enq1", t).await,
        Some(TrackState::Enqueued)
    );
    assert_eq!(delete(s, Enqueued, strings(&["del-track-enq1"])).await, 1);
    assert_eq!(delete(s, Retry, strings(&["del-track-rty1"])).await, 1);
    for jid in ["del-track-enq1", "del-track-rty1"] {
        assert_eq!(
            track(s, jid, t).await,
            None,
            "tracking data of deleted {jid}"
        );
        assert!(
            !track_set(s, jid, Some(50), None, None, t).await,
            "TRACK SET of deleted {jid} stores nothing"
        );
        assert_eq!(track(s, jid, t).await, None, "{jid} after TRACK SET");
    }

    let again = fx_jid(Enqueued, "alpha-red");
    push(s, &[spec(&again).queue("q-enq")], t).await;
    assert_eq!(jids(s, Enqueued, Some("q-enq")).await, [again]);
    c.finish(t).await;
}

/// delete_jobs is a manual delete: a deleted unique job keeps its lock until `unique_for` runs
/// out, and a deleted batch member stays pending (its batch's callbacks keep waiting).
pub async fn delete_jobs_keeps_unique_locks_and_batch_counts<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":60}"#;
    push(s, &[uniq("del-uniq-00001", "[1]", u)], T0).await;
    assert_eq!(delete(s, Enqueued, strings(&["del-uniq-00001"])).await, 1);
    assert_eq!(
        push_one(s, uniq("del-uniq-00002", "[1]", u), T0 + SEC).await,
        Err(PushError::NotUnique),
        "the deleted job's lock holds"
    );
    assert_eq!(
        push_one(s, uniq("del-uniq-00003", "[1]", u), T0 + MIN + SEC).await,
        Ok(()),
        "until unique_for runs out"
    );

    let bid = "del-batch-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    c.watch_batches(&[bid]);
    push(
        s,
        &[member("del-member-001", bid), member("del-member-002", bid)],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert_eq!(delete(s, Enqueued, strings(&["del-member-001"])).await, 1);
    assert_eq!(counts(s, bid, T0).await, (2, 2, 0, "", ""));
    run_ok(s, "bq", "del-member-002", T0 + SEC).await;
    assert_eq!(
        counts(s, bid, T0 + SEC).await,
        (2, 1, 0, "", ""),
        "the deleted member still holds the complete callback"
    );
    assert_eq!(
        jids(s, Enqueued, Some("cb-complete")).await,
        Vec::<String>::new()
    );
    c.finish(T0 + MIN + SEC).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency: every step is guarded by the state the caller saw
// ---------------------------------------------------------------------------------------------

impl<H: Harness> Ctx<H> {
    /// Runs `f` with the harness shared (`Arc`) so it can spawn tasks, then takes it back.
    async fn shared<T, F, Fut>(self, f: F) -> (Ctx<H>, T)
    where
        F: FnOnce(Arc<H>) -> Fut,
        Fut: Future<Output = T>,
    {
        let Ctx {
            h,
            rec,
            cfg,
            watched,
        } = self;
        let h = Arc::new(h);
        let out = f(h.clone()).await;
        let mut h = h;
        let h = loop {
            match Arc::try_unwrap(h) {
                Ok(h) => break h,
                Err(again) => {
                    h = again;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        };
        (
            Ctx {
                h,
                rec,
                cfg,
                watched,
            },
            out,
        )
    }
}

async fn join_all<T: Send + 'static>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("task panicked"));
    }
    out
}

/// Parallel FETCHes from the same queues deliver every job exactly once.
pub async fn concurrent_fetches_deliver_each_job_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 200;
    let all: Vec<String> = (0..n).map(|i| format!("conc-fetch-{i:05}")).collect();
    let specs: Vec<Spec> = all
        .iter()
        .enumerate()
        .map(|(i, j)| spec(j).queue(if i % 2 == 0 { "qa" } else { "qb" }))
        .collect();
    push(c.s(), &specs, T0).await;
    let (c, got) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for w in 0..8 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let qs = if w % 2 == 0 {
                        ["qa", "qb"]
                    } else {
                        ["qb", "qa"]
                    };
                    let mut got = Vec::new();
                    while let Some(j) = h
                        .store()
                        .fetch(strings(&qs), format!("worker-{w}"), T0 + SEC)
                        .await
                        .expect("fetch")
                    {
                        got.push(j.jid);
                    }
                    got
                }));
            }
            join_all(tasks).await.concat()
        })
        .await;
    let mut got = got;
    got.sort();
    let mut dups = got.clone();
    dups.dedup();
    assert_eq!(
        dups.len(),
        got.len(),
        "a job was delivered twice by parallel FETCHes"
    );
    assert_eq!(got, all, "parallel FETCHes deliver every job");
    assert_eq!(stats(c.s()).await.working, n as u64);
    c.finish(T0 + SEC).await;
}

/// `fetch_early` (which may answer before its reservation is durable) still hands each job to
/// one caller only, in FIFO order, and any request made after it resolves — ACK, FAIL — sees
/// the reservation.
pub async fn fetch_early_delivers_once_and_later_requests_see_it<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 60;
    let all: Vec<String> = (0..n).map(|i| format!("early-fetch-{i:04}")).collect();
    let specs: Vec<Spec> = all.iter().map(|j| spec(j)).collect();
    push(c.s(), &specs, T0).await;
    let (c, got) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for w in 0..4 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(j) = h
                        .store()
                        .fetch_early(strings(&["default"]), format!("early-{w}"), T0 + SEC)
                        .await
                        .expect("fetch_early")
                    {
                        assert_eq!(j.state, JobState::Working);
                        // Every other job is acknowledged, the rest failed, straight away.
                        let n: usize = j.jid[12..].parse().expect("jid number");
                        if n & 1 == 0 {
                            let r = h
                                .store()
                                .ack(j.jid.clone(), T0 + 2 * SEC)
                                .await
                                .expect("ack");
                            assert_eq!(
                                r,
                                AckOutcome::Acked,
                                "ACK right after fetch_early of {}",
                                j.jid
                            );
                        } else {
                            let r = h
                                .store()
                                .fail(j.jid.clone(), FailInfo::new("E", "m", vec![]), T0 + 2 * SEC)
                                .await
                                .expect("fail");
                            assert!(
                                matches!(r, FailReply::Failed(_)),
                                "FAIL right after fetch_early of {}",
                                j.jid
                            );
                        }
                        got.push(j.jid);
                    }
                    got
                }));
            }
            join_all(tasks).await.concat()
        })
        .await;
    let mut got = got;
    got.sort();
    let mut dups = got.clone();
    dups.dedup();
    assert_eq!(dups.len(), got.len(), "fetch_early delivered a job twice");
    assert_eq!(got, all, "fetch_early delivers every job");
    let st = stats(c.s()).await;
    assert_eq!((st.working, st.retries), (0, n as u64 / 2));
    assert_eq!((st.processed, st.failures), (n as u64, n as u64 / 2));
    c.finish(T0 + 2 * SEC).await;
}

/// Parallel PUSHes of the same jid store exactly one job; the others get DuplicateJid.
pub async fn concurrent_pushes_of_one_jid_store_it_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let (c, results) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for i in 0..16 {
                let h = h.clone();
                tasks.push(tokio::spawn(async move {
                    let sp = spec("conc-same-jid").args(&format!("[{i}]"));
                    let sp = if i % 3 == 0 { sp.at(T0 + HOUR) } else { sp };
                    let r = h
                        .store()
                        .push(vec![sp.new_job(T0)], T0)
                        .await
                        .expect("push");
                    r.into_iter().next().expect("one result")
                }));
            }
            join_all(tasks).await
        })
        .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok, 1,
        "exactly one of the parallel pushes is accepted: {results:?}"
    );
    for r in results.iter().filter(|r| r.is_err()) {
        assert_duplicate(r, "conc-same-jid");
    }
    let st = stats(c.s()).await;
    assert_eq!(st.enqueued() + st.scheduled, 1);
    c.finish(T0).await;
}

/// Late ACKs and FAILs racing the reaper, the retry tick and a UI "retry now" (MUTATE requeue):
/// each expired job is taken by exactly one of ACK, FAIL or the reaper; every ACKed job is gone
/// (Acked if it came first, else AckedLate of the retry or enqueued copy the reaper left); every
/// FAILed job is stored once, failed once (retry_count 0), never lost; the counters add up.
pub async fn racing_ack_fail_reap_requeue_remove_acked_keep_one_copy_of_failed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let n = 40;
    let all: Vec<String> = (0..n).map(|i| format!("race-job-{i:05}")).collect();
    for (i, jid) in all.iter().enumerate() {
        put(
            c.s(),
            &spec(jid).queue("race").reserve_for(60),
            Working,
            T0 + i as Millis,
        )
        .await;
    }
    let t = T0 + 5 * MIN;
    let jobs = all.clone();
    let (c, (acks, fails, reaped)) = c
        .shared(|h| async move {
            let mut workers = Vec::new();
            for (i, jid) in jobs.into_iter().enumerate() {
                let h = h.clone();
                workers.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        let r = h.store().ack(jid.clone(), t).await.expect("ack");
                        (jid, Some(r), None)
                    } else {
                        let r = h.store().fail(jid.clone(), boom(), t).await.expect("fail");
                        (jid, None, Some(r))
                    }
                }));
            }
            let mut reapers = Vec::new();
            for k in 0..3 {
                let h = h.clone();
                reapers.push(tokio::spawn(async move {
                    let mut n = h.store().reap_expired(t, 7).await.expect("reap");
                    n += h.store().reap_expired(t, 1000).await.expect("reap");
                    if k == 0 {
                        h.store()
                            .mutate(
                                Mutation {
                                    op: MutateOp::Requeue,
                                    target: Retry,
                                    filter: None,
                                },
                                t,
                            )
                            .await
                            .expect("mutate");
                    } else {
                        h.store()
                            .promote_due(t + HOUR, 1000)
                            .await
                            .expect("promote");
                    }
                    n
                }));
            }
            let outcomes = join_all(workers).await;
            let reaped: usize = join_all(reapers).await.into_iter().sum();
            let acks: Vec<(String, AckOutcome)> = outcomes
                .iter()
                .filter_map(|(j, a, _)| a.map(|a| (j.clone(), a)))
                .collect();
            let fails: Vec<(String, FailReply)> = outcomes
                .iter()
                .filter_map(|(j, _, f)| f.map(|f| (j.clone(), f)))
                .collect();
            (acks, fails, reaped)
        })
        .await;
    let s = c.s();
    let acked = acks.iter().filter(|(_, a)| *a == AckOutcome::Acked).count();
    let acked_late = acks
        .iter()
        .filter(|(_, a)| matches!(a, AckOutcome::AckedLate(_)))
        .count();
    let failed = fails
        .iter()
        .filter(|(_, f)| *f != FailReply::NotWorking)
        .count();
    assert_eq!(
        acked + failed + reaped,
        n,
        "each expired job is taken by exactly one of ACK, FAIL or the reaper \
         (acked {acked}, failed {failed}, reaped {reaped})"
    );
    assert!(
        acked_late <= reaped,
        "only a reaped job can be ACKed late (acked late {acked_late}, reaped {reaped})"
    );
    for (jid, a) in &acks {
        assert!(
            matches!(
                a,
                AckOutcome::Acked | AckOutcome::AckedLate(Retry) | AckOutcome::AckedLate(Enqueued)
            ),
            "{jid}: the job was working, in retry or enqueued when its ACK came, got {a:?}"
        );
        assert_eq!(
            get(s, jid).await,
            None,
            "{jid} was ACKed ({a:?}) but is still stored"
        );
    }
    for (jid, _) in &fails {
        let got = must_get(s, jid).await;
        assert!(
            matches!(got.state, Retry | Enqueued),
            "{jid} is {}",
            got.state
        );
        let f = payload(&got)
            .failure
            .expect("a stored job here has failed once");
        assert_eq!(
            f.retry_count, 0,
            "{jid} was failed twice (FAIL and reaper both acted)"
        );
    }
    assert_eq!(
        counters(s).await,
        (
            (acked + acked_late + failed + reaped) as u64,
            (failed + reaped) as u64
        ),
        "processed = ACKs (in time or late) + failures, failures = FAILs + reaped"
    );
    let st = stats(s).await;
    assert_eq!(st.working, 0);
    assert_eq!(
        st.enqueued() + st.retries,
        fails.len() as u64,
        "exactly the FAILed half is left, one copy each"
    );
    c.finish(t + HOUR).await;
}

/// close() waits for every accepted request: each PUSH racing it is either committed (`Ok`, and
/// still there after a reopen) or refused with `Closed` (and absent); after close, requests are
/// refused with `Closed`.
pub async fn close_commits_accepted_requests_and_refuses_later_ones<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let (mut c, results) = c
        .shared(|h| async move {
            let mut tasks = Vec::new();
            for i in 0..40 {
                let hh = h.clone();
                tasks.push(tokio::spawn(async move {
                    let h = hh;
                    let jid = format!("close-race-{i:04}");
                    let r = h.store().push(vec![spec(&jid).new_job(T0)], T0).await;
                    (jid, r)
                }));
                if i == 20 {
                    h.store().close().await;
                }
            }
            let mut results = join_all(tasks).await;
            let after = h
                .store()
                .push(vec![spec("close-after-01").new_job(T0)], T0)
                .await;
            results.push(("close-after-01".to_string(), after));
            results
        })
        .await;
    let late = &results.last().unwrap().1;
    assert!(
        matches!(late, Err(StoreError::Closed)),
        "a PUSH after close() must fail with Closed, got {late:?}"
    );
    c.reopen().await;
    let s = c.s();
    for (jid, r) in &results {
        match r {
            Ok(v) => {
                assert!(v[0].is_ok(), "{jid}: {v:?}");
                assert_eq!(
                    state_of(s, jid).await,
                    Some(Enqueued),
                    "{jid} was accepted before close"
                );
            }
            Err(StoreError::Closed) => {
                assert_eq!(state_of(s, jid).await, None, "{jid} was refused but stored")
            }
            Err(e) => panic!("{jid}: a PUSH racing close() gave {e:?}, not Ok or Closed"),
        }
    }
    c.finish(T0).await;
}

// ---------------------------------------------------------------------------------------------
// Randomized model-based test
// ---------------------------------------------------------------------------------------------

/// xorshift64*: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

/// The model's view of one stored job.
#[derive(Debug, Clone)]
struct MJob {
    queue: String,
    jobtype: String,
    retry: i64,
    reserve_for: i64,
    /// Failures so far (the payload's `failure.retry_count` is this − 1).
    failures: i64,
    state: JobState,
    /// scheduled: at; working: reservation expiry; retry: next_at; dead: dead_until.
    at: Millis,
    /// Enqueue order; jobs enqueued by one promote/requeue call share a key (their relative
    /// order is the backend's choice).
    key: u64,
}

#[derive(Default)]
struct Model {
    jobs: BTreeMap<String, MJob>,
    gone: BTreeSet<String>,
    /// Known queues → paused.
    queues: BTreeMap<String, bool>,
    processed: u64,
    failures: u64,
    next_key: u64,
}

const MODEL_QUEUES: [&str; 3] = ["qa", "qb", "qc"];
const MODEL_JOBTYPES: [&str; 2] = ["Alpha", "Beta"];

impl Model {
    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn enqueue(&mut self, jid: &str, key: u64) {
        let j = self.jobs.get_mut(jid).unwrap();
        j.state = Enqueued;
        j.key = key;
        let q = j.queue.clone();
        self.queues.entry(q).or_insert(false);
    }

    fn remove(&mut self, jid: &str) {
        self.jobs.remove(jid);
        self.gone.insert(jid.to_string());
    }

    fn in_state(&self, state: JobState) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.state == state)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What a failure (FAIL or reaper) of a working job does: Some(retry_count) when it goes to
    /// retry, and the outcome kind.
    fn failure_outcome(&mut self, jid: &str) -> (i64, &'static str) {
        self.processed += 1;
        self.failures += 1;
        let j = self.jobs.get_mut(jid).unwrap();
        j.failures += 1;
        let rc = j.failures - 1;
        let kind = if j.retry == 0 {
            "discarded"
        } else if rc < j.retry {
            "retry"
        } else {
            "dead"
        };
        (rc, kind)
    }

    fn all_jids(&self) -> Vec<String> {
        self.jobs.keys().chain(self.gone.iter()).cloned().collect()
    }
}

/// A seeded random sequence of push / fetch / ack / fail / promote / reap / purge / mutate /
/// pause / remove / flush / reopen against the store and an in-memory model of the state
/// machine, comparing every job's state (and `at`) and the stats after each step.
///
/// `WERK_CONFORMANCE_SEED=<n>` runs one given seed, `WERK_CONFORMANCE_STEPS=<n>` sets the length.
pub async fn random_operations_match_model<H: Harness>() {
    let steps: usize = std::env::var("WERK_CONFORMANCE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seeds: Vec<u64> = match std::env::var("WERK_CONFORMANCE_SEED") {
        Ok(s) => vec![s.parse().expect("WERK_CONFORMANCE_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        run_model::<H>(seed, steps).await;
    }
}

async fn run_model<H: Harness>(seed: u64, steps: usize) {
    let retention = 10 * MIN;
    let mut c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    let mut rng = Rng::new(seed);
    let mut m = Model::default();
    let mut now = T0;
    let mut serial = 0u64;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();

    for step in 0..steps {
        now += rng.below(30 * SEC as u64) as Millis;
        if rng.chance(4) {
            now += 2000 * SEC;
        }
        let roll = rng.below(100);
        let mut what: String;
        let s = c.s();
        match roll {
            // PUSH / PUSHB of 1–3 jobs, sometimes reusing a jid.
            0..=19 => {
                let n = 1 + rng.below(3);
                let mut specs = Vec::new();
                let mut expect_dup = Vec::new();
                let mut in_batch: BTreeMap<String, (String, String)> = BTreeMap::new();
                for _ in 0..n {
                    let known = m.all_jids();
                    let jid = if !known.is_empty() && rng.chance(10) {
                        rng.pick(&known)
                    } else {
                        serial += 1;
                        format!("rnd-{seed}-{serial:05}")
                    };
                    let mut sp = spec(&jid)
                        .queue(rng.pick(&MODEL_QUEUES))
                        .jobtype(rng.pick(&MODEL_JOBTYPES))
                        .retry(rng.pick(&[25, 25, 2, 1, 0, -1]))
                        .reserve_for(rng.pick(&[0, 60, 90, 120, 600]));
                    match rng.below(10) {
                        0..=5 => {}
                        6 => sp = sp.at(now - rng.below(60_000) as Millis),
                        _ => sp = sp.at(now + 1 + rng.below(120_000) as Millis),
                    }
                    // A jid already taken: by the same job (jobtype, queue, args; the model's
                    // args are always `[]`) it is a retried push, else a duplicate.
                    let taken = m
                        .jobs
                        .get(&jid)
                        .map(|j| (j.queue.clone(), j.jobtype.clone()))
                        .or_else(|| in_batch.get(&jid).cloned());
                    expect_dup.push(taken.map(|t| t == (sp.queue.clone(), sp.jobtype.clone())));
                    in_batch
                        .entry(jid)
                        .or_insert((sp.queue.clone(), sp.jobtype.clone()));
                    specs.push(sp);
                }
                what = format!(
                    "push {:?}",
                    specs.iter().map(|j| &j.jid).collect::<Vec<_>>()
                );
                let res = push_results(s, &specs, now).await;
                for ((sp, taken), r) in specs.iter().zip(expect_dup).zip(res) {
                    if taken == Some(true) {
                        assert_eq!(
                            r,
                            Ok(()),
                            "seed {seed} step {step}: {what}: {} is a retried push",
                            sp.jid
                        );
                        *tally.entry("=retried pushes".into()).or_default() += 1;
                        continue;
                    }
                    if taken == Some(false) {
                        assert!(
                            matches!(r, Err(PushError::DuplicateJid(..))),
                            "seed {seed} step {step}: {what}: {} must be a duplicate, got {r:?}",
                            sp.jid
                        );
                        *tally.entry("=duplicates refused".into()).or_default() += 1;
                        continue;
                    }
                    assert!(
                        r.is_ok(),
                        "seed {seed} step {step}: {what}: {} refused: {r:?}",
                        sp.jid
                    );
                    m.gone.remove(&sp.jid);
                    let scheduled = sp.at.is_some_and(|at| at > now);
                    m.jobs.insert(
                        sp.jid.clone(),
                        MJob {
                            queue: sp.queue.clone(),
                            jobtype: sp.jobtype.clone(),
                            retry: sp.retry.unwrap(),
                            reserve_for: sp.reserve_for.unwrap(),
                            failures: 0,
                            state: Scheduled,
                            at: sp.at.unwrap_or(now),
                            key: 0,
                        },
                    );
                    if !scheduled {
                        let k = m.key();
                        m.enqueue(&sp.jid, k);
                    }
                }
            }
            // FETCH from a random ordered subset of queues (plus an unknown one).
            20..=42 => {
                let mut pool: Vec<&str> = MODEL_QUEUES.to_vec();
                pool.push("qzz");
                let mut qs = Vec::new();
                while !pool.is_empty() && (qs.is_empty() || rng.chance(50)) {
                    qs.push(pool.remove(rng.below(pool.len() as u64) as usize));
                }
                what = format!("fetch {qs:?}");
                let mut candidates = Vec::new();
                for q in &qs {
                    if m.queues.get(*q) != Some(&false) {
                        continue;
                    }
                    let in_q: Vec<(&String, &MJob)> = m
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.state == Enqueued && j.queue == *q)
                        .collect();
                    if let Some(min) = in_q.iter().map(|(_, j)| j.key).min() {
                        candidates = in_q
                            .iter()
                            .filter(|(_, j)| j.key == min)
                            .map(|(k, _)| (*k).clone())
                            .collect();
                        break;
                    }
                }
                let got = fetch(s, &qs, now).await;
                match got {
                    None => assert!(
                        candidates.is_empty(),
                        "seed {seed} step {step}: {what} returned nothing, expected one of {candidates:?}"
                    ),
                    Some(j) => {
                        assert!(
                            candidates.contains(&j.jid),
                            "seed {seed} step {step}: {what} returned {}, expected one of {candidates:?}",
                            j.jid
                        );
                        let mj = m.jobs.get_mut(&j.jid).unwrap();
                        mj.state = Working;
                        mj.at = now + reservation_seconds(mj.reserve_for) * SEC;
                        *tally.entry("=fetched".into()).or_default() += 1;
                        what = format!("{what} -> {}", j.jid);
                    }
                }
            }
            // ACK of a working job, or of anything else (a late ACK of an enqueued, retry or
            // dead job removes it too; scheduled, gone and unknown jids are NotWorking).
            43..=53 => {
                let working = m.in_state(Working);
                let jid = if !working.is_empty() && rng.chance(75) {
                    rng.pick(&working)
                } else {
                    let mut all = m.all_jids();
                    all.push("rnd-unknown-jid".into());
                    rng.pick(&all)
                };
                what = format!("ack {jid}");
                let was = m.jobs.get(&jid).map(|j| j.state);
                let got = ack(s, &jid, now).await;
                let want = match was {
                    Some(Working) => AckOutcome::Acked,
                    Some(state @ (Enqueued | Retry | Dead)) => AckOutcome::AckedLate(state),
                    Some(Scheduled) | None => AckOutcome::NotWorking,
                };
                assert_eq!(got, want, "seed {seed} step {step}: {what}");
                if want != AckOutcome::NotWorking {
                    m.remove(&jid);
                    m.processed += 1;
                    let kind = match was {
                        Some(Working) => "=acked".to_string(),
                        Some(state) => format!("=acked late from {state}"),
                        None => unreachable!(),
                    };
                    *tally.entry(kind).or_default() += 1;
                }
            }
            // FAIL of a working job, or of anything else.
            54..=64 => {
                let working = m.in_state(Working);
                let jid = if !working.is_empty() && rng.chance(75) {
                    rng.pick(&working)
                } else {
                    let mut all = m.all_jids();
                    all.push("rnd-unknown-jid".into());
                    rng.pick(&all)
                };
                what = format!("fail {jid}");
                let was_working = m.jobs.get(&jid).is_some_and(|j| j.state == Working);
                let got = fail(s, &jid, now).await;
                if !was_working {
                    assert_eq!(
                        got,
                        FailReply::NotWorking,
                        "seed {seed} step {step}: {what}"
                    );
                } else {
                    let (rc, kind) = m.failure_outcome(&jid);
                    *tally.entry(format!("=failed to {kind}")).or_default() += 1;
                    match (kind, got) {
                        ("discarded", FailReply::Failed(FailOutcome::Discarded)) => m.remove(&jid),
                        ("dead", FailReply::Failed(FailOutcome::Dead)) => {
                            let j = m.jobs.get_mut(&jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        ("retry", FailReply::Failed(FailOutcome::Retry { next_at })) => {
                            let lo = now + backoff_seconds(rc, 0) * SEC;
                            let hi = now + backoff_seconds(rc, 29) * SEC;
                            assert!(
                                (lo..=hi).contains(&next_at),
                                "seed {seed} step {step}: {what}: next_at {next_at} outside [{lo}, {hi}]"
                            );
                            let j = m.jobs.get_mut(&jid).unwrap();
                            j.state = Retry;
                            j.at = next_at;
                        }
                        (kind, got) => {
                            panic!("seed {seed} step {step}: {what}: expected {kind}, got {got:?}")
                        }
                    }
                }
            }
            // Scheduler and retry tick.
            65..=71 => {
                what = "promote_due".into();
                let due: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, Scheduled | Retry) && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = promote(s, now).await;
                assert_eq!(
                    n,
                    due.len(),
                    "seed {seed} step {step}: promote_due count ({due:?})"
                );
                *tally.entry("=promoted".into()).or_default() += n;
                let k = m.key();
                for jid in &due {
                    m.enqueue(jid, k);
                }
            }
            // Reservation reaper.
            72..=76 => {
                what = "reap_expired".into();
                let expired: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Working && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = reap(s, now).await;
                assert_eq!(
                    n,
                    expired.len(),
                    "seed {seed} step {step}: reap count ({expired:?})"
                );
                for jid in &expired {
                    let (rc, kind) = m.failure_outcome(jid);
                    *tally.entry(format!("=reaped to {kind}")).or_default() += 1;
                    let got = get(s, jid).await;
                    match kind {
                        "discarded" => {
                            assert_eq!(
                                got, None,
                                "seed {seed} step {step}: reaped retry:0 job {jid}"
                            );
                            m.remove(jid);
                        }
                        "dead" => {
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        _ => {
                            let got = got.unwrap_or_else(|| {
                                panic!("seed {seed} step {step}: reaped {jid} vanished")
                            });
                            assert_eq!(got.state, Retry, "seed {seed} step {step}: reaped {jid}");
                            let lo = now + backoff_seconds(rc, 0) * SEC;
                            let hi = now + backoff_seconds(rc, 29) * SEC;
                            assert!(
                                (lo..=hi).contains(&got.at),
                                "seed {seed} step {step}: reaped {jid} next_at"
                            );
                            let f = payload(&got).failure.expect("failure");
                            assert_eq!(f.errtype, "ReservationExpired");
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Retry;
                            j.at = got.at;
                        }
                    }
                }
            }
            // MUTATE.
            77..=86 => {
                let target = rng.pick(&[Scheduled, Retry, Dead]);
                let mut op = rng.pick(&[
                    MutateOp::Clear,
                    MutateOp::Discard,
                    MutateOp::Kill,
                    MutateOp::Requeue,
                ]);
                if op == MutateOp::Kill && target == Dead {
                    op = MutateOp::Requeue;
                }
                let all = m.all_jids();
                let filter = match rng.below(10) {
                    0..=2 => None,
                    3..=6 => {
                        let mut jids = vec!["rnd-no-such-jid".to_string()];
                        for _ in 0..=rng.below(3) {
                            if !all.is_empty() {
                                jids.push(rng.pick(&all));
                            }
                        }
                        Some(MutateFilter {
                            jids,
                            regexp: None,
                            jobtype: Some("Nope".into()),
                        })
                    }
                    7..=8 => Some(MutateFilter {
                        jids: Vec::new(),
                        regexp: None,
                        jobtype: Some(rng.pick(&MODEL_JOBTYPES).to_string()),
                    }),
                    _ => Some(MutateFilter {
                        jids: Vec::new(),
                        regexp: Some(format!("*\"jobtype\":\"{}\"*", rng.pick(&MODEL_JOBTYPES))),
                        jobtype: None,
                    }),
                };
                what = format!("mutate {op:?} {target} {filter:?}");
                let hit: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(jid, j)| {
                        j.state == target
                            && match (&filter, op) {
                                (_, MutateOp::Clear) | (None, _) => true,
                                (Some(f), _) if !f.jids.is_empty() => f.jids.contains(jid),
                                (Some(f), _) => {
                                    let jt = f.jobtype.clone().or_else(|| {
                                        f.regexp
                                            .as_ref()
                                            .map(|r| r.split('"').nth(3).unwrap().to_string())
                                    });
                                    jt.is_none_or(|t| t == j.jobtype)
                                }
                            }
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = mutate(s, op, target, filter, now).await;
                assert_eq!(
                    n,
                    hit.len() as u64,
                    "seed {seed} step {step}: {what}: count ({hit:?})"
                );
                *tally.entry(format!("=mutated by {op:?}")).or_default() += hit.len();
                let k = m.key();
                for jid in &hit {
                    match op {
                        MutateOp::Clear | MutateOp::Discard => m.remove(jid),
                        MutateOp::Kill => {
                            let j = m.jobs.get_mut(jid).unwrap();
                            j.state = Dead;
                            j.at = now + retention;
                        }
                        MutateOp::Requeue => m.enqueue(jid, k),
                    }
                }
            }
            // QUEUE PAUSE / RESUME.
            87..=89 => {
                let paused = rng.chance(50);
                let sel = if rng.chance(15) {
                    QueueSelector::All
                } else {
                    QueueSelector::Names(vec![rng.pick(&MODEL_QUEUES).to_string()])
                };
                what = format!("set_paused {sel:?} {paused}");
                s.set_paused(sel.clone(), paused).await.expect("set_paused");
                for (name, p) in m.queues.iter_mut() {
                    if sel == QueueSelector::All || sel == QueueSelector::Names(vec![name.clone()])
                    {
                        *p = paused;
                    }
                }
            }
            // QUEUE REMOVE.
            90 => {
                let sel = if rng.chance(20) {
                    QueueSelector::All
                } else {
                    QueueSelector::Names(vec![rng.pick(&MODEL_QUEUES).to_string()])
                };
                what = format!("remove_queues {sel:?}");
                let names: Vec<String> = match &sel {
                    QueueSelector::All => m.queues.keys().cloned().collect(),
                    QueueSelector::Names(n) => n.clone(),
                };
                let hit: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Enqueued && names.contains(&j.queue))
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = s.remove_queues(sel).await.expect("remove_queues");
                assert_eq!(
                    n,
                    hit.len() as u64,
                    "seed {seed} step {step}: {what}: count"
                );
                *tally.entry("=removed with queue".into()).or_default() += hit.len();
                for jid in &hit {
                    m.remove(jid);
                }
                for q in &names {
                    m.queues.remove(q);
                }
            }
            // Dead purge.
            91..=93 => {
                what = "purge_dead".into();
                let expired: Vec<String> = m
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == Dead && j.at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let n = s.purge_dead(now, 1000).await.expect("purge_dead");
                assert_eq!(
                    n,
                    expired.len(),
                    "seed {seed} step {step}: purge count ({expired:?})"
                );
                *tally.entry("=purged".into()).or_default() += n;
                for jid in &expired {
                    m.remove(jid);
                }
            }
            // Crash and reopen.
            94..=97 => {
                what = "reopen".into();
                c.reopen().await;
            }
            // FLUSH (rarely).
            _ => {
                if rng.chance(20) {
                    what = "flush".into();
                    s.flush().await.expect("flush");
                    let jids: Vec<String> = m.jobs.keys().cloned().collect();
                    for jid in jids {
                        m.remove(&jid);
                    }
                    m.queues.clear();
                    m.processed = 0;
                    m.failures = 0;
                } else {
                    what = "nothing".into();
                }
            }
        }
        let kind: String = what
            .chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect();
        *tally.entry(kind).or_default() += 1;
        let ctx = format!(
            "seed {seed} step {step} (now = T0 + {} s) after {what}",
            (now - T0) / SEC
        );
        verify_model(c.s(), &m, &ctx, step % 10 == 9).await;
        if step % 25 == 24 {
            check_consistency(c.s()).await;
        }
    }
    eprintln!(
        "random_operations_match_model: seed {seed}, {steps} steps, {} jobs stored, {} gone, \
         processed {}, failures {}; operations {tally:?}",
        m.jobs.len(),
        m.gone.len(),
        m.processed,
        m.failures
    );
    c.finish(now).await;
}

async fn verify_model<S: Store>(s: &S, m: &Model, ctx: &str, check_gone: bool) {
    for (jid, want) in &m.jobs {
        let got = get(s, jid)
            .await
            .unwrap_or_else(|| panic!("{ctx}: job {jid} should be {} but is gone", want.state));
        assert_eq!(got.state, want.state, "{ctx}: state of {jid}");
        assert_eq!(got.queue, want.queue, "{ctx}: queue of {jid}");
        assert_eq!(got.jobtype, want.jobtype, "{ctx}: jobtype of {jid}");
        if want.state != Enqueued {
            assert_eq!(got.at, want.at, "{ctx}: at of {jid} ({})", want.state);
        }
        let failure = payload(&got).failure;
        if want.failures == 0 {
            assert!(
                failure.is_none(),
                "{ctx}: {jid} never failed but has {failure:?}"
            );
        } else {
            let f = failure.unwrap_or_else(|| panic!("{ctx}: {jid} failed but has no failure"));
            assert_eq!(
                f.retry_count,
                want.failures - 1,
                "{ctx}: retry_count of {jid}"
            );
        }
    }
    if check_gone {
        for jid in &m.gone {
            assert_eq!(state_of(s, jid).await, None, "{ctx}: {jid} should be gone");
        }
    }
    let st = stats(s).await;
    let count = |state| m.jobs.values().filter(|j| j.state == state).count() as u64;
    assert_eq!(
        (st.scheduled, st.working, st.retries, st.dead),
        (count(Scheduled), count(Working), count(Retry), count(Dead)),
        "{ctx}: set sizes (scheduled, working, retries, dead)"
    );
    assert_eq!(
        (st.processed, st.failures),
        (m.processed, m.failures),
        "{ctx}: counters"
    );
    let want_queues: Vec<QueueStats> = m
        .queues
        .iter()
        .map(|(name, paused)| QueueStats {
            name: name.clone(),
            size: m
                .jobs
                .values()
                .filter(|j| j.state == Enqueued && &j.queue == name)
                .count() as u64,
            paused: *paused,
        })
        .collect();
    assert_eq!(st.queues, want_queues, "{ctx}: queues");
}

// ---------------------------------------------------------------------------------------------
// Self-test: a straightforward in-memory reference store the suite must pass
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod reference {
    use super::*;
    use crate::{Reservation, Result};
    use werk_core::glob::redis_match;
    use werk_core::retry::apply_failure;

    #[derive(Clone)]
    struct Entry {
        job: Job,
        state: JobState,
        at: Millis,
        seq: u64,
        reservation: Option<Reservation>,
        expires: Option<Millis>,
        uniq: Option<werk_core::job::Uniqueness>,
        /// The batch the job is a member of.
        bid: Option<String>,
        /// A member job's first ACK / FAIL / expiry happened (it left `pending`).
        finished: bool,
        /// A member job counts in its batch's `failed`.
        failed: bool,
        /// The job is this batch's callback.
        callback: Option<(String, Cb)>,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Cb {
        Complete,
        Success,
    }

    #[derive(Clone)]
    struct Batch {
        parent: Option<String>,
        description: Option<String>,
        created_at: Millis,
        created_stamp: String,
        committed: bool,
        /// When the batch expires if it stays uncommitted.
        deadline: Millis,
        /// The last change (for the retention of a batch that never succeeds).
        changed_at: Millis,
        total: u64,
        pending: u64,
        failed: u64,
        children: Vec<String>,
        complete: Option<Job>,
        success: Option<Job>,
        complete_st: CallbackState,
        success_st: CallbackState,
        /// The callback was enqueued (or, when the batch has none, its condition held).
        complete_fired: bool,
        success_fired: bool,
        /// The batch is complete / has succeeded.
        complete_done: bool,
        success_done: bool,
        succeeded_at: Option<Millis>,
    }

    #[derive(Clone)]
    struct Track {
        percent: Option<u8>,
        desc: Option<String>,
        updated_at: Millis,
        /// How the job ended, when it ended by ACK (success) or discard after a failure.
        outcome: Option<TrackState>,
    }

    #[derive(Default)]
    pub struct Data {
        jobs: HashMap<String, Entry>,
        seq: u64,
        queues: BTreeMap<String, bool>,
        processed: u64,
        failures: u64,
        days: BTreeMap<String, (u64, u64)>,
        rng: u64,
        cron: BTreeMap<String, Millis>,
        expired: u64,
        /// Unique-job locks: key → (jid, until).
        locks: HashMap<String, (String, Millis)>,
        batches: BTreeMap<String, Batch>,
        tracks: HashMap<String, Track>,
    }

    impl Data {
        fn push_one(
            &mut self,
            NewJob { job, at }: NewJob,
            now: Millis,
            told: &mut Vec<String>,
        ) -> std::result::Result<(), PushError> {
            // A retry of the push that stored this job: OK, nothing changes.
            if let Some(e) = self.jobs.get(&job.jid) {
                if job.is_retried_push_of(&e.job) {
                    return Ok(());
                }
            }
            let bid = job.batch_id().ok().flatten();
            if let Some(bid) = &bid {
                if self.live_batch(bid, now).is_none() {
                    return Err(PushError::NoSuchBatch(bid.clone()));
                }
            }
            if let Some(e) = self.jobs.get(&job.jid) {
                return Err(PushError::DuplicateJid(
                    job.jid.clone(),
                    e.state.to_string(),
                ));
            }
            let uniq = job.uniqueness(now, at).ok().flatten();
            if let Some(u) = &uniq {
                if let Some((holder, _)) = self.locks.get(&u.key).filter(|(_, until)| *until > now) {
                    // The lock this very job took (same jid and identity; the job was fetched
                    // or is gone): a retried push, OK and nothing changes.
                    return match *holder == job.jid {
                        true => Ok(()),
                        false => Err(PushError::NotUnique),
                    };
                }
                self.locks.insert(u.key.clone(), (job.jid.clone(), u.until));
            }
            if let Some(b) = bid.as_ref().and_then(|b| self.batches.get_mut(b)) {
                b.total += 1;
                b.pending += 1;
                b.changed_at = now;
            }
            self.insert(job, at, uniq, bid, None, now, told);
            Ok(())
        }

        /// Stores a new job (enqueued, or scheduled for a future `at`) with its tracking data.
        #[allow(clippy::too_many_arguments)]
        fn insert(
            &mut self,
            job: Job,
            at: Option<Millis>,
            uniq: Option<werk_core::job::Uniqueness>,
            bid: Option<String>,
            callback: Option<(String, Cb)>,
            now: Millis,
            told: &mut Vec<String>,
        ) {
            let jid = job.jid.clone();
            if job.tracked() {
                self.tracks.insert(
                    jid.clone(),
                    Track {
                        percent: None,
                        desc: None,
                        updated_at: now,
                        outcome: None,
                    },
                );
            } else {
                self.tracks.remove(&jid);
            }
            let seq = self.next();
            let scheduled = at.is_some_and(|at| at > now);
            let expires = job.expiry(now).ok().flatten();
            let e = Entry {
                job,
                state: Scheduled,
                at: at.unwrap_or(now),
                seq,
                reservation: None,
                expires,
                uniq,
                bid,
                finished: false,
                failed: false,
                callback,
            };
            self.jobs.insert(jid.clone(), e);
            if !scheduled {
                told.push(self.enqueue(&jid, now));
            }
        }

        /// The batch, unless it does not exist or expired uncommitted.
        fn live_batch(&self, bid: &str, now: Millis) -> Option<&Batch> {
            self.batches
                .get(bid)
                .filter(|b| b.committed || b.deadline > now)
        }

        /// A member job's ACK (`ok`) or FAIL / expiry: its batch's counts. Returns the batch to
        /// [`Data::progress`] once the job is back in (or out of) `jobs`.
        fn count_result(&mut self, e: &mut Entry, ok: bool, now: Millis) -> Option<String> {
            let bid = e.bid.clone()?;
            let first = !e.finished;
            let was_failed = e.failed;
            e.finished = true;
            e.failed = !ok;
            if let Some(b) = self.batches.get_mut(&bid) {
                if first {
                    b.pending -= 1;
                }
                match (was_failed, ok) {
                    (false, false) => b.failed += 1,
                    (true, true) => b.failed -= 1,
                    _ => {}
                }
                b.changed_at = now;
            }
            Some(bid)
        }

        /// A callback job's ACK.
        fn callback_acked(&mut self, e: &Entry, now: Millis, told: &mut Vec<String>) {
            let Some((bid, kind)) = &e.callback else {
                return;
            };
            if let Some(b) = self.batches.get_mut(bid) {
                b.changed_at = now;
                match kind {
                    Cb::Complete => {
                        b.complete_st = CallbackState::Succeeded;
                        b.complete_done = true;
                    }
                    Cb::Success => {
                        b.success_st = CallbackState::Succeeded;
                        b.success_done = true;
                        b.succeeded_at = Some(now);
                    }
                }
            }
            self.progress(bid, now, told);
        }

        /// Checks the batch's callbacks, then its ancestors'.
        fn progress(&mut self, bid: &str, now: Millis, told: &mut Vec<String>) {
            let mut cur = Some(bid.to_string());
            while let Some(b) = cur.take() {
                self.step(&b, now, told);
                cur = self.batches.get(&b).and_then(|x| x.parent.clone());
            }
        }

        /// Whether a child batch counts as complete (`success`: as succeeded) for its parent. A
        /// child that is gone (expired uncommitted or purged) no longer holds its parent.
        fn child_done(&self, bid: &str, success: bool, now: Millis) -> bool {
            self.live_batch(bid, now).is_none_or(|c| {
                if success {
                    c.success_done
                } else {
                    c.complete_done
                }
            })
        }

        fn step(&mut self, bid: &str, now: Millis, told: &mut Vec<String>) {
            let Some(b) = self.batches.get(bid) else {
                return;
            };
            if !b.committed {
                return;
            }
            let kids_complete = b.children.iter().all(|c| self.child_done(c, false, now));
            let kids_succeeded = b.children.iter().all(|c| self.child_done(c, true, now));
            let b = self.batches.get_mut(bid).unwrap();
            if !b.complete_fired && b.pending == 0 && kids_complete {
                b.complete_fired = true;
                b.changed_at = now;
                match b.complete.clone() {
                    Some(job) => {
                        b.complete_st = CallbackState::Enqueued;
                        let parent = b.parent.clone();
                        self.push_callback(job, bid, parent, Cb::Complete, now, told);
                    }
                    None => b.complete_done = true,
                }
            }
            let b = self.batches.get_mut(bid).unwrap();
            if b.complete_done
                && !b.success_fired
                && b.pending == 0
                && b.failed == 0
                && kids_succeeded
            {
                b.success_fired = true;
                b.changed_at = now;
                match b.success.clone() {
                    Some(job) => {
                        b.success_st = CallbackState::Enqueued;
                        let parent = b.parent.clone();
                        self.push_callback(job, bid, parent, Cb::Success, now, told);
                    }
                    None => {
                        b.success_done = true;
                        b.succeeded_at = Some(now);
                    }
                }
            }
        }

        fn push_callback(
            &mut self,
            mut job: Job,
            bid: &str,
            parent: Option<String>,
            kind: Cb,
            now: Millis,
            told: &mut Vec<String>,
        ) {
            if let Some(p) = parent {
                job.add_custom("_pbid", &serde_json::Value::String(p));
            }
            while self.jobs.contains_key(&job.jid) {
                let n = self.next();
                job.jid = format!("batch-callback-{n:08}");
            }
            let at = Some(job.at.as_str())
                .filter(|a| !a.is_empty())
                .and_then(|a| parse_rfc3339(a).ok());
            self.insert(
                job,
                at,
                None,
                None,
                Some((bid.to_string(), kind)),
                now,
                told,
            );
        }

        fn touch_track(&mut self, jid: &str, now: Millis, outcome: Option<TrackState>) {
            if let Some(t) = self.tracks.get_mut(jid) {
                t.updated_at = now;
                if outcome.is_some() {
                    t.outcome = outcome;
                }
            }
        }

        /// An enqueued job that expired → gone (counted; a member counts as failed).
        fn drop_expired(&mut self, jid: &str, now: Millis, told: &mut Vec<String>) {
            let mut e = self.jobs.remove(jid).unwrap();
            self.expired += 1;
            self.tracks.remove(jid);
            if let Some(bid) = self.count_result(&mut e, false, now) {
                self.progress(&bid, now, told);
            }
        }

        /// Releases `jid`'s unique lock (if it still holds it).
        fn release(&mut self, jid: &str, uniq: &Option<werk_core::job::Uniqueness>) {
            if let Some(u) = uniq {
                if self
                    .locks
                    .get(&u.key)
                    .is_some_and(|(holder, _)| holder == jid)
                {
                    self.locks.remove(&u.key);
                }
            }
        }

        fn next(&mut self) -> u64 {
            self.seq += 1;
            self.seq
        }

        fn enqueue(&mut self, jid: &str, now: Millis) -> String {
            let seq = self.next();
            let e = self.jobs.get_mut(jid).unwrap();
            e.job.enqueued_at = format_stamp(now);
            e.state = Enqueued;
            e.at = now;
            e.seq = seq;
            e.reservation = None;
            let q = e.job.queue.clone();
            self.queues.entry(q.clone()).or_insert(false);
            q
        }

        fn fail(
            &mut self,
            jid: &str,
            info: &FailInfo,
            now: Millis,
            retention: Millis,
            told: &mut Vec<String>,
        ) -> FailOutcome {
            self.rng = self
                .rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = ((self.rng >> 33) % 30) as u32;
            let seq = self.next();
            let mut e = self.jobs.remove(jid).unwrap();
            let out = apply_failure(&mut e.job, info, now, r);
            if !matches!(out, FailOutcome::Retry { .. }) {
                // Automatic death (or discard): the job will never succeed; free its identity.
                self.release(jid, &e.uniq.clone());
            }
            self.processed += 1;
            self.failures += 1;
            let d = self.days.entry(local_day(now)).or_default();
            d.0 += 1;
            d.1 += 1;
            e.reservation = None;
            e.seq = seq;
            let bid = self.count_result(&mut e, false, now);
            let discarded = matches!(out, FailOutcome::Discarded);
            self.touch_track(jid, now, discarded.then_some(TrackState::Failed));
            match out {
                FailOutcome::Retry { next_at } => {
                    e.state = Retry;
                    e.at = next_at;
                }
                FailOutcome::Dead => {
                    e.state = Dead;
                    e.at = now + retention;
                }
                FailOutcome::Discarded => {}
            }
            if !discarded {
                self.jobs.insert(jid.to_string(), e);
            }
            if let Some(bid) = bid {
                self.progress(&bid, now, told);
            }
            out
        }

        fn sorted(&self, state: JobState, queue: Option<&str>) -> Vec<(&String, &Entry)> {
            let mut v: Vec<(&String, &Entry)> = self
                .jobs
                .iter()
                .filter(|(_, e)| e.state == state && queue.is_none_or(|q| e.job.queue == q))
                .collect();
            if state == Enqueued {
                v.sort_by_key(|(_, e)| e.seq);
            } else {
                v.sort_by_key(|(_, e)| (e.at, e.seq));
            }
            v
        }
    }

    /// The job's position in its state's order: enqueued by `seq`, the sets by (`at`, `seq`).
    /// `seq` is global and renewed by every move, so it is a stable tie-breaker.
    fn cursor(e: &Entry) -> Cursor {
        let id = e.seq as i64;
        match e.state {
            Enqueued => Cursor { score: id, id },
            _ => Cursor { score: e.at, id },
        }
    }

    fn stored(jid: &str, e: &Entry) -> StoredJob {
        StoredJob {
            jid: jid.to_string(),
            state: e.state,
            queue: e.job.queue.clone(),
            jobtype: e.job.jobtype.clone(),
            payload: e.job.to_json(),
            at: e.at,
            reservation: e.reservation.clone(),
        }
    }

    pub struct RefStore {
        closed: std::sync::atomic::AtomicBool,
        disk: Arc<Mutex<Data>>,
        cfg: StoreConfig,
        listener: Listener,
        /// Configuration, not data: a reopened store has none.
        throttles: Mutex<Vec<Throttle>>,
    }

    impl RefStore {
        fn with<T>(&self, f: impl FnOnce(&mut Data, &mut Vec<String>) -> T) -> Result<T> {
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            let mut told = Vec::new();
            let out = f(&mut self.disk.lock().unwrap(), &mut told);
            for q in told {
                self.listener.enqueued(&q);
            }
            Ok(out)
        }
    }

    fn ready<T: Send>(v: T) -> impl Future<Output = T> + Send {
        std::future::ready(v)
    }

    /// `BATCH STATUS` of a live batch.
    fn batch_status_of(d: &Data, bid: &str, now: Millis) -> Option<BatchStatus> {
        d.live_batch(bid, now).map(|b| BatchStatus {
            bid: bid.to_string(),
            parent_bid: b.parent.clone(),
            description: b.description.clone(),
            created_at: b.created_at,
            created_stamp: b.created_stamp.clone(),
            committed: b.committed,
            total: b.total,
            pending: b.pending,
            failed: b.failed,
            complete_st: b.complete_st,
            success_st: b.success_st,
        })
    }

    impl Store for RefStore {
        fn push(
            &self,
            jobs: Vec<NewJob>,
            now: Millis,
        ) -> impl Future<Output = Result<Vec<std::result::Result<(), PushError>>>> + Send {
            ready(self.with(|d, told| {
                jobs.into_iter()
                    .map(|nj| d.push_one(nj, now, told))
                    .collect()
            }))
        }

        fn fetch(
            &self,
            queues: Vec<String>,
            wid: String,
            now: Millis,
        ) -> impl Future<Output = Result<Option<StoredJob>>> + Send {
            let throttles = self.throttles.lock().unwrap().clone();
            ready(self.with(|d, told| {
                for q in &queues {
                    if d.queues.get(q) != Some(&false) {
                        continue;
                    }
                    let throttled = throttles.iter().filter(|t| &t.queue == q).any(|t| {
                        let (limit, per_worker) = match t.limit {
                            ThrottleLimit::Concurrency(n) => (n, false),
                            ThrottleLimit::PerWorker(n) => (n, true),
                        };
                        let busy = d
                            .jobs
                            .values()
                            .filter(|e| e.state == Working && &e.job.queue == q)
                            .filter_map(|e| e.reservation.as_ref())
                            .filter(|r| !per_worker || r.wid == wid)
                            .filter(|r| t.timeout.is_none_or(|to| r.reserved_at > now - to))
                            .count();
                        busy >= limit as usize
                    });
                    if throttled {
                        continue;
                    }
                    let live = loop {
                        let Some((jid, expires)) = d
                            .sorted(Enqueued, Some(q))
                            .first()
                            .map(|(j, e)| ((*j).clone(), e.expires))
                        else {
                            break None;
                        };
                        if expires.is_some_and(|x| x <= now) {
                            d.drop_expired(&jid, now, told);
                            continue;
                        }
                        break Some(jid);
                    };
                    let Some(jid) = live else {
                        continue;
                    };
                    let uniq = d.jobs[&jid].uniq.clone();
                    if uniq.as_ref().is_some_and(|u| u.release_at_start) {
                        d.release(&jid, &uniq);
                    }
                    let e = d.jobs.get_mut(&jid).unwrap();
                    let expires_at = now + reservation_seconds(e.job.reserve_for) * SEC;
                    e.state = Working;
                    e.at = expires_at;
                    e.reservation = Some(Reservation {
                        reserved_at: now,
                        expires_at,
                        wid: wid.clone(),
                    });
                    let out = stored(&jid, e);
                    d.touch_track(&jid, now, None);
                    return Some(out);
                }
                None
            }))
        }

        fn ack(&self, jid: String, now: Millis) -> impl Future<Output = Result<AckOutcome>> + Send {
            ready(self.with(|d, told| {
                let state = match d.jobs.get(&jid) {
                    None => return AckOutcome::NotWorking,
                    Some(e) if e.state == Scheduled => return AckOutcome::NotWorking,
                    Some(e) => e.state,
                };
                let mut e = d.jobs.remove(&jid).unwrap();
                d.release(&jid, &e.uniq);
                d.processed += 1;
                d.days.entry(local_day(now)).or_default().0 += 1;
                d.touch_track(&jid, now, Some(TrackState::Success));
                if let Some(bid) = d.count_result(&mut e, true, now) {
                    d.progress(&bid, now, told);
                }
                d.callback_acked(&e, now, told);
                match state {
                    Working => AckOutcome::Acked,
                    late => AckOutcome::AckedLate(late),
                }
            }))
        }

        fn fail(
            &self,
            jid: String,
            info: FailInfo,
            now: Millis,
        ) -> impl Future<Output = Result<FailReply>> + Send {
            let retention = self.cfg.dead_retention;
            ready(self.with(|d, told| {
                if d.jobs.get(&jid).is_none_or(|e| e.state != Working) {
                    return FailReply::NotWorking;
                }
                FailReply::Failed(d.fail(&jid, &info, now, retention, told))
            }))
        }

        fn promote_due(
            &self,
            now: Millis,
            limit: usize,
        ) -> impl Future<Output = Result<usize>> + Send {
            ready(self.with(|d, told| {
                let mut due: Vec<(Millis, u64, String)> = d
                    .jobs
                    .iter()
                    .filter(|(_, e)| matches!(e.state, Scheduled | Retry) && e.at <= now)
                    .map(|(j, e)| (e.at, e.seq, j.clone()))
                    .collect();
                due.sort();
                due.truncate(limit);
                for (_, _, jid) in &due {
                    told.push(d.enqueue(jid, now));
                }
                due.len()
            }))
        }

        fn reap_expired(
            &self,
            now: Millis,
            limit: usize,
        ) -> impl Future<Output = Result<usize>> + Send {
            let retention = self.cfg.dead_retention;
            ready(self.with(|d, told| {
                let due: Vec<String> = d
                    .sorted(Working, None)
                    .into_iter()
                    .filter(|(_, e)| e.at <= now)
                    .take(limit)
                    .map(|(j, _)| j.clone())
                    .collect();
                for jid in &due {
                    d.fail(jid, &FailInfo::reservation_expired(), now, retention, told);
                }
                due.len()
            }))
        }

        fn sweep_expired(
            &self,
            now: Millis,
            limit: usize,
        ) -> impl Future<Output = Result<usize>> + Send {
            let retention = self.cfg.dead_retention;
            ready(self.with(|d, told| {
                let due: Vec<String> = d
                    .sorted(Enqueued, None)
                    .into_iter()
                    .filter(|(_, e)| e.expires.is_some_and(|x| x <= now))
                    .take(limit)
                    .map(|(j, _)| j.clone())
                    .collect();
                for jid in &due {
                    d.drop_expired(jid, now, told);
                }
                // Batches: expired uncommitted ones, then finished ones past their retention.
                let gone: Vec<String> = d
                    .batches
                    .iter()
                    .filter(|(_, b)| !b.committed && b.deadline <= now)
                    .map(|(bid, _)| bid.clone())
                    .take(limit)
                    .chain(
                        d.batches
                            .iter()
                            .filter(|(_, b)| {
                                b.committed
                                    && match b.succeeded_at {
                                        Some(t) => t + BATCH_RETENTION <= now,
                                        None => b.changed_at + retention <= now,
                                    }
                            })
                            .map(|(bid, _)| bid.clone())
                            .take(limit),
                    )
                    .collect();
                for bid in &gone {
                    if let Some(parent) = d.batches.remove(bid).and_then(|b| b.parent) {
                        // A gone child no longer holds its parent.
                        d.progress(&parent, now, told);
                    }
                }
                let stale: Vec<String> = d
                    .tracks
                    .iter()
                    .filter(|(jid, t)| {
                        !d.jobs.contains_key(*jid) && t.updated_at + TRACK_RETENTION <= now
                    })
                    .map(|(jid, _)| jid.clone())
                    .take(limit)
                    .collect();
                for jid in &stale {
                    d.tracks.remove(jid);
                }
                due.len()
            }))
        }

        fn purge_dead(
            &self,
            now: Millis,
            limit: usize,
        ) -> impl Future<Output = Result<usize>> + Send {
            ready(self.with(|d, _| {
                let due: Vec<String> = d
                    .sorted(Dead, None)
                    .into_iter()
                    .filter(|(_, e)| e.at <= now)
                    .take(limit)
                    .map(|(j, _)| j.clone())
                    .collect();
                for jid in &due {
                    d.jobs.remove(jid);
                    d.tracks.remove(jid);
                }
                due.len()
            }))
        }

        fn mutate(&self, m: Mutation, now: Millis) -> impl Future<Output = Result<u64>> + Send {
            let retention = self.cfg.dead_retention;
            ready(self.with(|d, told| {
                let hit: Vec<String> = d
                    .sorted(m.target, None)
                    .into_iter()
                    .filter(|(jid, e)| match (&m.filter, m.op) {
                        (_, MutateOp::Clear) | (None, _) => true,
                        (Some(f), _) if !f.jids.is_empty() => f.jids.contains(jid),
                        (Some(f), _) => {
                            let text = e.job.to_json();
                            let re = f.regexp.as_ref().filter(|r| !r.is_empty());
                            re.is_none_or(|r| redis_match(r.as_bytes(), text.as_bytes()))
                                && f.jobtype.as_ref().is_none_or(|t| *t == e.job.jobtype)
                        }
                    })
                    .map(|(j, _)| j.clone())
                    .collect();
                for jid in &hit {
                    match m.op {
                        MutateOp::Clear | MutateOp::Discard => {
                            d.jobs.remove(jid);
                            d.tracks.remove(jid);
                        }
                        MutateOp::Kill => {
                            let seq = d.next();
                            let e = d.jobs.get_mut(jid).unwrap();
                            e.state = Dead;
                            e.at = now + retention;
                            e.seq = seq;
                        }
                        MutateOp::Requeue => told.push(d.enqueue(jid, now)),
                    }
                }
                hit.len() as u64
            }))
        }

        fn set_paused(
            &self,
            queues: QueueSelector,
            paused: bool,
        ) -> impl Future<Output = Result<()>> + Send {
            ready(self.with(|d, _| {
                for (name, p) in d.queues.iter_mut() {
                    if match &queues {
                        QueueSelector::All => true,
                        QueueSelector::Names(n) => n.contains(name),
                    } {
                        *p = paused;
                    }
                }
            }))
        }

        fn remove_queues(&self, queues: QueueSelector) -> impl Future<Output = Result<u64>> + Send {
            ready(self.with(|d, _| {
                let names: Vec<String> = match queues {
                    QueueSelector::All => d.queues.keys().cloned().collect(),
                    QueueSelector::Names(n) => n,
                };
                let gone: Vec<String> = d
                    .jobs
                    .iter()
                    .filter(|(_, e)| e.state == Enqueued && names.contains(&e.job.queue))
                    .map(|(j, _)| j.clone())
                    .collect();
                for jid in &gone {
                    d.jobs.remove(jid);
                    d.tracks.remove(jid);
                }
                for n in &names {
                    d.queues.remove(n);
                }
                gone.len() as u64
            }))
        }

        fn queue_latency(
            &self,
            queues: Vec<String>,
            now: Millis,
        ) -> impl Future<Output = Result<Vec<f64>>> + Send {
            ready(self.with(|d, _| {
                queues
                    .iter()
                    .map(|q| {
                        d.sorted(Enqueued, Some(q))
                            .first()
                            .map_or(0.0, |(_, e)| (now - e.at) as f64 / 1000.0)
                    })
                    .collect()
            }))
        }

        fn flush(&self) -> impl Future<Output = Result<()>> + Send {
            ready(self.with(|d, _| {
                *d = Data {
                    cron: std::mem::take(&mut d.cron),
                    ..Data::default()
                }
            }))
        }

        fn fire_cron(
            &self,
            entry: String,
            tick: Millis,
            job: NewJob,
            now: Millis,
        ) -> impl Future<Output = Result<CronFire>> + Send {
            ready(self.with(|d, told| {
                if d.cron.get(&entry).is_some_and(|&last| last >= tick) {
                    return CronFire::AlreadyFired;
                }
                d.cron.insert(entry, tick);
                match d.push_one(job, now, told) {
                    Ok(()) => CronFire::Fired,
                    Err(e) => CronFire::Refused(e),
                }
            }))
        }

        fn cron_last_fired(
            &self,
            entries: Vec<String>,
        ) -> impl Future<Output = Result<Vec<Option<Millis>>>> + Send {
            ready(self.with(|d, _| entries.iter().map(|e| d.cron.get(e).copied()).collect()))
        }

        fn stats(&self) -> impl Future<Output = Result<Stats>> + Send {
            ready(self.with(|d, _| {
                let count = |s| d.jobs.values().filter(|e| e.state == s).count() as u64;
                Stats {
                    queues: d
                        .queues
                        .iter()
                        .map(|(name, paused)| QueueStats {
                            name: name.clone(),
                            size: d
                                .jobs
                                .values()
                                .filter(|e| e.state == Enqueued && &e.job.queue == name)
                                .count() as u64,
                            paused: *paused,
                        })
                        .collect(),
                    scheduled: count(Scheduled),
                    retries: count(Retry),
                    dead: count(Dead),
                    working: count(Working),
                    processed: d.processed,
                    failures: d.failures,
                    expired: d.expired,
                }
            }))
        }

        fn history(
            &self,
            days: u32,
            today: Millis,
        ) -> impl Future<Output = Result<Vec<DayStats>>> + Send {
            ready(self.with(|d, _| {
                (0..days as i64)
                    .rev()
                    .map(|k| {
                        let day = local_day(today - k * DAY);
                        let (processed, failures) = d.days.get(&day).copied().unwrap_or_default();
                        DayStats {
                            day,
                            processed,
                            failures,
                        }
                    })
                    .collect()
            }))
        }

        fn get(&self, jid: String) -> impl Future<Output = Result<Option<StoredJob>>> + Send {
            ready(self.with(|d, _| d.jobs.get(&jid).map(|e| stored(&jid, e))))
        }

        fn list(
            &self,
            state: JobState,
            queue: Option<String>,
            offset: u64,
            limit: u64,
        ) -> impl Future<Output = Result<Vec<StoredJob>>> + Send {
            ready(self.with(|d, _| {
                d.sorted(state, queue.as_deref())
                    .into_iter()
                    .skip(offset as usize)
                    .take(limit as usize)
                    .map(|(j, e)| stored(j, e))
                    .collect()
            }))
        }

        fn page(&self, q: PageQuery) -> impl Future<Output = Result<Page>> + Send {
            ready(self.with(|d, _| {
                let f = &q.filter;
                let text = f.text.as_ref().map(|t| t.to_ascii_lowercase());
                let mut hits: Vec<(Cursor, StoredJob)> = d
                    .jobs
                    .iter()
                    .filter(|(jid, e)| {
                        e.state == q.state
                            && q.after.is_none_or(|a| cursor(e) > a)
                            && f.queue.as_ref().is_none_or(|x| *x == e.job.queue)
                            && f.jobtype.as_ref().is_none_or(|x| *x == e.job.jobtype)
                            && f.jid.as_ref().is_none_or(|x| x == *jid)
                    })
                    .map(|(jid, e)| (cursor(e), stored(jid, e)))
                    .filter(|(_, j)| {
                        text.as_ref()
                            .is_none_or(|t| j.payload.to_ascii_lowercase().contains(t.as_str()))
                    })
                    .collect();
                hits.sort_by_key(|(c, _)| *c);
                // `next` only when more matching jobs follow (the suite also accepts a `next`
                // after a full last page).
                let more = hits.len() as u64 > q.limit;
                hits.truncate(q.limit as usize);
                let next = if more {
                    hits.last().map(|(c, _)| *c)
                } else {
                    None
                };
                Page { jobs: hits, next }
            }))
        }

        fn delete_jobs(
            &self,
            state: JobState,
            jids: Vec<String>,
        ) -> impl Future<Output = Result<u64>> + Send {
            ready(self.with(|d, _| {
                if state == Working {
                    return 0;
                }
                let mut n = 0;
                for jid in &jids {
                    if d.jobs.get(jid).is_some_and(|e| e.state == state) {
                        d.jobs.remove(jid);
                        d.tracks.remove(jid);
                        n += 1;
                    }
                }
                n
            }))
        }

        fn batch_new(
            &self,
            batch: NewBatch,
            now: Millis,
        ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send {
            ready(self.with(|d, _| {
                if let Some(p) = &batch.parent_bid {
                    if d.live_batch(p, now).is_none() {
                        return Err(BatchError::NoSuchBatch(p.clone()));
                    }
                    let parent = d.batches.get_mut(p).unwrap();
                    parent.children.push(batch.bid.clone());
                    parent.changed_at = now;
                }
                d.batches.insert(
                    batch.bid,
                    Batch {
                        parent: batch.parent_bid,
                        description: batch.description,
                        created_at: now,
                        created_stamp: format_stamp(now),
                        committed: false,
                        deadline: now + BATCH_COMMIT_DEADLINE,
                        changed_at: now,
                        total: 0,
                        pending: 0,
                        failed: 0,
                        children: Vec::new(),
                        complete: batch.complete,
                        success: batch.success,
                        complete_st: CallbackState::Pending,
                        success_st: CallbackState::Pending,
                        complete_fired: false,
                        success_fired: false,
                        complete_done: false,
                        success_done: false,
                        succeeded_at: None,
                    },
                );
                Ok(())
            }))
        }

        fn batch_open(
            &self,
            bid: String,
            now: Millis,
        ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send {
            ready(self.with(|d, _| {
                if d.live_batch(&bid, now).is_none() {
                    return Err(BatchError::NoSuchBatch(bid));
                }
                let b = d.batches.get_mut(&bid).unwrap();
                b.committed = false;
                b.deadline = now + BATCH_COMMIT_DEADLINE;
                b.changed_at = now;
                Ok(())
            }))
        }

        fn batch_commit(
            &self,
            bid: String,
            now: Millis,
        ) -> impl Future<Output = Result<std::result::Result<(), BatchError>>> + Send {
            ready(self.with(|d, told| {
                if d.live_batch(&bid, now).is_none() {
                    return Err(BatchError::NoSuchBatch(bid));
                }
                let b = d.batches.get_mut(&bid).unwrap();
                b.committed = true;
                b.changed_at = now;
                d.progress(&bid, now, told);
                Ok(())
            }))
        }

        fn batch_status(
            &self,
            bid: String,
            now: Millis,
        ) -> impl Future<Output = Result<Option<BatchStatus>>> + Send {
            ready(self.with(|d, _| batch_status_of(d, &bid, now)))
        }

        fn list_batches(
            &self,
            after: Option<(Millis, String)>,
            limit: u64,
            now: Millis,
        ) -> impl Future<Output = Result<Vec<BatchStatus>>> + Send {
            ready(self.with(|d, _| {
                let bids: Vec<String> = d.batches.keys().cloned().collect();
                let mut all: Vec<BatchStatus> = bids
                    .iter()
                    .filter_map(|bid| batch_status_of(d, bid, now))
                    .collect();
                all.sort_by(|a, b| (b.created_at, &b.bid).cmp(&(a.created_at, &a.bid)));
                all.into_iter()
                    .filter(|s| {
                        after
                            .as_ref()
                            .is_none_or(|(t, bid)| (s.created_at, &s.bid) < (*t, bid))
                    })
                    .take(limit as usize)
                    .collect()
            }))
        }

        fn track_set(
            &self,
            update: TrackUpdate,
            now: Millis,
        ) -> impl Future<Output = Result<bool>> + Send {
            ready(self.with(|d, _| {
                let exists = d.jobs.contains_key(&update.jid);
                let stored = match d.tracks.get_mut(&update.jid) {
                    Some(t) if exists || t.updated_at + TRACK_RETENTION > now => {
                        if update.percent.is_some() {
                            t.percent = update.percent;
                        }
                        if update.desc.is_some() {
                            t.desc = update.desc.clone();
                        }
                        t.updated_at = now;
                        true
                    }
                    _ => false,
                };
                if let (Some(until), Some(e)) = (update.reserve_until, d.jobs.get_mut(&update.jid))
                {
                    if let Some(r) = e.reservation.as_mut().filter(|_| e.state == Working) {
                        let until = until.min(now + DAY);
                        if until > r.expires_at {
                            r.expires_at = until;
                            e.at = until;
                        }
                    }
                }
                stored
            }))
        }

        fn track_get(
            &self,
            jid: String,
            now: Millis,
        ) -> impl Future<Output = Result<Option<Tracked>>> + Send {
            ready(self.with(|d, _| {
                let t = d.tracks.get(&jid)?;
                let state = match d.jobs.get(&jid) {
                    Some(e) => match e.state {
                        Scheduled | Enqueued => TrackState::Enqueued,
                        Working => TrackState::Working,
                        Retry => TrackState::Failed,
                        Dead => TrackState::Dead,
                    },
                    None if t.updated_at + TRACK_RETENTION <= now => return None,
                    None => t.outcome?,
                };
                Some(Tracked {
                    jid: jid.clone(),
                    state,
                    percent: t.percent,
                    desc: t.desc.clone(),
                    updated_at: t.updated_at,
                })
            }))
        }

        fn set_throttles(&self, throttles: Vec<Throttle>) {
            *self.throttles.lock().unwrap() = throttles;
        }

        fn close(&self) -> impl Future<Output = ()> + Send {
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            ready(())
        }
    }

    pub struct RefHarness {
        store: RefStore,
    }

    impl Harness for RefHarness {
        type S = RefStore;

        fn create(config: StoreConfig, listener: Listener) -> impl Future<Output = Self> + Send {
            ready(RefHarness {
                store: RefStore {
                    closed: Default::default(),
                    disk: Arc::default(),
                    cfg: config,
                    listener,
                    throttles: Mutex::default(),
                },
            })
        }

        fn store(&self) -> &RefStore {
            &self.store
        }

        fn reopen(&mut self) -> impl Future<Output = ()> + Send {
            self.store = RefStore {
                closed: Default::default(),
                disk: self.store.disk.clone(),
                cfg: self.store.cfg.clone(),
                listener: self.store.listener.clone(),
                throttles: Mutex::default(),
            };
            ready(())
        }
    }
}

#[cfg(test)]
mod self_test {
    crate::conformance_tests!(super::reference::RefHarness);
}

// ---------------------------------------------------------------------------------------------
// Cron fire records
// ---------------------------------------------------------------------------------------------

async fn fire<S: Store>(s: &S, entry: &str, tick: Millis, jid: &str, now: Millis) -> CronFire {
    s.fire_cron(
        entry.to_string(),
        tick,
        spec(jid).queue("cron").new_job(now),
        now,
    )
    .await
    .expect("fire_cron")
}

async fn last_fired<S: Store>(s: &S, entries: &[&str]) -> Vec<Option<Millis>> {
    s.cron_last_fired(strings(entries))
        .await
        .expect("cron_last_fired")
}

/// A tick enqueues its job once: the same or an earlier tick changes nothing, a later tick
/// fires; entries are independent.
pub async fn cron_tick_fires_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let tick = T0 + MIN;
    assert_eq!(last_fired(s, &["e1", "e2"]).await, vec![None, None]);
    assert_eq!(
        fire(s, "e1", tick, "cron-001", tick + 5).await,
        CronFire::Fired
    );
    assert_eq!(last_fired(s, &["e1", "e2"]).await, vec![Some(tick), None]);
    assert_eq!(
        fire(s, "e1", tick, "cron-002", tick + 9).await,
        CronFire::AlreadyFired,
        "the same tick again"
    );
    assert_eq!(
        fire(s, "e1", tick - MIN, "cron-003", tick + 9).await,
        CronFire::AlreadyFired,
        "an earlier tick"
    );
    assert_eq!(get(s, "cron-002").await, None);
    assert_eq!(get(s, "cron-003").await, None);
    assert_eq!(
        fire(s, "e2", tick, "cron-004", tick + 9).await,
        CronFire::Fired
    );
    assert_eq!(
        fire(s, "e1", tick + MIN, "cron-005", tick + MIN).await,
        CronFire::Fired
    );
    assert_eq!(
        last_fired(s, &["e2", "e1", "unknown"]).await,
        vec![Some(tick), Some(tick + MIN), None]
    );
    assert_eq!(
        jids(s, Enqueued, Some("cron")).await,
        vec!["cron-001", "cron-004", "cron-005"]
    );
    let j = get(s, "cron-001").await.expect("fired job stored");
    assert_eq!(j.state, Enqueued);
    assert_eq!(parse_rfc3339(&payload(&j).enqueued_at), Ok(tick + 5));
    c.finish(tick + MIN).await;
}

/// A job the store refuses (here: a duplicate jid) still uses up its tick, so a refused tick is
/// not retried forever; the stored job is untouched.
pub async fn cron_refused_job_still_records_tick<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(s, &[spec("cron-taken")], T0).await;
    let before = get(s, "cron-taken").await;
    let out = fire(s, "e1", T0 + MIN, "cron-taken", T0 + MIN).await;
    assert!(
        matches!(out, CronFire::Refused(PushError::DuplicateJid(ref j, _)) if j == "cron-taken"),
        "{out:?}"
    );
    assert_eq!(get(s, "cron-taken").await, before);
    assert_eq!(last_fired(s, &["e1"]).await, vec![Some(T0 + MIN)]);
    assert_eq!(
        fire(s, "e1", T0 + MIN, "cron-other", T0 + MIN).await,
        CronFire::AlreadyFired
    );
    c.finish(T0 + MIN).await;
}

/// Fire records are durable: after a crash-reopen the tick is still taken and its job is there;
/// FLUSH removes the job but not the record (it describes the configuration).
pub async fn cron_fire_records_survive_reopen_and_flush<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let tick = T0 + HOUR;
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-1", tick).await,
        CronFire::Fired
    );
    c.reopen().await;
    assert_eq!(last_fired(c.s(), &["daily"]).await, vec![Some(tick)]);
    assert_eq!(
        get(c.s(), "cron-daily-1").await.map(|j| j.state),
        Some(Enqueued),
        "the fired job must survive with its record"
    );
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-2", tick + 1).await,
        CronFire::AlreadyFired
    );
    c.s().flush().await.expect("flush");
    assert_eq!(get(c.s(), "cron-daily-1").await, None);
    assert_eq!(last_fired(c.s(), &["daily"]).await, vec![Some(tick)]);
    c.reopen().await;
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-3", tick + 2).await,
        CronFire::AlreadyFired
    );
    assert_eq!(
        fire(c.s(), "daily", tick + DAY, "cron-daily-4", tick + DAY).await,
        CronFire::Fired
    );
    c.finish(tick + DAY).await;
}

/// Many callers racing on one tick (as several nodes or a restarted ticker would): exactly one
/// job is enqueued.
pub async fn concurrent_cron_fires_of_one_tick_enqueue_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let tick = T0 + MIN;
    let (c, results) = c
        .shared(|h| async move {
            let tasks = (0..16)
                .map(|i| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let jid = format!("cron-race-{i:02}");
                        fire(h.store(), "race", tick, &jid, tick).await
                    })
                })
                .collect();
            join_all(tasks).await
        })
        .await;
    let s = c.s();
    let fired = results.iter().filter(|r| **r == CronFire::Fired).count();
    assert_eq!(fired, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, CronFire::Fired | CronFire::AlreadyFired)));
    assert_eq!(jids(s, Enqueued, Some("cron")).await.len(), 1);
    c.finish(tick).await;
}

// ---------------------------------------------------------------------------------------------
// Expiring jobs
// ---------------------------------------------------------------------------------------------

async fn expired_count<S: Store>(s: &S) -> u64 {
    s.stats().await.expect("stats").expired
}

/// A job past its expiry is dropped when a FETCH meets it (and counted); the FETCH goes on to
/// the next job. `expires_in` counts from the push; `expires_at` is absolute.
pub async fn expired_jobs_are_dropped_at_fetch_and_counted<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let at30 = js(&format_millis(T0 + 30 * SEC));
    push(
        s,
        &[
            spec("exp-abs-30s")
                .queue("q")
                .custom(&format!(r#"{{"expires_at":{at30}}}"#)),
            spec("exp-rel-60s")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
            spec("exp-rel-10s")
                .queue("q")
                .custom(r#"{"expires_in":10}"#),
            spec("exp-never-1").queue("q"),
        ],
        T0,
    )
    .await;
    let got = s
        .fetch(strings(&["q"]), WID.into(), T0 + 45 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("exp-rel-60s"));
    assert_eq!(get(s, "exp-abs-30s").await, None, "expired: dropped");
    assert_eq!(
        get(s, "exp-rel-10s").await.map(|j| j.state),
        Some(Enqueued),
        "not met by the FETCH yet: still there"
    );
    assert_eq!(expired_count(s).await, 1);
    let got = s
        .fetch(strings(&["q"]), WID.into(), T0 + 46 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("exp-never-1"));
    assert_eq!(expired_count(s).await, 2);
    let st = s.stats().await.expect("stats");
    assert_eq!(st.processed, 0, "expired jobs are not processed");
    assert_eq!(st.failures, 0);
    assert_eq!(st.working, 2);
    c.finish(T0 + 46 * SEC).await;
}

/// The sweep removes enqueued jobs past their expiry, up to its limit, and nothing else
/// (scheduled jobs wait for their time; jobs without expiry stay).
pub async fn sweep_removes_only_expired_enqueued_jobs<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let mut specs = Vec::new();
    for i in 0..5 {
        specs.push(
            spec(&format!("sweep-exp-{i:02}"))
                .queue("qa")
                .custom(r#"{"expires_in":5}"#),
        );
    }
    specs.push(
        spec("sweep-live-01")
            .queue("qa")
            .custom(r#"{"expires_in":3600}"#),
    );
    specs.push(spec("sweep-plain-1").queue("qb"));
    specs.push(
        spec("sweep-sched-1")
            .queue("qb")
            .at(T0 + HOUR)
            .custom(r#"{"expires_in":5}"#),
    );
    push(s, &specs, T0).await;
    assert_eq!(s.sweep_expired(T0 + 4 * SEC, 100).await.expect("sweep"), 0);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 3).await.expect("sweep"), 3);
    assert_eq!(s.sweep_expired(T0 + 6 * SEC, 100).await.expect("sweep"), 2);
    assert_eq!(s.sweep_expired(T0 + 7 * SEC, 100).await.expect("sweep"), 0);
    assert_eq!(jids(s, Enqueued, Some("qa")).await, vec!["sweep-live-01"]);
    assert_eq!(jids(s, Enqueued, Some("qb")).await, vec!["sweep-plain-1"]);
    assert_eq!(
        get(s, "sweep-sched-1").await.map(|j| j.state),
        Some(Scheduled)
    );
    let st = s.stats().await.expect("stats");
    assert_eq!(st.expired, 5);
    let sizes: Vec<(String, u64)> = st.queues.iter().map(|q| (q.name.clone(), q.size)).collect();
    assert_eq!(sizes, vec![("qa".to_string(), 1), ("qb".to_string(), 1)]);
    c.finish(T0 + 7 * SEC).await;
}

/// The expiry and the expired count are durable.
pub async fn expiry_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    push(
        c.s(),
        &[
            spec("reopen-exp-1")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
            spec("reopen-exp-2")
                .queue("q")
                .custom(r#"{"expires_in":60}"#),
        ],
        T0,
    )
    .await;
    c.reopen().await;
    assert_eq!(
        c.s().sweep_expired(T0 + 59 * SEC, 1).await.expect("sweep"),
        0
    );
    assert_eq!(
        c.s().sweep_expired(T0 + 61 * SEC, 1).await.expect("sweep"),
        1
    );
    c.reopen().await;
    assert_eq!(expired_count(c.s()).await, 1);
    let got = c
        .s()
        .fetch(strings(&["q"]), WID.into(), T0 + 61 * SEC)
        .await
        .expect("fetch");
    assert_eq!(got, None);
    assert_eq!(expired_count(c.s()).await, 2);
    c.finish(T0 + 61 * SEC).await;
}

// ---------------------------------------------------------------------------------------------
// Unique jobs
// ---------------------------------------------------------------------------------------------

fn uniq(jid: &str, args: &str, custom: &str) -> Spec {
    spec(jid).queue("uq").args(args).custom(custom)
}

async fn push_one<S: Store>(s: &S, j: Spec, now: Millis) -> std::result::Result<(), PushError> {
    push_results(s, &[j], now).await.pop().expect("one result")
}

/// Same type, queue and args while the lock is held: `NotUnique` (also inside one batch);
/// other args or another queue are other identities; the lock goes with the job's ACK.
pub async fn unique_job_refuses_copies_until_it_succeeds<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600}"#;
    let res = push_results(
        s,
        &[
            uniq("uniq-a-00001", "[1]", u),
            uniq("uniq-a-00002", "[1]", u),
            uniq("uniq-b-00001", "[2]", u),
            uniq("uniq-c-00001", "[1]", u).queue("other"),
            uniq("uniq-d-00001", "[1]", "{}"),
        ],
        T0,
    )
    .await;
    assert_eq!(res[0], Ok(()));
    assert_eq!(res[1], Err(PushError::NotUnique));
    assert_eq!(res[2], Ok(()), "other args");
    assert_eq!(res[3], Ok(()), "other queue");
    assert_eq!(res[4], Ok(()), "no unique_for: never locked");
    assert_eq!(get(s, "uniq-a-00002").await, None);
    assert_eq!(
        push_one(s, uniq("uniq-a-00003", "[1]", u), T0 + SEC).await,
        Err(PushError::NotUnique)
    );
    let got = s
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap();
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("uniq-a-00001"));
    assert_eq!(
        push_one(s, uniq("uniq-a-00004", "[1]", u), T0 + 2 * SEC).await,
        Err(PushError::NotUnique),
        "still locked while it runs (unique_until success)"
    );
    assert_eq!(
        ack(s, "uniq-a-00001", T0 + 3 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(
        push_one(s, uniq("uniq-a-00005", "[1]", u), T0 + 4 * SEC).await,
        Ok(())
    );
    c.finish(T0 + 4 * SEC).await;
}

/// `unique_until = "start"`: the lock goes when the job is fetched.
pub async fn unique_until_start_releases_at_fetch<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600,"unique_until":"start"}"#;
    assert_eq!(push_one(s, uniq("start-00001", "[]", u), T0).await, Ok(()));
    assert_eq!(
        push_one(s, uniq("start-00002", "[]", u), T0).await,
        Err(PushError::NotUnique)
    );
    let got = s
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap();
    assert_eq!(got.map(|j| j.jid).as_deref(), Some("start-00001"));
    assert_eq!(
        push_one(s, uniq("start-00003", "[]", u), T0 + SEC).await,
        Ok(())
    );
    c.finish(T0 + SEC).await;
}

/// The lock lasts `unique_for` seconds, whatever happens to the job.
pub async fn unique_lock_expires_after_unique_for<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":60}"#;
    assert_eq!(push_one(s, uniq("ttl-000001", "[]", u), T0).await, Ok(()));
    assert_eq!(
        push_one(s, uniq("ttl-000002", "[]", u), T0 + 59 * SEC).await,
        Err(PushError::NotUnique)
    );
    assert_eq!(
        push_one(s, uniq("ttl-000003", "[]", u), T0 + 61 * SEC).await,
        Ok(())
    );
    assert_eq!(
        jids(s, Enqueued, Some("uq")).await,
        vec!["ttl-000001", "ttl-000003"]
    );
    c.finish(T0 + 61 * SEC).await;
}

/// A failure that will be retried keeps the lock; automatic death (no retries left) or a
/// discard (`retry: 0`) frees it.
pub async fn unique_lock_outlives_failures_but_not_death<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let u = r#"{"unique_for":3600}"#;
    push(
        s,
        &[
            uniq("fail-retry-1", "[1]", u).retry(3),
            uniq("fail-dead-01", "[2]", u).retry(-1),
            uniq("fail-gone-01", "[3]", u).retry(0),
        ],
        T0,
    )
    .await;
    for _ in 0..3 {
        let j = s
            .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
            .await
            .unwrap()
            .unwrap();
        s.fail(j.jid, boom(), T0 + 2 * SEC).await.unwrap();
    }
    let t = T0 + 3 * SEC;
    assert_eq!(
        push_one(s, uniq("fail-retry-2", "[1]", u), t).await,
        Err(PushError::NotUnique),
        "in the retry set: still locked"
    );
    assert_eq!(get(s, "fail-dead-01").await.map(|j| j.state), Some(Dead));
    assert_eq!(
        push_one(s, uniq("fail-dead-02", "[2]", u), t).await,
        Ok(()),
        "dead: freed"
    );
    assert_eq!(
        push_one(s, uniq("fail-gone-02", "[3]", u), t).await,
        Ok(()),
        "discarded: freed"
    );
    c.finish(t).await;
}

/// Locks are durable.
pub async fn unique_lock_survives_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let u = r#"{"unique_for":3600}"#;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-01", "[]", u), T0).await,
        Ok(())
    );
    c.reopen().await;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-02", "[]", u), T0 + SEC).await,
        Err(PushError::NotUnique)
    );
    let j = c
        .s()
        .fetch(strings(&["uq"]), WID.into(), T0 + SEC)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack(c.s(), &j.jid, T0 + SEC).await, AckOutcome::Acked);
    c.reopen().await;
    assert_eq!(
        push_one(c.s(), uniq("reopen-u-03", "[]", u), T0 + 2 * SEC).await,
        Ok(())
    );
    c.finish(T0 + 2 * SEC).await;
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/// A callback job for [`NewBatch`], alone in `queue` so a FETCH of that queue finds it; its args
/// name its jid so the payload can be checked.
fn callback(jid: &str, queue: &str, jobtype: &str) -> Job {
    spec(jid)
        .queue(queue)
        .jobtype(jobtype)
        .args(&format!("[{}]", js(jid)))
        .new_job(T0)
        .job
}

fn new_batch(
    bid: &str,
    parent: Option<&str>,
    complete: Option<Job>,
    success: Option<Job>,
) -> NewBatch {
    NewBatch {
        bid: bid.to_string(),
        parent_bid: parent.map(str::to_string),
        description: None,
        complete,
        success,
    }
}

/// A batch with both callbacks, in queues `cb-complete` (jobtype `BatchComplete`) and
/// `cb-success` (`BatchSuccess`).
fn both_callbacks(bid: &str) -> NewBatch {
    new_batch(
        bid,
        None,
        Some(callback(
            &format!("cbc-{bid}"),
            "cb-complete",
            "BatchComplete",
        )),
        Some(callback(
            &format!("cbs-{bid}"),
            "cb-success",
            "BatchSuccess",
        )),
    )
}

/// A member job of `bid`, in queue `bq`.
fn member(jid: &str, bid: &str) -> Spec {
    spec(jid)
        .queue("bq")
        .custom(&format!(r#"{{"bid":{}}}"#, js(bid)))
}

fn no_batch(bid: &str) -> BatchError {
    BatchError::NoSuchBatch(bid.to_string())
}

async fn batch_new<S: Store>(s: &S, b: NewBatch, now: Millis) {
    let bid = b.bid.clone();
    let res = s.batch_new(b, now).await.expect("batch_new");
    assert_eq!(res, Ok(()), "BATCH NEW {bid}");
}

async fn commit<S: Store>(s: &S, bid: &str, now: Millis) {
    let res = s
        .batch_commit(bid.to_string(), now)
        .await
        .expect("batch_commit");
    assert_eq!(res, Ok(()), "BATCH COMMIT {bid}");
}

async fn open<S: Store>(s: &S, bid: &str, now: Millis) {
    let res = s
        .batch_open(bid.to_string(), now)
        .await
        .expect("batch_open");
    assert_eq!(res, Ok(()), "BATCH OPEN {bid}");
}

async fn try_status<S: Store>(s: &S, bid: &str, now: Millis) -> Option<BatchStatus> {
    s.batch_status(bid.to_string(), now)
        .await
        .expect("batch_status")
}

async fn status<S: Store>(s: &S, bid: &str, now: Millis) -> BatchStatus {
    try_status(s, bid, now)
        .await
        .unwrap_or_else(|| panic!("BATCH STATUS {bid}: no such batch"))
}

/// `(total, pending, failed, complete_st, success_st)` of a batch.
async fn counts<S: Store>(
    s: &S,
    bid: &str,
    now: Millis,
) -> (u64, u64, u64, &'static str, &'static str) {
    let st = status(s, bid, now).await;
    (
        st.total,
        st.pending,
        st.failed,
        st.complete_st.wire(),
        st.success_st.wire(),
    )
}

/// FETCHes `jid` from `queue` and ACKs it.
async fn run_ok<S: Store>(s: &S, queue: &str, jid: &str, now: Millis) {
    assert_eq!(
        fetch_jid(s, &[queue], now).await.as_deref(),
        Some(jid),
        "fetch of {jid} from {queue}"
    );
    assert_eq!(ack(s, jid, now).await, AckOutcome::Acked, "ACK of {jid}");
}

/// FETCHes `jid` from `queue` and FAILs it.
async fn run_fail<S: Store>(s: &S, queue: &str, jid: &str, now: Millis) -> FailOutcome {
    assert_eq!(
        fetch_jid(s, &[queue], now).await.as_deref(),
        Some(jid),
        "fetch of {jid} from {queue}"
    );
    match fail(s, jid, now).await {
        FailReply::Failed(out) => out,
        other => panic!("FAIL of working job {jid} gave {other:?}"),
    }
}

/// The job's `custom` as JSON (`Null` without one).
fn custom_of(j: &StoredJob) -> serde_json::Value {
    payload(j)
        .custom
        .map(|c| serde_json::from_str(c.get()).expect("custom is JSON"))
        .unwrap_or(serde_json::Value::Null)
}

/// FETCHes the one callback job waiting in `queue` and checks its type, args and custom
/// (`_pbid` for a child batch's callback, never a `bid`).
async fn take_callback<S: Store>(
    s: &S,
    queue: &str,
    jobtype: &str,
    pbid: Option<&str>,
    now: Millis,
) -> StoredJob {
    let waiting = jids(s, Enqueued, Some(queue)).await;
    assert_eq!(
        waiting.len(),
        1,
        "exactly one callback job waits in {queue}: {waiting:?}"
    );
    let j = fetch(s, &[queue], now)
        .await
        .unwrap_or_else(|| panic!("no callback job in {queue}"));
    assert_eq!(j.jobtype, jobtype, "callback job in {queue}");
    let custom = custom_of(&j);
    assert_eq!(
        custom.get("bid"),
        None,
        "a callback job is no batch member: {}",
        j.payload
    );
    assert_eq!(
        custom.get("_pbid").and_then(|v| v.as_str()),
        pbid,
        "custom._pbid of callback {}: {}",
        j.jid,
        j.payload
    );
    j
}

/// The callback jobs waiting in `queue`.
async fn waiting<S: Store>(s: &S, queue: &str) -> Vec<String> {
    jids(s, Enqueued, Some(queue)).await
}

/// BATCH NEW creates an uncommitted batch; STATUS shows it; members count at push; COMMIT and
/// OPEN flip `committed`. Unknown batches (and unknown parents) are refused.
pub async fn batch_new_then_status<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-status-01";
    let mut b = both_callbacks(bid);
    b.description = Some("nightly import".to_string());
    batch_new(s, b, T0).await;
    assert_eq!(
        status(s, bid, T0 + SEC).await,
        BatchStatus {
            bid: bid.to_string(),
            parent_bid: None,
            description: Some("nightly import".to_string()),
            created_at: T0,
            created_stamp: format_stamp(T0),
            committed: false,
            total: 0,
            pending: 0,
            failed: 0,
            complete_st: CallbackState::Pending,
            success_st: CallbackState::Pending,
        }
    );
    let unknown = "bid-unknown-01";
    assert_eq!(try_status(s, unknown, T0).await, None);
    assert_eq!(
        s.batch_open(unknown.into(), T0).await.expect("open"),
        Err(no_batch(unknown))
    );
    assert_eq!(
        s.batch_commit(unknown.into(), T0).await.expect("commit"),
        Err(no_batch(unknown))
    );
    let orphan = new_batch(
        "bid-orphan-01",
        Some(unknown),
        Some(callback("cb-orphan-01", "cb-complete", "BatchComplete")),
        None,
    );
    assert_eq!(
        s.batch_new(orphan, T0).await.expect("batch_new"),
        Err(no_batch(unknown)),
        "a parent must exist"
    );
    assert_eq!(try_status(s, "bid-orphan-01", T0).await, None);

    push(
        s,
        &[member("st-mem-0001", bid), member("st-mem-0002", bid)],
        T0 + SEC,
    )
    .await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (2, 2, 0, "", ""));
    commit(s, bid, T0 + 2 * SEC).await;
    let st = status(s, bid, T0 + 2 * SEC).await;
    assert!(st.committed, "committed after BATCH COMMIT");
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (2, 2, 0, "", ""));
    assert!(waiting(s, "cb-complete").await.is_empty(), "jobs pending");
    open(s, bid, T0 + 3 * SEC).await;
    assert!(!status(s, bid, T0 + 3 * SEC).await.committed, "reopened");
    assert_eq!(status(s, bid, T0 + 3 * SEC).await.created_at, T0);
    c.watch_batches(&[bid]);
    c.finish(T0 + 3 * SEC).await;
}

/// `custom.bid` must name a live batch: unknown or expired-uncommitted is `NoSuchBatch`,
/// checked before the duplicate-jid and uniqueness checks; other jobs of the PUSHB are stored.
pub async fn push_into_unknown_or_expired_batch_is_refused<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let live = "bid-live-0001";
    let nope = "bid-nope-0001";
    batch_new(s, both_callbacks(live), T0).await;
    push(
        s,
        &[
            spec("nb-plain-001"),
            uniq("nb-uniq-0001", "[7]", r#"{"unique_for":3600}"#),
        ],
        T0,
    )
    .await;
    let res = push_results(
        s,
        &[
            member("nb-mem-00001", nope),
            member("nb-plain-001", nope),
            uniq(
                "nb-uniq-0002",
                "[7]",
                &format!(r#"{{"unique_for":3600,"bid":{}}}"#, js(nope)),
            ),
            member("nb-mem-00002", live),
        ],
        T0 + SEC,
    )
    .await;
    let refused = Err(PushError::NoSuchBatch(nope.to_string()));
    assert_eq!(res[0], refused, "unknown batch");
    assert_eq!(
        res[1], refused,
        "the batch is checked before the duplicate jid"
    );
    assert_eq!(res[2], refused, "the batch is checked before uniqueness");
    assert_eq!(res[3], Ok(()), "a live batch");
    assert_eq!(get(s, "nb-mem-00001").await, None);
    assert_eq!(get(s, "nb-uniq-0002").await, None);
    let plain = must_get(s, "nb-plain-001").await;
    assert_eq!((plain.state, plain.queue.as_str()), (Enqueued, "default"));
    assert_eq!(counts(s, live, T0 + SEC).await, (1, 1, 0, "", ""));

    let before = T0 + BATCH_COMMIT_DEADLINE - SEC;
    push(s, &[member("nb-mem-00003", live)], before).await;
    assert_eq!(counts(s, live, before).await, (2, 2, 0, "", ""));
    let after = T0 + BATCH_COMMIT_DEADLINE + SEC;
    let res = push_results(s, &[member("nb-mem-00004", live)], after).await;
    assert_eq!(
        res[0],
        Err(PushError::NoSuchBatch(live.to_string())),
        "the batch expired uncommitted"
    );
    assert_eq!(get(s, "nb-mem-00004").await, None);
    assert_eq!(try_status(s, live, after).await, None);
    assert_eq!(
        jids(s, Enqueued, Some("bq")).await,
        vec!["nb-mem-00002", "nb-mem-00003"],
        "members of an expired batch stay ordinary jobs"
    );
    c.finish(after).await;
}

/// The complete callback is enqueued once the batch is committed and every member job has
/// finished (ACK or FAIL), not before; the callback keeps its type and args and has no `bid`.
pub async fn batch_complete_fires_when_all_jobs_finished_and_committed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-complete-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            member("cpl-mem-0001", bid),
            member("cpl-mem-0002", bid),
            member("cpl-mem-0003", bid),
        ],
        T0,
    )
    .await;
    run_ok(s, "bq", "cpl-mem-0001", T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (3, 2, 0, "", ""));
    commit(s, bid, T0 + 2 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (3, 2, 0, "", ""));
    run_ok(s, "bq", "cpl-mem-0002", T0 + 3 * SEC).await;
    assert_eq!(
        fetch_jid(s, &["bq"], T0 + 4 * SEC).await.as_deref(),
        Some("cpl-mem-0003")
    );
    assert_eq!(
        counts(s, bid, T0 + 4 * SEC).await,
        (3, 1, 0, "", ""),
        "a working job is still pending"
    );
    assert!(waiting(s, "cb-complete").await.is_empty());
    c.rec.take();
    assert_eq!(
        ack(s, "cpl-mem-0003", T0 + 5 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, bid, T0 + 5 * SEC).await, (3, 0, 0, "1", ""));
    assert_eq!(
        c.rec.take(),
        vec!["cb-complete"],
        "the listener hears of the callback"
    );
    assert!(
        waiting(s, "cb-success").await.is_empty(),
        "success waits for the complete callback"
    );
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 6 * SEC).await;
    assert_eq!(cb.jid, format!("cbc-{bid}"));
    assert_eq!(
        payload(&cb).args.map(|a| a.get().to_string()),
        Some(format!("[{}]", js(&cb.jid)))
    );

    // All jobs finished before the commit: nothing fires until the commit.
    let b2 = "bid-complete-2";
    batch_new(
        s,
        new_batch(
            b2,
            None,
            Some(callback("cb-cpl2-done", "cb-c2", "Complete2")),
            None,
        ),
        T0 + 6 * SEC,
    )
    .await;
    push(s, &[member("cpl-mem-0004", b2)], T0 + 6 * SEC).await;
    run_ok(s, "bq", "cpl-mem-0004", T0 + 7 * SEC).await;
    assert_eq!(
        counts(s, b2, T0 + 7 * SEC).await,
        (1, 0, 0, "", ""),
        "uncommitted: no callback"
    );
    assert!(waiting(s, "cb-c2").await.is_empty());
    commit(s, b2, T0 + 8 * SEC).await;
    assert_eq!(counts(s, b2, T0 + 8 * SEC).await, (1, 0, 0, "1", ""));
    take_callback(s, "cb-c2", "Complete2", None, T0 + 8 * SEC).await;
    c.watch_batches(&[bid, b2]);
    c.finish(T0 + 8 * SEC).await;
}

/// The success callback is enqueued only when the complete callback is ACKed (its FAILs do not
/// count); then its own ACK makes the batch succeeded.
pub async fn batch_success_waits_for_complete_callback_ack<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-success-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(s, &[member("suc-mem-0001", bid)], T0).await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "suc-mem-0001", T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (1, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert!(matches!(
        fail(s, &cb.jid, T0 + 3 * SEC).await,
        FailReply::Failed(FailOutcome::Retry { .. })
    ));
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (1, 0, 0, "1", ""),
        "a failing callback stays enqueued and is no member"
    );
    assert!(waiting(s, "cb-success").await.is_empty());
    let t = must_get(s, &cb.jid).await.at;
    assert_eq!(promote(s, t).await, 1);
    run_ok(s, "cb-complete", &cb.jid, t).await;
    assert_eq!(counts(s, bid, t).await, (1, 0, 0, "2", "1"));
    let scb = take_callback(s, "cb-success", "BatchSuccess", None, t + SEC).await;
    assert_eq!(ack(s, &scb.jid, t + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, t + 2 * SEC).await, (1, 0, 0, "2", "2"));
    c.watch_batches(&[bid]);
    c.finish(t + 2 * SEC).await;
}

/// A failed member completes the batch (complete fires) but holds success until a retry of it
/// succeeds; a second failure does not count twice.
pub async fn batch_with_failures_completes_but_succeeds_only_after_retry_succeeds<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-failures-1";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[member("fl-mem-00001", bid), member("fl-mem-00002", bid)],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "fl-mem-00001", T0 + SEC).await;
    assert!(matches!(
        run_fail(s, "bq", "fl-mem-00002", T0 + 2 * SEC).await,
        FailOutcome::Retry { .. }
    ));
    assert_eq!(counts(s, bid, T0 + 2 * SEC).await, (2, 0, 1, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (2, 0, 1, "2", ""),
        "complete, but a member failed"
    );
    assert!(waiting(s, "cb-success").await.is_empty());

    let t = must_get(s, "fl-mem-00002").await.at;
    assert_eq!(promote(s, t).await, 1);
    run_fail(s, "bq", "fl-mem-00002", t).await;
    assert_eq!(
        counts(s, bid, t).await,
        (2, 0, 1, "2", ""),
        "failing again counts once"
    );
    let t = must_get(s, "fl-mem-00002").await.at;
    assert_eq!(promote(s, t).await, 1);
    run_ok(s, "bq", "fl-mem-00002", t).await;
    assert_eq!(counts(s, bid, t).await, (2, 0, 0, "2", "1"));
    take_callback(s, "cb-success", "BatchSuccess", None, t).await;
    c.watch_batches(&[bid]);
    c.finish(t).await;
}

/// Committing a batch without jobs fires at once: complete first, success after complete's
/// ACK; a batch without a complete callback fires success at once, and an undefined callback
/// shows `""` forever.
pub async fn empty_batch_commit_fires_callbacks<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (b1, b2, b3) = ("bid-empty-001", "bid-empty-002", "bid-empty-003");
    batch_new(s, both_callbacks(b1), T0).await;
    batch_new(
        s,
        new_batch(
            b2,
            None,
            None,
            Some(callback("cb-e2-succ-1", "cb-e2", "E2Success")),
        ),
        T0,
    )
    .await;
    batch_new(
        s,
        new_batch(
            b3,
            None,
            Some(callback("cb-e3-done-1", "cb-e3", "E3Complete")),
            None,
        ),
        T0,
    )
    .await;

    commit(s, b1, T0 + SEC).await;
    assert_eq!(counts(s, b1, T0 + SEC).await, (0, 0, 0, "1", ""));
    assert!(waiting(s, "cb-success").await.is_empty());
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, b1, T0 + 2 * SEC).await, (0, 0, 0, "2", "1"));
    take_callback(s, "cb-success", "BatchSuccess", None, T0 + 3 * SEC).await;

    commit(s, b2, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, b2, T0 + 3 * SEC).await,
        (0, 0, 0, "", "1"),
        "no complete callback: complete at once"
    );
    let cb = take_callback(s, "cb-e2", "E2Success", None, T0 + 4 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, b2, T0 + 4 * SEC).await, (0, 0, 0, "", "2"));

    commit(s, b3, T0 + 5 * SEC).await;
    let cb = take_callback(s, "cb-e3", "E3Complete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, b3, T0 + 6 * SEC).await,
        (0, 0, 0, "2", ""),
        "no success callback: shown pending forever"
    );
    c.watch_batches(&[b1, b2, b3]);
    c.finish(T0 + 6 * SEC).await;
}

/// Each callback is enqueued at most once: committing again, or reopening, adding a job and
/// committing again after the callbacks fired, enqueues nothing.
pub async fn batch_callbacks_fire_at_most_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-once-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(s, &[member("once-mem-001", bid)], T0).await;
    commit(s, bid, T0).await;
    run_ok(s, "bq", "once-mem-001", T0 + SEC).await;
    commit(s, bid, T0 + 2 * SEC).await;
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 3 * SEC).await;
    commit(s, bid, T0 + 3 * SEC).await;
    assert!(
        waiting(s, "cb-complete").await.is_empty(),
        "no second complete"
    );
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    let scb = take_callback(s, "cb-success", "BatchSuccess", None, T0 + 5 * SEC).await;
    assert_eq!(ack(s, &scb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 5 * SEC).await, (1, 0, 0, "2", "2"));

    open(s, bid, T0 + 10 * SEC).await;
    push(s, &[member("once-mem-002", bid)], T0 + 10 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 10 * SEC).await, (2, 1, 0, "2", "2"));
    commit(s, bid, T0 + 11 * SEC).await;
    run_ok(s, "bq", "once-mem-002", T0 + 12 * SEC).await;
    open(s, bid, T0 + 13 * SEC).await;
    commit(s, bid, T0 + 14 * SEC).await;
    assert_eq!(counts(s, bid, T0 + 14 * SEC).await, (2, 0, 0, "2", "2"));
    assert!(waiting(s, "cb-complete").await.is_empty());
    assert!(waiting(s, "cb-success").await.is_empty());
    assert_eq!(stats(s).await.working, 0, "no callback job anywhere");
    c.watch_batches(&[bid]);
    c.finish(T0 + 14 * SEC).await;
}

/// A callback whose jid is taken by a stored job is enqueued under a fresh jid, and the store
/// follows that job: its ACK (not the other job's) makes the callback succeeded.
pub async fn batch_callback_with_taken_jid_gets_fresh_jid<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-taken-001";
    let taken = "cb-taken-0001";
    batch_new(
        s,
        new_batch(
            bid,
            None,
            Some(callback(taken, "cb-taken", "TakenComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(s, &[spec(taken).queue("other")], T0).await;
    commit(s, bid, T0 + SEC).await;
    assert_eq!(counts(s, bid, T0 + SEC).await, (0, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-taken", "TakenComplete", None, T0 + 2 * SEC).await;
    assert_ne!(cb.jid, taken, "the callback needs a fresh jid");
    assert!(cb.jid.len() >= 8, "a valid jid: {:?}", cb.jid);
    let other = must_get(s, taken).await;
    assert_eq!(
        (other.state, other.queue.as_str(), other.jobtype.as_str()),
        (Enqueued, "other", "TestJob"),
        "the job holding the jid is untouched"
    );
    run_ok(s, "other", taken, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, bid, T0 + 3 * SEC).await,
        (0, 0, 0, "1", ""),
        "the other job's ACK is not the callback's"
    );
    assert_eq!(ack(s, &cb.jid, T0 + 4 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 4 * SEC).await, (0, 0, 0, "2", ""));
    c.watch_batches(&[bid]);
    c.finish(T0 + 4 * SEC).await;
}

/// A parent's callbacks wait for its child batches: complete for every child to be complete
/// (its complete callback ACKed, or at once without one), success for every child to have
/// succeeded. Child callbacks carry `custom._pbid`; children's jobs do not count in the parent.
pub async fn child_batch_holds_parent_callbacks<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (p, c1, c2) = ("bid-parent-01", "bid-child-001", "bid-child-002");
    batch_new(
        s,
        new_batch(
            p,
            None,
            Some(callback("cb-p-done-01", "cb-pc", "ParentComplete")),
            Some(callback("cb-p-succ-01", "cb-ps", "ParentSuccess")),
        ),
        T0,
    )
    .await;
    let c1_complete = spec("cb-c1-done-1")
        .queue("cb-c1c")
        .jobtype("ChildComplete")
        .args("[]")
        .custom(r#"{"k":"v"}"#)
        .new_job(T0)
        .job;
    batch_new(
        s,
        new_batch(
            c1,
            Some(p),
            Some(c1_complete),
            Some(callback("cb-c1-succ-1", "cb-c1s", "ChildSuccess")),
        ),
        T0,
    )
    .await;
    batch_new(
        s,
        new_batch(
            c2,
            Some(p),
            None,
            Some(callback("cb-c2-succ-1", "cb-c2s", "Child2Success")),
        ),
        T0,
    )
    .await;
    assert_eq!(status(s, c1, T0).await.parent_bid.as_deref(), Some(p));
    push(s, &[member("pc-mem-p0001", p)], T0).await;
    push(s, &[member("pc-mem-c0001", c1).queue("bq-c1")], T0).await;
    assert_eq!(counts(s, p, T0).await, (1, 1, 0, "", ""));
    assert_eq!(counts(s, c1, T0).await, (1, 1, 0, "", ""));

    commit(s, p, T0 + SEC).await;
    run_ok(s, "bq", "pc-mem-p0001", T0 + 2 * SEC).await;
    assert_eq!(
        counts(s, p, T0 + 2 * SEC).await,
        (1, 0, 0, "", ""),
        "the parent waits for its uncommitted children"
    );

    commit(s, c2, T0 + 3 * SEC).await;
    assert_eq!(
        counts(s, c2, T0 + 3 * SEC).await,
        (0, 0, 0, "", "1"),
        "child 2: complete at once (no complete callback), success enqueued"
    );
    let c2_success = take_callback(s, "cb-c2s", "Child2Success", Some(p), T0 + 3 * SEC).await;
    assert_eq!(counts(s, p, T0 + 3 * SEC).await, (1, 0, 0, "", ""));

    commit(s, c1, T0 + 4 * SEC).await;
    assert_eq!(counts(s, c1, T0 + 4 * SEC).await, (1, 1, 0, "", ""));
    run_ok(s, "bq-c1", "pc-mem-c0001", T0 + 5 * SEC).await;
    assert_eq!(counts(s, c1, T0 + 5 * SEC).await, (1, 0, 0, "1", ""));
    assert_eq!(
        counts(s, p, T0 + 5 * SEC).await,
        (1, 0, 0, "", ""),
        "child 1's complete callback is not ACKed yet"
    );
    let c1_done = take_callback(s, "cb-c1c", "ChildComplete", Some(p), T0 + 5 * SEC).await;
    assert_eq!(
        custom_of(&c1_done).get("k").and_then(|v| v.as_str()),
        Some("v"),
        "the callback's own custom is kept: {}",
        c1_done.payload
    );
    assert_eq!(ack(s, &c1_done.jid, T0 + 6 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, c1, T0 + 6 * SEC).await, (1, 0, 0, "2", "1"));
    assert_eq!(
        counts(s, p, T0 + 6 * SEC).await,
        (1, 0, 0, "1", ""),
        "every child complete: the parent's complete callback"
    );
    let p_done = take_callback(s, "cb-pc", "ParentComplete", None, T0 + 6 * SEC).await;
    assert_eq!(ack(s, &p_done.jid, T0 + 7 * SEC).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, p, T0 + 7 * SEC).await,
        (1, 0, 0, "2", ""),
        "success waits for the children's success"
    );
    let c1_success = take_callback(s, "cb-c1s", "ChildSuccess", Some(p), T0 + 7 * SEC).await;
    assert_eq!(
        ack(s, &c1_success.jid, T0 + 8 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, c1, T0 + 8 * SEC).await, (1, 0, 0, "2", "2"));
    assert_eq!(counts(s, p, T0 + 8 * SEC).await, (1, 0, 0, "2", ""));
    assert!(waiting(s, "cb-ps").await.is_empty());
    assert_eq!(
        ack(s, &c2_success.jid, T0 + 9 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, c2, T0 + 9 * SEC).await, (0, 0, 0, "", "2"));
    assert_eq!(counts(s, p, T0 + 9 * SEC).await, (1, 0, 0, "2", "1"));
    let p_success = take_callback(s, "cb-ps", "ParentSuccess", None, T0 + 10 * SEC).await;
    assert_eq!(
        ack(s, &p_success.jid, T0 + 10 * SEC).await,
        AckOutcome::Acked
    );
    assert_eq!(counts(s, p, T0 + 10 * SEC).await, (1, 0, 0, "2", "2"));
    c.watch_batches(&[p, c1, c2]);
    c.finish(T0 + 10 * SEC).await;
}

/// Counts, commit state, callback states and the at-most-once rule survive crash-reopens.
pub async fn batch_counts_survive_reopen<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let bid = "bid-reopen-01";
    c.watch_batches(&[bid]);
    batch_new(c.s(), both_callbacks(bid), T0).await;
    push(
        c.s(),
        &[
            member("ro-mem-00001", bid),
            member("ro-mem-00002", bid),
            member("ro-mem-00003", bid),
        ],
        T0,
    )
    .await;
    run_ok(c.s(), "bq", "ro-mem-00001", T0 + SEC).await;
    run_fail(c.s(), "bq", "ro-mem-00002", T0 + 2 * SEC).await;
    let before = status(c.s(), bid, T0 + 2 * SEC).await;
    c.reopen().await;
    assert_eq!(status(c.s(), bid, T0 + 2 * SEC).await, before);
    assert_eq!(counts(c.s(), bid, T0 + 2 * SEC).await, (3, 1, 1, "", ""));
    commit(c.s(), bid, T0 + 3 * SEC).await;
    c.reopen().await;
    assert!(status(c.s(), bid, T0 + 3 * SEC).await.committed);
    run_ok(c.s(), "bq", "ro-mem-00003", T0 + 4 * SEC).await;
    assert_eq!(counts(c.s(), bid, T0 + 4 * SEC).await, (3, 0, 1, "1", ""));
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, T0 + 4 * SEC).await, (3, 0, 1, "1", ""));
    let cb = take_callback(c.s(), "cb-complete", "BatchComplete", None, T0 + 5 * SEC).await;
    assert_eq!(ack(c.s(), &cb.jid, T0 + 5 * SEC).await, AckOutcome::Acked);
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, T0 + 5 * SEC).await, (3, 0, 1, "2", ""));
    commit(c.s(), bid, T0 + 6 * SEC).await;
    assert!(waiting(c.s(), "cb-complete").await.is_empty());
    let t = must_get(c.s(), "ro-mem-00002").await.at;
    assert_eq!(promote(c.s(), t).await, 1);
    run_ok(c.s(), "bq", "ro-mem-00002", t).await;
    c.reopen().await;
    assert_eq!(counts(c.s(), bid, t).await, (3, 0, 0, "2", "1"));
    assert_eq!(waiting(c.s(), "cb-success").await.len(), 1);
    c.finish(t).await;
}

/// An uncommitted batch expires BATCH_COMMIT_DEADLINE after its NEW or latest OPEN: then it is
/// unknown to STATUS, OPEN, COMMIT and PUSH, and never fires. A committed batch does not expire.
/// `list_batches`: newest first (created_at, then bid, descending), keyset pages that neither
/// skip nor repeat, expired uncommitted batches left out.
pub async fn list_batches_newest_first_in_pages<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    // Two batches share a creation time: the bid breaks the tie.
    let made = [
        ("bid-list-a", T0),
        ("bid-list-b", T0 + SEC),
        ("bid-list-c", T0 + SEC),
        ("bid-list-d", T0 + 2 * SEC),
        ("bid-list-e", T0 + 3 * SEC),
    ];
    for (bid, t) in made {
        batch_new(s, both_callbacks(bid), t).await;
        if bid != "bid-list-e" {
            commit(s, bid, t).await;
        }
    }
    let now = T0 + 10 * SEC;
    let want = [
        "bid-list-e",
        "bid-list-d",
        "bid-list-c",
        "bid-list-b",
        "bid-list-a",
    ];
    let all = s.list_batches(None, 100, now).await.expect("list");
    let bids: Vec<&str> = all.iter().map(|b| b.bid.as_str()).collect();
    assert_eq!(bids, want);
    assert_eq!(all[0], try_status(s, "bid-list-e", now).await.unwrap());
    for size in [1, 2, 3] {
        let mut seen = Vec::new();
        let mut after = None;
        for _ in 0..10 {
            let page = s
                .list_batches(after.clone(), size, now)
                .await
                .expect("list");
            assert!(page.len() as u64 <= size);
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            after = Some((last.created_at, last.bid.clone()));
            seen.extend(page.into_iter().map(|b| b.bid));
        }
        assert_eq!(seen, want, "pages of {size}");
    }
    // The uncommitted one expires and is no longer listed.
    let late = T0 + 3 * SEC + BATCH_COMMIT_DEADLINE + SEC;
    let bids: Vec<String> = s
        .list_batches(None, 100, late)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.bid)
        .collect();
    assert_eq!(bids, &want[1..]);
    c.finish(now).await;
}

pub async fn uncommitted_batch_expires<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let (b1, b2) = ("bid-expire-01", "bid-expire-02");
    batch_new(s, both_callbacks(b1), T0).await;
    assert!(try_status(s, b1, T0 + BATCH_COMMIT_DEADLINE - SEC)
        .await
        .is_some());
    open(s, b1, T0 + 20 * MIN).await;
    let deadline = T0 + 20 * MIN + BATCH_COMMIT_DEADLINE;
    assert!(
        try_status(s, b1, deadline - SEC).await.is_some(),
        "OPEN restarts the deadline"
    );
    let t = deadline + SEC;
    assert_eq!(try_status(s, b1, t).await, None);
    assert_eq!(
        s.batch_open(b1.into(), t).await.expect("open"),
        Err(no_batch(b1))
    );
    assert_eq!(
        s.batch_commit(b1.into(), t).await.expect("commit"),
        Err(no_batch(b1))
    );
    assert_eq!(
        push_results(s, &[member("exb-mem-0001", b1)], t).await[0],
        Err(PushError::NoSuchBatch(b1.to_string()))
    );
    assert!(waiting(s, "cb-complete").await.is_empty(), "never fires");

    batch_new(s, both_callbacks(b2), T0).await;
    push(s, &[member("exb-mem-0002", b2)], T0).await;
    commit(s, b2, T0 + SEC).await;
    let later = T0 + 2 * HOUR;
    assert_eq!(
        counts(s, b2, later).await,
        (1, 1, 0, "", ""),
        "a committed batch waits for its jobs"
    );
    open(s, b2, later).await;
    let t = later + BATCH_COMMIT_DEADLINE + SEC;
    assert_eq!(
        try_status(s, b2, t).await,
        None,
        "reopened and not committed again: expired"
    );
    run_ok(s, "bq", "exb-mem-0002", t).await;
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(try_status(s, b1, t).await, None);
    assert_eq!(try_status(s, b2, t).await, None);
    assert!(waiting(s, "cb-complete").await.is_empty());
    c.finish(t).await;
}

/// Late ACKs and the reaper's FAIL count for batches like ordinary ACKs and FAILs (and may fire
/// callbacks).
pub async fn late_ack_and_reaper_count_for_batches<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-late-0001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            member("late-mem-001", bid).reserve_for(60),
            member("late-mem-002", bid),
        ],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert_eq!(
        fetch_jid(s, &["bq"], T0).await.as_deref(),
        Some("late-mem-001")
    );
    assert_eq!(
        ack(s, "late-mem-002", T0 + SEC).await,
        AckOutcome::AckedLate(Enqueued)
    );
    assert_eq!(counts(s, bid, T0 + SEC).await, (2, 1, 0, "", ""));
    assert_eq!(reap(s, T0 + 61 * SEC).await, 1);
    assert_eq!(state_of(s, "late-mem-001").await, Some(Retry));
    assert_eq!(
        counts(s, bid, T0 + 61 * SEC).await,
        (2, 0, 1, "1", ""),
        "the reaper's FAIL finished the last job"
    );
    assert_eq!(
        ack(s, "late-mem-001", T0 + 62 * SEC).await,
        AckOutcome::AckedLate(Retry)
    );
    assert_eq!(counts(s, bid, T0 + 62 * SEC).await, (2, 0, 0, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, T0 + 63 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 63 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bid, T0 + 63 * SEC).await, (2, 0, 0, "2", "1"));
    c.watch_batches(&[bid]);
    c.finish(T0 + 63 * SEC).await;
}

/// A member job that expires (dropped at FETCH or by the sweep) counts as failed.
pub async fn expired_member_job_counts_as_failed<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-expmem-01";
    let custom = format!(r#"{{"bid":{},"expires_in":10}}"#, js(bid));
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[
            spec("xm-mem-00001").queue("bx1").custom(&custom),
            spec("xm-mem-00002").queue("bx2").custom(&custom),
            member("xm-mem-00003", bid),
        ],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    let t = T0 + 11 * SEC;
    assert_eq!(fetch_jid(s, &["bx1"], t).await, None);
    assert_eq!(s.sweep_expired(t, 1000).await.expect("sweep"), 1);
    assert_eq!(expired_count(s).await, 2);
    assert_eq!(counts(s, bid, t).await, (3, 1, 2, "", ""));
    run_ok(s, "bq", "xm-mem-00003", t).await;
    assert_eq!(counts(s, bid, t).await, (3, 0, 2, "1", ""));
    let cb = take_callback(s, "cb-complete", "BatchComplete", None, t).await;
    assert_eq!(ack(s, &cb.jid, t).await, AckOutcome::Acked);
    assert_eq!(
        counts(s, bid, t).await,
        (3, 0, 2, "2", ""),
        "expired members never succeed"
    );
    c.watch_batches(&[bid]);
    c.finish(t).await;
}

/// The sweep purges a batch BATCH_RETENTION after it succeeded, and one that never succeeds
/// `dead_retention` after its last change; a purged batch is unknown.
pub async fn finished_batches_are_purged_after_retention<H: Harness>() {
    let retention = 2 * DAY;
    let c = Ctx::<H>::with_config(StoreConfig {
        dead_retention: retention,
        ..StoreConfig::default()
    })
    .await;
    let s = c.s();
    let (ok, bad) = ("bid-purge-ok1", "bid-purge-bad");
    batch_new(
        s,
        new_batch(
            ok,
            None,
            None,
            Some(callback("cb-purge-ok1", "cb-ok", "OkSuccess")),
        ),
        T0,
    )
    .await;
    commit(s, ok, T0).await;
    let cb = take_callback(s, "cb-ok", "OkSuccess", None, T0 + SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 2 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, ok, T0 + 2 * SEC).await, (0, 0, 0, "", "2"));

    batch_new(
        s,
        new_batch(
            bad,
            None,
            Some(callback("cb-purge-bad", "cb-bad", "BadComplete")),
            None,
        ),
        T0,
    )
    .await;
    push(s, &[member("pg-mem-00001", bad).retry(-1)], T0).await;
    commit(s, bad, T0).await;
    assert_eq!(
        run_fail(s, "bq", "pg-mem-00001", T0 + SEC).await,
        FailOutcome::Dead
    );
    let cb = take_callback(s, "cb-bad", "BadComplete", None, T0 + 2 * SEC).await;
    assert_eq!(ack(s, &cb.jid, T0 + 3 * SEC).await, AckOutcome::Acked);
    assert_eq!(counts(s, bad, T0 + 3 * SEC).await, (1, 0, 1, "2", ""));

    // dead_retention (2 days) is shorter than BATCH_RETENTION: each rule stands on its own.
    let t = T0 + 3 * SEC + retention;
    s.sweep_expired(t - SEC, 1000).await.expect("sweep");
    assert!(try_status(s, bad, t - SEC).await.is_some());
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(
        try_status(s, bad, t).await,
        None,
        "a batch that never succeeds: purged dead_retention after its last change"
    );
    assert!(
        try_status(s, ok, t).await.is_some(),
        "a succeeded batch is kept for BATCH_RETENTION"
    );
    let t = T0 + 2 * SEC + BATCH_RETENTION;
    s.sweep_expired(t - SEC, 1000).await.expect("sweep");
    assert!(try_status(s, ok, t - SEC).await.is_some());
    s.sweep_expired(t, 1000).await.expect("sweep");
    assert_eq!(
        try_status(s, ok, t).await,
        None,
        "purged after BATCH_RETENTION"
    );
    assert_eq!(
        s.batch_open(ok.into(), t).await.expect("open"),
        Err(no_batch(ok))
    );
    c.watch_batches(&[ok, bad]);
    c.finish(t).await;
}

// ---------------------------------------------------------------------------------------------
// Tracking
// ---------------------------------------------------------------------------------------------

/// A tracked job (`custom.track` = 1) in `queue`.
fn tracked(jid: &str, queue: &str) -> Spec {
    spec(jid).queue(queue).custom(r#"{"track":1}"#)
}

async fn track<S: Store>(s: &S, jid: &str, now: Millis) -> Option<Tracked> {
    s.track_get(jid.to_string(), now).await.expect("track_get")
}

async fn track_state<S: Store>(s: &S, jid: &str, now: Millis) -> Option<TrackState> {
    track(s, jid, now).await.map(|t| t.state)
}

async fn track_set<S: Store>(
    s: &S,
    jid: &str,
    percent: Option<u8>,
    desc: Option<&str>,
    reserve_until: Option<Millis>,
    now: Millis,
) -> bool {
    s.track_set(
        TrackUpdate {
            jid: jid.to_string(),
            percent,
            desc: desc.map(str::to_string),
            reserve_until,
        },
        now,
    )
    .await
    .expect("track_set")
}

/// TRACK GET follows the job: scheduled/enqueued → enqueued, working, retry → failed, dead,
/// ACK → success, discard after FAIL → failed; removal otherwise forgets it. `updated_at` moves
/// with push, fetch, ACK and FAIL (not with a promotion).
pub async fn tracking_follows_job_states<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            tracked("tr-sched-001", "tq0").at(T0 + HOUR),
            tracked("tr-flow-0001", "tq1"),
            spec("tr-true-0001")
                .queue("tq2")
                .retry(-1)
                .custom(r#"{"track":true}"#),
            tracked("tr-disc-0001", "tq3").retry(0),
            tracked("tr-kill-0001", "tq4"),
            tracked("tr-del-00001", "tq5"),
            tracked("tr-rmq-00001", "tq6"),
            spec("tr-exp-00001")
                .queue("tq7")
                .custom(r#"{"track":1,"expires_in":10}"#),
        ],
        T0,
    )
    .await;
    assert_eq!(
        track(s, "tr-flow-0001", T0).await,
        Some(Tracked {
            jid: "tr-flow-0001".to_string(),
            state: TrackState::Enqueued,
            percent: None,
            desc: None,
            updated_at: T0,
        })
    );
    assert_eq!(
        track_state(s, "tr-sched-001", T0).await,
        Some(TrackState::Enqueued),
        "scheduled shows as enqueued"
    );

    assert_eq!(
        fetch_jid(s, &["tq1"], T0 + SEC).await.as_deref(),
        Some("tr-flow-0001")
    );
    let t = track(s, "tr-flow-0001", T0 + SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Working, T0 + SEC));
    fail(s, "tr-flow-0001", T0 + 2 * SEC).await;
    let t = track(s, "tr-flow-0001", T0 + 2 * SEC).await.unwrap();
    assert_eq!((t.state, t.updated_at), (TrackState::Failed, T0 + 2 * SEC));

    run_fail(s, "tq2", "tr-true-0001", T0 + 2 * SEC).await;
    assert_eq!(
        track_state(s, "tr-true-0001", T0 + 2 * SEC).await,
        Some(TrackState::Dead),
        "track: true also tracks"
    );
    assert_eq!(
        run_fail(s, "tq3", "tr-disc-0001", T0 + 2 * SEC).await,
        FailOutcome::Discarded
    );
    assert_eq!(get(s, "tr-disc-0001").await, None);
    assert_eq!(
        track_state(s, "tr-disc-0001", T0 + 2 * SEC).await,
        Some(TrackState::Failed),
        "discarded after a failure"
    );
    run_fail(s, "tq4", "tr-kill-0001", T0 + 2 * SEC).await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Kill,
            Retry,
            by_jids(&["tr-kill-0001"]),
            T0 + 3 * SEC
        )
        .await,
        1
    );
    assert_eq!(
        track_state(s, "tr-kill-0001", T0 + 3 * SEC).await,
        Some(TrackState::Dead)
    );
    run_fail(s, "tq5", "tr-del-00001", T0 + 2 * SEC).await;
    assert_eq!(
        mutate(
            s,
            MutateOp::Discard,
            Retry,
            by_jids(&["tr-del-00001"]),
            T0 + 3 * SEC
        )
        .await,
        1
    );
    assert_eq!(
        track(s, "tr-del-00001", T0 + 3 * SEC).await,
        None,
        "deleted by MUTATE"
    );
    assert_eq!(
        s.remove_queues(QueueSelector::Names(strings(&["tq6"])))
            .await
            .expect("remove_queues"),
        1
    );
    assert_eq!(
        track(s, "tr-rmq-00001", T0 + 3 * SEC).await,
        None,
        "removed with its queue"
    );
    assert_eq!(fetch_jid(s, &["tq7"], T0 + 11 * SEC).await, None);
    assert_eq!(
        track(s, "tr-exp-00001", T0 + 11 * SEC).await,
        None,
        "expired"
    );

    let next_at = must_get(s, "tr-flow-0001").await.at;
    assert!(
        next_at < T0 + HOUR,
        "suite bug: the retry comes before the scheduled job"
    );
    promote(s, next_at).await;
    let t = track(s, "tr-flow-0001", next_at).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Enqueued, T0 + 2 * SEC),
        "a promotion is no update"
    );
    run_ok(s, "tq1", "tr-flow-0001", next_at + SEC).await;
    let t = track(s, "tr-flow-0001", next_at + SEC).await.unwrap();
    assert_eq!(
        (t.state, t.updated_at),
        (TrackState::Success, next_at + SEC)
    );
    c.watch_tracked(&[
        "tr-sched-001",
        "tr-flow-0001",
        "tr-true-0001",
        "tr-disc-0001",
        "tr-kill-0001",
        "tr-del-00001",
    ]);
    c.finish(next_at + SEC).await;
}

/// TRACK SET stores percent and desc (each kept when not given) and extends a working job's
/// reservation, never shortening it and at most a day ahead; the extension is durable and the
/// reaper honours it.
pub async fn track_set_keeps_progress_and_extends_reservation<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    c.watch_tracked(&["ts-work-0001", "ts-wait-0001"]);
    let s = c.s();
    push(
        s,
        &[
            tracked("ts-work-0001", "tsq").reserve_for(60),
            tracked("ts-wait-0001", "tsw"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_jid(s, &["tsq"], T0).await.as_deref(),
        Some("ts-work-0001")
    );
    assert!(
        track_set(
            s,
            "ts-work-0001",
            Some(10),
            Some("loading"),
            None,
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(
        track(s, "ts-work-0001", T0 + 10 * SEC).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Working,
            percent: Some(10),
            desc: Some("loading".to_string()),
            updated_at: T0 + 10 * SEC,
        })
    );
    assert!(track_set(s, "ts-work-0001", Some(50), None, None, T0 + 11 * SEC).await);
    assert!(
        track_set(
            s,
            "ts-work-0001",
            None,
            Some("halfway"),
            None,
            T0 + 12 * SEC
        )
        .await
    );
    let t = track(s, "ts-work-0001", T0 + 12 * SEC).await.unwrap();
    assert_eq!(
        (t.percent, t.desc.as_deref()),
        (Some(50), Some("halfway")),
        "a field not given keeps its value"
    );

    track_set(
        s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 10 * MIN),
        T0 + 20 * SEC,
    )
    .await;
    let j = must_get(s, "ts-work-0001").await;
    let r = j.reservation.clone().unwrap();
    assert_eq!(
        (r.reserved_at, r.expires_at, j.at),
        (T0, T0 + 10 * MIN, T0 + 10 * MIN),
        "reservation extended"
    );
    let t = track(s, "ts-work-0001", T0 + 20 * SEC).await.unwrap();
    assert_eq!((t.percent, t.desc.as_deref()), (Some(50), Some("halfway")));
    track_set(
        s,
        "ts-work-0001",
        None,
        None,
        Some(T0 + 5 * MIN),
        T0 + 25 * SEC,
    )
    .await;
    assert_eq!(
        must_get(s, "ts-work-0001").await.at,
        T0 + 10 * MIN,
        "never shortened"
    );

    assert!(
        track_set(
            s,
            "ts-wait-0001",
            Some(5),
            None,
            Some(T0 + HOUR),
            T0 + 25 * SEC
        )
        .await,
        "an enqueued tracked job stores its progress"
    );
    let w = must_get(s, "ts-wait-0001").await;
    assert_eq!(
        (w.state, w.reservation),
        (Enqueued, None),
        "no reservation to extend"
    );

    c.reopen().await;
    let s = c.s();
    assert_eq!(must_get(s, "ts-work-0001").await.at, T0 + 10 * MIN);
    assert_eq!(reap(s, T0 + 61 * SEC).await, 0);
    assert_eq!(reap(s, T0 + 10 * MIN - SEC).await, 0);
    assert_eq!(state_of(s, "ts-work-0001").await, Some(Working));

    let now = T0 + 10 * MIN - SEC;
    track_set(s, "ts-work-0001", None, None, Some(T0 + 3 * DAY), now).await;
    assert_eq!(
        must_get(s, "ts-work-0001").await.at,
        now + DAY,
        "capped at a day after now"
    );
    assert_eq!(reap(s, now + DAY - SEC).await, 0);
    assert_eq!(reap(s, now + DAY).await, 1);
    assert_eq!(
        track(s, "ts-work-0001", now + DAY).await,
        Some(Tracked {
            jid: "ts-work-0001".to_string(),
            state: TrackState::Failed,
            percent: Some(50),
            desc: Some("halfway".to_string()),
            updated_at: now + DAY,
        }),
        "the reaper's FAIL is an update; progress is kept"
    );
    c.finish(now + DAY).await;
}

/// Tracking data outlives its job by TRACK_RETENTION after the last update (TRACK GET says
/// nothing from then on) and the sweep purges it; while the job exists it is kept.
pub async fn track_data_purged_after_retention<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            tracked("tp-ack-00001", "tpa"),
            tracked("tp-disc-0001", "tpb").retry(0),
            tracked("tp-wait-0001", "tpc"),
        ],
        T0,
    )
    .await;
    run_ok(s, "tpa", "tp-ack-00001", T0 + SEC).await;
    run_fail(s, "tpb", "tp-disc-0001", T0 + 2 * SEC).await;
    let end = T0 + SEC + TRACK_RETENTION;
    assert_eq!(
        track_state(s, "tp-ack-00001", end - 1).await,
        Some(TrackState::Success)
    );
    assert_eq!(track(s, "tp-ack-00001", end).await, None, "past retention");
    assert_eq!(
        track_state(s, "tp-disc-0001", end).await,
        Some(TrackState::Failed)
    );
    assert_eq!(track(s, "tp-disc-0001", end + SEC).await, None);

    let late = T0 + 2 * HOUR;
    assert_eq!(
        track_state(s, "tp-wait-0001", late).await,
        Some(TrackState::Enqueued),
        "kept while the job exists"
    );
    s.sweep_expired(late, 1000).await.expect("sweep");
    assert_eq!(
        track(s, "tp-ack-00001", T0 + 2 * SEC).await,
        None,
        "purged by the sweep (asked with an earlier clock)"
    );
    assert_eq!(track(s, "tp-disc-0001", T0 + 2 * SEC).await, None, "purged");
    assert_eq!(
        track(s, "tp-wait-0001", late)
            .await
            .map(|t| (t.state, t.updated_at)),
        Some((TrackState::Enqueued, T0))
    );
    c.watch_tracked(&["tp-ack-00001", "tp-wait-0001"]);
    c.finish(late).await;
}

/// Jobs without `custom.track` = 1 have no tracking data; TRACK SET stores nothing for them
/// (or for unknown jids) but still extends a working job's reservation.
pub async fn untracked_job_has_no_tracking<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(
        s,
        &[
            spec("un-plain-001").queue("uqa").reserve_for(60),
            spec("un-zero-0001").queue("uqb").custom(r#"{"track":0}"#),
            spec("un-two-00001").queue("uqb").custom(r#"{"track":2}"#),
        ],
        T0,
    )
    .await;
    for jid in [
        "un-plain-001",
        "un-zero-0001",
        "un-two-00001",
        "un-known-001",
    ] {
        assert_eq!(track(s, jid, T0).await, None, "{jid}");
    }
    assert!(!track_set(s, "un-zero-0001", Some(10), Some("x"), None, T0).await);
    assert!(!track_set(s, "un-known-001", Some(10), Some("x"), None, T0).await);
    assert_eq!(track(s, "un-zero-0001", T0).await, None);
    assert_eq!(
        fetch_jid(s, &["uqa"], T0).await.as_deref(),
        Some("un-plain-001")
    );
    assert!(
        !track_set(
            s,
            "un-plain-001",
            Some(20),
            None,
            Some(T0 + 5 * MIN),
            T0 + 10 * SEC
        )
        .await
    );
    assert_eq!(track(s, "un-plain-001", T0 + 10 * SEC).await, None);
    let j = must_get(s, "un-plain-001").await;
    assert_eq!(
        (j.at, j.reservation.map(|r| r.expires_at)),
        (T0 + 5 * MIN, Some(T0 + 5 * MIN)),
        "the reservation of an untracked job is extended too"
    );
    c.finish(T0 + 10 * SEC).await;
}

// ---------------------------------------------------------------------------------------------
// Throttles
// ---------------------------------------------------------------------------------------------

fn throttle(queue: &str, limit: ThrottleLimit, timeout: Option<Millis>) -> Throttle {
    Throttle {
        queue: queue.to_string(),
        limit,
        timeout,
    }
}

async fn fetch_as<S: Store>(s: &S, queues: &[&str], wid: &str, now: Millis) -> Option<String> {
    s.fetch(strings(queues), wid.to_string(), now)
        .await
        .expect("fetch")
        .map(|j| j.jid)
}

/// A concurrency throttle: at most `n` working jobs of the queue across workers; ACK or FAIL
/// frees a slot; other queues are not limited; throttles are configuration (not kept by a
/// reopen) and replaced as a whole.
pub async fn throttle_concurrency_limits_fetch<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(2), None)]);
    push(
        s,
        &[
            spec("thc-job-0001").queue("thq"),
            spec("thc-job-0002").queue("thq"),
            spec("thc-job-0003").queue("thq"),
            spec("thc-job-0004").queue("thq"),
            spec("thc-job-0005").queue("thq"),
            spec("thc-free-001").queue("free"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["thq"], "wid-a", T0).await.as_deref(),
        Some("thc-job-0001")
    );
    assert_eq!(
        fetch_as(s, &["thq"], "wid-b", T0).await.as_deref(),
        Some("thc-job-0002")
    );
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0).await,
        None,
        "limit reached"
    );
    assert_eq!(fetch_as(s, &["thq"], "wid-a", T0).await, None);
    assert_eq!(
        fetch_as(s, &["free"], "wid-a", T0).await.as_deref(),
        Some("thc-free-001"),
        "other queues are not throttled"
    );
    assert_eq!(ack(s, "thc-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0 + SEC).await.as_deref(),
        Some("thc-job-0003")
    );
    fail(s, "thc-job-0002", T0 + 2 * SEC).await;
    assert_eq!(
        fetch_as(s, &["thq"], "wid-c", T0 + 2 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0004")
    );
    assert_eq!(fetch_as(s, &["thq"], "wid-d", T0 + 2 * SEC).await, None);
    assert_eq!(
        jids(s, Enqueued, Some("thq")).await,
        vec!["thc-job-0005"],
        "a throttled queue keeps its jobs"
    );
    s.set_throttles(vec![]);
    assert_eq!(
        fetch_as(s, &["thq"], "wid-d", T0 + 3 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0005"),
        "throttles replaced by none"
    );
    push(s, &[spec("thc-job-0006").queue("thq")], T0 + 3 * SEC).await;
    s.set_throttles(vec![throttle("thq", ThrottleLimit::Concurrency(1), None)]);
    assert_eq!(fetch_as(s, &["thq"], "wid-d", T0 + 3 * SEC).await, None);
    c.reopen().await;
    assert_eq!(
        fetch_as(c.s(), &["thq"], "wid-d", T0 + 4 * SEC)
            .await
            .as_deref(),
        Some("thc-job-0006"),
        "throttles are not persisted"
    );
    c.finish(T0 + 4 * SEC).await;
}

/// A per-worker throttle limits each wid separately.
pub async fn throttle_per_worker_limits_fetch<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("pwq", ThrottleLimit::PerWorker(1), None)]);
    push(
        s,
        &[
            spec("thw-job-0001").queue("pwq"),
            spec("thw-job-0002").queue("pwq"),
            spec("thw-job-0003").queue("pwq"),
            spec("thw-job-0004").queue("pwq"),
            spec("thw-oth-0001").queue("oth"),
            spec("thw-oth-0002").queue("oth"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0).await.as_deref(),
        Some("thw-job-0001")
    );
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0).await,
        None,
        "wid-a is at its limit"
    );
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-b", T0).await.as_deref(),
        Some("thw-job-0002")
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-b", T0).await, None);
    assert_eq!(
        fetch_as(s, &["oth"], "wid-a", T0).await.as_deref(),
        Some("thw-oth-0001")
    );
    assert_eq!(
        fetch_as(s, &["oth"], "wid-a", T0).await.as_deref(),
        Some("thw-oth-0002"),
        "jobs of other queues do not count"
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-a", T0).await, None);
    assert_eq!(ack(s, "thw-job-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-a", T0 + SEC).await.as_deref(),
        Some("thw-job-0003")
    );
    assert_eq!(fetch_as(s, &["pwq"], "wid-b", T0 + SEC).await, None);
    assert_eq!(
        fetch_as(s, &["pwq"], "wid-c", T0 + SEC).await.as_deref(),
        Some("thw-job-0004")
    );
    c.finish(T0 + SEC).await;
}

/// With a timeout, a working job holds its slot only that long after its FETCH; it keeps its
/// reservation.
pub async fn throttle_timeout_reclaims_slot<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle(
        "ttq",
        ThrottleLimit::Concurrency(1),
        Some(60 * SEC),
    )]);
    push(
        s,
        &[
            spec("tht-job-0001").queue("ttq"),
            spec("tht-job-0002").queue("ttq"),
            spec("tht-job-0003").queue("ttq"),
        ],
        T0,
    )
    .await;
    assert_eq!(
        fetch_as(s, &["ttq"], "wid-a", T0).await.as_deref(),
        Some("tht-job-0001")
    );
    assert_eq!(fetch_as(s, &["ttq"], "wid-b", T0 + 59 * SEC).await, None);
    assert_eq!(
        fetch_as(s, &["ttq"], "wid-b", T0 + 60 * SEC)
            .await
            .as_deref(),
        Some("tht-job-0002"),
        "fetched 60 s ago: the slot is reclaimed"
    );
    assert_eq!(fetch_as(s, &["ttq"], "wid-c", T0 + 61 * SEC).await, None);
    let j = must_get(s, "tht-job-0001").await;
    assert_eq!(j.state, Working, "the job keeps its reservation");
    assert_eq!(j.reservation.map(|r| r.reserved_at), Some(T0));
    c.finish(T0 + 61 * SEC).await;
}

/// A throttled queue counts as empty: the FETCH goes on to the next queue it names.
pub async fn throttled_queue_falls_through_to_next_queue<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    s.set_throttles(vec![throttle("hot", ThrottleLimit::Concurrency(1), None)]);
    push(
        s,
        &[
            spec("thf-hot-0001").queue("hot"),
            spec("thf-hot-0002").queue("hot"),
            spec("thf-cold-001").queue("cold"),
        ],
        T0,
    )
    .await;
    let qs = ["hot", "cold"];
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-hot-0001")
    );
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0).await.as_deref(),
        Some("thf-cold-001")
    );
    assert_eq!(fetch_as(s, &qs, "wid-a", T0).await, None);
    assert_eq!(ack(s, "thf-hot-0001", T0 + SEC).await, AckOutcome::Acked);
    assert_eq!(
        fetch_as(s, &qs, "wid-a", T0 + SEC).await.as_deref(),
        Some("thf-hot-0002")
    );
    c.finish(T0 + SEC).await;
}

/// FLUSH forgets batches and tracking data too.
pub async fn flush_forgets_batches_and_tracking<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let bid = "bid-flush-001";
    batch_new(s, both_callbacks(bid), T0).await;
    push(
        s,
        &[spec("fl-track-001")
            .queue("fq")
            .custom(&format!(r#"{{"bid":{},"track":1}}"#, js(bid)))],
        T0,
    )
    .await;
    commit(s, bid, T0).await;
    assert!(track(s, "fl-track-001", T0).await.is_some());
    s.flush().await.expect("flush");
    assert_eq!(try_status(s, bid, T0).await, None);
    assert_eq!(track(s, "fl-track-001", T0).await, None);
    assert_eq!(
        s.batch_open(bid.into(), T0).await.expect("open"),
        Err(no_batch(bid))
    );
    assert_eq!(
        push_results(s, &[member("fl-mem-00001", bid)], T0).await[0],
        Err(PushError::NoSuchBatch(bid.to_string()))
    );
    batch_new(s, both_callbacks(bid), T0 + SEC).await;
    assert_eq!(
        counts(s, bid, T0 + SEC).await,
        (0, 0, 0, "", ""),
        "the bid is free again"
    );
    c.watch_batches(&[bid]);
    c.watch_tracked(&["fl-track-001"]);
    c.finish(T0 + SEC).await;
}
