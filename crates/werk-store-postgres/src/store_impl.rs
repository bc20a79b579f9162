//! The [`Store`] trait, delegating to the transitions of [`PgStore`] (each one transaction,
//! answered after its COMMIT). Every request that writes runs again when PostgreSQL aborted
//! it for a deadlock or a serialization failure (the `retry` module); reads never wait for a
//! lock and are not wrapped.

use werk_core::worker::WorkerState;
use werk_core::{FailInfo, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, BatchError, BatchStatus, CronFire, DayStats, FailReply, ImportOutcome, ImportedJob,
    Mutation, NewBatch, NewJob, Page, PageQuery, QueueSelector, Result, Stats, Store, StoredJob,
    Throttle, TrackUpdate, Tracked, WorkerHello, WorkerInfo, WorkerSync,
};

use crate::retry::again;
use crate::PgStore;

impl Store for PgStore {
    async fn push(
        &self,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        again("PUSH", || PgStore::push(self, jobs.clone(), now)).await
    }
    async fn fetch(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>> {
        again("FETCH", || {
            PgStore::fetch(self, queues.clone(), wid.clone(), now)
        })
        .await
    }
    async fn ack(&self, jid: String, now: Millis) -> Result<AckOutcome> {
        again("ACK", || PgStore::ack(self, jid.clone(), now)).await
    }
    async fn fail(&self, jid: String, info: FailInfo, now: Millis) -> Result<FailReply> {
        again("FAIL", || {
            PgStore::fail(self, jid.clone(), info.clone(), now)
        })
        .await
    }
    async fn import(&self, jobs: Vec<ImportedJob>, now: Millis) -> Result<Vec<ImportOutcome>> {
        again("import", || PgStore::import(self, jobs.clone(), now)).await
    }
    async fn promote_due(&self, now: Millis, limit: usize) -> Result<usize> {
        again("promotion", || PgStore::promote_due(self, now, limit)).await
    }
    async fn reap_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        again("reaper", || PgStore::reap_expired(self, now, limit)).await
    }
    async fn sweep_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        again("expiry sweep", || PgStore::sweep_expired(self, now, limit)).await
    }
    async fn purge_dead(&self, now: Millis, limit: usize) -> Result<usize> {
        again("dead purge", || PgStore::purge_dead(self, now, limit)).await
    }
    async fn mutate(&self, m: Mutation, now: Millis) -> Result<u64> {
        again("MUTATE", || PgStore::mutate(self, m.clone(), now)).await
    }
    async fn set_paused(&self, queues: QueueSelector, paused: bool) -> Result<()> {
        again("QUEUE PAUSE/RESUME", || {
            PgStore::set_paused(self, queues.clone(), paused)
        })
        .await
    }
    async fn remove_queues(&self, queues: QueueSelector) -> Result<u64> {
        again("QUEUE REMOVE", || {
            PgStore::remove_queues(self, queues.clone())
        })
        .await
    }
    async fn queue_latency(&self, queues: Vec<String>, now: Millis) -> Result<Vec<f64>> {
        PgStore::queue_latency(self, queues, now).await
    }
    async fn flush(&self) -> Result<()> {
        PgStore::flush(self).await
    }
    async fn stats(&self) -> Result<Stats> {
        PgStore::stats(self).await
    }
    async fn history(&self, days: u32, today: Millis) -> Result<Vec<DayStats>> {
        PgStore::history(self, days, today).await
    }
    async fn get(&self, jid: String) -> Result<Option<StoredJob>> {
        PgStore::get(self, jid).await
    }
    async fn list(
        &self,
        state: JobState,
        queue: Option<String>,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredJob>> {
        PgStore::list(self, state, queue, offset, limit).await
    }
    async fn page(&self, q: PageQuery) -> Result<Page> {
        PgStore::page(self, q).await
    }
    async fn delete_jobs(&self, state: JobState, jids: Vec<String>) -> Result<u64> {
        again("delete", || PgStore::delete_jobs(self, state, jids.clone())).await
    }
    async fn fire_cron(
        &self,
        entry: String,
        tick: Millis,
        job: NewJob,
        now: Millis,
    ) -> Result<CronFire> {
        again("cron fire", || {
            PgStore::fire_cron(self, entry.clone(), tick, job.clone(), now)
        })
        .await
    }
    async fn cron_last_fired(&self, entries: Vec<String>) -> Result<Vec<Option<Millis>>> {
        PgStore::cron_last_fired(self, entries).await
    }
    async fn batch_new(
        &self,
        batch: NewBatch,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        again("BATCH NEW", || PgStore::batch_new(self, batch.clone(), now)).await
    }
    async fn batch_open(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        again("BATCH OPEN", || PgStore::batch_open(self, bid.clone(), now)).await
    }
    async fn batch_commit(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        again("BATCH COMMIT", || {
            PgStore::batch_commit(self, bid.clone(), now)
        })
        .await
    }
    async fn batch_status(&self, bid: String, now: Millis) -> Result<Option<BatchStatus>> {
        PgStore::batch_status(self, bid, now).await
    }
    async fn list_batches(
        &self,
        after: Option<(Millis, String)>,
        limit: u64,
        now: Millis,
    ) -> Result<Vec<BatchStatus>> {
        PgStore::list_batches(self, after, limit, now).await
    }
    async fn track_set(&self, update: TrackUpdate, now: Millis) -> Result<bool> {
        again("TRACK SET", || {
            PgStore::track_set(self, update.clone(), now)
        })
        .await
    }
    async fn track_get(&self, jid: String, now: Millis) -> Result<Option<Tracked>> {
        PgStore::track_get(self, jid, now).await
    }
    fn shared_workers(&self) -> bool {
        true
    }
    async fn worker_hello(
        &self,
        hello: WorkerHello,
        conn: u64,
        now: Millis,
    ) -> Result<WorkerState> {
        again("HELLO", || {
            PgStore::worker_hello(self, hello.clone(), conn, now)
        })
        .await
    }
    async fn worker_bye(&self, wid: String, conn: u64, alive_since: Millis) -> Result<()> {
        again("worker goodbye", || {
            PgStore::worker_bye(self, wid.clone(), conn, alive_since)
        })
        .await
    }
    async fn worker_beat(
        &self,
        wid: String,
        requested: WorkerState,
        rss_kb: i64,
        now: Millis,
    ) -> Result<Option<WorkerState>> {
        again("BEAT", || {
            PgStore::worker_beat(self, wid.clone(), requested, rss_kb, now)
        })
        .await
    }
    async fn worker_signal(&self, wid: Option<String>, to: WorkerState) -> Result<usize> {
        again("worker signal", || {
            PgStore::worker_signal(self, wid.clone(), to)
        })
        .await
    }
    async fn worker_list(&self, alive_since: Millis) -> Result<Vec<WorkerInfo>> {
        PgStore::worker_list(self, alive_since).await
    }
    async fn worker_sync(
        &self,
        wids: Vec<String>,
        cutoff: Millis,
        now: Millis,
    ) -> Result<WorkerSync> {
        again("worker sync", || {
            PgStore::worker_sync(self, wids.clone(), cutoff, now)
        })
        .await
    }
    fn set_throttles(&self, throttles: Vec<Throttle>) {
        PgStore::set_throttles(self, throttles)
    }
    fn wake_poll_interval(&self) -> Option<std::time::Duration> {
        self.wake_poll_interval()
    }
    async fn health(&self) -> Result<()> {
        PgStore::health(self).await
    }
    async fn close(&self) {
        PgStore::close(self).await
    }
}
