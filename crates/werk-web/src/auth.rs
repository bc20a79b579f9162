//! The layers in front of every route: reverse-proxy prefix, HTTP Basic auth, cross-site POST
//! refusal.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use base64::Engine;

/// The path prefix the UI is served under (from `X-Script-Name`), `""` when none; put in the
/// request's extensions for links.
#[derive(Debug, Clone, Default)]
pub struct Prefix(pub String);

/// A usable `X-Script-Name` value: `/a/b` (no trailing slash), only URL-path characters.
pub fn prefix_from(headers: &HeaderMap) -> String {
    let Some(v) = headers.get("x-script-name").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let v = v.trim().trim_end_matches('/');
    let ok = v.starts_with('/')
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/-._~".contains(&c));
    if ok {
        v.to_string()
    } else {
        String::new()
    }
}

/// Strips the prefix from the request path (a proxy may forward it or not) and records it.
pub fn strip_prefix(mut req: Request<Body>) -> Request<Body> {
    let prefix = prefix_from(req.headers());
    if !prefix.is_empty() {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix(&prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                let rest = if rest.is_empty() { "/" } else { rest };
                let pq = match req.uri().query() {
                    Some(q) => format!("{rest}?{q}"),
                    None => rest.to_string(),
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req.extensions_mut().insert(Prefix(prefix));
    req
}

/// Paths open without a password.
pub fn is_open(path: &str) -> bool {
    path == "/health" || path.starts_with("/static/")
}

/// Whether the request carries the password (any user name), compared in constant time.
pub fn authorized(headers: &HeaderMap, password: &str) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let given = match raw.iter().position(|&c| c == b':') {
        Some(i) => &raw[i + 1..],
        None => return false,
    };
    let want = password.as_bytes();
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

pub fn unauthorized(had_credentials: bool) -> Response<Body> {
    let text = if had_credentials {
        "Authorization failed"
    } else {
        "Authorization required"
    };
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Basic realm=\"Faktory\"")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("static response")
}

/// A state-changing request from another site (refused): `Sec-Fetch-Site` says cross-site or
/// same-site, or, without it, `Origin` names another host than `Host`.
pub fn cross_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !(site == "same-origin" || site == "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // No browser metadata at all: not a browser request (curl, scripts).
        return false;
    };
    if origin == "null" {
        return true;
    }
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !origin_host.eq_ignore_ascii_case(host)
}

pub fn forbidden() -> Response<Body> {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("cross-origin request refused"))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn basic_auth() {
        let b = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(&headers(&[("authorization", &b("x:pw"))]), "pw"));
        assert!(authorized(&headers(&[("authorization", &b(":pw"))]), "pw"));
        assert!(authorized(
            &headers(&[("authorization", &b("u:p:w"))]),
            "p:w"
        ));
        assert!(!authorized(
            &headers(&[("authorization", &b("x:pW"))]),
            "pw"
        ));
        assert!(!authorized(
            &headers(&[("authorization", &b("x:pw2"))]),
            "pw"
        ));
        assert!(!authorized(&headers(&[("authorization", &b("pw"))]), "pw"));
        assert!(!authorized(
            &headers(&[("authorization", "Bearer pw")]),
            "pw"
        ));
        assert!(!authorized(&headers(&[]), "pw"));
    }

    #[test]
    fn cross_origin_posts() {
        let post = Method::POST;
        assert!(!cross_origin(
            &Method::GET,
            &headers(&[("sec-fetch-site", "cross-site")])
        ));
        assert!(cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "cross-site")])
        ));
        assert!(cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "same-site")])
        ));
        assert!(!cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "same-origin")])
        ));
        assert!(!cross_origin(
            &post,
            &headers(&[("sec-fetch-site", "none")])
        ));
        assert!(cross_origin(
            &post,
            &headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:7420")
            ])
        ));
        assert!(!cross_origin(
            &post,
            &headers(&[
                ("origin", "http://127.0.0.1:7420"),
                ("host", "127.0.0.1:7420")
            ])
        ));
        assert!(!cross_origin(
            &post,
            &headers(&[("host", "127.0.0.1:7420")])
        ));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            prefix_from(&headers(&[("x-script-name", "/werk/")])),
            "/werk"
        );
        assert_eq!(prefix_from(&headers(&[("x-script-name", "werk")])), "");
        assert_eq!(prefix_from(&headers(&[("x-script-name", "/a\"b")])), "");
        let req = Request::builder()
            .uri("/werk/queues?x=1")
            .header("x-script-name", "/werk")
            .body(Body::empty())
            .unwrap();
        let req = strip_prefix(req);
        assert_eq!(req.uri().to_string(), "/queues?x=1");
        assert_eq!(req.extensions().get::<Prefix>().unwrap().0, "/werk");
    }
}
