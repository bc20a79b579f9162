//! Cron: the `[[cron]]` entries of `conf.d/*.toml` (Faktory Enterprise's format, plus Werk's
//! `timezone` and `missed`) and the times they fire. Pure: the caller reads the files and passes
//! their contents to [`parse_cron_config`].
//!
//! Schedules have 5 fields (minute hour day-of-month month day-of-week), 6 with a leading seconds
//! field, or are one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`. They are parsed by `croner` (which also accepts `L`, `W`, `#`, and robfig/cron's
//! `5/15` for `5-59/15`) and evaluated on the wall clock of the entry's zone (default UTC).
//!
//! Daylight saving time depends on the hour field:
//!
//! * **Fixed hour** (the hour field does not start with `*`: `30 2 * * *`, `0,30 1-3 * * *`,
//!   `@daily`): every matching wall-clock time fires once. A time skipped by a spring-forward
//!   gap fires at the first instant after the gap (02:30 → 03:00), and several skipped times
//!   fire as one tick. A time repeated by a fall-back fires at its first occurrence only.
//! * **Wildcard hour** (`*` or `*/n`: `0 * * * *`, `*/15 * * * *`, `@hourly`): fires at every
//!   real instant whose wall-clock time matches. Times inside a gap do not exist and do not fire;
//!   both occurrences of a repeated hour fire, so `0 * * * *` fires every real hour (25 times on
//!   a fall-back day, 23 on a spring-forward day). This is croner's behaviour, used as is.
//!
//! croner applies the fixed-hour rules only when second, minute and hour are each a single
//! value; for others (`0,30 2 * * *`) it skips gap times and fires repeated times twice. So Werk
//! evaluates fixed-hour schedules itself: croner walks the wall clock (`NaiveDateTime`) and each
//! matching time maps to the first instant whose local time reaches it.

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::job::{valid_queue_name, Job, DEFAULT_QUEUE, MAX_RESERVE_FOR};
use crate::time::{format_millis, Millis, MAX_MILLIS};

/// What happens to ticks missed while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Fire the latest missed tick once at start-up (the default).
    Once,
    /// Fire nothing for missed ticks.
    Skip,
}

/// All cron entries of the configuration, in file order then entry order.
#[derive(Debug, Clone, Default)]
pub struct CronConfig {
    pub entries: Vec<CronEntry>,
}

/// One `[[cron]]` entry.
#[derive(Debug, Clone)]
pub struct CronEntry {
    /// Stable identity: the first 16 hex digits of the SHA-256 of the canonical JSON
    /// `[schedule, timezone, job]` (job with defaults applied and keys sorted). Independent of
    /// file, position and `missed`.
    pub id: String,
    /// The file name as given to [`parse_cron_config`].
    pub file: String,
    /// 1-based position of the entry within its file.
    pub index: usize,
    /// The schedule as written.
    pub schedule: String,
    pub timezone: Tz,
    pub missed: Missed,
    pub job: CronJob,
    cron: Cron,
    /// The hour field starts with `*`: fire at real instants (see the module doc).
    wildcard_hour: bool,
}

/// The job template of an entry (`[cron.job]`).
#[derive(Debug, Clone)]
pub struct CronJob {
    pub jobtype: String,
    pub queue: String,
    /// A JSON array.
    pub args: Box<RawValue>,
    pub retry: Option<i64>,
    pub reserve_for: Option<i64>,
    /// A non-empty JSON object, or `None`.
    pub custom: Option<Box<RawValue>>,
}

/// Why the cron configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", location(.entry, .field))]
pub struct CronConfigError {
    pub file: String,
    /// 1-based `[[cron]]` entry within the file.
    pub entry: Option<usize>,
    /// Dotted key, e.g. `schedule`, `job.queue`, `cron_defaults.timezone`.
    pub field: Option<String>,
    pub message: String,
}

fn location(entry: &Option<usize>, field: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(n) = entry {
        let _ = write!(out, "[[cron]] entry {n}");
    }
    if let Some(f) = field {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "field `{f}`");
    }
    if !out.is_empty() {
        out.push_str(": ");
    }
    out
}

fn error(
    file: &str,
    entry: Option<usize>,
    field: Option<&str>,
    message: String,
) -> CronConfigError {
    CronConfigError {
        file: file.to_string(),
        entry,
        field: field.map(str::to_string),
        message,
    }
}

const ENTRY_KEYS: &[&str] = &["schedule", "timezone", "missed", "job"];
const JOB_KEYS: &[&str] = &["type", "queue", "args", "retry", "reserve_for", "custom"];
const DEFAULTS_KEYS: &[&str] = &["timezone", "missed"];

struct Defaults {
    timezone: Tz,
    missed: Missed,
}

/// Parses the `[[cron]]` entries and the optional `[cron_defaults]` of the given files
/// (`(name, contents)`, in the order they are read). Other top-level keys are ignored. All files
/// are parsed as TOML and `[cron_defaults]` is read first (it applies to entries in every file),
/// then the entries; the first error is returned.
pub fn parse_cron_config(files: &[(String, String)]) -> Result<CronConfig, CronConfigError> {
    let mut tables = Vec::with_capacity(files.len());
    let mut defaults: Option<(&str, Defaults)> = None;
    for (name, text) in files {
        let table: toml::Table = text.parse().map_err(|e| syntax_error(name, text, &e))?;
        if let Some(value) = table.get("cron_defaults") {
            if let Some((first, _)) = defaults {
                return Err(error(
                    name,
                    None,
                    Some("cron_defaults"),
                    format!("[cron_defaults] may be given once, but is in both {first} and {name}"),
                ));
            }
            defaults = Some((name, parse_defaults(name, value)?));
        }
        tables.push((name, table));
    }
    let defaults = defaults.map(|(_, d)| d).unwrap_or(Defaults {
        timezone: Tz::UTC,
        missed: Missed::Once,
    });

    let mut entries = Vec::new();
    for (name, table) in tables {
        let Some(value) = table.get("cron") else {
            continue;
        };
        let toml::Value::Array(items) = value else {
            return Err(error(
                name,
                None,
                Some("cron"),
                format!(
                    "must be an array of tables written [[cron]], not {}",
                    a_type(value)
                ),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            entries.push(parse_entry(name, i + 1, item, &defaults)?);
        }
    }
    Ok(CronConfig { entries })
}

fn syntax_error(file: &str, text: &str, e: &toml::de::Error) -> CronConfigError {
    let place = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!(" at line {line}, column {column}")
        }
        None => String::new(),
    };
    error(
        file,
        None,
        None,
        format!("invalid TOML{place}: {}", e.message().trim_end()),
    )
}

fn parse_defaults(file: &str, value: &toml::Value) -> Result<Defaults, CronConfigError> {
    let toml::Value::Table(table) = value else {
        return Err(error(
            file,
            None,
            Some("cron_defaults"),
            format!("must be a table, not {}", a_type(value)),
        ));
    };
    let field = |key: &str| format!("cron_defaults.{key}");
    check_keys(table, DEFAULTS_KEYS)
        .map_err(|(key, msg)| error(file, None, Some(&field(&key)), msg))?;
    let timezone = match table.get("timezone") {
        None => Tz::UTC,
        Some(v) => parse_timezone(v).map_err(|m| error(file, None, Some(&field("timezone")), m))?,
    };
    let missed = match table.get("missed") {
        None => Missed::Once,
        Some(v) => parse_missed(v).map_err(|m| error(file, None, Some(&field("missed")), m))?,
    };
    Ok(Defaults { timezone, missed })
}

fn check_keys(table: &toml::Table, allowed: &[&str]) -> Result<(), (String, String)> {
    match table.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err((
            key.clone(),
            format!("unknown key (expected one of: {})", allowed.join(", ")),
        )),
    }
}

fn parse_timezone(value: &toml::Value) -> Result<Tz, String> {
    let name = expect_str(value)?;
    Tz::from_str(name).map_err(|_| {
        format!("unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\")")
    })
}

fn parse_missed(value: &toml::Value) -> Result<Missed, String> {
    match expect_str(value)? {
        "once" => Ok(Missed::Once),
        "skip" => Ok(Missed::Skip),
        other => Err(format!("expected \"once\" or \"skip\", found {other:?}")),
    }
}

fn expect_str(value: &toml::Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", a_type(value)))
}

/// "a string", "an integer", ...
fn a_type(value: &toml::Value) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn parse_entry(
    file: &str,
    index: usize,
    value: &toml::Value,
    defaults: &Defaults,
) -> Result<CronEntry, CronConfigError> {
    let err = |field: &str, message: String| error(file, Some(index), Some(field), message);
    let toml::Value::Table(table) = value else {
        return Err(error(
            file,
            Some(index),
            None,
            format!("must be a table, not {}", a_type(value)),
        ));
    };
    check_keys(table, ENTRY_KEYS).map_err(|(key, msg)| err(&key, msg))?;

    let schedule = match table.get("schedule") {
        None => return Err(err("schedule", "missing".to_string())),
        Some(v) => expect_str(v).map_err(|m| err("schedule", m))?,
    };
    let (cron, wildcard_hour) = parse_schedule(schedule).map_err(|detail| {
        err(
            "schedule",
            format!("invalid cron expression {schedule:?}: {detail}"),
        )
    })?;
    let timezone = match table.get("timezone") {
        None => defaults.timezone,
        Some(v) => parse_timezone(v).map_err(|m| err("timezone", m))?,
    };
    let missed = match table.get("missed") {
        None => defaults.missed,
        Some(v) => parse_missed(v).map_err(|m| err("missed", m))?,
    };
    let (job, template) = match table.get("job") {
        None => return Err(err("job", "missing (add a [cron.job] table)".to_string())),
        Some(toml::Value::Table(job)) => parse_job(job).map_err(|(f, m)| err(&f, m))?,
        Some(v) => return Err(err("job", format!("must be a table, not {}", a_type(v)))),
    };

    let identity =
        serde_json::Value::Array(vec![schedule.into(), timezone.name().into(), template]);
    let digest = Sha256::digest(identity.to_string().as_bytes());
    let mut id = hex::encode(digest);
    id.truncate(16);

    Ok(CronEntry {
        id,
        file: file.to_string(),
        index,
        schedule: schedule.to_string(),
        timezone,
        missed,
        job,
        cron,
        wildcard_hour,
    })
}

/// Parses a schedule; returns the cron and whether its hour field is a wildcard.
fn parse_schedule(schedule: &str) -> Result<(Cron, bool), String> {
    let trimmed = schedule.trim();
    let expression = if trimmed.starts_with('@') {
        match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ => {
                return Err(
                    "unknown alias (expected @yearly, @annually, @monthly, @weekly, \
                            @daily, @midnight or @hourly)"
                        .to_string(),
                )
            }
        }
    } else {
        let fields = trimmed.split_whitespace().count();
        if fields != 5 && fields != 6 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a \
                 leading seconds field, found {fields}"
            ));
        }
        trimmed
    };
    // `sloppy_ranges` accepts `5/15` (= `5-59/15`), as robfig/cron (Faktory's) does.
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .sloppy_ranges(true)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())?;
    // Without a year field the calendar repeats every 400 years, so a schedule that fires at
    // all fires after 1970 (croner gives up after the year 5000).
    let epoch = DateTime::UNIX_EPOCH.naive_utc();
    if cron.find_next_occurrence(&epoch, false).is_err() {
        return Err("it never fires (no date matches)".to_string());
    }
    let wildcard_hour = cron.pattern.hours.from_wildcard;
    Ok((cron, wildcard_hour))
}

/// Parses `[cron.job]`; returns the job and its canonical JSON for the id. Errors carry the
/// field (`job.<key>`).
fn parse_job(table: &toml::Table) -> Result<(CronJob, serde_json::Value), (String, String)> {
    let field = |key: &str| format!("job.{key}");
    check_keys(table, JOB_KEYS).map_err(|(key, msg)| (field(&key), msg))?;
    let err = |key: &str, message: String| (field(key), message);

    let jobtype = match table.get("type") {
        None => return Err(err("type", "missing".to_string())),
        Some(v) => expect_str(v).map_err(|m| err("type", m))?,
    };
    if jobtype.trim().is_empty() {
        return Err(err("type", "must not be empty".to_string()));
    }
    let queue = match table.get("queue") {
        None => DEFAULT_QUEUE,
        Some(v) => expect_str(v).map_err(|m| err("queue", m))?,
    };
    if !valid_queue_name(queue) {
        return Err(err(
            "queue",
            format!("invalid queue name {queue:?} (names must match [a-zA-Z0-9._-]+)"),
        ));
    }
    let args = match table.get("args") {
        None => serde_json::Value::Array(Vec::new()),
        Some(v @ toml::Value::Array(_)) => to_json(v, "job.args").map_err(|m| err("args", m))?,
        Some(v) => return Err(err("args", format!("must be an array, not {}", a_type(v)))),
    };
    let retry = match table.get("retry") {
        None => None,
        Some(v) => Some(expect_integer(v).map_err(|m| err("retry", m))?),
    };
    let reserve_for = match table.get("reserve_for") {
        None => None,
        Some(v) => {
            let n = expect_integer(v).map_err(|m| err("reserve_for", m))?;
            if !(0..=MAX_RESERVE_FOR).contains(&n) {
                return Err(err(
                    "reserve_for",
                    format!("must be between 0 and {MAX_RESERVE_FOR} seconds, found {n}"),
                ));
            }
            Some(n)
        }
    };
    let custom = match table.get("custom") {
        None => None,
        Some(toml::Value::Table(t)) if t.is_empty() => None,
        Some(v @ toml::Value::Table(_)) => {
            Some(to_json(v, "job.custom").map_err(|m| err("custom", m))?)
        }
        Some(v) => return Err(err("custom", format!("must be a table, not {}", a_type(v)))),
    };

    let raw = |v: &serde_json::Value| {
        serde_json::value::to_raw_value(v).expect("a JSON value always serialises")
    };
    let job = CronJob {
        jobtype: jobtype.to_string(),
        queue: queue.to_string(),
        args: raw(&args),
        retry,
        reserve_for,
        custom: custom.as_ref().map(raw),
    };
    // Keys in sorted order, so the text is the same with or without serde_json's
    // `preserve_order`.
    let mut template = serde_json::Map::new();
    template.insert("args".into(), args);
    template.insert("custom".into(), custom.unwrap_or(serde_json::Value::Null));
    template.insert("jobtype".into(), jobtype.into());
    template.insert("queue".into(), queue.into());
    template.insert("reserve_for".into(), reserve_for.into());
    template.insert("retry".into(), retry.into());
    Ok((job, serde_json::Value::Object(template)))
}

fn expect_integer(value: &toml::Value) -> Result<i64, String> {
    value
        .as_integer()
        .ok_or_else(|| format!("must be an integer, not {}", a_type(value)))
}

/// Converts TOML to JSON with object keys in sorted order. Datetimes become strings.
fn to_json(value: &toml::Value, path: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(n) => J::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("{path} is {f}, which JSON cannot represent"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => {
            let mut keys: Vec<&String> = table.keys().collect();
            keys.sort();
            let mut map = serde_json::Map::new();
            for key in keys {
                map.insert(key.clone(), to_json(&table[key], &format!("{path}.{key}"))?);
            }
            J::Object(map)
        }
    })
}

impl CronEntry {
    /// The first tick strictly after `after` (UTC ms), or None if the schedule never fires again
    /// (within what croner searches, to the year 5000, and [`MAX_MILLIS`]).
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let next = if self.wildcard_hour {
            self.next_real_time(after)
        } else {
            self.next_wall_clock(after)
        }?;
        (next <= MAX_MILLIS).then_some(next)
    }

    /// The latest tick `t` with `after < t <= up_to`, if any.
    ///
    /// Does not walk tick by tick: `next_after(s) <= up_to` holds for every `s` up to the
    /// answer's predecessor and fails after it, so the start `s` is found by galloping back from
    /// `up_to` in doubling windows and then bisecting: about 2·log2(gap in seconds) calls.
    pub fn latest_in(&self, after: Millis, up_to: Millis) -> Option<Millis> {
        if up_to <= after {
            return None;
        }
        let fires_by = |s: Millis| matches!(self.next_after(s), Some(t) if t <= up_to);
        if !fires_by(after) {
            return None;
        }
        // Invariant: fires_by(lo), !fires_by(hi) (no tick is after up_to and at most up_to).
        let (mut lo, mut hi) = (after, up_to);
        let mut window: Millis = 1_000;
        loop {
            let start = up_to.saturating_sub(window);
            if start <= after {
                break;
            }
            if fires_by(start) {
                lo = start;
                break;
            }
            hi = start;
            window = window.saturating_mul(2);
        }
        // Ticks are on whole seconds, so (lo, hi] holds at most one once it spans a second.
        while hi - lo > 1_000 {
            let mid = lo + (hi - lo) / 2;
            if fires_by(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.next_after(lo)
    }

    /// The job this entry pushes for `tick`.
    pub fn make_job(&self, jid: String, tick: Millis) -> Job {
        Job {
            retry: self.job.retry,
            failure: None,
            custom: self.job.custom.clone(),
            jid,
            queue: self.job.queue.clone(),
            jobtype: self.job.jobtype.clone(),
            created_at: format_millis(tick),
            enqueued_at: String::new(),
            at: String::new(),
            args: Some(self.job.args.clone()),
            reserve_for: self.job.reserve_for.unwrap_or(0),
            backtrace: 0,
        }
    }

    /// Wildcard hour: croner on zoned times (real instants, both halves of a repeated hour).
    fn next_real_time(&self, after: Millis) -> Option<Millis> {
        let mut from = DateTime::from_timestamp_millis(after)?.with_timezone(&self.timezone);
        // croner's search is exclusive, so one call suffices; the loop only guards its contract.
        for _ in 0..4 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            let t = next.timestamp_millis();
            if t > after {
                return Some(t);
            }
            from = next;
        }
        None
    }

    /// Fixed hour: the matching wall-clock times are walked in order and each fires at
    /// `first_instant_at`, which never decreases along the walk. Wall-clock times up to the
    /// local time of `after` have fired by `after`; so have, after a fall-back, those up to the
    /// latest local time already shown, which `shown_until` finds.
    fn next_wall_clock(&self, after: Millis) -> Option<Millis> {
        let local = DateTime::from_timestamp_millis(after)?
            .with_timezone(&self.timezone)
            .naive_local();
        let candidate = self.cron.find_next_occurrence(&local, false).ok()?;
        let t = first_instant_at(self.timezone, candidate)?;
        if t > after {
            return Some(t);
        }
        let shown = shown_until(self.timezone, after, local)?;
        let candidate = self.cron.find_next_occurrence(&shown, false).ok()?;
        let t = first_instant_at(self.timezone, candidate)?;
        (t > after).then_some(t)
    }
}

/// The first instant whose local time in `tz` is at or past `local`: the instant itself, the
/// first of two in a fall-back, or the end of a spring-forward gap.
fn first_instant_at(tz: Tz, local: NaiveDateTime) -> Option<Millis> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis()),
        LocalResult::None => gap_end(tz, local),
    }
}

/// Window searched around a wall-clock time; UTC offsets and DST shifts are far smaller.
const SEARCH_WINDOW_SECONDS: i64 = 2 * 86_400;

/// The instant a gap containing `local` ends. Within the window, "local time has reached
/// `local`" is false before the gap and true after it (a time that is never shown cannot be
/// reached by a clock going back), so it is bisected to the second; transitions are on whole
/// seconds.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<Millis> {
    let reached = |s: i64| -> Option<bool> {
        Some(
            DateTime::from_timestamp(s, 0)?
                .with_timezone(&tz)
                .naive_local()
                >= local,
        )
    };
    let centre = local.and_utc().timestamp();
    let (mut lo, mut hi) = (
        centre - SEARCH_WINDOW_SECONDS,
        centre + SEARCH_WINDOW_SECONDS,
    );
    if reached(lo)? || !reached(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi * 1000)
}

/// The latest whole-second wall-clock time whose first instant is at or before `after`
/// (`local` is the local time of `after`). Later than `local` only in the second pass through a
/// repeated hour; bisected, as `first_instant_at` never decreases.
fn shown_until(tz: Tz, after: Millis, local: NaiveDateTime) -> Option<NaiveDateTime> {
    let base = local.with_nanosecond(0)?;
    let at = |k: i64| base.checked_add_signed(TimeDelta::seconds(k));
    let shown = |k: i64| -> Option<bool> { Some(first_instant_at(tz, at(k)?)? <= after) };
    let (mut lo, mut hi) = (0, SEARCH_WINDOW_SECONDS);
    if !shown(lo)? || shown(hi)? {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shown(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;
    use chrono::Offset;

    const FILE: &str = "conf.d/cron.toml";
    const MINUTE: Millis = 60_000;
    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 86_400_000;

    fn ms(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    fn parse(text: &str) -> Result<CronConfig, CronConfigError> {
        parse_cron_config(&[(FILE.to_string(), text.to_string())])
    }

    fn entry(schedule: &str, timezone: &str) -> CronEntry {
        let text = format!(
            "[[cron]]\nschedule = {schedule:?}\ntimezone = {timezone:?}\n[cron.job]\ntype = \"T\"\n"
        );
        parse(&text).unwrap().entries.remove(0)
    }

    /// Ticks in (from, to], by iterating `next_after`.
    fn ticks_ms(e: &CronEntry, from: Millis, to: Millis) -> Vec<Millis> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = e.next_after(t) {
            if next > to {
                break;
            }
            assert!(next > t);
            out.push(next);
            t = next;
        }
        out
    }

    fn ticks(e: &CronEntry, from: &str, to: &str) -> Vec<String> {
        ticks_ms(e, ms(from), ms(to))
            .into_iter()
            .map(format_millis)
            .collect()
    }

    fn error_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn monday_nine_in_berlin_across_the_switches() {
        let e = entry("0 9 * * 1", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-10T00:00:00Z", "2026-04-07T00:00:00Z"),
            [
                "2026-03-16T08:00:00Z",
                "2026-03-23T08:00:00Z",
                "2026-03-30T07:00:00Z",
                "2026-04-06T07:00:00Z"
            ]
        );
        assert_eq!(
            e.next_after(ms("2026-03-23T08:00:00Z")),
            Some(ms("2026-03-30T07:00:00Z"))
        );
        assert_eq!(
            e.next_after(ms("2026-03-23T07:59:59.999Z")),
            Some(ms("2026-03-23T08:00:00Z"))
        );
        assert_eq!(
            ticks(&e, "2026-10-15T00:00:00Z", "2026-11-03T00:00:00Z"),
            [
                "2026-10-19T07:00:00Z",
                "2026-10-26T08:00:00Z",
                "2026-11-02T08:00:00Z"
            ]
        );
    }

    #[test]
    fn six_field_schedules_have_seconds() {
        let e = entry("*/20 * * * * *", "UTC");
        assert_eq!(
            ticks(&e, "2026-01-01T00:00:05Z", "2026-01-01T00:01:00Z"),
            [
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:40Z",
                "2026-01-01T00:01:00Z"
            ]
        );
        let e = entry("30 0 9 * * *", "UTC");
        assert_eq!(
            e.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-01-01T09:00:30Z"))
        );
        assert_eq!(
            e.next_after(ms("2026-01-01T09:00:30Z")),
            Some(ms("2026-01-02T09:00:30Z"))
        );
        // Five fields mean second 0.
        let e = entry("0 9 * * *", "UTC");
        assert_eq!(
            e.next_after(ms("2026-01-01T09:00:00.500Z")),
            Some(ms("2026-01-02T09:00:00Z"))
        );
        // A time with seconds inside a gap fires when the gap ends.
        let e = entry("15 30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z"),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:15Z"]
        );
    }

    #[test]
    fn aliases() {
        let from = ms("2026-05-05T10:20:00Z"); // a Tuesday
        for (alias, want) in [
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@monthly", "2026-06-01T00:00:00Z"),
            ("@weekly", "2026-05-10T00:00:00Z"),
            ("@daily", "2026-05-06T00:00:00Z"),
            ("@midnight", "2026-05-06T00:00:00Z"),
            ("@hourly", "2026-05-05T11:00:00Z"),
            ("@DAILY", "2026-05-06T00:00:00Z"),
        ] {
            let e = entry(alias, "UTC");
            assert_eq!(e.schedule, alias);
            assert_eq!(e.next_after(from), Some(ms(want)), "{alias}");
        }
        let e = entry("@daily", "Europe/Berlin");
        assert_eq!(e.next_after(from), Some(ms("2026-05-05T22:00:00Z")));
        assert!(!e.wildcard_hour);
        assert!(entry("@hourly", "UTC").wildcard_hour);
    }

    #[test]
    fn time_zones_and_missed_default_override() {
        let entries = r#"
[faktory]
password = "x"

[[cron]]
  schedule = "0 9 * * *"
  [cron.job]
    type = "A"

[[cron]]
  schedule = "0 9 * * *"
  timezone = "America/New_York"
  missed = "skip"
  [cron.job]
    type = "B"
"#;
        let from = ms("2026-01-10T00:00:00Z");
        let files = [("conf.d/cron.toml".to_string(), entries.to_string())];
        let config = parse_cron_config(&files).unwrap();
        let [a, b] = &config.entries[..] else {
            panic!("{config:?}")
        };
        assert_eq!((a.timezone, a.missed), (Tz::UTC, Missed::Once));
        assert_eq!(a.next_after(from), Some(ms("2026-01-10T09:00:00Z")));
        assert_eq!(
            (b.timezone, b.missed),
            (Tz::America__New_York, Missed::Skip)
        );
        assert_eq!(b.next_after(from), Some(ms("2026-01-10T14:00:00Z")));
        assert_eq!((a.file.as_str(), a.index, b.index), (FILE, 1, 2));

        // [cron_defaults] in a later file applies to every file.
        let defaults = "[cron_defaults]\ntimezone = \"Asia/Tokyo\"\nmissed = \"skip\"\n";
        let files = [
            ("conf.d/cron.toml".to_string(), entries.to_string()),
            ("conf.d/defaults.toml".to_string(), defaults.to_string()),
        ];
        let config = parse_cron_config(&files).unwrap();
        let [a, b] = &config.entries[..] else {
            panic!("{config:?}")
        };
        assert_eq!((a.timezone, a.missed), (Tz::Asia__Tokyo, Missed::Skip));
        assert_eq!(a.next_after(from), Some(ms("2026-01-11T00:00:00Z")));
        assert_eq!(
            (b.timezone, b.missed),
            (Tz::America__New_York, Missed::Skip)
        );

        let files = [("conf.d/defaults.toml".to_string(), defaults.to_string())];
        assert!(parse_cron_config(&files).unwrap().entries.is_empty());
        assert!(parse_cron_config(&[]).unwrap().entries.is_empty());
        // Inline tables are the same TOML.
        let config = parse(r#"cron = [{ schedule = "@daily", job = { type = "X" } }]"#).unwrap();
        assert_eq!(config.entries[0].job.jobtype, "X");
    }

    #[test]
    fn spring_forward_fires_once_at_the_end_of_the_gap() {
        // Berlin 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
        let e = entry("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        // Several times in the gap are one tick (croner alone skips them all).
        let e = entry("0,30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            [
                "2026-03-28T01:00:00Z",
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        let e = entry("* 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
            ["2026-03-29T01:00:00Z"]
        );
        assert_eq!(
            ticks_ms(&e, ms("2026-03-27T23:00:00Z"), ms("2026-03-28T23:00:00Z")).len(),
            60
        );
        // New York 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
        let e = entry("30 2 * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-03-06T12:00:00Z", "2026-03-09T12:00:00Z"),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
        let e = entry("0,30 2 * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-03-08T05:00:00Z", "2026-03-08T12:00:00Z"),
            ["2026-03-08T07:00:00Z"]
        );
    }

    #[test]
    fn fall_back_fires_once_at_the_first_occurrence() {
        // New York 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:00-01:59 repeats.
        let e = entry("30 1 * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-10-30T12:00:00Z", "2026-11-02T12:00:00Z"),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        // Several times in the repeated hour: each once (croner alone fires them twice).
        let e = entry("0,30 1 * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-11-01T00:00:00Z", "2026-11-01T12:00:00Z"),
            ["2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z"]
        );
        // Berlin 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:00-02:59 repeats.
        let e = entry("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-10-23T12:00:00Z", "2026-10-26T12:00:00Z"),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z"
            ]
        );
        let e = entry("*/20 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-10-24T22:00:00Z", "2026-10-25T22:00:00Z"),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:20:00Z",
                "2026-10-25T00:40:00Z"
            ]
        );
    }

    #[test]
    fn starting_inside_the_second_pass_of_a_repeated_hour() {
        // 06:10Z is 01:10 EST, the second 01:10 of the day: 01:30 has already fired.
        let e = entry("30 1 * * *", "America/New_York");
        assert_eq!(
            e.next_after(ms("2026-11-01T06:10:00Z")),
            Some(ms("2026-11-02T06:30:00Z"))
        );
        let e = entry("*/15 1-2 * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-11-01T06:10:00Z", "2026-11-01T08:00:00Z"),
            [
                "2026-11-01T07:00:00Z",
                "2026-11-01T07:15:00Z",
                "2026-11-01T07:30:00Z",
                "2026-11-01T07:45:00Z"
            ]
        );
        // A per-second schedule in the repeated hour resumes at 02:00 EST.
        let e = entry("* * 1 * * *", "America/New_York");
        assert_eq!(
            e.next_after(ms("2026-11-01T06:00:00Z")),
            Some(ms("2026-11-02T06:00:00Z"))
        );
        let e = entry("* * 1-2 * * *", "America/New_York");
        assert_eq!(
            e.next_after(ms("2026-11-01T06:59:59.500Z")),
            Some(ms("2026-11-01T07:00:00Z"))
        );
        assert_eq!(
            e.next_after(ms("2026-11-01T06:00:00.001Z")),
            Some(ms("2026-11-01T07:00:00Z"))
        );
        assert_eq!(
            e.next_after(ms("2026-11-01T05:59:59Z")),
            Some(ms("2026-11-01T07:00:00Z"))
        );
    }

    #[test]
    fn wildcard_hours_fire_every_real_hour() {
        // New York fall-back: both 01:00s fire; 25 ticks that local day.
        let e = entry("0 * * * *", "America/New_York");
        assert_eq!(
            ticks(&e, "2026-11-01T03:30:00Z", "2026-11-01T08:30:00Z"),
            [
                "2026-11-01T04:00:00Z",
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z"
            ]
        );
        let day = ticks_ms(&e, ms("2026-11-01T03:59:59Z"), ms("2026-11-02T04:59:59Z"));
        assert_eq!(day.len(), 25);
        assert_eq!(
            e.next_after(ms("2026-11-01T05:30:00Z")),
            Some(ms("2026-11-01T06:00:00Z"))
        );
        // Spring forward: the missing hour has no ticks; 23 that day.
        let day = ticks_ms(&e, ms("2026-03-08T04:59:59Z"), ms("2026-03-09T03:59:59Z"));
        assert_eq!(day.len(), 23);
        // Berlin, every quarter hour: every real quarter, 92 on the short day, 100 on the long.
        let e = entry("*/15 * * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"),
            [
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z",
                "2026-03-29T01:30:00Z"
            ]
        );
        let short = ticks_ms(&e, ms("2026-03-28T22:59:59Z"), ms("2026-03-29T21:59:59Z"));
        assert_eq!(short.len(), 92);
        let long = ticks_ms(&e, ms("2026-10-24T21:59:59Z"), ms("2026-10-25T22:59:59Z"));
        assert_eq!(long.len(), 100);
        assert!(long.windows(2).all(|w| w[1] - w[0] == 15 * MINUTE));
        let e = entry("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&e, "2026-10-24T23:59:00Z", "2026-10-25T02:00:00Z"),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    fn offset_at(tz: Tz, t: Millis) -> i32 {
        DateTime::from_timestamp_millis(t)
            .unwrap()
            .with_timezone(&tz)
            .offset()
            .fix()
            .local_minus_utc()
    }

    /// Ticks in (from, to] by the rules of the module doc, minute by minute.
    fn reference(e: &CronEntry, from: Millis, to: Millis) -> Vec<Millis> {
        let tz = e.timezone;
        let mut out = Vec::new();
        if e.wildcard_hour {
            let mut t = (from / MINUTE + 1) * MINUTE;
            while t <= to {
                let zoned = DateTime::from_timestamp_millis(t)
                    .unwrap()
                    .with_timezone(&tz);
                if e.cron.is_time_matching(&zoned).unwrap() {
                    out.push(t);
                }
                t += MINUTE;
            }
            return out;
        }
        let local = |t: Millis| {
            DateTime::from_timestamp_millis(t)
                .unwrap()
                .with_timezone(&tz)
                .naive_local()
        };
        let mut n = local(from - DAY).with_second(0).unwrap();
        let end = local(to + DAY);
        while n <= end {
            if e.cron.is_time_matching(&n).unwrap() {
                let t = match tz.from_local_datetime(&n) {
                    LocalResult::Single(t) => t.timestamp_millis(),
                    LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
                    LocalResult::None => {
                        let mut u = (n.and_utc().timestamp_millis() - DAY) / MINUTE * MINUTE;
                        while local(u) <= n {
                            u += MINUTE;
                        }
                        u
                    }
                };
                if from < t && t <= to {
                    out.push(t);
                }
            }
            n += TimeDelta::minutes(1);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn dst_days_match_a_minute_by_minute_reference() {
        let days = [
            ("Europe/Berlin", "2026-03-29"),
            ("Europe/Berlin", "2026-10-25"),
            ("America/New_York", "2026-03-08"),
            ("America/New_York", "2026-11-01"),
            ("Australia/Lord_Howe", "2026-04-05"), // back 30 minutes
            ("Australia/Lord_Howe", "2026-10-04"), // forward 30 minutes
            ("America/Santiago", "2026-04-05"),    // midnight repeats
            ("America/Santiago", "2026-09-06"),    // midnight is skipped
        ];
        let schedules = [
            "30 2 * * *",
            "0,30 2 * * *",
            "*/15 1-3 * * *",
            "45 1 * * *",
            "0 0 * * *",
            "* 2 * * *",
            "0 1,2 * * *",
            "15 */2 * * *",
            "0 * * * *",
            "23 * * * *",
            "*/15 * * * *",
            "@hourly",
        ];
        for (zone, day) in days {
            let from = ms(&format!("{day}T00:00:00Z")) - 36 * HOUR;
            let to = from + 72 * HOUR;
            let tz = Tz::from_str(zone).unwrap();
            assert_ne!(offset_at(tz, from), offset_at(tz, to), "{zone} {day}");
            for schedule in schedules {
                let e = entry(schedule, zone);
                let want = reference(&e, from, to);
                let what = format!("{schedule} in {zone} around {day}");
                assert!(!want.is_empty(), "{what}");
                assert_eq!(ticks_ms(&e, from, to), want, "{what}");
                // From any start, the next tick is the first reference tick after it.
                let mut start = from;
                let mut step = 0;
                while start < to {
                    step += 1;
                    if let Some(&t) = want.iter().find(|&&t| t > start) {
                        assert_eq!(e.next_after(start), Some(t), "{what} from {start}");
                    }
                    let up_to = start + 5 * HOUR;
                    if up_to <= to && step % 4 == 0 {
                        let last = want.iter().rev().find(|&&t| t > start && t <= up_to);
                        assert_eq!(e.latest_in(start, up_to), last.copied(), "{what}");
                    }
                    start += 11 * MINUTE + 13_001;
                }
            }
        }
    }

    #[test]
    fn latest_in_over_a_long_gap() {
        let e = entry("* * * * * *", "UTC");
        let after = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            e.latest_in(after, after + 30 * DAY + 500),
            Some(after + 30 * DAY)
        );
        assert_eq!(e.latest_in(after, after + 999), None);
        assert_eq!(e.latest_in(after, after + 1_000), Some(after + 1_000));
        assert_eq!(e.latest_in(after, after), None);
        assert_eq!(e.latest_in(after, after - DAY), None);

        let e = entry("0 9 * * 1", "Europe/Berlin");
        assert_eq!(
            e.latest_in(ms("2026-03-01T00:00:00Z"), ms("2026-04-05T00:00:00Z")),
            Some(ms("2026-03-30T07:00:00Z"))
        );
        // The bound is inclusive, the start exclusive.
        assert_eq!(
            e.latest_in(ms("2026-03-01T00:00:00Z"), ms("2026-03-30T07:00:00Z")),
            Some(ms("2026-03-30T07:00:00Z"))
        );
        assert_eq!(
            e.latest_in(ms("2026-03-30T07:00:00Z"), ms("2026-04-06T06:59:59Z")),
            None
        );
        let e = entry("@yearly", "UTC");
        assert_eq!(
            e.latest_in(ms("2016-06-01T00:00:00Z"), ms("2046-06-01T00:00:00Z")),
            Some(ms("2046-01-01T00:00:00Z"))
        );
        // Fixed-hour per-second schedule over a month of DST switches.
        let e = entry("* * 2 * * *", "Europe/Berlin");
        assert_eq!(
            e.latest_in(ms("2026-03-01T00:00:00Z"), ms("2026-03-29T12:00:00Z")),
            Some(ms("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            e.latest_in(ms("2026-10-01T00:00:00Z"), ms("2026-10-25T12:00:00Z")),
            Some(ms("2026-10-25T00:59:59Z"))
        );
    }

    #[test]
    fn never_fires_again_is_none() {
        let e = entry("0 0 1 1 *", "UTC");
        assert_eq!(e.next_after(crate::time::MAX_MILLIS - DAY), None);
        assert_eq!(
            e.latest_in(crate::time::MAX_MILLIS - DAY, crate::time::MAX_MILLIS),
            None
        );
    }

    /// A config with one valid entry before the one under test, so the index is 2.
    fn second_entry(entry: &str) -> CronConfigError {
        let text = format!(
            "[[cron]]\nschedule = \"@daily\"\n[cron.job]\ntype = \"Ok\"\n\n[[cron]]\n{entry}"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.file, FILE);
        assert_eq!(err.entry, Some(2), "{err}");
        err
    }

    fn job_error(job_lines: &str) -> String {
        second_entry(&format!("schedule = \"@daily\"\n[cron.job]\n{job_lines}\n")).to_string()
    }

    #[test]
    fn toml_syntax_errors_name_file_and_line() {
        let err = parse("[[cron]]\nschedule = \"0 9 * * 1\"\ntimezone = \n").unwrap_err();
        assert_eq!((err.entry, err.field.as_deref()), (None, None));
        let text = err.to_string();
        assert!(
            text.starts_with("conf.d/cron.toml: invalid TOML at line 3, column 12: "),
            "{text}"
        );
        let err = parse("[cron_defaults]\n\n[cron_defaults]\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("conf.d/cron.toml: invalid TOML at line 3, column "),
            "{err}"
        );
    }

    #[test]
    fn schedule_errors() {
        for (schedule, detail) in [
            ("\"61 * * * *\"", "invalid cron expression \"61 * * * *\": "),
            (
                "\"0 0 30 2 *\"",
                "invalid cron expression \"0 0 30 2 *\": it never fires (no date matches)",
            ),
            (
                "\"0 0 * * * * *\"",
                "invalid cron expression \"0 0 * * * * *\": expected 5 fields (minute hour \
                 day-of-month month day-of-week) or 6 with a leading seconds field, found 7",
            ),
            (
                "\"0 9 * *\"",
                "invalid cron expression \"0 9 * *\": expected 5 fields",
            ),
            (
                "\"@every 1h\"",
                "invalid cron expression \"@every 1h\": unknown alias (expected @yearly, \
                 @annually, @monthly, @weekly, @daily, @midnight or @hourly)",
            ),
            ("\"\"", "invalid cron expression \"\": expected 5 fields"),
            ("5", "must be a string, not an integer"),
        ] {
            let err = second_entry(&format!(
                "schedule = {schedule}\n[cron.job]\ntype = \"X\"\n"
            ));
            assert_eq!(err.field.as_deref(), Some("schedule"));
            let text = err.to_string();
            let want = format!("conf.d/cron.toml: [[cron]] entry 2, field `schedule`: {detail}");
            assert!(text.starts_with(&want), "{text}\n{want}");
        }
        let err = second_entry("[cron.job]\ntype = \"X\"\n");
        assert_eq!(
            err.to_string(),
            "conf.d/cron.toml: [[cron]] entry 2, field `schedule`: missing"
        );
        // Faktory's (robfig/cron's) `N/step` is accepted.
        let e = entry("5/20 * * * *", "UTC");
        assert_eq!(
            ticks(&e, "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
            [
                "2026-01-01T00:05:00Z",
                "2026-01-01T00:25:00Z",
                "2026-01-01T00:45:00Z"
            ]
        );
    }

    #[test]
    fn timezone_and_missed_errors() {
        let err = second_entry(
            "schedule = \"@daily\"\ntimezone = \"Mars/Olympus\"\n[cron.job]\ntype = \"X\"\n",
        );
        assert_eq!(
            err.to_string(),
            "conf.d/cron.toml: [[cron]] entry 2, field `timezone`: unknown time zone \
             \"Mars/Olympus\" (expected an IANA name such as \"Europe/Berlin\")"
        );
        let err =
            second_entry("schedule = \"@daily\"\nmissed = \"twice\"\n[cron.job]\ntype = \"X\"\n");
        assert_eq!(
            err.to_string(),
            "conf.d/cron.toml: [[cron]] entry 2, field `missed`: expected \"once\" or \"skip\", \
             found \"twice\""
        );
        let err = second_entry("schedule = \"@daily\"\nmissed = true\n[cron.job]\ntype = \"X\"\n");
        assert_eq!(
            err.to_string(),
            "conf.d/cron.toml: [[cron]] entry 2, field `missed`: must be a string, not a boolean"
        );
        // The same checks in [cron_defaults], which has no entry index.
        assert_eq!(
            error_text("[cron_defaults]\ntimezone = \"europe/berlin\"\n"),
            "conf.d/cron.toml: field `cron_defaults.timezone`: unknown time zone \
             \"europe/berlin\" (expected an IANA name such as \"Europe/Berlin\")"
        );
        assert_eq!(
            error_text("[cron_defaults]\nmissed = \"all\"\n"),
            "conf.d/cron.toml: field `cron_defaults.missed`: expected \"once\" or \"skip\", \
             found \"all\""
        );
        assert_eq!(
            error_text("[cron_defaults]\ntimezon = \"UTC\"\n"),
            "conf.d/cron.toml: field `cron_defaults.timezon`: unknown key (expected one of: \
             timezone, missed)"
        );
        assert_eq!(
            error_text("cron_defaults = 1\n"),
            "conf.d/cron.toml: field `cron_defaults`: must be a table, not an integer"
        );
    }

    #[test]
    fn job_errors() {
        let prefix = "conf.d/cron.toml: [[cron]] entry 2, field ";
        for (lines, want) in [
            ("queue = \"q\"", "`job.type`: missing"),
            ("type = \"\"", "`job.type`: must not be empty"),
            ("type = \"  \"", "`job.type`: must not be empty"),
            ("type = 1", "`job.type`: must be a string, not an integer"),
            (
                "type = \"X\"\nqueue = \"a b\"",
                "`job.queue`: invalid queue name \"a b\" (names must match [a-zA-Z0-9._-]+)",
            ),
            (
                "type = \"X\"\nqueue = \"\"",
                "`job.queue`: invalid queue name \"\" (names must match [a-zA-Z0-9._-]+)",
            ),
            (
                "type = \"X\"\nargs = \"x\"",
                "`job.args`: must be an array, not a string",
            ),
            (
                "type = \"X\"\nargs = { a = 1 }",
                "`job.args`: must be an array, not a table",
            ),
            (
                "type = \"X\"\nargs = [1, nan]",
                "`job.args`: job.args[1] is NaN, which JSON cannot represent",
            ),
            (
                "type = \"X\"\ncustom = [1]",
                "`job.custom`: must be a table, not an array",
            ),
            (
                "type = \"X\"\ncustom = \"x\"",
                "`job.custom`: must be a table, not a string",
            ),
            (
                "type = \"X\"\ncustom = { a = { b = inf } }",
                "`job.custom`: job.custom.a.b is inf, which JSON cannot represent",
            ),
            (
                "type = \"X\"\npriority = 5",
                "`job.priority`: unknown key (expected one of: type, queue, args, retry, \
                 reserve_for, custom)",
            ),
            (
                "type = \"X\"\nreserve_for = -1",
                "`job.reserve_for`: must be between 0 and 86400 seconds, found -1",
            ),
            (
                "type = \"X\"\nreserve_for = 86401",
                "`job.reserve_for`: must be between 0 and 86400 seconds, found 86401",
            ),
            (
                "type = \"X\"\nreserve_for = 1.5",
                "`job.reserve_for`: must be an integer, not a float",
            ),
            (
                "type = \"X\"\nretry = \"3\"",
                "`job.retry`: must be an integer, not a string",
            ),
        ] {
            assert_eq!(job_error(lines), format!("{prefix}{want}"), "{lines}");
        }
        let err = second_entry("schedule = \"@daily\"\n");
        assert_eq!(
            err.to_string(),
            format!("{prefix}`job`: missing (add a [cron.job] table)")
        );
        let err = second_entry("schedule = \"@daily\"\njob = \"X\"\n");
        assert_eq!(
            err.to_string(),
            format!("{prefix}`job`: must be a table, not a string")
        );
    }

    #[test]
    fn entry_shape_errors() {
        let err = second_entry("schedul = \"@daily\"\n[cron.job]\ntype = \"X\"\n");
        assert_eq!(err.field.as_deref(), Some("schedul"));
        assert_eq!(
            err.to_string(),
            "conf.d/cron.toml: [[cron]] entry 2, field `schedul`: unknown key (expected one \
             of: schedule, timezone, missed, job)"
        );
        assert_eq!(
            error_text("cron = [1]\n"),
            "conf.d/cron.toml: [[cron]] entry 1: must be a table, not an integer"
        );
        assert_eq!(
            error_text("cron = \"x\"\n"),
            "conf.d/cron.toml: field `cron`: must be an array of tables written [[cron]], not a \
             string"
        );
        assert_eq!(
            error_text("[cron]\nschedule = \"@daily\"\n"),
            "conf.d/cron.toml: field `cron`: must be an array of tables written [[cron]], not a \
             table"
        );
    }

    #[test]
    fn cron_defaults_twice_names_both_files() {
        let files = [
            ("conf.d/a.toml".to_string(), "[cron_defaults]\n".to_string()),
            ("conf.d/b.toml".to_string(), "[web]\nx = 1\n".to_string()),
            (
                "conf.d/c.toml".to_string(),
                "[cron_defaults]\ntimezone = \"UTC\"\n".to_string(),
            ),
        ];
        let err = parse_cron_config(&files).unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.entry, err.field.as_deref()),
            ("conf.d/c.toml", None, Some("cron_defaults"))
        );
        assert_eq!(
            err.to_string(),
            "conf.d/c.toml: field `cron_defaults`: [cron_defaults] may be given once, but is in \
             both conf.d/a.toml and conf.d/c.toml"
        );
    }

    #[test]
    fn first_error_wins() {
        let good = "[[cron]]\nschedule = \"@daily\"\n[cron.job]\ntype = \"X\"\n";
        let bad = "[[cron]]\nschedule = \"x\"\n[cron.job]\ntype = \"X\"\n\n\
                   [[cron]]\nschedule = \"@daily\"\n[cron.job]\n";
        let files = [
            ("conf.d/1.toml".to_string(), good.to_string()),
            ("conf.d/2.toml".to_string(), bad.to_string()),
            ("conf.d/3.toml".to_string(), bad.to_string()),
        ];
        let err = parse_cron_config(&files).unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.entry, err.field.as_deref()),
            ("conf.d/2.toml", Some(1), Some("schedule"))
        );
    }

    fn ids(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        parse_cron_config(&files)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn ids_are_stable_and_change_with_the_definition() {
        let weekly = r#"
[[cron]]
  schedule = "0 9 * * 1"
  timezone = "Europe/Berlin"
  [cron.job]
    type = "WeeklyReport"
    args = [1, "x"]
    [cron.job.custom]
      b = 1
      a = { y = 2, x = 1 }
"#;
        // Same definition, other file and position, other key order and spelling, other
        // `missed`, explicit default queue.
        let moved = r#"
[[cron]]
  schedule = "@hourly"
  [cron.job]
    type = "Other"

[[cron]]
  missed = "skip"
  job = { custom = { a = { x = 1, y = 2 }, b = 1 }, queue = "default", args = [1, 'x'], type = "WeeklyReport" }
  timezone = "Europe/Berlin"
  schedule = "0 9 * * 1"
"#;
        let a = ids(&[("conf.d/a.toml", weekly)]);
        let b = ids(&[("conf.d/b.toml", moved)]);
        assert_eq!(a[0].len(), 16);
        assert!(a[0].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a[0], b[1]);
        assert_ne!(b[0], b[1]);

        for change in [
            weekly.replace("args = [1, \"x\"]", "args = [1, \"y\"]"),
            weekly.replace("args = [1, \"x\"]", "args = [1, \"x\", 2]"),
            weekly.replace("0 9 * * 1", "0 10 * * 1"),
            weekly.replace("0 9 * * 1", "0  9 * * 1"),
            weekly.replace("Europe/Berlin", "Europe/Paris"),
            weekly.replace("WeeklyReport", "MonthlyReport"),
            weekly.replace("type = ", "queue = \"critical\"\n    type = "),
            weekly.replace("type = ", "retry = 3\n    type = "),
            weekly.replace("type = ", "reserve_for = 600\n    type = "),
            weekly.replace("b = 1", "b = 2"),
        ] {
            assert_ne!(ids(&[("conf.d/a.toml", &change)])[0], a[0], "{change}");
        }
        // Omitted and explicit-default timezone are the same.
        assert_eq!(
            ids(&[(
                "f",
                "[[cron]]\nschedule = \"@daily\"\njob = { type = \"X\" }\n"
            )]),
            ids(&[(
                "g",
                "[[cron]]\nschedule = \"@daily\"\ntimezone = \"UTC\"\njob = { type = \"X\" }\n"
            )])
        );
    }

    #[test]
    fn make_job_builds_a_pushable_job() {
        let config = parse(
            r#"
[[cron]]
  schedule = "0 9 * * 1"
  timezone = "Europe/Berlin"
  [cron.job]
    type = "WeeklyReport"
    queue = "critical"
    args = [1, "x", 2.5, true, { k = "v", a = [] }, 1979-05-27T07:32:00Z]
    retry = 3
    reserve_for = 600
    [cron.job.custom]
      expires_in = 60
"#,
        )
        .unwrap();
        let e = &config.entries[0];
        assert_eq!(e.job.jobtype, "WeeklyReport");
        assert_eq!(e.job.queue, "critical");
        assert_eq!(
            e.job.args.get(),
            r#"[1,"x",2.5,true,{"a":[],"k":"v"},"1979-05-27T07:32:00Z"]"#
        );
        assert_eq!((e.job.retry, e.job.reserve_for), (Some(3), Some(600)));
        assert_eq!(e.job.custom.as_ref().unwrap().get(), r#"{"expires_in":60}"#);

        let tick = e.next_after(ms("2026-03-24T00:00:00Z")).unwrap();
        assert_eq!(tick, ms("2026-03-30T07:00:00Z"));
        let job = e.make_job("0123456789abcdef".to_string(), tick);
        assert_eq!(job.created_at, "2026-03-30T07:00:00Z");
        assert_eq!(job.created_at, format_millis(tick));
        let json = job.to_json();
        assert_eq!(
            json,
            r#"{"retry":3,"custom":{"expires_in":60},"jid":"0123456789abcdef","queue":"critical","jobtype":"WeeklyReport","created_at":"2026-03-30T07:00:00Z","args":[1,"x",2.5,true,{"a":[],"k":"v"},"1979-05-27T07:32:00Z"],"reserve_for":600}"#
        );
        assert_eq!(Job::from_stored(&json).unwrap().to_json(), json);
        let (pushed, at) = Job::parse_for_push(&json, tick + 5_000).unwrap();
        assert_eq!(at, None);
        assert_eq!(pushed.to_json(), json);
        let (validated, _) = job.clone().validate_for_push(tick + 5_000).unwrap();
        assert_eq!(validated.to_json(), json);

        // A minimal template: default queue, empty args; push fills retry.
        let e = entry("@hourly", "UTC");
        let tick = ms("2026-01-01T01:00:00Z");
        let job = e.make_job("abcdefgh".to_string(), tick);
        assert_eq!(
            job.to_json(),
            r#"{"retry":null,"jid":"abcdefgh","queue":"default","jobtype":"T","created_at":"2026-01-01T01:00:00Z","args":[]}"#
        );
        let (pushed, _) = Job::parse_for_push(&job.to_json(), tick).unwrap();
        assert_eq!(
            pushed.to_json(),
            r#"{"retry":25,"jid":"abcdefgh","queue":"default","jobtype":"T","created_at":"2026-01-01T01:00:00Z","args":[]}"#
        );
        // An empty custom table is no custom.
        let config =
            parse("[[cron]]\nschedule = \"@daily\"\n[cron.job]\ntype = \"X\"\n[cron.job.custom]\n")
                .unwrap();
        assert!(config.entries[0].job.custom.is_none());
    }
}
