//! Werk's network server: the Faktory protocol over TCP on top of any [`Store`].
//!
//! * [`conn`]: one task per connection — handshake (HI / HELLO / password), then a command loop
//!   that parses each line ([`werk_protocol`]), applies it through the store and answers.
//! * [`tasks`]: background tasks — scheduled/retry promotion, reservation expiry, dead-set
//!   purge, worker heartbeat reaping.
//! * [`cron`]: the cron ticker (one job per entry and tick, exactly once).
//! * [`ent`]: the Enterprise commands (`BATCH`, `TRACK`).
//! * [`workers`]: the registry of worker processes: in memory, or the cluster-wide one of a
//!   shared store.
//! * [`signals`]: wake-ups for blocked FETCHes.
//! * [`tls`]: the optional TLS certificate of the configuration directory.
//!
//! Shutdown: [`Server::run`] stops accepting when its token is cancelled, lets commands in
//! flight finish (their commits complete), answers any further command with
//! `-ERR shutdown in progress`, then closes the store.

pub mod conn;
pub mod cron;
pub mod ent;
pub mod info;
pub mod list;
pub mod metrics;
pub mod signals;
pub mod tasks;
pub mod tls;
pub mod workers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use werk_core::cron::CronConfig;
use werk_store::Store;

pub use signals::QueueSignals;
pub use tokio_rustls;
pub use workers::Workers;

/// The kernel send buffer of each client connection (`SO_SNDBUF`; Linux doubles it for its
/// bookkeeping), instead of the autotuned one that grows to `net.ipv4.tcp_wmem`'s maximum
/// (4 MiB by default).
///
/// A connection runs one command at a time and answers it before reading the next, so the
/// replies a client has not read wait in this buffer, and once it is full the connection's
/// task stops executing that client's commands until the client reads. Autotuned, a client
/// that never reads got up to 4 MiB of replies run for it — some 3,000 INFOs, each a round of
/// store queries (over 10 s of database work on PostgreSQL) — before it was held; bounded, it
/// is held after a few hundred, and the kernel memory one connection can pin is bounded too.
/// Replies bigger than the buffer (a large job) still go out whole: the write waits for the
/// client to take the rest. The cost is the throughput of one connection over a
/// long round trip (about the buffer per round trip: some MB/s at 50 ms), which matters only
/// for jobs of megabytes; one small command in flight per connection never approaches it.
pub const CLIENT_SEND_BUFFER: usize = 128 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Password clients must prove in HELLO; `None` = no authentication.
    pub password: Option<String>,
    /// Longest accepted command line, in bytes.
    pub max_line: usize,
    /// Most open connections (after HELLO).
    pub max_connections: usize,
    /// How long a FETCH waits for a job before answering `$-1`.
    pub fetch_timeout: Duration,
    /// How long a client may take to complete HELLO.
    pub handshake_timeout: Duration,
    /// A worker silent for longer is dropped and its connections closed.
    pub heartbeat_timeout: Duration,
    /// How often due scheduled and retry jobs are moved to their queues.
    pub scan_interval: Duration,
    /// How often expired reservations are failed.
    pub reap_interval: Duration,
    /// How often expired dead jobs are purged.
    pub purge_interval: Duration,
    /// How long shutdown waits for connections to finish their command in flight.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            password: None,
            max_line: 16 * 1024 * 1024,
            max_connections: 10_000,
            fetch_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(60),
            scan_interval: Duration::from_secs(1),
            reap_interval: Duration::from_secs(1),
            purge_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Runtime statistics for INFO.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub commands: AtomicU64,
    /// FETCHes that found no job and are waiting to be woken by an enqueue (or to time out).
    pub fetches_waiting: AtomicU64,
    pub next_conn_id: AtomicU64,
    pub tasks: tasks::TaskStats,
}

/// Everything connections and tasks share.
pub struct Shared<S: Store> {
    pub store: Arc<S>,
    pub config: Config,
    pub workers: Workers,
    pub signals: Arc<QueueSignals>,
    pub counters: Counters,
    /// Prometheus metrics ([`metrics::render`]).
    pub metrics: metrics::Metrics,
    pub started: Instant,
    pub shutdown: CancellationToken,
}

impl<S: Store> Shared<S> {
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// A Werk server over one store.
pub struct Server<S: Store> {
    shared: Arc<Shared<S>>,
    cron: Option<(watch::Receiver<Arc<CronConfig>>, cron::CronOptions)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl<S: Store> Server<S> {
    /// `signals` must be the listener the store was opened with, so pushes wake FETCHes.
    pub fn new(store: Arc<S>, signals: Arc<QueueSignals>, config: Config) -> Server<S> {
        Server {
            shared: Arc::new(Shared {
                store,
                config,
                workers: Workers::default(),
                signals,
                counters: Counters::default(),
                metrics: metrics::Metrics::new(),
                started: Instant::now(),
                shutdown: CancellationToken::new(),
            }),
            cron: None,
            tls: None,
        }
    }

    /// Runs the cron ticker on this schedule; sending a new one through the channel's sender
    /// replaces it (SIGHUP).
    pub fn with_cron(
        mut self,
        schedule: watch::Receiver<Arc<CronConfig>>,
        options: cron::CronOptions,
    ) -> Server<S> {
        self.cron = Some((schedule, options));
        self
    }

    /// Serves TLS only (see [`tls::load`]); the TLS handshake runs in each connection's task,
    /// within the handshake timeout.
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Server<S> {
        self.tls = Some(acceptor);
        self
    }

    pub fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// Serves until `stop` is cancelled, then shuts down gracefully and closes the store.
    pub async fn run(self, listener: TcpListener, stop: CancellationToken) {
        let shared = self.shared;
        let tracker = TaskTracker::new();
        tasks::spawn_all(&shared, &tracker);
        if let Some((schedule, options)) = self.cron {
            tracker.spawn(cron::run(shared.clone(), schedule, options));
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let _ = socket2::SockRef::from(&stream)
                            .set_send_buffer_size(CLIENT_SEND_BUFFER);
                        let shared = shared.clone();
                        match self.tls.clone() {
                            None => tracker.spawn(conn::serve(shared, stream, peer)),
                            Some(tls) => tracker.spawn(conn::serve_tls(shared, tls, stream, peer)),
                        };
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving the others.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down: no longer accepting connections");
        drop(listener);
        shared.shutdown.cancel();
        tracker.close();
        if tokio::time::timeout(shared.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still busy after the shutdown grace period");
        }
        shared.store.close().await;
        tracing::info!(
            connections = shared.counters.connections.load(Ordering::Relaxed),
            "store closed"
        );
    }
}
