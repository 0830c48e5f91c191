//! The status server under abuse, as an attacker on the network (or the app
//! that can write `BACKUP_DIR`) would try it: hundreds of connections that
//! never finish their headers do not starve the scheduled backup or
//! `/healthz`; a status file linked to `/proc/self/environ` (or to another
//! file) is never served; `STATUS_TOKEN` guards `/status` and `/metrics`
//! but not `/healthz`; the binary listens on loopback unless told
//! otherwise; and a backup that cannot even start is recorded and makes
//! `/healthz` unhealthy (from memory when not even the status file can be
//! written). Descriptor shortage is real: `prlimit` on the running daemon.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

const GIVE_UP: Duration = Duration::from_secs(60);

/// The descriptors the process `pid` holds now.
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Polls `GET target` until it answers `code` at all (connections may be
/// refused meanwhile); panics with the log after [`GIVE_UP`].
fn wait_for_answer(daemon: &Daemon, target: &str, code: u16) -> HttpResponse {
    let mut last = String::new();
    poll(Duration::from_millis(200), GIVE_UP, || {
        match http_request(daemon.port, "GET", target) {
            Ok(resp) if resp.status == code => Some(resp),
            Ok(resp) => {
                last = resp.to_string();
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "GET {target} never answered {code}; last: {last}\nlog:\n{}",
            daemon.log()
        )
    })
}

/// The status file's `last_backup`, once a backup has succeeded.
fn last_backup(status_file: &Path) -> Option<String> {
    std::fs::read(status_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|json| json["last_backup"].as_str().map(String::from))
}

#[test]
fn three_hundred_idle_connections_neither_stop_the_schedule_nor_healthz() {
    let Some(_) = require_program("prlimit") else {
        return;
    };
    let app = SqliteApp::small(100);
    let mut daemon = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "2")
        .env("BACKUP_RETENTION_DAYS", "0")
        .daemon();
    daemon.wait_until_serving();

    // The failure, made small: a descriptor limit that 300 held
    // connections would exhaust, but the connection cap (64) does not.
    let baseline = open_descriptors(daemon.pid());
    let limit = baseline + 64 + 40;
    run_ok(
        std::process::Command::new("prlimit")
            .arg(format!("--pid={}", daemon.pid()))
            .arg(format!("--nofile={limit}:")),
    );

    // (Before the cap, the daemon ran out of descriptors, stopped accepting
    // and these connects hung in the full backlog.)
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], daemon.port));
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}\n{}", daemon.log()));
            if i % 2 == 1 {
                // A request head that never ends (slowloris).
                let _ = stream.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n");
            }
            stream
        })
        .collect();
    let held = open_descriptors(daemon.pid());
    println!("descriptors: {baseline} before, {held} with 300 idle connections, limit {limit}");
    assert!(
        held <= baseline + 64 + 8,
        "300 idle connections hold {held} descriptors (before: {baseline}); the cap is 64:\n{}",
        daemon.log()
    );

    let backed_up = poll(Duration::from_millis(200), GIVE_UP, || {
        last_backup(&app.status_file())
    });
    assert!(
        backed_up.is_some(),
        "no scheduled backup ran while 300 connections were idle:\n{}",
        daemon.log()
    );
    assert!(!backup_files(&app.dir).is_empty());
    let health = wait_for_answer(&daemon, "/healthz", 200);
    assert_eq!(health.json()["status"], "ok", "{health}");

    // Every idle connection was closed by the server (header timeout, or at
    // once when over the cap): reading ends instead of waiting forever.
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("an idle connection was not closed by the server: {e}"),
        }
    }
    drop(idle);
    assert!(
        !daemon.log().contains("Too many open files"),
        "{}",
        daemon.log()
    );
    daemon.stop_cleanly();
}

/// Puts something other than backupd's own file at the status file's path.
type Plant<'a> = dyn Fn(&Path) + 'a;

#[test]
fn a_status_file_linked_elsewhere_is_never_served() {
    let app = SqliteApp::small(10);
    let environ_marker = "environ-secret-4711";
    let json_marker = "json-secret-0815";
    let mut daemon = app
        .backupd()
        .env("PLANTED_SECRET", environ_marker)
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .daemon();
    daemon.wait_until_serving();

    // A perfectly fresh, valid status with a secret beside it: followed, it
    // would be served and would even make /healthz green.
    let secret_json = app.work.path().join("secret.json");
    std::fs::write(
        &secret_json,
        serde_json::json!({
            "last_backup": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "aws_secret_access_key": json_marker,
        })
        .to_string(),
    )
    .unwrap();
    let status_file = app.status_file();
    std::fs::create_dir_all(&app.dir).unwrap();
    let plant: Vec<(&str, Box<Plant<'_>>)> = vec![
        (
            "a symlink to /proc/self/environ",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/proc/self/environ", p).unwrap()),
        ),
        (
            "a symlink to a JSON file with a secret",
            Box::new(|p: &Path| std::os::unix::fs::symlink(&secret_json, p).unwrap()),
        ),
        (
            "a hard link to a JSON file with a secret",
            Box::new(|p: &Path| std::fs::hard_link(&secret_json, p).unwrap()),
        ),
        (
            "a FIFO nobody writes",
            Box::new(|p: &Path| {
                run_ok(std::process::Command::new("mkfifo").arg(p));
            }),
        ),
    ];
    for (what, make) in &plant {
        let _ = std::fs::remove_file(&status_file);
        make(&status_file);
        for target in ["/status", "/", "/healthz"] {
            let resp = http_get(daemon.port, target);
            assert!(
                resp.status == 500 || resp.status == 503,
                "GET {target} with {what} as the status file:\n{resp}"
            );
            let json = resp.json();
            assert!(
                json.get("error").is_some() || json.get("reason").is_some(),
                "GET {target} with {what}: the JSON error says nothing:\n{resp}"
            );
            for marker in [environ_marker, json_marker] {
                assert!(
                    !resp.body.contains(marker),
                    "GET {target} served {what}:\n{resp}"
                );
            }
        }
    }
    let log = daemon.log();
    assert!(log.contains("refused the status file"), "{log}");
    assert!(
        !log.contains(environ_marker) && !log.contains(json_marker),
        "{log}"
    );
    daemon.stop_cleanly();
}

#[test]
fn status_token_guards_status_and_metrics_but_not_healthz() {
    let app = SqliteApp::small(10);
    let token = "status-token-31337";
    let token_file = app.work.path().join("status_token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let backupd = app
        .backupd()
        .env("STATUS_TOKEN_FILE", &token_file)
        .env("BACKUP_INTERVAL_SECONDS", "3600");
    let mut daemon = backupd.daemon();
    daemon.wait_until_serving();
    assert!(
        poll(Duration::from_millis(100), GIVE_UP, || last_backup(
            &app.status_file()
        ))
        .is_some(),
        "{}",
        daemon.log()
    );

    let right = format!("Bearer {token}");
    for target in ["/status", "/", "/metrics"] {
        for (what, headers) in [
            ("no Authorization", vec![]),
            (
                "a wrong token",
                vec![("Authorization", "Bearer wrong-token")],
            ),
            ("the token as Basic", vec![("Authorization", token)]),
        ] {
            let resp = http_request_with(daemon.port, "GET", target, &headers).unwrap();
            assert_eq!(resp.status, 401, "GET {target} with {what}:\n{resp}");
            assert!(
                resp.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "GET {target} with {what}: no WWW-Authenticate: Bearer:\n{resp}"
            );
            assert!(!resp.body.contains("last_backup"), "{resp}");
        }
        let resp =
            http_request_with(daemon.port, "GET", target, &[("Authorization", &right)]).unwrap();
        assert_eq!(resp.status, 200, "GET {target} with the token:\n{resp}");
    }
    let resp =
        http_request_with(daemon.port, "GET", "/status", &[("Authorization", &right)]).unwrap();
    assert_eq!(resp.json(), read_status(&app.status_file()));

    let health = http_get(daemon.port, "/healthz");
    assert_eq!(health.status, 200, "/healthz needs no token:\n{health}");

    // `backupd healthcheck` reads the status file, not HTTP: the token
    // changes nothing for Docker's HEALTHCHECK.
    backupd.run(&["healthcheck"]).assert_code(0);

    let run = daemon.stop_cleanly();
    run.assert_not_shown(token);

    // An empty token file is a configuration error, never an open server.
    std::fs::write(&token_file, "\n").unwrap();
    let run = backupd
        .clone()
        .env("STATUS_PORT", free_port().to_string())
        .run_bounded(&["backup"], Duration::from_secs(30));
    run.assert_code(2)
        .assert_stderr_mentions(&["STATUS_TOKEN_FILE"]);
}

#[test]
fn the_status_server_listens_on_loopback_by_default() {
    let app = SqliteApp::small(10);
    let port = free_port();
    // Not `daemon()`: that sets STATUS_BIND; this run leaves it unset.
    let mut daemon = app
        .backupd()
        .env("STATUS_PORT", port.to_string())
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "3600")
        .background(&["backup"]);
    assert!(
        daemon.wait_for_log(Duration::from_secs(20), |log| log
            .contains("status server listening")),
        "{}",
        daemon.log()
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("status server listening"))
        .unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(wait_for_http(port, Duration::from_secs(15)), "{log}");

    // This host's own outward address (a UDP "connect" sends nothing) must
    // not reach the server.
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    match outward {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => {
            let reached = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5));
            assert!(
                reached.is_err(),
                "the status server answers on {ip}:{port} without STATUS_BIND"
            );
        }
        other => println!("no non-loopback address to try ({other:?}); checked the log only"),
    }
    daemon.terminate(Duration::from_secs(15)).assert_code(0);
}

#[test]
fn a_backup_that_cannot_start_is_recorded_and_makes_healthz_unhealthy() {
    let app = SqliteApp::small(10);
    let backupd = app
        .backupd()
        .env("BACKUP_INTERVAL_SECONDS", "2")
        .env("BACKUP_RETRY_SECONDS", "0")
        .env("BACKUP_RETENTION_DAYS", "0");
    let mut daemon = backupd.daemon();
    daemon.wait_until_serving();
    wait_for_answer(&daemon, "/healthz", 200);
    let first = last_backup(&app.status_file()).unwrap();

    // The lock file becomes a directory: every run now fails before its
    // dump can begin, as it did with EMFILE.
    let lock = app.dir.join(".backupd.lock");
    let _ = std::fs::remove_file(&lock);
    std::fs::create_dir(&lock).unwrap();
    let resp = wait_for_answer(&daemon, "/healthz", 503);
    let reason = resp.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("could not start") && reason.contains(".backupd.lock"),
        "{resp}"
    );
    let status = read_status(&app.status_file());
    assert!(
        status["start_error"]
            .as_str()
            .is_some_and(|e| e.contains(".backupd.lock")),
        "{status:#}"
    );
    assert!(status["last_error"].is_string(), "{status:#}");
    assert!(
        status["last_attempt"].as_str().unwrap() >= first.as_str(),
        "{status:#}"
    );
    assert_eq!(status["last_backup"].as_str(), Some(first.as_str()));
    backupd
        .run(&["healthcheck"])
        .assert_code(1)
        .assert_stderr_mentions(&["could not start"]);

    // Once the cause is gone, the next scheduled run heals it.
    std::fs::remove_dir(&lock).unwrap();
    wait_for_answer(&daemon, "/healthz", 200);
    assert!(read_status(&app.status_file())["start_error"].is_null());
    daemon.stop_cleanly();
}

#[test]
fn a_run_without_descriptors_is_unhealthy_even_when_the_status_file_cannot_be_written() {
    let Some(_) = require_program("prlimit") else {
        return;
    };
    let app = SqliteApp::small(10);
    let mut daemon = app
        .backupd()
        .env("BACKUP_ON_START", "false")
        .env("BACKUP_INTERVAL_SECONDS", "20")
        .env("BACKUP_RETRY_SECONDS", "0")
        .daemon();
    daemon.wait_until_serving();

    // No descriptor left for anything new: the next run can neither open
    // its lock or backup file nor write the status file (EMFILE).
    let prlimit = |soft: &str| {
        run_ok(
            std::process::Command::new("prlimit")
                .arg(format!("--pid={}", daemon.pid()))
                .arg(format!("--nofile={soft}:")),
        )
    };
    let original = run_ok(
        std::process::Command::new("prlimit")
            .arg(format!("--pid={}", daemon.pid()))
            .args(["--nofile", "--output=SOFT", "--noheadings"]),
    );
    prlimit(&open_descriptors(daemon.pid()).to_string());
    assert!(
        daemon.wait_for_log(GIVE_UP, |log| log
            .contains("could not record this run in the status file")),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("the backup could not start"));
    prlimit(original.trim());

    // The status file says nothing (it could not be written); memory does,
    // until the next run (20 s later).
    let resp = http_get(daemon.port, "/healthz");
    assert_eq!(resp.status, 503, "{resp}");
    let reason = resp.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("could not start") && reason.contains("Too many open files"),
        "{resp}"
    );
    daemon.stop_cleanly();
}
