//! A small Faktory-protocol client for Werk's shell commands (`werk info`, `werk queue …`,
//! `werk job push`, `werk retries …`, `werk batch status`): connects like every Faktory client
//! does — `FAKTORY_URL` / `--url` as `tcp://[:PASSWORD@]HOST:PORT` or `tcp+tls://…` — answers
//! the `HI` (with the password hash when the server asks for one) and sends one command at a
//! time.
//!
//! TLS is rustls (ring). The server's certificate is checked against Debian's CA bundle
//! (`/etc/ssl/certs/ca-certificates.crt`) plus any `--tls-ca FILE` (PEM), and its name against
//! the URL's host.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The default server, as Faktory clients have it.
pub const DEFAULT_URL: &str = "tcp://localhost:7419";

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub password: Option<String>,
}

/// Parses `tcp://[:PASSWORD@]HOST[:PORT]` or `tcp+tls://…` (port 7419 by default).
pub fn parse_url(url: &str) -> Result<Target> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("tcp+tls://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("tcp://") {
        (false, r)
    } else {
        bail!("unsupported server URL {url:?}: use tcp://[:password@]host:port or tcp+tls://…");
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let password = userinfo
        .map(|u| u.split_once(':').map_or(u, |(_, p)| p))
        .map(percent_decode)
        .transpose()?
        .filter(|p| !p.is_empty());
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h.to_string(), p.strip_prefix(':')),
            None => bail!("bad IPv6 host in {url:?}"),
        },
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        },
    };
    if host.is_empty() {
        bail!("no host in server URL {url:?}");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("bad port in server URL {url:?}"))?,
        None => 7419,
    };
    Ok(Target {
        host,
        port,
        tls,
        password,
    })
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("bad %-escape in the URL")?;
            out.push(u8::from_str_radix(hex, 16).context("bad %-escape in the URL")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL's password is not UTF-8")
}

/// One answer of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Simple(String),
    Bulk(Option<String>),
    Error(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

impl Client {
    /// Connects (10 s at most), reads `HI`, sends `HELLO` (with the password hash if asked).
    pub async fn connect(target: &Target, extra_ca: Option<&std::path::Path>) -> Result<Client> {
        let what = format!("{}:{}", target.host, target.port);
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .with_context(|| format!("cannot connect to {what}: timed out"))?
        .with_context(|| format!("cannot connect to {what}"))?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if target.tls {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(extra_ca)?));
            let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                .with_context(|| format!("{:?} is not a valid TLS server name", target.host))?;
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {what} failed"))?,
            )
        } else {
            Box::new(tcp)
        };
        let mut c = Client {
            io: BufReader::new(io),
        };
        let hi = match c.read().await.context("no greeting from the server")? {
            Reply::Simple(s) if s.starts_with("HI ") => s,
            other => bail!("the server did not greet with HI: {other:?}"),
        };
        let hi: Value = serde_json::from_str(&hi[3..]).context("the HI greeting is not JSON")?;
        let mut hello = json!({"v": 2});
        if let Some(salt) = hi.get("s").and_then(Value::as_str) {
            let Some(password) = &target.password else {
                bail!("the server requires a password: set FAKTORY_URL=tcp://:PASSWORD@host:port");
            };
            let iterations = hi.get("i").and_then(Value::as_u64).unwrap_or(1);
            let iterations = u32::try_from(iterations).context("absurd iteration count in HI")?;
            hello["pwdhash"] = json!(werk_protocol::password_hash(password, salt, iterations));
        }
        match c.call(&format!("HELLO {hello}")).await? {
            Reply::Ok => Ok(c),
            Reply::Error(e) => bail!("the server refused the connection: {e}"),
            other => bail!("unexpected answer to HELLO: {other:?}"),
        }
    }

    /// Sends one command line and reads its answer.
    pub async fn call(&mut self, line: &str) -> Result<Reply> {
        let w = self.io.get_mut();
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\r\n").await?;
        w.flush().await?;
        self.read().await
    }

    async fn read(&mut self) -> Result<Reply> {
        let mut line = Vec::new();
        if self.io.read_until(b'\n', &mut line).await? == 0 {
            bail!("the server closed the connection");
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let text = String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned();
        Ok(match line.first() {
            Some(b'+') if text == "OK" => Reply::Ok,
            Some(b'+') => Reply::Simple(text),
            Some(b'-') => Reply::Error(text.strip_prefix("ERR ").unwrap_or(&text).to_string()),
            Some(b'$') => {
                let n: i64 = text.parse().context("bad bulk length from the server")?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0; n as usize + 2];
                self.io.read_exact(&mut buf).await?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
            _ => bail!("unexpected line from the server: {text:?}"),
        })
    }
}

/// The CA bundle of Debian's `ca-certificates`, read when present.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn tls_config(extra_ca: Option<&std::path::Path>) -> Result<tokio_rustls::rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let mut files: Vec<&std::path::Path> = Vec::new();
    if std::path::Path::new(SYSTEM_CAS).exists() {
        files.push(std::path::Path::new(SYSTEM_CAS));
    }
    files.extend(extra_ca);
    for file in files {
        for cert in CertificateDer::pem_file_iter(file)
            .with_context(|| format!("cannot read certificates from {}", file.display()))?
        {
            let cert = cert.with_context(|| format!("bad certificate in {}", file.display()))?;
            // A bundle may hold certificates rustls does not take; skip those.
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        bail!(
            "no CA certificates to check the server with: install ca-certificates or pass --tls-ca"
        );
    }
    Ok(
        tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_faktory_clients_take_them() {
        let t = parse_url("tcp://localhost:7419").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls, t.password),
            ("localhost", 7419, false, None)
        );
        let t = parse_url("tcp+tls://:s%40cret@example.com").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("example.com", 7419, true)
        );
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        let t = parse_url("tcp://[::1]:7500/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 7500));
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("tcp://:7419").is_err());
        assert!(parse_url("tcp://x:notaport").is_err());
    }
}
