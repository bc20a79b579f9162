//! The `faktory` crate's own end-to-end suite (`faktory_crate.rs`), on PostgreSQL: in this
//! target every server gets `--database-url` for a database of its own (see `common/mod.rs`).
//! The same modules as `faktory_crate.rs`, at the crate root, where the crate's macros
//! (`$crate::utils::…`) and its `rand` (0.8) expect them.

#![allow(clippy::all, deprecated, unused_imports)]

extern crate rand08 as rand;

mod common;

#[path = "faktory_crate/community.rs"]
mod community;
#[path = "faktory_crate/enterprise.rs"]
mod enterprise;
#[path = "faktory_crate/utils.rs"]
mod utils;
