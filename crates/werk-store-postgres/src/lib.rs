//! Werk's shared store (issue 12): PostgreSQL, so that any number of identical, stateless werk
//! nodes serve one database.
//!
//! **Status: a complete [`werk_store::Store`]** (the `store_impl` module delegates to the
//! inherent methods), passing every case of the backend conformance suite on a real
//! PostgreSQL (`tests/conformance.rs`, one database per case), plus multi-store race tests
//! (`tests/*.rs`: racing FETCHes, sweeps, cron fires, batch ACKs and throttles across two
//! stores on one database, unique pushes). `werk serve --database-url` selects it; the
//! cross-node wake-ups of blocked FETCHes are the `notify` module's, the cluster-wide worker
//! registry the `workers` module's, TLS the `tls` module's.
//!
//! # Connecting
//!
//! [`PgStore::connect`] takes a libpq connection string (`host=a,b port=5432 dbname=werk
//! target_session_attrs=read-write`) or URI (`postgresql://user@a,b/werk?...`), as parsed by
//! [`tokio_postgres::Config`]: several hosts with `target_session_attrs=read-write` (a node
//! always writes to the primary, and after a failover finds the new one on its next
//! connection), unix-socket hosts (`host=/run/postgresql`), a password. Connections are pooled
//! by deadpool-postgres; every new connection runs `SET synchronous_commit = on` and
//! `SET default_transaction_isolation = 'read committed'` before it is used, so neither a
//! database-level `synchronous_commit = off` nor a serializable default changes what a
//! committed answer means or how the transitions below behave (and `SET client_min_messages =
//! warning`, so the schema's `IF NOT EXISTS` notices do not reach the log).
//!
//! **TLS** is rustls (ring, no C library), with libpq's meaning of the URL's settings (the
//! `tls` module takes them out of the URL before tokio-postgres, which knows few of them, sees
//! it):
//!
//! * `sslmode`: `disable`; `prefer` (the default) and `allow`: TLS if the server offers it;
//!   `require`: TLS, the certificate not checked — unless a root certificate is given, then
//!   checked as by `verify-ca`; `verify-ca`: the certificate must chain to a root of
//!   `sslrootcert` (the host name is not checked); `verify-full`: and must name the host (the
//!   `host`, as a DNS name or an IP address, also when `hostaddr` says where to connect).
//! * `sslrootcert`: a PEM file of CA certificates, or `system` for the machine's trusted roots
//!   (as OpenSSL finds them; it makes `verify-full` the default and refuses weaker modes).
//!   Without it, libpq's `~/.postgresql/root.crt` is used if it exists; `verify-ca` and
//!   `verify-full` fail without either, saying so.
//! * `sslcert` / `sslkey`: a client certificate (chain) and its unencrypted key (PKCS#8,
//!   PKCS#1 or SEC1), PEM; by default libpq's `~/.postgresql/postgresql.crt` / `.key` if the
//!   certificate exists.
//! * `sslsni`, `ssl_min_protocol_version` / `ssl_max_protocol_version` (rustls speaks TLSv1.2
//!   and TLSv1.3), `sslcompression` (ignored, as by current libpq); `PGSSLMODE`,
//!   `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, `PGSSLSNI`, `PGSSLMINPROTOCOLVERSION` and
//!   `PGSSLMAXPROTOCOLVERSION` for what the URL does not set.
//! * Refused with [`ConnectError::Tls`], never ignored: `sslpassword` (encrypted keys),
//!   `sslcrl`, `sslcrldir`; so is a certificate or key file that cannot be read.
//! * SCRAM authentication over TLS uses channel binding (`tls-server-end-point`);
//!   `channel_binding=require` works.
//!
//! As in libpq, TLS is never tried over a unix socket. Unlike libpq: a host list that mixes
//! socket directories and TCP hosts fails on the sockets with `sslmode=require` or stronger;
//! `prefer` does not retry without TLS when a TLS handshake fails (it does when the server
//! declines TLS); a `sslcert` that does not exist is an error (libpq then connects without a
//! client certificate); the key file's permissions are not checked.
//!
//! # Durability
//!
//! Each transition is one transaction (ACKs: concurrent ones may share one, see the `batch_ack`
//! module), and each method returns only after its `COMMIT` succeeded (with
//! `synchronous_commit = on`: flushed on the primary and, with a synchronous standby configured,
//! on the standby too). A `COMMIT` that fails without a server error (the connection broke
//! while it was in flight) has an unknown outcome: it is reported as an error
//! ([`werk_store::StoreError::Backend`], saying so), never as success; the idempotent PUSH
//! retry ([`werk_core::Job::is_retried_push_of`]) makes a client's retry safe.
//!
//! # Schema decisions (the traps issue 12 lists)
//!
//! * **Schema creation by several nodes at once**: one transaction holding
//!   `pg_advisory_xact_lock(`[`schema::SCHEMA_LOCK_KEY`]`)` creates everything and writes the
//!   `werk_meta` row `schema_version`; nodes that start at the same moment wait on the lock and
//!   then find the row. A database at a newer version is refused
//!   ([`ConnectError::SchemaTooNew`]) rather than written with an older layout's rules.
//! * **One `jobs` table with a `state` column**, a unique `jid` (a jid names at most one stored
//!   job in the whole cluster, which the duplicate / retried-push rule needs), and **one partial
//!   index per state order**: `jobs_queue (queue, score) WHERE state = 1` (each queue FIFO),
//!   `(score, id) WHERE state = 0/2/3/4` for scheduled (`at`), working (`reserved_until`), retry
//!   (`next_at`) and dead (`dead_until`), `jobs_expiring (expires) WHERE state = 1`. Each index
//!   holds only its state's rows, so the heads FETCH, the scheduler and the reaper read are
//!   small however large the dead set grows.
//! * **FIFO by a sequence**, `werk_enqueue_seq`, not a counter row: `nextval` takes no row lock
//!   and is not rolled back, so concurrent enqueues never wait for one another (a counter row
//!   would serialise every PUSH in the cluster on one row lock until COMMIT). The price: numbers
//!   are taken before commit, so two *concurrent* pushes may become visible in the other order;
//!   for pushes one after another (what FIFO can promise anyway) the order is exact. Gaps are
//!   harmless (only the order matters).
//! * **FETCH**: `SELECT … WHERE state = 1 AND queue = $1 ORDER BY score LIMIT 1 FOR UPDATE OF
//!   jobs SKIP LOCKED`, then the reservation `UPDATE`, in one statement (data-modifying CTEs,
//!   which also release a `start:` unique lock and mark a tracked job started) that commits
//!   on its own: one round trip and one commit per FETCH. The reservation's length is the
//!   `reserve_ms` column, computed from the job's `reserve_for` when it was stored, so the
//!   statement needs nothing from the payload. Throttled queues and expired heads take the
//!   transaction that does the same in several statements. A PUSH of jobs that need no
//!   batch, lock or tracking row is likewise one statement (`INSERT … SELECT FROM unnest(…)`
//!   plus the queue's row). A head row
//!   locked by another node's FETCH is skipped, not waited for; one that another node already
//!   reserved and committed is re-checked against `state = 1` (READ COMMITTED re-evaluation)
//!   and skipped. So racing FETCHes on any number of nodes never get the same job.
//! * **Sizes are derived, not counted**: queue sizes and set sizes are `COUNT(*)` over the
//!   partial indexes at read time ([`PgStore::stats`]). A size counter would be updated by
//!   every transition — the worst hot row of all, since every PUSH, FETCH and ACK touches it.
//!   Sharding it would work too, but derived counts cannot drift and cost nothing on the write
//!   path; their cost is on INFO / the dashboard (linear in the backlog: a million enqueued
//!   jobs is an index scan of tens of milliseconds). Not measured yet; if `/stats` polling
//!   against a large backlog shows up, the fallback is sharded size counters written in the
//!   transitions' own transactions (the same scheme as below).
//! * **Counters and history are sharded**: `counters (name, shard, value)` and
//!   `history (day, shard, processed, failures)`; each transaction adds to the row of its own
//!   backend, shard = `pg_backend_pid()`, with an upsert, and readers sum the shards. No two
//!   live connections share a row, so an ACK never waits for another's row lock (held until
//!   its COMMIT, fsync included); one unsharded row would serialise every ACK in the cluster,
//!   and a fixed number of shards (`pid % 16` at first) still made connections collide: the
//!   counter upsert was the costliest statement of the mixed benchmark (pg_stat_statements,
//!   0.36 ms mean against 0.08 ms for the ACK's DELETE). Rows of backends that are gone are
//!   folded into shard 0 by the dead-set purge ([`PgStore::purge_dead`]), so the tables stay
//!   as small as the number of connections.
//! * **Churn**: every job is inserted, updated a few times and deleted. Most transitions change
//!   an indexed column (`state`, `score`), so they are not HOT updates and the main defence is
//!   vacuuming early and often: `jobs` has `autovacuum_vacuum_scale_factor = 0.005` plus a
//!   fixed threshold of 2000 dead rows (the live set of a queue table is small while its
//!   turnover is huge, so a proportional trigger alone would wait far too long), the insert
//!   trigger likewise (so the visibility map stays current for index-only counts), and no cost
//!   delay. `fillfactor = 80` leaves room on each page for the updates that are HOT (payload,
//!   `wid`) and keeps new versions near the old. The small hot tables (`counters`, `history`)
//!   have `fillfactor = 50` (their updates touch no indexed column, so they are HOT and stay on
//!   their page) and vacuum after 1000 dead rows. To be measured after 10 million jobs.
//! * **Other tables**: `queues (name, paused)` — a queue is known once something was enqueued
//!   to it (`INSERT … ON CONFLICT DO NOTHING`, which takes no lock on an existing row);
//!   `unique_locks (key, jid, until)`, taken with an upsert that only overwrites an expired lock,
//!   so two nodes pushing the same identity produce one winner; `cron_fires`, `batches`,
//!   `tracking` as in the embedded store (created now, used by the remaining methods).
//! * NOTIFY is kept out of write transactions (it takes a global lock at commit): the
//!   [`werk_store::EnqueueListener`] is told after COMMIT; the cross-node wake-up (a debounced
//!   NOTIFY from outside the transaction, plus polling as the fallback) is still to come.
//!
//! # What is implemented
//!
//! * `push`: scheduled vs enqueued, the retried-push rule, duplicate jid, unique locks (taken
//!   in the push's commit, `NotUnique` while another job holds an unexpired lock, a retried
//!   push not refused because of its own lock). A job that joins a batch (`custom.bid`) is
//!   refused with `NoSuchBatch` unless the batch is live, checked first.
//! * `fetch`: queues in the given order, FIFO, paused queues skipped, `SKIP LOCKED`, expired
//!   jobs dropped and counted, `unique_until = "start"` locks released, a job whose JSON does
//!   not parse moved to the dead set.
//! * `ack` (any state but scheduled; `Acked` / `AckedLate` / `NotWorking`), `fail` (through
//!   [`werk_core::retry::apply_failure_with`], with the time scale), `promote_due`,
//!   `reap_expired` (both `SKIP LOCKED`, so every node may run them), `get`, `stats`.
//! * Cron fire records, batches (accounting and callbacks in the transitions' transactions,
//!   under the batch row's lock), tracking and throttles (an advisory lock per throttled
//!   queue): see the `ent` module's documentation.
//!
//! # What remains (issue 12)
//!
//! Sharing round trips and commits between a node's concurrent FETCHes and PUSHes (one
//! statement for several waiting FETCHes or PUSHes, as the embedded writer shares one commit;
//! ACKs already share them, see the `batch_ack` module), and the
//! measurement of table bloat and COUNTed sizes after 10 million jobs. See docs/ha.md and
//! docs/performance.md for the figures.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rand::Rng;
use tokio_postgres::error::SqlState;
use werk_core::job::reservation_seconds;
use werk_core::retry::apply_failure_with;
use werk_core::time::{format_stamp, local_day};
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, FailReply, Listener, NewJob, QueueStats, Reservation, Stats, StoreConfig,
    StoreError, StoredJob,
};

mod batch_ack;
mod batch_fetch;
mod batch_push;
mod ent;
mod lanes;
mod notify;
mod ops;
mod retry;
pub mod schema;
mod store_impl;
mod tls;
mod workers;

pub use batch_ack::{ACK_BATCH_MAX, ACK_LANES};
pub use batch_fetch::{FETCH_BATCH_MAX, FETCH_LANES};
pub use batch_push::{PUSH_BATCH_MAX, PUSH_LANES};
pub use deadpool_postgres::Transaction;

/// Why [`PgStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection string or URI does not parse.
    #[error("invalid database URL: {}", tls::error_chain(.0))]
    Url(tokio_postgres::Error),
    /// A TLS setting of the URL cannot be used: a certificate or key file cannot be read or
    /// holds nothing usable, a value is invalid, or the setting is not supported (see
    /// "Connecting" in the crate documentation).
    #[error("database TLS settings: {0}")]
    Tls(String),
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("cannot create or migrate the schema: {0}")]
    Schema(tokio_postgres::Error),
    /// The database was migrated by a newer werk.
    #[error(
        "the database schema is version {found}, newer than this werk supports ({supported}): \
         upgrade werk (a database is never migrated backwards)"
    )]
    SchemaTooNew { found: i64, supported: i64 },
}

/// The shared PostgreSQL store. Cheap to share (`Arc` it); every method takes a pooled
/// connection for the length of one transaction.
pub struct PgStore {
    pool: Pool,
    config: StoreConfig,
    /// [`notify::Wake`]: wakes this node's FETCHes and announces to the other nodes.
    listener: Listener,
    wake: Arc<notify::Wake>,
    /// The throttles FETCH obeys ([`werk_store::Store::set_throttles`]): per node, not stored.
    throttles: Arc<std::sync::Mutex<Vec<werk_store::Throttle>>>,
    /// This node's id in the shared worker registry (the `workers` module).
    worker_node: String,
    /// This node's ACK combiner (the `batch_ack` module).
    acks: lanes::Lanes<batch_ack::Pending>,
    /// This node's PUSH combiner for plain jobs (the `batch_push` module).
    pushes: lanes::Lanes<batch_push::Pending>,
    /// This node's FETCH combiner for unthrottled queues (the `batch_fetch` module).
    fetches: lanes::Lanes<batch_fetch::Pending>,
}

type Result<T> = std::result::Result<T, StoreError>;

/// A driver error as a store error. Nothing of the transaction was applied.
fn pg(e: tokio_postgres::Error) -> StoreError {
    let text = describe_error(&e);
    match e.code() {
        Some(c) if *c == SqlState::DISK_FULL || *c == SqlState::OUT_OF_MEMORY => {
            StoreError::Full(text)
        }
        _ => StoreError::Backend(text),
    }
}

/// The server's message (severity, SQLSTATE, text) when there is one; `Display` of a
/// [`tokio_postgres::Error`] only says `db error`.
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Commits; a COMMIT without a server answer (the connection broke while it was in flight)
/// has an unknown outcome and is an error all the same.
async fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().await.map_err(|e| {
        if e.code().is_none() {
            StoreError::Backend(format!(
                "COMMIT outcome unknown (the connection failed during COMMIT): {e}"
            ))
        } else {
            pg(e)
        }
    })
}

/// The `uniq` column: the lock key, prefixed `start:` or `success:` by when it is released
/// (the embedded store's format).
fn uniq_column(u: &werk_core::job::Uniqueness) -> String {
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

fn code(s: JobState) -> i16 {
    s.code() as i16
}

fn state_of(code: i16) -> JobState {
    JobState::from_code(i64::from(code)).unwrap_or(JobState::Dead)
}

/// Whether a job's push is a plain insert ([`PgStore::push_plain`]): not a batch member, not
/// tracked, no unique lock to take.
fn plain(j: &NewJob, now: Millis) -> bool {
    let scheduled_at = j.at.filter(|&at| at > now);
    !j.job.tracked()
        && j.job.batch_id().ok().flatten().is_none()
        && j.job.uniqueness(now, scheduled_at).ok().flatten().is_none()
}

/// A job a FETCH reserved for `wid` at `now` until `until`.
fn reserved_job(
    jid: String,
    queue: &str,
    jobtype: String,
    payload: String,
    (now, until): (Millis, Millis),
    wid: &str,
) -> StoredJob {
    StoredJob {
        jid,
        state: JobState::Working,
        queue: queue.to_string(),
        jobtype,
        payload,
        at: until,
        reservation: Some(Reservation {
            reserved_at: now,
            expires_at: until,
            wid: wid.to_string(),
        }),
    }
}

/// Columns read into a [`StoredJob`] by [`stored`].
const STORED: &str = "jid, state, queue, jobtype, ts, reserved_at, wid, payload";

fn stored(r: &tokio_postgres::Row) -> StoredJob {
    let state = state_of(r.get(1));
    let ts: i64 = r.get(4);
    let reserved_at: Option<i64> = r.get(5);
    let wid: Option<String> = r.get(6);
    StoredJob {
        jid: r.get(0),
        state,
        queue: r.get(2),
        jobtype: r.get(3),
        at: ts,
        reservation: match (state, reserved_at) {
            (JobState::Working, Some(reserved_at)) => Some(Reservation {
                reserved_at,
                expires_at: ts,
                wid: wid.unwrap_or_default(),
            }),
            _ => None,
        },
        payload: r.get(7),
    }
}

/// A row a transition acts on.
struct Row {
    id: i64,
    queue: String,
    payload: String,
}

const ROW: &str = "id, queue, payload";

fn row(r: &tokio_postgres::Row) -> Row {
    Row {
        id: r.get(0),
        queue: r.get(1),
        payload: r.get(2),
    }
}

/// Database connections per node (plus one for LISTEN): transactions in flight at once; a
/// request that finds them all busy waits for one.
pub const POOL_SIZE: usize = 16;

/// How long opening a connection (or checking a pooled one) may take before the request gets
/// an error instead of waiting: a database that does not answer must not hang clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings that let a node notice a dead or unreachable database in seconds rather than the
/// operating system's minutes, unless the URL chose its own: `connect_timeout`, TCP keepalives
/// after 5 s idle, and `tcp_user_timeout` (unacknowledged data for 10 s breaks the connection,
/// so a statement sent to a primary that vanished from the network fails instead of hanging).
fn failure_detection_defaults(c: &mut tokio_postgres::Config) {
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    if c.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        c.keepalives_idle(Duration::from_secs(5));
    }
    if c.get_tcp_user_timeout().is_none() {
        c.tcp_user_timeout(Duration::from_secs(10));
    }
}

impl PgStore {
    /// Connects to `url` (a libpq connection string or URI), makes sure one connection works,
    /// and creates or migrates the schema (safe when several nodes start at once).
    pub async fn connect(
        url: &str,
        config: StoreConfig,
        listener: Listener,
    ) -> std::result::Result<PgStore, ConnectError> {
        let (mut pg_config, connector) = tls::parse_url(url)?;
        failure_detection_defaults(&mut pg_config);
        let (listen_config, listen_tls) = (pg_config.clone(), connector.clone());
        let manager = Manager::from_config(
            pg_config,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(
                            "SET synchronous_commit = on;
                             SET default_transaction_isolation = 'read committed';
                             SET client_min_messages = warning",
                        )
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| ConnectError::Pool(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| ConnectError::Connect(tls::error_chain(&e)))?;
        schema::migrate(&mut client).await?;
        drop(client);
        let wake = notify::Wake::new(listener);
        tokio::spawn(notify::announce(Arc::downgrade(&wake), pool.clone()));
        tokio::spawn(notify::listen(
            Arc::downgrade(&wake),
            listen_config,
            listen_tls,
        ));
        let mut store = PgStore {
            pool,
            config,
            listener: wake.clone(),
            wake,
            throttles: Default::default(),
            worker_node: workers::new_node_id(),
            acks: lanes::Lanes::direct(),
            pushes: lanes::Lanes::direct(),
            fetches: lanes::Lanes::direct(),
        };
        store.start_ack_lanes();
        store.start_push_lanes();
        store.start_fetch_lanes();
        Ok(store)
    }

    /// See [`werk_store::Store::wake_poll_interval`]: `None` while this node listens for the
    /// other nodes' enqueues, a short interval while that connection is down.
    pub fn wake_poll_interval(&self) -> Option<Duration> {
        self.wake.poll_interval()
    }

    /// Whether this node hears other nodes' enqueues right now (its `LISTEN` connection is up).
    pub fn is_listening(&self) -> bool {
        self.wake.is_listening()
    }

    /// One round trip on a pooled connection, within [`CONNECT_TIMEOUT`]: `Err` when the
    /// database cannot serve (unreachable, refusing connections, or read-only after a
    /// failover left this node connected to a standby).
    pub async fn health(&self) -> Result<()> {
        let check = async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(pg)?;
            if row.get::<_, bool>(0) {
                return Err(StoreError::Backend(
                    "the database is a read-only standby".to_string(),
                ));
            }
            Ok(())
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, check).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Backend(format!(
                "the database did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The connection pool (tests and tools read the database through it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pooled connection. Taken on a task of its own: a request dropped half-way (its client
    /// went away) must not drop a connection the pool is still opening — that discarded a
    /// fully opened connection and opened another, so under thousands of cut-off requests a
    /// node held up to 51 connections (pool 16) before this.
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        use deadpool_postgres::PoolError;
        let pool = self.pool.clone();
        let got = tokio::spawn(async move { pool.get().await })
            .await
            .map_err(|_| StoreError::Closed)?;
        got.map_err(|e| match e {
            PoolError::Backend(e) => pg(e),
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Backend(other.to_string()),
        })
    }

    // ---- bookkeeping ------------------------------------------------------------------------

    /// Adds to a sharded counter (see the crate documentation).
    async fn add_counter(tx: &Transaction<'_>, name: &str, delta: i64) -> Result<()> {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO counters (name, shard, value)
                 VALUES ($1, pg_backend_pid(), $2)
                 ON CONFLICT (name, shard) DO UPDATE SET value = counters.value + excluded.value",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&name, &delta]).await.map_err(pg)?;
        Ok(())
    }

    /// Counts one processed job (ACK or failure) in the totals and today's history, in one
    /// statement.
    async fn count_processed(tx: &Transaction<'_>, now: Millis, failed: bool) -> Result<()> {
        let stmt = tx
            .prepare_cached(
                "WITH c AS (
                     INSERT INTO counters (name, shard, value)
                     SELECT v.name, pg_backend_pid(), v.value
                     FROM (VALUES ('processed', 1::bigint), ('failures', $2::bigint)) v(name, value)
                     WHERE v.value <> 0
                     ON CONFLICT (name, shard)
                     DO UPDATE SET value = counters.value + excluded.value
                 )
                 INSERT INTO history (day, shard, processed, failures)
                 VALUES ($1, pg_backend_pid(), 1, $2)
                 ON CONFLICT (day, shard) DO UPDATE
                 SET processed = history.processed + 1, failures = history.failures + $2",
            )
            .await
            .map_err(pg)?;
        let failures: i64 = failed.into();
        tx.execute(&stmt, &[&local_day(now), &failures])
            .await
            .map_err(pg)?;
        Ok(())
    }

    /// Makes a queue known (no lock is taken when it already is).
    async fn touch_queue(tx: &Transaction<'_>, queue: &str) -> Result<()> {
        let stmt = tx
            .prepare_cached("INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&queue]).await.map_err(pg)?;
        Ok(())
    }

    /// Frees a unique-job lock if `jid` still holds it.
    async fn release_lock(tx: &Transaction<'_>, key: &str, jid: &str) -> Result<()> {
        let stmt = tx
            .prepare_cached("DELETE FROM unique_locks WHERE key = $1 AND jid = $2")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&key, &jid]).await.map_err(pg)?;
        Ok(())
    }

    /// A stored job whose JSON no longer parses is moved, untouched, to the dead set, so it
    /// cannot block its queue, the scheduler or the reaper (as the embedded store does).
    async fn quarantine(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        from: JobState,
        now: Millis,
        why: &str,
    ) -> Result<()> {
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
        let stmt = tx
            .prepare_cached(
                "UPDATE jobs SET state = 4, score = $2, ts = $2, reserved_at = NULL, wid = NULL
                 WHERE id = $1",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&row.id, &until]).await.map_err(pg)?;
        Ok(())
    }

    /// Moves a locked row onto its queue's tail with a fresh `enqueued_at`. Returns whether
    /// it was enqueued (a damaged row is quarantined instead).
    async fn enqueue_row(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        from: JobState,
        now: Millis,
    ) -> Result<bool> {
        let mut job = match Job::from_stored(&row.payload) {
            Ok(job) => job,
            Err(e) => {
                self.quarantine(tx, row, from, now, &e.to_string()).await?;
                return Ok(false);
            }
        };
        job.enqueued_at = format_stamp(now);
        let stmt = tx
            .prepare_cached(
                "UPDATE jobs SET state = 1, score = nextval('werk_enqueue_seq'), ts = $2,
                 reserved_at = NULL, wid = NULL, payload = $3 WHERE id = $1",
            )
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&row.id, &now, &job.to_json()])
            .await
            .map_err(pg)?;
        Self::touch_queue(tx, &row.queue).await?;
        Ok(true)
    }

    // ---- transitions ------------------------------------------------------------------------

    /// [`werk_store::Store::push`]: one transaction for all the jobs; one result per job.
    pub async fn push(
        &self,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        if jobs.iter().all(|j| plain(j, now)) {
            return self.push_batched(jobs, now).await;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut woken = BTreeSet::new();
        let results = self.push_in(&tx, jobs, now, None, &mut woken).await?;
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(results)
    }

    /// Inserts [`plain`] jobs, each pushed at its own `now`, in one statement (its own
    /// transaction) that also makes their queues known: one round trip and one commit, where
    /// [`PgStore::push_in`]'s transaction takes four for a single job. Returns for each job
    /// whether it was inserted; one whose jid is taken (stored before, or earlier in `jobs`)
    /// is not, and is left to [`PgStore::push_in`]. Sets the jobs' `enqueued_at` and tells
    /// the listener about the queues that got jobs.
    async fn insert_plain(
        &self,
        client: &deadpool_postgres::Object,
        jobs: &mut [(NewJob, Millis)],
    ) -> std::result::Result<Vec<bool>, tokio_postgres::Error> {
        let insert = client
            .prepare_cached(
                "WITH stored AS (
                     INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload, expires,
                                       reserve_ms)
                     SELECT jid, state,  queue, jobtype,
                            CASE WHEN state = 1 THEN nextval('werk_enqueue_seq') ELSE at END,
                            ts, payload, expires, reserve_ms
                     FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[],
                                 $5::bigint[], $6::bigint[], $7::text[], $8::bigint[],
                                 $9::bigint[])
                          AS u(jid, state, queue, jobtype, at, ts, payload, expires, reserve_ms)
                     ON CONFLICT (jid) DO NOTHING
                     RETURNING jid, state, queue),
                 known AS (
                     INSERT INTO queues (name)
                     SELECT DISTINCT queue FROM stored WHERE state = 1 ORDER BY queue
                     ON CONFLICT DO NOTHING)
                 SELECT jid FROM stored",
            )
            .await?;
        let n = jobs.len();
        let (mut jid, mut state, mut queue, mut jobtype) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut at, mut ts, mut payload, mut expires, mut reserve) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (NewJob { job, at: when }, now) in jobs.iter_mut() {
            let now = *now;
            let scheduled_at = when.filter(|&at| at > now);
            if scheduled_at.is_none() {
                job.enqueued_at = format_stamp(now);
            }
            let (s, score, stamp) = match scheduled_at {
                Some(at) => (JobState::Scheduled, at, at),
                None => (JobState::Enqueued, 0, now),
            };
            jid.push(job.jid.as_str());
            state.push(code(s));
            queue.push(job.queue.as_str());
            jobtype.push(job.jobtype.as_str());
            at.push(score);
            ts.push(stamp);
            payload.push(job.to_json());
            expires.push(job.expiry(now).ok().flatten());
            reserve.push(self.reservation_ms(job.reserve_for));
        }
        let rows = client
            .query(
                &insert,
                &[
                    &jid, &state, &queue, &jobtype, &at, &ts, &payload, &expires, &reserve,
                ],
            )
            .await?;
        let mut inserted: HashSet<&str> = rows.iter().map(|r| r.get(0)).collect();
        let mut woken = BTreeSet::new();
        let mut done = Vec::with_capacity(n);
        for (i, (job, _)) in jobs.iter().enumerate() {
            // A jid twice: the first one is the one inserted.
            let yes = inserted.remove(job.job.jid.as_str());
            if yes && state[i] == code(JobState::Enqueued) {
                woken.insert(job.job.queue.as_str());
            }
            done.push(yes);
        }
        for queue in woken {
            self.listener.enqueued(queue);
        }
        Ok(done)
    }

    /// [`PgStore::push`] of [`plain`] jobs by one request, on `client`: [`PgStore::insert_plain`]
    /// and, for the jobs whose jid was taken, [`PgStore::push_in`] (a retried push is OK,
    /// anything else a duplicate).
    pub(crate) async fn push_plain(
        &self,
        client: &mut deadpool_postgres::Object,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        let mut jobs: Vec<(NewJob, Millis)> = jobs.into_iter().map(|j| (j, now)).collect();
        let inserted = self.insert_plain(client, &mut jobs).await.map_err(pg)?;
        self.push_taken(client, jobs, &inserted, now).await
    }

    /// The answers to one request's plain push once [`PgStore::insert_plain`] has run:
    /// inserted jobs are OK; the others go through [`PgStore::push_in`] in one transaction.
    pub(crate) async fn push_taken(
        &self,
        client: &mut deadpool_postgres::Object,
        jobs: Vec<(NewJob, Millis)>,
        inserted: &[bool],
        now: Millis,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        let mut results: Vec<Option<std::result::Result<(), PushError>>> =
            inserted.iter().map(|&yes| yes.then_some(Ok(()))).collect();
        let (slots, rest): (Vec<usize>, Vec<NewJob>) = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !inserted[*i])
            .map(|(i, (job, _))| (i, job))
            .unzip();
        if !rest.is_empty() {
            let tx = client.transaction().await.map_err(pg)?;
            let mut woken = BTreeSet::new();
            let answers = self.push_in(&tx, rest, now, None, &mut woken).await?;
            commit(tx).await?;
            for queue in &woken {
                self.listener.enqueued(queue);
            }
            for (slot, answer) in slots.into_iter().zip(answers) {
                results[slot] = Some(answer);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every job answered"))
            .collect())
    }

    /// [`PgStore::push`] inside `tx`, adding the queues to wake after commit to `woken`.
    /// `callback`: the `batch` column of a batch callback job (`c:<bid>` / `s:<bid>`), which
    /// joins no batch whatever its `custom.bid`.
    async fn push_in(
        &self,
        tx: &Transaction<'_>,
        jobs: Vec<NewJob>,
        now: Millis,
        callback: Option<&str>,
        woken: &mut BTreeSet<String>,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        let insert = tx
            .prepare_cached(
                "INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload, expires, uniq,
                                   batch, track, reserve_ms)
                 VALUES ($1, $2::smallint, $3, $4,
                         CASE WHEN $2::smallint = 1 THEN nextval('werk_enqueue_seq') ELSE $5 END,
                         $6, $7, $8, $9, $11, $10, $12)
                 ON CONFLICT (jid) DO NOTHING
                 RETURNING id",
            )
            .await
            .map_err(pg)?;
        let mut results = Vec::with_capacity(jobs.len());
        for NewJob { mut job, at } in jobs {
            let scheduled_at = at.filter(|&at| at > now);
            if scheduled_at.is_none() {
                job.enqueued_at = format_stamp(now);
            }
            let payload = job.to_json();
            // Validated at push; a job that slipped through unvalidated simply never expires
            // and takes no lock.
            let expires = job.expiry(now).ok().flatten();
            let uniq = job.uniqueness(now, scheduled_at).ok().flatten();
            let member = match callback {
                Some(_) => None,
                None => job.batch_id().ok().flatten(),
            };
            if let Some(bid) = &member {
                // Checked before the duplicate jid and uniqueness; the batch row stays locked
                // until commit, so a racing COMMIT counts this member. A retried push of a
                // stored member is still answered OK.
                if !self.batch_accepts(tx, bid, now).await? {
                    let retried = matches!(self.stored_under_jid(tx, &job).await?, Some((true, _)));
                    results.push(match retried {
                        true => Ok(()),
                        false => Err(PushError::NoSuchBatch(bid.clone())),
                    });
                    continue;
                }
            }
            let batch_column = match (callback, &member) {
                (Some(role), _) => Some(role.to_string()),
                (None, Some(bid)) => Some(format!("m:{bid}")),
                (None, None) => None,
            };
            let (state, score, ts) = match scheduled_at {
                Some(at) => (JobState::Scheduled, at, at),
                None => (JobState::Enqueued, 0, now),
            };
            let row = tx
                .query_opt(
                    &insert,
                    &[
                        &job.jid,
                        &code(state),
                        &job.queue,
                        &job.jobtype,
                        &score,
                        &ts,
                        &payload,
                        &expires,
                        &uniq.as_ref().map(uniq_column),
                        &job.tracked(),
                        &batch_column,
                        &self.reservation_ms(job.reserve_for),
                    ],
                )
                .await
                .map_err(pg)?;
            let Some(row) = row else {
                // The jid is taken (a duplicate is reported before uniqueness, as the
                // reference store does). A retry of the push that stored it is answered OK.
                results.push(match self.stored_under_jid(tx, &job).await? {
                    Some((true, _)) => Ok(()),
                    other => Err(PushError::DuplicateJid(
                        job.jid.clone(),
                        describe(other.and_then(|(_, state)| state)).to_string(),
                    )),
                });
                continue;
            };
            let id: i64 = row.get(0);
            if let Some(u) = &uniq {
                // Takes the lock unless another job holds it unexpired; the row is locked
                // either way, so racing pushes of one identity on several nodes queue here.
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO unique_locks AS l (key, jid, until) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET jid = excluded.jid, until = excluded.until
                         WHERE l.until <= $4
                         RETURNING jid",
                    )
                    .await
                    .map_err(pg)?;
                let taken = tx
                    .query_opt(&stmt, &[&u.key, &job.jid, &u.until, &now])
                    .await
                    .map_err(pg)?
                    .is_some();
                if !taken {
                    // Held, unexpired (and now locked by this transaction): not stored. The
                    // lock this very jid took (a retried push of a job already fetched or
                    // removed) is no reason to refuse it: answered OK, nothing changes.
                    let stmt = tx
                        .prepare_cached("SELECT jid FROM unique_locks WHERE key = $1")
                        .await
                        .map_err(pg)?;
                    let holder: Option<String> = tx
                        .query_opt(&stmt, &[&u.key])
                        .await
                        .map_err(pg)?
                        .map(|r| r.get(0));
                    let stmt = tx
                        .prepare_cached("DELETE FROM jobs WHERE id = $1")
                        .await
                        .map_err(pg)?;
                    tx.execute(&stmt, &[&id]).await.map_err(pg)?;
                    results.push(match holder.as_deref() == Some(job.jid.as_str()) {
                        true => Ok(()),
                        false => Err(PushError::NotUnique),
                    });
                    continue;
                }
            }
            self.pushed(tx, &job, member.as_deref(), now).await?;
            if state == JobState::Enqueued {
                Self::touch_queue(tx, &job.queue).await?;
                woken.insert(job.queue.clone());
            }
            results.push(Ok(()));
        }
        Ok(results)
    }

    /// The job stored under `job.jid`, if any: whether `job` is a retry of its push
    /// ([`Job::is_retried_push_of`]) and its state.
    async fn stored_under_jid(
        &self,
        tx: &Transaction<'_>,
        job: &Job,
    ) -> Result<Option<(bool, Option<JobState>)>> {
        let stmt = tx
            .prepare_cached("SELECT state, payload FROM jobs WHERE jid = $1")
            .await
            .map_err(pg)?;
        let row = tx.query_opt(&stmt, &[&job.jid]).await.map_err(pg)?;
        Ok(row.map(|r| {
            let payload: String = r.get(1);
            let same = Job::from_stored(&payload).is_ok_and(|old| job.is_retried_push_of(&old));
            (same, JobState::from_code(i64::from(r.get::<_, i16>(0))))
        }))
    }

    /// [`werk_store::Store::fetch`]. Unless a queue asked for is throttled, each queue is tried
    /// with one statement that reserves its head in its own (implicit) transaction: one round
    /// trip and one commit for a FETCH, where the transaction of [`PgStore::fetch_in_tx`] takes
    /// four. The statement also releases a `start:` unique lock and marks a tracked job
    /// started, as that transaction does, so the step stays one atomic commit. It leaves the
    /// rarer cases to the transaction: a head that has expired (dropped there, with its batch
    /// and tracking consequences), and a throttled queue. A head whose payload no longer
    /// parses is reserved, then quarantined by a second transaction (a crash in between leaves
    /// it reserved; the reaper puts it back and the next FETCH quarantines it).
    pub async fn fetch(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>> {
        if queues.iter().any(|q| self.throttle_of(q).is_some()) {
            let mut client = self.client().await?;
            return self.fetch_in_tx(&mut client, &queues, wid, now).await;
        }
        self.fetch_batched(queues, wid, now).await
    }

    /// One FETCH of unthrottled queues on `client`, by the one-statement reservation of
    /// [`PgStore::fetch`] (what a batch of one runs).
    pub(crate) async fn fetch_one(
        &self,
        client: &mut deadpool_postgres::Object,
        queues: &[String],
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>> {
        let default_ms = self.reservation_ms(0);
        let head = client
            .prepare_cached(
                "WITH head AS (
                     SELECT id, expires FROM jobs
                     WHERE state = 1 AND queue = $1
                       AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused)
                     ORDER BY score LIMIT 1
                     FOR UPDATE OF jobs SKIP LOCKED),
                 reserved AS (
                     UPDATE jobs j SET state = 2,
                         score = $2 + COALESCE(j.reserve_ms, $3),
                         ts = $2 + COALESCE(j.reserve_ms, $3),
                         reserved_at = $2, wid = $4
                     FROM head
                     WHERE j.id = head.id AND (head.expires IS NULL OR head.expires > $2)
                     RETURNING j.id, j.jid, j.jobtype, j.payload, j.score, j.uniq, j.track),
                 unlocked AS (
                     DELETE FROM unique_locks l USING reserved r
                     WHERE r.uniq LIKE 'start:%' AND l.key = substr(r.uniq, 7) AND l.jid = r.jid),
                 started AS (
                     UPDATE tracking t SET updated_at = $2, final = NULL
                     FROM reserved r WHERE r.track AND t.jid = r.jid)
                 SELECT head.id, r.jid, r.jobtype, r.payload, r.score
                 FROM head LEFT JOIN reserved r ON r.id = head.id",
            )
            .await
            .map_err(pg)?;
        for (i, name) in queues.iter().enumerate() {
            loop {
                let Some(r) = client
                    .query_opt(&head, &[name, &now, &default_ms, &wid])
                    .await
                    .map_err(pg)?
                else {
                    break;
                };
                let id: i64 = r.get(0);
                let Some(jid) = r.get::<_, Option<String>>(1) else {
                    // The head has expired: the transaction drops it (and whatever follows).
                    return self.fetch_in_tx(client, &queues[i..], wid, now).await;
                };
                let payload: String = r.get(3);
                let Some(job) = self
                    .parse_reserved(
                        client,
                        Row {
                            id,
                            queue: name.clone(),
                            payload: payload.clone(),
                        },
                        now,
                    )
                    .await?
                else {
                    continue;
                };
                let until = self
                    .correct_reservation(client, id, r.get(4), now, &wid, &job)
                    .await;
                return Ok(Some(reserved_job(
                    jid,
                    name,
                    r.get(2),
                    payload,
                    (now, until),
                    &wid,
                )));
            }
        }
        Ok(None)
    }

    /// The job a one-statement FETCH reserved (`row`), or `None` when its payload does not
    /// parse: then it is quarantined, in a transaction of its own.
    pub(crate) async fn parse_reserved(
        &self,
        client: &mut deadpool_postgres::Object,
        row: Row,
        now: Millis,
    ) -> Result<Option<Job>> {
        match Job::from_stored(&row.payload) {
            Ok(job) => Ok(Some(job)),
            Err(e) => {
                let tx = client.transaction().await.map_err(pg)?;
                self.quarantine(&tx, &row, JobState::Working, now, &e.to_string())
                    .await?;
                commit(tx).await?;
                Ok(None)
            }
        }
    }

    /// The end of the reservation a one-statement FETCH gave `job` (row `id`) at `now`:
    /// `until`, unless the job was stored before `reserve_ms` existed (or by a node with
    /// another time scale) and so was reserved for the default; that is corrected here from
    /// its payload. A crash in between leaves the default reservation, never a lost job; so
    /// does a failed correction (logged): the job is still delivered, with the reservation it
    /// has.
    pub(crate) async fn correct_reservation(
        &self,
        client: &deadpool_postgres::Object,
        id: i64,
        until: i64,
        now: Millis,
        wid: &str,
        job: &Job,
    ) -> i64 {
        let wanted = now.saturating_add(self.reservation_ms(job.reserve_for));
        if until == wanted {
            return until;
        }
        let fixed = async {
            let fix = client
                .prepare_cached(
                    "UPDATE jobs SET score = $2, ts = $2, reserve_ms = $3
                     WHERE id = $1 AND state = 2 AND reserved_at = $4 AND wid = $5",
                )
                .await?;
            client
                .execute(&fix, &[&id, &wanted, &(wanted - now), &now, &wid])
                .await
        };
        match fixed.await {
            Ok(_) => wanted,
            Err(e) => {
                tracing::warn!(jid = %job.jid, error = %pg(e), "could not correct a job's reservation; it keeps the default");
                until
            }
        }
    }

    /// How long a FETCH reserves a job whose `reserve_for` is `reserve_for`, in (scaled)
    /// milliseconds: the `reserve_ms` column.
    fn reservation_ms(&self, reserve_for: i64) -> i64 {
        self.config.scaled(reservation_seconds(reserve_for) * 1000)
    }

    /// [`PgStore::fetch`] as one transaction: the queues in order, throttles obeyed, expired
    /// heads dropped.
    async fn fetch_in_tx(
        &self,
        client: &mut deadpool_postgres::Object,
        queues: &[String],
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>> {
        let tx = client.transaction().await.map_err(pg)?;
        let head = tx
            .prepare_cached(
                "SELECT id, jid, jobtype, payload, expires, uniq, batch, track FROM jobs
                 WHERE state = 1 AND queue = $1
                   AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused)
                 ORDER BY score LIMIT 1
                 FOR UPDATE OF jobs SKIP LOCKED",
            )
            .await
            .map_err(pg)?;
        let mut found = None;
        let mut woken = BTreeSet::new();
        'queues: for name in queues {
            // A throttled queue at its limit counts as empty.
            if self.throttled(&tx, name, &wid, now).await? {
                continue;
            }
            loop {
                let Some(r) = tx.query_opt(&head, &[name]).await.map_err(pg)? else {
                    break;
                };
                let id: i64 = r.get(0);
                let jid: String = r.get(1);
                let jobtype: String = r.get(2);
                let payload: String = r.get(3);
                let expires: Option<i64> = r.get(4);
                let uniq: Option<String> = r.get(5);
                let batch: Option<String> = r.get(6);
                let track: bool = r.get(7);
                if expires.is_some_and(|x| x <= now) {
                    let stmt = tx
                        .prepare_cached("DELETE FROM jobs WHERE id = $1")
                        .await
                        .map_err(pg)?;
                    tx.execute(&stmt, &[&id]).await.map_err(pg)?;
                    Self::add_counter(&tx, "expired", 1).await?;
                    self.job_expired(&tx, &jid, batch.as_deref(), track, now, &mut woken)
                        .await?;
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
                        };
                        self.quarantine(&tx, &row, JobState::Enqueued, now, &e.to_string())
                            .await?;
                        continue;
                    }
                };
                let until = now.saturating_add(self.reservation_ms(job.reserve_for));
                let stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = 2, score = $2, ts = $2, reserved_at = $3, wid = $4
                         WHERE id = $1",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&id, &until, &now, &wid])
                    .await
                    .map_err(pg)?;
                if let Some(key) = uniq.as_deref().and_then(|u| u.strip_prefix("start:")) {
                    Self::release_lock(&tx, key, &jid).await?;
                }
                if track {
                    Self::touch_tracking(&tx, &jid, None, now).await?;
                }
                found = Some(reserved_job(
                    jid,
                    name,
                    jobtype,
                    payload,
                    (now, until),
                    &wid,
                ));
                break 'queues;
            }
        }
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(found)
    }

    /// One ACK in a transaction of its own ([`PgStore::ack`] batches them; see the `batch_ack`
    /// module): working → gone; a late ACK takes an enqueued, retry or dead job → gone too;
    /// unknown or scheduled: nothing changes.
    async fn ack_one(&self, jid: String, now: Millis) -> Result<AckOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM jobs WHERE jid = $1 AND state <> 0
                 RETURNING state, uniq, queue, batch, track",
            )
            .await
            .map_err(pg)?;
        let Some(r) = tx.query_opt(&stmt, &[&jid]).await.map_err(pg)? else {
            // Nothing changed: no commit needed (the transaction wrote nothing).
            drop(tx);
            return Ok(AckOutcome::NotWorking);
        };
        let state = state_of(r.get(0));
        let uniq: Option<String> = r.get(1);
        if let Some(u) = uniq {
            Self::release_lock(&tx, lock_key(&u), &jid).await?;
        }
        let mut woken = BTreeSet::new();
        let (queue, batch, track): (String, Option<String>, bool) = (r.get(2), r.get(3), r.get(4));
        self.job_acked(&tx, &jid, &queue, batch.as_deref(), track, now, &mut woken)
            .await?;
        Self::count_processed(&tx, now, false).await?;
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(match state {
            JobState::Working => AckOutcome::Acked,
            other => AckOutcome::AckedLate(other),
        })
    }

    /// [`werk_store::Store::import`]: one transaction; each job inserted in its state unless
    /// its jid is taken.
    pub async fn import(
        &self,
        jobs: Vec<werk_store::ImportedJob>,
        now: Millis,
    ) -> Result<Vec<werk_store::ImportOutcome>> {
        let jobs = werk_store::ImportedJob::prepare(jobs)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO jobs (jid, state, queue, jobtype, score, ts, payload, expires,
                                   reserve_ms)
                 VALUES ($1, $2::smallint, $3, $4,
                         CASE WHEN $2::smallint = 1 THEN nextval('werk_enqueue_seq') ELSE $5 END,
                         $6, $7, $8, $9)
                 ON CONFLICT (jid) DO NOTHING
                 RETURNING 1",
            )
            .await
            .map_err(pg)?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut woken = BTreeSet::new();
        for ij in jobs {
            let state = ij.state;
            let t = werk_store::ImportedJob::set_time(state, ij.at, self.config.dead_retention);
            let mut job = ij.job;
            let ts = if state == JobState::Enqueued {
                job.enqueued_at = format_stamp(now);
                now
            } else {
                t
            };
            let expires = job.expiry(now).ok().flatten();
            let reserve_ms = self.reservation_ms(job.reserve_for);
            let stored = tx
                .query_opt(
                    &insert,
                    &[
                        &job.jid,
                        &code(state),
                        &job.queue,
                        &job.jobtype,
                        &t,
                        &ts,
                        &job.to_json(),
                        &expires,
                        &reserve_ms,
                    ],
                )
                .await
                .map_err(pg)?
                .is_some();
            if !stored {
                out.push(werk_store::ImportOutcome::AlreadyStored);
                continue;
            }
            if state == JobState::Enqueued {
                Self::touch_queue(&tx, &job.queue).await?;
                woken.insert(job.queue.clone());
            }
            out.push(werk_store::ImportOutcome::Stored);
        }
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(out)
    }

    /// [`werk_store::Store::fail`]: working → retry / dead / gone by the retry policy.
    pub async fn fail(&self, jid: String, info: FailInfo, now: Millis) -> Result<FailReply> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT {ROW} FROM jobs WHERE jid = $1 AND state = 2 FOR UPDATE"
            ))
            .await
            .map_err(pg)?;
        let Some(r) = tx.query_opt(&stmt, &[&jid]).await.map_err(pg)? else {
            drop(tx);
            return Ok(FailReply::NotWorking);
        };
        let mut woken = BTreeSet::new();
        let outcome = self.fail_row(&tx, &row(&r), &info, now, &mut woken).await?;
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(FailReply::Failed(outcome))
    }

    /// working → retry / dead / gone for one locked row, counting the failure.
    async fn fail_row(
        &self,
        tx: &Transaction<'_>,
        row: &Row,
        info: &FailInfo,
        now: Millis,
        woken: &mut BTreeSet<String>,
    ) -> Result<FailOutcome> {
        let mut job = match Job::from_stored(&row.payload) {
            Ok(job) => job,
            Err(e) => {
                self.quarantine(tx, row, JobState::Working, now, &e.to_string())
                    .await?;
                Self::count_processed(tx, now, true).await?;
                return Ok(FailOutcome::Dead);
            }
        };
        let r: u32 = rand::rng().random_range(0..=29);
        let config = &self.config;
        let outcome = apply_failure_with(&mut job, info, now, r, |ms| config.scaled(ms));
        let discarded = matches!(outcome, FailOutcome::Discarded);
        self.job_failed(tx, row, &job.jid, discarded, now, woken)
            .await?;
        if !matches!(outcome, FailOutcome::Retry { .. }) {
            // Automatic death (or discard): the job will never succeed; free its identity.
            if let Ok(Some(u)) = job.uniqueness(now, None) {
                Self::release_lock(tx, &u.key, &job.jid).await?;
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
                let stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = $2, score = $3, ts = $3, reserved_at = NULL,
                         wid = NULL, payload = $4 WHERE id = $1",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&row.id, &code(state), &at, &job.to_json()])
                    .await
                    .map_err(pg)?;
            }
            None => {
                let stmt = tx
                    .prepare_cached("DELETE FROM jobs WHERE id = $1")
                    .await
                    .map_err(pg)?;
                tx.execute(&stmt, &[&row.id]).await.map_err(pg)?;
            }
        }
        Self::count_processed(tx, now, true).await?;
        Ok(outcome)
    }

    /// Locks up to `limit` rows of one non-enqueued state whose time is ≤ now, oldest first,
    /// skipping rows another node is moving.
    async fn due(
        tx: &Transaction<'_>,
        state: JobState,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Row>> {
        // The state is a literal so that the planner matches its partial index.
        let sql = format!(
            "SELECT {ROW} FROM jobs WHERE state = {} AND score <= $1
             ORDER BY score, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            code(state)
        );
        let stmt = tx.prepare_cached(&sql).await.map_err(pg)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(tx
            .query(&stmt, &[&now, &limit])
            .await
            .map_err(pg)?
            .iter()
            .map(row)
            .collect())
    }

    /// [`werk_store::Store::promote_due`]: scheduled (`at` ≤ now) and retry (`next_at` ≤ now)
    /// → enqueued, at most `limit`. Every node may run it: rows another node is promoting are
    /// skipped.
    pub async fn promote_due(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut moved = 0;
        let mut woken = BTreeSet::new();
        for state in [JobState::Scheduled, JobState::Retry] {
            if moved >= limit {
                break;
            }
            for row in Self::due(&tx, state, now, limit - moved).await? {
                if self.enqueue_row(&tx, &row, state, now).await? {
                    woken.insert(row.queue.clone());
                }
                moved += 1;
            }
        }
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(moved)
    }

    /// [`werk_store::Store::reap_expired`]: working with `reserved_until` ≤ now → as a FAIL with
    /// `ReservationExpired`, at most `limit`.
    pub async fn reap_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let info = FailInfo::reservation_expired();
        let rows = Self::due(&tx, JobState::Working, now, limit).await?;
        let mut woken = BTreeSet::new();
        for row in &rows {
            self.fail_row(&tx, row, &info, now, &mut woken).await?;
        }
        commit(tx).await?;
        for queue in &woken {
            self.listener.enqueued(queue);
        }
        Ok(rows.len())
    }

    /// [`werk_store::Store::get`]: one job by jid, wherever it is.
    pub async fn get(&self, jid: String) -> Result<Option<StoredJob>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {STORED} FROM jobs WHERE jid = $1"))
            .await
            .map_err(pg)?;
        let row = client.query_opt(&stmt, &[&jid]).await.map_err(pg)?;
        Ok(row.as_ref().map(stored))
    }

    /// [`werk_store::Store::stats`]: sizes counted over the partial indexes, counters summed
    /// over their shards, all from one snapshot.
    pub async fn stats(&self) -> Result<Stats> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let queues = tx
            .query(
                "SELECT q.name, q.paused,
                        (SELECT count(*) FROM jobs j WHERE j.state = 1 AND j.queue = q.name)
                 FROM queues q ORDER BY q.name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg)?;
        let sets = tx
            .query_one(
                "SELECT (SELECT count(*) FROM jobs WHERE state = 0),
                        (SELECT count(*) FROM jobs WHERE state = 2),
                        (SELECT count(*) FROM jobs WHERE state = 3),
                        (SELECT count(*) FROM jobs WHERE state = 4),
                        (SELECT coalesce(sum(value), 0)::bigint FROM counters WHERE name = 'processed'),
                        (SELECT coalesce(sum(value), 0)::bigint FROM counters WHERE name = 'failures'),
                        (SELECT coalesce(sum(value), 0)::bigint FROM counters WHERE name = 'expired')",
                &[],
            )
            .await
            .map_err(pg)?;
        commit(tx).await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Stats {
            queues: queues
                .iter()
                .map(|r| QueueStats {
                    name: r.get(0),
                    paused: r.get(1),
                    size: n(r.get(2)),
                })
                .collect(),
            scheduled: n(sets.get(0)),
            working: n(sets.get(1)),
            retries: n(sets.get(2)),
            dead: n(sets.get(3)),
            processed: n(sets.get(4)),
            failures: n(sets.get(5)),
            expired: n(sets.get(6)),
        })
    }
}
