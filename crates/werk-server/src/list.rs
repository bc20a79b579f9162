//! Werk's own `LIST {json}` command (not part of Faktory's protocol; Faktory clients never send
//! it): one page of the scheduled, retry or dead set, for `werk scheduled|retries|dead list`.
//!
//! ```text
//! LIST {"target":"retries","jobtype":"Mailer","regexp":"*boom*","after":"1700000000000.42","limit":50}
//! $… {"jobs":[{"at":"2026-12-02T10:00:00.000Z","job":{…the job's JSON…}}, …],"next":"1700000001000.57"}
//! ```
//!
//! `target` is `scheduled`, `retries` or `dead` (as in MUTATE); `jobtype` an exact job type;
//! `regexp` a Redis glob matched against the job's JSON (MUTATE's filter, so that a listing
//! shows what a MUTATE with the same filter acts on); `after` the `next` of the page before;
//! `limit` 1–1000 (default 50). Jobs come in the set's order (oldest time first); `next` is
//! null on the last page. A page may hold fewer than `limit` jobs when the glob skips some.

use serde::Deserialize;
use serde_json::value::RawValue;
use werk_core::glob::redis_match;
use werk_core::time::format_millis;
use werk_core::JobState;
use werk_protocol::Reply;
use werk_store::{Cursor, JobFilter, PageQuery, Store};

use crate::Shared;

/// The most jobs one page holds.
pub const MAX_LIMIT: u64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    target: String,
    #[serde(default)]
    jobtype: Option<String>,
    #[serde(default)]
    regexp: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(serde::Serialize)]
struct Item<'a> {
    at: String,
    job: &'a RawValue,
}

pub async fn list<S: Store>(shared: &Shared<S>, arg: &str) -> Reply {
    let args: ListArgs = match serde_json::from_str(arg) {
        Ok(a) => a,
        Err(e) => return Reply::error(format!("LIST needs a JSON argument: {e}")),
    };
    let state = match args.target.as_str() {
        "scheduled" => JobState::Scheduled,
        "retries" => JobState::Retry,
        "dead" => JobState::Dead,
        other => {
            return Reply::error(format!(
                "LIST target must be scheduled, retries or dead, not {other:?}"
            ))
        }
    };
    let after = match args.after.as_deref().map(str::parse::<Cursor>) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return Reply::error("LIST after is not a cursor LIST returned"),
    };
    let limit = args.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let glob = args.regexp.filter(|g| !g.is_empty());
    let q = PageQuery {
        state,
        filter: JobFilter {
            jobtype: args.jobtype.filter(|j| !j.is_empty()),
            ..JobFilter::default()
        },
        after,
        limit,
    };
    let page = match shared.store.page(q).await {
        Ok(p) => p,
        Err(e) => return Reply::error(e.to_string()),
    };
    let mut items = Vec::with_capacity(page.jobs.len());
    for (_, j) in &page.jobs {
        if glob
            .as_ref()
            .is_some_and(|g| !redis_match(g.as_bytes(), j.payload.as_bytes()))
        {
            continue;
        }
        let Ok(job) = serde_json::from_str::<&RawValue>(&j.payload) else {
            continue;
        };
        items.push(Item {
            at: format_millis(j.at),
            job,
        });
    }
    Reply::bulk_json(&serde_json::json!({
        "jobs": items,
        "next": page.next.map(|c| c.to_string()),
    }))
}
