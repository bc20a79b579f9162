//! systemd's readiness protocol (`Type=notify`): `READY=1` once both listeners accept
//! connections, `STOPPING=1` when the shutdown begins — a datagram to `$NOTIFY_SOCKET` (a path,
//! or `@name` in the abstract namespace). Without the variable (not started by systemd) nothing
//! is sent. A failure to send is logged, never fatal.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd if it asked for notifications.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, state, "cannot notify systemd");
    }
}
