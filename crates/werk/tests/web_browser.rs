//! The web UI in a real browser: headless Chromium driven over WebDriver (a `chromedriver`
//! spawned by the test), against the `werk serve` binary. Checks the live dashboard graph (the
//! JavaScript polling `/stats`), and that the buttons a person clicks (Retry, Quiet, Pause)
//! really change the server, checked through the raw protocol. Saves a screenshot of each page
//! into `target/web-screenshots/` (`postgresql/` there for `pg_web_browser`); the embedded
//! store's dashboard also into `docs/screenshots/dashboard.png` (when missing, or always with
//! `WERK_UPDATE_SCREENSHOTS=1`) for the README.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them
//! these tests FAIL, saying so: they never pass silently.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const APT_HINT: &str = "install them as .ci/run does: \
    `apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core`";

/// Screenshot size (the README's dashboard picture).
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 800;

// ---------------------------------------------------------------------------------------------
// Browser plumbing
// ---------------------------------------------------------------------------------------------

/// An executable on PATH (or one of `extra` absolute paths).
fn find_exe(names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    extra.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A `chromedriver` child in its own process group; the group (chromedriver and the Chromium
/// it started) is killed on drop.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    fn start(dir: &Path) -> Driver {
        let chromedriver = find_exe(&["chromedriver"], &["/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found on PATH: {APT_HINT}"));
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let log = dir.join("chromedriver.log");
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        if up.is_none() {
            let st = d.child.try_wait();
            panic!(
                "chromedriver did not listen on {port} within 15 s ({st:?}); log:\n{}",
                tail(&d.log, 40)
            );
        }
        d
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium left behind.
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- chromedriver log (tail) ----\n{}", tail(&self.log, 30));
        }
    }
}

/// A headless Chromium session at 1280×800 (the page viewport, not the window).
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = find_exe(
        &["chromium", "chromium-browser"],
        &["/usr/lib/chromium/chromium"],
    )
    .unwrap_or_else(|| panic!("chromium not found on PATH: {APT_HINT}"));
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--force-device-scale-factor=1",
                "--hide-scrollbars",
                format!("--window-size={WIDTH},{HEIGHT}"),
                format!("--user-data-dir={}", profile.display()),
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--lang=en-US",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start a Chromium session ({e}); chromedriver log:\n{}",
                tail(&driver.log, 40)
            )
        });
    // Make the viewport (what screenshots show) exactly WIDTH×HEIGHT.
    client.goto("about:blank").await.expect("about:blank");
    for _ in 0..3 {
        let v = client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("viewport size");
        let (w, h) = (v[0].as_i64().unwrap(), v[1].as_i64().unwrap());
        if (w, h) == (WIDTH as i64, HEIGHT as i64) {
            break;
        }
        let (ww, wh) = client.get_window_size().await.expect("window size");
        let nw = (ww as i64 + WIDTH as i64 - w).max(100) as u32;
        let nh = (wh as i64 + HEIGHT as i64 - h).max(100) as u32;
        client
            .set_window_size(nw, nh)
            .await
            .expect("set window size");
    }
    client
}

/// Runs `body` with a fresh browser; the session is always closed and chromedriver killed,
/// and a panic in `body` fails the test with its message.
async fn with_browser<F, Fut>(body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tmp = tempfile::Builder::new()
        .prefix("werk-browser-")
        .tempdir()
        .unwrap();
    let driver = Driver::start(tmp.path());
    let client = browser(&driver, &tmp.path().join("profile")).await;
    let result = tokio::spawn(body(client.clone())).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    drop(driver);
    if let Err(e) = result {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("browser task: {e}"),
        }
    }
}

/// The workspace root (screenshots go to `target/web-screenshots/` there).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Width and height of a PNG.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(
        png.len() > 24 && &png[..8] == b"\x89PNG\r\n\x1a\n",
        "not a PNG"
    );
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    (w, h)
}

/// Saves a screenshot of the current page as `target/web-screenshots/NAME.png` (on PostgreSQL,
/// `pg_web_browser`: `target/web-screenshots/postgresql/NAME.png`, so that the two targets
/// running at once never write the same file).
async fn screenshot(c: &Client, name: &str) -> Vec<u8> {
    let png = c.screenshot().await.expect("screenshot");
    assert_eq!(png_size(&png), (WIDTH, HEIGHT), "screenshot {name}");
    let mut dir = workspace_root().join("target/web-screenshots");
    if on_postgres() {
        dir.push("postgresql");
    }
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    png
}

/// Polls `f` (an async check) every 100 ms until it returns Some, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The header's `#summary` count, None while the page cannot tell (e.g. mid-navigation).
async fn try_summary(c: &Client, name: &str) -> Option<u64> {
    let el = c
        .find(Locator::Css(&format!("#summary [data-stat=\"{name}\"]")))
        .await
        .ok()?;
    el.text().await.ok()?.trim().parse().ok()
}

/// The number the header's `#summary` shows for `name` (as the page currently has it).
async fn summary(c: &Client, name: &str) -> u64 {
    let el = c
        .find(Locator::Css(&format!("#summary [data-stat=\"{name}\"]")))
        .await
        .unwrap_or_else(|e| panic!("#summary {name}: {e}"));
    let t = el.text().await.expect("text");
    t.trim()
        .parse()
        .unwrap_or_else(|e| panic!("#summary {name}: {t:?}: {e}"))
}

async fn goto(c: &Client, url: &str) {
    c.goto(url)
        .await
        .unwrap_or_else(|e| panic!("goto {url}: {e}"));
}

async fn click(c: &Client, loc: Locator<'_>) {
    let el = c
        .find(loc)
        .await
        .unwrap_or_else(|e| panic!("find {loc:?}: {e}"));
    el.click()
        .await
        .unwrap_or_else(|e| panic!("click {loc:?}: {e}"));
}

/// Text of the first element matching `css`, None when there is none.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    match c.find(Locator::Css(css)).await {
        Ok(el) => el.text().await.ok(),
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Data through the protocol
// ---------------------------------------------------------------------------------------------

/// Web UI on; short empty FETCHes; the retry/scheduled scanner effectively off, so a failed
/// job stays in the retries however slow the machine (its first retry is due in 15-45 s).
fn web_opts() -> ServerOpts {
    ServerOpts::new()
        .web()
        .fetch_timeout_ms(200)
        .scan_interval_ms(3_600_000)
}

fn base(s: &Server) -> String {
    s.web_url.clone().expect("web url")
}

/// Push to `queue`, fetch as `w`, FAIL (→ retries; `retry: -1` → dead).
fn failed_job(
    p: &mut Conn,
    w: &mut Conn,
    jid: &str,
    jobtype: &str,
    queue: &str,
    msg: &str,
    retry: Option<i64>,
) {
    let mut j =
        json!({"jid": jid, "jobtype": jobtype, "queue": queue, "args": [jid, {"user_id": 42}]});
    if let Some(r) = retry {
        j["retry"] = json!(r);
    }
    p.push_ok(&j);
    assert_eq!(w.fetch_job(queue)["jid"], json!(jid));
    w.fail(&json!({
        "jid": jid, "errtype": "Net::ReadTimeout", "message": msg,
        "backtrace": [
            format!("app/jobs/{}.rb:27:in `perform'", jobtype.to_lowercase()),
            "lib/faktory/worker.rb:88:in `run'",
            "lib/faktory/processor.rb:41:in `process'",
        ],
    }))
    .expect_ok();
}

/// Sets the flag when dropped (also when a test panics).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The dashboard's live graph polls `/stats` (behind Basic auth) and draws; the history graph
/// is there; screenshots of every page (the dashboard's also for the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_live_graph_and_page_screenshots() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("conf.d")).unwrap();
    std::fs::write(
        data.join("conf.d/app.toml"),
        r#"
[[cron]]
  schedule = "0 3 * * *"
  [cron.job]
    type = "NightlyReport"
    queue = "reports"
[[cron]]
  schedule = "*/15 * * * *"
  [cron.job]
    type = "SyncInventory"
    queue = "default"

[throttles]
mailers = { concurrency = 5, timeout = 60 }
"#,
    )
    .unwrap();
    let s = Server::start_in(tmp.path(), web_opts().password("browser-pw"));
    // Credentials in the URL: Chromium then sends them for the page's own requests too
    // (the /stats polling).
    let url = base(&s).replacen("http://", "http://admin:browser-pw@", 1);

    let mut p = s.conn();
    let mut w = s.worker("dash-worker-1");
    for i in 0..40 {
        p.push_ok(&json!({"jid": format!("dash-done-{i:03}"), "jobtype": "SendEmail", "queue": "mailers", "args": [i]}));
    }
    for i in 0..40 {
        let j = w.fetch_job("mailers");
        w.ack(j["jid"].as_str().unwrap()).expect_ok();
        let _ = i;
    }
    for i in 0..6 {
        failed_job(
            &mut p,
            &mut w,
            &format!("dash-retry-{i:02}"),
            "ChargeCard",
            "billing",
            "read timeout after 30s",
            None,
        );
    }
    for i in 0..2 {
        failed_job(
            &mut p,
            &mut w,
            &format!("dash-dead-{i:02}"),
            "ImportCsv",
            "imports",
            "malformed row 17",
            Some(-1),
        );
    }
    for i in 0..12 {
        p.push_ok(&json!({"jid": format!("dash-queued-{i:03}"), "jobtype": "ResizeImage", "queue": if i % 3 == 0 { "critical" } else { "default" }, "args": [format!("img-{i}.png"), 800]}));
    }
    for i in 0..5 {
        p.push_ok(&json!({"jid": format!("dash-later-{i:02}"), "jobtype": "WeeklyDigest", "queue": "mailers", "args": [i], "at": rfc3339_in(3600.0 * (i + 1) as f64)}));
    }
    // One job in flight.
    p.push_ok(&json!({"jid": "dash-inflight-1", "jobtype": "Transcode", "queue": "media", "args": ["video.mp4"]}));
    assert_eq!(w.fetch_job("media")["jid"], "dash-inflight-1");
    w.cmd(r#"BEAT {"wid":"dash-worker-1","rss_kb":181000}"#);

    // Live traffic while the browser watches: a producer/worker pair processing jobs (about
    // one in five fails), bounded in time and count.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let mut p = s.conn();
        let mut w = s.worker("dash-worker-2");
        thread::spawn(move || {
            let t0 = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(40)
                && n < 20_000
            {
                let burst = 3 + (n / 7 % 9);
                for _ in 0..burst {
                    n += 1;
                    // Errors end the traffic quietly (the server is gone when a test failed).
                    let job = json!({"jid": format!("live-{n:06}"), "jobtype": "Live", "queue": "live", "args": [n], "retry": 0});
                    let ok = (|| -> std::io::Result<bool> {
                        if !p.try_cmd(&format!("PUSH {job}"))?.is_ok() {
                            return Ok(false);
                        }
                        let r = w.try_cmd("FETCH live")?;
                        let Reply::Bulk(b) = r else { return Ok(false) };
                        let j: serde_json::Value = serde_json::from_slice(&b)?;
                        let jid = j["jid"].as_str().unwrap_or_default().to_string();
                        let r = if n.is_multiple_of(5) {
                            w.try_cmd(&format!(
                                "FAIL {}",
                                json!({"jid": jid, "errtype": "E", "message": "live failure"})
                            ))?
                        } else {
                            w.try_cmd(&format!("ACK {}", json!({"jid": jid})))?
                        };
                        Ok(r.is_ok())
                    })();
                    if !matches!(ok, Ok(true)) {
                        return n;
                    }
                }
                // Paces the bursts of live traffic (load shaping, not a synchronisation).
                thread::sleep(Duration::from_millis(150));
            }
            n
        })
    };

    let _stop_traffic = StopOnDrop(stop.clone());
    let stop2 = stop.clone();
    let first_retry = "dash-retry-00".to_string();
    let root = url.clone();
    with_browser(move |c| async move {
        let t0 = Instant::now();
        goto(&c, &format!("{root}/")).await;
        assert!(
            c.find(Locator::Css("#history-graph polyline.processed"))
                .await
                .is_ok(),
            "history graph"
        );
        assert!(c.find(Locator::Css("#server-facts")).await.is_ok());
        assert_eq!(summary(&c, "retries").await, 6);
        assert_eq!(summary(&c, "dead").await, 2);
        let processed0 = summary(&c, "processed").await;
        c.find(Locator::Id("poll-interval"))
            .await
            .expect("#poll-interval")
            .select_by_value("2")
            .await
            .expect("select 2 s");
        let samples = eventually(
            Duration::from_secs(15),
            "#live-graph[data-samples] ≥ 1",
            || async {
                let svg = c.find(Locator::Id("live-graph")).await.ok()?;
                let n: u64 = svg.attr("data-samples").await.ok()??.parse().ok()?;
                (n >= 1).then_some(n)
            },
        )
        .await;
        eprintln!("live graph: {samples} sample(s) after {:?}", t0.elapsed());
        let status = text_of(&c, "#live-status").await.unwrap_or_default();
        assert!(
            status.starts_with("last 2 s:"),
            "poll interval not switched to 2 s: {status:?}"
        );
        // The polling updates the header counts in place.
        let processed1 = eventually(
            Duration::from_secs(10),
            "#summary processed to grow",
            || async {
                let n = try_summary(&c, "processed").await?;
                (n > processed0).then_some(n)
            },
        )
        .await;
        assert!(processed1 > processed0);
        // A few more samples for a graph worth looking at, then the README picture.
        eventually(Duration::from_secs(15), "4 live samples", || async {
            let svg = c.find(Locator::Id("live-graph")).await.ok()?;
            let n: u64 = svg.attr("data-samples").await.ok()??.parse().ok()?;
            (n >= 4).then_some(())
        })
        .await;
        let points = c
            .find(Locator::Css("#live-graph polyline.processed"))
            .await
            .unwrap()
            .attr("points")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(points.split(' ').count() >= 4, "live polyline: {points:?}");
        screenshot(&c, "dashboard").await;
        // The README's picture: zoomed out so the live graph and the history both show.
        let zoom = c
            .execute(
                "const sec = document.getElementById('history-graph').closest('section');\
                 const root = document.documentElement;\
                 let z = 1;\
                 for (let i = 0; i < 8; i++) {\
                   root.style.zoom = String(z); window.scrollTo(0, 0);\
                   const r = (sec.getBoundingClientRect().bottom + 8) / window.innerHeight;\
                   if (r <= 1) break;\
                   z = z / r * 0.995;\
                 }\
                 return z;",
                vec![],
            )
            .await
            .expect("zoom");
        eprintln!("docs screenshot zoom: {zoom}");
        let png = screenshot(&c, "dashboard-readme").await;
        // docs/screenshots/dashboard.png is tracked: written when missing, or refreshed with
        // WERK_UPDATE_SCREENSHOTS=1, so an ordinary test run leaves the work tree clean. The
        // README shows the embedded store's server, so the PostgreSQL run never writes it.
        let docs = workspace_root().join("docs/screenshots");
        let readme_png = docs.join("dashboard.png");
        if !on_postgres()
            && (!readme_png.exists() || std::env::var_os("WERK_UPDATE_SCREENSHOTS").is_some())
        {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(&readme_png, &png).unwrap();
            eprintln!("screenshot: {}", readme_png.display());
        }
        c.execute("document.documentElement.style.zoom = '1'", vec![])
            .await
            .expect("unzoom");
        stop2.store(true, Ordering::Relaxed);

        // Every other page.
        for (name, path, must) in [
            (
                "queues",
                "/queues".to_string(),
                "#queues tr[data-queue=\"default\"]",
            ),
            ("queue", "/queues/default".to_string(), "#jobs tr[data-jid]"),
            (
                "busy",
                "/busy".to_string(),
                "#processes tr[data-wid=\"dash-worker-1\"]",
            ),
            ("retries", "/retries".to_string(), "#jobs tr[data-jid]"),
            ("scheduled", "/scheduled".to_string(), "#jobs tr[data-jid]"),
            ("morgue", "/morgue".to_string(), "#jobs tr[data-jid]"),
            (
                "retry-detail",
                format!("/retries/{first_retry}"),
                "#backtrace",
            ),
            ("cron", "/cron".to_string(), "#cron tr[data-entry]"),
            ("batches", "/batches".to_string(), "form.filter"),
            (
                "throttles",
                "/throttles".to_string(),
                "#throttles tr[data-queue=\"mailers\"]",
            ),
            ("dashboard-7-days", "/?days=7".to_string(), "#history-graph"),
        ] {
            goto(&c, &format!("{root}{path}")).await;
            assert!(
                c.find(Locator::Css(must)).await.is_ok(),
                "{path}: no {must}; page:\n{}",
                c.source()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(3000)
                    .collect::<String>()
            );
            screenshot(&c, name).await;
        }
        eprintln!("dashboard test browser part: {:?}", t0.elapsed());
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let n = traffic.join().expect("traffic thread");
    eprintln!("live traffic: {n} jobs");
}

/// Retries page: check one job's box, "Retry now selected" → the header's retries count drops
/// and the job is back in its queue; then check-all + "Delete selected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_and_delete_from_the_retries_page() {
    let s = Server::start(web_opts());
    let mut p = s.conn();
    let mut w = s.worker("retry-worker");
    failed_job(
        &mut p,
        &mut w,
        "browser-retry-1",
        "ChargeCard",
        "payments",
        "read timeout",
        None,
    );
    failed_job(
        &mut p,
        &mut w,
        "browser-retry-2",
        "ChargeCard",
        "payments",
        "read timeout",
        None,
    );
    failed_job(
        &mut p,
        &mut w,
        "browser-retry-3",
        "SendEmail",
        "mail",
        "535 auth",
        None,
    );
    let root = base(&s);
    with_browser(move |c| async move {
        goto(&c, &format!("{root}/retries")).await;
        assert_eq!(summary(&c, "retries").await, 3);
        click(
            &c,
            Locator::Css("#jobs input[name=\"jid\"][value=\"browser-retry-2\"]"),
        )
        .await;
        click(
            &c,
            Locator::XPath("//button[normalize-space()='Retry now selected']"),
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "retries count 2 after Retry now",
            || async {
                (c.current_url().await.ok()?.path() == "/retries"
                    && try_summary(&c, "retries").await == Some(2))
                .then_some(())
            },
        )
        .await;
        let left: Vec<String> = {
            let mut v = Vec::new();
            for r in c
                .find_all(Locator::Css("#jobs tr[data-jid]"))
                .await
                .unwrap()
            {
                v.push(r.attr("data-jid").await.unwrap().unwrap());
            }
            v.sort();
            v
        };
        assert_eq!(left, ["browser-retry-1", "browser-retry-3"]);
        screenshot(&c, "retries-after-retry").await;

        // Check-all, then Delete selected.
        click(&c, Locator::Css("#jobs input.check-all")).await;
        for b in c
            .find_all(Locator::Css("#jobs tbody input[name=\"jid\"]"))
            .await
            .unwrap()
        {
            assert!(
                b.is_selected().await.unwrap(),
                "check-all did not check every box"
            );
        }
        click(
            &c,
            Locator::XPath("//button[normalize-space()='Delete selected']"),
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "retries count 0 after Delete",
            || async { (try_summary(&c, "retries").await == Some(0)).then_some(()) },
        )
        .await;
        assert!(c
            .find_all(Locator::Css("#jobs tr[data-jid]"))
            .await
            .unwrap()
            .is_empty());
    })
    .await;
    // Through the protocol: the retried job is back in its queue, the others are gone.
    let j = w.fetch_job("payments");
    assert_eq!(j["jid"], "browser-retry-2");
    assert!(w.fetch("payments").is_none());
    assert!(w.fetch("mail").is_none());
    let info = p.info();
    assert_eq!(set_size(&info, "retries"), 0, "{info}");
}

/// Busy page: Quiet on a worker's row → badge, and its next BEAT says quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_a_worker_from_the_busy_page() {
    let s = Server::start(web_opts());
    let mut w = s.worker("browser-quiet-w1");
    let mut other = s.worker("browser-quiet-w2");
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"browser-quiet-w1"}"#).wire(),
        b"+OK\r\n"
    );
    let root = base(&s);
    with_browser(move |c| async move {
        goto(&c, &format!("{root}/busy")).await;
        click(
            &c,
            Locator::Css("#processes tr[data-wid=\"browser-quiet-w1\"] button[value=\"quiet\"]"),
        )
        .await;
        let badge = eventually(Duration::from_secs(10), "quiet badge", || async {
            let t = text_of(&c, "#processes tr[data-wid=\"browser-quiet-w1\"] .badge").await?;
            (t.trim() == "quiet").then_some(t)
        })
        .await;
        assert_eq!(badge.trim(), "quiet");
        assert!(
            text_of(&c, "#processes tr[data-wid=\"browser-quiet-w2\"] .badge")
                .await
                .is_none()
        );
        screenshot(&c, "busy-quiet").await;
    })
    .await;
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"browser-quiet-w1"}"#).wire(),
        b"$17\r\n{\"state\":\"quiet\"}\r\n"
    );
    assert_eq!(
        other.cmd(r#"BEAT {"wid":"browser-quiet-w2"}"#).wire(),
        b"+OK\r\n"
    );
}

/// Queues page: Pause → badge, FETCH gets nothing from that queue; Resume → it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_a_queue_from_the_queues_page() {
    let s = Server::start(web_opts());
    let mut p = s.conn();
    p.push_ok(&json!({"jid": "browser-pause-1", "jobtype": "P", "queue": "pauseme", "args": []}));
    p.push_ok(&json!({"jid": "browser-pause-2", "jobtype": "P", "queue": "other", "args": []}));
    let root = base(&s);
    let url = root.clone();
    with_browser(move |c| async move {
        goto(&c, &format!("{url}/queues")).await;
        click(
            &c,
            Locator::Css("#queues tr[data-queue=\"pauseme\"] button[value=\"pause\"]"),
        )
        .await;
        eventually(Duration::from_secs(10), "paused badge", || async {
            let t = text_of(&c, "#queues tr[data-queue=\"pauseme\"] .badge").await?;
            (t.trim() == "paused").then_some(())
        })
        .await;
        assert!(text_of(&c, "#queues tr[data-queue=\"other\"] .badge")
            .await
            .is_none());
        screenshot(&c, "queues-paused").await;
    })
    .await;
    let mut w = s.worker("browser-pause-worker");
    assert!(
        w.fetch("pauseme").is_none(),
        "FETCH from a paused queue returned a job"
    );
    assert_eq!(w.fetch_job("other")["jid"], "browser-pause-2");
    assert_eq!(queue_size(&p.info(), "pauseme"), Some(1));

    with_browser(move |c| async move {
        goto(&c, &format!("{root}/queues")).await;
        click(
            &c,
            Locator::Css("#queues tr[data-queue=\"pauseme\"] button[value=\"resume\"]"),
        )
        .await;
        eventually(Duration::from_secs(10), "badge gone", || async {
            c.find(Locator::Css(
                "#queues tr[data-queue=\"pauseme\"] button[value=\"pause\"]",
            ))
            .await
            .ok()
        })
        .await;
    })
    .await;
    assert_eq!(w.fetch_job("pauseme")["jid"], "browser-pause-1");
}

/// A job's detail page, reached by its link in the Dead list; its Retry button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_detail_page() {
    let s = Server::start(web_opts());
    let mut p = s.conn();
    let mut w = s.worker("detail-worker");
    failed_job(
        &mut p,
        &mut w,
        "browser-dead-1",
        "ImportCsv",
        "imports",
        "malformed row 17",
        Some(-1),
    );
    let root = base(&s);
    with_browser(move |c| async move {
        goto(&c, &format!("{root}/morgue")).await;
        click(&c, Locator::Css("#jobs tr[data-jid=\"browser-dead-1\"] a")).await;
        let job = eventually(Duration::from_secs(10), "#job", || async {
            text_of(&c, "#job").await
        })
        .await;
        assert_eq!(
            c.current_url().await.unwrap().path(),
            "/morgue/browser-dead-1"
        );
        assert!(
            job.contains("browser-dead-1") && job.contains("ImportCsv"),
            "{job}"
        );
        assert!(
            job.contains("malformed row 17") && job.contains("Net::ReadTimeout"),
            "{job}"
        );
        let bt = text_of(&c, "#backtrace").await.expect("#backtrace");
        assert!(bt.contains("lib/faktory/worker.rb:88:in `run'"), "{bt}");
        screenshot(&c, "job-detail").await;
        click(
            &c,
            Locator::Css("form.actions button[name=\"action\"][value=\"retry\"]"),
        )
        .await;
        eventually(
            Duration::from_secs(10),
            "back on /morgue with 0 dead",
            || async {
                (c.current_url().await.ok()?.path() == "/morgue"
                    && try_summary(&c, "dead").await == Some(0))
                .then_some(())
            },
        )
        .await;
    })
    .await;
    assert_eq!(w.fetch_job("imports")["jid"], "browser-dead-1");
}
