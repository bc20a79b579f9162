use super::*;

// ---------------------------------------------------------------------------------------------
// Cron fire records
// ---------------------------------------------------------------------------------------------

async fn fire<S: Store>(s: &S, entry: &str, tick: Millis, jid: &str, now: Millis) -> CronFire {
    s.fire_cron(
        entry.to_string(),
        tick,
        spec(jid).queue("cron").new_job(now),
        now,
    )
    .await
    .expect("fire_cron")
}

async fn last_fired<S: Store>(s: &S, entries: &[&str]) -> Vec<Option<Millis>> {
    s.cron_last_fired(strings(entries))
        .await
        .expect("cron_last_fired")
}

/// A tick enqueues its job once: the same or an earlier tick changes nothing, a later tick
/// fires; entries are independent.
pub async fn cron_tick_fires_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    let tick = T0 + MIN;
    assert_eq!(last_fired(s, &["e1", "e2"]).await, vec![None, None]);
    assert_eq!(
        fire(s, "e1", tick, "cron-001", tick + 5).await,
        CronFire::Fired
    );
    assert_eq!(last_fired(s, &["e1", "e2"]).await, vec![Some(tick), None]);
    assert_eq!(
        fire(s, "e1", tick, "cron-002", tick + 9).await,
        CronFire::AlreadyFired,
        "the same tick again"
    );
    assert_eq!(
        fire(s, "e1", tick - MIN, "cron-003", tick + 9).await,
        CronFire::AlreadyFired,
        "an earlier tick"
    );
    assert_eq!(get(s, "cron-002").await, None);
    assert_eq!(get(s, "cron-003").await, None);
    assert_eq!(
        fire(s, "e2", tick, "cron-004", tick + 9).await,
        CronFire::Fired
    );
    assert_eq!(
        fire(s, "e1", tick + MIN, "cron-005", tick + MIN).await,
        CronFire::Fired
    );
    assert_eq!(
        last_fired(s, &["e2", "e1", "unknown"]).await,
        vec![Some(tick), Some(tick + MIN), None]
    );
    assert_eq!(
        jids(s, Enqueued, Some("cron")).await,
        vec!["cron-001", "cron-004", "cron-005"]
    );
    let j = get(s, "cron-001").await.expect("fired job stored");
    assert_eq!(j.state, Enqueued);
    assert_eq!(parse_rfc3339(&payload(&j).enqueued_at), Ok(tick + 5));
    c.finish(tick + MIN).await;
}

/// A job the store refuses (here: a duplicate jid) still uses up its tick, so a refused tick is
/// not retried forever; the stored job is untouched.
pub async fn cron_refused_job_still_records_tick<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let s = c.s();
    push(s, &[spec("cron-taken")], T0).await;
    let before = get(s, "cron-taken").await;
    let out = fire(s, "e1", T0 + MIN, "cron-taken", T0 + MIN).await;
    assert!(
        matches!(out, CronFire::Refused(PushError::DuplicateJid(ref j, _)) if j == "cron-taken"),
        "{out:?}"
    );
    assert_eq!(get(s, "cron-taken").await, before);
    assert_eq!(last_fired(s, &["e1"]).await, vec![Some(T0 + MIN)]);
    assert_eq!(
        fire(s, "e1", T0 + MIN, "cron-other", T0 + MIN).await,
        CronFire::AlreadyFired
    );
    c.finish(T0 + MIN).await;
}

/// Fire records are durable: after a crash-reopen the tick is still taken and its job is there;
/// FLUSH removes the job but not the record (it describes the configuration).
pub async fn cron_fire_records_survive_reopen_and_flush<H: Harness>() {
    let mut c = Ctx::<H>::new().await;
    let tick = T0 + HOUR;
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-1", tick).await,
        CronFire::Fired
    );
    c.reopen().await;
    assert_eq!(last_fired(c.s(), &["daily"]).await, vec![Some(tick)]);
    assert_eq!(
        get(c.s(), "cron-daily-1").await.map(|j| j.state),
        Some(Enqueued),
        "the fired job must survive with its record"
    );
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-2", tick + 1).await,
        CronFire::AlreadyFired
    );
    c.s().flush().await.expect("flush");
    assert_eq!(get(c.s(), "cron-daily-1").await, None);
    assert_eq!(last_fired(c.s(), &["daily"]).await, vec![Some(tick)]);
    c.reopen().await;
    assert_eq!(
        fire(c.s(), "daily", tick, "cron-daily-3", tick + 2).await,
        CronFire::AlreadyFired
    );
    assert_eq!(
        fire(c.s(), "daily", tick + DAY, "cron-daily-4", tick + DAY).await,
        CronFire::Fired
    );
    c.finish(tick + DAY).await;
}

/// Many callers racing on one tick (as several nodes or a restarted ticker would): exactly one
/// job is enqueued.
pub async fn concurrent_cron_fires_of_one_tick_enqueue_once<H: Harness>() {
    let c = Ctx::<H>::new().await;
    let tick = T0 + MIN;
    let (c, results) = c
        .shared(|h| async move {
            let tasks = (0..16)
                .map(|i| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let jid = format!("cron-race-{i:02}");
                        fire(h.store(), "race", tick, &jid, tick).await
                    })
                })
                .collect();
            join_all(tasks).await
        })
        .await;
    let s = c.s();
    let fired = results.iter().filter(|r| **r == CronFire::Fired).count();
    assert_eq!(fired, 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, CronFire::Fired | CronFire::AlreadyFired)));
    assert_eq!(jids(s, Enqueued, Some("cron")).await.len(), 1);
    c.finish(tick).await;
}
