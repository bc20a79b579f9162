//! The hostile-client suite (`hostile.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "hostile.rs"]
mod hostile;
