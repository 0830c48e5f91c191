//! The daemon's dead-man's switch: it notices by itself that no backup has
//! succeeded within `HEALTH_MAX_AGE_SECONDS` (a hung run, a stopped
//! schedule, a key it cannot read) and says so once ([`Event::Stale`]),
//! then [`Event::Recovered`] at the next success.
//!
//! [`StaleWatch`] observes the backup run (successes move the deadline,
//! failures are remembered as the reason) and [`StaleWatch::run`] is a timer
//! of its own, woken at the exact due time, so a backup that hangs cannot
//! keep it from firing: the daemon's loop is not involved.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::{Event, FailureKind, Observer, Recovered, Stale};

/// Long waits wake up this often to notice wall-clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Watch {
    last_success: Option<DateTime<Utc>>,
    /// Where the limit counts from while no backup ever succeeded: the
    /// daemon's start.
    since: DateTime<Utc>,
    stale_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl Watch {
    fn due(&self, max_age: chrono::Duration) -> Option<DateTime<Utc>> {
        match self.stale_since {
            Some(_) => None,
            None => Some(self.last_success.unwrap_or(self.since) + max_age),
        }
    }
}

pub struct StaleWatch {
    database: &'static str,
    max_age: Duration,
    watch: Mutex<Watch>,
    clock: Arc<dyn Clock>,
    /// Who hears `stale` and `recovered` (the notifier, the log).
    downstream: Arc<dyn Observer>,
    changed: Notify,
}

impl std::fmt::Debug for StaleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleWatch")
            .field("max_age", &self.max_age)
            .field("watch", &self.watch)
            .finish()
    }
}

/// What the status file said at start-up.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// `stale` was said already (by an earlier run of the daemon) and no
    /// success followed: not said again.
    pub stale_since: Option<DateTime<Utc>>,
}

impl StaleWatch {
    pub fn new(
        database: &'static str,
        max_age: Duration,
        known: Known,
        clock: Arc<dyn Clock>,
        downstream: Arc<dyn Observer>,
    ) -> Arc<Self> {
        let since = clock.now();
        Arc::new(StaleWatch {
            database,
            max_age,
            watch: Mutex::new(Watch {
                last_success: known.last_success,
                since,
                // A success after the recorded stale (`once` from cron) ended it.
                stale_since: known
                    .stale_since
                    .filter(|stale| known.last_success.is_none_or(|ok| ok < *stale)),
                last_error: known.last_error,
            }),
            clock,
            downstream,
            changed: Notify::new(),
        })
    }

    fn max_age(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `stale` is due; `None` while it has been said already.
    pub fn due(&self) -> Option<DateTime<Utc>> {
        self.lock().due(self.max_age())
    }

    /// Says `stale` if it is due now and was not said yet; true if it did.
    pub fn check(&self) -> bool {
        let now = self.clock.now();
        let stale = {
            let mut watch = self.lock();
            match watch.due(self.max_age()) {
                Some(due) if now >= due => {
                    watch.stale_since = Some(now);
                    Some(Stale {
                        database: self.database,
                        last_success: watch.last_success,
                        max_age: self.max_age,
                        at: now,
                        last_error: watch.last_error.clone(),
                    })
                }
                _ => None,
            }
        };
        match stale {
            Some(stale) => {
                self.downstream.observe(&stale.into());
                true
            }
            None => false,
        }
    }

    /// The timer: sleeps until the due time (by the wall clock, in slices,
    /// so a clock jump or a suspend is noticed), checks, and waits again
    /// after each success. Ends on `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = match self.due() {
                None => None,
                Some(due) => {
                    let now = self.clock.now();
                    if now >= due {
                        self.check();
                        continue;
                    }
                    Some(
                        (due - now)
                            .to_std()
                            .unwrap_or(Duration::ZERO)
                            .min(MAX_SLEEP),
                    )
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut changed => {}
                _ = async {
                    match wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

impl Observer for StaleWatch {
    fn observe(&self, event: &Event) {
        match event {
            Event::BackupFinished(done) => {
                let recovered = {
                    let mut watch = self.lock();
                    watch.last_success = Some(done.finished_at);
                    watch.last_error = None;
                    watch.stale_since.take().map(|stale_since| Recovered {
                        database: self.database,
                        stale_since,
                        at: done.finished_at,
                        file: done.file.clone(),
                    })
                };
                self.changed.notify_waiters();
                if let Some(recovered) = recovered {
                    self.downstream.observe(&recovered.into());
                }
            }
            Event::BackupFailed(failed)
                if !matches!(
                    failed.error.kind,
                    FailureKind::Cancelled | FailureKind::Busy
                ) =>
            {
                self.lock().last_error = Some(failed.error.message.clone());
            }
            _ => {}
        }
    }
}

/// Keeps `stale_since` in the status file: set at `stale`, cleared at
/// `recovered`, so a restarted daemon neither repeats the one nor misses the other.
#[derive(Debug, Clone)]
pub struct StaleRecord(pub std::path::PathBuf);

impl Observer for StaleRecord {
    fn observe(&self, event: &Event) {
        let stale_since = match event {
            Event::Stale(stale) => Some(crate::state::timestamp(stale.at)),
            Event::Recovered(_) => None,
            _ => return,
        };
        if let Err(e) = crate::state::update(&self.0, |status| status.stale_since = stale_since) {
            tracing::warn!(error = %e, "cannot write stale_since into the status file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;
    use crate::events::{BackupFailed, BackupFinished, Failure, Recorder};
    use chrono::TimeZone;

    struct ManualClock(Mutex<DateTime<Utc>>);

    impl ManualClock {
        fn at(t: DateTime<Utc>) -> Arc<Self> {
            Arc::new(ManualClock(Mutex::new(t)))
        }
        fn advance(&self, seconds: i64) {
            *self.0.lock().unwrap() += chrono::Duration::seconds(seconds);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap()
    }

    fn finished(at: DateTime<Utc>) -> Event {
        BackupFinished {
            started_at: at,
            finished_at: at,
            sha256: String::new(),
            ..samples::backup_finished()
        }
        .into()
    }

    fn failed(kind: FailureKind, message: &str) -> Event {
        BackupFailed {
            started_at: t0(),
            error: Failure::new(kind, message),
            ..samples::backup_failed()
        }
        .into()
    }

    #[test]
    fn stale_is_said_once_and_recovered_at_the_next_success() {
        let clock = ManualClock::at(t0());
        let heard = Recorder::new();
        let watch = StaleWatch::new(
            "sqlite",
            Duration::from_secs(100),
            Known {
                last_success: Some(t0() - chrono::Duration::seconds(40)),
                ..Known::default()
            },
            clock.clone(),
            heard.clone(),
        );
        assert_eq!(watch.due(), Some(t0() + chrono::Duration::seconds(60)));
        clock.advance(59);
        assert!(!watch.check());
        watch.observe(&failed(FailureKind::Database, "database is locked"));
        // A shutdown is not the reason backups are missing.
        watch.observe(&failed(FailureKind::Cancelled, "cancelled"));
        clock.advance(1);
        assert!(watch.check());
        clock.advance(1000);
        assert!(!watch.check(), "said once, not again");
        assert_eq!(watch.due(), None);
        let Some(Event::Stale(stale)) = heard.events().pop() else {
            panic!("{:?}", heard.names());
        };
        assert_eq!(stale.last_error.as_deref(), Some("database is locked"));
        assert_eq!(stale.at, t0() + chrono::Duration::seconds(60));

        watch.observe(&finished(clock.now()));
        assert_eq!(heard.names(), ["stale", "recovered"]);
        let Some(Event::Recovered(recovered)) = heard.events().pop() else {
            unreachable!()
        };
        assert_eq!(recovered.stale_since, stale.at);
        // The next success just moves the deadline.
        watch.observe(&finished(clock.now()));
        assert_eq!(heard.names(), ["stale", "recovered"]);
        assert_eq!(
            watch.due(),
            Some(clock.now() + chrono::Duration::seconds(100))
        );
    }

    #[test]
    fn a_restart_while_stale_does_not_say_it_again_but_recovers() {
        let clock = ManualClock::at(t0());
        let heard = Recorder::new();
        let known = Known {
            last_success: Some(t0() - chrono::Duration::seconds(500)),
            last_error: None,
            stale_since: Some(t0() - chrono::Duration::seconds(400)),
        };
        let watch = StaleWatch::new(
            "sqlite",
            Duration::from_secs(100),
            known.clone(),
            clock.clone(),
            heard.clone(),
        );
        assert!(!watch.check());
        watch.observe(&finished(clock.now()));
        assert_eq!(heard.names(), ["recovered"]);
        // A success after the recorded stale means it was over already.
        let later = StaleWatch::new(
            "sqlite",
            Duration::from_secs(1000),
            Known {
                last_success: Some(t0() - chrono::Duration::seconds(10)),
                ..known
            },
            clock.clone(),
            heard.clone(),
        );
        assert_eq!(later.due(), Some(t0() + chrono::Duration::seconds(990)));
    }

    #[test]
    fn the_status_file_remembers_stale_until_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        let record = StaleRecord(path.clone());
        record.observe(
            &Stale {
                database: "sqlite",
                last_success: None,
                max_age: Duration::from_secs(1),
                at: t0(),
                last_error: None,
            }
            .into(),
        );
        let status = crate::state::Status::read(&path).unwrap().unwrap();
        assert_eq!(status.stale_since.as_deref(), Some("2026-12-02T00:00:00Z"));
        record.observe(
            &Recovered {
                database: "sqlite",
                stale_since: t0(),
                at: t0(),
                file: "/backups/x".into(),
            }
            .into(),
        );
        let status = crate::state::Status::read(&path).unwrap().unwrap();
        assert_eq!(status.stale_since, None);
    }

    #[test]
    fn without_any_success_the_limit_counts_from_the_start() {
        let clock = ManualClock::at(t0());
        let heard = Recorder::new();
        let watch = StaleWatch::new(
            "sqlite",
            Duration::from_secs(10),
            Known::default(),
            clock.clone(),
            heard.clone(),
        );
        assert_eq!(watch.due(), Some(t0() + chrono::Duration::seconds(10)));
        clock.advance(10);
        assert!(watch.check());
        let Some(Event::Stale(stale)) = heard.events().pop() else {
            panic!()
        };
        assert_eq!(stale.last_success, None);
    }

    #[tokio::test]
    async fn the_timer_fires_at_the_due_time_without_any_event() {
        let heard = Recorder::new();
        let watch = StaleWatch::new(
            "sqlite",
            Duration::from_millis(150),
            Known::default(),
            Arc::new(crate::clock::SystemClock),
            heard.clone(),
        );
        let cancel = CancellationToken::new();
        let timer = tokio::spawn(watch.clone().run(cancel.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(heard.names().is_empty());
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        while heard.names().is_empty() && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(heard.names(), ["stale"]);
        // A success re-arms the timer, which fires again after the limit.
        watch.observe(&finished(crate::clock::SystemClock.now()));
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        while heard.names().len() < 3 && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(heard.names(), ["stale", "recovered", "stale"]);
        cancel.cancel();
        timer.await.unwrap();
    }
}
