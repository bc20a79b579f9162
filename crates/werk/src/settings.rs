//! `[faktory]` and `[web]` in `conf.d/*.toml` (Faktory's format), and what the web UI is to serve
//! with:
//!
//! ```toml
//! [faktory]
//! binding  = "0.0.0.0:7419"
//! password = "secret"        # or "/run/secrets/faktory": a path, the file holds the password
//! [web]
//! binding  = "0.0.0.0:7420"
//! password = "ui-secret"     # optional: the web UI's own password (default: the server's)
//! [storage]
//! url = "postgresql://werk@db1,db2/werk?target_session_attrs=read-write"  # optional
//! ```
//!
//! The command line wins over these (`-b`, `-w`, `--password-file`, `FAKTORY_PASSWORD`). They
//! are read at start only: changing them needs a restart.

use std::net::SocketAddr;
use std::path::Path;

use toml::Value;
use werk_server::tls::TlsAcceptor;

/// What `conf.d/*.toml` says in `[faktory]` and `[web]` (password files already read).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSettings {
    pub faktory_binding: Option<String>,
    pub faktory_password: Option<String>,
    pub web_binding: Option<String>,
    pub web_password: Option<String>,
    /// `[storage] url`: the PostgreSQL database to serve from instead of the embedded store.
    pub storage_url: Option<String>,
}

/// What the web UI is to serve with, decided in `werk serve`.
#[derive(Clone)]
pub struct WebSettings {
    /// Where to listen; `None` when disabled (`-w :0`).
    pub bind: Option<SocketAddr>,
    /// The password the UI asks for: `[web] password`, else the protocol password; `None` = open.
    pub password: Option<String>,
    /// The protocol port's TLS acceptor when TLS is on: the UI then serves HTTPS with the same
    /// certificate.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("bind", &self.bind)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The sections read here and their keys.
const SECTIONS: [(&str, &[&str]); 3] = [
    ("faktory", &["binding", "password"]),
    ("web", &["binding", "password"]),
    ("storage", &["url"]),
];

/// Parses `[faktory]` and `[web]` of every file (`(name, text)`). An unknown key, a value that
/// is not a string, the same key in two files or an unreadable password file is an error
/// naming the file and the key.
pub fn parse(files: &[(String, String)]) -> Result<FileSettings, String> {
    // (value, file it came from) per section and key.
    let mut found: [[Option<(String, &str)>; 2]; 3] = Default::default();
    for (file, text) in files {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{file}: {}", e.message().trim_end()))?;
        for (s, (section, keys)) in SECTIONS.into_iter().enumerate() {
            let Some(value) = doc.get(section) else {
                continue;
            };
            let Value::Table(table) = value else {
                return Err(format!("{file}: `{section}` must be a table ([{section}])"));
            };
            for (key, value) in table {
                let Some(k) = keys.iter().position(|k| k == key) else {
                    return Err(format!(
                        "{file}: [{section}] unknown key `{key}` (known: {})",
                        keys.join(", ")
                    ));
                };
                let Value::String(text) = value else {
                    return Err(format!(
                        "{file}: [{section}] {key}: expected a string, not {}",
                        value.type_str()
                    ));
                };
                if let Some((_, first)) = &found[s][k] {
                    return Err(format!(
                        "{file}: [{section}] {key} is also set in {first}; set it once"
                    ));
                }
                found[s][k] = Some((text.clone(), file));
            }
        }
    }
    let password =
        |slot: &Option<(String, &str)>, section: &str| -> Result<Option<String>, String> {
            match slot {
                None => Ok(None),
                Some((v, _)) if v.is_empty() => Ok(None),
                Some((v, file)) if v.starts_with('/') => {
                    let text = std::fs::read_to_string(Path::new(v)).map_err(|e| {
                        format!("{file}: [{section}] password: cannot read password file {v}: {e}")
                    })?;
                    let pw = text.trim_end();
                    if pw.is_empty() {
                        return Err(format!(
                            "{file}: [{section}] password: the password file {v} is empty"
                        ));
                    }
                    Ok(Some(pw.to_string()))
                }
                Some((v, _)) => Ok(Some(v.clone())),
            }
        };
    let [[fb, fp], [wb, wp], [su, _]] = &found;
    Ok(FileSettings {
        faktory_binding: fb.as_ref().map(|(v, _)| v.clone()),
        faktory_password: password(fp, "faktory")?,
        web_binding: wb.as_ref().map(|(v, _)| v.clone()),
        web_password: password(wp, "web")?,
        storage_url: su
            .as_ref()
            .map(|(v, _)| v.clone())
            .filter(|v| !v.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn reads_both_sections() {
        let s = parse(&files(&[
            (
                "a.toml",
                "[faktory]\nbinding = \":7419\"\npassword = \"pw\"\n",
            ),
            (
                "b.toml",
                "[web]\nbinding = \"127.0.0.1:9\"\n[[cron]]\nschedule = \"* * * * *\"\n",
            ),
        ]))
        .unwrap();
        assert_eq!(s.faktory_binding.as_deref(), Some(":7419"));
        assert_eq!(s.faktory_password.as_deref(), Some("pw"));
        assert_eq!(s.web_binding.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(s.web_password, None);
        assert_eq!(s.storage_url, None);
        let s = parse(&files(&[(
            "s.toml",
            "[storage]\nurl = \"host=/run/postgresql dbname=werk\"\n",
        )]))
        .unwrap();
        assert_eq!(
            s.storage_url.as_deref(),
            Some("host=/run/postgresql dbname=werk")
        );
        let e = parse(&files(&[("s.toml", "[storage]\nuri = \"x\"\n")])).unwrap_err();
        assert!(e.contains("`uri`") && e.contains("known: url"), "{e}");
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse(&files(&[("x.toml", "[faktory]\nbind = \":1\"\n")])).unwrap_err();
        assert!(e.contains("x.toml") && e.contains("`bind`"), "{e}");
        let e = parse(&files(&[("x.toml", "[web]\npassword = 3\n")])).unwrap_err();
        assert!(e.contains("x.toml") && e.contains("password"), "{e}");
        let e = parse(&files(&[
            ("a.toml", "[web]\nbinding = \":1\"\n"),
            ("b.toml", "[web]\nbinding = \":2\"\n"),
        ]))
        .unwrap_err();
        assert!(e.contains("a.toml") && e.contains("b.toml"), "{e}");
        let e = parse(&files(&[(
            "p.toml",
            "[faktory]\npassword = \"/nonexistent/werk-password\"\n",
        )]))
        .unwrap_err();
        assert!(
            e.contains("p.toml") && e.contains("/nonexistent/werk-password"),
            "{e}"
        );
    }
}
