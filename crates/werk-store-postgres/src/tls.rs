//! TLS for the connections to PostgreSQL, with libpq's meaning of the URL's TLS settings.
//!
//! tokio-postgres itself knows only `sslmode=disable|prefer|require` and no certificate
//! settings at all (it refuses unknown keys), and does no TLS without a connector. So
//! [`parse_url`] first takes the TLS settings out of the connection string or URI (below),
//! hands tokio-postgres the rest plus the [`SslMode`] it should use, and builds a rustls
//! [`Connector`] (ring provider, no C library) whose certificate verifier does what libpq's
//! `sslmode` promises:
//!
//! | `sslmode` | TLS | certificate check |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | if the server offers it | none, unless a root certificate is given (then as `verify-ca`) |
//! | `require` | always | none, unless a root certificate is given (then as `verify-ca`) |
//! | `verify-ca` | always | chains to a root of `sslrootcert`; the host name is not checked |
//! | `verify-full` | always | chains to a root of `sslrootcert` and names the host (DNS name or IP address) |
//!
//! Settings taken out (the URL's value wins over the environment variable, as in libpq):
//! `sslmode` (`PGSSLMODE`), `sslrootcert` (`PGSSLROOTCERT`: a PEM file of CA certificates, or
//! `system` for the machine's trusted roots, which makes `verify-full` the default and refuses
//! weaker modes), `sslcert` / `sslkey` (`PGSSLCERT` / `PGSSLKEY`: a client certificate chain
//! and its key, PEM), `sslsni` (`PGSSLSNI`), `ssl_min_protocol_version` /
//! `ssl_max_protocol_version` (`PGSSLMINPROTOCOLVERSION` / `PGSSLMAXPROTOCOLVERSION`; rustls
//! speaks TLSv1.2 and TLSv1.3 only), `sslcompression` (accepted and ignored, as by current
//! libpq). Refused with [`ConnectError::Tls`] rather than ignored: `sslpassword` (encrypted
//! keys), `sslcrl`, `sslcrldir`. libpq's default files are honoured too:
//! `~/.postgresql/root.crt` if it exists (required by `verify-ca` / `verify-full` when
//! `sslrootcert` is not given), `~/.postgresql/postgresql.crt` and `postgresql.key`.
//!
//! Like libpq, no TLS is tried over unix sockets: when every host is a socket directory the
//! TLS settings are not even read. (A list mixing socket and TCP hosts with `sslmode=require`
//! or stronger fails on the socket hosts: tokio-postgres asks every host for TLS.)
//!
//! The connector gives tokio-postgres the `tls-server-end-point` channel binding, so SCRAM
//! authentication over TLS uses `SCRAM-SHA-256-PLUS` (`channel_binding=prefer`, the default)
//! or insists on it (`channel_binding=require`): a man in the middle with another certificate
//! then cannot authenticate even when the certificate is not verified.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::ConnectError;

/// Parses a libpq connection string or URI (see the module documentation), reading the
/// `PGSSL*` environment variables for TLS settings the URL does not give. The pair works for
/// a pool (`deadpool_postgres::Manager::from_config`) and for a single connection
/// (`config.connect(connector)`).
pub(crate) fn parse_url(url: &str) -> Result<(tokio_postgres::Config, Connector), ConnectError> {
    parse_url_with_env(url, &|name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
}

/// The TLS settings [`parse_url`] takes out of the URL, with their environment variables.
const TLS_KEYS: &[(&str, Option<&str>)] = &[
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslpassword", None),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
];

const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn tls_error(msg: impl Into<String>) -> ConnectError {
    ConnectError::Tls(msg.into())
}

/// [`parse_url`] with the environment given (tests).
fn parse_url_with_env(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(tokio_postgres::Config, Connector), ConnectError> {
    let (rest, mut settings) = split_tls_settings(url);
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(ConnectError::Url)?;

    // The URL's values first, then the environment's.
    let mut get = |key: &str| -> Option<(String, String)> {
        if let Some(pos) = settings.iter().rposition(|(k, _)| k == key) {
            let value = settings.remove(pos).1;
            settings.retain(|(k, _)| k != key);
            return Some((key.to_string(), value));
        }
        let var = TLS_KEYS.iter().find(|(k, _)| *k == key)?.1?;
        env(var).map(|v| (var.to_string(), v))
    };
    let sslmode = get("sslmode");
    let rootcert = get("sslrootcert").map(|(_, v)| v);
    let cert = get("sslcert").map(|(_, v)| v);
    let key = get("sslkey").map(|(_, v)| v);
    let password = get("sslpassword");
    let crl = get("sslcrl");
    let crldir = get("sslcrldir");
    let sni = get("sslsni");
    let min_version = get("ssl_min_protocol_version");
    let max_version = get("ssl_max_protocol_version");
    let compression = get("sslcompression");

    let system_roots = rootcert.as_deref() == Some("system");
    let mode = match &sslmode {
        Some((source, value)) => {
            if !MODES.contains(&value.as_str()) {
                return Err(tls_error(format!(
                    "invalid {source} {value:?} (one of {})",
                    MODES.join(", ")
                )));
            }
            if system_roots && value != "verify-full" {
                return Err(tls_error(format!(
                    "weak sslmode \"{value}\" may not be used with sslrootcert=system (use \
                     \"verify-full\")"
                )));
            }
            value.clone()
        }
        None if system_roots => "verify-full".into(),
        None => "prefer".into(),
    };

    // No TLS over unix sockets (libpq never tries it): nothing more to read.
    let hosts = config.get_hosts();
    let unix_only = !hosts.is_empty()
        && config.get_hostaddrs().is_empty()
        && hosts.iter().all(|h| !matches!(h, Host::Tcp(_)));
    if mode == "disable" || unix_only {
        config.ssl_mode(SslMode::Disable);
        return Ok((config, Connector { tls: None }));
    }

    for (what, setting) in [
        ("encrypted client keys (sslpassword)", &password),
        ("certificate revocation lists (sslcrl)", &crl),
        ("certificate revocation lists (sslcrldir)", &crldir),
    ] {
        if let Some((source, _)) = setting {
            return Err(tls_error(format!(
                "{source} is set, but {what} are not supported"
            )));
        }
    }
    if let Some((source, value)) = &compression {
        if value != "0" && value != "1" {
            return Err(tls_error(format!("invalid {source} {value:?} (0 or 1)")));
        }
    }
    let sni = match sni {
        None => true,
        Some((_, v)) if v == "1" => true,
        Some((_, v)) if v == "0" => false,
        Some((source, v)) => return Err(tls_error(format!("invalid {source} {v:?} (0 or 1)"))),
    };
    let versions = protocol_versions(min_version, max_version)?;

    let home = env("HOME").map(PathBuf::from);
    let default_file =
        |name: &str| -> Option<PathBuf> { home.as_ref().map(|h| h.join(".postgresql").join(name)) };

    // The roots to verify against: sslrootcert, else libpq's default file if it exists.
    let roots: Option<(RootCertStore, String)> = match rootcert.as_deref() {
        Some("system") => Some((system_root_store()?, "the system's trusted roots".into())),
        Some(path) => {
            let path = PathBuf::from(path);
            Some((
                root_store(&path)?,
                format!("sslrootcert {}", path.display()),
            ))
        }
        None => match default_file("root.crt").filter(|p| p.exists()) {
            Some(path) => Some((root_store(&path)?, format!("{}", path.display()))),
            None if mode.starts_with("verify-") => {
                let path = default_file("root.crt")
                    .map(|p| format!("\"{}\"", p.display()))
                    .unwrap_or_else(|| "~/.postgresql/root.crt (HOME is not set)".into());
                return Err(tls_error(format!(
                    "sslmode={mode} verifies the server's certificate, but no root certificate \
                     is given: set sslrootcert to a PEM file of the CA certificates to trust, \
                     or sslrootcert=system for the system's trusted roots (the default file \
                     {path} does not exist)"
                )));
            }
            None => None,
        },
    };

    // The client certificate: sslcert, else libpq's default file if it exists.
    let cert_path = match cert {
        Some(path) => Some(PathBuf::from(path)),
        None => default_file("postgresql.crt").filter(|p| p.exists()),
    };
    let client_auth = match cert_path {
        Some(cert_path) => {
            let key_path = key
                .map(PathBuf::from)
                .or_else(|| default_file("postgresql.key"))
                .ok_or_else(|| {
                    tls_error(format!(
                        "client certificate {} given, but no private key (sslkey)",
                        cert_path.display()
                    ))
                })?;
            Some(client_identity(&cert_path, &key_path)?)
        }
        None => None,
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots_text = roots.as_ref().map(|r| r.1.clone()).unwrap_or_default();
    let (verifier, check_name): (Arc<dyn ServerCertVerifier>, bool) = match roots {
        None => (Arc::new(NoCertificateCheck(provider.clone())), false),
        Some((store, _)) => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| {
                        tls_error(format!("cannot build the certificate verifier: {e}"))
                    })?;
            if mode == "verify-full" {
                (webpki, true)
            } else {
                (Arc::new(ChainOnly(webpki)), false)
            }
        }
    };

    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| tls_error(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut tls = match client_auth {
        Some((chain, key, path)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            tls_error(format!(
                "client certificate {} and its key cannot be used: {e}",
                path.display()
            ))
        })?,
        None => builder.with_no_client_auth(),
    };
    // What libpq 17 sends (and a server's direct TLS negotiation demands).
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    tls.enable_sni = sni;

    // tokio-postgres hands the connector the `host` (not the `hostaddr`) as the name to check;
    // with addresses only, the address is the name (as libpq's `require` needs no name at all).
    if config.get_hosts().is_empty() && !config.get_hostaddrs().is_empty() {
        if check_name {
            return Err(tls_error(
                "sslmode=verify-full needs a host name (host=) to check the server's \
                 certificate against, not only hostaddr",
            ));
        }
        for addr in config.get_hostaddrs().to_vec() {
            config.host(addr.to_string());
        }
    }

    config.ssl_mode(match mode.as_str() {
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    Ok((
        config,
        Connector {
            tls: Some(Arc::new(Tls {
                config: Arc::new(tls),
                check_name,
                roots: roots_text,
            })),
        },
    ))
}

/// The protocol versions between `ssl_min_protocol_version` (default TLSv1.2, as libpq's)
/// and `ssl_max_protocol_version` that rustls speaks.
fn protocol_versions(
    min: Option<(String, String)>,
    max: Option<(String, String)>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, ConnectError> {
    const NAMES: [&str; 4] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
    let rank = |setting: &Option<(String, String)>, default: usize| match setting {
        None => Ok(default),
        Some((_, v)) if v.is_empty() => Ok(default),
        Some((source, v)) => NAMES.iter().position(|n| n == v).ok_or_else(|| {
            tls_error(format!(
                "invalid {source} {v:?} (one of {})",
                NAMES.join(", ")
            ))
        }),
    };
    let (lo, hi) = (rank(&min, 2)?, rank(&max, 3)?);
    let mut versions = Vec::new();
    if lo <= 2 && 2 <= hi {
        versions.push(&rustls::version::TLS12);
    }
    if lo <= 3 && 3 <= hi {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(tls_error(format!(
            "no TLS version between {} and {} is supported (TLSv1.2 and TLSv1.3 are)",
            NAMES[lo], NAMES[hi]
        )));
    }
    Ok(versions)
}

/// The CA certificates of a PEM file.
fn root_store(path: &Path) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(path, "root certificate file")? {
        store.add(cert).map_err(|e| {
            tls_error(format!(
                "root certificate file {} holds a certificate that cannot be used: {e}",
                path.display()
            ))
        })?;
    }
    Ok(store)
}

/// The machine's trusted roots (`sslrootcert=system`): where OpenSSL looks (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, the distribution's bundle).
fn system_root_store() -> Result<RootCertStore, ConnectError> {
    let certs = rustls_native_certs::load_native_certs()
        .map_err(|e| tls_error(format!("cannot load the system's trusted roots: {e}")))?;
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs);
    if store.is_empty() {
        return Err(tls_error(
            "sslrootcert=system: the system has no trusted root certificates (install \
             ca-certificates, or set SSL_CERT_FILE)",
        ));
    }
    Ok(store)
}

/// The certificates of a PEM file; an error names the file.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let pem = std::fs::read(path)
        .map_err(|e| tls_error(format!("cannot read {what} {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{what} {} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

type ClientIdentity = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
);

/// A client certificate chain and its private key (PKCS#8, PKCS#1 or SEC1 PEM).
fn client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, ConnectError> {
    let chain = read_certs(cert, "client certificate file")?;
    let pem = std::fs::read(key).map_err(|e| {
        tls_error(format!(
            "client certificate {} given, but its private key file {} cannot be read: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        tls_error(format!(
            "private key file {} holds no usable unencrypted PEM private key ({e})",
            key.display()
        ))
    })?;
    Ok((chain, key_der, cert.to_path_buf()))
}

/// `sslmode=require`/`prefer` without a root certificate: any certificate is accepted (the
/// handshake's signatures are still checked against the certificate's key).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca` (and `require` with a root certificate): webpki's verification without
/// its last step, the name check. (webpki checks the chain, validity and usage first and the
/// name last, so a name mismatch means everything else passed.)
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Makes the TLS connector of each connection: rustls as the URL's TLS settings say (see the
/// module documentation). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connector {
    /// `None` when TLS is off (`sslmode=disable`, unix sockets): tokio-postgres never asks.
    tls: Option<Arc<Tls>>,
}

struct Tls {
    config: Arc<ClientConfig>,
    /// `verify-full`: the host name is checked.
    check_name: bool,
    /// The trusted roots, for error messages.
    roots: String,
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Called for every connection, even when TLS is off (the handshake is not).
    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        let Some(tls) = self.tls.clone() else {
            return Ok(RustlsConnect {
                tls: None,
                name: ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
                host: host.to_string(),
            });
        };
        let name = match ServerName::try_from(host.to_string()) {
            Ok(name) => name,
            Err(e) if tls.check_name => {
                return Err(io::Error::other(format!(
                    "sslmode=verify-full: host {host:?} is neither a DNS name nor an IP \
                     address, so the server's certificate cannot be checked against it: {e}"
                )))
            }
            // No name to check and none to send as SNI.
            Err(_) => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
        };
        Ok(RustlsConnect {
            tls: Some(tls),
            name,
            host: host.to_string(),
        })
    }
}

/// The TLS handshake of one connection.
pub(crate) struct RustlsConnect {
    /// `None` when TLS is off: tokio-postgres then never calls `connect`.
    tls: Option<Arc<Tls>>,
    name: ServerName<'static>,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = self
                .tls
                .ok_or_else(|| io::Error::other("TLS is off (sslmode=disable)"))?;
            tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| explain(e, &tls, &self.host))
        })
    }
}

/// An error with its chain of sources, as one line: tokio-postgres' `Display` names only the
/// kind ("error performing TLS handshake", "db error") and keeps what happened (the
/// certificate problem, the server's message) in its source.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// A handshake error with what it means for the user.
fn explain(e: io::Error, tls: &Tls, host: &str) -> io::Error {
    let Some(rustls::Error::InvalidCertificate(cert_error)) =
        e.get_ref().and_then(|inner| inner.downcast_ref())
    else {
        return e;
    };
    let why = match cert_error {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the server's certificate does not name the host {host:?} (sslmode=verify-full \
                 checks the host name; verify-ca would not)"
            )
        }
        CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
            "the server's certificate is not trusted: it was not issued by a certificate \
             authority of {}",
            tls.roots
        ),
        _ => "the server's certificate was refused".to_string(),
    };
    io::Error::new(e.kind(), format!("{why} ({e})"))
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, connection) = self.0.get_ref();
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map(ChannelBinding::tls_server_end_point)
            .unwrap_or_else(ChannelBinding::none)
    }
}

/// RFC 5929's `tls-server-end-point`: the hash of the server's certificate with the hash
/// function of its signature algorithm (SHA-256 for MD5 and SHA-1), as PostgreSQL computes it.
/// `None` for an algorithm without a separate hash (Ed25519, RSA-PSS), where the server cannot
/// compute it either; tokio-postgres then authenticates without channel binding.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, .. }
    let (0x30, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (0x30, _tbs, rest) = der_element(certificate)? else {
        return None;
    };
    let (0x30, algorithm, _) = der_element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04]; // 1.2.840.10045.4
    enum Hash {
        Sha224,
        Sha256,
        Sha384,
        Sha512,
    }
    let hash = if let Some(n) = oid.strip_prefix(RSA) {
        match n {
            [4] | [5] | [11] => Hash::Sha256, // MD5, SHA-1 (replaced by SHA-256), SHA-256
            [12] => Hash::Sha384,
            [13] => Hash::Sha512,
            [14] => Hash::Sha224,
            _ => return None,
        }
    } else if let Some(n) = oid.strip_prefix(ECDSA) {
        match n {
            [1] | [3, 2] => Hash::Sha256, // ecdsa-with-SHA1 (replaced), ecdsa-with-SHA256
            [3, 1] => Hash::Sha224,
            [3, 3] => Hash::Sha384,
            [3, 4] => Hash::Sha512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(match hash {
        Hash::Sha224 => sha2::Sha224::digest(cert).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Takes the [`TLS_KEYS`] settings out of a connection string or URI: the rest (for
/// tokio-postgres) and the settings, in order (the last of a key wins). A string this cannot
/// split is returned whole, for tokio-postgres to report.
fn split_tls_settings(url: &str) -> (String, Vec<(String, String)>) {
    let result = match ["postgres://", "postgresql://"]
        .iter()
        .find(|p| url.starts_with(*p))
    {
        Some(_) => split_uri(url),
        None => split_key_values(url),
    };
    result.unwrap_or_else(|| (url.to_string(), Vec::new()))
}

/// Whether a setting is one of [`TLS_KEYS`]; an `sslmode` that is no libpq mode stays in the
/// URL, for tokio-postgres to report as an invalid URL.
fn is_ours(key: &str, value: &str) -> bool {
    TLS_KEYS.iter().any(|(k, _)| *k == key) && (key != "sslmode" || MODES.contains(&value))
}

/// A URI's query parameters, split as tokio-postgres splits them: the credentials end at the
/// first `@`, the query starts at the next `?`, a key ends at `=` and a value at `&`.
fn split_uri(url: &str) -> Option<(String, Vec<(String, String)>)> {
    let after_credentials = url.find('@').map(|i| i + 1).unwrap_or(0);
    let Some(q) = url[after_credentials..]
        .find('?')
        .map(|i| after_credentials + i)
    else {
        return Some((url.to_string(), Vec::new()));
    };
    let (head, mut query) = (&url[..q], &url[q + 1..]);
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    while !query.is_empty() {
        let eq = query.find('=')?;
        let raw_key = &query[..eq];
        let (raw_value, rest) = match query[eq + 1..].find('&') {
            Some(amp) => (&query[eq + 1..eq + 1 + amp], &query[eq + 2 + amp..]),
            None => (&query[eq + 1..], ""),
        };
        let key = percent_decode(raw_key)?;
        // Only the TLS settings' values are decoded (a `host` may be a path that is no UTF-8).
        let value = match TLS_KEYS.iter().any(|(k, _)| *k == key) {
            true => Some(percent_decode(raw_value)?),
            false => None,
        };
        match value {
            Some(value) if is_ours(&key, &value) => taken.push((key, value)),
            _ => kept.push(&query[..eq + 1 + raw_value.len()]),
        }
        query = rest;
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Some((rest, taken))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A `key=value` connection string, tokenized as tokio-postgres does (values quoted with `'`
/// or not, `\` escaping the next character), rebuilt without the TLS settings.
fn split_key_values(s: &str) -> Option<(String, Vec<(String, String)>)> {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for (key, value) in tokenize_key_values(s)? {
        if is_ours(&key, &value) {
            taken.push((key, value));
        } else {
            kept.push((key, value));
        }
    }
    let rest = kept
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ");
    Some((rest, taken))
}

fn tokenize_key_values(s: &str) -> Option<Vec<(String, String)>> {
    let mut chars = s.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            // The end (or a stray `=`, which tokio-postgres reports).
            return chars.peek().is_none().then_some(pairs);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(c) = chars.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(url: &str) -> Result<(tokio_postgres::Config, Connector), ConnectError> {
        parse_url_with_env(url, &no_env)
    }

    fn tls_message(r: Result<(tokio_postgres::Config, Connector), ConnectError>) -> String {
        match r {
            Err(ConnectError::Tls(m)) => m,
            Err(e) => panic!("not a TLS settings error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn uri_settings_are_taken_out() {
        let (rest, taken) = split_tls_settings(
            "postgresql://u:p%3F@h1,h2:5433/db?sslmode=verify-full&application_name=a%26b\
             &sslrootcert=%2Ftmp%2Fca%20x.pem&sslmode=verify-ca",
        );
        assert_eq!(
            rest,
            "postgresql://u:p%3F@h1,h2:5433/db?application_name=a%26b"
        );
        assert_eq!(
            taken,
            pairs(&[
                ("sslmode", "verify-full"),
                ("sslrootcert", "/tmp/ca x.pem"),
                ("sslmode", "verify-ca"),
            ])
        );
        let (rest, taken) = split_tls_settings("postgres://h/db?sslmode=require");
        assert_eq!(rest, "postgres://h/db");
        assert_eq!(taken, pairs(&[("sslmode", "require")]));
        let (rest, taken) = split_tls_settings("postgres://h/db");
        assert_eq!((rest.as_str(), taken.len()), ("postgres://h/db", 0));
        // The last value wins.
        let (config, _) = parse("postgres://h/db?sslmode=verify-full&sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn key_value_settings_are_taken_out() {
        let (rest, taken) = split_tls_settings(
            "host=h  sslmode = verify-ca sslrootcert='/a b/c\\'d' password=x\\ y dbname=''",
        );
        assert_eq!(rest, "host='h' password='x y' dbname=''");
        assert_eq!(
            taken,
            pairs(&[("sslmode", "verify-ca"), ("sslrootcert", "/a b/c'd")])
        );
        let config = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(config.get_password(), Some(&b"x y"[..]));
        assert_eq!(config.get_dbname(), Some(""));
        // Quotes and backslashes survive the round trip.
        let (rest, _) = split_tls_settings(r"application_name='it\'s a \\ test' sslmode=require");
        let config = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(config.get_application_name(), Some(r"it's a \ test"));
    }

    #[test]
    fn modes_map_to_tokio_postgres() {
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            let (config, connector) = parse(&format!("host=h sslmode={mode}")).unwrap();
            assert_eq!(config.get_ssl_mode(), expected, "{mode}");
            assert_eq!(connector.tls.is_none(), mode == "disable");
        }
        let (config, _) = parse("host=h").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn bad_values_are_refused() {
        // A bad sslmode in the URL is left to tokio-postgres: an invalid URL.
        assert!(matches!(
            parse("host=h sslmode=bogus"),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            parse("postgresql://h/db?sslmode=bogus"),
            Err(ConnectError::Url(_))
        ));
        // Still an unknown option for tokio-postgres.
        assert!(matches!(
            parse("host=h sslcertmode=require"),
            Err(ConnectError::Url(_))
        ));
        let m = tls_message(parse("host=h sslsni=2"));
        assert!(m.contains("sslsni"), "{m}");
        let m = tls_message(parse("host=h ssl_min_protocol_version=TLSv9"));
        assert!(m.contains("ssl_min_protocol_version"), "{m}");
        let m = tls_message(parse(
            "host=h ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=TLSv1.2",
        ));
        assert!(m.contains("no TLS version"), "{m}");
        let m = tls_message(parse("host=h sslrootcert=system sslmode=require"));
        assert!(m.contains("weak sslmode \"require\""), "{m}");
    }

    #[test]
    fn protocol_versions_are_clamped_to_rustls() {
        let s = |v: &str| Some(("k".to_string(), v.to_string()));
        let v = protocol_versions(None, None).unwrap();
        assert_eq!(v.len(), 2);
        let v = protocol_versions(s("TLSv1"), s("TLSv1.2")).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_2);
        let v = protocol_versions(s("TLSv1.3"), None).unwrap();
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_3);
        assert!(protocol_versions(None, s("TLSv1.1")).is_err());
    }

    #[test]
    fn unsupported_settings_are_errors_not_ignored() {
        for key in ["sslpassword", "sslcrl", "sslcrldir"] {
            let m = tls_message(parse(&format!("host=h sslmode=require {key}=x")));
            assert!(m.contains(key) && m.contains("not supported"), "{m}");
        }
        // ... unless TLS is off, as libpq never reads them then.
        assert!(parse("host=h sslmode=disable sslcrl=x").is_ok());
    }

    #[test]
    fn environment_variables_fill_in() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("disable".to_string()),
            "HOME" => Some("/nonexistent".to_string()),
            _ => None,
        };
        let (config, _) = parse_url_with_env("host=h", &env).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        // The URL wins.
        let (config, _) = parse_url_with_env("host=h sslmode=require", &env).unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);

        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some("/nonexistent/ca.pem".to_string()),
            _ => None,
        };
        let m = tls_message(parse_url_with_env("host=h", &env));
        assert!(m.contains("/nonexistent/ca.pem"), "{m}");
        let env = |name: &str| (name == "PGSSLMODE").then(|| "bogus".to_string());
        let m = tls_message(parse_url_with_env("host=h", &env));
        assert!(m.contains("PGSSLMODE"), "{m}");
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let env = |name: &str| (name == "HOME").then(|| "/nonexistent".to_string());
        for mode in ["verify-ca", "verify-full"] {
            let m = tls_message(parse_url_with_env(&format!("host=h sslmode={mode}"), &env));
            assert!(
                m.contains("sslrootcert") && m.contains("/nonexistent/.postgresql/root.crt"),
                "{m}"
            );
        }
        // require does not verify without one.
        assert!(parse_url_with_env("host=h sslmode=require", &env).is_ok());
    }

    #[test]
    fn unix_sockets_skip_tls() {
        let (config, connector) =
            parse("host=/run/postgresql sslmode=verify-full sslrootcert=/nonexistent").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        assert!(connector.tls.is_none());
        // A TCP host among them: TLS as asked.
        let (config, _) = parse("host=/run/postgresql,db sslmode=require").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn an_address_without_a_name() {
        let (config, _) = parse("hostaddr=10.0.0.1 sslmode=require").unwrap();
        assert_eq!(config.get_hosts(), &[Host::Tcp("10.0.0.1".into())]);
        let (_dir, ca) = tempfile_ca();
        let m = tls_message(parse(&format!(
            "hostaddr=10.0.0.1 sslmode=verify-full sslrootcert={}",
            ca.display()
        )));
        assert!(m.contains("host name"), "{m}");
    }

    /// A CA certificate in a temporary file.
    fn tempfile_ca() -> (tempfile::TempDir, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        (dir, path)
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384};
        for (alg, len) in [(&PKCS_ECDSA_P256_SHA256, 32), (&PKCS_ECDSA_P384_SHA384, 48)] {
            let key = KeyPair::generate_for(alg).unwrap();
            let cert = CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let hash = tls_server_end_point(cert.der()).expect("a hash");
            assert_eq!(hash.len(), len);
            let expected = if len == 32 {
                sha2::Sha256::digest(cert.der()).to_vec()
            } else {
                sha2::Sha384::digest(cert.der()).to_vec()
            };
            assert_eq!(hash, expected);
        }
        // Ed25519 has no separate hash: no channel binding.
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(tls_server_end_point(cert.der()), None);
        assert_eq!(tls_server_end_point(b"\x30\x82garbage"), None);
    }
}
