//! `werk bench --compare URL2`: one scenario against two servers alternately, N rounds, with
//! each side's median and the ratio — the side-by-side measurement this project's performance
//! figures come from, reproducible by anyone. Also the disk probe every bench run starts with
//! (`--disk DIR`): the fdatasync latency of the disk, which a durable server cannot go below.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench::{run_async, BenchArgs, Mode};

/// Samples of the disk probe.
const DISK_SAMPLES: usize = 1000;
/// Bytes written before each fdatasync: about what one small commit writes (two WAL frames).
const DISK_WRITE: usize = 8192;
/// The probe file: written once, then overwritten in turn (as a WAL that starts over is).
const DISK_FILE: usize = 16 << 20;

/// The disk's fdatasync latency, in microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    dir: PathBuf,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    max: u64,
}

impl Disk {
    pub fn json(&self) -> Value {
        json!({
            "dir": self.dir.display().to_string(),
            "samples": DISK_SAMPLES,
            "write_bytes": DISK_WRITE,
            "fdatasync_us": {"p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max},
        })
    }

    pub fn print(&self, o: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            o,
            "disk ({}): fdatasync after an {} KiB overwrite, {DISK_SAMPLES} samples: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
            self.dir.display(),
            DISK_WRITE / 1024,
            self.p50,
            self.p90,
            self.p99,
            self.max
        )
    }

    /// Prints `label` and how the latencies it names (µs) compare with the disk's fdatasync.
    pub fn print_against(
        &self,
        o: &mut impl Write,
        label: &str,
        p50: f64,
        p99: f64,
    ) -> std::io::Result<()> {
        writeln!(
            o,
            "{label} p50 {:.1}× its fdatasync p50, p99 {:.1}× its fdatasync p99",
            p50 / self.p50.max(1) as f64,
            p99 / self.p99.max(1) as f64
        )
    }
}

/// Measures fdatasync in `dir`: a 16 MiB file is written and synced once, then 8 KiB at a
/// time is overwritten in turn and fdatasynced, 1,000 times. The file is removed afterwards.
pub(crate) fn probe_disk(dir: &Path) -> Result<Disk> {
    let path = dir.join(format!(".werk-bench-disk-probe.{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {} to measure the disk", path.display()))?;
    let measured = (|| -> std::io::Result<Vec<u64>> {
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..DISK_FILE / chunk.len() {
            file.write_all_at(&chunk, (i * chunk.len()) as u64)?;
        }
        file.sync_all()?;
        let block = vec![0xa5u8; DISK_WRITE];
        let mut us = Vec::with_capacity(DISK_SAMPLES);
        for i in 0..DISK_SAMPLES {
            file.write_all_at(&block, ((i * DISK_WRITE) % DISK_FILE) as u64)?;
            let t = Instant::now();
            file.sync_data()?;
            us.push(t.elapsed().as_micros() as u64);
        }
        Ok(us)
    })();
    drop(file);
    let _ = std::fs::remove_file(&path);
    let mut us = measured.with_context(|| format!("measuring the disk in {}", dir.display()))?;
    us.sort_unstable();
    let q = |f: f64| us[((us.len() as f64 * f) as usize).min(us.len() - 1)];
    Ok(Disk {
        dir: dir.to_path_buf(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: *us.last().expect("samples"),
    })
}

/// The disk probe a run starts with, unless `--no-disk`.
pub(crate) fn probe_disk_if_asked(args: &BenchArgs) -> Result<Option<Disk>> {
    if args.no_disk {
        return Ok(None);
    }
    let dir = args.disk.clone().unwrap_or_else(std::env::temp_dir);
    probe_disk(&dir).map(Some)
}

/// The command whose latency a scenario is judged by (as in bench/run.sh).
fn key_command(mode: Mode) -> &'static str {
    match mode {
        Mode::Push | Mode::Latency => "PUSH",
        Mode::Pushb => "PUSHB",
        Mode::Work | Mode::Mixed => "ACK",
    }
}

/// One run's figures.
struct Figures {
    throughput: f64,
    p50: Option<u64>,
    p99: Option<u64>,
}

impl Figures {
    fn of(v: &Value, key: &str) -> Figures {
        Figures {
            throughput: v["throughput_per_s"].as_f64().unwrap_or(0.0),
            p50: v["latency_us"][key]["p50"].as_u64(),
            p99: v["latency_us"][key]["p99"].as_u64(),
        }
    }
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_u(v: Vec<Option<u64>>) -> Option<f64> {
    let v: Vec<f64> = v
        .into_iter()
        .map(|x| x.map(|x| x as f64))
        .collect::<Option<_>>()?;
    (!v.is_empty()).then(|| median_f(v))
}

fn spread(v: &[f64]) -> f64 {
    let max = v.iter().cloned().fold(f64::MIN, f64::max);
    let min = v.iter().cloned().fold(f64::MAX, f64::min);
    if min > 0.0 {
        max / min
    } else {
        f64::INFINITY
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn run(args: BenchArgs) -> Result<()> {
    let b_url = args.compare.clone().expect("--compare given");
    if !args.flush {
        bail!(
            "--compare runs the scenario {} times on each server, each time from empty: pass \
             --flush (it deletes ALL data on both servers)",
            args.rounds
        );
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if b_url.contains(',') || args.url.contains(',') {
        bail!("--compare takes one server on each side (no comma-separated node lists)");
    }
    let disk = probe_disk_if_asked(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let key = key_command(args.mode);
    let sides = [("A", args.url.clone()), ("B", b_url)];
    let mut o = std::io::stdout().lock();
    if !args.json {
        writeln!(
            o,
            "werk bench --compare: mode {}, {} connections, {} rounds (A first in odd rounds, B first in even); key command {key}",
            args.mode.name(),
            args.connections,
            args.rounds
        )?;
        for (name, url) in &sides {
            writeln!(o, "  {name} = {}", crate::bench::shown_url(url))?;
        }
        if let Some(d) = &disk {
            d.print(&mut o)?;
        }
        writeln!(o)?;
        writeln!(
            o,
            "{:<7} {:<5} {:>12} {:>12} {:>12}",
            "round",
            "side",
            "jobs/s",
            format!("{key} p50 µs"),
            format!("{key} p99 µs")
        )?;
        o.flush()?;
    }
    let mut figures: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for side in order {
            let (name, url) = &sides[side];
            let mut a = args.clone();
            a.url = url.clone();
            a.compare = None;
            if args.mode == Mode::Work {
                // Fill the queues first, not measured.
                let mut fill = a.clone();
                fill.mode = Mode::Pushb;
                fill.connections = 4;
                fill.batch = 1000;
                let (ok, v) = runtime.block_on(run_async(fill, None, false))?;
                if !ok || v["complete"] != true {
                    bail!("round {round}, {name}: filling the queues failed: {v}");
                }
                a.flush = false;
            }
            let (ok, v) = runtime.block_on(run_async(a, disk.as_ref(), false))?;
            if !ok || v["complete"] != true {
                failed.push(format!(
                    "round {round}, {name}: errors {}, broken connections {}, complete {}{}",
                    v["errors"],
                    v["io_errors"],
                    v["complete"],
                    v["error_samples"]
                        .as_array()
                        .and_then(|s| s.first())
                        .map(|s| format!(" (first error: {s})"))
                        .unwrap_or_default()
                ));
            }
            let f = Figures::of(&v, key);
            if !args.json {
                writeln!(
                    o,
                    "{:<7} {:<5} {:>12.1} {:>12} {:>12}",
                    round,
                    name,
                    f.throughput,
                    opt(f.p50),
                    opt(f.p99)
                )?;
                o.flush()?;
            }
            figures[side].push(f);
            runs.push(json!({"round": round, "side": name, "report": v}));
        }
    }
    let tp = |s: usize| figures[s].iter().map(|f| f.throughput).collect::<Vec<_>>();
    let med = |s: usize| {
        (
            median_f(tp(s)),
            median_u(figures[s].iter().map(|f| f.p50).collect()),
            median_u(figures[s].iter().map(|f| f.p99).collect()),
        )
    };
    let (ma, mb) = (med(0), med(1));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let lat_ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| ratio(a, b));
    if args.json {
        let side = |s: usize, m: (f64, Option<f64>, Option<f64>)| {
            json!({
                "url": crate::bench::shown_url(&sides[s].1),
                "median_throughput_per_s": (m.0 * 10.0).round() / 10.0,
                "median_p50_us": m.1,
                "median_p99_us": m.2,
                "spread": spread(&tp(s)),
            })
        };
        println!(
            "{}",
            json!({
                "mode": args.mode.name(),
                "rounds": args.rounds,
                "key_command": key,
                "disk": disk.as_ref().map(Disk::json),
                "a": side(0, ma),
                "b": side(1, mb),
                "ratio_throughput": ratio(ma.0, mb.0),
                "ratio_p50": lat_ratio(ma.1, mb.1),
                "ratio_p99": lat_ratio(ma.2, mb.2),
                "failed": failed,
                "runs": runs,
            })
        );
    } else {
        let f1 = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.0}"));
        let fr = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}×"));
        writeln!(o)?;
        for (s, m) in [(0, ma), (1, mb)] {
            writeln!(
                o,
                "{:<13} {:>12.1} {:>12} {:>12}   spread (max/min jobs/s) {:.2}×",
                format!("median {}", sides[s].0),
                m.0,
                f1(m.1),
                f1(m.2),
                spread(&tp(s))
            )?;
        }
        writeln!(
            o,
            "{:<13} {:>12} {:>12} {:>12}",
            "ratio A/B",
            format!("{:.2}×", ratio(ma.0, mb.0)),
            fr(lat_ratio(ma.1, mb.1)),
            fr(lat_ratio(ma.2, mb.2))
        )?;
        if let Some(d) = &disk {
            for (s, m) in [(0, ma), (1, mb)] {
                if let (Some(p50), Some(p99)) = (m.1, m.2) {
                    let label = format!("{} against the disk: {key}", sides[s].0);
                    d.print_against(&mut o, &label, p50, p99)?;
                }
            }
        }
        for f in &failed {
            writeln!(o, "FAILED: {f}")?;
        }
    }
    drop(o);
    runtime.shutdown_timeout(Duration::from_millis(100));
    if !failed.is_empty() {
        bail!(
            "{} of {} runs had errors (see above)",
            failed.len(),
            2 * args.rounds
        );
    }
    Ok(())
}
