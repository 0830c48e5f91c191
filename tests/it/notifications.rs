//! Notifications end to end: the daemon's dead-man's switch (one stale, no
//! repeats, one recovered), destinations that hang or fail (the backup is
//! not delayed, the failure is counted, the next notice still goes out),
//! the ping URL, `once` and `notify-test`, and the acceptance: a
//! failed backup reaches a webhook, an SMTP server and ntfy, one message
//! each. The web services are the loopback receiver; e-mail is a real
//! SMTP server (aiosmtpd).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::receiver::{Behaviour, ReceivedRequest, Receiver};
use crate::common::smtp::{SmtpServer, SmtpTls};
use crate::common::*;

/// A guard against a hang, never a measure of speed.
const GUARD: Duration = Duration::from_secs(60);

/// The webhook documents that arrived, by their `event`.
fn events(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn count(receiver: &Receiver, event: &str) -> usize {
    events(receiver).iter().filter(|e| *e == event).count()
}

fn wait_for_event(receiver: &Receiver, event: &str, daemon: &Daemon) -> ReceivedRequest {
    poll(Duration::from_millis(100), GUARD, || {
        receiver
            .requests()
            .into_iter()
            .find(|r| r.json()["event"] == event)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {event} notice within {GUARD:?}; got {:?}\n{}",
            events(receiver),
            daemon.log()
        )
    })
}

fn notifications(port: u16, kind: &str, result: &str) -> f64 {
    let resp = http_get(port, "/metrics");
    assert_eq!(resp.status, 200, "{resp}");
    metric_value(
        &parse_metrics(&resp.body),
        "backupd_notifications_total",
        &[("destination_kind", kind), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Moves the app's database away (every backup fails) and back.
fn hide(db: &Path) {
    std::fs::rename(db, db.with_extension("away")).unwrap();
}

fn unhide(db: &Path) {
    std::fs::rename(db.with_extension("away"), db).unwrap();
}

#[test]
fn the_dead_mans_switch_says_stale_once_and_recovered_once() {
    let app = SqliteApp::small(20);
    hide(&app.db);
    let receiver = Receiver::start(Behaviour::ok());
    let mut daemon = app
        .backupd()
        .env("NOTIFY_URLS", format!("{}/hook", receiver.url()))
        .env("HEALTH_MAX_AGE_SECONDS", "3")
        .env("BACKUP_INTERVAL_SECONDS", "1")
        .env("BACKUP_RETRY_SECONDS", "0")
        .daemon();
    let stale = wait_for_event(&receiver, "stale", &daemon).json();
    assert_eq!(stale["result"], "stale");
    assert_eq!(stale["severity"], "error");
    assert_eq!(stale["database"]["kind"], "sqlite");
    assert_eq!(stale["database"]["name"], "app.db");
    assert!(
        stale["error"].as_str().is_some_and(|e| !e.is_empty()),
        "stale names the last failure: {stale}"
    );
    // Twice the limit more, backups still failing: not said again.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(count(&receiver, "stale"), 1, "{:?}", events(&receiver));
    assert_eq!(count(&receiver, "recovered"), 0);
    assert!(
        count(&receiver, "backup-failed") >= 2,
        "{:?}",
        events(&receiver)
    );

    // A restart while stale does not say it again: the status file remembers.
    let first = daemon.stop_cleanly();
    let status = read_status(&app.status_file());
    assert!(status["stale_since"].is_string(), "{status}\n{first}");
    let mut daemon = app
        .backupd()
        .env("NOTIFY_URLS", format!("{}/hook", receiver.url()))
        .env("HEALTH_MAX_AGE_SECONDS", "3")
        .env("BACKUP_INTERVAL_SECONDS", "1")
        .env("BACKUP_RETRY_SECONDS", "0")
        .daemon();
    daemon.wait_until_serving();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&receiver, "stale"), 1, "{:?}", events(&receiver));

    unhide(&app.db);
    let recovered = wait_for_event(&receiver, "recovered", &daemon).json();
    assert!(
        recovered["file"]
            .as_str()
            .is_some_and(|f| f.starts_with(app.dir.to_str().unwrap())),
        "{recovered}"
    );
    // Backups succeed every second now: neither message comes again, and
    // successes are not sent at NOTIFY_LEVEL=error.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&receiver, "stale"), 1, "{:?}", events(&receiver));
    assert_eq!(count(&receiver, "recovered"), 1, "{:?}", events(&receiver));
    assert_eq!(count(&receiver, "backup-finished"), 0);
    daemon.stop_cleanly();
    assert!(read_status(&app.status_file()).get("stale_since").is_none());
}

#[test]
fn a_hanging_and_a_failing_destination_delay_no_backup_and_are_counted() {
    let app = SqliteApp::small(20);
    let hanging = Receiver::start(Behaviour::Hang);
    let failing = Receiver::start(Behaviour::status(500));
    let mut daemon = app
        .backupd()
        .env(
            "NOTIFY_URLS",
            format!(
                "{}/hook,ntfy://ops:topsecret@{}/backups?scheme=http",
                hanging.url(),
                failing.host_port()
            ),
        )
        .env("NOTIFY_LEVEL", "info")
        .env("NOTIFY_TIMEOUT_SECONDS", "1")
        .env("BACKUP_INTERVAL_SECONDS", "2")
        .daemon();
    daemon.wait_until_serving();
    // The backups go on as if nothing were listening.
    let status_file = app.status_file();
    let backed_up = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        read_status_if_present(&status_file).filter(|s| s["last_backup"].is_string())
    });
    assert!(backed_up.is_some(), "no backup recorded:\n{}", daemon.log());
    // Three attempts each (1 s timeout, 1 s and 4 s apart), then counted.
    let counted = poll(Duration::from_millis(250), GUARD, || {
        (notifications(daemon.port, "webhook", "failed") >= 1.0
            && notifications(daemon.port, "ntfy", "failed") >= 1.0)
            .then_some(())
    });
    assert!(counted.is_some(), "failures not counted:\n{}", daemon.log());
    assert!(failing.requests().len() >= 3, "ntfy was retried");
    let status = read_status(&status_file);
    let error = status["last_notification_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_notification_error: {status}"));
    assert!(
        error.contains("webhook") || error.contains("ntfy"),
        "{error}"
    );
    assert!(!error.contains("topsecret"), "{error}");
    // Meanwhile more backups went through.
    let runs = metric_value(
        &parse_metrics(&http_get(daemon.port, "/metrics").body),
        "backupd_backups_total",
        &[("result", "success")],
    )
    .unwrap_or(0.0);
    assert!(runs >= 2.0, "{runs} backups\n{}", daemon.log());

    // The service is back: the next notice goes out.
    failing.set_behaviour(Behaviour::ok());
    let sent = poll(Duration::from_millis(250), GUARD, || {
        (notifications(daemon.port, "ntfy", "sent") >= 1.0).then_some(())
    });
    assert!(
        sent.is_some(),
        "nothing sent after recovery:\n{}",
        daemon.log()
    );
    let result = daemon.stop_cleanly();
    result.assert_not_shown("topsecret");
}

/// `BACKUP_DIR/.encryption_key` as a folder: unreadable even for root (EISDIR).
#[test]
fn an_unreadable_key_file_is_told_once_by_the_daemon_and_by_once() {
    let app = SqliteApp::small(5);
    std::fs::create_dir_all(app.dir.join(".encryption_key")).unwrap();
    let receiver = Receiver::start(Behaviour::ok());
    let hook = format!("{}/hook", receiver.url());

    let mut daemon = app
        .backupd()
        .env("NOTIFY_URLS", &hook)
        .env("BACKUP_ON_START", "false")
        .daemon();
    let told = wait_for_event(&receiver, "key-unreadable", &daemon).json();
    assert_eq!(told["result"], "failure", "{told}");
    assert_eq!(told["severity"], "error", "{told}");
    assert!(
        told["error"]
            .as_str()
            .is_some_and(|e| e.contains(".encryption_key")),
        "the notice names the key file: {told}"
    );
    daemon.wait_until_serving();
    std::thread::sleep(Duration::from_secs(2));
    let log = daemon.stop_cleanly();
    assert_eq!(
        count(&receiver, "key-unreadable"),
        1,
        "{:?}\n{log}",
        events(&receiver)
    );

    let run = app
        .backupd()
        .env("NOTIFY_URLS", &hook)
        .run_bounded(&["once"], GUARD);
    run.assert_code(1);
    receiver.wait_for_requests(3, GUARD);
    assert_eq!(
        count(&receiver, "key-unreadable"),
        2,
        "{:?}\n{run}",
        events(&receiver)
    );
    assert_eq!(
        count(&receiver, "backup-failed"),
        1,
        "{:?}\n{run}",
        events(&receiver)
    );
}

fn read_status_if_present(path: &Path) -> Option<serde_json::Value> {
    path.exists().then(|| read_status(path))
}

#[test]
fn once_pings_start_and_success_and_posts_the_failure() {
    let app = SqliteApp::small(20);
    let ping = Receiver::start(Behaviour::ok());
    let url = format!("{}/ping/s3cret-uuid", ping.url());
    let done = app
        .backupd()
        .env("BACKUP_PING_URL", &url)
        .run_bounded(&["once"], GUARD);
    done.assert_code(0);
    let got = ping.wait_for_requests(2, GUARD);
    assert_eq!(
        got.iter()
            .map(|r| (r.method.as_str(), r.path.as_str()))
            .collect::<Vec<_>>(),
        [
            ("GET", "/ping/s3cret-uuid/start"),
            ("GET", "/ping/s3cret-uuid")
        ]
    );
    done.assert_not_shown("s3cret");

    hide(&app.db);
    let failed = app
        .backupd()
        .env("BACKUP_PING_URL", &url)
        .run_bounded(&["once"], GUARD);
    failed.assert_code(1);
    let got = ping.wait_for_requests(4, GUARD);
    assert_eq!(got[3].method, "POST");
    assert_eq!(got[3].path, "/ping/s3cret-uuid/fail");
    assert!(got[3].text().contains("app.db"), "{}", got[3]);
    failed.assert_not_shown("s3cret");
}

#[test]
fn once_waits_for_a_hanging_destination_no_longer_than_notify_timeout_seconds() {
    let app = SqliteApp::small(20);
    let hanging = Receiver::start(Behaviour::Hang);
    let started = Instant::now();
    let done = app
        .backupd()
        .env("NOTIFY_URLS", format!("{}/hook", hanging.url()))
        .env("BACKUP_PING_URL", format!("{}/ping/uuid", hanging.url()))
        .env("NOTIFY_LEVEL", "info")
        .env("NOTIFY_TIMEOUT_SECONDS", "2")
        .run_bounded(&["once"], GUARD);
    done.assert_code(0);
    assert!(done.backup_path().is_file());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "once took {:?}",
        started.elapsed()
    );
    assert!(
        done.stderr.contains("NOTIFY_TIMEOUT_SECONDS"),
        "{}",
        done.stderr
    );
    // What was still under way at the exit is written down, masked.
    let status = read_status(&app.status_file());
    let error = status["last_notification_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("still not delivered"), "{status}");
    assert!(
        !error.contains("/ping/uuid") && !error.contains("/hook"),
        "{error}"
    );
}

#[test]
fn a_bad_notify_level_stops_start_up_naming_the_variable() {
    let app = SqliteApp::small(5);
    let done = app
        .backupd()
        .env("NOTIFY_LEVEL", "debug")
        .run_bounded(&["once"], GUARD);
    done.assert_code(2)
        .assert_stderr_mentions(&["NOTIFY_LEVEL"]);
    let done = app
        .backupd()
        .env("BACKUP_PING_URL", "hc-ping.com/s3cret")
        .run_bounded(&["once"], GUARD);
    done.assert_code(2)
        .assert_stderr_mentions(&["BACKUP_PING_URL"])
        .assert_not_shown("s3cret");
}

#[test]
fn notify_test_says_how_each_destination_went() {
    let good = Receiver::start(Behaviour::ok());
    let bad = Receiver::start(Behaviour::status(500));
    let done = Backupd::new()
        .env(
            "NOTIFY_URLS",
            format!(
                "{}/hook,ntfy://{}/backups?scheme=http",
                good.url(),
                bad.host_port()
            ),
        )
        .env("BACKUP_PING_URL", format!("{}/ping/uuid", good.url()))
        .run_bounded(&["notify-test"], GUARD);
    done.assert_code(1);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", done.stdout);
    assert!(lines[0].starts_with("ok  webhook"), "{}", done.stdout);
    assert!(lines[1].starts_with("FAILED ntfy"), "{}", done.stdout);
    assert!(lines[1].contains("500"), "{}", done.stdout);
    assert!(lines[2].starts_with("ok  ping"), "{}", done.stdout);
    let hook = &good.wait_for_requests(2, GUARD);
    let test = hook.iter().find(|r| r.path == "/hook").unwrap().json();
    assert_eq!(test["event"], "test");
    // healthchecks.io's /log: recorded, the check's state unchanged.
    assert!(hook.iter().any(|r| r.path == "/ping/uuid/log"));

    Backupd::new()
        .env("NOTIFY_URLS", format!("{}/hook", good.url()))
        .run_bounded(&["notify-test"], GUARD)
        .assert_code(0);
    Backupd::new()
        .run_bounded(&["notify-test"], GUARD)
        .assert_code(2)
        .assert_stderr_mentions(&["NOTIFY_URLS"]);
}

/// The acceptance: NOTIFY_URLS naming a webhook, an SMTP server and
/// ntfy; a failed backup yields one message on each, within seconds.
#[test]
fn a_failed_backup_reaches_a_webhook_an_smtp_server_and_ntfy_once_each() {
    let Some(smtp) = SmtpServer::start(SmtpTls::None, None) else {
        return;
    };
    let webhook = Receiver::start(Behaviour::ok());
    let ntfy = Receiver::start(Behaviour::ok());
    let app = SqliteApp::small(20);
    hide(&app.db);
    let started = Instant::now();
    let done = app
        .backupd()
        .env(
            "NOTIFY_URLS",
            format!(
                "{}/hook,smtp://127.0.0.1:{}/?from=backupd@example.com&to=ops@example.com&starttls=no,ntfy://{}/backups?scheme=http",
                webhook.url(),
                smtp.port(),
                ntfy.host_port()
            ),
        )
        .run_bounded(&["once"], GUARD);
    done.assert_code(1);
    let hooks = webhook.wait_for_requests(1, Duration::from_secs(30));
    let pushed = ntfy.wait_for_requests(1, Duration::from_secs(30));
    let mails = poll(Duration::from_millis(100), Duration::from_secs(30), || {
        Some(smtp.messages()).filter(|m| !m.is_empty())
    })
    .unwrap_or_else(|| panic!("no mail:\n{}\n{}", done.stderr, smtp.log()));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Once each: `once` has exited, nothing more can come.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook.requests().len(), 1);
    assert_eq!(ntfy.requests().len(), 1);
    assert_eq!(smtp.messages().len(), 1);

    let json = hooks[0].json();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["event"], "backup-failed");
    assert_eq!(json["result"], "failure");
    assert!(json["error"].as_str().unwrap().contains("app.db"), "{json}");
    assert!(pushed[0].text().contains("app.db"), "{}", pushed[0]);
    let subject = mails[0].header("Subject").unwrap_or_default();
    assert!(subject.contains("backup failed"), "{subject}");
}

/// A one-shot restore tells of its start, its end or its failure (and where
/// the file went), and keeps an undelivered notice in its own state file.
#[test]
fn a_restore_is_told_and_an_undelivered_notice_lands_in_the_restore_state_file() {
    let work = temp_dir();
    let db = work.path().join("app/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    sqlite_small(&db, 5);
    let source = work.path().join("made/source.db");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    sqlite_small(&source, 9);
    let good = Backupd::for_database(sqlite_url(&source), &work.path().join("made"))
        .once()
        .backup_path();
    let state_file = work.path().join("restore/state/restore-state.json");
    let receiver = Receiver::start(Behaviour::ok());
    let restore = |urls: String| {
        Backupd::for_database(sqlite_url(&db), &work.path().join("backups"))
            .env("RESTORE_WATCH_DIR", work.path().join("restore/incoming"))
            .env("RESTORE_STATE_FILE", &state_file)
            .env("RESTORE_SQLITE_PATH", &db)
            .env("RESTORE_SAFETY_BACKUP", "false")
            .env("NOTIFY_URLS", urls)
            .env("NOTIFY_LEVEL", "info")
            .env("NOTIFY_TIMEOUT_SECONDS", "1")
    };
    let hook = format!("{}/hook", receiver.url());
    restore(hook.clone())
        .run_bounded(&["restore", "--file", good.to_str().unwrap()], GUARD)
        .assert_code(0);
    assert_eq!(events(&receiver), ["restore-started", "restore-finished"]);

    let garbage = work.path().join("given/app.db.gz");
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, b"not a gzip stream").unwrap();
    restore(hook)
        .run_bounded(&["restore", "--file", garbage.to_str().unwrap()], GUARD)
        .assert_code(1);
    let failed = receiver
        .requests()
        .into_iter()
        .map(|r| r.json())
        .find(|j| j["event"] == "restore-failed")
        .unwrap_or_else(|| panic!("{:?}", events(&receiver)));
    assert_eq!(failed["severity"], "error");
    assert!(failed["error"].is_string(), "{failed}");
    assert!(
        failed["text"]
            .as_str()
            .unwrap()
            .contains("left where it is"),
        "{failed}"
    );
    assert!(garbage.exists(), "a --file stays where it is");

    let hanging = Receiver::start(Behaviour::Hang);
    restore(format!("{}/s3cret-hook", hanging.url()))
        .run_bounded(&["restore", "--file", good.to_str().unwrap()], GUARD)
        .assert_code(0);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let error = state["last_notification_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_notification_error: {state}"));
    assert!(error.contains("webhook http://127.0.0.1"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
    assert!(
        state["history"].as_array().is_some_and(|h| h.len() == 3),
        "{state}"
    );
}
