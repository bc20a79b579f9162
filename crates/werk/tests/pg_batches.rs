//! Enterprise batches end to end (`batches.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "batches.rs"]
mod batches;
