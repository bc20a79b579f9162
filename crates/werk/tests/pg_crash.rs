//! The crash test (`crash.rs`: SIGKILL and restart under traffic), on PostgreSQL: in this target
//! every server gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "crash.rs"]
mod crash;
