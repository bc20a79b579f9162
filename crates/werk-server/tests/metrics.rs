//! `/metrics` content end to end: a server on the SQLite store over real TCP, raw protocol
//! clients, then [`werk_server::metrics::render`].

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use werk_server::metrics::{render, CONTENT_TYPE};
use werk_server::{Config, QueueSignals, Server};
use werk_store::StoreConfig;
use werk_store_sqlite::SqliteStore;

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, wid: &str) -> Client {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        assert!(c.line().await.starts_with("+HI "));
        let hello = format!(r#"HELLO {{"v":2,"wid":"{wid}","hostname":"h","pid":1,"labels":[]}}"#);
        assert_eq!(c.cmd(&hello).await, "+OK");
        c
    }

    async fn line(&mut self) -> String {
        let mut s = String::new();
        self.r.read_line(&mut s).await.unwrap();
        s.trim_end_matches("\r\n").to_string()
    }

    /// Sends one command; the reply, with a bulk reply's payload instead of its header.
    async fn cmd(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        let head = self.line().await;
        match head.strip_prefix('$') {
            Some("-1") | None => head,
            Some(len) => {
                let mut buf = vec![0; len.parse::<usize>().unwrap() + 2];
                self.r.read_exact(&mut buf).await.unwrap();
                String::from_utf8(buf[..buf.len() - 2].to_vec()).unwrap()
            }
        }
    }

    async fn fetch(&mut self, queue: &str) -> serde_json::Value {
        serde_json::from_str(&self.cmd(&format!("FETCH {queue}")).await).unwrap()
    }
}

fn job(jid: &str, jobtype: &str, queue: &str) -> String {
    format!(r#"{{"jid":"{jid}","jobtype":"{jobtype}","queue":"{queue}","args":[]}}"#)
}

/// The value of the sample line `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_reports_jobs_commands_sizes_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let signals = Arc::new(QueueSignals::default());
    let store = SqliteStore::open(dir.path(), StoreConfig::default(), signals.clone()).unwrap();
    let store_metrics = store.metrics().clone();
    let server = Server::new(Arc::new(store), signals, Config::default());
    let shared = server.shared().clone();
    shared
        .metrics
        .register_extra(|registry| store_metrics.register(registry));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(server.run(listener, stop.clone()));

    let mut a = Client::connect(addr, "w-a").await;
    let mut b = Client::connect(addr, "w-b").await;
    for (jid, jobtype) in [
        ("jid-0001", "Email"),
        ("jid-0002", "Charge"),
        ("jid-0003", "Email"),
    ] {
        assert_eq!(
            a.cmd(&format!("PUSH {}", job(jid, jobtype, "default")))
                .await,
            "+OK"
        );
    }
    // One new job, one refused (jid-0003 is already stored, as another job): only the new one
    // counts.
    let pushb = format!(
        "PUSHB [{},{}]",
        job("jid-0004", "Report", "critical"),
        job("jid-0003", "Other", "default")
    );
    assert!(a.cmd(&pushb).await.contains("jid-0003"));

    assert_eq!(a.fetch("default").await["jid"], "jid-0001");
    assert_eq!(a.cmd(r#"ACK {"jid":"jid-0001"}"#).await, "+OK");
    assert_eq!(a.fetch("default").await["jid"], "jid-0002");
    let fail = r#"FAIL {"jid":"jid-0002","errtype":"E","message":"boom","backtrace":[]}"#;
    assert_eq!(a.cmd(fail).await, "+OK");
    // Fetched by b, acknowledged by a: not attributable.
    assert_eq!(b.fetch("critical").await["jid"], "jid-0004");
    assert_eq!(a.cmd(r#"ACK {"jid":"jid-0004"}"#).await, "+OK");
    assert!(a.cmd("NOPE").await.starts_with("-ERR"));

    let text = render(&shared).await;
    assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    for (series, want) in [
        (
            r#"werk_jobs_pushed_total{queue="default",jobtype="Email"}"#,
            2.0,
        ),
        (
            r#"werk_jobs_pushed_total{queue="default",jobtype="Charge"}"#,
            1.0,
        ),
        (
            r#"werk_jobs_pushed_total{queue="critical",jobtype="Report"}"#,
            1.0,
        ),
        (
            r#"werk_jobs_processed_total{queue="default",jobtype="Email"}"#,
            1.0,
        ),
        (
            r#"werk_jobs_processed_total{queue="default",jobtype="Charge"}"#,
            0.0,
        ),
        (
            r#"werk_jobs_failed_total{queue="default",jobtype="Charge"}"#,
            1.0,
        ),
        (
            r#"werk_jobs_failed_total{queue="default",jobtype="Email"}"#,
            0.0,
        ),
        (
            r#"werk_jobs_processed_total{queue="unknown",jobtype="unknown"}"#,
            1.0,
        ),
        (
            r#"werk_command_duration_seconds_count{command="PUSH"}"#,
            3.0,
        ),
        (
            r#"werk_command_duration_seconds_count{command="PUSHB"}"#,
            1.0,
        ),
        (
            r#"werk_command_duration_seconds_count{command="FETCH"}"#,
            3.0,
        ),
        (r#"werk_command_duration_seconds_count{command="ACK"}"#, 2.0),
        (
            r#"werk_command_duration_seconds_count{command="FAIL"}"#,
            1.0,
        ),
        (
            r#"werk_command_duration_seconds_count{command="INVALID"}"#,
            1.0,
        ),
        (
            r#"werk_command_duration_seconds_bucket{command="PUSH",le="+Inf"}"#,
            3.0,
        ),
        (r#"werk_queue_size{queue="default"}"#, 1.0),
        (r#"werk_queue_size{queue="critical"}"#, 0.0),
        (r#"werk_queue_paused{queue="default"}"#, 0.0),
        ("werk_retry_jobs", 1.0),
        ("werk_scheduled_jobs", 0.0),
        ("werk_dead_jobs", 0.0),
        ("werk_working_jobs", 0.0),
        // Finished jobs: ACKs and FAILs, as INFO's total_processed.
        ("werk_processed_total", 3.0),
        ("werk_failures_total", 1.0),
        ("werk_expired_total", 0.0),
        ("werk_connections", 2.0),
        ("werk_connections_total", 2.0),
        ("werk_workers", 2.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(sample(&text, r#"werk_queue_latency_seconds{queue="default"}"#).unwrap() >= 0.0);
    assert!(sample(&text, "werk_uptime_seconds").unwrap() > 0.0);
    // PUSH ×3, PUSHB, FETCH ×3, ACK ×2, FAIL, NOPE.
    assert_eq!(sample(&text, "werk_commands_total"), Some(11.0));
    for series in [
        "werk_store_commit_duration_seconds_count",
        "werk_store_commit_requests_count",
        "werk_store_fsync_duration_seconds_count",
        // One client, one command at a time: the writer thread is idle at most of them.
        "werk_store_caller_runs_total",
    ] {
        assert!(sample(&text, series).unwrap() > 0.0, "{series} in\n{text}");
    }

    // Well-formed: every family typed once, every sample `name{labels} number`.
    let mut typed = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let name = t.split(' ').next().unwrap();
            assert!(typed.insert(name.to_string()), "{name} typed twice");
        } else if !l.starts_with("# HELP ") {
            let (_, value) = l.rsplit_once(' ').unwrap();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "bad sample {l}"
            );
        }
    }

    stop.cancel();
    running.await.unwrap();
}
