//! `backupd backup`: the `db-backup` service. A backup at start-up (unless
//! turned off), then on the schedule; restore drills of the newest backup on
//! their own schedule (`BACKUP_DRILL_SCHEDULE`), one thing at a time; status,
//! health and metrics over HTTP; a clean stop on SIGTERM/SIGINT, also in the
//! middle of a backup or a drill.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::backup::{self, Run, WhenBusy};
use crate::cli::DaemonArgs;
use crate::clock::{Clock, SystemClock};
use crate::config::{BackupConfig, DaemonConfig, DrillSchedule, NotifyConfig};
use crate::crypto::keys::KEY_FILE_NAME;
use crate::db::{Database, postgres};
use crate::drill::{self, DrillSettings, Which};
use crate::error::{Error, Result};
use crate::events::{BackupFailed, KeyUnreadable, LogObserver, Observer, Observers};
use crate::health::parse_timestamp;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::notify::message::NoticeContext;
use crate::notify::notifier::{self, StatusFileRecord};
use crate::schedule::Schedule;
use crate::stale::{Known, StaleRecord, StaleWatch};
use crate::state::Status;

/// Long sleeps wake up this often to notice wall-clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long a stopping daemon waits for queued notifications.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

pub async fn run(args: &DaemonArgs) -> Result<()> {
    let DaemonConfig {
        backup: cfg,
        schedule,
        status_addr: addr,
        status_token,
        health_max_age_seconds,
        health_max_drill_age_seconds,
        drills,
        on_start,
        retry,
        db_startup_timeout,
        shutdown_grace,
    } = DaemonConfig::from_args(args)?;
    let notify = NotifyConfig::from_args(&args.backup.notify)?;
    let clock = SystemClock;
    let cancel = crate::shutdown::on_signal();

    let metrics = Arc::new(Metrics::new());
    let known = Status::read(&cfg.paths.status_file).ok().flatten();
    if let Some(status) = &known {
        metrics.load_status(status);
    }
    let unrecorded_start_error = Arc::new(Mutex::new(None));
    let state = AppState {
        status_file: cfg.paths.status_file.clone(),
        max_age_seconds: health_max_age_seconds,
        max_drill_age_seconds: health_max_drill_age_seconds,
        metrics: Arc::clone(&metrics),
        token: status_token,
        unrecorded_start_error: Arc::clone(&unrecorded_start_error),
        clock: Arc::new(clock),
    };
    let server = http::start(addr, state, cancel.clone()).await?;
    let notifier = notifier::start_from_config(
        &notify,
        NoticeContext::new(&cfg.database),
        Some(Arc::clone(&metrics)),
        Some(Arc::new(StatusFileRecord(cfg.paths.status_file.clone()))),
    )?;
    let mut observers = Observers::new().with(metrics.clone());
    // Who hears what the daemon itself notices (stale, recovered, the key).
    let mut alerts = Observers::new();
    if let Some(notifier) = &notifier {
        notifier.offsite_was_failing(
            known
                .as_ref()
                .is_some_and(|s| s.last_upload_error.is_some()),
        );
        observers.push(notifier.clone());
        alerts.push(notifier.clone());
    }
    alerts.push(Arc::new(LogObserver));
    alerts.push(Arc::new(StaleRecord(cfg.paths.status_file.clone())));
    let stale_timer = (health_max_age_seconds > 0).then(|| {
        let watch = StaleWatch::new(
            cfg.database.kind(),
            Duration::from_secs(health_max_age_seconds),
            Known {
                last_success: known
                    .as_ref()
                    .and_then(|s| s.last_backup.as_deref())
                    .and_then(parse_timestamp),
                last_error: known.as_ref().and_then(|s| s.last_error.clone()),
                stale_since: known
                    .as_ref()
                    .and_then(|s| s.stale_since.as_deref())
                    .and_then(parse_timestamp),
            },
            Arc::new(clock),
            Arc::new(alerts),
        );
        observers.push(watch.clone());
        tokio::spawn(watch.run(cancel.clone()))
    });

    let encryption = cfg.keys.for_encryption();
    let now = clock.now();
    let upcoming: Vec<String> = schedule
        .upcoming(now, 3)
        .iter()
        .map(|t| local_time(&schedule, *t))
        .collect();
    tracing::info!(
        database = %cfg.database,
        backup_dir = %cfg.paths.backup_dir.display(),
        schedule = %schedule,
        // An unreadable key file is not "off": every backup fails until it
        // is fixed (the reason was logged just before).
        encryption = match &encryption {
            Ok(Some(_)) => "fernet",
            Ok(None) => "off",
            Err(_) => "key unavailable: backups fail until it is fixed",
        },
        offsite = %cfg.remote.as_ref().map_or_else(
            || "off".to_string(),
            |r| format!("s3://{}/{}", r.settings.bucket, r.settings.prefix)
        ),
        drills = %drills.as_ref().map_or_else(|| "off".to_string(), |d| d.schedule.to_string()),
        "backupd {} started; next runs: {}",
        crate::VERSION,
        upcoming.join(", ")
    );
    // The key file's own error was logged when it was read; people hear it here.
    if let (Err(e), Some(notifier)) = (&encryption, &notifier) {
        notifier.observe(
            &KeyUnreadable {
                path: cfg.paths.backup_dir.join(KEY_FILE_NAME),
                error: e.to_string(),
            }
            .into(),
        );
    }

    if let Database::Postgres(target) = &cfg.database {
        wait_for_postgres(target, db_startup_timeout, &cancel).await;
    }

    backup::clean_up_at_start(&cfg);
    if let Some(drills) = &drills {
        match drill::drop_leftover_drills(&drills.settings).await {
            Ok(dropped) if !dropped.is_empty() => tracing::info!(
                dropped = dropped.len(),
                "dropped the scratch databases of interrupted drills"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for the scratch databases of interrupted drills; the next drill does")
            }
        }
    }
    let mut next = if on_start {
        Some(clock.now())
    } else {
        schedule.next_after(clock.now())
    };
    let mut next_drill = drills
        .as_ref()
        .and_then(|d| first_drill(d, known.as_ref(), health_max_drill_age_seconds, clock.now()));
    let mut retry_at: Option<DateTime<Utc>> = None;
    loop {
        let backup_due = earliest(next, retry_at);
        let Some(due) = earliest(backup_due, next_drill) else {
            tracing::warn!(schedule = %schedule, "the schedule has no future runs; idle until stopped");
            cancel.cancelled().await;
            break;
        };
        if let Some(backup_due) = backup_due {
            metrics.next_run.set(backup_due.timestamp() as f64);
        }
        if !sleep_until(&clock, due, &cancel).await {
            break;
        }
        // A backup and a drill due together: the backup first, so the drill
        // proves the newest backup.
        if let Some(drills) = drills.as_ref().filter(|_| backup_due != Some(due)) {
            if !run_drill(&drills.settings, &cancel, shutdown_grace, &observers).await {
                break;
            }
            next_drill = advance(&drills.schedule, due, clock.now(), "drill");
            tracing::info!(
                next_drill = %next_drill.map_or_else(|| "none".into(), |t| local_time(&drills.schedule, t)),
                "waiting for the next drill"
            );
            continue;
        }
        let is_retry = retry_at == Some(due) && next.is_none_or(|n| n > due);
        retry_at = None;

        let run = match run_backup(&cfg, &cancel, shutdown_grace, &observers).await {
            Some(run) => run,
            None => break,
        };
        // Normally the status file carries a start failure to /healthz; when
        // it could not be written (no descriptor left), memory does.
        if let Ok(mut unrecorded) = unrecorded_start_error.lock() {
            *unrecorded = run.start_error.clone().filter(|_| !run.recorded);
        }
        let result = run.result;
        if matches!(result, Err(Error::Cancelled)) {
            break;
        }
        if result.is_err() && !matches!(result, Err(Error::Busy)) && !is_retry && !retry.is_zero() {
            retry_at = Some(
                clock.now() + chrono::Duration::from_std(retry).unwrap_or(chrono::Duration::MAX),
            );
        }
        if !is_retry {
            next = advance(&schedule, due, clock.now(), "backup");
        } else if let Some(n) = next.filter(|n| *n <= clock.now()) {
            next = advance(&schedule, n, clock.now(), "backup");
        }
        let upcoming = match (next, retry_at) {
            (Some(n), Some(r)) if r < n => format!("{} (retry)", local_time(&schedule, r)),
            (Some(n), _) => local_time(&schedule, n),
            (None, Some(r)) => format!("{} (retry)", local_time(&schedule, r)),
            (None, None) => "none".into(),
        };
        tracing::info!(next_run = %upcoming, "waiting for the next backup");
    }

    tracing::info!("backupd stopped");
    cancel.cancel();
    if let Some(timer) = stale_timer {
        let _ = timer.await;
    }
    // A failure just before the stop is still worth a message; the
    // container's stop timeout bounds how long that may take.
    if let Some(notifier) = &notifier
        && !notifier.flush(SHUTDOWN_FLUSH.min(notify.timeout)).await
    {
        tracing::warn!("stopped before every notification was delivered");
    }
    let _ = server.await;
    Ok(())
}

/// Runs one backup; on shutdown gives it `grace` to stop cleanly. `None`
/// means shutdown came and the daemon should stop.
async fn run_backup(
    cfg: &BackupConfig,
    cancel: &CancellationToken,
    grace: Duration,
    observers: &Observers,
) -> Option<Run> {
    let (attempt, started) = (SystemClock.now(), std::time::Instant::now());
    let mut task = {
        let (cfg, cancel, observers) = (cfg.clone(), cancel.clone(), observers.clone());
        tokio::spawn(async move {
            backup::run(&cfg, &cancel, &SystemClock, WhenBusy::Skip, &observers).await
        })
    };
    let joined = tokio::select! {
        joined = &mut task => joined,
        _ = cancel.cancelled() => match tokio::time::timeout(grace, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::error!(
                    grace_seconds = grace.as_secs(),
                    "the backup did not stop within BACKUP_SHUTDOWN_TIMEOUT; abandoning it"
                );
                // Dropping the task kills pg_dump (kill_on_drop) and removes the partial file.
                task.abort();
                let _ = task.await;
                return None;
            }
        },
    };
    match joined {
        Ok(run) => Some(run),
        Err(e) => {
            // The run died before it could say so: its observers still
            // count a failed backup.
            let error = Error::Other(format!("the backup task failed: {e}"));
            observers.observe(
                &BackupFailed {
                    database: cfg.database.kind(),
                    started_at: attempt,
                    could_not_start: false,
                    duration: started.elapsed(),
                    error: (&error).into(),
                }
                .into(),
            );
            Some(Run {
                result: Err(error),
                upload: None,
                start_error: None,
                recorded: false,
            })
        }
    }
}

/// The first slot after `now`, counting from the slot that just ran; slots
/// that passed while the previous `what` (a backup, a drill) was still
/// running are skipped, and logged.
fn advance(
    schedule: &Schedule,
    ran: DateTime<Utc>,
    now: DateTime<Utc>,
    what: &str,
) -> Option<DateTime<Utc>> {
    let mut next = schedule.next_after(ran)?;
    let mut skipped = 0;
    while next <= now {
        skipped += 1;
        next = schedule.next_after(next)?;
    }
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "skipped runs that fell due while the previous {what} was still running"
        );
    }
    Some(next)
}

/// The earlier of two times that may be missing.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the first drill runs: at once (after the start-up backup) when
/// `HEALTH_MAX_DRILL_AGE_SECONDS` is set and no drill has passed within it
/// (else `/healthz` would stay unhealthy until the schedule's first slot,
/// a week away with a weekly schedule); otherwise at the schedule's first slot.
fn first_drill(
    drills: &DrillSchedule,
    known: Option<&Status>,
    max_drill_age_seconds: Option<u64>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let overdue = max_drill_age_seconds.is_some_and(|max| {
        known
            .and_then(|s| s.last_drill_success.as_deref())
            .and_then(parse_timestamp)
            .is_none_or(|at| {
                now.signed_duration_since(at).num_seconds() > i64::try_from(max).unwrap_or(i64::MAX)
            })
    });
    if overdue {
        tracing::info!(
            "no restore drill has passed within HEALTH_MAX_DRILL_AGE_SECONDS: drilling now"
        );
        Some(now)
    } else {
        drills.schedule.next_after(now)
    }
}

/// Drills the newest backup in its own task; on shutdown gives it `grace`
/// to stop (it drops its scratch database), after which the task is dropped
/// (the next drill drops what it left). `false` when shutdown came.
async fn run_drill(
    settings: &DrillSettings,
    cancel: &CancellationToken,
    grace: Duration,
    observers: &Observers,
) -> bool {
    let mut task = {
        let (settings, cancel, observers) = (settings.clone(), cancel.clone(), observers.clone());
        tokio::spawn(async move {
            drill::run(&settings, &Which::Latest, &SystemClock, &cancel, &observers).await
        })
    };
    tokio::select! {
        joined = &mut task => {
            if let Err(e) = joined {
                tracing::error!(error = %e, "the drill task failed");
            }
            !cancel.is_cancelled()
        }
        _ = cancel.cancelled() => {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                tracing::error!(
                    grace_seconds = grace.as_secs(),
                    "the drill did not stop within BACKUP_SHUTDOWN_TIMEOUT; abandoning it (the next drill drops its scratch database)"
                );
                task.abort();
                let _ = task.await;
            }
            false
        }
    }
}

/// Sleeps until `due` by the wall clock; false when cancelled first.
async fn sleep_until(clock: &dyn Clock, due: DateTime<Utc>, cancel: &CancellationToken) -> bool {
    loop {
        let now = clock.now();
        if now >= due {
            return true;
        }
        let wait = (due - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return false,
        }
    }
}

/// Waits up to `timeout` for PostgreSQL to accept connections, as the old
/// entrypoint did, then goes on: the backup itself reports what is wrong.
async fn wait_for_postgres(
    target: &crate::db::PgTarget,
    timeout: Duration,
    cancel: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut logged = false;
    loop {
        match postgres::server_major(target).await {
            Ok(version) => {
                tracing::info!(server = version, "PostgreSQL is accepting connections");
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "PostgreSQL is still not reachable after DB_STARTUP_TIMEOUT; going on");
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::info!(error = %e, "waiting for PostgreSQL to accept connections");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

fn local_time(schedule: &Schedule, t: DateTime<Utc>) -> String {
    t.with_timezone(&schedule.time_zone())
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
