//! The web UI over HTTP (`web_http.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "web_http.rs"]
mod web_http;
