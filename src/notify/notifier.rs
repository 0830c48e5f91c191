//! The observer that turns events into notices and delivers them from its
//! own tasks: bounded queues, timeout per attempt, retries with backoff,
//! counted results.
//!
//! `observe` runs on the emitting task (the backup run, the restore
//! procedure, the daemon loop) and never waits: it builds the notice and
//! `try_send`s it to one worker task per destination (and one for the
//! ping). A full queue drops the notice, logs it and counts
//! `result="dropped"`. A worker per destination, not one for all, so a
//! destination that hangs until its timeout holds up only its own later
//! notices, never another destination's; within one destination notices
//! keep their order (stale before recovered).
//!
//! A notice that fails every attempt is logged, counted `failed`, and
//! handed to a [`FailureRecord`]: the status file's `last_notification_error`
//! for the backup daemon and `once`, the restore state file for the restore
//! service (its operators read that file, and the backup status file
//! belongs to the backup side).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::message::{Notice, NoticeContext, Severity};
use super::ping::{PING_KIND, Ping, PingRequest, PingUrl};
use super::{Deliver, DeliveryError, Destination};
use crate::clock::Clock;
use crate::events::{Event, Observer, Origin};
use crate::metrics::Metrics;

/// The default pause before the second and the third attempt.
pub const DEFAULT_BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];
/// `NOTIFY_TIMEOUT_SECONDS` by default: per attempt, and what `once`
/// waits in all for queued notices before it exits.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Notices waiting per destination; a burst beyond it is dropped (and counted).
pub const DEFAULT_QUEUE: usize = 32;

/// How the notifier delivers, whatever it delivers to.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `NOTIFY_LEVEL`: notices below it are not sent.
    pub level: Severity,
    /// Bounds each attempt (the sender's own timeout may be shorter).
    pub timeout: Duration,
    /// The pauses between attempts: `[1 s, 4 s]` is three attempts.
    pub backoff: Vec<Duration>,
    /// Notices waiting per destination.
    pub queue: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            level: Severity::Error,
            timeout: DEFAULT_TIMEOUT,
            backoff: DEFAULT_BACKOFF.to_vec(),
            queue: DEFAULT_QUEUE,
        }
    }
}

/// Where a notice that could not be delivered is written down, besides the log.
pub trait FailureRecord: Send + Sync {
    /// `line` is masked: "2026-12-02T01:00:00Z ntfy https://ntfy.sh/***: HTTP 500 …".
    fn record(&self, line: &str);
}

/// `last_notification_error` in the backup status file (daemon, `once`).
#[derive(Debug, Clone)]
pub struct StatusFileRecord(pub PathBuf);

impl FailureRecord for StatusFileRecord {
    fn record(&self, line: &str) {
        let written = crate::state::update(&self.0, |status| {
            status.last_notification_error = Some(line.to_string());
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write last_notification_error into the status file");
        }
    }
}

/// What a worker sends, and to where.
enum Target {
    Destination(Destination),
    Ping,
}

enum Job {
    Notice(Arc<Notice>),
    Ping(PingRequest),
}

impl Job {
    fn what(&self) -> &str {
        match self {
            Job::Notice(notice) => &notice.event,
            Job::Ping(request) => request.signal,
        }
    }
}

struct Worker {
    kind: &'static str,
    shown: String,
    queue: mpsc::Sender<Job>,
    /// Its jobs queued or being delivered.
    pending: Arc<AtomicUsize>,
}

/// State shared by the observer and its workers.
struct Shared {
    metrics: Option<Arc<Metrics>>,
    record: Option<Arc<dyn FailureRecord>>,
    clock: Arc<dyn Clock>,
    /// Jobs queued or being delivered, for [`Notifier::flush`].
    pending: AtomicUsize,
    idle: Notify,
}

impl Shared {
    fn count(&self, kind: &'static str, result: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.count_notification(kind, result);
        }
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// What the notifier remembers between events.
#[derive(Debug, Default)]
struct Memory {
    /// An offsite failure was notified and no clean pass followed yet.
    offsite_failing: bool,
    /// The restore under way, to tell where its file went if it fails.
    restoring: Option<(PathBuf, Origin)>,
}

/// The notifications observer. Build it inside the runtime ([`Notifier::start`]
/// spawns its workers); dropping it lets the workers finish what is queued.
pub struct Notifier {
    ctx: NoticeContext,
    level: Severity,
    workers: Vec<Worker>,
    ping: Option<(PingUrl, Worker)>,
    memory: Mutex<Memory>,
    shared: Arc<Shared>,
}

/// The destinations and the senders a notifier is built from.
pub struct Setup {
    pub ctx: NoticeContext,
    pub destinations: Vec<Destination>,
    pub ping: Option<PingUrl>,
    pub policy: Policy,
    pub deliver: Arc<dyn Deliver>,
    pub pinger: Arc<dyn Ping>,
    pub metrics: Option<Arc<Metrics>>,
    pub record: Option<Arc<dyn FailureRecord>>,
    pub clock: Arc<dyn Clock>,
}

impl Notifier {
    /// Spawns one worker per destination (and one for the ping) on the
    /// current tokio runtime.
    pub fn start(setup: Setup) -> Arc<Self> {
        let Setup {
            ctx,
            destinations,
            ping,
            policy,
            deliver,
            pinger,
            metrics,
            record,
            clock,
        } = setup;
        let shared = Arc::new(Shared {
            metrics,
            record,
            clock,
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let spawn = |target: Target, kind: &'static str, shown: String| {
            if let Some(metrics) = &shared.metrics {
                metrics.expect_notifications(kind);
            }
            let (queue, jobs) = mpsc::channel(policy.queue.max(1));
            let pending = Arc::new(AtomicUsize::new(0));
            tokio::spawn(work(
                target,
                shown.clone(),
                jobs,
                (Arc::clone(&deliver), Arc::clone(&pinger)),
                policy.clone(),
                Arc::clone(&shared),
                Arc::clone(&pending),
            ));
            Worker {
                kind,
                shown,
                queue,
                pending,
            }
        };
        let workers = destinations
            .into_iter()
            .map(|destination| {
                let (kind, shown) = (destination.kind(), describe(&destination));
                spawn(Target::Destination(destination), kind, shown)
            })
            .collect();
        let ping = ping.map(|url| {
            let worker = spawn(Target::Ping, PING_KIND, format!("{PING_KIND} {url}"));
            (url, worker)
        });
        Arc::new(Notifier {
            ctx,
            level: policy.level,
            workers,
            ping,
            memory: Mutex::new(Memory::default()),
            shared,
        })
    }

    /// Nothing to notify: no destination and no ping URL.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty() && self.ping.is_none()
    }

    /// The bucket was already failing before this process (the status
    /// file's `last_upload_error`): the next failure is not news, the next
    /// clean pass is.
    pub fn offsite_was_failing(&self, failing: bool) {
        if let Ok(mut memory) = self.memory.lock() {
            memory.offsite_failing = failing;
        }
    }

    /// Waits until every queued notice is delivered or given up, at most
    /// `deadline`; false when some were still under way then.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.shared.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.shared.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_ok() {
            return true;
        }
        // The process is about to exit with these undelivered: say so where
        // a failed delivery would have been recorded.
        let workers = self.workers.iter().chain(self.ping.iter().map(|(_, w)| w));
        for worker in workers.filter(|w| w.pending.load(Ordering::Acquire) > 0) {
            tracing::warn!(destination = %worker.shown, "notification not delivered before the exit");
            if let Some(record) = &self.shared.record {
                // The wait is the caller's (the daemon's is a fixed 2 s, `once`'s
                // NOTIFY_TIMEOUT_SECONDS): name its length, not a variable.
                record.record(&format!(
                    "{} {}: still not delivered {} after backupd began to exit",
                    crate::state::timestamp(self.shared.clock.now()),
                    worker.shown,
                    wait_length(deadline)
                ));
            }
        }
        false
    }

    /// The notice for `event` after the level and the streaks, if any.
    fn notice_for(&self, event: &Event) -> Option<Notice> {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let notice = match event {
            Event::OffsitePass(pass) => match (&pass.error, memory.offsite_failing) {
                (Some(_), true) => None,
                (Some(_), false) => {
                    memory.offsite_failing = true;
                    Notice::from_event(event, &self.ctx)
                }
                (None, true) => {
                    memory.offsite_failing = false;
                    Some(Notice::offsite_caught_up(pass, &self.ctx))
                }
                (None, false) => None,
            },
            Event::RestoreStarted(started) => {
                memory.restoring = Some((started.file.clone(), started.origin));
                Notice::from_event(event, &self.ctx)
            }
            Event::RestoreFailed(failed) => {
                let origin = memory
                    .restoring
                    .take()
                    .filter(|(file, _)| *file == failed.file)
                    .map(|(_, origin)| origin);
                Some(Notice::restore_failed(
                    failed,
                    origin,
                    &self.ctx,
                    self.shared.clock.now(),
                ))
            }
            _ => Notice::from_event(event, &self.ctx),
        };
        notice.filter(|n| n.severity >= self.level)
    }

    fn enqueue(&self, worker: &Worker, job: Job) {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        worker.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = worker.queue.try_send(job) {
            worker.pending.fetch_sub(1, Ordering::AcqRel);
            let job = match e {
                mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                    job
                }
            };
            self.shared.done();
            self.shared.count(worker.kind, "dropped");
            tracing::warn!(
                destination = %worker.shown,
                event = job.what(),
                "notification dropped: the queue of this destination is full (it is slow or down)"
            );
        }
    }
}

impl Observer for Notifier {
    fn observe(&self, event: &Event) {
        if let Some((url, worker)) = &self.ping
            && let Some(request) = url.request(event)
        {
            self.enqueue(worker, Job::Ping(request));
        }
        if self.workers.is_empty() {
            return;
        }
        if let Some(notice) = self.notice_for(event) {
            let notice = Arc::new(notice);
            for worker in &self.workers {
                self.enqueue(worker, Job::Notice(Arc::clone(&notice)));
            }
        }
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.workers.iter().map(|w| w.shown.as_str()).collect();
        f.debug_struct("Notifier")
            .field("level", &self.level)
            .field("destinations", &shown)
            .field("ping", &self.ping.as_ref().map(|(url, _)| url.to_string()))
            .finish()
    }
}

/// The real senders: HTTP and SMTP for the destinations, HTTP for the ping.
pub fn real_senders(timeout: Duration) -> crate::Result<(Arc<dyn Deliver>, Arc<dyn Ping>)> {
    let ping =
        super::ping::HttpPing::new(timeout).map_err(|e| crate::Error::Other(e.to_string()))?;
    let deliver =
        super::send::Delivery::new(timeout).map_err(|e| crate::Error::Other(e.to_string()))?;
    Ok((Arc::new(deliver), Arc::new(ping)))
}

/// The notifier of `cfg`, started; `None` when nothing is configured.
pub fn start_from_config(
    cfg: &crate::config::NotifyConfig,
    ctx: NoticeContext,
    metrics: Option<Arc<Metrics>>,
    record: Option<Arc<dyn FailureRecord>>,
) -> crate::Result<Option<Arc<Notifier>>> {
    if cfg.is_empty() {
        return Ok(None);
    }
    let (deliver, pinger) = real_senders(cfg.timeout)?;
    let notifier = Notifier::start(Setup {
        ctx,
        destinations: cfg.destinations.clone(),
        ping: cfg.ping.clone(),
        policy: Policy {
            level: cfg.level,
            timeout: cfg.timeout,
            ..Policy::default()
        },
        deliver,
        pinger,
        metrics,
        record,
        clock: Arc::new(crate::clock::SystemClock),
    });
    let shown: Vec<&str> = notifier.workers.iter().map(|w| w.shown.as_str()).collect();
    tracing::info!(
        destinations = %shown.join(", "),
        ping = %cfg.ping.as_ref().map_or_else(|| "off".to_string(), ToString::to_string),
        level = cfg.level.as_str(),
        "notifications on"
    );
    Ok(Some(notifier))
}

/// How a destination shows itself in logs and in the status file: its
/// kind and its URL, masked (`ntfy https://ntfy.sh/***`).
pub fn describe(destination: &Destination) -> String {
    destination.to_string()
}

/// "2 s", "50 ms": a wait as an operator reads it.
fn wait_length(wait: Duration) -> String {
    if wait.subsec_millis() == 0 {
        format!("{} s", wait.as_secs())
    } else {
        format!("{} ms", wait.as_millis())
    }
}

/// One destination's worker: delivers its queue in order.
async fn work(
    target: Target,
    shown: String,
    mut jobs: mpsc::Receiver<Job>,
    (deliver, pinger): (Arc<dyn Deliver>, Arc<dyn Ping>),
    policy: Policy,
    shared: Arc<Shared>,
    pending: Arc<AtomicUsize>,
) {
    let kind = match &target {
        Target::Destination(d) => d.kind(),
        Target::Ping => PING_KIND,
    };
    while let Some(job) = jobs.recv().await {
        let (target, job_ref, deliver, pinger, shown) = (&target, &job, &deliver, &pinger, &shown);
        let timeout = policy.timeout;
        let attempt = move || async move {
            let sending = async {
                match (target, job_ref) {
                    (Target::Destination(destination), Job::Notice(notice)) => {
                        deliver.deliver(destination, notice).await
                    }
                    (Target::Ping, Job::Ping(request)) => pinger.ping(request).await,
                    _ => Ok(()),
                }
            };
            match tokio::time::timeout(timeout, sending).await {
                Ok(result) => result,
                Err(_) => Err(DeliveryError::new(format!(
                    "no answer within {:.0} s (NOTIFY_TIMEOUT_SECONDS)",
                    timeout.as_secs_f64()
                ))),
            }
        };
        match with_retries(&policy.backoff, attempt).await {
            Ok(attempts) => {
                shared.count(kind, "sent");
                tracing::info!(destination = %shown, event = job.what(), attempts, "notification sent");
            }
            Err((attempts, e)) => {
                shared.count(kind, "failed");
                tracing::warn!(
                    destination = %shown,
                    event = job.what(),
                    attempts,
                    error = %e,
                    "notification not delivered"
                );
                if let Some(record) = &shared.record {
                    let line = format!(
                        "{} {shown}: {e}",
                        crate::state::timestamp(shared.clock.now())
                    );
                    record.record(&line);
                }
            }
        }
        pending.fetch_sub(1, Ordering::AcqRel);
        shared.done();
    }
}

/// Tries `attempt` once and again after each pause of `backoff` (not after
/// an error that says it is [not retried](DeliveryError::not_retried)); the
/// number of attempts made, with the last error when none succeeded.
async fn with_retries<F, Fut>(
    backoff: &[Duration],
    attempt: F,
) -> Result<usize, (usize, DeliveryError)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), DeliveryError>>,
{
    let mut made = 0;
    let mut pauses = backoff.iter();
    loop {
        made += 1;
        match attempt().await {
            Ok(()) => return Ok(made),
            Err(e) if !e.retry() => return Err((made, e)),
            Err(e) => match pauses.next() {
                Some(pause) => {
                    tracing::debug!(error = %e, retry_in_ms = pause.as_millis() as u64, "notification attempt failed");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err((made, e)),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::events::samples;
    use crate::events::{
        BackupStarted, Failure, FailureKind, OffsitePass, RestoreFailed, RestoreStarted,
    };
    use crate::restore::state::Phase;
    use async_trait::async_trait;
    use chrono::DateTime;
    use std::collections::BTreeMap;
    use std::time::Instant;
    use url::Url;

    /// How the fake answers a destination.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Answer {
        Ok,
        Fail,
        Hang,
        /// Fails this many times, then succeeds.
        FailTimes(usize),
    }

    /// A recording Deliver (and Ping): every attempt, by destination kind.
    #[derive(Default)]
    pub struct FakeDeliver {
        answers: Mutex<BTreeMap<String, Answer>>,
        calls: Mutex<Vec<(String, String, Instant)>>,
    }

    impl FakeDeliver {
        pub fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }

        pub fn answer(&self, kind: &str, answer: Answer) {
            self.answers.lock().unwrap().insert(kind.into(), answer);
        }

        /// `(destination kind, event or ping signal)` of every attempt.
        pub fn calls(&self) -> Vec<(String, String)> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .map(|(k, e, _)| (k.clone(), e.clone()))
                .collect()
        }

        fn calls_to(&self, kind: &str) -> Vec<String> {
            self.calls()
                .into_iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, e)| e)
                .collect()
        }

        async fn answer_for(&self, kind: &str, what: &str) -> Result<(), DeliveryError> {
            self.calls
                .lock()
                .unwrap()
                .push((kind.into(), what.into(), Instant::now()));
            let answer = {
                let mut answers = self.answers.lock().unwrap();
                let answer = answers.get(kind).copied().unwrap_or(Answer::Ok);
                if let Answer::FailTimes(n) = answer {
                    answers.insert(
                        kind.into(),
                        if n <= 1 {
                            Answer::Ok
                        } else {
                            Answer::FailTimes(n - 1)
                        },
                    );
                }
                answer
            };
            match answer {
                Answer::Ok => Ok(()),
                Answer::Fail | Answer::FailTimes(_) => Err(DeliveryError::new("HTTP 500")),
                Answer::Hang => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl Deliver for FakeDeliver {
        async fn deliver(
            &self,
            destination: &Destination,
            notice: &Notice,
        ) -> Result<(), DeliveryError> {
            self.answer_for(destination.kind(), &notice.event).await
        }
    }

    #[async_trait]
    impl Ping for FakeDeliver {
        async fn ping(&self, request: &PingRequest) -> Result<(), DeliveryError> {
            self.answer_for(PING_KIND, request.signal).await
        }
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl FailureRecord for Lines {
        fn record(&self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    fn ctx() -> NoticeContext {
        NoticeContext {
            host: "db-backup".into(),
            database_kind: "sqlite",
            database_name: "app.db".into(),
        }
    }

    fn webhook() -> Destination {
        Destination::Webhook {
            url: Url::parse("https://hooks.example/x").unwrap(),
        }
    }

    fn ntfy() -> Destination {
        Destination::Ntfy {
            server: Url::parse("https://ntfy.sh").unwrap(),
            topic: "backups".into(),
            auth: None,
        }
    }

    /// Milliseconds instead of seconds: the schedule is a field.
    fn quick(level: Severity) -> Policy {
        Policy {
            level,
            timeout: Duration::from_millis(200),
            backoff: vec![Duration::from_millis(5), Duration::from_millis(10)],
            queue: 8,
        }
    }

    struct Rig {
        notifier: Arc<Notifier>,
        fake: Arc<FakeDeliver>,
        metrics: Arc<Metrics>,
        lines: Arc<Lines>,
    }

    fn rig(destinations: Vec<Destination>, ping: Option<&str>, policy: Policy) -> Rig {
        let fake = FakeDeliver::new();
        let metrics = Arc::new(Metrics::new());
        let lines = Arc::new(Lines::default());
        let notifier = Notifier::start(Setup {
            ctx: ctx(),
            destinations,
            ping: ping.map(|p| PingUrl::parse(p, "BACKUP_PING_URL").unwrap()),
            policy,
            deliver: fake.clone(),
            pinger: fake.clone(),
            metrics: Some(metrics.clone()),
            record: Some(lines.clone()),
            clock: Arc::new(SystemClock),
        });
        Rig {
            notifier,
            fake,
            metrics,
            lines,
        }
    }

    fn count(metrics: &Metrics, kind: &str, result: &str) -> u64 {
        let wanted = format!(
            "backupd_notifications_total{{destination_kind=\"{kind}\",result=\"{result}\"}} "
        );
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&wanted).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0)
    }

    fn failed() -> Event {
        samples::backup_failed().into()
    }

    fn finished() -> Event {
        samples::backup_finished().into()
    }

    fn pass(error: Option<&str>) -> Event {
        OffsitePass {
            error: error.map(String::from),
            ..OffsitePass::default()
        }
        .into()
    }

    const SETTLE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_level_filters_successes_but_never_failures() {
        let errors = rig(vec![webhook()], None, quick(Severity::Error));
        errors.notifier.observe(&finished());
        errors.notifier.observe(&failed());
        assert!(errors.notifier.flush(SETTLE).await);
        assert_eq!(errors.fake.calls_to("webhook"), ["backup-failed"]);

        let info = rig(vec![webhook()], None, quick(Severity::Info));
        info.notifier.observe(&finished());
        info.notifier.observe(&failed());
        assert!(info.notifier.flush(SETTLE).await);
        assert_eq!(
            info.fake.calls_to("webhook"),
            ["backup-finished", "backup-failed"]
        );
        assert_eq!(count(&info.metrics, "webhook", "sent"), 2);
    }

    #[tokio::test]
    async fn a_failing_destination_is_tried_three_times_then_counted_and_recorded() {
        let rig = rig(vec![webhook(), ntfy()], None, quick(Severity::Error));
        rig.fake.answer("ntfy", Answer::Fail);
        rig.fake.answer("webhook", Answer::FailTimes(2));
        rig.notifier.observe(&failed());
        assert!(rig.notifier.flush(SETTLE).await);
        assert_eq!(rig.fake.calls_to("ntfy").len(), 3);
        assert_eq!(rig.fake.calls_to("webhook").len(), 3);
        assert_eq!(count(&rig.metrics, "ntfy", "failed"), 1);
        assert_eq!(count(&rig.metrics, "ntfy", "sent"), 0);
        assert_eq!(count(&rig.metrics, "webhook", "sent"), 1);
        let lines = rig.lines.0.lock().unwrap().clone();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with("Z ntfy https://ntfy.sh/***: HTTP 500"),
            "{}",
            lines[0]
        );
    }

    #[tokio::test]
    async fn a_hanging_destination_delays_neither_the_others_nor_the_emitter() {
        let mut policy = quick(Severity::Error);
        policy.timeout = Duration::from_millis(300);
        policy.backoff = vec![];
        let rig = rig(vec![webhook(), ntfy()], None, policy);
        rig.fake.answer("webhook", Answer::Hang);
        let emitted = Instant::now();
        rig.notifier.observe(&failed());
        rig.notifier.observe(&failed());
        // observe only queues: a hang cannot reach the emitting task.
        assert!(emitted.elapsed() < Duration::from_millis(100));
        // ntfy has both notices long before the webhook's first attempt times out.
        let deadline = Instant::now() + SETTLE;
        while rig.fake.calls_to("ntfy").len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rig.fake.calls_to("ntfy").len(), 2);
        assert_eq!(count(&rig.metrics, "webhook", "failed"), 0);
        assert!(rig.notifier.flush(SETTLE).await);
        assert_eq!(count(&rig.metrics, "webhook", "failed"), 2);
        assert_eq!(count(&rig.metrics, "ntfy", "sent"), 2);
        let lines = rig.lines.0.lock().unwrap().clone();
        assert!(lines[0].contains("NOTIFY_TIMEOUT_SECONDS"), "{lines:?}");
    }

    #[tokio::test]
    async fn an_offsite_failure_is_said_once_per_streak_and_the_catch_up_follows() {
        let rig = rig(vec![webhook()], None, quick(Severity::Error));
        for event in [
            pass(None),
            pass(Some("SlowDown")),
            pass(Some("SlowDown")),
            pass(Some("timeout")),
            pass(None),
            pass(None),
            pass(Some("SlowDown")),
        ] {
            rig.notifier.observe(&event);
        }
        assert!(rig.notifier.flush(SETTLE).await);
        assert_eq!(
            rig.fake.calls_to("webhook"),
            ["offsite-failed", "offsite-caught-up", "offsite-failed"]
        );

        let restarted = self::rig(vec![webhook()], None, quick(Severity::Error));
        restarted.notifier.offsite_was_failing(true);
        restarted.notifier.observe(&pass(Some("SlowDown")));
        restarted.notifier.observe(&pass(None));
        assert!(restarted.notifier.flush(SETTLE).await);
        assert_eq!(restarted.fake.calls_to("webhook"), ["offsite-caught-up"]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let mut policy = quick(Severity::Error);
        policy.queue = 2;
        policy.timeout = Duration::from_millis(500);
        policy.backoff = vec![];
        let rig = rig(vec![webhook()], None, policy);
        rig.fake.answer("webhook", Answer::Hang);
        let emitted = Instant::now();
        for _ in 0..10 {
            rig.notifier.observe(&failed());
        }
        assert!(emitted.elapsed() < Duration::from_millis(100));
        // One in the worker's hands, two queued, seven dropped.
        let dropped = count(&rig.metrics, "webhook", "dropped");
        assert!((7..=8).contains(&dropped), "{dropped}");
        assert!(!rig.notifier.flush(Duration::from_millis(50)).await);
        let lines = rig.lines.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("still not delivered 50 ms after backupd began to exit")),
            "{lines:?}"
        );
        assert!(rig.notifier.flush(SETTLE).await);
        assert_eq!(count(&rig.metrics, "webhook", "failed") + dropped, 10);
    }

    #[tokio::test]
    async fn the_ping_follows_every_run_whatever_the_level() {
        let rig = rig(
            vec![],
            Some("https://hc-ping.com/uuid"),
            quick(Severity::Error),
        );
        rig.notifier.observe(
            &BackupStarted {
                database: "sqlite",
                at: DateTime::UNIX_EPOCH,
            }
            .into(),
        );
        rig.notifier.observe(&finished());
        rig.notifier.observe(&failed());
        assert!(rig.notifier.flush(SETTLE).await);
        assert_eq!(rig.fake.calls_to("ping"), ["start", "success", "fail"]);
        assert_eq!(count(&rig.metrics, "ping", "sent"), 3);
        assert!(!rig.notifier.is_empty());
    }

    #[tokio::test]
    async fn a_failed_restore_says_where_its_dropped_file_went() {
        struct Texts(Mutex<Vec<String>>);
        #[async_trait]
        impl Deliver for Texts {
            async fn deliver(&self, _: &Destination, notice: &Notice) -> Result<(), DeliveryError> {
                self.0.lock().unwrap().push(notice.text.clone());
                Ok(())
            }
        }
        let texts = Arc::new(Texts(Mutex::new(vec![])));
        let notifier = Notifier::start(Setup {
            ctx: ctx(),
            destinations: vec![webhook()],
            ping: None,
            policy: quick(Severity::Error),
            deliver: texts.clone(),
            pinger: FakeDeliver::new(),
            metrics: None,
            record: None,
            clock: Arc::new(SystemClock),
        });
        let file = PathBuf::from("/restore/incoming/app.db.gz");
        notifier.observe(
            &RestoreStarted {
                file: file.clone(),
                origin: Origin::Dropped,
                at: DateTime::UNIX_EPOCH,
            }
            .into(),
        );
        notifier.observe(
            &RestoreFailed {
                file,
                phase: Phase::Checking,
                duration: Duration::ZERO,
                error: Failure::new(FailureKind::Verify, "not a gzip stream"),
                downtime: None,
            }
            .into(),
        );
        assert!(notifier.flush(SETTLE).await);
        let texts = texts.0.lock().unwrap().clone();
        assert_eq!(texts.len(), 1, "restore-started is info: {texts:?}");
        assert!(
            texts[0].contains("moved to the failed folder"),
            "{}",
            texts[0]
        );
    }

    #[tokio::test]
    async fn retries_wait_the_backoff_between_attempts() {
        let backoff = [Duration::from_millis(20), Duration::from_millis(40)];
        let started = Instant::now();
        let tries = &AtomicUsize::new(0);
        let result = with_retries(&backoff, move || async move {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(DeliveryError::new("no"))
        })
        .await;
        assert_eq!(result.unwrap_err().0, 3);
        // A partly delivered notice is not sent again.
        let tries = &AtomicUsize::new(0);
        let result = with_retries(&backoff, move || async move {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(DeliveryError::not_retried("1 of 2 recipients refused"))
        })
        .await;
        assert_eq!(result.unwrap_err().0, 1);
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(
            with_retries(&backoff, || async { Ok(()) }).await.unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn the_status_file_keeps_the_last_notification_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup-status.json");
        std::fs::write(
            &path,
            r#"{"last_backup": "2026-12-02T01:00:00Z", "future": 1}"#,
        )
        .unwrap();
        StatusFileRecord(path.clone()).record("2026-12-02T02:00:00Z ntfy ntfy: HTTP 500");
        let status = crate::state::Status::read(&path).unwrap().unwrap();
        assert_eq!(
            status.last_notification_error.as_deref(),
            Some("2026-12-02T02:00:00Z ntfy ntfy: HTTP 500")
        );
        assert_eq!(status.last_backup.as_deref(), Some("2026-12-02T01:00:00Z"));
        assert!(status.other.contains_key("future"));
    }
}
