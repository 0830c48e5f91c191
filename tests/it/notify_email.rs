//! E-mail notices against a real SMTP server on loopback (aiosmtpd): a
//! plain relay, STARTTLS with AUTH, TLS from the first byte; a server
//! without STARTTLS is refused when STARTTLS is required, an untrusted
//! certificate is refused, a wrong password is named as such, and the
//! password appears in no message and no error.
//!
//! TLS trust comes the operator's way: `SSL_CERT_FILE` naming the server's
//! throwaway CA. The environment of this process is shared by every test in
//! it, so a TLS delivery runs in a fresh run of this test binary started
//! with `SSL_CERT_FILE` set ([`deliver_trusting`]).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use backupd::notify::Notice;
use backupd::notify::Severity;
use backupd::notify::destination::{SmtpDestination, SmtpSecurity, UrlSecret};
use backupd::notify::send::smtp::deliver;
use chrono::{TimeZone, Utc};
use common::smtp::{ReceivedMail, SmtpServer, SmtpTls};

const USER: &str = "alerts";
const PASSWORD: &str = "pa55-w0rd-never-shown";
const FROM: &str = "backupd@example.org";
const TO: [&str; 2] = ["ops@example.org", "oncall@example.net"];
const TITLE: &str = "backup failed on db-backup (postgresql app)";
const ERROR: &str = "pg_dump exited with status 1: connection refused";
const TIMEOUT: Duration = Duration::from_secs(20);

fn failed_backup() -> Notice {
    Notice {
        event: "backup-failed".into(),
        result: "failure",
        severity: Severity::Error,
        title: TITLE.into(),
        text: "The backup of postgresql app failed; the previous backups are kept.".into(),
        database_kind: "postgresql",
        database_name: "app".into(),
        file: None,
        size_bytes: None,
        sha256: None,
        duration_seconds: Some(1.5),
        error: Some(ERROR.into()),
        host: "db-backup".into(),
        version: env!("CARGO_PKG_VERSION"),
        time: Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap(),
    }
}

fn destination(
    host: &str,
    server: &SmtpServer,
    security: SmtpSecurity,
    password: Option<&str>,
) -> SmtpDestination {
    SmtpDestination {
        host: host.into(),
        port: server.port(),
        auth: password.map(|p| (USER.to_string(), UrlSecret(p.to_string()))),
        from: FROM.into(),
        to: TO.iter().map(|t| t.to_string()).collect(),
        security,
    }
}

/// The one message `server` received, checked against [`failed_backup`].
fn assert_one_notice(server: &SmtpServer) -> ReceivedMail {
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{}", server.log());
    let mail = messages.into_iter().next().unwrap();
    assert_eq!(mail.mail_from, FROM);
    assert_eq!(mail.rcpt_tos, TO);
    assert_eq!(mail.header("From").as_deref(), Some(FROM));
    assert_eq!(
        mail.header("To").as_deref(),
        Some("ops@example.org, oncall@example.net")
    );
    assert_eq!(mail.header("Subject").as_deref(), Some(TITLE));
    assert!(mail.header("Date").is_some(), "{}", mail.data);
    assert!(mail.header("Message-ID").is_some(), "{}", mail.data);
    let body = mail.body();
    assert!(
        body.starts_with("The backup of postgresql app failed"),
        "{body}"
    );
    assert!(body.contains("\nevent: backup-failed\n"), "{body}");
    assert!(body.contains(&format!("\nerror: {ERROR}\n")), "{body}");
    assert!(body.contains("\nhost: db-backup\n"), "{body}");
    assert!(!mail.data.contains(PASSWORD), "{}", mail.data);
    mail
}

const CHILD_ENV: &str = "BACKUPD_TEST_SMTP_CHILD";

/// Delivers [`failed_backup`] to `destination` from a fresh run of this test
/// binary ([`delivery_child`]) whose environment holds `SSL_CERT_FILE=ca`
/// from its start; the delivery's error when it fails.
fn deliver_trusting(ca: &Path, destination: &SmtpDestination) -> Result<(), String> {
    let spec = serde_json::json!({
        "host": destination.host,
        "port": destination.port,
        "security": format!("{:?}", destination.security),
        "auth": destination.auth.as_ref().map(|(u, p)| [u.as_str(), p.expose()]),
        "from": destination.from,
        "to": destination.to,
    });
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "notify_email::delivery_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, spec.to_string())
        .env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let outcome = stdout
        .lines()
        .find_map(|l| l.strip_prefix("delivery: "))
        .unwrap_or_else(|| panic!("the child said nothing: {}\n{stdout}\n{stderr}", out.status));
    match outcome.strip_prefix("failed: ") {
        None if outcome == "ok" => Ok(()),
        None => panic!("unexpected child outcome {outcome:?}"),
        Some(err) => Err(err.to_string()),
    }
}

#[tokio::test]
#[ignore = "run by deliver_trusting, in a child whose environment holds SSL_CERT_FILE"]
async fn delivery_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let text = |key: &str| spec[key].as_str().unwrap().to_string();
    let destination = SmtpDestination {
        host: text("host"),
        port: spec["port"].as_u64().unwrap() as u16,
        auth: spec["auth"].as_array().map(|pair| {
            (
                pair[0].as_str().unwrap().to_string(),
                UrlSecret(pair[1].as_str().unwrap().to_string()),
            )
        }),
        from: text("from"),
        to: spec["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        security: match text("security").as_str() {
            "Tls" => SmtpSecurity::Tls,
            "StartTls" => SmtpSecurity::StartTls,
            "Plain" => SmtpSecurity::Plain,
            other => panic!("security {other}"),
        },
    };
    match deliver(&destination, &failed_backup(), TIMEOUT).await {
        Ok(()) => println!("delivery: ok"),
        Err(err) => println!("delivery: failed: {err}"),
    }
}

#[tokio::test]
async fn plain_relay_receives_the_notice() {
    let Some(server) = SmtpServer::start(SmtpTls::None, None) else {
        return;
    };
    let relay = destination("127.0.0.1", &server, SmtpSecurity::Plain, None);
    deliver(&relay, &failed_backup(), TIMEOUT).await.unwrap();
    let mail = assert_one_notice(&server);
    assert!(!mail.tls);
    assert_eq!(mail.login, None);
}

#[tokio::test]
async fn a_refused_recipient_keeps_the_notice_from_no_one_else_and_is_not_retried() {
    let Some(server) = SmtpServer::start_refusing(SmtpTls::None, None, &[TO[1]]) else {
        return;
    };
    let relay = destination("127.0.0.1", &server, SmtpSecurity::Plain, None);
    let err = deliver(&relay, &failed_backup(), TIMEOUT)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(!err.retry(), "{text}");
    assert!(text.contains(&format!("sent to <{}>", TO[0])), "{text}");
    assert!(text.contains(&format!("<{}> was refused", TO[1])), "{text}");
    assert!(text.contains("550"), "{text}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{}", server.log());
    assert_eq!(messages[0].rcpt_tos, [TO[0]]);

    // Nobody accepted: nothing was sent, so the notifier tries again.
    let Some(server) = SmtpServer::start_refusing(SmtpTls::None, None, &TO) else {
        return;
    };
    let relay = destination("127.0.0.1", &server, SmtpSecurity::Plain, None);
    let err = deliver(&relay, &failed_backup(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.retry(), "{err}");
    assert!(
        err.to_string().starts_with("every recipient was refused: "),
        "{err}"
    );
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}

/// The notifier's side of the same: one message (no retry sends it to the
/// accepted recipient again), counted failed, the refusal in the status file.
#[test]
fn once_sends_one_message_past_a_refused_recipient_and_records_the_refusal() {
    let Some(server) = SmtpServer::start_refusing(SmtpTls::None, None, &[TO[1]]) else {
        return;
    };
    let app = common::sqlite::SqliteApp::small(5);
    let url = format!(
        "smtp://127.0.0.1:{}/?from={FROM}&to={}&starttls=no",
        server.port(),
        TO.join(",")
    );
    let run = app
        .backupd()
        .env("NOTIFY_URLS", &url)
        .env("NOTIFY_LEVEL", "info")
        .run_bounded(&["once"], Duration::from_secs(60));
    run.assert_code(0);
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{run}");
    assert_eq!(messages[0].rcpt_tos, [TO[0]]);
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.status_file()).unwrap()).unwrap();
    let error = status["last_notification_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains(&format!("<{}> was refused", TO[1])),
        "{status}\n{run}"
    );
}

#[test]
fn starttls_with_auth_delivers_encrypted_and_logged_in() {
    let Some(server) = SmtpServer::start(SmtpTls::StartTls, Some((USER, PASSWORD))) else {
        return;
    };
    let submission = destination("localhost", &server, SmtpSecurity::StartTls, Some(PASSWORD));
    deliver_trusting(&server.ca_file(), &submission).unwrap();
    let mail = assert_one_notice(&server);
    assert!(mail.tls, "the message came in plain text");
    assert_eq!(mail.login.as_deref(), Some(USER));
}

#[test]
fn implicit_tls_with_auth_delivers() {
    let Some(server) = SmtpServer::start(SmtpTls::Implicit, Some((USER, PASSWORD))) else {
        return;
    };
    // By address: the certificate names 127.0.0.1 too.
    let smtps = destination("127.0.0.1", &server, SmtpSecurity::Tls, Some(PASSWORD));
    deliver_trusting(&server.ca_file(), &smtps).unwrap();
    let mail = assert_one_notice(&server);
    assert!(mail.tls);
    assert_eq!(mail.login.as_deref(), Some(USER));
}

#[tokio::test]
async fn starttls_required_never_falls_back_to_plain_text() {
    let Some(server) = SmtpServer::start(SmtpTls::None, None) else {
        return;
    };
    let submission = destination("127.0.0.1", &server, SmtpSecurity::StartTls, Some(PASSWORD));
    let err = deliver(&submission, &failed_backup(), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("smtp://"), "{err}");
    assert!(err.contains("does not offer STARTTLS"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let Some(server) = SmtpServer::start(SmtpTls::StartTls, None) else {
        return;
    };
    // This process trusts the system's roots (or its own SSL_CERT_FILE),
    // never the server's throwaway CA.
    let submission = destination("localhost", &server, SmtpSecurity::StartTls, None);
    let err = deliver(&submission, &failed_backup(), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS handshake after STARTTLS failed"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(server) = SmtpServer::start(SmtpTls::None, Some((USER, PASSWORD))) else {
        return;
    };
    let wrong = "not-the-pa55word";
    let relay = destination("127.0.0.1", &server, SmtpSecurity::Plain, Some(wrong));
    let err = deliver(&relay, &failed_backup(), TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("authentication rejected"), "{err}");
    assert!(err.contains("535"), "{err}");
    assert!(!err.contains(wrong), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}

#[test]
fn a_wrong_password_over_starttls_is_named_the_same_way() {
    let Some(server) = SmtpServer::start(SmtpTls::StartTls, Some((USER, PASSWORD))) else {
        return;
    };
    let wrong = "not-the-pa55word";
    let submission = destination("localhost", &server, SmtpSecurity::StartTls, Some(wrong));
    let err = deliver_trusting(&server.ca_file(), &submission).unwrap_err();
    assert!(err.contains("authentication rejected"), "{err}");
    assert!(!err.contains(wrong), "{err}");
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}

/// `backupd notify-test` with `NOTIFY_URLS=smtp://…`: the operator's check,
/// trusting the server's CA the operator's way (`SSL_CERT_FILE`).
#[test]
fn notify_test_delivers_over_starttls_trusting_ssl_cert_file() {
    let Some(server) = SmtpServer::start(SmtpTls::StartTls, Some((USER, PASSWORD))) else {
        return;
    };
    let url = format!(
        "smtp://{USER}:{PASSWORD}@localhost:{}/?from={FROM}&to={}",
        server.port(),
        TO.join(",")
    );
    let run = common::Backupd::new()
        .env("NOTIFY_URLS", &url)
        .env("SSL_CERT_FILE", server.ca_file())
        .run(&["notify-test"]);
    run.assert_code(0).assert_not_shown(PASSWORD);
    assert!(run.stdout.contains("ok  smtp"), "{run}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}\n{run}");
    let mail = &messages[0];
    assert!(mail.tls && mail.login.as_deref() == Some(USER), "{mail:#?}");
    assert_eq!(mail.rcpt_tos, TO);
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(
        subject.starts_with("test message from backupd"),
        "{subject}"
    );
    assert!(mail.body().contains("\nevent: test\n"), "{}", mail.body());
    assert!(!mail.data.contains(PASSWORD), "{}", mail.data);
}

/// The same without the CA: the check fails (exit 1), naming the server
/// masked and the certificate, never the password.
#[test]
fn notify_test_without_the_ca_fails_clearly() {
    let Some(server) = SmtpServer::start(SmtpTls::StartTls, Some((USER, PASSWORD))) else {
        return;
    };
    let url = format!(
        "smtp://{USER}:{PASSWORD}@localhost:{}/?from={FROM}&to={}",
        server.port(),
        TO[0]
    );
    let run = common::Backupd::new()
        .env("NOTIFY_URLS", &url)
        .run(&["notify-test"]);
    run.assert_code(1).assert_not_shown(PASSWORD);
    assert!(run.stdout.contains("FAILED smtp"), "{run}");
    assert!(
        run.stdout.contains(&format!(
            "FAILED smtp {USER}:***@localhost:{} (",
            server.port()
        )),
        "{run}"
    );
    assert!(run.stdout.contains("certificate"), "{run}");
    assert!(server.messages().is_empty(), "{:#?}", server.messages());
}
