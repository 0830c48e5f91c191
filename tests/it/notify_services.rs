//! Notifications to the web services, checked against each service's
//! documented API through the loopback receiver (tests/common/receiver.rs),
//! the one stand-in allowed: none of the services can be reached from here.

use std::time::{Duration, Instant};

use backupd::notify::send::Delivery;
use backupd::notify::{Deliver, Destination, Notice, Severity};
use base64::Engine as _;
use chrono::{TimeZone, Utc};

use crate::common::receiver::{Behaviour, ReceivedRequest, Receiver};

const GUARD: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_records_each_request_whole_and_answers_as_told() {
    let receiver = Receiver::start(Behaviour::status(201).with_body("made"));
    let answer = client()
        .post(format!(
            "{}/bot1%3Aab/send?chat=%40ops&x=a+b",
            receiver.url()
        ))
        .header("X-Title", "Backup failed")
        .body(r#"{"text":"hello"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    assert_eq!(answer.text().await.unwrap(), "made");

    let got = receiver.wait_for_requests(1, GUARD);
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/bot1%3Aab/send");
    assert_eq!(request.query.as_deref(), Some("chat=%40ops&x=a+b"));
    assert_eq!(request.query_pairs()["chat"], "@ops");
    assert_eq!(request.query_pairs()["x"], "a b");
    assert_eq!(request.header("x-title"), Some("Backup failed"));
    assert_eq!(request.header("X-TITLE"), Some("Backup failed"));
    assert_eq!(request.json()["text"], "hello");
    assert_eq!(request.text(), r#"{"text":"hello"}"#);
    assert!(request.to_string().starts_with("POST /bot1%3Aab/send?chat"));

    // A second request on the same (pooled) connection, answered anew.
    receiver.set_behaviour(
        Behaviour::status(302).with_header("Location", "http://127.0.0.1:9/elsewhere"),
    );
    let answer = client().get(receiver.url()).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 302);
    assert_eq!(
        answer.headers()["location"].to_str().unwrap(),
        "http://127.0.0.1:9/elsewhere"
    );
    assert_eq!(receiver.requests().len(), 2);
    assert_eq!(receiver.requests()[1].method, "GET");
    assert!(receiver.requests()[1].body.is_empty());
    assert!(receiver.host_port().starts_with("127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_receiver_answers_late_or_never() {
    let receiver = Receiver::start(Behaviour::ok().after(Duration::from_millis(300)));
    let started = Instant::now();
    let answer = client().post(receiver.url()).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    receiver.set_behaviour(Behaviour::Hang);
    let hung = client()
        .post(receiver.url())
        .timeout(Duration::from_millis(500))
        .body("x")
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    // The hung request was recorded all the same.
    assert_eq!(receiver.wait_for_requests(2, GUARD)[1].body, b"x");

    // Dropping the receiver ends a hung connection: the client sees it closed.
    let pending = tokio::spawn(client().post(receiver.url()).send());
    receiver.wait_for_requests(3, GUARD);
    drop(receiver);
    let ended = tokio::time::timeout(GUARD, pending).await.unwrap().unwrap();
    assert!(ended.is_err());
}

// The real delivery path: URLs parsed as NOTIFY_URLS is, each notice
// rendered and sent by `Delivery` (the notifier's Deliver) to the receiver.

const TOKEN: &str = "tok-7Hq2xVb9Lm3Np";
const PASSWORD: &str = "pw-Zr84KcUe2Q";
/// Slack's third part is letters and digits only.
const SLACK_SECRET: &str = "Xy7Hq2xVb9Lm3NpQ4rS5tUvW";
const TITLE: &str = "backup failed on db-backup (postgresql app)";
const ERROR: &str = "pg_dump exited with status 1: connection refused";

fn failed_backup() -> Notice {
    Notice {
        event: "backup-failed".into(),
        result: "failure",
        severity: Severity::Error,
        title: TITLE.into(),
        text: format!("The backup of postgresql app failed: {ERROR}"),
        database_kind: "postgresql",
        database_name: "app".into(),
        file: Some("backup-20261202T040000Z.sql.gz".into()),
        size_bytes: Some(1234),
        sha256: Some("ab".repeat(32)),
        duration_seconds: Some(1.5),
        error: Some(ERROR.into()),
        host: "db-backup".into(),
        version: env!("CARGO_PKG_VERSION"),
        time: Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap(),
    }
}

fn delivery() -> Delivery {
    Delivery::new(Duration::from_secs(10)).unwrap()
}

/// Delivers the failed-backup notice to `url` and returns the requests the
/// receiver got.
async fn deliver_to(receiver: &Receiver, url: &str, expected: usize) -> Vec<ReceivedRequest> {
    let destination = Destination::parse(url).unwrap();
    delivery()
        .deliver(&destination, &failed_backup())
        .await
        .unwrap_or_else(|e| panic!("delivery to {destination} failed: {e}"));
    let requests = receiver.wait_for_requests(expected, GUARD);
    assert_eq!(requests.len(), expected, "{requests:#?}");
    for request in &requests {
        assert_eq!(
            request.header("user-agent"),
            Some(concat!("backupd/", env!("CARGO_PKG_VERSION")))
        );
    }
    requests
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The generic webhook: our own documented schema (docker/README.md,
/// "Notification URLs"; README "Notifications").
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_gets_the_versioned_json_document() {
    let receiver = Receiver::start(Behaviour::status(204));
    let url = receiver
        .url()
        .replace("http://", &format!("http://ops:{PASSWORD}@"));
    let requests = deliver_to(&receiver, &format!("{url}/hooks/{TOKEN}?src=backupd"), 1).await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/hooks/{TOKEN}"));
    assert_eq!(request.query.as_deref(), Some("src=backupd"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("authorization"),
        Some(basic("ops", PASSWORD).as_str())
    );
    let body = request.json();
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["event"], "backup-failed");
    assert_eq!(body["result"], "failure");
    assert_eq!(body["database"]["kind"], "postgresql");
    assert_eq!(body["database"]["name"], "app");
    assert_eq!(body["file"], "backup-20261202T040000Z.sql.gz");
    assert_eq!(body["size_bytes"], 1234);
    assert_eq!(body["sha256"], "ab".repeat(32));
    assert_eq!(body["duration_seconds"], 1.5);
    assert_eq!(body["error"], ERROR);
    assert_eq!(body["host"], "db-backup");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["time"], "2026-12-02T04:00:00Z");
}

/// https://docs.ntfy.sh/publish/: POST to /<topic>, the message as the
/// body; title, priority and tags as the `Title`, `Priority`, `Tags`
/// headers (https://docs.ntfy.sh/publish/#message-title,
/// #message-priority, #tags-emojis); access control through
/// `Authorization: Basic` or `Bearer` (https://docs.ntfy.sh/publish/#authentication).
#[tokio::test(flavor = "multi_thread")]
async fn ntfy_gets_a_publish_to_the_topic() {
    let receiver = Receiver::start(Behaviour::ok().with_body(r#"{"id":"x1"}"#));
    let host = receiver.host_port();
    let requests = deliver_to(
        &receiver,
        &format!("ntfy://alice:{PASSWORD}@{host}/backups?scheme=http"),
        1,
    )
    .await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/backups");
    assert_eq!(request.header("title"), Some(TITLE));
    // 1 min … 5 max; "high" is 4 (https://docs.ntfy.sh/publish/#message-priority).
    assert_eq!(request.header("priority"), Some("high"));
    assert_eq!(request.header("tags"), Some("warning,backup-failed"));
    assert_eq!(
        request.header("authorization"),
        Some(basic("alice", PASSWORD).as_str())
    );
    assert_eq!(
        request.text(),
        format!("The backup of postgresql app failed: {ERROR}")
    );

    // An access token: `ntfy://:TOKEN@host/topic` → Bearer.
    deliver_to(
        &receiver,
        &format!("ntfy://:{TOKEN}@{host}/backups?scheme=http"),
        2,
    )
    .await;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        receiver.requests()[1].header("authorization"),
        Some(bearer.as_str())
    );
}

/// https://gotify.net/api-docs: `POST /message` with the application token
/// in `X-Gotify-Key`, a JSON Message (`message` required, `title`,
/// `priority`); a server under a path prefix keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn gotify_gets_a_message_under_its_path_prefix() {
    let receiver = Receiver::start(Behaviour::ok().with_body(r#"{"id":1}"#));
    let host = receiver.host_port();
    let requests = deliver_to(
        &receiver,
        &format!("gotify://{host}/gotify/{TOKEN}?disabletls=yes"),
        1,
    )
    .await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/gotify/message");
    assert_eq!(
        request.query, None,
        "the token goes in the header, not the URL"
    );
    assert_eq!(request.header("x-gotify-key"), Some(TOKEN));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["title"], TITLE);
    assert_eq!(
        body["message"],
        format!("The backup of postgresql app failed: {ERROR}")
    );
    assert_eq!(body["priority"], 8);
}

/// https://discord.com/developers/docs/resources/webhook#execute-webhook:
/// `POST /webhooks/{webhook.id}/{webhook.token}` under the API base
/// (https://discord.com/api), JSON with `content` and/or `embeds`;
/// `allowed_mentions` with an empty `parse` resolves no mention.
#[tokio::test(flavor = "multi_thread")]
async fn discord_gets_an_execute_webhook() {
    let receiver = Receiver::start(Behaviour::status(204));
    let requests = deliver_to(
        &receiver,
        &format!(
            "discord://{TOKEN}@693853386302554172?api={}",
            receiver.url()
        ),
        1,
    )
    .await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/api/webhooks/693853386302554172/{TOKEN}")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["content"], TITLE);
    let embed = &body["embeds"][0];
    assert_eq!(
        embed["description"],
        format!("The backup of postgresql app failed: {ERROR}")
    );
    assert!(embed["color"].is_u64());
    assert_eq!(embed["timestamp"], "2026-12-02T04:00:00+00:00");
    assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
}

/// https://api.slack.com/messaging/webhooks: `POST` of JSON `{"text": …}`
/// to the incoming webhook URL `https://hooks.slack.com/services/T…/B…/…`,
/// `&`, `<`, `>` escaped
/// (https://api.slack.com/reference/surfaces/formatting#escaping).
#[tokio::test(flavor = "multi_thread")]
async fn slack_gets_an_incoming_webhook_message() {
    let receiver = Receiver::start(Behaviour::ok().with_body("ok"));
    let mut notice = failed_backup();
    notice.text = "restore of <app> & friends refused".into();
    let destination = Destination::parse(&format!(
        "slack://hook:T0ABC1234-B0DEF5678-{SLACK_SECRET}@webhook?api={}",
        receiver.url()
    ))
    .unwrap();
    delivery().deliver(&destination, &notice).await.unwrap();
    let request = &receiver.wait_for_requests(1, GUARD)[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/services/T0ABC1234/B0DEF5678/{SLACK_SECRET}")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json()["text"],
        format!("*{TITLE}*\nrestore of &lt;app&gt; &amp; friends refused")
    );
}

/// https://core.telegram.org/bots/api#making-requests: `POST
/// /bot<token>/METHOD`, JSON; https://core.telegram.org/bots/api#sendmessage:
/// `chat_id` (Integer or String `@channelusername`), `text` (1-4096
/// characters), `message_thread_id` for a forum topic. One message per chat.
#[tokio::test(flavor = "multi_thread")]
async fn telegram_gets_one_send_message_per_chat() {
    let receiver = Receiver::start(Behaviour::ok().with_body(r#"{"ok":true}"#));
    let requests = deliver_to(
        &receiver,
        &format!(
            "telegram://110201543:{TOKEN}@telegram?chats=-1001234567890,@ops_alerts,-1009:42&api={}",
            receiver.url()
        ),
        3,
    )
    .await;
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, format!("/bot110201543:{TOKEN}/sendMessage"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.json()["text"],
            format!("{TITLE}\n\nThe backup of postgresql app failed: {ERROR}")
        );
    }
    let chats: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| r.json()["chat_id"].clone())
        .collect();
    assert_eq!(
        chats,
        [
            serde_json::json!(-1_001_234_567_890_i64),
            serde_json::json!("@ops_alerts"),
            serde_json::json!(-1009)
        ]
    );
    assert_eq!(requests[2].json()["message_thread_id"], 42);
    assert!(requests[0].json().get("message_thread_id").is_none());
}

/// Every URL form with its secrets, pointed at `base` (`http://127.0.0.1:PORT`).
fn every_form(base: &str) -> Vec<(String, Vec<&'static str>)> {
    let host = base.trim_start_matches("http://");
    vec![
        (
            format!("http://ops:{PASSWORD}@{host}/hooks/{TOKEN}?key={TOKEN}"),
            vec![PASSWORD, TOKEN],
        ),
        (
            format!("ntfy://alice:{PASSWORD}@{host}/{TOKEN}?scheme=http"),
            vec![PASSWORD, TOKEN],
        ),
        (
            format!("ntfy://:{TOKEN}@{host}/backups?scheme=http"),
            vec![TOKEN],
        ),
        (
            format!("gotify://{host}/{TOKEN}?disabletls=yes"),
            vec![TOKEN],
        ),
        (format!("discord://{TOKEN}@42?api={base}"), vec![TOKEN]),
        (
            format!("slack://hook:T0ABC1234-B0DEF5678-{SLACK_SECRET}@webhook?api={base}"),
            vec![SLACK_SECRET],
        ),
        (
            format!("telegram://110201543:{TOKEN}@telegram?chats=1,2&api={base}"),
            vec![TOKEN],
        ),
        (
            format!(
                "smtp://alerts:{PASSWORD}@{host}/?from=backupd@example.org&to=ops@example.org&starttls=no"
            ),
            vec![PASSWORD],
        ),
    ]
}

fn assert_no_secret(error: &str, secrets: &[&str], url: &str) {
    for secret in secrets {
        assert!(!error.contains(secret), "{url}\n→ {error}");
    }
}

/// A refusing service: the error names the status and the destination
/// (masked) and quotes the answer with every secret masked, even where the
/// service echoes them.
#[tokio::test(flavor = "multi_thread")]
async fn no_token_or_password_appears_in_any_error() {
    let echo = format!("unauthorized: token {TOKEN} {SLACK_SECRET} / password {PASSWORD} rejected");
    let receiver = Receiver::start(Behaviour::status(401).with_body(echo));
    // The SMTP client waits for a greeting the HTTP receiver never sends.
    let quick = Delivery::new(Duration::from_secs(2)).unwrap();
    for (url, secrets) in every_form(&receiver.url()) {
        let destination = Destination::parse(&url).unwrap();
        let error = quick
            .clone()
            .deliver(&destination, &failed_backup())
            .await
            .unwrap_err()
            .to_string();
        assert_no_secret(&error, &secrets, &url);
        assert_no_secret(&destination.to_string(), &secrets, &url);
        assert_no_secret(&format!("{destination:?}"), &secrets, &url);
        if destination.kind() != "smtp" {
            assert!(error.contains("HTTP 401"), "{url}\n→ {error}");
            // The reporter names the destination, the error does not again.
            assert!(
                !error.contains(&destination.to_string()),
                "{url}\n→ {error}"
            );
            assert!(error.contains("rejected"), "the answer is quoted: {error}");
        }
    }

    // Nothing listening: the transport's own error, without the URL.
    let closed = format!("http://127.0.0.1:{}", crate::common::free_port());
    for (url, secrets) in every_form(&closed) {
        let destination = Destination::parse(&url).unwrap();
        let error = quick
            .clone()
            .deliver(&destination, &failed_backup())
            .await
            .unwrap_err()
            .to_string();
        assert_no_secret(&error, &secrets, &url);
    }

    // A parse error of each form, secrets in place.
    for (url, secrets) in every_form(&receiver.url()) {
        let broken = url.replacen("://", "://bad host ", 1);
        if let Err(error) = backupd::notify::destination::parse_list("NOTIFY_URLS", &broken) {
            assert_no_secret(&error.to_string(), &secrets, &broken);
        }
    }

    // A password written unencoded with '?', '#' or '@' in it: the URL does
    // not parse, and the error shows none of it.
    for (url, secret) in [
        ("ntfy://alice:se?cret@ntfy.example/t", ["se?cret", "cret"]),
        (
            "smtp://u:pa?ss@mail.example:587/?from=a@x.example&to=b@y.example",
            ["pa?ss", "?ss"],
        ),
        ("https://bob:pa#ss@h.example/x", ["pa#ss", "#ss"]),
        ("ntfys://bob:p@ss!w?rd@h.example/t", ["ss!w", "w?rd"]),
    ] {
        let shown = match backupd::notify::destination::parse_list("NOTIFY_URLS", url) {
            Err(error) => error.to_string(),
            Ok(destinations) => format!("{destinations:?}"),
        };
        assert_no_secret(&shown, &secret, url);
    }
}

/// A webhook that redirects is reported, not followed with the notice.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_an_error_and_is_not_followed() {
    let elsewhere = Receiver::start(Behaviour::ok());
    let receiver = Receiver::start(
        Behaviour::status(308).with_header("Location", &format!("{}/moved", elsewhere.url())),
    );
    let destination = Destination::parse(&format!("{}/hooks/{TOKEN}", receiver.url())).unwrap();
    let error = delivery()
        .deliver(&destination, &failed_backup())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("HTTP 308 (a redirect"), "{error}");
    assert!(error.contains("not followed"), "{error}");
    assert_eq!(receiver.requests().len(), 1);
    assert!(elsewhere.requests().is_empty());
}

/// A hung service costs one attempt's timeout, then a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_service_is_given_up_at_the_timeout() {
    let receiver = Receiver::start(Behaviour::Hang);
    let destination = Destination::parse(&format!(
        "ntfy://{}/backups?scheme=http",
        receiver.host_port()
    ))
    .unwrap();
    let started = Instant::now();
    let error = Delivery::new(Duration::from_secs(1))
        .unwrap()
        .deliver(&destination, &failed_backup())
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < GUARD, "{:?}", started.elapsed());
    assert_eq!(error, "no answer in time");
    assert_eq!(receiver.requests().len(), 1);
}

/// Every `NOTIFY_URLS=` example in docker/README.md parses.
#[test]
fn the_documented_examples_parse() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker/README.md")).unwrap();
    let examples: Vec<&str> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("NOTIFY_URLS="))
        .collect();
    assert!(examples.len() >= 10, "{examples:?}");
    for example in examples {
        let parsed = backupd::notify::destination::parse_list("NOTIFY_URLS", example)
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(!parsed.is_empty(), "{example}");
    }
    assert_eq!(
        Destination::parse("ntfy:///backups").unwrap().to_string(),
        "ntfy https://ntfy.sh/***"
    );
}

/// The built binary: `backupd notify-test` reads every form from
/// `NOTIFY_URLS_FILE` (one per line), sends each service its test message
/// the service's way, and prints one masked line per destination.
#[test]
fn notify_test_reaches_every_service_from_the_urls_file() {
    let receiver = Receiver::start(Behaviour::ok());
    let base = receiver.url();
    let host = receiver.host_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notify-urls");
    let urls = [
        format!("http://ops:{PASSWORD}@{host}/hooks/{TOKEN}"),
        format!("ntfy://:{TOKEN}@{host}/backups?scheme=http"),
        format!("gotify://{host}/{TOKEN}?disabletls=yes"),
        format!("discord://{TOKEN}@42?api={base}"),
        format!("slack://hook:T0ABC1234-B0DEF5678-{SLACK_SECRET}@webhook?api={base}"),
        format!("telegram://110201543:{TOKEN}@telegram?chats=-1001,@ops&api={base}"),
    ];
    std::fs::write(&file, urls.join("\n")).unwrap();

    let done = crate::common::Backupd::new()
        .env("NOTIFY_URLS_FILE", &file)
        .run_bounded(&["notify-test"], GUARD);
    done.assert_code(0)
        .assert_not_shown(TOKEN)
        .assert_not_shown(PASSWORD)
        .assert_not_shown(SLACK_SECRET);
    let lines: Vec<&str> = done.stdout.lines().collect();
    // The Telegram URL names two chats: a destination each.
    let kinds = [
        "webhook", "ntfy", "gotify", "discord", "slack", "telegram", "telegram",
    ];
    assert_eq!(lines.len(), kinds.len(), "{done}");
    for (line, kind) in lines.iter().zip(kinds) {
        assert!(line.starts_with(&format!("ok  {kind} ")), "{done}");
    }

    let requests = receiver.wait_for_requests(7, GUARD);
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    for expected in [
        format!("/hooks/{TOKEN}"),
        "/backups".to_string(),
        "/message".to_string(),
        format!("/api/webhooks/42/{TOKEN}"),
        format!("/services/T0ABC1234/B0DEF5678/{SLACK_SECRET}"),
        format!("/bot110201543:{TOKEN}/sendMessage"),
    ] {
        assert!(
            paths.contains(&expected.as_str()),
            "{expected} not in {paths:?}"
        );
    }
    let by_path = |path: &str| requests.iter().find(|r| r.path == path).unwrap();
    assert_eq!(by_path(&format!("/hooks/{TOKEN}")).json()["event"], "test");
    assert_eq!(by_path("/message").header("x-gotify-key"), Some(TOKEN));
    let telegram: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/sendMessage"))
        .map(|r| r.json()["chat_id"].clone())
        .collect();
    assert_eq!(telegram.len(), 2);

    // A refusal: exit 1, the failing line masked.
    // (Answers echoing a destination's own secrets: no_token_or_password_appears_in_any_error.)
    receiver.set_behaviour(Behaviour::status(403).with_body("denied"));
    let done = crate::common::Backupd::new()
        .env("NOTIFY_URLS_FILE", &file)
        .run_bounded(&["notify-test"], GUARD);
    done.assert_code(1)
        .assert_not_shown(TOKEN)
        .assert_not_shown(PASSWORD)
        .assert_not_shown(SLACK_SECRET);
    assert!(
        done.stdout
            .lines()
            .all(|l| l.starts_with("FAILED ") && l.contains("HTTP 403")),
        "{done}"
    );
}

/// A refusal with a huge answer: quoted short, on one line.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_answer_is_quoted_short() {
    let receiver =
        Receiver::start(Behaviour::status(500).with_body(format!("oops\n{}", "x".repeat(1 << 20))));
    let destination = Destination::parse(&format!("{}/hook", receiver.url())).unwrap();
    let error = delivery()
        .deliver(&destination, &failed_backup())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("HTTP 500: "), "{error}");
    assert!(error.contains(": oops x"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    assert!(error.len() < 400, "{} bytes: {error}", error.len());
}
