//! Werk's web UI (Faktory's port 7420): server-rendered pages (askama templates compiled into
//! the binary), static assets embedded, no CDN and no build step.
//!
//! * Every action goes through the same durable store operations as the protocol (MUTATE,
//!   QUEUE, [`werk_store::Store::delete_jobs`]).
//! * Lists page by index ([`werk_store::Store::page`], keyset cursors): a page costs the same
//!   on page 1 and page 40,000, and nothing loads a whole set.
//! * HTTP Basic auth with the password (`/health` and `/static/*` are open); cross-site POSTs
//!   are refused (`Sec-Fetch-Site` / `Origin`, as Go's `CrossOriginProtection` that Faktory
//!   uses); `X-Script-Name: /prefix` serves the UI under a reverse proxy's prefix.

mod auth;
mod pages;
mod serve;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use werk_core::cron::CronConfig;
use werk_server::Shared;
use werk_store::{Store, Throttle};

pub use serve::serve;

/// What the UI needs besides the server's shared state.
#[derive(Default)]
pub struct WebOptions {
    /// HTTP Basic auth password (`None`: no auth).
    pub password: Option<String>,
    /// The running cron schedule (for the Cron page).
    pub cron: Option<watch::Receiver<Arc<CronConfig>>>,
    /// The running throttles (for the Throttles page).
    pub throttles: Option<watch::Receiver<Arc<Vec<Throttle>>>>,
}

/// The UI's state.
pub struct App<S: Store> {
    pub shared: Arc<Shared<S>>,
    pub opts: WebOptions,
}

/// The UI's routes (before the prefix and auth layers [`serve`] adds).
pub fn router<S: Store>(app: Arc<App<S>>) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(dashboard::<S>))
        .route("/stats", get(stats::<S>))
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/static/{file}", get(static_file))
        .route("/queues", get(queues::<S>))
        .route("/queues/{name}", get(queue::<S>).post(queue_action::<S>))
        .route("/busy", get(busy::<S>).post(busy_action::<S>))
        .route("/retries", get(set_list::<S>).post(set_action::<S>))
        .route("/scheduled", get(set_list::<S>).post(set_action::<S>))
        .route("/morgue", get(set_list::<S>).post(set_action::<S>))
        .route("/retries/{jid}", get(job_page::<S>).post(job_action::<S>))
        .route("/scheduled/{jid}", get(job_page::<S>).post(job_action::<S>))
        .route("/morgue/{jid}", get(job_page::<S>).post(job_action::<S>))
        .route("/cron", get(cron::<S>))
        .route("/batches", get(batches::<S>))
        .route("/throttles", get(throttles::<S>))
        .with_state(app)
}
