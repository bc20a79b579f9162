//! Cron configuration files (`conf.d/*.toml` under the config directory) and `werk cron list`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use werk_core::cron::{parse_cron_config, CronConfig, Missed};
use werk_core::time::{format_millis, now_millis};

/// Reads every `conf.d/*.toml` of `dir` (in name order) and parses its cron entries. A missing
/// `conf.d` means no entries.
pub fn load(dir: &Path) -> Result<CronConfig> {
    Ok(parse_cron_config(&read_conf_d(dir)?)?)
}

/// Every `conf.d/*.toml` of `dir` as `(path, text)`, in name order (none if `conf.d` is missing).
pub fn read_conf_d(dir: &Path) -> Result<Vec<(String, String)>> {
    let conf_d = dir.join("conf.d");
    let mut names = Vec::new();
    match std::fs::read_dir(&conf_d) {
        Ok(rd) => {
            for entry in rd {
                let path = entry
                    .with_context(|| format!("cannot list {}", conf_d.display()))?
                    .path();
                if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                    names.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", conf_d.display())),
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    for path in names {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.push((path.display().to_string(), text));
    }
    Ok(files)
}

#[derive(Args)]
pub struct CronArgs {
    #[command(subcommand)]
    command: CronCommand,
}

#[derive(clap::Subcommand)]
enum CronCommand {
    /// Show each cron entry of the configuration and its next run times.
    List(ListArgs),
}

#[derive(Args)]
struct ListArgs {
    /// Configuration directory (its conf.d/*.toml are read).
    #[arg(short = 'c', long = "config-dir", default_value = "./werk-data")]
    config_dir: PathBuf,
    /// How many next run times to show per entry.
    #[arg(long, default_value_t = 5)]
    count: usize,
}

pub fn run(args: CronArgs) -> Result<()> {
    match args.command {
        CronCommand::List(a) => list(&a),
    }
}

fn list(a: &ListArgs) -> Result<()> {
    let cfg = load(&a.config_dir)?;
    if cfg.entries.is_empty() {
        println!(
            "no cron entries in {}",
            a.config_dir.join("conf.d").display()
        );
        return Ok(());
    }
    let now = now_millis();
    for e in &cfg.entries {
        println!(
            "{} entry {} (id {}): {:?} in {}, missed ticks: {}",
            e.file,
            e.index,
            e.id,
            e.schedule,
            e.timezone.name(),
            match e.missed {
                Missed::Once => "once",
                Missed::Skip => "skip",
            }
        );
        println!(
            "  pushes {} to queue {:?} with args {}",
            e.job.jobtype,
            e.job.queue,
            e.job.args.get()
        );
        let mut t = now;
        for _ in 0..a.count {
            match e.next_after(t) {
                Some(next) => {
                    let local = chrono::DateTime::from_timestamp_millis(next)
                        .map(|d| d.with_timezone(&e.timezone).to_rfc3339())
                        .unwrap_or_default();
                    println!("  next: {local}  ({})", format_millis(next));
                    t = next;
                }
                None => {
                    println!("  (never again)");
                    break;
                }
            }
        }
    }
    Ok(())
}
