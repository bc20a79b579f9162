//! The end-to-end suite with the real `faktory` crate (`faktory_client.rs`), on PostgreSQL: in this
//! target every server gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "faktory_client.rs"]
mod faktory_client;
