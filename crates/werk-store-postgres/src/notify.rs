//! Cross-node FETCH wake-ups: a job enqueued through one node wakes a FETCH blocked on another.
//!
//! * Every store method tells its listener after `COMMIT` that a queue got a job; [`Wake`] is
//!   that listener. It wakes this node's FETCHes at once (the server's
//!   [`werk_store::EnqueueListener`]) and counts the queue for the **announcer**.
//! * The announcer is one task per node. It takes everything counted since its last round and
//!   sends it as `NOTIFY` in one statement of its own, outside every write transaction
//!   (`NOTIFY` inside a transaction takes a cluster-wide lock at its commit, which would
//!   serialise the commits of every node): `SELECT pg_notify('werk_enqueued', …) FROM unnest(…)`,
//!   one notification per queue with the number of jobs, `node \n count \n queue`. Rounds are
//!   at least [`ANNOUNCE_GAP`] apart, so under load a node sends at most a few hundred small
//!   notifying statements a second however many jobs it commits, and a lone PUSH is announced
//!   at once. A notification takes no transaction id and writes no WAL, so it never waits for
//!   a synchronous standby.
//! * The **listener** is one dedicated connection per node (`LISTEN werk_enqueued`, not from the
//!   pool). A notification from another node wakes up to `count` FETCHes of that queue here;
//!   this node's own notifications are skipped (they were woken locally already).
//! * **Fallback**: notifications sent while a listener is disconnected are lost. While it is not
//!   listening, [`Wake::poll_interval`] asks every blocked FETCH to look again every
//!   [`POLL_WHILE_DEAF`]; the listener reconnects with backoff (0.1 s doubling to 5 s). When
//!   the listener is lost, and again when `LISTEN` is back, every blocked FETCH of this node is
//!   woken to look once more ([`werk_store::EnqueueListener::wake_all`]), so a FETCH that was
//!   already waiting (without a poll interval) does not sleep through the deaf time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use werk_store::{EnqueueListener, Listener};

/// The channel every node listens on.
pub const CHANNEL: &str = "werk_enqueued";
/// Least time between two announcing statements of a node.
pub const ANNOUNCE_GAP: Duration = Duration::from_millis(5);
/// How often a blocked FETCH looks again while this node's listener is disconnected.
pub const POLL_WHILE_DEAF: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to re-establish the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A notification's payload must stay under PostgreSQL's 8000 bytes; a queue name too long to
/// fit is not announced (other nodes find its jobs by their FETCH timeout's next round).
const MAX_QUEUE_BYTES: usize = 7000;

/// The listener [`crate::PgStore`] reports to (see the module documentation).
pub(crate) struct Wake {
    local: Listener,
    /// Identifies this node's own notifications.
    node: String,
    pending: Mutex<BTreeMap<String, u64>>,
    kick: tokio::sync::Notify,
    listening: AtomicBool,
}

impl Wake {
    pub(crate) fn new(local: Listener) -> Arc<Wake> {
        Arc::new(Wake {
            local,
            node: format!("{:016x}", rand::random::<u64>()),
            pending: Mutex::new(BTreeMap::new()),
            kick: tokio::sync::Notify::new(),
            listening: AtomicBool::new(false),
        })
    }

    /// How long a blocked FETCH may sleep before looking again on its own: `None` while the
    /// listener is up (a notification wakes it), [`POLL_WHILE_DEAF`] while it is not.
    pub(crate) fn poll_interval(&self) -> Option<Duration> {
        if self.listening.load(Ordering::Acquire) {
            None
        } else {
            Some(POLL_WHILE_DEAF)
        }
    }

    /// Whether this node currently receives other nodes' notifications.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A notification from any node.
    fn received(&self, payload: &str) {
        let mut parts = payload.splitn(3, '\n');
        let (Some(node), Some(count), Some(queue)) = (parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(payload, "ignoring a malformed wake-up notification");
            return;
        };
        if node == self.node {
            return;
        }
        let count = count.parse::<u64>().unwrap_or(1).clamp(1, 10_000);
        for _ in 0..count {
            self.local.enqueued(queue);
        }
    }
}

impl EnqueueListener for Wake {
    fn enqueued(&self, queue: &str) {
        self.local.enqueued(queue);
        if queue.len() > MAX_QUEUE_BYTES {
            return;
        }
        *self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(queue.to_string())
            .or_default() += 1;
        self.kick.notify_one();
    }
}

/// Sends what [`Wake`] counted (the announcer); ends when the store is dropped.
pub(crate) async fn announce(wake: Weak<Wake>, pool: deadpool_postgres::Pool) {
    loop {
        let Some(w) = wake.upgrade() else { return };
        // `notified` borrows the Wake: wait a bounded time, so a dropped store ends this task.
        let _ = tokio::time::timeout(Duration::from_secs(1), w.kick.notified()).await;
        let batch = w.take();
        if batch.is_empty() {
            continue;
        }
        let node = w.node.clone();
        drop(w);
        let mut payloads = Vec::with_capacity(batch.len());
        for (queue, n) in batch {
            payloads.push(format!("{node}\n{n}\n{queue}"));
        }
        match pool.get().await {
            Ok(client) => {
                if let Err(e) = client
                    .execute(
                        "SELECT pg_notify($1, p) FROM unnest($2::text[]) p",
                        &[&CHANNEL, &payloads],
                    )
                    .await
                {
                    tracing::debug!(error = %crate::describe_error(&e), "wake-up NOTIFY failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "wake-up NOTIFY: no connection"),
        }
        tokio::time::sleep(ANNOUNCE_GAP).await;
    }
}

/// Keeps a `LISTEN` connection open (reconnecting with backoff) and hands notifications to
/// [`Wake`]; ends when the store is dropped.
pub(crate) async fn listen<T>(wake: Weak<Wake>, config: tokio_postgres::Config, tls: T)
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        match listen_once(&wake, &config, tls.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if let Some(w) = wake.upgrade() {
                    let was = w.listening.swap(false, Ordering::AcqRel);
                    if was {
                        // FETCHes waiting without a poll interval look again, and from now on
                        // poll: enqueues of other nodes are not heard until LISTEN is back.
                        w.local.wake_all();
                        tracing::warn!(
                            error = %e,
                            "lost the wake-up listener; blocked FETCHes poll until it is back"
                        );
                        backoff = Duration::from_millis(100);
                    } else {
                        tracing::debug!(error = %e, "wake-up listener: cannot connect");
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `Ok` when the store is gone, `Err` when the connection failed.
async fn listen_once<T>(
    wake: &Weak<Wake>,
    config: &tokio_postgres::Config,
    tls: T,
) -> Result<(), String>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config
        .connect(tls)
        .await
        .map_err(|e| crate::describe_error(&e))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(crate::describe_error(&e)),
                None => return Err("the connection closed".to_string()),
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| crate::describe_error(&e))?;
        match wake.upgrade() {
            Some(w) => {
                if !w.listening.swap(true, Ordering::AcqRel) {
                    tracing::info!("listening for other nodes' enqueues");
                    // Whatever was enqueued while deaf is found by one more look.
                    w.local.wake_all();
                }
            }
            None => return Ok(()),
        }
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(payload) => match wake.upgrade() {
                        Some(w) => w.received(&payload),
                        None => return Ok(()),
                    },
                    None => return Err("the connection closed".to_string()),
                },
                // Notice a dropped store even while nothing arrives.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if wake.strong_count() == 0 {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    drop(client);
    match result {
        Ok(()) => {
            driver.abort();
            Ok(())
        }
        Err(e) => {
            // The driver's error says more than "closed" (e.g. the server's termination notice).
            let abort = driver.abort_handle();
            let why = match tokio::time::timeout(Duration::from_millis(100), driver).await {
                Ok(Ok(Err(why))) => why,
                _ => e,
            };
            abort.abort();
            Err(why)
        }
    }
}
