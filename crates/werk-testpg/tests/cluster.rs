//! werk-testpg against a real PostgreSQL 15: connect with tokio-postgres (TCP and unix
//! socket), transactions, settings, a crash (SIGKILL) and restart with fsync on, and one
//! database per test on a shared cluster.

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};
use werk_testpg::{PgCluster, PgOptions, SynchronousCommit};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Connects, driving the connection on a task; the task ends when the connection breaks.
async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The first column of every row of `sql`, as text.
async fn texts(client: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn show(client: &Client, setting: &str) -> Result<String, tokio_postgres::Error> {
    let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_connect_transaction_and_settings() -> TestResult {
    let started = Instant::now();
    let pg = tokio::task::spawn_blocking(|| {
        PgCluster::start_with(PgOptions::new().synchronous_commit(SynchronousCommit::Local))
    })
    .await??;
    eprintln!(
        "cluster up in {:?} on port {}",
        started.elapsed(),
        pg.port()
    );
    assert!(
        pg.url().starts_with("postgresql://werk@127.0.0.1:"),
        "{}",
        pg.url()
    );

    let mut client = connect(&pg.url()).await?;
    assert_eq!(show(&client, "synchronous_commit").await?, "local");
    assert_eq!(show(&client, "fsync").await?, "off");
    assert_eq!(show(&client, "listen_addresses").await?, "127.0.0.1");
    let who: String = client
        .query_one(
            "SELECT current_user::text || '/' || current_database()::text",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(who, "werk/werk");

    client
        .batch_execute("CREATE TABLE jobs (jid text PRIMARY KEY, queue text NOT NULL)")
        .await?;
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO jobs VALUES ($1, $2)", &[&"j1", &"default"])
        .await?;
    let queue: String = tx
        .query_one("SELECT queue FROM jobs WHERE jid = $1", &[&"j1"])
        .await?
        .get(0);
    assert_eq!(queue, "default");
    tx.commit().await?;
    // A rolled-back transaction leaves nothing.
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO jobs VALUES ('j2', 'critical')", &[])
        .await?;
    tx.rollback().await?;

    // The same data through the unix socket.
    let via_socket = connect(&pg.socket_url_for("werk")).await?;
    assert_eq!(texts(&via_socket, "SELECT jid FROM jobs").await?, ["j1"]);
    let addr: Option<String> = via_socket
        .query_one("SELECT inet_client_addr()::text", &[])
        .await?
        .get(0);
    assert_eq!(addr, None, "a unix-socket connection has no client address");

    drop((client, via_socket));
    let root = pg.socket_dir().to_path_buf();
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    assert!(!root.exists(), "stop() removes {}", root.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_rows_survive_kill_and_restart_with_fsync() -> TestResult {
    let mut pg =
        tokio::task::spawn_blocking(|| PgCluster::start_with(PgOptions::new().fsync(true)))
            .await??;
    let client = connect(&pg.url()).await?;
    assert_eq!(show(&client, "fsync").await?, "on");
    assert_eq!(show(&client, "synchronous_commit").await?, "on");
    client
        .batch_execute("CREATE TABLE t (n int PRIMARY KEY)")
        .await?;
    for n in 0..100i32 {
        client.execute("INSERT INTO t VALUES ($1)", &[&n]).await?;
    }
    // An open, uncommitted transaction at the moment of the crash.
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1000)")
        .await?;

    let old_pid = pg.pid().expect("running");
    let port = pg.port();
    let killed = Instant::now();
    pg = tokio::task::spawn_blocking(move || pg.kill().map(|()| pg)).await??;
    assert!(pg.pid().is_none());
    // The connection breaks: its backend exits once it notices the postmaster died.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.simple_query("SELECT 1").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the connection outlived the killed server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        connect(&pg.url()).await.is_err(),
        "nothing listens after kill()"
    );

    pg = tokio::task::spawn_blocking(move || pg.restart().map(|()| pg)).await??;
    eprintln!("crash recovery done {:?} after the kill", killed.elapsed());
    assert_ne!(pg.pid(), Some(old_pid));
    assert_eq!(pg.port(), port, "same port after restart");
    assert!(
        pg.log().contains("database system was interrupted"),
        "crash recovery ran:\n{}",
        pg.log()
    );

    let client = connect(&pg.url()).await?;
    let (count, max): (i64, i32) = {
        let row = client
            .query_one("SELECT count(*), max(n) FROM t", &[])
            .await?;
        (row.get(0), row.get(1))
    };
    assert_eq!(
        (count, max),
        (100, 99),
        "every committed row, not the uncommitted one"
    );

    // A clean restart keeps them too.
    client.execute("INSERT INTO t VALUES (100)", &[]).await?;
    drop(client);
    pg = tokio::task::spawn_blocking(move || pg.restart().map(|()| pg)).await??;
    let client = connect(&pg.url()).await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(count, 101);
    drop(client);
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_on_one_cluster_are_isolated() -> TestResult {
    let pg = tokio::task::spawn_blocking(PgCluster::start).await??;
    let url_a = pg.create_database("test_a")?;
    let url_b = pg.create_database("test_b")?;
    assert!(url_a.ends_with("/test_a"), "{url_a}");
    assert!(
        pg.create_database("test_a").is_err(),
        "an existing database is an error"
    );
    assert!(pg.create_database("Bad-Name").is_err());

    let a = connect(&url_a).await?;
    a.batch_execute("CREATE TABLE jobs (jid text); INSERT INTO jobs VALUES ('only-in-a')")
        .await?;

    // Through deadpool-postgres, as the PostgreSQL store will connect.
    let mut cfg = deadpool_postgres::Config::new();
    cfg.url = Some(url_b.clone());
    let pool = cfg.create_pool(Some(deadpool_postgres::Runtime::Tokio1), NoTls)?;
    let b = pool.get().await?;
    let db: String = b
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0);
    assert_eq!(db, "test_b");
    let err = b
        .query("SELECT * FROM jobs", &[])
        .await
        .expect_err("test_b has no table jobs");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
        "{err}"
    );
    b.batch_execute("CREATE TABLE jobs (jid text); INSERT INTO jobs VALUES ('only-in-b')")
        .await?;

    assert_eq!(texts(&a, "SELECT jid FROM jobs").await?, ["only-in-a"]);
    assert_eq!(texts(&b, "SELECT jid FROM jobs").await?, ["only-in-b"]);
    drop((a, b, pool));
    tokio::task::spawn_blocking(move || drop(pg)).await?;
    Ok(())
}

/// A primary with a synchronous standby: a commit waits for the standby (it hangs while the
/// standby is stopped, and completes once it is back); the standby has every acknowledged row;
/// after the primary crashes (every process killed at once) the standby is promoted, keeps
/// every row and takes writes; a new standby is built from it on the dead primary's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_standby_promotion_and_a_new_standby_on_the_old_port() -> TestResult {
    let options = || {
        PgOptions::new()
            .setting("synchronous_standby_names", "standby")
            .setting("cluster_name", "standby")
    };
    let mut primary =
        tokio::task::spawn_blocking(move || PgCluster::start_with(options())).await??;
    let standby = {
        let p = &primary;
        std::thread::scope(|s| s.spawn(|| PgCluster::standby_of(p, options())).join())
            .expect("standby thread")?
    };
    assert!(standby.is_standby());
    let p = connect(&primary.url()).await?;
    p.batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)")
        .await?;
    let sync: Vec<String> = texts(&p, "SELECT sync_state FROM pg_stat_replication").await?;
    assert_eq!(sync, vec!["sync".to_string()]);
    let s = connect(&standby.url()).await?;
    let count: i64 = s.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(
        count, 100,
        "a synchronous standby has every acknowledged commit"
    );
    drop(s);

    // With the standby down, a commit waits; it completes once the standby is back.
    let mut standby = standby;
    let standby =
        tokio::task::spawn_blocking(move || standby.stop_server().map(|()| standby)).await??;
    let waiting = tokio::spawn(async move {
        p.execute("INSERT INTO t VALUES (101)", &[])
            .await
            .map(|_| p)
    });
    let check = connect(&primary.url()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = check
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await?
            .get(0);
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the commit never waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!waiting.is_finished());
    let mut standby = standby;
    let standby =
        tokio::task::spawn_blocking(move || standby.restart().map(|()| standby)).await??;
    let p = waiting.await??;
    drop(p);
    drop(check);

    // The primary crashes; the standby is promoted and has all 101 rows.
    let old_port = primary.port();
    let primary_pid = primary.pid().expect("running") as i32;
    let backends = {
        let c = connect(&primary.url()).await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM pg_stat_activity", &[])
            .await?
            .get(0);
        n
    };
    assert!(backends > 0);
    let primary =
        tokio::task::spawn_blocking(move || primary.kill_all().map(|()| primary)).await??;
    // SAFETY: signal 0 only checks for existence.
    assert_ne!(
        unsafe { libc_kill0(primary_pid) },
        0,
        "the postmaster is gone"
    );
    let standby =
        tokio::task::spawn_blocking(move || standby.promote().map(|()| standby)).await??;
    assert!(!standby.is_standby());
    let n = connect(&standby.url()).await?;
    let count: i64 = n.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(count, 101, "the promoted standby lost nothing acknowledged");
    drop(primary);

    // A new standby where the old primary was; the new primary's commits wait for it.
    let fresh = {
        let p = &standby;
        let opts = options().port(old_port);
        std::thread::scope(|s| s.spawn(|| PgCluster::standby_of(p, opts)).join())
            .expect("standby thread")?
    };
    assert_eq!(fresh.port(), old_port);
    n.execute("INSERT INTO t VALUES (102)", &[]).await?;
    let f = connect(&fresh.url()).await?;
    let count: i64 = f.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(count, 102);
    drop((f, n));
    tokio::task::spawn_blocking(move || drop((standby, fresh))).await?;
    Ok(())
}

/// `kill(pid, 0)`: 0 while the process exists (a zombie included).
unsafe fn libc_kill0(pid: i32) -> i32 {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, 0)
}
