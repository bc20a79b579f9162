//! Route handlers and their templates.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::Uri;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use werk_core::time::{format_millis, now_millis};
use werk_core::worker::WorkerState;
use werk_core::{Job, JobState, Millis};
use werk_store::{
    Cursor, JobFilter, MutateFilter, MutateOp, Mutation, PageQuery, QueueSelector, Store,
    StoredJob, ThrottleLimit,
};

use crate::auth::Prefix;
use crate::App;

/// Jobs per list page (Faktory: 25).
pub const PAGE_SIZE: u64 = 25;
/// Longest argument text shown in a list (bytes); detail pages show up to 1 MiB.
const LIST_ARGS: usize = 1024;
const DETAIL_ARGS: usize = 1024 * 1024;

type AppState<S> = State<Arc<App<S>>>;

/// A failed page: an error page with the store's message.
pub struct WebError(String);

impl<E: std::fmt::Display> From<E> for WebError {
    fn from(e: E) -> Self {
        WebError(e.to_string())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "web: request failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("error: {}", self.0),
        )
            .into_response()
    }
}

type Page = Result<Response, WebError>;

fn html<T: Template>(t: T) -> Page {
    Ok(Html(t.render()?).into_response())
}

// ---- common chrome --------------------------------------------------------------------------

/// The header every page shows: summary counts and the link prefix.
pub struct Chrome {
    pub prefix: String,
    pub tab: &'static str,
    pub processed: u64,
    pub failed: u64,
    pub busy: u64,
    pub enqueued: u64,
    pub retries: u64,
    pub scheduled: u64,
    pub dead: u64,
    pub version: &'static str,
}

async fn chrome<S: Store>(
    app: &App<S>,
    prefix: &Prefix,
    tab: &'static str,
) -> Result<Chrome, WebError> {
    let st = app.shared.store.stats().await?;
    Ok(Chrome {
        prefix: prefix.0.clone(),
        tab,
        processed: st.processed,
        failed: st.failures,
        busy: st.working,
        enqueued: st.enqueued(),
        retries: st.retries,
        scheduled: st.scheduled,
        dead: st.dead,
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// One job in a list.
pub struct JobRow {
    pub jid: String,
    pub jobtype: String,
    pub queue: String,
    pub args: String,
    /// The state's time (`at`, next retry, reserved until, died until), formatted.
    pub when: String,
    pub enqueued_at: String,
    pub error: String,
    pub retry_count: i64,
    pub wid: String,
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The jobtype as operators know it: ActiveJob's wrapped class when present.
fn display_type(job: &Job) -> String {
    let wrapped = job.custom.as_ref().and_then(|c| {
        if !c.get().contains("wrapped") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(c.get()).ok()?;
        v.get("wrapped")?.as_str().map(str::to_string)
    });
    wrapped.unwrap_or_else(|| job.jobtype.clone())
}

fn row(j: &StoredJob, args_max: usize) -> JobRow {
    let parsed = Job::from_stored(&j.payload).ok();
    let (args, error, retry_count, enqueued_at, jobtype) = match &parsed {
        Some(job) => (
            job.args
                .as_ref()
                .map_or(String::new(), |a| truncate(a.get(), args_max)),
            job.failure
                .as_ref()
                .map(|f| {
                    if f.errtype.is_empty() {
                        f.message.clone()
                    } else {
                        format!("{}: {}", f.errtype, f.message)
                    }
                })
                .unwrap_or_default(),
            job.failure.as_ref().map_or(0, |f| f.retry_count),
            job.enqueued_at.clone(),
            display_type(job),
        ),
        None => (
            "(damaged job JSON)".into(),
            String::new(),
            0,
            String::new(),
            j.jobtype.clone(),
        ),
    };
    JobRow {
        jid: j.jid.clone(),
        jobtype,
        queue: j.queue.clone(),
        args,
        when: format_millis(j.at),
        enqueued_at,
        error: truncate(&error, 300),
        retry_count,
        wid: j
            .reservation
            .as_ref()
            .map(|r| r.wid.clone())
            .unwrap_or_default(),
    }
}

/// A list's search form and paging (`?queue=&jobtype=&jid=&q=&after=`).
#[derive(Default, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub jobtype: String,
    #[serde(default)]
    pub jid: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub after: String,
}

impl ListQuery {
    fn filter(&self) -> JobFilter {
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        JobFilter {
            queue: some(&self.queue),
            jobtype: some(&self.jobtype),
            jid: some(&self.jid),
            text: some(&self.q),
        }
    }

    fn cursor(&self) -> Option<Cursor> {
        self.after.parse().ok()
    }

    /// The query string of the next page (same filter, after `next`).
    fn next_link(&self, next: Option<Cursor>) -> String {
        let Some(next) = next else {
            return String::new();
        };
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("queue", &self.queue),
            ("jobtype", &self.jobtype),
            ("jid", &self.jid),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        s.append_pair("after", &next.to_string());
        format!("?{}", s.finish())
    }

    fn filtered(&self) -> bool {
        self.filter() != JobFilter::default()
    }
}

async fn list_page<S: Store>(
    app: &App<S>,
    state: JobState,
    mut filter: JobFilter,
    q: &ListQuery,
    queue: Option<&str>,
) -> Result<(Vec<JobRow>, String), WebError> {
    if let Some(queue) = queue {
        filter.queue = Some(queue.to_string());
    }
    let page = app
        .shared
        .store
        .page(PageQuery {
            state,
            filter,
            after: q.cursor(),
            limit: PAGE_SIZE,
        })
        .await?;
    let rows = page.jobs.iter().map(|(_, j)| row(j, LIST_ARGS)).collect();
    Ok((rows, q.next_link(page.next)))
}

/// A POSTed form: repeated keys kept.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &Bytes) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn back(prefix: &Prefix, path: &str) -> Response {
    Redirect::to(&format!("{}{}", prefix.0, path)).into_response()
}

fn bad_request(msg: &str) -> Page {
    Ok((
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response())
}

// ---- dashboard ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardTpl {
    c: Chrome,
    days: u32,
    history_svg: String,
    facts: Vec<(&'static str, String)>,
}

#[derive(serde::Deserialize)]
pub struct DaysQuery {
    days: Option<u32>,
}

/// The history graph: processed and failed per day, as an inline SVG.
fn history_svg(days: &[werk_store::DayStats]) -> String {
    let (w, h, pad) = (900.0, 220.0, 30.0);
    let max = days
        .iter()
        .map(|d| d.processed.max(d.failures))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = days.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: u64| h - pad - (h - 2.0 * pad) * v as f64 / max;
    let line = |f: &dyn Fn(&werk_store::DayStats) -> u64| {
        days.iter()
            .enumerate()
            .map(|(i, d)| format!("{:.1},{:.1}", x(i), y(f(d))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first = days.first().map_or("", |d| d.day.as_str());
    let last = days.last().map_or("", |d| d.day.as_str());
    format!(
        r##"<svg id="history-graph" viewBox="0 0 {w} {h}" role="img" aria-label="processed and failed per day">
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>
<polyline class="processed" points="{p}"/><polyline class="failed" points="{f}"/>
<text x="{pad}" y="{t}" class="label">{first}</text><text x="{r}" y="{t}" class="label" text-anchor="end">{last}</text>
<text x="{pad}" y="{pad}" class="label">{max}</text></svg>"##,
        b = h - pad,
        r = w - pad,
        t = h - 8.0,
        p = line(&|d| d.processed),
        f = line(&|d| d.failures),
        max = max as u64,
    )
}

pub async fn dashboard<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    Query(q): Query<DaysQuery>,
) -> Page {
    let days = match q.days.unwrap_or(30) {
        d @ (7 | 30 | 90 | 180) => d,
        _ => 30,
    };
    let c = chrome(&app, &prefix, "dashboard").await?;
    let history = app.shared.store.history(days, now_millis()).await?;
    let s = &app.shared;
    let uptime = s.started.elapsed().as_secs();
    let facts = vec![
        ("Werk version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "Faktory protocol",
            werk_server::info::FAKTORY_COMPAT_VERSION.to_string(),
        ),
        (
            "Uptime",
            format!(
                "{}d {}h {}m",
                uptime / 86_400,
                uptime / 3600 % 24,
                uptime / 60 % 60
            ),
        ),
        (
            "Connections",
            s.counters.connections.load(Ordering::Relaxed).to_string(),
        ),
        ("Memory", format!("{} MB", werk_server::info::rss_mb())),
        (
            "Commands",
            s.counters.commands.load(Ordering::Relaxed).to_string(),
        ),
        (
            "Worker processes",
            werk_server::workers::count(s).await?.to_string(),
        ),
    ];
    html(DashboardTpl {
        c,
        days,
        history_svg: history_svg(&history),
        facts,
    })
}

pub async fn stats<S: Store>(State(app): AppState<S>) -> Page {
    let v = werk_server::info::info_json(&app.shared).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response())
}

/// `/health`: 200 while the store can serve, 503 (with the reason in `store.error`) while it
/// cannot, e.g. its database is unreachable, so a load balancer routes around the node.
pub async fn health<S: Store>(State(app): AppState<S>) -> Page {
    let s = &app.shared;
    let store = s.store.health().await;
    let status = if store.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let v = serde_json::json!({
        "store": match &store {
            Ok(()) => serde_json::json!({ "ok": true }),
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        },
        "now": format_millis(now_millis()),
        "server": {
            "description": "Werk",
            "faktory_version": werk_server::info::FAKTORY_COMPAT_VERSION,
            "werk_version": env!("CARGO_PKG_VERSION"),
            "connections": s.counters.connections.load(Ordering::Relaxed),
            "command_count": s.counters.commands.load(Ordering::Relaxed),
        }
    });
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response())
}

pub async fn metrics<S: Store>(State(app): AppState<S>) -> Page {
    let body = werk_server::metrics::render(&app.shared).await;
    Ok((
        [(header::CONTENT_TYPE, werk_server::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response())
}

pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, ty): (&'static str, &'static str) = match file.as_str() {
        "app.css" => (include_str!("../static/app.css"), "text/css; charset=utf-8"),
        "app.js" => (
            include_str!("../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

// ---- queues ---------------------------------------------------------------------------------

pub struct QueueRow {
    pub name: String,
    pub size: u64,
    pub latency: String,
    pub paused: bool,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesTpl {
    c: Chrome,
    queues: Vec<QueueRow>,
}

pub async fn queues<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
) -> Page {
    let c = chrome(&app, &prefix, "queues").await?;
    let st = app.shared.store.stats().await?;
    let names: Vec<String> = st.queues.iter().map(|q| q.name.clone()).collect();
    let lat = app.shared.store.queue_latency(names, now_millis()).await?;
    let queues = st
        .queues
        .iter()
        .zip(lat)
        .map(|(q, l)| QueueRow {
            name: q.name.clone(),
            size: q.size,
            latency: format!("{l:.1} s"),
            paused: q.paused,
        })
        .collect();
    html(QueuesTpl { c, queues })
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueueTpl {
    c: Chrome,
    name: String,
    size: u64,
    paused: bool,
    jobs: Vec<JobRow>,
    next: String,
    q: ListQuery,
    filtered: bool,
    show_queue_filter: bool,
}

pub async fn queue<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> Page {
    let c = chrome(&app, &prefix, "queues").await?;
    let st = app.shared.store.stats().await?;
    let Some(qs) = st.queues.iter().find(|x| x.name == name) else {
        return Ok(back(&prefix, "/queues"));
    };
    let (jobs, next) = list_page(&app, JobState::Enqueued, q.filter(), &q, Some(&name)).await?;
    html(QueueTpl {
        c,
        size: qs.size,
        paused: qs.paused,
        name,
        jobs,
        next,
        filtered: q.filtered(),
        show_queue_filter: false,
        q,
    })
}

pub async fn queue_action<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    Path(name): Path<String>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let store = &app.shared.store;
    let sel = QueueSelector::Names(vec![name.clone()]);
    match form.get("action") {
        Some("pause") => store.set_paused(sel, true).await?,
        Some("resume") => store.set_paused(sel, false).await?,
        Some("delete") => {
            store.remove_queues(sel).await?;
            return Ok(back(&prefix, "/queues"));
        }
        Some("delete_selected") => {
            store
                .delete_jobs(JobState::Enqueued, form.all("jid"))
                .await?;
            return Ok(back(&prefix, &format!("/queues/{name}")));
        }
        _ => return bad_request("action must be pause, resume, delete or delete_selected"),
    }
    Ok(back(&prefix, "/queues"))
}

// ---- busy -----------------------------------------------------------------------------------

pub struct WorkerRow {
    pub wid: String,
    pub host: String,
    pub labels: String,
    pub state: String,
    pub rss: String,
    pub started: String,
    pub last_beat: String,
    pub connections: usize,
}

#[derive(Template)]
#[template(path = "busy.html")]
struct BusyTpl {
    c: Chrome,
    workers: Vec<WorkerRow>,
    jobs: Vec<JobRow>,
    next: String,
}

pub async fn busy<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    Query(q): Query<ListQuery>,
) -> Page {
    let c = chrome(&app, &prefix, "busy").await?;
    // The whole cluster's workers (in memory for the embedded stores), sorted by wid.
    let list = werk_server::workers::list(&app.shared).await?;
    let workers = list
        .into_iter()
        .map(|w| WorkerRow {
            host: format!("{}:{}", w.hostname, w.pid),
            labels: w.labels.join(", "),
            state: match w.state {
                WorkerState::Running => "running",
                WorkerState::Quiet => "quiet",
                WorkerState::Terminate => "terminate",
            }
            .to_string(),
            rss: if w.rss_kb > 0 {
                format!("{:.1} MB", w.rss_kb as f64 / 1024.0)
            } else {
                "–".into()
            },
            started: format_millis(w.started_at),
            last_beat: format_millis(w.last_beat),
            connections: w.connections,
            wid: w.wid,
        })
        .collect();
    let (jobs, next) = list_page(&app, JobState::Working, q.filter(), &q, None).await?;
    html(BusyTpl {
        c,
        workers,
        jobs,
        next,
    })
}

pub async fn busy_action<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    body: Bytes,
) -> Page {
    let form = Form::parse(&body);
    let to = match form.get("signal") {
        Some("quiet") => WorkerState::Quiet,
        Some("terminate") => WorkerState::Terminate,
        _ => return bad_request("signal must be quiet or terminate"),
    };
    let wid = match form.get("wid") {
        Some("all") => None,
        Some(wid) if !wid.is_empty() => Some(wid),
        _ => return bad_request("wid is missing"),
    };
    werk_server::workers::signal(&app.shared, wid, to).await?;
    Ok(back(&prefix, "/busy"))
}

// ---- retries, scheduled, dead ---------------------------------------------------------------

/// The three sets' pages: path, state, title and the actions they offer.
fn set_of(path: &str) -> Option<(&'static str, JobState, &'static str)> {
    Some(match path.trim_end_matches('/').rsplit('/').next()? {
        "retries" => ("retries", JobState::Retry, "Retries"),
        "scheduled" => ("scheduled", JobState::Scheduled, "Scheduled"),
        "morgue" => ("morgue", JobState::Dead, "Dead"),
        _ => return None,
    })
}

/// The set a path like `/retries/<jid>` belongs to.
fn set_of_job(path: &str) -> Option<(&'static str, JobState, &'static str)> {
    let mut parts = path.trim_start_matches('/').split('/');
    set_of(parts.next()?)
}

fn actions(state: JobState) -> Vec<(&'static str, &'static str)> {
    match state {
        JobState::Retry => vec![
            ("retry", "Retry now"),
            ("delete", "Delete"),
            ("kill", "Kill"),
        ],
        JobState::Scheduled => vec![
            ("add_to_queue", "Add to queue"),
            ("delete", "Delete"),
            ("kill", "Kill"),
        ],
        _ => vec![("retry", "Retry now"), ("delete", "Delete")],
    }
}

#[derive(Template)]
#[template(path = "set.html")]
struct SetTpl {
    c: Chrome,
    path: &'static str,
    title: &'static str,
    total: u64,
    jobs: Vec<JobRow>,
    next: String,
    q: ListQuery,
    filtered: bool,
    show_queue_filter: bool,
    actions: Vec<(&'static str, &'static str)>,
    when_label: &'static str,
    show_error: bool,
}

pub async fn set_list<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    uri: Uri,
    Query(q): Query<ListQuery>,
) -> Page {
    let Some((path, state, title)) = set_of(uri.path()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let c = chrome(&app, &prefix, path).await?;
    let total = match state {
        JobState::Retry => c.retries,
        JobState::Scheduled => c.scheduled,
        _ => c.dead,
    };
    let (jobs, next) = list_page(&app, state, q.filter(), &q, None).await?;
    html(SetTpl {
        c,
        path,
        title,
        total,
        jobs,
        next,
        filtered: q.filtered(),
        show_queue_filter: true,
        q,
        actions: actions(state),
        when_label: match state {
            JobState::Retry => "Next retry",
            JobState::Scheduled => "When",
            _ => "Died (kept until)",
        },
        show_error: state != JobState::Scheduled,
    })
}

/// Applies a set action to `jids` (`None`: every job of the set).
async fn apply<S: Store>(
    app: &App<S>,
    state: JobState,
    action: &str,
    jids: Option<Vec<String>>,
) -> Result<bool, WebError> {
    let store = &app.shared.store;
    let op = match action {
        "retry" | "add_to_queue" => MutateOp::Requeue,
        "kill" if state != JobState::Dead => MutateOp::Kill,
        "delete" => {
            if let Some(jids) = jids {
                store.delete_jobs(state, jids).await?;
                return Ok(true);
            }
            MutateOp::Clear
        }
        _ => return Ok(false),
    };
    let filter = match jids {
        Some(jids) if jids.is_empty() => return Ok(true),
        Some(jids) => Some(MutateFilter {
            jids,
            ..MutateFilter::default()
        }),
        None => None,
    };
    store
        .mutate(
            Mutation {
                op,
                target: state,
                filter,
            },
            now_millis(),
        )
        .await?;
    Ok(true)
}

pub async fn set_action<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    uri: Uri,
    body: Bytes,
) -> Page {
    let Some((path, state, _)) = set_of(uri.path()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let form = Form::parse(&body);
    let action = form.get("action").unwrap_or("");
    let jids = if form.get("all").is_some() {
        None
    } else {
        Some(form.all("jid"))
    };
    if !apply(&app, state, action, jids).await? {
        return bad_request("unknown action for this page");
    }
    Ok(back(&prefix, &format!("/{path}")))
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobTpl {
    c: Chrome,
    path: &'static str,
    title: &'static str,
    job: JobRow,
    fields: Vec<(&'static str, String)>,
    backtrace: Vec<String>,
    actions: Vec<(&'static str, &'static str)>,
}

pub async fn job_page<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    uri: Uri,
    Path(jid): Path<String>,
) -> Page {
    let Some((path, state, title)) = set_of_job(uri.path()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let stored = app.shared.store.get(jid).await?;
    let Some(stored) = stored.filter(|j| j.state == state) else {
        // Already moved (retried, deleted...): back to the list, as Faktory does.
        return Ok(back(&prefix, &format!("/{path}")));
    };
    let c = chrome(&app, &prefix, path).await?;
    let job = row(&stored, DETAIL_ARGS);
    let parsed = Job::from_stored(&stored.payload).ok();
    let mut fields = vec![
        ("jid", stored.jid.clone()),
        ("Job type", job.jobtype.clone()),
        ("Queue", stored.queue.clone()),
    ];
    let mut backtrace = Vec::new();
    if let Some(j) = &parsed {
        fields.push(("Created at", j.created_at.clone()));
        if !j.at.is_empty() {
            fields.push(("At", j.at.clone()));
        }
        if !j.enqueued_at.is_empty() {
            fields.push(("Enqueued at", j.enqueued_at.clone()));
        }
        fields.push((
            "Retry",
            j.retry.map_or("default (25)".into(), |r| r.to_string()),
        ));
        fields.push((
            "Reserve for",
            format!("{} s", werk_core::job::reservation_seconds(j.reserve_for)),
        ));
        if let Some(custom) = &j.custom {
            fields.push(("Custom", truncate(custom.get(), DETAIL_ARGS)));
        }
        if let Some(f) = &j.failure {
            fields.push(("Error type", f.errtype.clone()));
            fields.push(("Error message", f.message.clone()));
            fields.push(("Failed at", f.failed_at.clone()));
            fields.push(("Retry count", f.retry_count.to_string()));
            fields.push(("Retries remaining", f.remaining.to_string()));
            if !f.next_at.is_empty() {
                fields.push(("Next retry", f.next_at.clone()));
            }
            backtrace = f.backtrace.clone();
        }
    }
    html(JobTpl {
        c,
        path,
        title,
        job,
        fields,
        backtrace,
        actions: actions(state),
    })
}

pub async fn job_action<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    uri: Uri,
    Path(jid): Path<String>,
    body: Bytes,
) -> Page {
    let Some((path, state, _)) = set_of_job(uri.path()) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let form = Form::parse(&body);
    if !apply(
        &app,
        state,
        form.get("action").unwrap_or(""),
        Some(vec![jid]),
    )
    .await?
    {
        return bad_request("unknown action for this page");
    }
    Ok(back(&prefix, &format!("/{path}")))
}

// ---- cron, batches, throttles ---------------------------------------------------------------

pub struct CronRow {
    pub id: String,
    pub file: String,
    pub schedule: String,
    pub timezone: String,
    pub jobtype: String,
    pub queue: String,
    pub last: String,
    pub next: Vec<String>,
}

#[derive(Template)]
#[template(path = "cron.html")]
struct CronTpl {
    c: Chrome,
    entries: Vec<CronRow>,
}

pub async fn cron<S: Store>(State(app): AppState<S>, Extension(prefix): Extension<Prefix>) -> Page {
    let c = chrome(&app, &prefix, "cron").await?;
    let config = app.opts.cron.as_ref().map(|rx| rx.borrow().clone());
    let mut entries = Vec::new();
    if let Some(config) = config {
        let ids: Vec<String> = config.entries.iter().map(|e| e.id.clone()).collect();
        let last = app.shared.store.cron_last_fired(ids).await?;
        let now = now_millis();
        for (e, last) in config.entries.iter().zip(last) {
            let mut next = Vec::new();
            let mut t = now;
            for _ in 0..3 {
                match e.next_after(t) {
                    Some(n) => {
                        next.push(format_millis(n));
                        t = n;
                    }
                    None => break,
                }
            }
            entries.push(CronRow {
                id: e.id.clone(),
                file: format!("{} #{}", e.file, e.index),
                schedule: e.schedule.clone(),
                timezone: e.timezone.name().to_string(),
                jobtype: e.job.jobtype.clone(),
                queue: e.job.queue.clone(),
                last: last.map_or("never".into(), format_millis),
                next,
            });
        }
    }
    html(CronTpl { c, entries })
}

pub struct BatchRow {
    pub bid: String,
    pub parent: String,
    pub description: String,
    pub created_at: String,
    pub committed: bool,
    pub total: u64,
    pub pending: u64,
    pub failed: u64,
    pub complete: &'static str,
    pub success: &'static str,
}

fn callback_state(c: werk_store::CallbackState) -> &'static str {
    match c {
        werk_store::CallbackState::Pending => "not fired",
        werk_store::CallbackState::Enqueued => "enqueued",
        werk_store::CallbackState::Succeeded => "succeeded",
    }
}

#[derive(Template)]
#[template(path = "batches.html")]
struct BatchesTpl {
    c: Chrome,
    bid: String,
    status: Option<Vec<(&'static str, String)>>,
    missing: bool,
    batches: Vec<BatchRow>,
    next: String,
}

pub async fn batches<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
    Query(q): Query<HashMap<String, String>>,
) -> Page {
    let c = chrome(&app, &prefix, "batches").await?;
    let bid = q
        .get("bid")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let after = q.get("after").and_then(|a| {
        let (t, bid) = a.split_once('.')?;
        Some((t.parse::<Millis>().ok()?, bid.to_string()))
    });
    let list = app
        .shared
        .store
        .list_batches(after, PAGE_SIZE, now_millis())
        .await?;
    let next = match list.last() {
        Some(b) if list.len() as u64 == PAGE_SIZE => {
            let cursor = format!("{}.{}", b.created_at, b.bid);
            format!(
                "?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("after", &cursor)
                    .finish()
            )
        }
        _ => String::new(),
    };
    let batches = list
        .into_iter()
        .map(|b| BatchRow {
            parent: b.parent_bid.unwrap_or_default(),
            description: b.description.unwrap_or_default(),
            created_at: format_millis(b.created_at),
            committed: b.committed,
            total: b.total,
            pending: b.pending,
            failed: b.failed,
            complete: callback_state(b.complete_st),
            success: callback_state(b.success_st),
            bid: b.bid,
        })
        .collect();
    let mut status = None;
    let mut missing = false;
    if !bid.is_empty() {
        match app
            .shared
            .store
            .batch_status(bid.clone(), now_millis())
            .await?
        {
            Some(s) => {
                let st = callback_state;
                status = Some(vec![
                    ("Batch", s.bid.clone()),
                    ("Parent", s.parent_bid.clone().unwrap_or_else(|| "–".into())),
                    ("Description", s.description.clone().unwrap_or_default()),
                    ("Created at", format_millis(s.created_at)),
                    ("Committed", s.committed.to_string()),
                    ("Total", s.total.to_string()),
                    ("Pending", s.pending.to_string()),
                    ("Failed", s.failed.to_string()),
                    ("Complete callback", st(s.complete_st).to_string()),
                    ("Success callback", st(s.success_st).to_string()),
                ]);
            }
            None => missing = true,
        }
    }
    html(BatchesTpl {
        c,
        bid,
        status,
        missing,
        batches,
        next,
    })
}

pub struct ThrottleRow {
    pub queue: String,
    pub kind: String,
    pub timeout: String,
    pub size: u64,
    pub working: String,
}

#[derive(Template)]
#[template(path = "throttles.html")]
struct ThrottlesTpl {
    c: Chrome,
    rows: Vec<ThrottleRow>,
}

pub async fn throttles<S: Store>(
    State(app): AppState<S>,
    Extension(prefix): Extension<Prefix>,
) -> Page {
    let c = chrome(&app, &prefix, "throttles").await?;
    let list = app
        .opts
        .throttles
        .as_ref()
        .map(|rx| rx.borrow().clone())
        .unwrap_or_default();
    let st = app.shared.store.stats().await?;
    let mut rows = Vec::new();
    for t in list.iter() {
        // Working jobs of the queue (bounded count: a page of up to 1000).
        let working = app
            .shared
            .store
            .page(PageQuery {
                state: JobState::Working,
                filter: JobFilter {
                    queue: Some(t.queue.clone()),
                    ..JobFilter::default()
                },
                after: None,
                limit: 1000,
            })
            .await?
            .jobs
            .len();
        rows.push(ThrottleRow {
            queue: t.queue.clone(),
            kind: match t.limit {
                ThrottleLimit::Concurrency(n) => format!("{n} concurrent"),
                ThrottleLimit::PerWorker(n) => format!("{n} per worker"),
            },
            timeout: t.timeout.map_or("while working".into(), |ms: Millis| {
                format!("{} s", ms / 1000)
            }),
            size: st
                .queues
                .iter()
                .find(|q| q.name == t.queue)
                .map_or(0, |q| q.size),
            working: if working >= 1000 {
                "1000+".into()
            } else {
                working.to_string()
            },
        });
    }
    html(ThrottlesTpl { c, rows })
}
