//! Cron end to end (`cron.rs`), on PostgreSQL: in this target every server gets `--database-url`
//! for a database of its own (see `common/mod.rs`).

#[path = "cron.rs"]
mod cron;
