//! The `faktory` crate's own end-to-end suite (`tests/real` of faktory 0.13.1, community and
//! Enterprise tests), run unmodified against the real `werk` binary. The test files are pinned,
//! attributed copies in `faktory_crate/` (the crate is MIT or Apache-2.0); `faktory_crate/utils.rs`
//! replaces the crate's helpers so that every test runs against a `werk` started from this
//! workspace instead of being skipped without a Faktory server. To follow a new crate version,
//! copy its `tests/real/{community,enterprise}.rs` over these (keep the header) and adapt
//! `utils.rs` if its helpers changed.

#![allow(clippy::all, deprecated, unused_imports)]

// The crate's tests use rand 0.8 (`thread_rng`, `gen_range` over `isize`); Werk uses 0.9.
extern crate rand08 as rand;

mod common;

#[path = "faktory_crate/community.rs"]
mod community;
#[path = "faktory_crate/enterprise.rs"]
mod enterprise;
#[path = "faktory_crate/utils.rs"]
mod utils;
