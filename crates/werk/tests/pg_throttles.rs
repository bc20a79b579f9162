//! Enterprise throttles end to end (`throttles.rs`), on PostgreSQL: in this target every server
//! gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "throttles.rs"]
mod throttles;
