//! The `werk` command.

mod bench;
mod bench_compare;
mod cli;
mod client;
mod cron_cmd;
mod import;
mod sd_notify;
mod settings;
mod throttles;
mod torture;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use werk_server::{Config, QueueSignals, Server};
use werk_store::{Store, StoreConfig};
use werk_store_sqlite::{Durability, SqliteOptions, SqliteStore};

#[derive(Parser)]
#[command(
    name = "werk",
    version,
    disable_version_flag = true,
    about = "A Faktory-compatible job server that never loses a job"
)]
struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', short_alias = 'V', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server (Faktory protocol on --bind, web UI on --web-bind).
    Serve(ServeArgs),
    /// Crash-test a real server: SIGKILL it again and again under load and prove that no
    /// acknowledged job is lost or resurrected.
    Torture(torture::TortureArgs),
    /// Load-test any Faktory-compatible server (push, pushb, work, mixed, latency) and report
    /// throughput and per-command latency percentiles.
    Bench(bench::BenchArgs),
    /// Cron entries of a configuration directory (`werk cron list`).
    Cron(cron_cmd::CronArgs),
    /// Take over another server's jobs (`werk import faktory --redis URL`).
    Import(import::ImportArgs),
    /// A running server's figures (INFO), over the protocol (FAKTORY_URL).
    Info(cli::InfoArgs),
    /// A running server's queues: list, pause, resume, clear.
    Queue(cli::QueueArgs),
    /// Push a job to a running server.
    Job(cli::JobArgs),
    /// The retry set of a running server: list, requeue, delete, kill.
    Retries(cli::SetArgs),
    /// The scheduled set of a running server: list, requeue, delete, kill.
    Scheduled(cli::SetArgs),
    /// The dead set of a running server: list, requeue, delete.
    Dead(cli::SetArgs),
    /// A batch's status on a running server.
    Batch(cli::BatchArgs),
    /// A consistent copy of the embedded store while the server runs: DEST becomes a data
    /// directory `werk serve -d DEST` opens as it is.
    Backup(BackupArgs),
    /// Write the manual pages (werk.1 and one per subcommand, werk-serve.1, …) into DIR.
    Man { dir: PathBuf },
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
}

#[derive(Args)]
struct BackupArgs {
    /// A new or empty directory for the copy.
    dest: PathBuf,
    /// The embedded store's data directory.
    #[arg(short = 'd', long = "data-dir", default_value = "./werk-data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address for the Faktory protocol (`:7419` = all interfaces) [default: `[faktory] binding`
    /// of conf.d, else 127.0.0.1:7419].
    #[arg(short = 'b', long = "bind", value_name = "ADDR")]
    bind: Option<String>,
    /// Address for the web UI (`:0` disables it) [default: `[web] binding` of conf.d, else
    /// 127.0.0.1:7420].
    #[arg(short = 'w', long = "web-bind", value_name = "ADDR")]
    web_bind: Option<String>,
    /// development, staging or production; outside development a password is required (unless
    /// FAKTORY_SKIP_PASSWORD=1).
    #[arg(short = 'e', long = "environment", env = "FAKTORY_ENV", value_enum, default_value_t = Environment::Development)]
    environment: Environment,
    /// Log line format on stderr: `text`, or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
    /// Directory of the embedded store.
    #[arg(short = 'd', long = "data-dir", default_value = "./werk-data")]
    data_dir: PathBuf,
    /// Serve from this PostgreSQL database instead of the embedded store: a libpq connection
    /// string (`host=db1,db2 dbname=werk target_session_attrs=read-write`) or URI
    /// (`postgresql://werk@db1,db2/werk?target_session_attrs=read-write&sslmode=verify-full`).
    /// Any number of werk nodes may serve one database (docs/ha.md). Also `[storage] url` in
    /// conf.d.
    #[arg(
        long,
        env = "WERK_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Configuration directory (default: the data directory): `[faktory]`, `[web]`, cron
    /// entries and throttles are read from its conf.d/*.toml (SIGHUP re-reads cron entries and
    /// throttles); public.cert.pem and private.key.pem there turn TLS on.
    #[arg(short = 'c', long = "config-dir")]
    config_dir: Option<PathBuf>,
    /// A cron tick found later than this (seconds) was missed (the server was down) and is
    /// fired or skipped as its entry's `missed` setting says.
    #[arg(long, default_value_t = 10)]
    cron_late_secs: u64,
    /// File holding the password clients must use (overrides FAKTORY_PASSWORD, which
    /// overrides `[faktory] password` of conf.d).
    #[arg(long = "password-file")]
    password_file: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Longest accepted command line in bytes; a longer one gets -ERR and the connection closes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_line_bytes: usize,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// How often due scheduled and retry jobs are moved to their queues (ms).
    #[arg(long, default_value_t = 1000)]
    scan_interval_ms: u64,
    /// How often expired reservations are failed (ms).
    #[arg(long, default_value_t = 1000)]
    reap_interval_ms: u64,
    /// A worker process that sends no BEAT for this long is dropped (s).
    #[arg(long, default_value_t = 60)]
    heartbeat_timeout_secs: u64,
    /// How long FETCH waits for a job before answering nothing (ms).
    #[arg(long, default_value_t = 2000)]
    fetch_timeout_ms: u64,
    /// How long a client may take to complete HELLO (ms).
    #[arg(long, default_value_t = 2000)]
    handshake_timeout_ms: u64,
    /// How long dead jobs are kept (days).
    #[arg(long, default_value_t = 180)]
    dead_retention_days: u64,
    /// Skip the integrity check of the store at start-up (it reads the whole database).
    #[arg(long)]
    skip_integrity_check: bool,
    /// Stores up to this size (MiB) are checked (integrity, and queue sizes recounted) before
    /// serving; larger ones in the background while serving (werk stops, exit status 1, if the
    /// integrity check finds damage; drifted sizes are corrected).
    #[arg(long, default_value_t = 128)]
    blocking_check_mib: u64,
    /// When a PUSH, ACK, FAIL or other change is answered: `fsync` = once it is on disk
    /// (survives power loss); `none` = once the operating system has it (survives a crash of
    /// werk, not of the machine; for those who choose speed over safety).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    durability: DurabilityArg,
    /// For tests only: multiplies retry backoff and reservation lengths (0.01 makes a 60 s
    /// reservation last 600 ms).
    #[arg(long, default_value_t = 1.0, hide = true)]
    time_scale: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Environment {
    Development,
    Staging,
    Production,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    Fsync,
    None,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => serve(args),
        Commands::Torture(args) => torture::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Cron(args) => cron_cmd::run(args),
        Commands::Import(args) => import::run(args),
        Commands::Info(a) => cli::exit_with(cli::info(a)),
        Commands::Queue(a) => cli::exit_with(cli::queue(a)),
        Commands::Job(a) => cli::exit_with(cli::job(a)),
        Commands::Retries(a) => cli::exit_with(cli::set(cli::Set::Retries, a)),
        Commands::Scheduled(a) => cli::exit_with(cli::set(cli::Set::Scheduled, a)),
        Commands::Dead(a) => cli::exit_with(cli::set(cli::Set::Dead, a)),
        Commands::Batch(a) => cli::exit_with(cli::batch(a)),
        Commands::Man { dir } => write_man_pages(&dir),
        Commands::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "werk", &mut std::io::stdout());
            Ok(())
        }
        Commands::Backup(a) => {
            let started = std::time::Instant::now();
            let r = werk_store_sqlite::backup(&a.data_dir, &a.dest)
                .with_context(|| format!("backup of {} failed", a.data_dir.display()))?;
            println!(
                "backed up {} into {}: {} pages, {:.1} MB, {:.2} s",
                a.data_dir.display(),
                a.dest.display(),
                r.pages,
                r.bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// `:7419` means every interface; `localhost:7419` is resolved.
fn parse_bind(s: &str) -> Result<SocketAddr> {
    let s = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    std::net::ToSocketAddrs::to_socket_addrs(&s)
        .with_context(|| format!("invalid bind address {s:?}"))?
        .next()
        .with_context(|| format!("bind address {s:?} resolves to nothing"))
}

/// The password: --password-file, else FAKTORY_PASSWORD (a value starting with `/` names a
/// file, as with Docker secrets), else `[faktory] password` of conf.d (`from_conf`). Trailing
/// whitespace is trimmed.
fn password(args: &ServeArgs, from_conf: Option<String>) -> Result<Option<String>> {
    let from_file = |p: &std::path::Path| -> Result<String> {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read password file {}", p.display()))?;
        Ok(text.trim_end().to_string())
    };
    let pw = if let Some(p) = &args.password_file {
        Some(from_file(p)?)
    } else {
        match std::env::var("FAKTORY_PASSWORD") {
            Ok(v) if v.starts_with('/') => Some(from_file(std::path::Path::new(&v))?),
            Ok(v) if !v.trim_end().is_empty() => Some(v.trim_end().to_string()),
            _ => from_conf,
        }
    };
    if pw.as_deref() == Some("") {
        bail!("the password is empty");
    }
    Ok(pw)
}

fn serve(args: ServeArgs) -> Result<()> {
    if args.version {
        println!("werk {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid log level {:?}", args.log_level))?;
    // A log line that cannot be written (stderr is a pipe whose reader died, a full disk
    // under a redirect) is dropped. By default tracing-subscriber reports that with
    // `eprintln!`, which panics when stderr is broken — the task that logged dies: seen as a
    // server that ignored SIGTERM because its signal task panicked at "SIGTERM received".
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    raise_fd_limit();
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.clone());
    let conf = settings::parse(&cron_cmd::read_conf_d(&config_dir)?).map_err(anyhow::Error::msg)?;
    let bind = parse_bind(
        args.bind
            .as_deref()
            .or(conf.faktory_binding.as_deref())
            .unwrap_or("127.0.0.1:7419"),
    )?;
    let password = password(&args, conf.faktory_password.clone())?;
    if password.is_none() && args.environment != Environment::Development {
        let skip = std::env::var("FAKTORY_SKIP_PASSWORD")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        if !skip {
            bail!(
                "a password is required in {:?}: give --password-file, FAKTORY_PASSWORD or \
                 [faktory] password in conf.d (or set FAKTORY_SKIP_PASSWORD=1 to run without one)",
                format!("{:?}", args.environment).to_lowercase()
            );
        }
        tracing::warn!(environment = ?args.environment, "no password (FAKTORY_SKIP_PASSWORD)");
    }
    let tls = werk_server::tls::load(&config_dir).map_err(anyhow::Error::msg)?;
    let web_bind = args
        .web_bind
        .as_deref()
        .or(conf.web_binding.as_deref())
        .unwrap_or("127.0.0.1:7420");
    let web = settings::WebSettings {
        bind: if web_bind == ":0" {
            None
        } else {
            Some(parse_bind(web_bind).context("web UI address")?)
        },
        password: conf.web_password.clone().or_else(|| password.clone()),
        tls: tls.clone(),
    };
    let (schedule, throttles) = load_config(&config_dir)?;
    let config = Config {
        password,
        max_line: args.max_line_bytes,
        max_connections: args.max_connections,
        fetch_timeout: Duration::from_millis(args.fetch_timeout_ms),
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout_secs),
        scan_interval: Duration::from_millis(args.scan_interval_ms),
        reap_interval: Duration::from_millis(args.reap_interval_ms),
        ..Config::default()
    };
    let store_config = StoreConfig {
        dead_retention: (args.dead_retention_days as i64) * 24 * 3600 * 1000,
        time_scale: args.time_scale,
    };
    if !(args.time_scale > 0.0 && args.time_scale <= 1.0) {
        bail!("--time-scale must be in (0, 1]");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let database_url = args.database_url.clone().or(conf.storage_url.clone());
    runtime.block_on(async move {
        let signals = Arc::new(QueueSignals::default());
        let run = Run {
            args,
            config,
            config_dir,
            web,
            tls,
            bind,
            schedule,
            throttles,
            signals: signals.clone(),
        };
        match database_url {
            Some(url) => {
                let store = werk_store_postgres::PgStore::connect(&url, store_config, signals)
                    .await
                    .context("cannot open the PostgreSQL store")?;
                run.serve(Arc::new(store), "postgresql", |_| {}, None).await
            }
            None => {
                let options = SqliteOptions {
                    integrity_check: !run.args.skip_integrity_check,
                    blocking_check_limit: run.args.blocking_check_mib << 20,
                    durability: match run.args.durability {
                        DurabilityArg::Fsync => Durability::Fsync,
                        DurabilityArg::None => Durability::None,
                    },
                };
                let data_dir = &run.args.data_dir;
                let store = SqliteStore::open_with(data_dir, store_config, signals, options)
                    .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
                let store_metrics = store.metrics().clone();
                let check = store.take_background_check();
                run.serve(
                    Arc::new(store),
                    "embedded",
                    move |r| store_metrics.register(r),
                    check,
                )
                .await
            }
        }
    })
}

/// What `werk serve` decided before opening a store.
struct Run {
    args: ServeArgs,
    config: Config,
    config_dir: PathBuf,
    web: settings::WebSettings,
    tls: Option<werk_server::tls::TlsAcceptor>,
    bind: SocketAddr,
    schedule: werk_core::cron::CronConfig,
    throttles: Vec<werk_store::Throttle>,
    signals: Arc<QueueSignals>,
}

impl Run {
    /// Serves from an opened store until SIGTERM/SIGINT (or damage found by the background
    /// integrity check of the embedded store).
    async fn serve<S: Store>(
        self,
        store: Arc<S>,
        backend: &'static str,
        register_metrics: impl FnOnce(&mut werk_server::metrics::prometheus_client::registry::Registry)
            + Send
            + Sync
            + 'static,
        background_check: Option<tokio::sync::oneshot::Receiver<werk_store_sqlite::OpenError>>,
    ) -> Result<()> {
        let Run {
            args,
            config,
            config_dir,
            web,
            tls,
            bind,
            schedule,
            throttles,
            signals,
        } = self;
        if !throttles.is_empty() {
            tracing::info!(queues = throttles.len(), "throttles loaded");
        }
        store.set_throttles(throttles.clone());
        let (throttles_tx, throttles_rx) = tokio::sync::watch::channel(Arc::new(throttles));
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        let local = listener.local_addr()?;
        let web_listener = match web.bind {
            Some(web_bind) => {
                let l = tokio::net::TcpListener::bind(web_bind)
                    .await
                    .with_context(|| format!("cannot listen on {web_bind} (web UI)"))?;
                let addr = l.local_addr()?;
                let scheme = if web.tls.is_some() { "https" } else { "http" };
                tracing::info!(addr = %addr, "web UI on {scheme}://{addr}");
                writeln!(std::io::stdout().lock(), "werk web UI on {scheme}://{addr}")?;
                Some(l)
            }
            None => None,
        };
        let data_dir = (backend == "embedded").then(|| args.data_dir.display().to_string());
        tracing::info!(
            addr = %local,
            store = backend,
            data_dir,
            auth = config.password.is_some(),
            tls = tls.is_some(),
            environment = ?args.environment,
            "werk is serving"
        );
        let signal_handlers = install_signal_handlers()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "werk listening on {local}")?;
            out.flush()?;
        }
        sd_notify::notify("READY=1");
        let stop = CancellationToken::new();
        tokio::spawn(wait_for_signal(signal_handlers, stop.clone()));
        let damage = Arc::new(Mutex::new(None));
        if let Some(check) = background_check {
            let (stop, damage) = (stop.clone(), damage.clone());
            tokio::spawn(async move {
                if let Ok(found) = check.await {
                    tracing::error!(error = %found, "stopping: the store is damaged");
                    *damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                    stop.cancel();
                }
            });
        }
        if !schedule.entries.is_empty() {
            tracing::info!(entries = schedule.entries.len(), "cron entries loaded");
        }
        let (schedule_tx, schedule_rx) = tokio::sync::watch::channel(Arc::new(schedule));
        let web_cron = schedule_rx.clone();
        tokio::spawn(reload_on_sighup(
            config_dir,
            schedule_tx,
            throttles_tx,
            store.clone(),
        ));
        let cron_options = werk_server::cron::CronOptions {
            late: Duration::from_secs(args.cron_late_secs),
        };
        let mut server = Server::new(store, signals, config).with_cron(schedule_rx, cron_options);
        server.shared().metrics.register_extra(register_metrics);
        if let Some(tls) = tls {
            server = server.with_tls(tls);
        }
        if let Some(l) = web_listener {
            let app = Arc::new(werk_web::App {
                shared: server.shared().clone(),
                opts: werk_web::WebOptions {
                    password: web.password.clone(),
                    cron: Some(web_cron),
                    throttles: Some(throttles_rx),
                },
            });
            tokio::spawn(werk_web::serve(l, app, web.tls.clone(), stop.clone()));
        }
        server.run(listener, stop).await;
        if let Some(found) = damage.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(found).context("stopped serving");
        }
        Ok(())
    }
}

/// `werk man DIR`: werk.1 and a page per subcommand (werk-serve.1, werk-queue-pause.1, …),
/// from the same clap definitions as `--help`.
fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write the manual pages into {}", dir.display()))?;
    Ok(())
}

/// Lets the server hold as many connections as the hard file-descriptor limit allows.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

/// The configuration directory's cron entries and throttles (`conf.d/*.toml`).
fn load_config(dir: &Path) -> Result<(werk_core::cron::CronConfig, Vec<werk_store::Throttle>)> {
    let files = cron_cmd::read_conf_d(dir)?;
    let schedule = werk_core::cron::parse_cron_config(&files)?;
    let throttles = throttles::parse_throttles(&files).map_err(anyhow::Error::msg)?;
    Ok((schedule, throttles))
}

/// SIGHUP: re-reads the cron entries and throttles; an invalid configuration is reported and the
/// running one kept (all of it: nothing is half-applied).
async fn reload_on_sighup<S: Store>(
    dir: PathBuf,
    schedule: tokio::sync::watch::Sender<Arc<werk_core::cron::CronConfig>>,
    throttles_tx: tokio::sync::watch::Sender<Arc<Vec<werk_store::Throttle>>>,
    store: Arc<S>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || load_config(&dir)).await
        };
        match loaded {
            Ok(Ok((cfg, throttles))) => {
                tracing::info!(
                    entries = cfg.entries.len(),
                    throttles = throttles.len(),
                    "SIGHUP: configuration reloaded"
                );
                store.set_throttles(throttles.clone());
                let _ = throttles_tx.send(Arc::new(throttles));
                let _ = schedule.send(Arc::new(cfg));
            }
            Ok(Err(e)) => tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: configuration not reloaded; the running one stays"
            ),
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
        }
    }
}

/// SIGTERM and SIGINT, installed before the server says it is listening (a signal sent right
/// after "werk listening on" or READY=1 must find its handler, not the default action).
fn install_signal_handlers() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok((
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
    ))
}

async fn wait_for_signal(
    (mut term, mut int): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    stop: CancellationToken,
) {
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    // Stop first: nothing (not even logging) may keep a signal from stopping the server.
    sd_notify::notify("STOPPING=1");
    stop.cancel();
    tracing::info!("{which} received");
}
