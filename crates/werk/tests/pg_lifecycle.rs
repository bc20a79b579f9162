//! The time-dependent job lifecycle (`lifecycle.rs`), on PostgreSQL: in this target every server
//! gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "lifecycle.rs"]
mod lifecycle;
