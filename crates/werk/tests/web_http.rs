//! The web UI over real HTTP against the `werk serve` binary: auth, cross-site POST refusal,
//! the reverse-proxy prefix, every page with a small data set, the actions (checked through
//! the raw protocol), paging and search, and paging/search over 20k scheduled jobs.
//!
//! The HTTP client is a tiny blocking HTTP/1.1 client over `std::net::TcpStream` (one request
//! per connection, `Connection: close`, read timeouts), and pages are checked by the DOM ids and
//! data attributes the templates promise (`#jobs tr[data-jid]`, `#next-page`, ...).

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A tiny HTTP client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The web UI of one server: `127.0.0.1:PORT` and the Basic credentials to send.
struct Web {
    host: String,
    auth: Option<String>,
    /// Extra headers sent with every request (e.g. `X-Script-Name`).
    extra: Vec<(String, String)>,
}

impl Web {
    /// Talks to `s`'s web UI with `s`'s password (user name "admin").
    fn new(s: &Server) -> Web {
        let url = s
            .web_url
            .as_deref()
            .expect("server started without ServerOpts::web()");
        let host = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("web UI URL {url:?} is not http://"))
            .trim_end_matches('/')
            .to_string();
        Web {
            host,
            auth: s.password.as_deref().map(|pw| basic("admin", pw)),
            extra: Vec::new(),
        }
    }

    fn with_auth(&self, auth: Option<String>) -> Web {
        Web {
            host: self.host.clone(),
            auth,
            extra: self.extra.clone(),
        }
    }

    fn with_header(&self, k: &str, v: &str) -> Web {
        let mut extra = self.extra.clone();
        extra.push((k.to_string(), v.to_string()));
        Web {
            host: self.host.clone(),
            auth: self.auth.clone(),
            extra,
        }
    }

    #[track_caller]
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut s =
            TcpStream::connect(&self.host).unwrap_or_else(|e| panic!("connect {}: {e}", self.host));
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: werk-e2e\r\n",
            self.host
        );
        if let Some(a) = &self.auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        for (k, v) in &self.extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: write: {e}"));
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{method} {path}: read: {e}"));
        parse_response(&raw).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: bad response ({e}): {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(500)])
            )
        })
    }

    #[track_caller]
    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], "")
    }

    /// GET that must answer 200; the body.
    #[track_caller]
    fn page(&self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.body
    }

    #[track_caller]
    fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        self.request("POST", path, headers, &form_body(form))
    }

    /// A POSTed action that must redirect (303); the Location.
    #[track_caller]
    fn act(&self, path: &str, form: &[(&str, &str)]) -> String {
        let r = self.post(path, form, &[]);
        assert_eq!(r.status, 303, "POST {path} {form:?}: {r:?}");
        r.header("location")
            .unwrap_or_else(|| panic!("POST {path}: 303 without Location: {r:?}"))
            .to_string()
    }
}

fn parse_response(raw: &[u8]) -> Result<Resp, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty response")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size_text = std::str::from_utf8(&rest[..nl]).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size + 2 {
                return Err("truncated chunk".into());
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if body.len() != n {
            return Err(format!("body is {} bytes, Content-Length {n}", body.len()));
        }
    }
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8(body).map_err(|e| e.to_string())?,
    })
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pw}").as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encoding for query strings and form bodies.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------
// Reading pages
// ---------------------------------------------------------------------------------------------

/// Undo askama's HTML escaping (and the common named entities).
fn unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
}

/// The element with `id="ID"` up to its closing `</TAG>` (tables, svgs and sections are not
/// nested in these templates).
#[track_caller]
fn element<'a>(html: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no element #{id} in page:\n{}", abbrev_page(html)));
    let open = html[..at].rfind('<').expect("tag start");
    let tag: String = html[open + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = format!("</{tag}>");
    let end = html[at..]
        .find(&close)
        .map(|i| at + i + close.len())
        .unwrap_or(html.len());
    &html[open..end]
}

fn has_element(html: &str, id: &str) -> bool {
    html.contains(&format!("id=\"{id}\""))
}

/// All values of attribute `attr` (e.g. `data-jid`) inside `html`, in order.
fn attr_values(html: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&needle) {
        let after = &rest[i + needle.len()..];
        let end = after.find('"').expect("closing quote");
        out.push(unescape(&after[..end]));
        rest = &after[end..];
    }
    out
}

/// The jids listed in the page's `#jobs` table.
#[track_caller]
fn jids(html: &str) -> Vec<String> {
    attr_values(element(html, "jobs"), "data-jid")
}

/// The `<tr ATTR="VALUE">…</tr>` row.
#[track_caller]
fn row<'a>(html: &'a str, attr: &str, value: &str) -> &'a str {
    let needle = format!("<tr {attr}=\"{value}\"");
    let at = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no row {attr}={value:?} in page:\n{}", abbrev_page(html)));
    let end = html[at..].find("</tr>").map_or(html.len(), |i| at + i);
    &html[at..end]
}

/// The `#next-page` link's href (unescaped), if any.
fn next_page(html: &str) -> Option<String> {
    let at = html.find("id=\"next-page\"")?;
    let tag_end = at + html[at..].find('>')?;
    let tag_start = html[..at].rfind('<')?;
    attr_values(&html[tag_start..tag_end], "href")
        .into_iter()
        .next()
}

/// A count from the header's `#summary`.
#[track_caller]
fn stat(html: &str, name: &str) -> u64 {
    let summary = element(html, "summary");
    let needle = format!("data-stat=\"{name}\">");
    let i = summary
        .find(&needle)
        .unwrap_or_else(|| panic!("no data-stat={name} in #summary: {summary}"));
    let rest = &summary[i + needle.len()..];
    let text = &rest[..rest.find('<').unwrap()];
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("data-stat={name}: {text:?}: {e}"))
}

fn abbrev_page(html: &str) -> String {
    // Skip the <head> and header chrome.
    let from = html.find("<main>").unwrap_or(0);
    let s = &html[from..];
    s.chars().take(3000).collect()
}

/// Resolves a page link (`?after=...` or `/path?...`) against the page it is on.
fn resolve(current: &str, href: &str) -> String {
    if href.starts_with('/') {
        href.to_string()
    } else if href.starts_with('?') {
        let path = current.split('?').next().unwrap();
        format!("{path}{href}")
    } else {
        panic!("unexpected link {href:?} on {current}")
    }
}

/// Follows `#next-page` from `first` to the end; the jids of each page.
#[track_caller]
fn walk(web: &Web, first: &str, max_pages: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut path = first.to_string();
    loop {
        let html = web.page(&path);
        pages.push(jids(&html));
        match next_page(&html) {
            Some(href) => path = resolve(&path, &href),
            None => return pages,
        }
        assert!(
            pages.len() < max_pages,
            "more than {max_pages} pages from {first}"
        );
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

fn push_to(p: &mut Conn, jid: &str, jobtype: &str, queue: &str, args: Value) {
    p.push_ok(&json!({"jid": jid, "jobtype": jobtype, "queue": queue, "args": args}));
}

/// Pushes a job to `queue`, fetches it as `w` and FAILs it: with the default retry it lands in
/// the retries, with `retry: -1` straight in the dead set.
#[allow(clippy::too_many_arguments)]
fn failed_job(
    p: &mut Conn,
    w: &mut Conn,
    jid: &str,
    jobtype: &str,
    queue: &str,
    errtype: &str,
    message: &str,
    retry: Option<i64>,
) {
    let mut j = json!({"jid": jid, "jobtype": jobtype, "queue": queue, "args": [jid, 1]});
    if let Some(r) = retry {
        j["retry"] = json!(r);
    }
    p.push_ok(&j);
    let got = w.fetch_job(queue);
    assert_eq!(got["jid"], json!(jid), "fetched another job from {queue}");
    w.fail(&json!({
        "jid": jid,
        "errtype": errtype,
        "message": message,
        "backtrace": [format!("{jobtype}.perform at app/jobs/{jobtype}.rb:12"), "worker.rb:40 in run"],
    }))
    .expect_ok();
}

fn scheduled_job(p: &mut Conn, jid: &str, jobtype: &str, queue: &str, in_secs: f64) {
    p.push_ok(&json!({
        "jid": jid, "jobtype": jobtype, "queue": queue, "args": [jid], "at": rfc3339_in(in_secs)
    }));
}

/// The jids FETCH returns from `queue` until it is empty (bounded).
fn drain(w: &mut Conn, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match w.fetch(queue) {
            Some((_, j)) => {
                let jid = j["jid"].as_str().unwrap().to_string();
                w.ack(&jid).expect_ok();
                out.push(jid);
            }
            None => return out,
        }
    }
    panic!("queue {queue} did not drain");
}

fn sets(p: &mut Conn) -> (u64, u64, u64) {
    let info = p.info();
    (
        set_size(&info, "retries"),
        set_size(&info, "scheduled"),
        set_size(&info, "dead"),
    )
}

fn write_conf(data: &Path, name: &str, text: &str) {
    let dir = data.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Auth, CSRF, prefix
// ---------------------------------------------------------------------------------------------

#[test]
fn basic_auth_guards_everything_but_health_and_static() {
    let s = Server::start(web_opts().password("s3cret pw"));
    let web = Web::new(&s);
    let anon = web.with_auth(None);

    for path in ["/", "/queues", "/retries", "/stats", "/busy", "/morgue/x"] {
        let r = anon.get(path);
        assert_eq!(r.status, 401, "GET {path} without credentials: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Faktory\""),
            "GET {path}: {r:?}"
        );
    }
    for bad in [
        basic("admin", "wrong"),
        basic("admin", "s3cret"),
        basic("s3cret pw", ""),
        "Bearer s3cret pw".to_string(),
    ] {
        let r = web.with_auth(Some(bad.clone())).get("/");
        assert_eq!(r.status, 401, "GET / with {bad:?}: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Faktory\"")
        );
    }
    // A POST without credentials changes nothing.
    let mut p = s.conn();
    push_to(&mut p, "auth-job-0001", "A", "authq", json!([]));
    let r = anon.post("/queues/authq", &[("action", "delete")], &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(queue_size(&p.info(), "authq"), Some(1));

    // Any user name with the right password.
    for user in ["admin", "", "someone else"] {
        let w = web.with_auth(Some(basic(user, "s3cret pw")));
        let html = w.page("/");
        assert!(has_element(&html, "summary"), "{html}");
    }
    let stats: Value = serde_json::from_str(&web.page("/stats")).expect("/stats is JSON");
    assert!(stats["faktory"]["queues"]["authq"].is_u64(), "{stats}");

    // Open paths.
    let h = anon.get("/health");
    assert_eq!(h.status, 200, "{h:?}");
    let hv: Value = serde_json::from_str(&h.body).expect("/health is JSON");
    assert!(hv["server"].is_object(), "{hv}");
    for (file, ty) in [("app.css", "text/css"), ("app.js", "javascript")] {
        let r = anon.get(&format!("/static/{file}"));
        assert_eq!(r.status, 200, "/static/{file}: {r:?}");
        assert!(r.header("content-type").unwrap_or("").contains(ty), "{r:?}");
        assert!(!r.body.is_empty());
    }
    assert_eq!(anon.get("/static/nope.js").status, 404);
}

#[test]
fn no_password_means_no_auth() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    assert!(web.auth.is_none());
    assert_eq!(web.get("/").status, 200);
    assert_eq!(web.get("/queues").status, 200);
}

#[test]
fn cross_site_posts_are_refused_and_change_nothing() {
    let s = Server::start(web_opts().password("pw"));
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("csrf-worker");
    push_to(&mut p, "csrf-job-0001", "C", "csrfq", json!([1]));
    failed_job(
        &mut p,
        &mut w,
        "csrf-retry-0001",
        "R",
        "csrfr",
        "E",
        "boom",
        None,
    );
    let origin_evil = [("Origin", "http://evil.example")];
    let origin_port = [("Origin", "http://127.0.0.1:1")];
    let null_origin = [("Origin", "null")];
    let cross: [&[(&str, &str)]; 6] = [
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Sec-Fetch-Site", "same-site")],
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Origin", "http://evil.example"),
        ],
        &origin_evil,
        &origin_port,
        &null_origin,
    ];
    for headers in cross {
        for (path, form) in [
            (
                "/queues/csrfq",
                vec![("action", "delete_selected"), ("jid", "csrf-job-0001")],
            ),
            ("/queues/csrfq", vec![("action", "delete")]),
            ("/queues/csrfq", vec![("action", "pause")]),
            ("/retries", vec![("action", "delete"), ("all", "1")]),
            (
                "/retries",
                vec![("action", "retry"), ("jid", "csrf-retry-0001")],
            ),
            ("/retries/csrf-retry-0001", vec![("action", "kill")]),
            ("/busy", vec![("wid", "all"), ("signal", "terminate")]),
        ] {
            let r = web.post(path, &form, headers);
            assert_eq!(
                r.status, 403,
                "POST {path} {form:?} with {headers:?}: {r:?}"
            );
        }
    }
    let info = p.info();
    assert_eq!(queue_size(&info, "csrfq"), Some(1), "{info}");
    assert_eq!(set_size(&info, "retries"), 1, "{info}");
    assert_eq!(set_size(&info, "dead"), 0, "{info}");
    let html = web.page("/queues");
    assert!(!row(&html, "data-queue", "csrfq").contains("paused"));
    assert_eq!(
        w.cmd(r#"BEAT {"wid":"csrf-worker"}"#).wire(),
        b"+OK\r\n",
        "a refused terminate reached the worker"
    );

    // Same-origin requests (and scripts without browser headers) go through.
    let host = web.host.clone();
    let same_origin = format!("http://{host}");
    let r = web.post(
        "/queues/csrfq",
        &[("action", "delete_selected"), ("jid", "csrf-job-0001")],
        &[("Sec-Fetch-Site", "same-origin"), ("Origin", &same_origin)],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(queue_size(&p.info(), "csrfq").unwrap_or(0), 0);
    let r = web.post(
        "/retries",
        &[("action", "delete"), ("jid", "csrf-retry-0001")],
        &[("Origin", &same_origin)],
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(set_size(&p.info(), "retries"), 0);
}

#[test]
fn script_name_prefixes_links_and_is_accepted_on_paths() {
    let s = Server::start(web_opts().password("pw"));
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("prefix-worker");
    push_to(&mut p, "prefix-job-0001", "P", "prefq", json!([]));
    failed_job(
        &mut p,
        &mut w,
        "prefix-retry-1",
        "R",
        "prefr",
        "E",
        "boom",
        None,
    );

    // Without the header: plain links.
    let html = web.page("/queues");
    assert!(
        html.contains("href=\"/queues/prefq\""),
        "{}",
        abbrev_page(&html)
    );
    assert!(html.contains("href=\"/static/app.css\""));

    let pw = web.with_header("X-Script-Name", "/werk");
    for path in [
        "/",
        "/werk/",
        "/werk",
        "/queues",
        "/werk/queues",
        "/werk/retries",
    ] {
        let html = pw.page(path);
        assert!(html.contains("data-prefix=\"/werk\""), "GET {path}");
        assert!(html.contains("href=\"/werk/static/app.css\""), "GET {path}");
        assert!(html.contains("src=\"/werk/static/app.js\""), "GET {path}");
        for tab in [
            "/busy",
            "/queues",
            "/retries",
            "/scheduled",
            "/morgue",
            "/cron",
        ] {
            assert!(
                html.contains(&format!("href=\"/werk{tab}\"")),
                "GET {path}: no link to /werk{tab}"
            );
        }
        // No link escapes the prefix.
        for href in attr_values(&html, "href")
            .iter()
            .chain(&attr_values(&html, "action"))
        {
            assert!(
                href.starts_with("/werk/") || href.starts_with('?') || href == "/werk",
                "GET {path}: link {href:?} without the prefix"
            );
        }
    }
    let html = pw.page("/werk/queues");
    assert!(html.contains("href=\"/werk/queues/prefq\""));
    assert!(html.contains("action=\"/werk/queues/prefq\""));
    let html = pw.page("/werk/retries");
    assert!(html.contains("href=\"/werk/retries/prefix-retry-1\""));
    assert!(html.contains("action=\"/werk/retries\""));
    let html = pw.page("/werk/retries/prefix-retry-1");
    assert!(html.contains("action=\"/werk/retries/prefix-retry-1\""));
    // The prefix works on the open paths too.
    let anon = pw.with_auth(None);
    assert_eq!(anon.get("/werk/health").status, 200);
    assert_eq!(anon.get("/werk/static/app.js").status, 200);
    assert_eq!(anon.get("/werk/queues").status, 401);

    // Actions redirect under the prefix.
    let loc = pw.act("/werk/queues/prefq", &[("action", "pause")]);
    assert_eq!(loc, "/werk/queues");
    let loc = pw.act("/queues/prefq", &[("action", "resume")]);
    assert_eq!(loc, "/werk/queues");
    let loc = pw.act(
        "/werk/retries",
        &[("action", "retry"), ("jid", "prefix-retry-1")],
    );
    assert_eq!(loc, "/werk/retries");
    assert_eq!(drain(&mut w, "prefr"), vec!["prefix-retry-1"]);
    let loc = pw.act(
        "/werk/busy",
        &[("wid", "prefix-worker"), ("signal", "quiet")],
    );
    assert_eq!(loc, "/werk/busy");

    // A hostile header value is ignored, not echoed.
    let bad = web.with_header("X-Script-Name", "/x\"><script>alert(1)</script>");
    let html = bad.page("/");
    assert!(
        !html.contains("<script>alert"),
        "X-Script-Name echoed unescaped"
    );
}

// ---------------------------------------------------------------------------------------------
// Pages
// ---------------------------------------------------------------------------------------------

#[test]
fn every_page_renders_with_a_small_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_conf(
        &data,
        "cron.toml",
        "[[cron]]\n  schedule = \"0 3 * * *\"\n  [cron.job]\n    type = \"NightlyReport\"\n    queue = \"reports\"\n",
    );
    write_conf(
        &data,
        "throttles.toml",
        "[throttles]\nslow = { concurrency = 2, timeout = 60 }\n",
    );
    let s = Server::start_in(tmp.path(), web_opts().password("pw"));
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("pages-worker-1");

    for i in 0..3 {
        push_to(
            &mut p,
            &format!("pages-default-{i}"),
            "SendEmail",
            "default",
            json!([i, "x"]),
        );
    }
    push_to(
        &mut p,
        "pages-critical-1",
        "Charge",
        "critical",
        json!([{"cents": 100}]),
    );
    // HTML in args and error messages is escaped.
    push_to(
        &mut p,
        "pages-html-0001",
        "Html",
        "htmlq",
        json!(["<script>alert('x')</script>"]),
    );
    failed_job(
        &mut p,
        &mut w,
        "pages-retry-1",
        "Flaky",
        "flaky",
        "RuntimeError",
        "it <b>broke</b>",
        None,
    );
    failed_job(
        &mut p,
        &mut w,
        "pages-retry-2",
        "Flaky",
        "flaky",
        "IOError",
        "disk",
        None,
    );
    failed_job(
        &mut p,
        &mut w,
        "pages-dead-1",
        "Doomed",
        "doomed",
        "FatalError",
        "no retries",
        Some(-1),
    );
    scheduled_job(&mut p, "pages-sched-1", "Later", "later", 3600.0);
    scheduled_job(&mut p, "pages-sched-2", "Later", "later", 7200.0);
    // One job in flight.
    push_to(
        &mut p,
        "pages-inflight-1",
        "Busy",
        "busyq",
        json!(["working"]),
    );
    assert_eq!(w.fetch_job("busyq")["jid"], "pages-inflight-1");
    // Some processed history.
    push_to(&mut p, "pages-done-1", "Done", "doneq", json!([]));
    assert_eq!(drain(&mut w, "doneq"), vec!["pages-done-1"]);
    let bid = match p.cmd(r#"BATCH NEW {"description":"web test","complete":{"jobtype":"Cb"}}"#) {
        r @ Reply::Bulk(_) => r.bulk_str().to_string(),
        other => panic!("BATCH NEW: {other:?}"),
    };

    let info = p.info();
    // Dashboard.
    for path in [
        "/",
        "/?days=7",
        "/?days=30",
        "/?days=90",
        "/?days=180",
        "/?days=13",
    ] {
        let html = web.page(path);
        for (stat_name, want) in [
            (
                "processed",
                info["faktory"]["total_processed"].as_u64().unwrap(),
            ),
            (
                "failed",
                info["faktory"]["total_failures"].as_u64().unwrap(),
            ),
            (
                "enqueued",
                info["faktory"]["total_enqueued"].as_u64().unwrap(),
            ),
            ("busy", 1),
            ("retries", 2),
            ("scheduled", 2),
            ("dead", 1),
        ] {
            assert_eq!(
                stat(&html, stat_name),
                want,
                "GET {path}: #summary {stat_name}"
            );
        }
        assert!(element(&html, "live-graph").starts_with("<svg"), "{path}");
        assert!(html.contains("id=\"poll-interval\""));
        let hist = element(&html, "history-graph");
        assert!(
            hist.starts_with("<svg") && hist.contains("polyline"),
            "{path}: {hist}"
        );
        let facts = element(&html, "server-facts");
        assert!(
            facts.contains("Uptime") && facts.contains("Worker processes"),
            "{facts}"
        );
        let days = path.strip_prefix("/?days=").unwrap_or("30");
        let days = if days == "13" { "30" } else { days };
        assert!(
            html.contains(&format!("?days={days}\" class=\"active\"")),
            "{path}: active days link"
        );
    }
    // FAILs count as processed too (as in Faktory).
    assert_eq!(
        info["faktory"]["total_processed"].as_u64(),
        Some(4),
        "{info}"
    );
    assert_eq!(
        info["faktory"]["total_failures"].as_u64(),
        Some(3),
        "{info}"
    );

    // JSON endpoints.
    let stats: Value = serde_json::from_str(&web.page("/stats")).unwrap();
    assert_eq!(stats["faktory"]["sets"]["retries"], json!(2), "{stats}");
    let health: Value = serde_json::from_str(&web.page("/health")).unwrap();
    assert!(health["server"]["connections"].is_u64(), "{health}");
    // Prometheus metrics (docs/metrics.md), behind the same auth.
    let m = web.get("/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{m:?}"
    );
    let mut needles = vec![
        "# TYPE werk_jobs_pushed_total counter",
        "werk_retry_jobs 2",
        "werk_command_duration_seconds_count{command=\"PUSH\"}",
        "werk_queue_size{queue=",
    ];
    // The embedded store's own metrics (docs/metrics.md, "Embedded store (SQLite)").
    if on_postgres() {
        eprintln!("on PostgreSQL: /metrics has no embedded-store (SQLite writer) metrics to check");
    } else {
        needles.extend([
            "werk_store_commit_duration_seconds_count",
            "werk_store_fsync_duration_seconds_count",
        ]);
    }
    for needle in needles {
        assert!(
            m.body.contains(needle),
            "/metrics lacks {needle:?}:\n{}",
            m.body
        );
    }

    // Queues.
    let html = web.page("/queues");
    let names = attr_values(element(&html, "queues"), "data-queue");
    for q in [
        "default", "critical", "htmlq", "flaky", "doomed", "busyq", "doneq",
    ] {
        assert!(
            names.contains(&q.to_string()),
            "queue {q} not listed: {names:?}"
        );
    }
    let r = row(&html, "data-queue", "default");
    assert!(r.contains("<td>3</td>"), "size of default: {r}");
    let html = web.page("/queues/default");
    let mut got = jids(&html);
    got.sort();
    assert_eq!(
        got,
        ["pages-default-0", "pages-default-1", "pages-default-2"]
    );
    assert!(next_page(&html).is_none());
    let html = web.page("/queues/htmlq");
    assert!(!html.contains("<script>alert"), "args not escaped");
    assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    // An unknown queue goes back to the list.
    let r = web.get("/queues/nope");
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/queues")),
        "{r:?}"
    );

    // Busy.
    let html = web.page("/busy");
    let procs = element(&html, "processes");
    assert_eq!(attr_values(procs, "data-wid"), ["pages-worker-1"]);
    assert!(row(procs, "data-wid", "pages-worker-1").contains("running"));
    let inflight = element(&html, "jobs");
    assert_eq!(attr_values(inflight, "data-jid"), ["pages-inflight-1"]);
    assert!(row(inflight, "data-jid", "pages-inflight-1").contains("pages-worker-1"));

    // The sets.
    let html = web.page("/retries");
    let mut got = jids(&html);
    got.sort();
    assert_eq!(got, ["pages-retry-1", "pages-retry-2"]);
    let r = row(&html, "data-jid", "pages-retry-1");
    assert!(
        r.contains("RuntimeError: it &#60;b&#62;broke&#60;/b&#62;") || r.contains("it &lt;b&gt;"),
        "{r}"
    );
    assert!(r.contains("name=\"jid\" value=\"pages-retry-1\""), "{r}");
    for a in ["retry", "delete", "kill"] {
        assert!(
            html.contains(&format!("name=\"action\" value=\"{a}\"")),
            "retries: {a}"
        );
    }
    assert!(html.contains("name=\"all\" value=\"1\""));
    let html = web.page("/scheduled");
    let mut got = jids(&html);
    got.sort();
    assert_eq!(got, ["pages-sched-1", "pages-sched-2"]);
    for a in ["add_to_queue", "delete", "kill"] {
        assert!(
            html.contains(&format!("name=\"action\" value=\"{a}\"")),
            "scheduled: {a}"
        );
    }
    let html = web.page("/morgue");
    assert_eq!(jids(&html), ["pages-dead-1"]);
    assert!(row(&html, "data-jid", "pages-dead-1").contains("FatalError: no retries"));
    for a in ["retry", "delete"] {
        assert!(
            html.contains(&format!("name=\"action\" value=\"{a}\"")),
            "morgue: {a}"
        );
    }

    // Detail pages.
    for (path, jid, want) in [
        ("retries", "pages-retry-1", "RuntimeError"),
        ("scheduled", "pages-sched-1", "Later"),
        ("morgue", "pages-dead-1", "FatalError"),
    ] {
        let html = web.page(&format!("/{path}/{jid}"));
        let job = element(&html, "job");
        assert!(
            job.contains(jid) && job.contains(want),
            "/{path}/{jid}: {job}"
        );
        if path != "scheduled" {
            let bt = element(&html, "backtrace");
            assert!(bt.contains("worker.rb:40 in run"), "{bt}");
            assert!(job.contains("Retry count"), "{job}");
        } else {
            assert!(!has_element(&html, "backtrace"));
        }
        assert!(html.contains(&format!("action=\"/{path}/{jid}\"")));
    }
    // A job not (or no longer) in that set: back to the list.
    for (path, jid) in [("retries", "pages-sched-1"), ("morgue", "nope-nope-1")] {
        let r = web.get(&format!("/{path}/{jid}"));
        assert_eq!(r.status, 303, "{r:?}");
        assert_eq!(r.header("location"), Some(&*format!("/{path}")));
    }

    // Cron, batches, throttles.
    let html = web.page("/cron");
    let cron = element(&html, "cron");
    assert_eq!(attr_values(cron, "data-entry").len(), 1, "{cron}");
    assert!(
        cron.contains("NightlyReport") && cron.contains("0 3 * * *"),
        "{cron}"
    );
    let html = web.page("/batches");
    assert!(!has_element(&html, "batch"));
    let html = web.page("/batches?bid=b-nope");
    assert!(
        html.contains("No such batch b-nope"),
        "{}",
        abbrev_page(&html)
    );
    let html = web.page(&format!("/batches?bid={}", enc(&bid)));
    let b = element(&html, "batch");
    assert!(b.contains(&bid) && b.contains("web test"), "{b}");
    // The list, newest first, shows it too.
    let list = element(&html, "batches");
    assert_eq!(attr_values(list, "data-bid"), vec![bid.clone()], "{list}");
    assert!(row(list, "data-bid", &bid).contains("web test"), "{list}");
    let html = web.page("/throttles");
    let t = element(&html, "throttles");
    assert!(row(t, "data-queue", "slow").contains("2 concurrent"), "{t}");

    // Unknown paths.
    assert_eq!(web.get("/nope").status, 404);
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------

#[test]
fn set_actions_move_jobs() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("actions-worker");
    for (jid, q) in [
        ("act-retry-1", "ra"),
        ("act-retry-2", "rb"),
        ("act-retry-3", "rc"),
        ("act-retry-4", "rd"),
        ("act-retry-5", "re"),
    ] {
        failed_job(&mut p, &mut w, jid, "Flaky", q, "E", "boom", None);
    }
    assert_eq!(sets(&mut p), (5, 0, 0));

    // Retry selected: back in its queue.
    assert_eq!(
        web.act(
            "/retries",
            &[
                ("action", "retry"),
                ("jid", "act-retry-1"),
                ("jid", "act-retry-2")
            ]
        ),
        "/retries"
    );
    assert_eq!(sets(&mut p), (3, 0, 0));
    assert_eq!(drain(&mut w, "ra"), ["act-retry-1"]);
    assert_eq!(drain(&mut w, "rb"), ["act-retry-2"]);
    // Delete selected: gone.
    web.act("/retries", &[("action", "delete"), ("jid", "act-retry-3")]);
    assert_eq!(sets(&mut p), (2, 0, 0));
    assert!(!jids(&web.page("/retries")).contains(&"act-retry-3".to_string()));
    assert_eq!(drain(&mut w, "rc"), Vec::<String>::new());
    // Kill selected: dead.
    web.act("/retries", &[("action", "kill"), ("jid", "act-retry-4")]);
    assert_eq!(sets(&mut p), (1, 0, 1));
    assert_eq!(jids(&web.page("/morgue")), ["act-retry-4"]);
    // Nothing selected: nothing happens.
    web.act("/retries", &[("action", "retry")]);
    assert_eq!(sets(&mut p), (1, 0, 1));
    // An unknown action is a 400.
    let r = web.post(
        "/retries",
        &[("action", "explode"), ("jid", "act-retry-5")],
        &[],
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = web.post(
        "/morgue",
        &[("action", "kill"), ("jid", "act-retry-4")],
        &[],
    );
    assert_eq!(r.status, 400, "kill on the morgue: {r:?}");
    assert_eq!(sets(&mut p), (1, 0, 1));
    // The detail page's action.
    assert_eq!(
        web.act("/retries/act-retry-5", &[("action", "retry")]),
        "/retries"
    );
    assert_eq!(drain(&mut w, "re"), ["act-retry-5"]);
    // From the morgue: retry.
    assert_eq!(
        web.act("/morgue", &[("action", "retry"), ("jid", "act-retry-4")]),
        "/morgue"
    );
    assert_eq!(drain(&mut w, "rd"), ["act-retry-4"]);
    assert_eq!(sets(&mut p), (0, 0, 0));

    // Scheduled: add to queue, delete, kill.
    for (i, q) in ["sa", "sb", "sc"].iter().enumerate() {
        scheduled_job(&mut p, &format!("act-sched-{i}"), "Later", q, 3600.0);
    }
    assert_eq!(
        web.act(
            "/scheduled",
            &[("action", "add_to_queue"), ("jid", "act-sched-0")]
        ),
        "/scheduled"
    );
    assert_eq!(drain(&mut w, "sa"), ["act-sched-0"]);
    web.act(
        "/scheduled",
        &[("action", "delete"), ("jid", "act-sched-1")],
    );
    web.act("/scheduled/act-sched-2", &[("action", "kill")]);
    assert_eq!(sets(&mut p), (0, 0, 1));
    assert_eq!(jids(&web.page("/morgue")), ["act-sched-2"]);
    assert_eq!(drain(&mut w, "sb"), Vec::<String>::new());
    // Dead (retry: -1 FAIL): delete from the detail page.
    failed_job(
        &mut p,
        &mut w,
        "act-dead-1",
        "Doomed",
        "da",
        "E",
        "fatal",
        Some(-1),
    );
    assert_eq!(sets(&mut p), (0, 0, 2));
    web.act("/morgue/act-dead-1", &[("action", "delete")]);
    assert_eq!(jids(&web.page("/morgue")), ["act-sched-2"]);

    // The all=1 forms act on every job of the set.
    for i in 0..4 {
        failed_job(
            &mut p,
            &mut w,
            &format!("act-all-{i}"),
            "Flaky",
            "alla",
            "E",
            "boom",
            None,
        );
    }
    for i in 0..3 {
        scheduled_job(&mut p, &format!("act-alls-{i}"), "Later", "allb", 600.0);
    }
    assert_eq!(sets(&mut p), (4, 3, 1));
    web.act("/retries", &[("all", "1"), ("action", "retry")]);
    assert_eq!(drain(&mut w, "alla").len(), 4);
    web.act("/scheduled", &[("all", "1"), ("action", "add_to_queue")]);
    assert_eq!(drain(&mut w, "allb").len(), 3);
    web.act("/morgue", &[("all", "1"), ("action", "delete")]);
    assert_eq!(sets(&mut p), (0, 0, 0));
}

#[test]
fn queue_actions_pause_resume_delete() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("queue-actions-worker");
    for i in 0..3 {
        push_to(&mut p, &format!("qa-job-{i}"), "Q", "qa", json!([i]));
    }
    push_to(&mut p, "qb-job-0", "Q", "qb", json!([]));

    // Pause: badge, FETCH gets nothing.
    assert_eq!(web.act("/queues/qa", &[("action", "pause")]), "/queues");
    let html = web.page("/queues");
    let r = row(&html, "data-queue", "qa");
    assert!(
        r.contains("class=\"badge\">paused") && r.contains("value=\"resume\""),
        "{r}"
    );
    assert!(!row(&html, "data-queue", "qb").contains("paused"));
    assert!(web.page("/queues/qa").contains("paused"));
    assert!(
        w.fetch("qa").is_none(),
        "FETCH from a paused queue returned a job"
    );
    // Resume.
    web.act("/queues/qa", &[("action", "resume")]);
    assert!(!row(&web.page("/queues"), "data-queue", "qa").contains("paused"));
    let j = w.fetch_job("qa");
    assert_eq!(j["jid"], "qa-job-0");
    w.ack("qa-job-0").expect_ok();

    // Delete selected.
    assert_eq!(
        web.act(
            "/queues/qa",
            &[("action", "delete_selected"), ("jid", "qa-job-1")]
        ),
        "/queues/qa"
    );
    assert_eq!(jids(&web.page("/queues/qa")), ["qa-job-2"]);
    assert_eq!(queue_size(&p.info(), "qa"), Some(1));
    // Delete the queue.
    assert_eq!(web.act("/queues/qb", &[("action", "delete")]), "/queues");
    let html = web.page("/queues");
    let names = attr_values(element(&html, "queues"), "data-queue");
    assert!(!names.contains(&"qb".to_string()), "{names:?}");
    assert!(names.contains(&"qa".to_string()), "{names:?}");
    assert!(w.fetch("qb").is_none());
    let r = web.post("/queues/qa", &[("action", "explode")], &[]);
    assert_eq!(r.status, 400, "{r:?}");
}

#[test]
fn busy_quiet_and_terminate_reach_the_workers_beat() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut w1 = s.worker("busy-w1");
    let mut w2 = s.worker("busy-w2");
    let quiet = b"$17\r\n{\"state\":\"quiet\"}\r\n".to_vec();
    let terminate = b"$21\r\n{\"state\":\"terminate\"}\r\n".to_vec();

    let html = web.page("/busy");
    assert_eq!(
        attr_values(element(&html, "processes"), "data-wid"),
        ["busy-w1", "busy-w2"]
    );
    assert_eq!(
        web.act("/busy", &[("wid", "busy-w1"), ("signal", "quiet")]),
        "/busy"
    );
    assert_eq!(w1.cmd(r#"BEAT {"wid":"busy-w1"}"#).wire(), quiet);
    assert_eq!(w2.cmd(r#"BEAT {"wid":"busy-w2"}"#).wire(), b"+OK\r\n");
    let html = web.page("/busy");
    assert!(row(&html, "data-wid", "busy-w1").contains("class=\"badge\">quiet"));
    assert!(!row(&html, "data-wid", "busy-w2").contains("badge"));

    web.act("/busy", &[("wid", "all"), ("signal", "terminate")]);
    assert_eq!(w1.cmd(r#"BEAT {"wid":"busy-w1"}"#).wire(), terminate);
    assert_eq!(w2.cmd(r#"BEAT {"wid":"busy-w2"}"#).wire(), terminate);

    for form in [
        vec![("wid", "busy-w1"), ("signal", "explode")],
        vec![("signal", "quiet")],
    ] {
        let r = web.post("/busy", &form, &[]);
        assert_eq!(r.status, 400, "{form:?}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Paging and search
// ---------------------------------------------------------------------------------------------

#[test]
fn queue_paging_follows_next_page_links() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut p = s.conn();
    let pushed: Vec<String> = (0..60).map(|i| format!("page-job-{i:03}")).collect();
    for (i, j) in pushed.iter().enumerate() {
        let jobtype = if i % 3 == 0 { "Three" } else { "Other" };
        push_to(
            &mut p,
            j,
            jobtype,
            "pages",
            json!([i, format!("needle-{i}")]),
        );
    }
    let pages = walk(&web, "/queues/pages", 10);
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [25, 25, 10]);
    let all: Vec<String> = pages.concat();
    let uniq: HashSet<&String> = all.iter().collect();
    assert_eq!(uniq.len(), 60, "duplicates across pages");
    assert_eq!(uniq, pushed.iter().collect::<HashSet<_>>(), "jobs missing");
    // Oldest first, as FETCH would take them.
    assert_eq!(all, pushed);

    // Search within a queue: jobtype (with paging keeping the filter), jid, text.
    let pages = walk(&web, "/queues/pages?jobtype=Three", 10);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [20]);
    assert!(
        pages[0]
            .iter()
            .all(|j| j["page-job-".len()..].parse::<usize>().unwrap() % 3 == 0),
        "{pages:?}"
    );
    assert_eq!(
        jids(&web.page("/queues/pages?jid=page-job-042")),
        ["page-job-042"]
    );
    assert_eq!(
        jids(&web.page("/queues/pages?q=NEEDLE-17")),
        ["page-job-017"]
    );
    let html = web.page("/queues/pages?q=no-such-text");
    assert!(jids(&html).is_empty());
    assert!(
        element(&html, "jobs").contains("No jobs match"),
        "{}",
        element(&html, "jobs")
    );
    assert!(next_page(&html).is_none());
}

#[test]
fn set_search_and_paging() {
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut p = s.conn();
    let mut w = s.worker("search-worker");
    // 30 retries: three job types, two error messages, two queues.
    for i in 0..30 {
        let (jobtype, errtype, msg) = match i % 3 {
            0 => (
                "ImportCsv",
                "Timeout::Error",
                "Connection to Upstream timed out after 30s",
            ),
            1 => (
                "SendEmail",
                "Net::SMTPAuthenticationError",
                "535 bad credentials",
            ),
            _ => ("ResizeImage", "Errno::ENOENT", "No such file /tmp/x.png"),
        };
        let queue = if i < 15 { "low" } else { "high" };
        failed_job(
            &mut p,
            &mut w,
            &format!("search-{i:02}"),
            jobtype,
            queue,
            errtype,
            msg,
            None,
        );
    }
    assert_eq!(sets(&mut p).0, 30);

    // Paging: 25 + 5.
    let pages = walk(&web, "/retries", 5);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [25, 5]);
    assert_eq!(pages.concat().iter().collect::<HashSet<_>>().len(), 30);

    let search = |query: &str| -> Vec<String> {
        let mut all: Vec<String> = walk(&web, &format!("/retries?{query}"), 5).concat();
        all.sort();
        all
    };
    let expect = |f: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..30)
            .filter(|&i| f(i))
            .map(|i| format!("search-{i:02}"))
            .collect()
    };
    assert_eq!(search("jobtype=SendEmail"), expect(&|i| i % 3 == 1));
    assert_eq!(search("jid=search-07"), ["search-07"]);
    // Text in the error message, case-insensitive.
    assert_eq!(
        search(&format!("q={}", enc("upstream TIMED out"))),
        expect(&|i| i % 3 == 0)
    );
    assert_eq!(search("q=ENOENT"), expect(&|i| i % 3 == 2));
    // Text in args.
    assert_eq!(search("q=search-29"), ["search-29"]);
    // Queue filter, combined with jobtype.
    assert_eq!(
        search("queue=high&jobtype=ImportCsv"),
        expect(&|i| i >= 15 && i % 3 == 0)
    );
    // The search form offers the queue field on the sets and keeps its value.
    let html = web.page("/retries?queue=high");
    assert!(
        html.contains(r#"<input name="queue" placeholder="queue" value="high">"#),
        "{}",
        abbrev_page(&html)
    );
    // No match.
    let html = web.page("/retries?jobtype=Nope");
    assert!(jids(&html).is_empty());
    assert!(element(&html, "jobs").contains("No jobs match"));
    let html = web.page("/retries?q=zzz-not-there");
    assert!(jids(&html).is_empty());
    // The form keeps what was searched.
    let html = web.page("/retries?jobtype=SendEmail&q=bad");
    assert!(html.contains("name=\"jobtype\" placeholder=\"job type\" value=\"SendEmail\""));
    assert!(html.contains("value=\"bad\""));

    // The morgue searches the same way.
    for i in 0..3 {
        failed_job(
            &mut p,
            &mut w,
            &format!("search-dead-{i}"),
            "Doomed",
            "low",
            "Boom",
            &format!("dead reason {i}"),
            Some(-1),
        );
    }
    assert_eq!(jids(&web.page("/morgue?q=REASON+1")), ["search-dead-1"]);
    assert_eq!(
        jids(&web.page("/morgue?jobtype=ImportCsv")),
        Vec::<String>::new()
    );
}

#[test]
fn twenty_thousand_scheduled_jobs_page_and_search() {
    const N: usize = 20_000;
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut p = s.conn();
    let t = Instant::now();
    let mut all = Vec::with_capacity(N);
    for chunk in 0..N / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|k| {
                let i = chunk * 1000 + k;
                let jid = format!("big-{i:05}");
                all.push(jid.clone());
                let args = if i == 13_579 {
                    json!(["the-Unique-Needle"])
                } else {
                    json!([i])
                };
                json!({
                    "jid": jid,
                    "jobtype": if i % 100 == 0 { "Rare" } else { "Common" },
                    "queue": "big",
                    "args": args,
                    "at": rfc3339_in(3600.0 + i as f64),
                })
            })
            .collect();
        let r = p.cmd(&format!("PUSHB {}", Value::Array(jobs)));
        assert_eq!(r.json(), json!({}), "PUSHB chunk {chunk}: {r:?}");
    }
    eprintln!("web 20k: PUSHB of {N} scheduled jobs: {:?}", t.elapsed());
    assert_eq!(sets(&mut p).1, N as u64);

    let t = Instant::now();
    let first = web.page("/scheduled");
    let first_time = t.elapsed();
    assert_eq!(stat(&first, "scheduled"), N as u64);
    assert_eq!(jids(&first), all[..25], "first page: the soonest 25");

    // Follow the cursors to the end.
    let t = Instant::now();
    let mut seen = HashSet::with_capacity(N);
    let mut path = "/scheduled".to_string();
    let mut pages = 0;
    let mut last_page_time;
    let mut slowest = Duration::ZERO;
    loop {
        let tp = Instant::now();
        let html = web.page(&path);
        last_page_time = tp.elapsed();
        slowest = slowest.max(last_page_time);
        let js = jids(&html);
        pages += 1;
        for j in js {
            assert!(seen.insert(j.clone()), "{j} listed twice (page {pages})");
        }
        match next_page(&html) {
            Some(href) => path = resolve(&path, &href),
            None => break,
        }
        assert!(pages <= N / 25 + 1, "too many pages");
    }
    let walk_time = t.elapsed();
    // A trailing empty page (a full last page still links on) is tolerated, nothing more.
    assert!(pages == N / 25 || pages == N / 25 + 1, "{pages} pages");
    if pages > N / 25 {
        eprintln!("NOTE: the last full page links to an empty page");
    }
    assert_eq!(seen.len(), N);

    // Text search over all 20k (case-insensitive), and a jobtype search with paging.
    let t = Instant::now();
    let html = web.page("/scheduled?q=unique-needle");
    let search_time = t.elapsed();
    assert_eq!(jids(&html), ["big-13579"]);
    assert!(next_page(&html).is_none());
    let t = Instant::now();
    let html = web.page("/scheduled?q=no-such-needle");
    let miss_time = t.elapsed();
    assert!(jids(&html).is_empty());
    let t = Instant::now();
    let rare: Vec<String> = walk(&web, "/scheduled?jobtype=Rare", 20).concat();
    let rare_time = t.elapsed();
    assert_eq!(rare.len(), N / 100);
    assert!(rare.iter().all(|j| j.ends_with("00")));

    eprintln!(
        "web 20k scheduled: first page {first_time:?}; {pages} pages via #next-page in {walk_time:?} \
         (last/deepest page {last_page_time:?}, slowest {slowest:?}); text search hit {search_time:?}, \
         miss {miss_time:?}; jobtype search ({} jobs, {} pages) {rare_time:?}",
        rare.len(),
        N / 100 / 25,
    );
}

/// Slow and silent clients: connections that never finish their headers neither block other
/// users nor stay open forever (closed after the 10 s header timeout).
#[test]
fn stalled_clients_do_not_block_others_and_are_closed() {
    use std::io::{Read, Write};
    let s = Server::start(web_opts());
    let web = Web::new(&s);
    let mut stalled: Vec<std::net::TcpStream> = (0..40)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&web.host).unwrap();
            c.write_all(b"GET /queues HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // Others are served at once.
    let t = std::time::Instant::now();
    assert_eq!(web.get("/queues").status, 200);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Each stalled connection is answered or closed by the header timeout: wait for its end
    // (EOF or a reset), which must come after ≈10 s and before a deadline.
    let deadline = t + Duration::from_secs(25);
    for c in &mut stalled {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = Vec::new();
        match c.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "a stalled connection is still open after {:?}: {e}",
                t.elapsed()
            ),
        }
    }
    assert!(
        t.elapsed() >= Duration::from_secs(9),
        "stalled connections were closed after {:?}, before the 10 s header timeout",
        t.elapsed()
    );
    assert_eq!(web.get("/health").status, 200);
}
