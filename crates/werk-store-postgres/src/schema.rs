//! The database layout, and its creation / migration at start (see the crate documentation for
//! the reasoning behind each choice).

use tokio_postgres::Client;

use crate::ConnectError;

/// The layout version this build writes. Bumped when the layout changes; a database whose
/// `werk_meta.schema_version` is higher was migrated by a newer werk and is refused.
pub const SCHEMA_VERSION: i64 = 3;

/// The `pg_advisory_xact_lock` key that serialises schema creation and migration between nodes
/// starting at once (an arbitrary constant: ASCII "werkschm").
pub const SCHEMA_LOCK_KEY: i64 = 0x7765_726b_7363_686d;

/// Version 1: everything, created in one transaction.
const V1: &str = "
CREATE SEQUENCE werk_enqueue_seq AS bigint CACHE 1;

CREATE TABLE jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jid         text     NOT NULL UNIQUE,
    state       smallint NOT NULL,
    queue       text     NOT NULL,
    jobtype     text     NOT NULL,
    score       bigint   NOT NULL,
    ts          bigint   NOT NULL,
    reserved_at bigint,
    wid         text,
    payload     text     NOT NULL,
    expires     bigint,
    uniq        text,
    batch       text,
    track       boolean  NOT NULL DEFAULT false
) WITH (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0.005,
    autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_insert_scale_factor = 0.005,
    autovacuum_vacuum_insert_threshold = 2000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);
CREATE INDEX jobs_queue     ON jobs (queue, score) WHERE state = 1;
CREATE INDEX jobs_scheduled ON jobs (score, id)    WHERE state = 0;
CREATE INDEX jobs_working   ON jobs (score, id)    WHERE state = 2;
CREATE INDEX jobs_retry     ON jobs (score, id)    WHERE state = 3;
CREATE INDEX jobs_dead      ON jobs (score, id)    WHERE state = 4;
CREATE INDEX jobs_expiring  ON jobs (expires)      WHERE expires IS NOT NULL AND state = 1;

CREATE TABLE queues (
    name   text    PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);

CREATE TABLE counters (
    name  text   NOT NULL,
    shard int    NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (name, shard)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

CREATE TABLE history (
    day       text   NOT NULL,
    shard     int    NOT NULL,
    processed bigint NOT NULL,
    failures  bigint NOT NULL,
    PRIMARY KEY (day, shard)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
        autovacuum_vacuum_cost_delay = 0);

CREATE TABLE unique_locks (
    key   text   PRIMARY KEY,
    jid   text   NOT NULL,
    until bigint NOT NULL
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
CREATE INDEX unique_locks_until ON unique_locks (until);

CREATE TABLE cron_fires (
    entry    text   PRIMARY KEY,
    tick     bigint NOT NULL,
    jid      text   NOT NULL,
    fired_at bigint NOT NULL
);

CREATE TABLE batches (
    bid               text    PRIMARY KEY,
    parent            text,
    description       text,
    created_at        bigint  NOT NULL,
    created_stamp     text    NOT NULL,
    committed         boolean NOT NULL,
    deadline          bigint,
    total             bigint  NOT NULL,
    pending           bigint  NOT NULL,
    failed            bigint  NOT NULL,
    children          bigint  NOT NULL,
    children_complete bigint  NOT NULL,
    children_success  bigint  NOT NULL,
    complete_job      text,
    success_job       text,
    complete_st       smallint NOT NULL,
    success_st        smallint NOT NULL,
    updated_at        bigint  NOT NULL
) WITH (fillfactor = 70);
CREATE INDEX batches_deadline ON batches (deadline) WHERE deadline IS NOT NULL;
CREATE INDEX batches_updated  ON batches (updated_at);
CREATE INDEX batches_created  ON batches (created_at, bid COLLATE \"C\");

CREATE TABLE tracking (
    jid        text   PRIMARY KEY,
    percent    smallint,
    descr      text,
    updated_at bigint NOT NULL,
    final      text
) WITH (fillfactor = 70);
CREATE INDEX tracking_done ON tracking (updated_at) WHERE final IS NOT NULL;
";

/// Version 2: the cluster-wide worker registry (see the `workers` module).
const V2: &str = "
CREATE TABLE workers (
    wid        text     PRIMARY KEY,
    hostname   text     NOT NULL,
    pid        bigint   NOT NULL,
    labels     text[]   NOT NULL,
    started_at bigint   NOT NULL,
    last_beat  bigint   NOT NULL,
    state      smallint NOT NULL,
    rss_kb     bigint   NOT NULL
) WITH (fillfactor = 50);

CREATE TABLE worker_conns (
    wid  text   NOT NULL REFERENCES workers ON DELETE CASCADE,
    node text   NOT NULL,
    conn bigint NOT NULL,
    PRIMARY KEY (wid, node, conn)
);
CREATE INDEX worker_conns_node ON worker_conns (node);

CREATE TABLE nodes (
    node      text   PRIMARY KEY,
    last_seen bigint NOT NULL
) WITH (fillfactor = 50);
";

/// Version 3: the reservation a FETCH gives a job, in milliseconds, computed by the node that
/// stored the job (`reservation_seconds(reserve_for)`, scaled), so that a FETCH reserves in one
/// statement without parsing the payload first. NULL for jobs stored before version 3: the FETCH
/// then reserves for the default and corrects it from the payload (see `PgStore::fetch`).
const V3: &str = "ALTER TABLE jobs ADD COLUMN reserve_ms bigint;";

/// Creates or migrates the schema in one transaction that holds
/// `pg_advisory_xact_lock(SCHEMA_LOCK_KEY)`: nodes starting at once queue on the lock, the first
/// creates everything, the others then find the version row and change nothing. A database at a
/// newer version than [`SCHEMA_VERSION`] is refused.
pub async fn migrate(client: &mut Client) -> Result<(), ConnectError> {
    let tx = client.transaction().await.map_err(ConnectError::Schema)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .map_err(ConnectError::Schema)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS werk_meta (key text PRIMARY KEY, value bigint NOT NULL)",
    )
    .await
    .map_err(ConnectError::Schema)?;
    let found: Option<i64> = tx
        .query_opt(
            "SELECT value FROM werk_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(ConnectError::Schema)?
        .map(|r| r.get(0));
    let from = match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(ConnectError::SchemaTooNew {
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        Some(v) => v,
        None => {
            tx.batch_execute(V1).await.map_err(ConnectError::Schema)?;
            1
        }
    };
    // Each step starts from the version before it; a node that finds the row already at
    // SCHEMA_VERSION (another node migrated first, under the same lock) changes nothing.
    if from < 2 {
        tx.batch_execute(V2).await.map_err(ConnectError::Schema)?;
    }
    if from < 3 {
        tx.batch_execute(V3).await.map_err(ConnectError::Schema)?;
    }
    if found != Some(SCHEMA_VERSION) {
        tx.execute(
            "INSERT INTO werk_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(ConnectError::Schema)?;
    }
    tx.commit().await.map_err(ConnectError::Schema)
}
