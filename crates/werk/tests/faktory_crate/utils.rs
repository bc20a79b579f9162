//! Werk's stand-in for the `faktory` crate's `tests/real/utils.rs` (0.13.1): the same macros and
//! helpers, but instead of expecting a Faktory server at `FAKTORY_URL` (and skipping without
//! one) or starting one in a container, they start `werk` binaries from this workspace. The
//! assertion macros are the crate's (MIT or Apache-2.0, Copyright (c) 2016 Jon Gjengset and
//! the faktory-rs contributors).

use std::sync::Mutex;
use std::time::Duration;

use crate::common::{Server, ServerOpts};

/// The server every test but the isolated ones shares (the crate's tests isolate themselves
/// by queue names), started on first use and stopped when the test process exits.
static SHARED: Mutex<Option<Server>> = Mutex::new(None);

extern "C" fn stop_shared() {
    if let Ok(mut s) = SHARED.lock() {
        drop(s.take());
    }
}

/// Starts the shared server once and points `FAKTORY_URL` (which `Client::connect()` and
/// `Worker::connect()` read) at it. Every test calls this first, through `skip_check!` or
/// `skip_if_not_enterprise!`, so the variable is set before any test reads it.
pub fn shared_werk() -> String {
    let mut s = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if s.is_none() {
        let server = Server::start(ServerOpts::new());
        // The crate's tests expect a server that has been up a while: `server_state` asserts a
        // nonzero uptime (whole seconds), which a server started a moment ago does not have
        // when this test runs first (always so with nextest, one test per process).
        crate::common::wait_info(
            &mut server.conn(),
            Duration::from_secs(10),
            "an uptime of one second",
            |i| i["server"]["uptime"].as_u64().unwrap_or(0) >= 1,
        );
        std::env::set_var("FAKTORY_URL", server.url());
        // SAFETY: registers a plain function; it runs once at process exit.
        unsafe { libc::atexit(stop_shared) };
        *s = Some(server);
    }
    s.as_ref().unwrap().url()
}

/// The crate skips these tests without `FAKTORY_URL`; here they always run, against Werk.
#[macro_export]
macro_rules! skip_check {
    () => {
        $crate::utils::shared_werk();
    };
}

/// Werk implements the Enterprise features these tests exercise.
#[macro_export]
macro_rules! skip_if_not_enterprise {
    () => {
        $crate::utils::shared_werk();
    };
}

/// The crate runs these only with containers; here the "container" is a fresh `werk`.
#[macro_export]
macro_rules! skip_if_containers_not_enabled {
    () => {};
}

#[macro_export]
macro_rules! assert_gt {
    ($a:expr, $b:expr $(, $rest:expr) *) => {
        assert!($a > $b $(, $rest) *)
    };
}

#[macro_export]
macro_rules! assert_gte {
    ($a:expr, $b:expr $(, $rest:expr) *) => {
        assert!($a >= $b $(, $rest) *)
    };
}

#[macro_export]
macro_rules! assert_lt {
    ($a:expr, $b:expr $(, $rest:expr) *) => {
        assert!($a < $b $(, $rest) *)
    };
}

#[macro_export]
macro_rules! assert_lte {
    ($a:expr, $b:expr $(, $rest:expr) *) => {
        assert!($a <= $b $(, $rest) *)
    };
}

pub fn learn_faktory_url() -> String {
    shared_werk()
}

#[non_exhaustive]
pub struct TestContext {
    /// Stops the server when the test context goes out of scope.
    _server: Server,
    pub faktory_url: String,
}

/// A dedicated server for a test that needs isolation (the crate starts a Faktory container).
pub async fn launch_isolated_faktory(_container_name: Option<String>) -> TestContext {
    let server = tokio::task::spawn_blocking(|| Server::start(ServerOpts::new()))
        .await
        .expect("start werk");
    TestContext {
        faktory_url: server.url(),
        _server: server,
    }
}
