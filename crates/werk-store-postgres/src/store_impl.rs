//! The [`Store`] trait, delegating to the transitions of [`PgStore`] (each one transaction,
//! answered after its COMMIT).

use werk_core::worker::WorkerState;
use werk_core::{FailInfo, JobState, Millis, PushError};
use werk_store::{
    AckOutcome, BatchError, BatchStatus, CronFire, DayStats, FailReply, Mutation, NewBatch, NewJob,
    Page, PageQuery, QueueSelector, Result, Stats, Store, StoredJob, Throttle, TrackUpdate,
    Tracked, WorkerHello, WorkerInfo, WorkerSync,
};

use crate::PgStore;

impl Store for PgStore {
    async fn push(
        &self,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<std::result::Result<(), PushError>>> {
        PgStore::push(self, jobs, now).await
    }
    async fn fetch(
        &self,
        queues: Vec<String>,
        wid: String,
        now: Millis,
    ) -> Result<Option<StoredJob>> {
        PgStore::fetch(self, queues, wid, now).await
    }
    async fn ack(&self, jid: String, now: Millis) -> Result<AckOutcome> {
        PgStore::ack(self, jid, now).await
    }
    async fn fail(&self, jid: String, info: FailInfo, now: Millis) -> Result<FailReply> {
        PgStore::fail(self, jid, info, now).await
    }
    async fn promote_due(&self, now: Millis, limit: usize) -> Result<usize> {
        PgStore::promote_due(self, now, limit).await
    }
    async fn reap_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        PgStore::reap_expired(self, now, limit).await
    }
    async fn sweep_expired(&self, now: Millis, limit: usize) -> Result<usize> {
        PgStore::sweep_expired(self, now, limit).await
    }
    async fn purge_dead(&self, now: Millis, limit: usize) -> Result<usize> {
        PgStore::purge_dead(self, now, limit).await
    }
    async fn mutate(&self, m: Mutation, now: Millis) -> Result<u64> {
        PgStore::mutate(self, m, now).await
    }
    async fn set_paused(&self, queues: QueueSelector, paused: bool) -> Result<()> {
        PgStore::set_paused(self, queues, paused).await
    }
    async fn remove_queues(&self, queues: QueueSelector) -> Result<u64> {
        PgStore::remove_queues(self, queues).await
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
        PgStore::delete_jobs(self, state, jids).await
    }
    async fn fire_cron(
        &self,
        entry: String,
        tick: Millis,
        job: NewJob,
        now: Millis,
    ) -> Result<CronFire> {
        PgStore::fire_cron(self, entry, tick, job, now).await
    }
    async fn cron_last_fired(&self, entries: Vec<String>) -> Result<Vec<Option<Millis>>> {
        PgStore::cron_last_fired(self, entries).await
    }
    async fn batch_new(
        &self,
        batch: NewBatch,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        PgStore::batch_new(self, batch, now).await
    }
    async fn batch_open(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        PgStore::batch_open(self, bid, now).await
    }
    async fn batch_commit(
        &self,
        bid: String,
        now: Millis,
    ) -> Result<std::result::Result<(), BatchError>> {
        PgStore::batch_commit(self, bid, now).await
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
        PgStore::track_set(self, update, now).await
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
        PgStore::worker_hello(self, hello, conn, now).await
    }
    async fn worker_bye(&self, wid: String, conn: u64, alive_since: Millis) -> Result<()> {
        PgStore::worker_bye(self, wid, conn, alive_since).await
    }
    async fn worker_beat(
        &self,
        wid: String,
        requested: WorkerState,
        rss_kb: i64,
        now: Millis,
    ) -> Result<Option<WorkerState>> {
        PgStore::worker_beat(self, wid, requested, rss_kb, now).await
    }
    async fn worker_signal(&self, wid: Option<String>, to: WorkerState) -> Result<usize> {
        PgStore::worker_signal(self, wid, to).await
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
        PgStore::worker_sync(self, wids, cutoff, now).await
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
