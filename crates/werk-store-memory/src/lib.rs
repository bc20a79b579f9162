//! A straightforward in-memory reference store: the plainest reading of the [`Store`] contract
//! and of `shared/job-state-machine.md`, which the backend conformance suite
//! ([`werk_store::conformance`]) must pass. It is the suite's self-test: a case that fails here
//! tests the wrong rule, not a backend's bug.
//!
//! [`RefHarness`] runs the suite on it (`tests/conformance.rs`). Its crash-reopen keeps the data
//! (every request answered is in it) and forgets the configuration (throttles).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use werk_core::batch::{Progress, Stage};
use werk_core::job::reservation_seconds;
use werk_core::time::{format_stamp, local_day, parse_rfc3339};
use werk_core::tracking::Ending;
use werk_core::{FailInfo, FailOutcome, Job, JobState, Millis, PushError};
use werk_store::conformance::{Harness, DAY, SEC};
use werk_store::{
    AckOutcome, BatchError, BatchStatus, CallbackState, CronFire, Cursor, DayStats, FailReply,
    ImportOutcome, ImportedJob, Listener, MutateOp, Mutation, NewBatch, NewJob, Page, PageQuery,
    QueueSelector, QueueStats, Stats, Store, StoreConfig, StoreError, StoredJob, Throttle,
    TrackState, TrackUpdate, Tracked, BATCH_COMMIT_DEADLINE, BATCH_RETENTION, TRACK_RETENTION,
};

use JobState::{Dead, Enqueued, Retry, Scheduled, Working};

use werk_core::glob::redis_match;
use werk_core::retry::apply_failure;
use werk_store::{Reservation, Result};

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

impl Batch {
    /// The callback stages [`werk_core::batch`] decides on.
    fn stages(&self) -> (Stage, Stage) {
        let stage = |fired: bool, done: bool| match (fired, done) {
            (_, true) => Stage::Done,
            (true, false) => Stage::Enqueued,
            (false, false) => Stage::Pending,
        };
        (
            stage(self.complete_fired, self.complete_done),
            stage(self.success_fired, self.success_done),
        )
    }
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
            let mut p = Progress {
                pending: b.pending as i64,
                failed: b.failed as i64,
                ..Progress::default()
            };
            p.member_ran(first, was_failed, ok);
            b.pending = p.pending.max(0) as u64;
            b.failed = p.failed.max(0) as u64;
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
            let (complete, success) = b.stages();
            let mut p = Progress {
                complete,
                success,
                ..Progress::default()
            };
            if p.callback_acked(matches!(kind, Cb::Complete)) {
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

    /// Carries out what [`Progress::advance`] says is due for the batch.
    fn step(&mut self, bid: &str, now: Millis, told: &mut Vec<String>) {
        let Some(b) = self.batches.get(bid) else {
            return;
        };
        let count = |success: bool| {
            b.children
                .iter()
                .filter(|c| self.child_done(c, success, now))
                .count() as i64
        };
        let (complete, success) = b.stages();
        let mut p = Progress {
            committed: b.committed,
            pending: b.pending as i64,
            failed: b.failed as i64,
            children: b.children.len() as i64,
            children_complete: count(false),
            children_success: count(true),
            complete,
            success,
            has_complete_job: b.complete.is_some(),
            has_success_job: b.success.is_some(),
        };
        let a = p.advance();
        if !a.changed() {
            return;
        }
        let b = self.batches.get_mut(bid).unwrap();
        b.changed_at = now;
        b.complete_fired |= a.fire_complete || a.parent_complete;
        b.complete_done |= a.parent_complete;
        b.success_fired |= a.fire_success || a.parent_success;
        if a.parent_success {
            b.success_done = true;
            b.succeeded_at = Some(now);
        }
        let parent = b.parent.clone();
        let mut fire = Vec::new();
        if a.fire_complete {
            b.complete_st = CallbackState::Enqueued;
            fire.extend(b.complete.clone().map(|j| (j, Cb::Complete)));
        }
        if a.fire_success {
            b.success_st = CallbackState::Enqueued;
            fire.extend(b.success.clone().map(|j| (j, Cb::Success)));
        }
        for (job, kind) in fire {
            self.push_callback(job, bid, parent.clone(), kind, now, told);
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
    fn import(
        &self,
        jobs: Vec<ImportedJob>,
        now: Millis,
    ) -> impl Future<Output = Result<Vec<ImportOutcome>>> + Send {
        let retention = self.cfg.dead_retention;
        ready(ImportedJob::prepare(jobs).and_then(|jobs| {
            self.with(|d, told| {
                jobs.into_iter()
                    .map(|ij| {
                        if d.jobs.contains_key(&ij.job.jid) {
                            return ImportOutcome::AlreadyStored;
                        }
                        let at = ImportedJob::set_time(ij.state, ij.at, retention);
                        let jid = ij.job.jid.clone();
                        let seq = d.next();
                        let expires = ij.job.expiry(now).ok().flatten();
                        let e = Entry {
                            job: ij.job,
                            state: ij.state,
                            at,
                            seq,
                            reservation: None,
                            expires,
                            uniq: None,
                            bid: None,
                            finished: false,
                            failed: false,
                            callback: None,
                        };
                        d.jobs.insert(jid.clone(), e);
                        if ij.state == Enqueued {
                            told.push(d.enqueue(&jid, now));
                        }
                        ImportOutcome::Stored
                    })
                    .collect()
            })
        }))
    }

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
                    let busy = d
                        .jobs
                        .values()
                        .filter(|e| e.state == Working && &e.job.queue == q)
                        .filter_map(|e| e.reservation.as_ref())
                        .filter(|r| !t.per_worker() || r.wid == wid)
                        .filter(|r| r.reserved_at > t.slots_since(now))
                        .count();
                    t.is_full(busy as u64)
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

    fn promote_due(&self, now: Millis, limit: usize) -> impl Future<Output = Result<usize>> + Send {
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

    fn purge_dead(&self, now: Millis, limit: usize) -> impl Future<Output = Result<usize>> + Send {
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
            if let (Some(until), Some(e)) = (update.reserve_until, d.jobs.get_mut(&update.jid)) {
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
            let ended = match t.outcome {
                Some(TrackState::Success) => Some(Ending::Success),
                Some(TrackState::Failed) => Some(Ending::Failed),
                _ => None,
            };
            let job = d.jobs.get(&jid).map(|e| e.state);
            let state = werk_core::tracking::state(job, ended, t.updated_at, now)?;
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
