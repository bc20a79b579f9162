//! TLS on the protocol port (a certificate made here with rcgen, the real `faktory` crate as a
//! `tcp+tls` client) and Faktory-style configuration: `-e`, `FAKTORY_SKIP_PASSWORD`,
//! `[faktory]`/`[web]` in conf.d, `--version`, `--log-format json`.
//!
//! The `faktory` crate's `Client` writes `END` in its `Drop` through `block_in_place`, so the
//! async tests run on the multi-threaded runtime, with the server declared first.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use faktory::rustls::TlsStream;
use faktory::{Client, Job, Worker};
use faktory_rustls::{ClientConfig, RootCertStore};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio::io::BufStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    ca_der: faktory_rustls::pki_types::CertificateDer<'static>,
    /// The server certificate followed by the CA (a chain, as a real deployment has).
    chain_pem: String,
    key_pem: String,
    ca_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "werk test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "werk test server");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_der: ca.der().clone(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
        ca_pem: ca.pem(),
    }
}

/// A rustls client configuration (the rustls the faktory crate uses) trusting only `pki`'s CA.
fn client_config(pki: &Pki) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("CA certificate");
    ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A temporary directory with `conf/` (the config directory) holding the PEM files.
fn tls_dir(pki: &Pki) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix("werk-tls-")
        .tempdir()
        .unwrap();
    let conf = tmp.path().join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(conf.join("public.cert.pem"), &pki.chain_pem).unwrap();
    fs::write(conf.join("private.key.pem"), &pki.key_pem).unwrap();
    (tmp, conf)
}

/// A TLS server (the `TempDir` is dropped after the server: tuple fields drop in order).
fn tls_server(pki: &Pki, opts: ServerOpts) -> (Server, tempfile::TempDir) {
    let (tmp, conf) = tls_dir(pki);
    let s = Server::start_in(tmp.path(), opts.arg("-c").arg(conf.to_str().unwrap()));
    (s, tmp)
}

async fn tls_stream(pki: &Pki, s: &Server) -> BufStream<TlsStream<tokio::net::TcpStream>> {
    let url = format!("tcp://127.0.0.1:{}", s.port);
    let stream = timeout(
        T,
        TlsStream::with_client_config(client_config(pki), Some(&url)),
    )
    .await
    .expect("TLS connect timed out")
    .expect("TLS handshake with werk");
    BufStream::new(stream)
}

/// INFO's `server.fetches_waiting`, read over a fresh TLS connection (the typed INFO of the
/// `faktory` crate does not carry it).
async fn tls_fetches_waiting(pki: &Pki, s: &Server) -> u64 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut c = tls_stream(pki, s).await;
    let mut line = String::new();
    c.read_line(&mut line).await.unwrap();
    c.write_all(b"HELLO {\"v\":2}\r\nINFO\r\n").await.unwrap();
    c.flush().await.unwrap();
    line.clear();
    c.read_line(&mut line).await.unwrap();
    assert_eq!(line, "+OK\r\n");
    line.clear();
    c.read_line(&mut line).await.unwrap();
    let n: usize = line.trim_end().strip_prefix('$').unwrap().parse().unwrap();
    let mut body = vec![0u8; n + 2];
    c.read_exact(&mut body).await.unwrap();
    fetches_waiting(&serde_json::from_slice(&body[..n]).unwrap())
}

/// Waits (up to 10 s) until exactly `n` FETCHes are parked on the TLS server.
async fn tls_wait_fetches_waiting(pki: &Pki, s: &Server, n: u64) {
    let limit = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = tls_fetches_waiting(pki, s).await;
        if now == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{now} FETCHes waiting, not {n}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tls_client(pki: &Pki, s: &Server) -> Client {
    let stream = tls_stream(pki, s).await;
    timeout(T, Client::connect_with(stream, s.password.clone()))
        .await
        .expect("HELLO timed out")
        .expect("faktory Client over TLS")
}

// ---------------------------------------------------------------------------------------------
// Running werk directly (start-up failures, environment variables, no -b)
// ---------------------------------------------------------------------------------------------

/// `werk` with a clean environment (no FAKTORY_* variables from the caller).
fn werk(args: &[&str]) -> Command {
    let mut cmd = Command::new(WERK);
    cmd.args(args)
        .env_remove("FAKTORY_PASSWORD")
        .env_remove("FAKTORY_ENV")
        .env_remove("FAKTORY_SKIP_PASSWORD")
        .env_remove("FAKTORY_URL")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    cmd
}

/// Runs a `werk serve` that must refuse to start; returns its stderr.
#[track_caller]
fn refused(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("werk started although it should have refused to");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out: Output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "exit {:?}; stderr: {stderr}",
        out.status
    );
    assert!(
        !stdout.contains("werk listening on"),
        "it listened: {stdout}; stderr: {stderr}"
    );
    stderr
}

/// A `werk serve` started by hand, killed on drop.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` (stderr to `log`) and waits for its `werk listening on` line.
    fn start(mut cmd: Command, log: &Path) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("werk listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        match rx.recv_timeout(T) {
            Ok(addr) => Proc {
                child,
                addr,
                log: log.to_path_buf(),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("werk did not start; log:\n{}", tail(log, 40));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- werk log ----\n{}", tail(&self.log, 40));
        }
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_conf(dir: &Path, name: &str, text: &str) {
    let conf_d = dir.join("conf.d");
    fs::create_dir_all(&conf_d).unwrap();
    fs::write(conf_d.join(name), text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn faktory_crate_over_tls_push_fetch_ack() {
    let pki = pki();
    let (s, _tmp) = tls_server(
        &pki,
        ServerOpts::new().fetch_timeout_ms(300).password("tls-pw"),
    );
    assert!(s.log().contains("tls=true"), "log: {}", s.log());

    let mut c = tls_client(&pki, &s).await;
    c.enqueue(Job::new("secure", vec![json!(42)]).on_queue("tls"))
        .await
        .unwrap();

    let ran = Arc::new(AtomicUsize::new(0));
    let seen = ran.clone();
    let mut w = timeout(
        T,
        Worker::builder()
            .register_fn("secure", move |job: Job| {
                let seen = seen.clone();
                async move {
                    assert_eq!(job.args(), &[json!(42)]);
                    seen.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), std::io::Error>(())
                }
            })
            .connect_with(tls_stream(&pki, &s).await, s.password.clone()),
    )
    .await
    .unwrap()
    .expect("worker over TLS");
    assert!(timeout(T, w.run_one(0, &["tls"])).await.unwrap().unwrap());
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(!timeout(T, w.run_one(0, &["tls"])).await.unwrap().unwrap());

    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.queues.get("tls"), Some(&0));
    assert_eq!(st.data.total_processed, 1);
    assert_eq!(st.data.total_failures, 0);
    drop(w);
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_over_tls_is_refused() {
    let pki = pki();
    let (s, _tmp) = tls_server(&pki, ServerOpts::new().password("right"));
    let stream = tls_stream(&pki, &s).await;
    let r = timeout(T, Client::connect_with(stream, Some("wrong".into())))
        .await
        .unwrap();
    let e = r.err().expect("a wrong password must be refused");
    assert!(format!("{e:?}").contains("Invalid password"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_certificate_fails_the_client() {
    let pki = pki();
    let other = self::pki();
    let (s, _tmp) = tls_server(&pki, ServerOpts::new());
    let url = format!("tcp://127.0.0.1:{}", s.port);
    let r = timeout(
        T,
        TlsStream::with_client_config(client_config(&other), Some(&url)),
    )
    .await
    .unwrap();
    assert!(
        r.is_err(),
        "a certificate from another CA must not be trusted"
    );
    // The server is unharmed.
    let mut c = tls_client(&pki, &s).await;
    c.enqueue(Job::new("x", Vec::<Value>::new())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_clients_fail_cleanly_and_do_not_block_others() {
    let pki = pki();
    let (s, _tmp) = tls_server(&pki, ServerOpts::new().fetch_timeout_ms(300));

    // A plaintext client that waits for HI: the server waits for a ClientHello, so nothing
    // comes, and the connection is closed at the handshake timeout (2 s).
    let mut silent = Conn::connect(s.addr);
    // A plaintext client that speaks first: not TLS, closed at once (after at most an alert).
    let mut talker = Conn::connect(s.addr);
    talker.send(r#"HELLO {"v":2}"#);

    // Meanwhile TLS clients are accepted and served, well within the handshake timeout.
    let started = Instant::now();
    let mut c = tls_client(&pki, &s).await;
    c.enqueue(Job::new("x", Vec::<Value>::new()).on_queue("q"))
        .await
        .unwrap();
    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.queues.get("q"), Some(&1));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a stalled plaintext client held up TLS clients: {:?}",
        started.elapsed()
    );

    // Neither plaintext client ever gets a greeting.
    for conn in [&mut talker, &mut silent] {
        conn.set_read_timeout(Duration::from_secs(10));
        match conn.read_reply() {
            Err(_) => {}
            Ok(r) => panic!("a plaintext client on the TLS port got a reply: {r:?}"),
        }
    }

    // The faktory crate over plain TCP fails with an error (no hang, no panic).
    let r = timeout(T, Client::connect_to(&s.url()))
        .await
        .expect("no hang");
    assert!(
        r.is_err(),
        "a plaintext faktory client must fail on a TLS port"
    );

    // And TLS still works.
    let st = c.current_info().await.unwrap();
    assert_eq!(st.data.queues.get("q"), Some(&1));
    let mut c2 = tls_client(&pki, &s).await;
    c2.enqueue(Job::new("x", Vec::<Value>::new()).on_queue("q"))
        .await
        .unwrap();
    drop(c2);
    drop(c);
}

/// A worker blocked in FETCH that hangs up is noticed under TLS too: the job pushed afterwards
/// stays in its queue instead of being reserved for a connection that is gone.
#[tokio::test(flavor = "multi_thread")]
async fn fetch_notices_a_tls_client_that_hung_up() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let pki = pki();
    let (s, _tmp) = tls_server(&pki, ServerOpts::new().fetch_timeout_ms(15_000));
    let mut raw = tls_stream(&pki, &s).await;
    let mut line = String::new();
    raw.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("+HI "), "{line:?}");
    raw.write_all(b"HELLO {\"v\":2,\"wid\":\"tls-gone\"}\r\nFETCH gone\r\n")
        .await
        .unwrap();
    raw.flush().await.unwrap();
    line.clear();
    raw.read_line(&mut line).await.unwrap();
    assert_eq!(line, "+OK\r\n");
    // The FETCH is parked; the client vanishes; the server notices (long before the 15 s
    // fetch timeout) and the FETCH stops waiting.
    tls_wait_fetches_waiting(&pki, &s, 1).await;
    drop(raw); // TCP close, no close_notify: like a killed process
    tls_wait_fetches_waiting(&pki, &s, 0).await;

    let mut c = tls_client(&pki, &s).await;
    c.enqueue(Job::new("x", Vec::<Value>::new()).on_queue("gone"))
        .await
        .unwrap();
    let st = c.current_info().await.unwrap();
    assert_eq!(
        st.data.queues.get("gone"),
        Some(&1),
        "the job was handed to a FETCH whose client had hung up"
    );
    drop(c);
}

/// Starts `werk serve` on a config directory holding `cert` and `key` (either may be absent)
/// and expects it to refuse with a message naming `file`.
#[track_caller]
fn refused_with_pem(cert: Option<&str>, key: Option<&str>, file: &str, words: &str) {
    let tmp = tempfile::tempdir().unwrap();
    if let Some(cert) = cert {
        fs::write(tmp.path().join("public.cert.pem"), cert).unwrap();
    }
    if let Some(key) = key {
        fs::write(tmp.path().join("private.key.pem"), key).unwrap();
    }
    let dir = tmp.path().to_str().unwrap();
    let err = refused(werk(&["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d", dir]));
    let path = tmp.path().join(file);
    assert!(
        err.contains(&path.display().to_string()) && err.contains(words),
        "expected {words:?} about {}: {err}",
        path.display()
    );
}

#[test]
fn bad_certificate_files_refuse_to_start() {
    let pki = pki();
    let other = self::pki();
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    refused_with_pem(Some(garbage), Some(&pki.key_pem), "public.cert.pem", "PEM");
    refused_with_pem(
        Some("hello\n"),
        Some(&pki.key_pem),
        "public.cert.pem",
        "no certificate",
    );
    refused_with_pem(
        Some(&pki.chain_pem),
        Some("hello\n"),
        "private.key.pem",
        "no private key",
    );
    refused_with_pem(
        Some(&pki.key_pem),
        Some(&pki.key_pem),
        "public.cert.pem",
        "no certificate",
    );
    refused_with_pem(
        Some(&pki.chain_pem),
        Some(&other.key_pem),
        "private.key.pem",
        "does not belong",
    );
    refused_with_pem(Some(&pki.chain_pem), None, "private.key.pem", "does not");
    refused_with_pem(None, Some(&pki.key_pem), "public.cert.pem", "does not");
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn production_needs_a_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let args = ["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d", dir];

    let mut cmd = werk(&args);
    cmd.args(["-e", "production"]);
    let err = refused(cmd);
    assert!(err.contains("password is required"), "{err}");
    assert!(err.contains("FAKTORY_SKIP_PASSWORD"), "{err}");

    let mut cmd = werk(&args);
    cmd.env("FAKTORY_ENV", "staging");
    let err = refused(cmd);
    assert!(err.contains("password is required"), "{err}");

    let mut cmd = werk(&args);
    cmd.args(["-e", "qa"]);
    let err = refused(cmd);
    assert!(err.contains("qa") && err.contains("production"), "{err}");

    // Allowed with FAKTORY_SKIP_PASSWORD, or with a password.
    let mut cmd = werk(&args);
    cmd.args(["-e", "production"])
        .env("FAKTORY_SKIP_PASSWORD", "1");
    let p = Proc::start(cmd, &tmp.path().join("skip.log"));
    let mut c = Conn::connect(p.addr);
    c.handshake(None, None);
    drop(p);

    let mut cmd = werk(&args);
    cmd.args(["-e", "production"])
        .env("FAKTORY_PASSWORD", "prod-pw");
    let p = Proc::start(cmd, &tmp.path().join("pw.log"));
    let mut c = Conn::connect(p.addr);
    c.handshake(Some("prod-pw"), None);
}

#[test]
fn conf_d_password_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write_conf(
        &conf,
        "server.toml",
        "[faktory]\npassword = \"from-toml\"\n",
    );
    let s = Server::start_in(
        tmp.path(),
        ServerOpts::new().args(["-c", conf.to_str().unwrap()]),
    );
    // HELLO without pwdhash is refused.
    let mut c = Conn::connect(s.addr);
    let hi = c.read_hi();
    assert!(hi.get("s").is_some(), "HI must carry a salt: {hi}");
    c.send(&format!("HELLO {}", json!({"v": 2})));
    let r = c.read_reply().expect("reply to HELLO");
    assert_eq!(r.expect_err(), "ERR Invalid password");
    // The right password works.
    Conn::connect(s.addr).handshake(Some("from-toml"), None);
    drop(s);

    // A value starting with `/` names a file holding the password.
    let pw_file = tmp.path().join("secret");
    fs::write(&pw_file, "from-file\n").unwrap();
    write_conf(
        &conf,
        "server.toml",
        &format!("[faktory]\npassword = {:?}\n", pw_file.to_str().unwrap()),
    );
    let s = Server::start_in(
        tmp.path(),
        ServerOpts::new().args(["-c", conf.to_str().unwrap()]),
    );
    Conn::connect(s.addr).handshake(Some("from-file"), None);
    drop(s);

    // FAKTORY_PASSWORD wins over [faktory] password.
    let s = Server::start_in(
        tmp.path(),
        ServerOpts::new()
            .args(["-c", conf.to_str().unwrap()])
            .password_env("from-env"),
    );
    Conn::connect(s.addr).handshake(Some("from-env"), None);
}

#[test]
fn conf_d_bindings_apply_unless_given_on_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, web_port) = (free_port(), free_port());
    write_conf(
        tmp.path(),
        "bind.toml",
        &format!(
            "[faktory]\nbinding = \"127.0.0.1:{port}\"\n[web]\nbinding = \"127.0.0.1:{web_port}\"\n"
        ),
    );
    let dir = tmp.path().to_str().unwrap();

    // No -b, no -w: both come from conf.d.
    let p = Proc::start(werk(&["serve", "-d", dir]), &tmp.path().join("a.log"));
    assert_eq!(p.addr, SocketAddr::from(([127, 0, 0, 1], port)));
    Conn::connect(p.addr).handshake(None, None);
    TcpStream::connect(("127.0.0.1", web_port)).expect("the web UI listens on [web] binding");
    drop(p);

    // -b and -w given: they win.
    let p = Proc::start(
        werk(&["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d", dir]),
        &tmp.path().join("b.log"),
    );
    assert_ne!(p.addr.port(), port);
    Conn::connect(p.addr).handshake(None, None);
}

#[test]
fn unknown_keys_in_faktory_and_web_are_refused() {
    for (section, key) in [("faktory", "bindng"), ("web", "pasword")] {
        let tmp = tempfile::tempdir().unwrap();
        write_conf(
            tmp.path(),
            "typo.toml",
            &format!("[{section}]\n{key} = \"x\"\n"),
        );
        let dir = tmp.path().to_str().unwrap();
        let err = refused(werk(&["serve", "-b", "127.0.0.1:0", "-w", ":0", "-d", dir]));
        assert!(
            err.contains("typo.toml") && err.contains(key) && err.contains(section),
            "{err}"
        );
    }
}

#[test]
fn version_flags() {
    let want = format!("werk {}\n", env!("CARGO_PKG_VERSION"));
    for args in [
        &["--version"][..],
        &["-v"],
        &["-V"],
        &["serve", "-v"],
        &["serve", "--version"],
    ] {
        let out = werk(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}

#[test]
fn json_logs_are_json_lines() {
    let mut s = Server::start(ServerOpts::new().args(["--log-format", "json"]));
    s.conn().push_ok(&job(&jid("json"), "x"));
    assert!(s.terminate(Duration::from_secs(20)).success());
    let log = s.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
    }
    assert!(
        messages.iter().any(|m| m == "werk is serving"),
        "messages: {messages:?}"
    );
    assert!(messages.len() >= 2, "messages: {messages:?}");
}

/// With the certificate in the config directory the web UI serves HTTPS (same certificate),
/// and a plain-HTTP request to it gets no page.
#[test]
fn web_ui_serves_https_with_the_same_certificate() {
    use std::io::{Read, Write};
    let pki = pki();
    let (s, _tmp) = tls_server(&pki, ServerOpts::new().web());
    let url = s.web_url.clone().expect("web UI address");
    let host = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("web UI is not HTTPS: {url}"))
        .trim_end_matches('/')
        .to_string();
    let name = faktory_rustls::pki_types::ServerName::try_from("localhost")
        .unwrap()
        .to_owned();
    let conn = faktory_rustls::ClientConnection::new(Arc::new(client_config(&pki)), name).unwrap();
    let tcp = TcpStream::connect(&host).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut tls = faktory_rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = tls.read_to_string(&mut body);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"werk_version\""), "{body}");
    // Plain HTTP on the HTTPS port: no page.
    let mut plain = TcpStream::connect(&host).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("werk_version"));
}

/// The shell commands speak TLS (`tcp+tls://`), checking the server's certificate against the
/// system's CAs plus `--tls-ca`: with the test CA they work, password included; without it the
/// handshake fails (exit 3) with a plain message.
#[test]
fn shell_commands_over_tls_check_the_certificate() {
    let pki = pki();
    let (s, tmp) = tls_server(&pki, ServerOpts::new().password("tls-pass"));
    let ca = tmp.path().join("ca.pem");
    fs::write(&ca, &pki.ca_pem).unwrap();
    let run = |url: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_werk"))
            .args(["info", "--json"])
            .args(extra)
            .env("FAKTORY_URL", url)
            .output()
            .expect("run werk info")
    };
    let url = format!("tcp+tls://:tls-pass@localhost:{}", s.port);
    let out = run(&url, &["--tls-ca", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["faktory"]["queues"].is_object());
    let untrusted = run(&url, &[]);
    assert_eq!(untrusted.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("TLS handshake"));
    let plain = run(&format!("tcp://:tls-pass@localhost:{}", s.port), &[]);
    assert_ne!(
        plain.status.code(),
        Some(0),
        "plain text to a TLS port fails"
    );
}
