//! Werk's domain rules, independent of any transport or storage.
//!
//! * [`batch`]: batch accounting (when callbacks fire, when a batch is complete or succeeded).
//! * [`cron`]: `[[cron]]` configuration and when entries fire.
//! * [`glob`]: MUTATE filters, Redis `SCAN MATCH` globs.
//! * [`job`]: the job payload as clients send it and as workers receive it, and PUSH validation.
//! * [`retry`]: what a failure does to a job (retry with backoff, dead, discarded).
//! * [`throttle`]: when a throttled queue has no slot left.
//! * [`time`]: timestamps as the protocol writes and reads them.
//! * [`tracking`]: what `TRACK GET` reports for a tracked job.
//! * [`worker`]: the worker-process lifecycle (running → quiet → terminate).
//! * [`state`]: the job states of `shared/job-state-machine.md`.
//! * [`text`]: strings kept as text outside JSON (jids, queue names, …) never contain NUL.

pub mod batch;
pub mod cron;
pub mod glob;
pub mod job;
pub mod retry;
pub mod state;
pub mod text;
pub mod throttle;
pub mod time;
pub mod tracking;
pub mod worker;

pub use job::{Job, PushError};
pub use retry::{FailInfo, FailOutcome, Failure};
pub use state::JobState;
pub use time::Millis;
