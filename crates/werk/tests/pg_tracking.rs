//! Enterprise job tracking end to end (`tracking.rs`), on PostgreSQL: in this target every server
//! gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "tracking.rs"]
mod tracking;
