//! `[throttles]` in `conf.d/*.toml` (Faktory Enterprise's format):
//!
//! ```toml
//! [throttles]
//! instagram = { concurrency = 4, timeout = 60 }   # at most 4 working at once, cluster-wide
//! bulk      = { worker = 5, timeout = 60 }        # at most 5 working per worker process
//! ```
//!
//! `timeout` (seconds, optional) bounds how long one FETCH holds a slot: a worker that crashed or
//! hangs gives its slot back after it, although its job keeps its reservation.

use toml::Value;
use werk_core::job::valid_queue_name;
use werk_store::{Throttle, ThrottleLimit};

/// Parses the throttles of every file (`(name, text)`); an error names the file, the queue
/// and the field.
pub fn parse_throttles(files: &[(String, String)]) -> Result<Vec<Throttle>, String> {
    let mut out: Vec<Throttle> = Vec::new();
    for (file, text) in files {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{file}: {}", e.message()))?;
        let Some(section) = doc.get("throttles") else {
            continue;
        };
        let Value::Table(section) = section else {
            return Err(format!("{file}: `throttles` must be a table ([throttles])"));
        };
        for (queue, spec) in section {
            let at = |field: &str, msg: String| {
                format!("{file}: [throttles] queue {queue:?}, field `{field}`: {msg}")
            };
            if !valid_queue_name(queue) {
                return Err(format!(
                    "{file}: [throttles] queue {queue:?}: not a valid queue name"
                ));
            }
            if out.iter().any(|t| &t.queue == queue) {
                return Err(format!(
                    "{file}: [throttles] queue {queue:?}: throttled twice"
                ));
            }
            let Value::Table(spec) = spec else {
                return Err(format!(
                    "{file}: [throttles] queue {queue:?}: expected a table such as \
                     {{ concurrency = 4, timeout = 60 }}"
                ));
            };
            let count = |field: &str| -> Result<Option<u32>, String> {
                match spec.get(field) {
                    None => Ok(None),
                    Some(Value::Integer(n)) if *n > 0 && *n <= i64::from(u32::MAX) => {
                        Ok(Some(*n as u32))
                    }
                    Some(v) => Err(at(field, format!("{v} is not a positive whole number"))),
                }
            };
            let limit = match (count("concurrency")?, count("worker")?) {
                (Some(n), None) => ThrottleLimit::Concurrency(n),
                (None, Some(n)) => ThrottleLimit::PerWorker(n),
                (Some(_), Some(_)) => {
                    return Err(at(
                        "worker",
                        "give either `concurrency` or `worker`, not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(at(
                        "concurrency",
                        "missing: give `concurrency` (cluster-wide) or `worker` (per process)"
                            .into(),
                    ))
                }
            };
            let timeout = match spec.get("timeout") {
                None => None,
                Some(v) => {
                    let secs = match v {
                        Value::Integer(n) => *n as f64,
                        Value::Float(f) => *f,
                        _ => f64::NAN,
                    };
                    if !(secs.is_finite() && secs > 0.0) {
                        return Err(at(
                            "timeout",
                            format!("{v} is not a positive number of seconds"),
                        ));
                    }
                    Some((secs * 1000.0).min(1e15) as i64)
                }
            };
            if let Some(key) = spec
                .keys()
                .find(|k| !["concurrency", "worker", "timeout"].contains(&k.as_str()))
            {
                return Err(at(
                    key,
                    "unknown key (expected concurrency, worker, timeout)".into(),
                ));
            }
            out.push(Throttle {
                queue: queue.clone(),
                limit,
                timeout,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Throttle>, String> {
        parse_throttles(&[("conf.d/throttles.toml".into(), text.into())])
    }

    #[test]
    fn reads_faktorys_format() {
        let t = parse(
            "[throttles]\ninstagram = { concurrency = 4, timeout = 60 }\nbulk = { worker = 5 }\n",
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                Throttle {
                    queue: "bulk".into(),
                    limit: ThrottleLimit::PerWorker(5),
                    timeout: None
                },
                Throttle {
                    queue: "instagram".into(),
                    limit: ThrottleLimit::Concurrency(4),
                    timeout: Some(60_000)
                },
            ]
        );
        assert_eq!(
            parse("[[cron]]\nschedule = \"* * * * *\"\n").unwrap(),
            vec![]
        );
    }

    #[test]
    fn errors_name_file_queue_and_field() {
        for (text, want) in [
            (
                "[throttles]\nq = { concurrency = 0 }",
                "queue \"q\", field `concurrency`",
            ),
            ("[throttles]\nq = { worker = \"5\" }", "field `worker`"),
            (
                "[throttles]\nq = { timeout = 5 }",
                "field `concurrency`: missing",
            ),
            (
                "[throttles]\nq = { concurrency = 1, worker = 1 }",
                "not both",
            ),
            (
                "[throttles]\nq = { concurrency = 1, timeout = -1 }",
                "field `timeout`",
            ),
            (
                "[throttles]\nq = { concurrency = 1, limit = 2 }",
                "field `limit`: unknown key",
            ),
            (
                "[throttles]\n\"a b\" = { concurrency = 1 }",
                "not a valid queue name",
            ),
            ("[throttles]\nq = 5", "expected a table"),
            ("throttles = 5", "must be a table"),
            ("[throttles\n", "conf.d/throttles.toml"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with("conf.d/throttles.toml"), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let twice = parse_throttles(&[
            ("a.toml".into(), "[throttles]\nq = { worker = 1 }".into()),
            ("b.toml".into(), "[throttles]\nq = { worker = 2 }".into()),
        ])
        .unwrap_err();
        assert!(
            twice.contains("b.toml") && twice.contains("twice"),
            "{twice}"
        );
    }
}
