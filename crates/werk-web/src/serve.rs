//! Serving the UI over HTTP or HTTPS until the server stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use werk_store::Store;

use crate::auth;
use crate::{router, App};

/// Prefix, auth and cross-site checks, before routing.
async fn guard(State(password): State<Option<Arc<str>>>, req: Request<Body>, next: Next) -> Response {
    let req = auth::strip_prefix(req);
    let path = req.uri().path();
    if let Some(pw) = &password {
        if !auth::is_open(path) && !auth::authorized(req.headers(), pw) {
            let had = req.headers().contains_key(axum::http::header::AUTHORIZATION);
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
    let routes = router(app);
    let svc = tower_layer::Layer::layer(
        &axum::middleware::from_fn_with_state(password, guard),
        routes,
    );
    let shutdown = stop.clone().cancelled_owned();
    let result = match tls {
        None => {
            axum::serve(listener, axum::ServiceExt::<Request<Body>>::into_make_service(svc))
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(acceptor) => {
            let tls_listener = TlsListener::start(listener, acceptor, stop);
            axum::serve(
                tls_listener,
                axum::ServiceExt::<Request<Body>>::into_make_service(svc),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "web UI stopped");
    }
}

/// A listener whose connections are TLS streams; handshakes run in their own tasks (with a
/// timeout) so a slow client cannot hold up the others.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!(error = %e, "web: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(v) => v,
            // The acceptor stopped (shutdown): wait for the graceful shutdown to end serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
