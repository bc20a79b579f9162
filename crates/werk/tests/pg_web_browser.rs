//! The web UI in a real browser (`web_browser.rs`), on PostgreSQL: in this target every server gets
//! `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "web_browser.rs"]
mod web_browser;
