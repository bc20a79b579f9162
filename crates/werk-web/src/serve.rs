//! Serving the UI over HTTP or HTTPS until the server stops.
//!
//! Connections are served by hyper directly (not `axum::serve`) so a slow or silent client is
//! bounded: at most [`MAX_CONNECTIONS`] at once (further ones are closed at accept), request
//! headers must arrive within [`HEADER_TIMEOUT`], and a TLS handshake within the same time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use werk_store::Store;

use crate::auth;
use crate::{router, App};

/// Most web connections served at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's headers (and its TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Prefix, auth and cross-site checks, before routing.
async fn guard(
    State(password): State<Option<Arc<str>>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let req = auth::strip_prefix(req);
    let path = req.uri().path();
    if let Some(pw) = &password {
        if !auth::is_open(path) && !auth::authorized(req.headers(), pw) {
            let had = req
                .headers()
                .contains_key(axum::http::header::AUTHORIZATION);
            return auth::unauthorized(had);
        }
    }
    if auth::cross_origin(req.method(), req.headers()) {
        tracing::warn!(path, "web: cross-origin request refused");
        return auth::forbidden();
    }
    next.run(req).await
}

/// Serves the UI on `listener` (HTTPS when `tls` is given) until `stop` is cancelled.
pub async fn serve<S: Store>(
    listener: TcpListener,
    app: Arc<App<S>>,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) {
    let password: Option<Arc<str>> = app.opts.password.as_deref().map(Arc::from);
    let svc = tower_layer::Layer::layer(
        &axum::middleware::from_fn_with_state(password, guard),
        router(app),
    );
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "web: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "web: too many connections; closing this one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (svc, tls, stop) = (svc.clone(), tls.clone(), stop.clone());
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(tcp, svc, stop, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, svc, stop, peer).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "web: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("web: requests still running after the shutdown grace period");
    }
}

/// One HTTP/1.1 connection; on shutdown, the request in flight finishes and the connection
/// closes.
async fn connection<I, T>(io: I, svc: T, stop: CancellationToken, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: tower_service::Service<Request<Body>, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    T::Future: Send + 'static,
{
    // The router is always ready (axum's services never apply backpressure), so each request
    // is handed straight to a clone of it.
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let mut svc = svc.clone();
        svc.call(req.map(Body::new))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "web: connection ended with an error");
    }
}
