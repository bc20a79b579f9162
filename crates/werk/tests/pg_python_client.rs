//! The Python client's end-to-end suite (`python_client.rs`), on PostgreSQL: in this target every
//! server gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "python_client.rs"]
mod python_client;
