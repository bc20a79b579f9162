//! One client connection: handshake, then commands one at a time, in order.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use werk_core::retry::FailInfo;
use werk_core::text::no_nul;
use werk_core::time::now_millis;
use werk_core::worker::WorkerState;
use werk_core::{Job, JobState, PushError};
use werk_protocol::{
    hi_payload, parse_command, parse_hello, verify_password, CodecError, Command, CommandError,
    LineCodec, MutateOp, MutateTarget, QueueCommand, Reply,
};
use werk_store::{
    AckOutcome, FailReply, MutateFilter, Mutation, NewJob, QueueSelector, Store, StoreError,
};

use crate::metrics::{ConnJobs, INVALID_COMMAND};
use crate::workers::Hello as WorkerHello;
use crate::Shared;

type Conn<T> = Framed<T, LineCodec>;

/// A byte stream a client connection runs over: plain TCP or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, if any: a blocked FETCH peeks at it to notice a client that
    /// hung up. Without one, a FETCH waits out its timeout.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl Transport for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

/// Peeking at the socket under TLS sees encrypted records, which is as good: any data means
/// the client is alive, end-of-stream or a reset that it is gone. (A client that sends TLS
/// close_notify before closing looks alive until its FETCH times out, like a plaintext client
/// that pipelines a command and then closes.)
impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.get_ref().0)
    }
}

/// What the connection knows about its client after HELLO.
struct Client {
    id: u64,
    wid: String,
}

/// Serves one accepted connection until it closes.
pub async fn serve<S: Store, T: Transport>(shared: Arc<Shared<S>>, stream: T, peer: SocketAddr) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    serve_until(shared, stream, peer, deadline).await
}

/// Serves one accepted TCP connection over TLS. The TLS handshake and HELLO share one
/// handshake timeout, as in Faktory; a client that does not speak TLS (a plaintext client on a
/// TLS port) is disconnected.
pub async fn serve_tls<S: Store>(
    shared: Arc<Shared<S>>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_until(shared, tls, peer, deadline).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_until<S: Store, T: Transport>(
    shared: Arc<Shared<S>>,
    stream: T,
    peer: SocketAddr,
    deadline: Instant,
) {
    let mut framed = Framed::new(stream, LineCodec::new(shared.config.max_line));
    let id = shared.counters.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let token = CancellationToken::new();
    let hello = match tokio::time::timeout_at(deadline, handshake(&shared, &mut framed)).await {
        Ok(Some(hello)) => hello,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "handshake timed out");
            return;
        }
    };
    // A worker process is registered before its `+OK` (so a BEAT right after it finds the
    // worker), outside the handshake timeout: a registration in the shared registry is not
    // abandoned half-way (committed, with no connection left to unregister it).
    if !hello.wid.is_empty() {
        let registered = crate::workers::hello(
            &shared,
            WorkerHello {
                wid: &hello.wid,
                hostname: &hello.hostname,
                pid: hello.pid,
                labels: &hello.labels,
            },
            id,
            token.clone(),
        )
        .await;
        if let Err(e) = registered {
            tracing::warn!(%peer, wid = %hello.wid, error = %e, "cannot register the worker");
            let _ = framed.send(store_error(e)).await;
            return;
        }
    }
    let client = Client { id, wid: hello.wid };
    // Counted in INFO's `connections` before its `+OK` is sent (so a client that has read it is
    // counted), for as long as `_counted` lives.
    let (_counted, open) = Counted::enter(&shared.counters.connections);
    if framed.send(Reply::Ok).await.is_ok() {
        if open as usize > shared.config.max_connections {
            let _ = framed
                .send(Reply::error(format!("too many connections: {open}")))
                .await;
        } else {
            command_loop(&shared, &mut framed, &client, &token, peer).await;
        }
    }
    if !client.wid.is_empty() {
        crate::workers::bye(&shared, &client.wid, client.id).await;
    }
}

/// HI → HELLO → password check. `None` means the connection is to be closed; otherwise the
/// caller registers a worker process and answers `+OK`.
async fn handshake<S: Store, T: Transport>(
    shared: &Shared<S>,
    framed: &mut Conn<T>,
) -> Option<werk_protocol::Hello> {
    let auth = shared.config.password.as_ref().map(|_| {
        let mut rng = rand::rng();
        let iterations: u32 = rng.random_range(4000..=8095);
        let salt = format!("{:x}", rng.random::<u64>() >> 1);
        (iterations, salt)
    });
    let hi = hi_payload(auth.as_ref().map(|(i, s)| (*i, s.as_str())));
    framed.send(Reply::Simple(format!("HI {hi}"))).await.ok()?;
    let line = match framed.next().await? {
        Ok(line) => line,
        Err(e) => {
            let _ = framed.send(Reply::error(e.to_string())).await;
            return None;
        }
    };
    // Anything but a well-formed HELLO (a TLS ClientHello on a plaintext port, garbage, a NUL
    // in a string the worker registry would keep) is closed without a reply, as Faktory does.
    let hello = parse_hello(&line).ok().filter(hello_nul_free)?;
    if let (Some(password), Some((iterations, salt))) = (&shared.config.password, &auth) {
        if !verify_password(password, salt, *iterations, hello.v, &hello.pwdhash) {
            let _ = framed.send(Reply::error("Invalid password")).await;
            return None;
        }
    }
    Some(hello)
}

async fn command_loop<S: Store, T: Transport>(
    shared: &Shared<S>,
    framed: &mut Conn<T>,
    client: &Client,
    token: &CancellationToken,
    peer: SocketAddr,
) {
    let mut jobs = ConnJobs::default();
    loop {
        let next = tokio::select! {
            biased;
            next = framed.next() => next,
            _ = token.cancelled() => return,
            _ = shared.shutdown.cancelled() => {
                // Give a command already on its way a moment to arrive and be refused politely.
                match tokio::time::timeout(Duration::from_millis(100), framed.next()).await {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
        };
        let line = match next {
            None => return,
            Some(Ok(line)) => line,
            Some(Err(CodecError::LineTooLong { max })) => {
                tracing::warn!(%peer, max, "command line too long; closing connection");
                let _ = framed
                    .send(Reply::error(format!("line too long (limit {max} bytes)")))
                    .await;
                return;
            }
            Some(Err(CodecError::Io(e))) => {
                tracing::debug!(%peer, error = %e, "connection error");
                return;
            }
        };
        if shared.is_shutting_down() {
            let _ = framed.send(Reply::error("shutdown in progress")).await;
            return;
        }
        shared.counters.commands.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let parsed = parse_command(&line);
        let verb = parsed.as_ref().map_or(INVALID_COMMAND, Command::verb);
        let reply = match parsed.and_then(refuse_nul) {
            Err(e) => Reply::from(e),
            Ok(Command::End) => return,
            Ok(Command::Fetch(queues)) => {
                let closed = peer_closed(framed.get_ref().tcp());
                fetch(shared, client, queues, closed, &mut jobs).await
            }
            Ok(cmd) => dispatch(shared, client, cmd, &mut jobs).await,
        };
        shared.metrics.observe_command(verb, started.elapsed());
        if framed.send(reply).await.is_err() {
            return;
        }
    }
}

/// The command, unless one of the strings it has the store keep or look up as text (queue
/// names, jids, a worker id, MUTATE's filter) contains NUL ([`werk_core::text`]). PUSH and PUSHB
/// are checked with the rest of a job's validation, BATCH and TRACK by their parsers.
fn refuse_nul(cmd: Command) -> Result<Command, CommandError> {
    let queues = |names: &[String]| names.iter().try_for_each(|q| no_nul("queue name", q));
    let checked = match &cmd {
        Command::Fetch(names) | Command::Queue(QueueCommand::Latency(names)) => queues(names),
        Command::Queue(
            QueueCommand::Pause(sel) | QueueCommand::Resume(sel) | QueueCommand::Remove(sel),
        ) => match sel {
            werk_protocol::QueueSelector::All => Ok(()),
            werk_protocol::QueueSelector::Names(names) => queues(names),
        },
        Command::Ack(args) => no_nul("jid", &args.jid),
        Command::Fail(args) => no_nul("jid", &args.jid),
        Command::Beat(args) => no_nul("wid", &args.wid),
        Command::Mutate(args) => args.filter.as_ref().map_or(Ok(()), |f| {
            f.jids.iter().try_for_each(|j| no_nul("jid", j))?;
            no_nul("jobtype", &f.jobtype)?;
            no_nul("regexp", &f.regexp)
        }),
        _ => Ok(()),
    };
    checked
        .map(|()| cmd)
        .map_err(|e| CommandError(e.to_string()))
}

/// Whether the strings of a HELLO that the worker registry keeps are free of NUL
/// ([`werk_core::text`]).
fn hello_nul_free(hello: &werk_protocol::Hello) -> bool {
    [&hello.wid, &hello.hostname]
        .into_iter()
        .chain(&hello.labels)
        .all(|s| no_nul("HELLO", s).is_ok())
}

fn store_error(e: StoreError) -> Reply {
    Reply::error(e.to_string())
}

async fn dispatch<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    cmd: Command,
    jobs: &mut ConnJobs,
) -> Reply {
    let store = &shared.store;
    match cmd {
        Command::End => Reply::Ok,
        Command::Hello => Reply::error("HELLO was already received on this connection"),
        Command::Info => crate::info::info(shared).await,
        Command::Flush => match store.flush().await {
            Ok(()) => Reply::Ok,
            Err(e) => store_error(e),
        },
        Command::Push(text) => push(shared, &text).await,
        Command::PushB(text) => pushb(shared, &text).await,
        Command::Fetch(queues) => fetch(shared, client, queues, std::future::pending(), jobs).await,
        Command::Ack(args) => match store.ack(args.jid.clone(), now_millis()).await {
            Ok(AckOutcome::Acked) => {
                jobs.take(&shared.metrics, &args.jid).processed();
                Reply::Ok
            }
            Ok(AckOutcome::AckedLate(was)) => {
                jobs.take(&shared.metrics, &args.jid).processed();
                tracing::info!(jid = %args.jid, was = %was, "late ACK: the job was done after its reservation ended; removed");
                Reply::Ok
            }
            Ok(AckOutcome::NotWorking) => {
                // Faktory answers OK too (already acknowledged, or never pushed).
                jobs.take(&shared.metrics, &args.jid);
                tracing::debug!(jid = %args.jid, "ACK for a job that is not stored");
                Reply::Ok
            }
            Err(e) => store_error(e),
        },
        Command::Fail(args) => {
            let info = FailInfo::new(&args.errtype, &args.message, args.backtrace);
            match store.fail(args.jid.clone(), info, now_millis()).await {
                Ok(FailReply::Failed(_)) => {
                    jobs.take(&shared.metrics, &args.jid).failed();
                    Reply::Ok
                }
                Ok(FailReply::NotWorking) => {
                    jobs.take(&shared.metrics, &args.jid);
                    Reply::error(format!("Job not found {}", args.jid))
                }
                Err(e) => store_error(e),
            }
        }
        Command::Beat(args) => {
            let requested = WorkerState::parse(&args.current_state);
            match crate::workers::beat(shared, &args.wid, requested, args.rss_kb).await {
                Ok(None) => Reply::error(format!("unknown worker {}", args.wid)),
                Ok(Some(WorkerState::Running)) => Reply::Ok,
                Ok(Some(state)) => Reply::bulk(format!(r#"{{"state":"{}"}}"#, state.as_str())),
                Err(e) => store_error(e),
            }
        }
        Command::Mutate(args) => {
            let m = Mutation {
                op: match args.op {
                    MutateOp::Clear => werk_store::MutateOp::Clear,
                    MutateOp::Discard => werk_store::MutateOp::Discard,
                    MutateOp::Kill => werk_store::MutateOp::Kill,
                    MutateOp::Requeue => werk_store::MutateOp::Requeue,
                },
                target: match args.target {
                    MutateTarget::Retries => JobState::Retry,
                    MutateTarget::Scheduled => JobState::Scheduled,
                    MutateTarget::Dead => JobState::Dead,
                },
                filter: args.filter.map(|f| MutateFilter {
                    jids: f.jids,
                    regexp: Some(f.regexp).filter(|s| !s.is_empty()),
                    jobtype: Some(f.jobtype).filter(|s| !s.is_empty()),
                }),
            };
            match store.mutate(m, now_millis()).await {
                Ok(_) => Reply::Ok,
                Err(e) => store_error(e),
            }
        }
        Command::Queue(q) => queue(shared, q).await,
        Command::Batch(arg) => crate::ent::batch(shared, &arg).await,
        Command::Track(arg) => crate::ent::track(shared, &arg).await,
        Command::List(arg) => crate::list::list(shared, &arg).await,
    }
}

fn selector(sel: werk_protocol::QueueSelector) -> QueueSelector {
    match sel {
        werk_protocol::QueueSelector::All => QueueSelector::All,
        werk_protocol::QueueSelector::Names(names) => QueueSelector::Names(names),
    }
}

async fn queue<S: Store>(shared: &Shared<S>, q: QueueCommand) -> Reply {
    let store = &shared.store;
    let result = match q {
        QueueCommand::Pause(sel) => store.set_paused(selector(sel), true).await,
        QueueCommand::Resume(sel) => store.set_paused(selector(sel), false).await,
        QueueCommand::Remove(sel) => store.remove_queues(selector(sel)).await.map(|_| ()),
        QueueCommand::Latency(names) => {
            return match store.queue_latency(names.clone(), now_millis()).await {
                Ok(values) => {
                    let mut out = String::from("{");
                    for (i, (name, secs)) in names.iter().zip(values).enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let key = serde_json::to_string(name).unwrap_or_default();
                        let _ = write!(out, "{key}:{}", (secs * 1000.0).round() / 1000.0);
                    }
                    out.push('}');
                    Reply::bulk(out)
                }
                Err(e) => store_error(e),
            };
        }
    };
    match result {
        Ok(()) => Reply::Ok,
        Err(e) => store_error(e),
    }
}

async fn push<S: Store>(shared: &Shared<S>, text: &str) -> Reply {
    let now = now_millis();
    let (job, at) = match Job::parse_for_push(text, now) {
        Ok(v) => v,
        Err(e) => return push_error(&e),
    };
    let counters = shared.metrics.job(&job.queue, &job.jobtype);
    match shared.store.push(vec![NewJob { job, at }], now).await {
        Ok(mut results) => match results.pop() {
            Some(Ok(())) => {
                counters.pushed();
                Reply::Ok
            }
            Some(Err(e)) => push_error(&e),
            None => Reply::error("internal error: no push result"),
        },
        Err(e) => store_error(e),
    }
}

/// `-ERR …`, or `-NOTUNIQUE Job not unique`.
fn push_error(e: &PushError) -> Reply {
    match e.code() {
        "ERR" => Reply::error(e.to_string()),
        code => Reply::coded(code, e.to_string()),
    }
}

/// PUSHB's text for one refused job: the error, prefixed by its code unless it is `ERR`
/// (`NOTUNIQUE Job not unique`).
fn pushb_error(e: &PushError) -> String {
    match e.code() {
        "ERR" => e.to_string(),
        code => format!("{code} {e}"),
    }
}

/// PUSHB: every job is decoded first (a JSON error anywhere refuses the whole command), then
/// validated and stored independently; the reply maps the jid of each refused job to why.
async fn pushb<S: Store>(shared: &Shared<S>, text: &str) -> Reply {
    let now = now_millis();
    let raw: Vec<Box<RawValue>> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Reply::error(PushError::InvalidJson(e.to_string()).to_string()),
    };
    let mut decoded = Vec::with_capacity(raw.len());
    for r in &raw {
        match Job::decode(r.get()) {
            Ok(job) => decoded.push(job),
            Err(e) => return Reply::error(e.to_string()),
        }
    }
    // (jid, Err) for refused jobs, in input order; valid jobs go to the store together.
    let mut outcome: Vec<(String, Option<String>)> = Vec::with_capacity(decoded.len());
    let mut valid = Vec::new();
    let mut valid_slots = Vec::new();
    for job in decoded {
        let jid = job.jid.clone();
        match job.validate_for_push(now) {
            Ok((job, at)) => {
                let counters = shared.metrics.job(&job.queue, &job.jobtype);
                valid_slots.push((outcome.len(), counters));
                valid.push(NewJob { job, at });
                outcome.push((jid, None));
            }
            Err(e) => outcome.push((jid, Some(pushb_error(&e)))),
        }
    }
    if !valid.is_empty() {
        match shared.store.push(valid, now).await {
            Ok(results) => {
                for ((slot, counters), result) in valid_slots.into_iter().zip(results) {
                    match result {
                        Ok(()) => counters.pushed(),
                        Err(e) => outcome[slot].1 = Some(pushb_error(&e)),
                    }
                }
            }
            Err(e) => return store_error(e),
        }
    }
    let mut out = String::from("{");
    let mut first = true;
    for (jid, err) in outcome {
        if let Some(err) = err {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(
                out,
                "{}:{}",
                serde_json::to_string(&jid).unwrap_or_default(),
                serde_json::to_string(&err).unwrap_or_default()
            );
        }
    }
    out.push('}');
    Reply::bulk(out)
}

/// Resolves when the peer has closed its side (or reset the connection). If it sends more
/// data instead (a pipelining client), it stays pending: that client is alive.
async fn peer_closed(stream: Option<&TcpStream>) {
    let Some(stream) = stream else {
        return std::future::pending().await;
    };
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// FETCH: take a job now if one is there; otherwise wait (woken by enqueues) until the fetch
/// timeout and answer `$-1`. A client that disconnects while waiting stops the wait, so no job
/// is reserved for a connection that is gone (an idle worker killed mid-FETCH).
async fn fetch<S: Store>(
    shared: &Shared<S>,
    client: &Client,
    queues: Vec<String>,
    closed: impl std::future::Future<Output = ()>,
    jobs: &mut ConnJobs,
) -> Reply {
    let mut closed = std::pin::pin!(closed);
    let deadline = Instant::now() + shared.config.fetch_timeout;
    if !client.wid.is_empty() && shared.workers.state(&client.wid) != WorkerState::Running {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.shutdown.cancelled() => {}
        }
        return Reply::Null;
    }
    let signals: Vec<_> = queues.iter().map(|q| shared.signals.get(q)).collect();
    loop {
        // Register for wake-ups before looking, so an enqueue in between is not missed.
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> =
            signals.iter().map(|n| Box::pin(n.notified())).collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        match shared
            .store
            .fetch_early(queues.clone(), client.wid.clone(), now_millis())
            .await
        {
            Ok(Some(job)) => {
                jobs.fetched(&shared.metrics, job.jid, &job.queue, &job.jobtype);
                return Reply::bulk(job.payload);
            }
            Ok(None) => {}
            Err(e) => return store_error(e),
        }
        if Instant::now() >= deadline {
            return Reply::Null;
        }
        // Counted from here (registered for wake-ups, found nothing) until the wait ends: an
        // enqueue seen after the count went up wakes this FETCH.
        let (_waiting, _) = Counted::enter(&shared.counters.fetches_waiting);
        // A shared store that cannot hear other nodes' enqueues right now asks to look again
        // sooner than the deadline (see `Store::wake_poll_interval`).
        let wake_by = match shared.store.wake_poll_interval() {
            Some(poll) => deadline.min(Instant::now() + poll),
            None => deadline,
        };
        tokio::select! {
            biased;
            _ = &mut closed => return Reply::Null,
            _ = shared.shutdown.cancelled() => return Reply::Null,
            _ = futures::future::select_all(waits) => {}
            _ = tokio::time::sleep_until(wake_by) => {
                if wake_by >= deadline {
                    return Reply::Null;
                }
            }
        }
    }
}

/// One more in a gauge of [`Counters`](crate::Counters) (`connections`, `fetches_waiting`) while
/// alive, also when the future holding it is dropped (a handshake at its timeout, a FETCH whose
/// connection task ends).
struct Counted<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Counted<'a> {
    /// Counts one more; returns the guard and the count including it.
    fn enter(n: &'a std::sync::atomic::AtomicU64) -> (Self, u64) {
        let open = n.fetch_add(1, Ordering::Relaxed) + 1;
        (Counted(n), open)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
