//! The raw-protocol suite (`protocol.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "protocol.rs"]
mod protocol;
