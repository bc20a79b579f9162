//! Enterprise features through the real `faktory` crate (`faktory_ent.rs`), on PostgreSQL: in this
//! target every server gets `--database-url` for a database of its own (see `common/mod.rs`).

#[path = "faktory_ent.rs"]
mod faktory_ent;
