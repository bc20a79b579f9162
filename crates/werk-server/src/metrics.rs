//! Prometheus metrics. [`render`] returns the whole exposition (Prometheus text format 0.0.4,
//! [`CONTENT_TYPE`]) for a `/metrics` endpoint. Every name, type and label is documented in
//! `docs/metrics.md`.
//!
//! * Live metrics are updated where things happen: per-job counters ([`Metrics::job`]) at PUSH,
//!   PUSHB, cron, ACK and FAIL; one latency histogram per command verb
//!   ([`Metrics::observe_command`]).
//! * Sizes and store totals are read from the store at scrape time ([`render`]).
//! * A backend adds its own metrics to the registry at start-up
//!   ([`Metrics::register_extra`]), so this crate does not depend on any backend.
//!
//! Label cardinality is bounded: at most [`MAX_JOB_LABEL_SETS`] `(queue, jobtype)` pairs get a
//! series of their own. Further jobs are counted under `jobtype="other"` of their queue, and once
//! 2 × [`MAX_JOB_LABEL_SETS`] series exist, under `queue="other",jobtype="other"`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use werk_core::time::now_millis;
use werk_store::Store;

use crate::Shared;

/// The crate, so callers of [`Metrics::register_extra`] name the same `Registry` type.
pub use prometheus_client;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Most `(queue, jobtype)` pairs with series of their own (see the module doc).
pub const MAX_JOB_LABEL_SETS: usize = 1000;

/// Most fetched jobs a connection remembers for attributing its ACKs and FAILs.
pub const MAX_TRACKED_JOBS: usize = 10_000;

/// Label value of ACKs and FAILs of jobs this connection did not fetch.
pub const UNKNOWN: &str = "unknown";

/// Label value for jobs beyond the cardinality bound.
pub const OTHER: &str = "other";

/// The `command` label of a line that did not parse.
pub const INVALID_COMMAND: &str = "INVALID";

/// Command labels created up front (any other verb is added on first use).
const VERBS: &[&str] = &[
    "PUSH",
    "PUSHB",
    "FETCH",
    "ACK",
    "FAIL",
    "BEAT",
    "INFO",
    "FLUSH",
    "MUTATE",
    "QUEUE",
    "BATCH",
    "TRACK",
    "END",
    "HELLO",
    INVALID_COMMAND,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// Histogram of command latencies: 50 µs to 13 s, doubling.
fn command_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

/// The server's metrics (owned by [`Shared`]).
pub struct Metrics {
    /// Live metrics, plus whatever was added by [`Metrics::register_extra`].
    registry: Mutex<Registry>,
    jobs: Arc<JobCounters>,
    commands: Family<CommandLabels, Histogram, fn() -> Histogram>,
    /// The histograms of [`VERBS`], so observing one is a lookup in a short list.
    known: Vec<(&'static str, Histogram)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_job_limit(MAX_JOB_LABEL_SETS)
    }

    /// As [`Metrics::new`] with another cardinality bound (tests).
    pub fn with_job_limit(limit: usize) -> Metrics {
        let jobs = Arc::new(JobCounters::new(limit));
        let commands: Family<CommandLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(command_histogram);
        let known = VERBS
            .iter()
            .map(|&command| {
                (
                    command,
                    commands.get_or_create_owned(&CommandLabels { command }),
                )
            })
            .collect();
        let mut registry = Registry::default();
        for (name, help, kind) in [
            (
                "werk_jobs_pushed",
                "Jobs accepted by PUSH, PUSHB and cron, by queue and jobtype",
                Kind::Pushed,
            ),
            (
                "werk_jobs_processed",
                "Jobs acknowledged (ACK), by queue and jobtype",
                Kind::Processed,
            ),
            (
                "werk_jobs_failed",
                "Jobs failed by their worker (FAIL), by queue and jobtype",
                Kind::Failed,
            ),
        ] {
            registry.register(
                name,
                help,
                JobFamily {
                    jobs: jobs.clone(),
                    kind,
                },
            );
        }
        registry.register_with_unit(
            "werk_command_duration",
            "Time from reading a command to its reply being ready (FETCH includes its wait for a job), by command verb",
            Unit::Seconds,
            commands.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            jobs,
            commands,
            known,
        }
    }

    /// Adds metrics to the exposition (a backend's, at start-up).
    pub fn register_extra(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Records one command's latency. `verb` is [`werk_protocol::Command::verb`] or
    /// [`INVALID_COMMAND`].
    pub fn observe_command(&self, verb: &'static str, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        match self.known.iter().find(|(v, _)| *v == verb) {
            Some((_, h)) => h.observe(secs),
            None => self
                .commands
                .get_or_create(&CommandLabels { command: verb })
                .observe(secs),
        }
    }

    /// The counters of one `(queue, jobtype)` pair (or of its cardinality fallback).
    pub fn job(&self, queue: &str, jobtype: &str) -> JobHandle {
        self.jobs.handle(queue, jobtype)
    }

    /// The counters of jobs whose queue and jobtype are not known.
    pub fn unknown_job(&self) -> JobHandle {
        self.jobs.unknown.clone()
    }
}

/// The counters of one `(queue, jobtype)` label set. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct JobHandle(Arc<JobCount>);

#[derive(Debug, Default)]
struct JobCount {
    pushed: Counter,
    processed: Counter,
    failed: Counter,
}

impl JobHandle {
    pub fn pushed(&self) {
        self.0.pushed.inc();
    }

    pub fn processed(&self) {
        self.0.processed.inc();
    }

    pub fn failed(&self) {
        self.0.failed.inc();
    }
}

#[derive(Debug, Default)]
struct JobSets {
    /// queue → jobtype → counters.
    by_queue: HashMap<String, HashMap<String, JobHandle>>,
    len: usize,
}

impl JobSets {
    fn get(&self, queue: &str, jobtype: &str) -> Option<&JobHandle> {
        self.by_queue.get(queue)?.get(jobtype)
    }

    /// The existing series for this pair: its own, or its fallback once the bound is reached.
    /// `None`: one must be created.
    fn resolve(&self, limit: usize, queue: &str, jobtype: &str) -> Option<&JobHandle> {
        if let Some(h) = self.get(queue, jobtype) {
            return Some(h);
        }
        if self.len < limit {
            return None;
        }
        if let Some(h) = self.get(queue, OTHER) {
            return Some(h);
        }
        if self.len < 2 * limit {
            return None;
        }
        self.get(OTHER, OTHER)
    }

    fn insert(&mut self, queue: &str, jobtype: &str) -> JobHandle {
        let h = JobHandle::default();
        self.by_queue
            .entry(queue.to_owned())
            .or_default()
            .insert(jobtype.to_owned(), h.clone());
        self.len += 1;
        h
    }
}

/// Per-job counters by `(queue, jobtype)`, looked up by `&str` without allocating.
#[derive(Debug)]
struct JobCounters {
    limit: usize,
    sets: RwLock<JobSets>,
    unknown: JobHandle,
}

impl JobCounters {
    fn new(limit: usize) -> JobCounters {
        let mut sets = JobSets::default();
        let unknown = sets.insert(UNKNOWN, UNKNOWN);
        JobCounters {
            limit: limit.max(1),
            sets: RwLock::new(sets),
            unknown,
        }
    }

    fn handle(&self, queue: &str, jobtype: &str) -> JobHandle {
        {
            let sets = self.sets.read().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = sets.resolve(self.limit, queue, jobtype) {
                return h.clone();
            }
        }
        let mut sets = self.sets.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = sets.resolve(self.limit, queue, jobtype) {
            return h.clone();
        }
        if sets.len < self.limit {
            sets.insert(queue, jobtype)
        } else if sets.len < 2 * self.limit {
            sets.insert(queue, OTHER)
        } else {
            sets.insert(OTHER, OTHER)
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Pushed,
    Processed,
    Failed,
}

/// One of the three per-job counter families, for the registry.
#[derive(Debug)]
struct JobFamily {
    jobs: Arc<JobCounters>,
    kind: Kind,
}

impl EncodeMetric for JobFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let sets = self.jobs.sets.read().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<(&str, &str, &JobHandle)> = sets
            .by_queue
            .iter()
            .flat_map(|(q, types)| types.iter().map(move |(t, h)| (q.as_str(), t.as_str(), h)))
            .collect();
        rows.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (queue, jobtype, h) in rows {
            let counter = match self.kind {
                Kind::Pushed => &h.0.pushed,
                Kind::Processed => &h.0.processed,
                Kind::Failed => &h.0.failed,
            };
            counter.encode(encoder.encode_family(&[("queue", queue), ("jobtype", jobtype)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// What one connection fetched and not yet ACKed or FAILed: workers answer on the connection
/// that fetched, so their ACKs and FAILs are counted under the job's queue and jobtype (others
/// under `unknown`). Bounded by [`MAX_TRACKED_JOBS`]: beyond it, an arbitrary entry is forgotten.
#[derive(Debug, Default)]
pub struct ConnJobs {
    fetched: HashMap<String, JobHandle>,
}

impl ConnJobs {
    /// Remembers a job handed out by FETCH.
    pub fn fetched(&mut self, metrics: &Metrics, jid: String, queue: &str, jobtype: &str) {
        if self.fetched.len() >= MAX_TRACKED_JOBS && !self.fetched.contains_key(&jid) {
            if let Some(old) = self.fetched.keys().next().cloned() {
                self.fetched.remove(&old);
            }
        }
        self.fetched.insert(jid, metrics.job(queue, jobtype));
    }

    /// Forgets the job and returns its counters (the `unknown` ones if it was not fetched here).
    pub fn take(&mut self, metrics: &Metrics, jid: &str) -> JobHandle {
        self.fetched
            .remove(jid)
            .unwrap_or_else(|| metrics.unknown_job())
    }

    pub fn len(&self) -> usize {
        self.fetched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fetched.is_empty()
    }
}

/// The whole exposition: the live metrics, the backend's, and sizes and totals read from the
/// store now. If the store cannot be read, the store-derived families are left out (and a
/// warning is logged); the rest is still served.
pub async fn render<S: Store>(shared: &Shared<S>) -> String {
    let mut scrape = Registry::default();
    match store_snapshot(shared).await {
        Ok((stats, latency)) => {
            let size: Family<QueueLabels, Gauge> = Family::default();
            let paused: Family<QueueLabels, Gauge> = Family::default();
            let lat: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>> =
                Family::default();
            for (q, secs) in stats.queues.iter().zip(latency) {
                let labels = QueueLabels {
                    queue: q.name.clone(),
                };
                size.get_or_create(&labels)
                    .set(i64::try_from(q.size).unwrap_or(i64::MAX));
                paused.get_or_create(&labels).set(i64::from(q.paused));
                lat.get_or_create(&labels).set(secs);
            }
            scrape.register("werk_queue_size", "Jobs enqueued in the queue", size);
            scrape.register_with_unit(
                "werk_queue_latency",
                "Age of the queue's oldest enqueued job (0 when empty)",
                Unit::Seconds,
                lat,
            );
            scrape.register(
                "werk_queue_paused",
                "1 if the queue is paused, else 0",
                paused,
            );
            for (name, help, value) in [
                (
                    "werk_scheduled_jobs",
                    "Jobs in the scheduled set",
                    stats.scheduled,
                ),
                ("werk_retry_jobs", "Jobs in the retry set", stats.retries),
                ("werk_dead_jobs", "Jobs in the dead set", stats.dead),
                (
                    "werk_working_jobs",
                    "Jobs reserved by workers",
                    stats.working,
                ),
            ] {
                scrape.register(name, help, ConstGauge::new(value as i64));
            }
            for (name, help, value) in [
                (
                    "werk_processed",
                    "Jobs finished, successfully or not (ACK, FAIL, expired reservation), since the store was created or flushed (INFO total_processed)",
                    stats.processed,
                ),
                (
                    "werk_failures",
                    "Job failures (FAIL, expired reservation) since the store was created or flushed (INFO total_failures)",
                    stats.failures,
                ),
                (
                    "werk_expired",
                    "Enqueued jobs dropped because they expired, since the store was created or flushed",
                    stats.expired,
                ),
            ] {
                scrape.register(name, help, ConstCounter::new(value));
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the store's statistics"),
    }
    let c = &shared.counters;
    scrape.register(
        "werk_connections",
        "Open client connections (after HELLO)",
        ConstGauge::new(c.connections.load(Ordering::Relaxed) as i64),
    );
    scrape.register(
        "werk_connections",
        "Client connections accepted (counted before HELLO)",
        ConstCounter::new(c.next_conn_id.load(Ordering::Relaxed)),
    );
    scrape.register(
        "werk_commands",
        "Commands received after HELLO",
        ConstCounter::new(c.commands.load(Ordering::Relaxed)),
    );
    scrape.register(
        "werk_fetches_waiting",
        "FETCHes that found no job and are waiting for one (until an enqueue wakes them or the fetch timeout)",
        ConstGauge::new(c.fetches_waiting.load(Ordering::Relaxed) as i64),
    );
    match crate::workers::count(shared).await {
        Ok(n) => scrape.register(
            "werk_workers",
            "Worker processes registered (HELLO with a wid, heartbeating), in the whole cluster",
            ConstGauge::new(n as i64),
        ),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the worker registry"),
    }
    scrape.register_with_unit(
        "werk_uptime",
        "Time since the server started",
        Unit::Seconds,
        ConstGauge::new(shared.started.elapsed().as_secs_f64()),
    );
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_text::encode(&mut out, &scrape);
    let live = shared
        .metrics
        .registry
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let _ = prometheus_text::encode(&mut out, &live);
    out
}

async fn store_snapshot<S: Store>(
    shared: &Shared<S>,
) -> Result<(werk_store::Stats, Vec<f64>), werk_store::StoreError> {
    let stats = shared.store.stats().await?;
    let names = stats.queues.iter().map(|q| q.name.clone()).collect();
    let latency = shared.store.queue_latency(names, now_millis()).await?;
    Ok((stats, latency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry.lock().unwrap()).unwrap();
        out
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn cardinality_is_bounded() {
        let m = Metrics::with_job_limit(4);
        // `unknown` takes one of the 4 own series.
        for t in ["a", "b", "c"] {
            m.job("q", t).pushed();
        }
        // Over the limit: the queue's `other`.
        m.job("q", "d").pushed();
        m.job("q", "e").pushed();
        m.job("r", "a").pushed();
        // Existing pairs keep their series.
        m.job("q", "a").pushed();
        // 2 × limit reached (unknown, a, b, c, q/other, r/other, s/other, t/other): other/other.
        m.job("s", "x").pushed();
        m.job("t", "x").pushed();
        m.job("u", "x").pushed();
        m.job("v", "x").pushed();
        // A queue that already has `other` keeps using it.
        m.job("q", "f").pushed();
        let text = live(&m);
        let pushed = |q: &str, t: &str, n: u64| {
            format!("werk_jobs_pushed_total{{queue=\"{q}\",jobtype=\"{t}\"}} {n}")
        };
        for line in [
            pushed("q", "a", 2),
            pushed("q", "b", 1),
            pushed("q", "c", 1),
            pushed("q", "other", 3),
            pushed("r", "other", 1),
            pushed("s", "other", 1),
            pushed("t", "other", 1),
            pushed("other", "other", 2),
            pushed("unknown", "unknown", 0),
        ] {
            assert!(has(&text, &line), "missing {line} in\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("werk_jobs_pushed_total{"))
            .count();
        assert_eq!(series, 9, "{text}");
    }

    #[test]
    fn acks_and_fails_are_attributed_to_the_fetching_connection() {
        let m = Metrics::new();
        let mut a = ConnJobs::default();
        let mut b = ConnJobs::default();
        a.fetched(&m, "j1".into(), "default", "Email");
        a.fetched(&m, "j2".into(), "critical", "Charge");
        a.take(&m, "j1").processed();
        a.take(&m, "j2").failed();
        // Already taken, or fetched elsewhere: unknown.
        a.take(&m, "j1").processed();
        b.fetched(&m, "j3".into(), "default", "Email");
        a.take(&m, "j3").processed();
        assert!(a.is_empty());
        assert_eq!(b.len(), 1);
        let text = live(&m);
        for line in [
            r#"werk_jobs_processed_total{queue="default",jobtype="Email"} 1"#,
            r#"werk_jobs_failed_total{queue="critical",jobtype="Charge"} 1"#,
            r#"werk_jobs_processed_total{queue="critical",jobtype="Charge"} 0"#,
            r#"werk_jobs_processed_total{queue="unknown",jobtype="unknown"} 2"#,
        ] {
            assert!(has(&text, line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn tracked_jobs_are_bounded() {
        let m = Metrics::new();
        let mut c = ConnJobs::default();
        for i in 0..MAX_TRACKED_JOBS + 50 {
            c.fetched(&m, format!("j{i}"), "q", "t");
        }
        assert_eq!(c.len(), MAX_TRACKED_JOBS);
        // The newest is always kept.
        c.take(&m, &format!("j{}", MAX_TRACKED_JOBS + 49))
            .processed();
        let text = live(&m);
        assert!(has(
            &text,
            r#"werk_jobs_processed_total{queue="q",jobtype="t"} 1"#
        ));
    }

    #[test]
    fn command_histograms_and_extras() {
        let m = Metrics::new();
        m.observe_command("PUSH", Duration::from_micros(80));
        m.observe_command("PUSH", Duration::from_millis(3));
        m.observe_command("SOMETHING", Duration::from_millis(1));
        m.register_extra(|r| {
            let c: Counter = Counter::default();
            c.inc();
            r.register("werk_extra", "An extra", c);
        });
        let text = live(&m);
        for line in [
            r#"werk_command_duration_seconds_count{command="PUSH"} 2"#,
            r#"werk_command_duration_seconds_bucket{command="PUSH",le="0.0001"} 1"#,
            r#"werk_command_duration_seconds_count{command="SOMETHING"} 1"#,
            r#"werk_command_duration_seconds_count{command="ACK"} 0"#,
            "werk_extra_total 1",
        ] {
            assert!(has(&text, line), "missing {line} in\n{text}");
        }
    }
}
