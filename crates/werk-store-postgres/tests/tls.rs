//! TLS to PostgreSQL (`sslmode`, issue 12) through [`PgStore::connect`], against real
//! PostgreSQL 15 servers (werk-testpg) with `ssl = on` and certificates made here with rcgen:
//! a CA, a server certificate naming only `localhost` (so that `127.0.0.1` is the wrong name),
//! a client certificate for the user `werk`, and a second, unrelated CA. Each test starts its
//! own server(s), since they differ in certificates and `pg_hba.conf`.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use werk_core::Job;
use werk_store::{NewJob, NoListener, StoreConfig};
use werk_store_postgres::{ConnectError, PgStore};
use werk_testpg::{PgCluster, PgOptions};

/// `pg_hba.conf` refusing every TCP connection without TLS (the socket stays open: werk-testpg
/// creates databases through it).
const HBA_HOSTSSL_ONLY: &str = "local all all trust\n\
                                hostssl all all 127.0.0.1/32 trust\n\
                                hostssl all all ::1/128 trust\n";

/// The certificates of a test, and the client's files in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    /// The CA that signed the server's and the client's certificate (PEM file).
    ca_file: PathBuf,
    /// Another CA, which signed nothing here.
    other_ca_file: PathBuf,
    ca_pem: String,
    /// Server certificate (for `localhost` only) and key, PEM.
    server_cert_pem: String,
    server_key_pem: String,
    /// Client certificate (CN `werk`) and key files.
    client_cert_file: PathBuf,
    client_key_file: PathBuf,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

fn pki() -> Pki {
    let ca = new_ca("werk test CA");
    let other = new_ca("another CA");

    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = params.signed_by(&server_key, &ca).expect("server cert");

    let client_key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, "werk");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &ca).expect("client cert");

    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write PEM file");
        path
    };
    Pki {
        ca_file: write("ca.crt", &ca.pem()),
        other_ca_file: write("other-ca.crt", &other.pem()),
        ca_pem: ca.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_file: write("client.crt", &client_cert.pem()),
        client_key_file: write("client.key", &client_key.serialize_pem()),
        _dir: dir,
    }
}

/// Options for a server with TLS on, presenting the PKI's server certificate.
fn tls_options(pki: &Pki) -> PgOptions {
    PgOptions::new()
        .setting("ssl", "on")
        .data_file("server.crt", pki.server_cert_pem.as_str())
        .data_file("server.key", pki.server_key_pem.as_str())
}

fn start(options: PgOptions) -> PgCluster {
    PgCluster::start_with(options).expect("start PostgreSQL")
}

/// `postgresql://werk@HOST:PORT/DB?QUERY` (the query without its `?`).
fn url(pg: &PgCluster, host: &str, db: &str, query: &str) -> String {
    format!("postgresql://werk@{host}:{}/{db}?{query}", pg.port())
}

async fn connect(url: &str) -> PgStore {
    match PgStore::connect(url, StoreConfig::default(), Arc::new(NoListener)).await {
        Ok(store) => store,
        Err(e) => panic!("connect to {url}: {e}"),
    }
}

async fn connect_error(url: &str) -> ConnectError {
    match PgStore::connect(url, StoreConfig::default(), Arc::new(NoListener)).await {
        Ok(_) => panic!("connected to {url}, expected an error"),
        Err(e) => {
            eprintln!("{url}: {e}");
            e
        }
    }
}

/// Whether the pool's connection is encrypted, as the server sees it.
async fn encrypted(store: &PgStore) -> bool {
    let client = store.pool().get().await.expect("pooled connection");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

async fn push_and_fetch(store: &PgStore) {
    let (job, at) = Job::parse_for_push(
        r#"{"jid":"tls-job-0001","jobtype":"T","queue":"q","args":[1]}"#,
        1_700_000_000_000,
    )
    .expect("valid job");
    let res = store
        .push(vec![NewJob { job, at }], 1_700_000_000_000)
        .await
        .expect("push");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let fetched = store
        .fetch(vec!["q".into()], "w1".into(), 1_700_000_000_001)
        .await
        .expect("fetch")
        .expect("a job");
    assert_eq!(fetched.jid, "tls-job-0001");
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    // The client knows no CA at all: require does not verify (libpq's meaning).
    let store = connect(&url(&pg, "127.0.0.1", "t", "sslmode=require")).await;
    assert!(
        encrypted(&store).await,
        "sslmode=require gave a plain connection"
    );
    push_and_fetch(&store).await;

    // The same as a key=value connection string.
    let store = connect(&format!(
        "host=127.0.0.1 port={} user=werk dbname=t sslmode=require",
        pg.port()
    ))
    .await;
    assert!(encrypted(&store).await);
}

#[tokio::test]
async fn require_fails_against_a_server_without_tls() {
    let pg = start(PgOptions::new());
    pg.create_database("t").expect("create database");
    let err = connect_error(&url(&pg, "127.0.0.1", "t", "sslmode=require")).await;
    assert!(
        err.to_string().contains("server does not support TLS"),
        "{err}"
    );
}

#[tokio::test]
async fn verify_full_with_the_right_ca_and_host_name() {
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    let ca = pki.ca_file.display();
    let store = connect(&url(
        &pg,
        "localhost",
        "t",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    assert!(encrypted(&store).await);
    push_and_fetch(&store).await;

    let store = connect(&format!(
        "host=localhost port={} user=werk dbname=t sslmode=verify-full sslrootcert='{ca}'",
        pg.port()
    ))
    .await;
    assert!(encrypted(&store).await);
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_not_trusted() {
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    let other = pki.other_ca_file.display();
    for mode in ["verify-full", "verify-ca", "require"] {
        let err = connect_error(&url(
            &pg,
            "localhost",
            "t",
            &format!("sslmode={mode}&sslrootcert={other}"),
        ))
        .await;
        let msg = err.to_string();
        assert!(
            matches!(err, ConnectError::Connect(_))
                && msg.contains("certificate is not trusted")
                && msg.contains(&other.to_string()),
            "sslmode={mode}: {msg}"
        );
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    let ca = pki.ca_file.display();
    // The certificate names only localhost.
    let err = connect_error(&url(
        &pg,
        "127.0.0.1",
        "t",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
    let msg = err.to_string();
    assert!(
        msg.contains("does not name the host \"127.0.0.1\""),
        "{msg}"
    );

    for mode in ["verify-ca", "require"] {
        let store = connect(&url(
            &pg,
            "127.0.0.1",
            "t",
            &format!("sslmode={mode}&sslrootcert={ca}"),
        ))
        .await;
        assert!(encrypted(&store).await, "{mode}");
    }
}

#[tokio::test]
async fn verify_needs_a_root_certificate() {
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    let err = connect_error(&url(&pg, "localhost", "t", "sslmode=verify-full")).await;
    assert!(
        matches!(&err, ConnectError::Tls(m) if m.contains("sslrootcert")),
        "{err}"
    );
    let missing = pki.ca_file.with_file_name("missing.crt");
    let err = connect_error(&url(
        &pg,
        "localhost",
        "t",
        &format!("sslmode=verify-ca&sslrootcert={}", missing.display()),
    ))
    .await;
    assert!(
        matches!(&err, ConnectError::Tls(m) if m.contains(&missing.display().to_string())),
        "{err}"
    );
}

#[tokio::test]
async fn disable_is_refused_by_a_server_that_requires_tls() {
    let pki = pki();
    let pg = start(tls_options(&pki).data_file("pg_hba.conf", HBA_HOSTSSL_ONLY));
    pg.create_database("t").expect("create database");
    let err = connect_error(&url(&pg, "127.0.0.1", "t", "sslmode=disable")).await;
    let msg = err.to_string();
    assert!(
        msg.contains("no pg_hba.conf entry") && msg.contains("no encryption"),
        "{msg}"
    );
    // The same server takes TLS connections.
    let store = connect(&url(&pg, "127.0.0.1", "t", "sslmode=require")).await;
    assert!(encrypted(&store).await);
}

#[tokio::test]
async fn prefer_uses_tls_when_the_server_offers_it() {
    let pki = pki();
    let pg = start(tls_options(&pki).data_file("pg_hba.conf", HBA_HOSTSSL_ONLY));
    pg.create_database("t").expect("create database");
    // Explicit, and as the default.
    let store = connect(&url(&pg, "127.0.0.1", "t", "sslmode=prefer")).await;
    assert!(encrypted(&store).await);
    let store = connect(&pg.url_for("t")).await;
    assert!(encrypted(&store).await, "the default is prefer");
    push_and_fetch(&store).await;
}

#[tokio::test]
async fn prefer_falls_back_to_plain_without_tls_on_the_server() {
    let pg = start(PgOptions::new());
    pg.create_database("t").expect("create database");
    let store = connect(&url(&pg, "127.0.0.1", "t", "sslmode=prefer")).await;
    assert!(!encrypted(&store).await);
    push_and_fetch(&store).await;
    let store = connect(&pg.url_for("t")).await;
    assert!(!encrypted(&store).await);
}

#[tokio::test]
async fn unix_sockets_never_use_tls() {
    // libpq never asks for TLS over a unix socket, whatever sslmode says: neither the
    // (absent) root certificate of verify-full nor the server's refusal of TLS there matters.
    let pki = pki();
    let pg = start(tls_options(&pki));
    pg.create_database("t").expect("create database");
    let url = format!("{}?sslmode=verify-full", pg.socket_url_for("t"));
    let store = connect(&url).await;
    assert!(!encrypted(&store).await);
}

#[tokio::test]
async fn client_certificate_authentication() {
    let pki = pki();
    let pg = start(
        tls_options(&pki)
            .data_file("root.crt", pki.ca_pem.as_str())
            .setting("ssl_ca_file", "root.crt")
            .data_file(
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
            ),
    );
    pg.create_database("t").expect("create database");
    let store = connect(&url(
        &pg,
        "127.0.0.1",
        "t",
        &format!(
            "sslmode=require&sslcert={}&sslkey={}",
            pki.client_cert_file.display(),
            pki.client_key_file.display()
        ),
    ))
    .await;
    assert!(encrypted(&store).await);
    push_and_fetch(&store).await;

    let err = connect_error(&url(&pg, "127.0.0.1", "t", "sslmode=require")).await;
    assert!(
        err.to_string()
            .contains("connection requires a valid client certificate"),
        "{err}"
    );

    let missing = pki.client_key_file.with_file_name("missing.key");
    let err = connect_error(&url(
        &pg,
        "127.0.0.1",
        "t",
        &format!(
            "sslmode=require&sslcert={}&sslkey={}",
            pki.client_cert_file.display(),
            missing.display()
        ),
    ))
    .await;
    assert!(
        matches!(&err, ConnectError::Tls(m) if m.contains(&missing.display().to_string())),
        "{err}"
    );
}

#[tokio::test]
async fn scram_with_channel_binding() {
    // tls-server-end-point: a wrong hash of the server's certificate fails SCRAM-SHA-256-PLUS,
    // none makes channel_binding=require fail.
    let pki = pki();
    let pg = start(tls_options(&pki).data_file(
        "pg_hba.conf",
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    ));
    pg.create_database("t").expect("create database");
    let (client, connection) =
        tokio_postgres::connect(&pg.socket_url_for("t"), tokio_postgres::NoTls)
            .await
            .expect("connect over the socket");
    tokio::spawn(connection);
    client
        .batch_execute("ALTER ROLE werk PASSWORD 'sekret'")
        .await
        .expect("set a password");

    let url = format!(
        "postgresql://werk:sekret@127.0.0.1:{}/t?sslmode=require&channel_binding=require",
        pg.port()
    );
    let store = connect(&url).await;
    assert!(encrypted(&store).await);
    push_and_fetch(&store).await;
}

#[tokio::test]
async fn unsupported_settings_are_refused() {
    // Refused before any connection is tried (the port is never listened on).
    for (query, name) in [
        ("sslmode=require&sslpassword=x", "sslpassword"),
        ("sslmode=require&sslcrl=/tmp/x.crl", "sslcrl"),
        ("sslmode=require&sslcrldir=/tmp", "sslcrldir"),
        ("sslmode=verify-ca&sslrootcert=system", "sslrootcert=system"),
        (
            "sslmode=require&ssl_max_protocol_version=TLSv1.1",
            "TLSv1.1",
        ),
    ] {
        let err = connect_error(&format!("postgresql://werk@127.0.0.1:1/t?{query}")).await;
        assert!(
            matches!(&err, ConnectError::Tls(m) if m.contains(name)),
            "{query}: {err}"
        );
    }
    let err = connect_error("postgresql://werk@127.0.0.1:1/t?sslmode=bogus").await;
    assert!(matches!(err, ConnectError::Url(_)), "{err}");
}
