//! The daemon's HTTP server: `/` and `/status` serve the status JSON,
//! `/healthz` says whether the last successful backup is recent enough,
//! `/metrics` is Prometheus/OpenMetrics text. Nothing else is served: other
//! paths are 404, other methods 405, and no path reaches a file.

use crate::common;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use common::*;

const GIVE_UP: Duration = Duration::from_secs(20);

/// Every metric the contract names, with the labels that select the sample.
const REQUIRED_METRICS: &[(&str, &[(&str, &str)])] = &[
    ("backupd_last_success_timestamp_seconds", &[]),
    ("backupd_last_attempt_timestamp_seconds", &[]),
    ("backupd_last_duration_seconds", &[]),
    ("backupd_last_size_bytes", &[]),
    ("backupd_backups_total", &[("result", "success")]),
    ("backupd_backups_total", &[("result", "failure")]),
    ("backupd_retention_deleted_total", &[]),
    ("backupd_next_run_timestamp_seconds", &[]),
    ("backupd_build_info", &[]),
];

fn assert_json_content_type(resp: &HttpResponse, what: &str) {
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "{what}: content-type `{ct}` is not application/json:\n{resp}"
    );
}

/// `GET /metrics`: 200, a metrics content type, every line parses.
fn scrape(port: u16) -> Vec<Sample> {
    let resp = http_get(port, "/metrics");
    assert_eq!(resp.status, 200, "GET /metrics:\n{resp}");
    let ct = resp
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"),
        "GET /metrics: content-type `{ct}` is neither OpenMetrics nor Prometheus text:\n{resp}"
    );
    parse_metrics(&resp.body)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the metrics:\n{samples:#?}"))
}

fn assert_required_metrics(samples: &[Sample]) {
    for (name, labels) in REQUIRED_METRICS {
        value(samples, name, labels);
    }
    let info = samples
        .iter()
        .find(|s| s.name == "backupd_build_info")
        .unwrap();
    assert_eq!(
        info.labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "backupd_build_info must carry the version label: {info:?}"
    );
    assert_eq!(info.value, 1.0, "backupd_build_info: {info:?}");
}

/// Polls `GET target` until its status is `code`; returns that response.
fn wait_for_code(daemon: &Daemon, target: &str, code: u16) -> HttpResponse {
    let mut last = None;
    let got = poll(Duration::from_millis(100), GIVE_UP, || {
        let resp = http_get(daemon.port, target);
        let done = resp.status == code;
        last = Some(resp.clone());
        done.then_some(resp)
    });
    got.unwrap_or_else(|| {
        panic!(
            "GET {target} never returned {code}; last response:\n{}\nlog:\n{}",
            last.map(|r| r.to_string()).unwrap_or_default(),
            daemon.log()
        )
    })
}

/// `GET target` returns 200 with the status file's JSON (polled, since a
/// backup may rewrite the file between the request and the read).
fn assert_serves_status_file(daemon: &Daemon, target: &str, status_file: &Path) {
    let mut last = None;
    let same = poll(Duration::from_millis(100), Duration::from_secs(10), || {
        let resp = http_get(daemon.port, target);
        let file = read_status(status_file);
        let same = resp.status == 200 && serde_json::from_str(&resp.body).ok() == Some(file);
        last = Some(resp);
        same.then_some(())
    });
    let resp = last.unwrap();
    assert!(
        same.is_some(),
        "GET {target} does not serve the status file {}:\n{resp}\nfile:\n{:#}",
        status_file.display(),
        read_status(status_file)
    );
    assert_json_content_type(&resp, &format!("GET {target}"));
    let json = resp.json();
    for key in STATUS_KEYS {
        assert!(
            json.get(key).is_some(),
            "GET {target} lacks `{key}`:\n{resp}"
        );
    }
}

/// A 503 from /healthz with a JSON body holding a non-empty `reason`.
fn assert_unhealthy(resp: &HttpResponse, why: &str) -> String {
    assert_eq!(resp.status, 503, "GET /healthz ({why}):\n{resp}");
    assert_json_content_type(resp, "GET /healthz");
    let reason = resp.json()["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("the 503 body has no `reason` string ({why}):\n{resp}"))
        .to_string();
    assert!(!reason.trim().is_empty(), "empty reason ({why}):\n{resp}");
    reason
}

#[test]
fn status_is_404_until_the_first_backup_and_then_the_status_json() {
    let app = SqliteApp::new(1);
    let cfg = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "3600");
    let mut daemon = cfg.daemon();
    daemon.wait_until_serving();

    for target in ["/status", "/"] {
        let resp = http_get(daemon.port, target);
        assert_eq!(
            resp.status, 404,
            "GET {target} before any backup (no status file yet):\n{resp}"
        );
    }
    assert_unhealthy(
        &http_get(daemon.port, "/healthz"),
        "no backup has ever succeeded",
    );
    let samples = scrape(daemon.port);
    for (name, labels) in REQUIRED_METRICS {
        if name.starts_with("backupd_backups_total")
            || *name == "backupd_build_info"
            || *name == "backupd_next_run_timestamp_seconds"
        {
            value(&samples, name, labels);
        }
    }
    assert_eq!(
        value(&samples, "backupd_backups_total", &[("result", "success")]),
        0.0
    );

    // `backupd once` in the same BACKUP_DIR writes the status file the
    // daemon serves.
    let once = cfg.run_bounded(&["once"], Duration::from_secs(60));
    let backup = once.backup_path();
    wait_for_code(&daemon, "/status", 200);
    assert_serves_status_file(&daemon, "/status", &app.status_file());
    assert_serves_status_file(&daemon, "/", &app.status_file());
    assert_eq!(
        http_get(daemon.port, "/status").json()["last_file"].as_str(),
        Some(backup.to_str().unwrap())
    );
    let healthz = http_get(daemon.port, "/healthz");
    assert_eq!(
        healthz.status, 200,
        "GET /healthz after a backup:\n{healthz}"
    );
    assert_json_content_type(&healthz, "GET /healthz");
    healthz.json();

    daemon.stop_cleanly();
}

#[test]
fn status_healthz_and_metrics_while_the_daemon_backs_up() {
    let app = SqliteApp::new(1);
    let before = Utc::now().timestamp() as f64;
    let mut daemon = app.backupd().env("BACKUP_INTERVAL_SECONDS", "2").daemon();
    daemon.wait_until_serving();

    wait_for_code(&daemon, "/status", 200);
    assert_serves_status_file(&daemon, "/status", &app.status_file());
    assert_serves_status_file(&daemon, "/", &app.status_file());

    let healthz = http_get(daemon.port, "/healthz");
    assert_eq!(healthz.status, 200, "GET /healthz when fresh:\n{healthz}");
    assert_json_content_type(&healthz, "GET /healthz");
    assert!(healthz.json().is_object(), "{healthz}");

    let first = scrape(daemon.port);
    assert_required_metrics(&first);
    let now = Utc::now().timestamp() as f64;
    let success = value(&first, "backupd_backups_total", &[("result", "success")]);
    assert!(success >= 1.0, "a backup succeeded: {first:#?}");
    assert_eq!(
        value(&first, "backupd_backups_total", &[("result", "failure")]),
        0.0
    );
    let last_success = value(&first, "backupd_last_success_timestamp_seconds", &[]);
    assert!(
        last_success >= before - 2.0 && last_success <= now + 2.0,
        "backupd_last_success_timestamp_seconds {last_success} is not between the start \
         ({before}) and now ({now})"
    );
    let last_attempt = value(&first, "backupd_last_attempt_timestamp_seconds", &[]);
    assert!(
        last_attempt >= before - 2.0 && last_attempt <= now + 2.0,
        "backupd_last_attempt_timestamp_seconds {last_attempt}"
    );
    assert!(value(&first, "backupd_last_duration_seconds", &[]) >= 0.0);
    assert!(value(&first, "backupd_last_size_bytes", &[]) > 0.0);
    let next_run = value(&first, "backupd_next_run_timestamp_seconds", &[]);
    assert!(
        next_run >= before && next_run <= now + 3600.0,
        "backupd_next_run_timestamp_seconds {next_run} with a 2 s interval (now {now})"
    );

    // More backups: the counters rise, the timestamps move on.
    let mut later = Vec::new();
    let rose = poll(Duration::from_millis(200), GIVE_UP, || {
        later = scrape(daemon.port);
        (value(&later, "backupd_backups_total", &[("result", "success")]) >= success + 2.0)
            .then_some(())
    });
    assert!(
        rose.is_some(),
        "backupd_backups_total{{result=\"success\"}} did not rise from {success} by 2 \
         in {GIVE_UP:?} with a 2 s interval:\n{later:#?}\nlog:\n{}",
        daemon.log()
    );
    assert_required_metrics(&later);
    assert!(
        value(&later, "backupd_last_success_timestamp_seconds", &[]) > last_success,
        "backupd_last_success_timestamp_seconds did not move on"
    );
    assert!(value(&later, "backupd_last_attempt_timestamp_seconds", &[]) > last_attempt);
    assert!(
        value(&later, "backupd_retention_deleted_total", &[])
            >= value(&first, "backupd_retention_deleted_total", &[])
    );
    assert_eq!(
        value(&later, "backupd_backups_total", &[("result", "failure")]),
        0.0
    );

    daemon.stop_cleanly();
}

#[test]
fn failed_backups_count_as_failures_and_healthz_gives_the_reason() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let (_work, dir) = temp_backup_dir();
    let port = free_port(); // nothing listens there
    let mut daemon = Backupd::for_database(
        format!("postgresql+psycopg://app:down-pw-31@127.0.0.1:{port}/appdb"),
        &dir,
    )
    .path_prepend(&bin)
    .env("DB_STARTUP_TIMEOUT", "1")
    .env("BACKUP_INTERVAL_SECONDS", "2")
    .env("BACKUP_RETRY_SECONDS", "0")
    .daemon();
    daemon.wait_until_serving();

    let mut samples = Vec::new();
    let failed = poll(Duration::from_millis(200), Duration::from_secs(30), || {
        samples = scrape(daemon.port);
        (metric_value(&samples, "backupd_backups_total", &[("result", "failure")])
            .is_some_and(|v| v >= 2.0))
        .then_some(())
    });
    assert!(
        failed.is_some(),
        "backupd_backups_total{{result=\"failure\"}} did not reach 2:\n{samples:#?}\nlog:\n{}",
        daemon.log()
    );
    // Before any success the last_success/size/duration gauges may be absent;
    // the rest must be there.
    for name in [
        "backupd_last_attempt_timestamp_seconds",
        "backupd_retention_deleted_total",
        "backupd_next_run_timestamp_seconds",
        "backupd_build_info",
    ] {
        value(&samples, name, &[]);
    }
    assert_eq!(
        value(&samples, "backupd_backups_total", &[("result", "success")]),
        0.0
    );
    let reason = assert_unhealthy(&http_get(daemon.port, "/healthz"), "every backup failed");
    assert!(!reason.contains("down-pw-31"), "the password in the reason");

    let run = daemon.stop_cleanly();
    run.assert_not_shown("down-pw-31");
    assert!(
        run.stderr.contains("backup failed"),
        "no `backup failed` log line:\n{run}"
    );
    assert!(backup_files(&dir).is_empty(), "{:?}", dir_names(&dir));
}

#[test]
fn only_the_four_paths_with_get_are_served_and_no_path_reaches_a_file() {
    let app = SqliteApp::new(1);
    // A status file with a marker, so a path that reached it would show.
    let marker = "marker-9f27c1-do-not-serve";
    let mut status = write_status_file(&app.status_file(), Some(Utc::now()), None);
    status["marker"] = marker.into();
    std::fs::write(app.status_file(), status.to_string()).unwrap();
    // The working directory holds Cargo.toml, so `/../Cargo.toml` or
    // `/Cargo.toml` would find it in a server that maps paths to files.
    let mut daemon = app
        .backupd()
        .current_dir(manifest_dir())
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .daemon();
    daemon.wait_until_serving();
    assert_eq!(http_get(daemon.port, "/status").status, 200);

    let leaks = |resp: &HttpResponse| {
        resp.body.contains("[package]") || resp.body.contains("root:") || resp.body.contains(marker)
    };
    for target in [
        "/nope",
        "/status/",
        "/status/extra",
        "/healthz/x",
        "/metricsx",
        "/index.html",
        "/favicon.ico",
        "/Cargo.toml",
        "/../Cargo.toml",
        "/../../../../etc/passwd",
        "/backup-status.json",
        "/etc/passwd",
        "//etc/passwd",
        "/%2e%2e/Cargo.toml",
        "/%2e%2e%2fCargo.toml",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/status/../Cargo.toml",
        "/status/..%2f..%2fCargo.toml",
    ] {
        let resp = http_request(daemon.port, "GET", target)
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(resp.status, 404, "GET {target}:\n{resp}");
        assert!(!leaks(&resp), "GET {target} serves file contents:\n{resp}");
    }
    for target in ["/", "/status", "/healthz", "/metrics"] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let resp = http_request(daemon.port, method, target)
                .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
            assert_eq!(resp.status, 405, "{method} {target}:\n{resp}");
            assert!(!resp.body.contains(marker), "{method} {target}:\n{resp}");
        }
    }
    // Still serving after all that.
    assert_eq!(http_get(daemon.port, "/healthz").status, 200);

    daemon.stop_cleanly();
}

#[test]
fn healthz_is_503_once_the_last_backup_is_older_than_the_max_age() {
    let app = SqliteApp::new(1);
    let cfg = app
        .backupd()
        .env("HEALTH_MAX_AGE_SECONDS", "1")
        .env("BACKUP_INTERVAL_SECONDS", "3600");
    let mut daemon = cfg.daemon();
    daemon.wait_until_serving();
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| log.contains("backup finished")),
        "the start-up backup did not finish:\n{}",
        daemon.log()
    );
    // Let the backup age past HEALTH_MAX_AGE_SECONDS=1.
    std::thread::sleep(Duration::from_millis(2500));
    assert_unhealthy(
        &http_get(daemon.port, "/healthz"),
        "the last backup is older than HEALTH_MAX_AGE_SECONDS=1",
    );
    // The status itself is still served.
    assert_eq!(http_get(daemon.port, "/status").status, 200);

    // `backupd healthcheck` agrees with the same settings, and with the
    // default max age the same backup is healthy.
    let check = cfg.run_bounded(&["healthcheck"], Duration::from_secs(30));
    check.assert_code(1);
    let check = app
        .backupd()
        .run_bounded(&["healthcheck"], Duration::from_secs(30));
    check.assert_code(0);

    daemon.stop_cleanly();
}
