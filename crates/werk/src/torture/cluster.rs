//! `werk torture --cluster`: the failover proof (issue 13).
//!
//! It builds the whole high-availability picture on this machine: a PostgreSQL **primary** and
//! a **synchronous standby** (`pg_basebackup` + streaming replication,
//! `synchronous_standby_names = '*'`, crates/werk-testpg), and `--nodes` werk nodes whose URL
//! names both servers with `target_session_attrs=read-write` — so a node always writes to
//! whichever is primary now. Producers and workers connect to random nodes, reconnect to
//! another node on any error, and send a PUSH whose reply was lost (or refused) again with the
//! same jid until it is answered, as real clients do.
//!
//! Under that load it injects, in a random order and at random moments:
//!
//! * **node kills**: SIGKILL of a werk node's process group, restarted at once;
//! * **failovers**: replication stalled for 20–300 ms (the primary's WAL senders stopped with
//!   `SIGSTOP`), then every process of the primary killed at once (a machine crash), the
//!   standby promoted, a new standby built from the new primary (`pg_basebackup`) where the old
//!   primary was. Until the new standby streams, the new primary's commits wait for it: a
//!   commit is never answered without its second copy. The time from the primary's death to
//!   the first PUSH answered `+OK` is the failover's unavailability;
//! * **standby restarts**: the standby stopped (fast shutdown) for 0.1–1 s and started again
//!   (commits wait meanwhile);
//! * **cuts**: one node's database sessions terminated (`pg_terminate_backend`), as a network
//!   cut or a proxy restart would.
//!
//! Every node also runs a cron entry firing each second, and a batcher thread makes batches
//! (`BATCH NEW` with a success callback, 1–4 members, `BATCH COMMIT`, each sent again until
//! answered). Then the drain and the ledger of `werk torture` (lost, resurrected,
//! re-delivered), plus: no cron tick delivered under two jids (fired twice); every committed
//! batch's success callback delivered under exactly one jid, and none of a batch never
//! committed; after each failover, no new job acknowledged before the new standby's copy was
//! complete (with a synchronous standby).
//! `--async-standby` is the negative control: the standby is asynchronous (no
//! `synchronous_standby_names`), so a failover may lose commits that were answered — the same
//! ledger then reports them.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::seq::SliceRandom;
use rand::Rng;
use werk_testpg::{PgCluster, PgOptions};

use super::{
    connect_retrying, drain, free_addr, push_until_answered, run_id, start_clients, start_retrying,
    tempdir, verdict, Client, Reply, Server, TortureArgs, World,
};

/// The job type of the nodes' cron entry (every second, on every node).
pub const CRON_JOBTYPE: &str = "TortureTick";
/// The job type of the batches' success callbacks.
pub const CALLBACK_JOBTYPE: &str = "TortureBatchDone";

const CRON_TOML: &str = r#"
[[cron]]
  schedule = "* * * * * *"
  [cron.job]
    type = "TortureTick"
    queue = "q0"
    retry = 5
"#;

/// The standby's name in `synchronous_standby_names`.
const STANDBY_NAME: &str = "werk_standby";

#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Cluster mode: a PostgreSQL primary with a synchronous standby (started here, from
    /// Debian's postgresql-15 under /usr/lib/postgresql/15/bin) and several werk nodes; the
    /// faults are the counts below, in a random order.
    #[arg(long)]
    pub cluster: bool,
    /// Werk nodes (cluster mode).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Primary failovers (cluster mode).
    #[arg(long, default_value_t = 3)]
    pub failovers: u32,
    /// Werk node kills (cluster mode).
    #[arg(long, default_value_t = 10)]
    pub node_kills: u32,
    /// Standby stop-and-start cycles (cluster mode).
    #[arg(long, default_value_t = 2)]
    pub standby_restarts: u32,
    /// Cuts of one node's database sessions (cluster mode).
    #[arg(long, default_value_t = 2)]
    pub cuts: u32,
    /// The negative control: an asynchronous standby (no `synchronous_standby_names`), which
    /// can lose answered commits at a failover.
    #[arg(long)]
    pub async_standby: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    NodeKill,
    Failover,
    StandbyRestart,
    Cut,
}

/// What one failover took.
struct FailoverTimes {
    /// Primary killed → standby promoted (`pg_ctl promote -w` returned).
    promote: Duration,
    /// Promoted → the new standby built and started.
    rebuild: Duration,
    /// Primary killed → the first PUSH answered `+OK`.
    unavailable: Duration,
    /// Whether that PUSH was answered after the new standby's copy was complete (before then
    /// nothing can confirm a synchronous commit).
    after_copy: bool,
}

/// The two PostgreSQL servers; their ports trade roles at each failover.
struct Pg {
    primary: PgCluster,
    standby: PgCluster,
    options: PgOptions,
}

impl Pg {
    fn start(async_standby: bool) -> Result<Pg> {
        // A standby retries a failed WAL source every `wal_retrieve_retry_interval` (5 s by
        // default): after its primary died, a promotion could wait that long for the startup
        // process's next look. 200 ms bounds it (measured: promotions took ≈5 s without).
        let mut options = PgOptions::new()
            .setting("max_connections", "200")
            .setting("wal_retrieve_retry_interval", "200ms");
        // Every server is started with these settings, so a promoted standby has them too.
        // The standby is named (its walreceiver's application name is `cluster_name`), never
        // `*`: pg_basebackup's WAL stream would count as the synchronous standby (see
        // werk_testpg::PgCluster::standby_of) — seen here as commits answered while the new
        // standby was still being copied.
        options = options.setting("cluster_name", STANDBY_NAME);
        if !async_standby {
            options = options.setting("synchronous_standby_names", STANDBY_NAME);
        }
        let primary = PgCluster::start_with(options.clone()).context("cannot start the primary")?;
        let standby =
            PgCluster::standby_of(&primary, options.clone()).context("cannot build the standby")?;
        Ok(Pg {
            primary,
            standby,
            options,
        })
    }

    /// The URL every node uses: both servers, the primary found by `read-write`.
    fn url(&self, node: usize) -> String {
        format!(
            "postgresql://{}@127.0.0.1:{},127.0.0.1:{}/{}?target_session_attrs=read-write&application_name=werk-node-{node}&connect_timeout=2",
            werk_testpg::SUPERUSER,
            self.primary.port(),
            self.standby.port(),
            werk_testpg::DEFAULT_DATABASE
        )
    }

    /// Crash the primary, promote the standby, build a new standby on the old port.
    fn failover(&mut self, world: &World, stall: Duration) -> Result<FailoverTimes> {
        let old_port = self.primary.port();
        // Replication stalls for a moment first (a slow network, a busy machine): the
        // primary's WAL senders are frozen, so the standby receives nothing more. A
        // synchronous primary's commits wait meanwhile; an asynchronous one answers them, and
        // they exist only on the primary when it dies — what the negative control shows.
        if self.primary.freeze_wal_senders() == 0 {
            bail!("the primary had no WAL sender to stall");
        }
        thread::sleep(stall);
        self.primary.kill_all().context("cannot kill the primary")?;
        let killed = Instant::now();
        *world.watch.lock().unwrap() = Some((killed, None));
        self.standby
            .promote()
            .context("cannot promote the standby")?;
        let promoted = Instant::now();
        let fresh = PgCluster::standby_of(&self.standby, self.options.clone().port(old_port))
            .context("cannot build the new standby")?;
        let rebuilt = Instant::now();
        let dead = std::mem::replace(
            &mut self.primary,
            std::mem::replace(&mut self.standby, fresh),
        );
        drop(dead);
        let deadline = Instant::now() + Duration::from_secs(120);
        let first_ok = loop {
            if let Some((_, Some(t))) = *world.watch.lock().unwrap() {
                break t;
            }
            if Instant::now() > deadline {
                bail!("no PUSH was answered within 120 s of a failover");
            }
            thread::sleep(Duration::from_millis(5));
        };
        *world.watch.lock().unwrap() = None;
        let copied = self.standby.backed_up_at().unwrap_or(rebuilt);
        Ok(FailoverTimes {
            promote: promoted - killed,
            rebuild: rebuilt - promoted,
            unavailable: first_ok - killed,
            after_copy: first_ok > copied,
        })
    }

    fn restart_standby(&mut self, down: Duration) -> Result<()> {
        self.standby
            .stop_server()
            .context("cannot stop the standby")?;
        thread::sleep(down);
        self.standby.restart().context("cannot restart the standby")
    }

    /// Terminates node `node`'s sessions on the primary; returns how many.
    fn cut(&self, node: usize) -> Result<usize> {
        let out = self.primary.sql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'werk-node-{node}'"
        ))?;
        Ok(out.trim().parse().unwrap_or(0))
    }
}

pub fn run(args: TortureArgs) -> Result<()> {
    let c = &args.cluster;
    if c.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.database_url.is_some() {
        bail!("--cluster starts its own PostgreSQL; --database-url does not apply");
    }
    let exe: PathBuf = std::env::current_exe().context("cannot find the werk executable")?;
    let started = Instant::now();
    let mut pg = Pg::start(c.async_standby)?;
    println!(
        "torture: cluster of {} nodes on a primary (port {}) and {} standby (port {})",
        c.nodes,
        pg.primary.port(),
        if c.async_standby {
            "an ASYNCHRONOUS"
        } else {
            "a synchronous"
        },
        pg.standby.port()
    );
    let addrs = (0..c.nodes)
        .map(|_| free_addr())
        .collect::<Result<Vec<_>>>()?;
    let tmp = tempdir()?;
    // The two ports trade roles at a failover but stay the two ports: each node's URL is
    // fixed for the whole run.
    let node_args: Vec<TortureArgs> = (0..c.nodes)
        .map(|i| {
            let mut a = args.clone();
            a.database_url = Some(pg.url(i));
            a
        })
        .collect();
    let mut nodes: Vec<Option<Server>> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let dir = tmp.0.join(format!("node-{i}"));
        std::fs::create_dir_all(dir.join("conf.d"))?;
        std::fs::write(dir.join("conf.d/cron.toml"), CRON_TOML)?;
        nodes.push(Some(start_retrying(&exe, &dir, *addr, &node_args[i])?));
    }
    let world = Arc::new(World::new(addrs.clone(), true, run_id()));
    let mut threads = start_clients(&world, &args);
    {
        let w = world.clone();
        threads.push(thread::spawn(move || batcher(w)));
    }

    let mut faults: Vec<Fault> = std::iter::empty()
        .chain(std::iter::repeat_n(Fault::NodeKill, c.node_kills as usize))
        .chain(std::iter::repeat_n(Fault::Failover, c.failovers as usize))
        .chain(std::iter::repeat_n(
            Fault::StandbyRestart,
            c.standby_restarts as usize,
        ))
        .chain(std::iter::repeat_n(Fault::Cut, c.cuts as usize))
        .collect();
    let mut rng = rand::rng();
    faults.shuffle(&mut rng);
    let mut done: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut failovers: Vec<FailoverTimes> = Vec::new();
    let mut cut_sessions = 0;
    for (k, fault) in faults.iter().enumerate() {
        if started.elapsed() > Duration::from_secs(args.max_secs) {
            println!("torture: time cap reached after {k} faults");
            break;
        }
        let run = rng.random_range(args.min_run_ms..=args.max_run_ms);
        thread::sleep(Duration::from_millis(run));
        let what = match fault {
            Fault::NodeKill => {
                let i = rng.random_range(0..nodes.len());
                if let Some(s) = nodes[i].take() {
                    s.kill();
                }
                let dir = tmp.0.join(format!("node-{i}"));
                nodes[i] = Some(start_retrying(&exe, &dir, addrs[i], &node_args[i])?);
                format!("killed and restarted node {i}")
            }
            Fault::Failover => {
                let stall = Duration::from_millis(rng.random_range(20..300));
                let t = pg.failover(&world, stall)?;
                let what = format!(
                    "failover: promoted in {} ms, new standby in {} ms, first +OK after {} ms",
                    t.promote.as_millis(),
                    t.rebuild.as_millis(),
                    t.unavailable.as_millis()
                );
                failovers.push(t);
                what
            }
            Fault::StandbyRestart => {
                let down = Duration::from_millis(rng.random_range(100..1000));
                pg.restart_standby(down)?;
                format!("standby down for {} ms", down.as_millis())
            }
            Fault::Cut => {
                let i = rng.random_range(0..nodes.len());
                let n = pg.cut(i)?;
                cut_sessions += n;
                format!("cut node {i} off the database ({n} sessions)")
            }
        };
        *done.entry(*fault).or_default() += 1;
        if args.verbose {
            let l = world.ledger.lock().unwrap();
            println!(
                "fault {}: {what}; pushed {} acked {}",
                k + 1,
                l.pushed_ok.len(),
                l.acked_ok.len()
            );
        }
    }

    let drained = drain(&world, &args)?;
    world.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    for s in nodes.into_iter().flatten() {
        s.stop();
    }
    let count = |f| done.get(&f).copied().unwrap_or(0);
    println!(
        "torture: cluster faults: node kills {}, failovers {}, standby restarts {}, cuts {} ({} sessions); elapsed {:.1} s",
        count(Fault::NodeKill),
        count(Fault::Failover),
        count(Fault::StandbyRestart),
        count(Fault::Cut),
        cut_sessions,
        started.elapsed().as_secs_f64()
    );
    if !failovers.is_empty() {
        let ms = |f: fn(&FailoverTimes) -> Duration| {
            let mut v: Vec<u128> = failovers.iter().map(|t| f(t).as_millis()).collect();
            v.sort_unstable();
            format!(
                "min {} / median {} / max {} ms",
                v[0],
                v[v.len() / 2],
                v[v.len() - 1]
            )
        };
        println!(
            "torture: failover unavailability (primary killed → first PUSH +OK): {}; promotion {}; new standby {}",
            ms(|t| t.unavailable),
            ms(|t| t.promote),
            ms(|t| t.rebuild)
        );
    }
    println!(
        "torture: transient errors answered or seen by clients (reconnected and retried): {}",
        world.transient.load(Ordering::Relaxed)
    );
    let (ticks, double_ticks, committed, callbacks_ok, callbacks_missing, callbacks_double, stray) = {
        let l = world.ledger.lock().unwrap();
        let double_ticks = l.cron.values().filter(|j| j.len() > 1).count();
        let mut ok = 0;
        let mut missing = 0;
        let mut double = 0;
        for token in &l.committed {
            match l.callbacks.get(token).map_or(0, HashSet::len) {
                0 => missing += 1,
                1 => ok += 1,
                _ => double += 1,
            }
        }
        // A callback of a batch that was never committed (nor maybe committed).
        let stray = l
            .callbacks
            .keys()
            .filter(|t| !l.committed.contains(*t) && !l.commit_unknown.contains(*t))
            .count();
        (
            l.cron.len(),
            double_ticks,
            l.committed.len(),
            ok,
            missing,
            double,
            stray,
        )
    };
    println!(
        "torture: cron ticks delivered {ticks}, fired more than once {double_ticks}; batches committed {committed}: success callback once {callbacks_ok}, never {callbacks_missing}, more than once {callbacks_double}; callbacks of uncommitted batches {stray}"
    );
    // With a synchronous standby, no new job can be acknowledged by the new primary before
    // its new standby exists.
    let early = failovers.iter().filter(|t| !t.after_copy).count();
    if early > 0 {
        println!(
            "torture: {early} failovers answered a new PUSH before the new standby's copy was complete{}",
            if c.async_standby { " (expected: the standby is asynchronous)" } else { "" }
        );
    }
    drop(pg);
    verdict(
        &world,
        &args,
        drained,
        &[
            count(Fault::Failover) == c.failovers,
            c.async_standby || early == 0,
            ticks > 0 && double_ticks == 0,
            committed > 0 && callbacks_missing == 0 && callbacks_double == 0 && stray == 0,
        ],
    )
}

/// Makes batches while the producers run: `BATCH NEW` with a success callback whose argument
/// is the batch's token, 1–4 members (sent until answered, like every PUSH), `BATCH COMMIT`
/// sent until answered. A batch whose NEW was not answered is abandoned (it expires
/// uncommitted; its token is never reused).
fn batcher(world: Arc<World>) {
    let mut rng = rand::rng();
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !world.stop.load(Ordering::Relaxed) {
        if !world.producing.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        thread::sleep(Duration::from_millis(rng.random_range(50..300)));
        let Some(c) = client.as_mut() else {
            client = connect_retrying(&world, None);
            continue;
        };
        n += 1;
        let token = format!("tb{}-{n}", world.run_id);
        let new = format!(
            r#"BATCH NEW {{"description":"torture","success":{{"jobtype":"{CALLBACK_JOBTYPE}","queue":"q1","args":["{token}"],"retry":5}}}}"#
        );
        let bid = match c.call(&new) {
            Ok(Reply::Bulk(Some(bid))) => bid,
            Ok(Reply::Err(_)) | Err(_) => {
                world.transient.fetch_add(1, Ordering::Relaxed);
                client = None;
                continue;
            }
            Ok(other) => {
                eprintln!("torture: BATCH NEW answered {other:?}");
                client = None;
                continue;
            }
        };
        for k in 0..rng.random_range(1..=4) {
            let jid = format!("{token}-{k}");
            let line = format!(
                r#"PUSH {{"jid":"{jid}","jobtype":"Torture","args":[{k}],"queue":"q{q}","retry":5,"reserve_for":60,"custom":{{"bid":"{bid}"}}}}"#,
                q = rng.random_range(0..2)
            );
            client = push_until_answered(&world, client.take(), &jid, &line);
        }
        // Some(true): committed; Some(false): maybe committed; None: not yet answered.
        let mut outcome = None;
        let mut unknown = false;
        while outcome.is_none() {
            if world.stop.load(Ordering::Relaxed) {
                outcome = Some(false);
                continue;
            }
            let Some(c) = client.as_mut() else {
                client = connect_retrying(&world, None);
                continue;
            };
            match c.call(&format!("BATCH COMMIT {bid}")) {
                Ok(Reply::Ok) => outcome = Some(true),
                // An earlier attempt committed it and the batch has finished since.
                Ok(Reply::Err(e)) if unknown && e.contains("No such batch") => {
                    outcome = Some(false);
                }
                Ok(Reply::Err(_)) | Err(_) => {
                    world.transient.fetch_add(1, Ordering::Relaxed);
                    unknown = true;
                    client = None;
                    thread::sleep(Duration::from_millis(10));
                }
                Ok(other) => {
                    eprintln!("torture: BATCH COMMIT answered {other:?}");
                    client = None;
                    outcome = Some(false);
                }
            }
        }
        let mut l = world.ledger.lock().unwrap();
        if outcome == Some(true) {
            l.committed.insert(token);
        } else {
            l.commit_unknown.insert(token);
        }
    }
}
