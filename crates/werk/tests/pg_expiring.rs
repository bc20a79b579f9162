//! Expiring jobs end to end (`expiring.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "expiring.rs"]
mod expiring;
