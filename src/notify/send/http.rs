//! The web services: each notice rendered as the service's documented API
//! expects it ([`render`], pure), then sent ([`send`]).
//!
//! - webhook: `POST` of [`Notice::webhook_json`] to the URL as given.
//! - ntfy (<https://docs.ntfy.sh/publish/>): `POST /TOPIC`, the text as the
//!   body, `Title`, `Priority` and `Tags` headers, `Authorization: Basic`
//!   (user and password) or `Bearer` (an access token).
//! - Gotify (<https://gotify.net/api-docs>): `POST /message` with
//!   `X-Gotify-Key`, JSON `title`, `message`, `priority`.
//! - Discord (<https://discord.com/developers/docs/resources/webhook#execute-webhook>):
//!   `POST /api/webhooks/ID/TOKEN`, JSON `content` and one embed; no
//!   mention is ever resolved (`allowed_mentions`), so an error text holding
//!   `@everyone` pings nobody.
//! - Slack (<https://api.slack.com/messaging/webhooks>): `POST
//!   /services/T/B/X`, JSON `text` with `&`, `<`, `>` escaped as Slack asks.
//! - Telegram (<https://core.telegram.org/bots/api#sendmessage>): `POST
//!   /botTOKEN/sendMessage` per chat, JSON `chat_id`, `text` (plain text:
//!   no `parse_mode`, so nothing needs escaping), `message_thread_id` for a
//!   `CHAT:THREAD` chat.

use std::fmt;

use base64::Engine as _;
use reqwest::Method;
use url::Url;

use crate::notify::DeliveryError;
use crate::notify::destination::{Destination, UrlSecret};
use crate::notify::message::{Notice, Severity};

/// One HTTP request to make. Its URL and headers hold secrets (tokens in
/// paths, `Authorization`): `Debug` shows the method, the origin and the
/// header names only.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    pub url: Url,
    /// Names as sent (`Content-Type`, `Title`, …).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        write!(
            f,
            "HttpRequest({} {}://{}/*** headers {names:?}, {} bytes)",
            self.method,
            self.url.scheme(),
            self.url.host_str().unwrap_or(""),
            self.body.len()
        )
    }
}

/// ntfy turns a message over 4096 bytes into an attachment (or refuses it).
const NTFY_MAX_BODY_BYTES: usize = 4000;
/// Discord: `content` up to 2000 characters, an embed description up to 4096.
const DISCORD_MAX_CONTENT: usize = 2000;
const DISCORD_MAX_DESCRIPTION: usize = 4096;
/// Telegram: a message's text up to 4096 characters.
const TELEGRAM_MAX_TEXT: usize = 4096;
/// Slack truncates beyond 40,000 characters; far more than any notice.
const SLACK_MAX_TEXT: usize = 40_000;
/// A title in a header or a one-line field.
const MAX_TITLE: usize = 250;
/// A service's answer quoted in an error, at most.
const MAX_ANSWER_QUOTED: usize = 200;

/// The requests that deliver `notice` to `destination`: one, or one per
/// chat for Telegram; none for SMTP (not HTTP: see `send::smtp`).
pub fn render(destination: &Destination, notice: &Notice) -> Vec<HttpRequest> {
    match destination {
        Destination::Webhook { url } => vec![webhook(url, notice)],
        Destination::Ntfy {
            server,
            topic,
            auth,
        } => vec![ntfy(server, topic, auth.as_ref(), notice)],
        Destination::Gotify { server, token } => vec![gotify(server, token, notice)],
        Destination::Discord {
            api,
            webhook_id,
            token,
        } => vec![discord(api, webhook_id, token, notice)],
        Destination::Slack { api, token } => vec![slack(api, token, notice)],
        Destination::Telegram { api, token, chats } => chats
            .iter()
            .map(|chat| telegram(api, token, chat, notice))
            .collect(),
        Destination::Smtp(_) => Vec::new(),
    }
}

fn json_request(url: Url, body: &serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: Method::POST,
        url,
        headers: vec![("Content-Type", "application/json".to_string())],
        body: serde_json::to_vec(body).expect("a JSON value serializes"),
    }
}

/// `base` with `segments` appended as path segments (percent-encoded
/// where needed), after the path `base` already has.
fn with_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn webhook(url: &Url, notice: &Notice) -> HttpRequest {
    let mut target = url.clone();
    let credentials = url.password().map(|password| {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        basic_auth(&decode(url.username()), &decode(password))
    });
    // Sent as a header of our own rather than left in the URL.
    let _ = target.set_username("");
    let _ = target.set_password(None);
    let mut request = json_request(target, &notice.webhook_json());
    if let Some(credentials) = credentials {
        request.headers.push(("Authorization", credentials));
    }
    request
}

fn ntfy(
    server: &Url,
    topic: &UrlSecret,
    auth: Option<&(String, UrlSecret)>,
    notice: &Notice,
) -> HttpRequest {
    let mut headers = vec![
        ("Content-Type", "text/plain; charset=utf-8".to_string()),
        ("Title", header_text(&clip_chars(&notice.title, MAX_TITLE))),
        (
            "Priority",
            match notice.severity {
                Severity::Error => "high",
                Severity::Info => "default",
            }
            .to_string(),
        ),
        (
            "Tags",
            format!("{},{}", ntfy_emoji(notice.result), notice.event),
        ),
    ];
    match auth {
        Some((user, token)) if user.is_empty() => {
            headers.push(("Authorization", format!("Bearer {}", token.expose())));
        }
        Some((user, password)) => {
            headers.push(("Authorization", basic_auth(user, password.expose())))
        }
        None => {}
    }
    HttpRequest {
        method: Method::POST,
        url: with_segments(server, &[topic.expose()]),
        headers,
        body: clip_bytes(&notice.text, NTFY_MAX_BODY_BYTES).into_bytes(),
    }
}

/// An emoji short code ntfy shows before the title
/// (<https://docs.ntfy.sh/publish/#tags-emojis>).
fn ntfy_emoji(result: &str) -> &'static str {
    match result {
        "success" | "recovered" => "white_check_mark",
        "failure" | "stale" | "refused" => "warning",
        _ => "information_source",
    }
}

/// A header value from any text: one line of visible ASCII as it is,
/// anything else as an RFC 2047 encoded word, which ntfy decodes.
fn header_text(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.is_ascii() {
        line
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(line)
        )
    }
}

fn gotify(server: &Url, token: &UrlSecret, notice: &Notice) -> HttpRequest {
    // Gotify's Android app: 8 and above pop up with sound, 4 to 7 sound.
    let priority = match notice.severity {
        Severity::Error => 8,
        Severity::Info => 4,
    };
    let mut request = json_request(
        with_segments(server, &["message"]),
        &serde_json::json!({
            "title": clip_chars(&notice.title, MAX_TITLE),
            "message": notice.text,
            "priority": priority,
        }),
    );
    request
        .headers
        .push(("X-Gotify-Key", token.expose().to_string()));
    request
}

fn discord(api: &Url, webhook_id: &str, token: &UrlSecret, notice: &Notice) -> HttpRequest {
    // Embed colours: red for what needs someone, green otherwise.
    let color = match notice.severity {
        Severity::Error => 0xD0_30_30,
        Severity::Info => 0x2E_A0_43,
    };
    json_request(
        with_segments(api, &["api", "webhooks", webhook_id, token.expose()]),
        &serde_json::json!({
            "content": clip_chars(&notice.title, DISCORD_MAX_CONTENT),
            "embeds": [{
                "description": clip_chars(&notice.text, DISCORD_MAX_DESCRIPTION),
                "color": color,
                "timestamp": notice.time.to_rfc3339(),
            }],
            "allowed_mentions": { "parse": [] },
        }),
    )
}

fn slack(api: &Url, token: &UrlSecret, notice: &Notice) -> HttpRequest {
    let mut segments = vec!["services"];
    segments.extend(token.expose().split('/'));
    let text = format!(
        "*{}*\n{}",
        slack_escape(&notice.title),
        slack_escape(&notice.text)
    );
    json_request(
        with_segments(api, &segments),
        &serde_json::json!({ "text": clip_chars(&text, SLACK_MAX_TEXT) }),
    )
}

/// <https://api.slack.com/reference/surfaces/formatting#escaping>
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn telegram(api: &Url, token: &UrlSecret, chat: &str, notice: &Notice) -> HttpRequest {
    let bot = format!("bot{}", token.expose());
    // `-100123:7` is a topic (thread 7) of a forum group; `@name` a channel.
    let (chat_id, thread) = match chat.rsplit_once(':') {
        Some((id, thread)) if thread.parse::<i64>().is_ok() => (id, thread.parse::<i64>().ok()),
        _ => (chat, None),
    };
    let chat_id = match chat_id.parse::<i64>() {
        Ok(number) => serde_json::Value::from(number),
        Err(_) => serde_json::Value::from(chat_id),
    };
    let mut body = serde_json::json!({
        "chat_id": chat_id,
        "text": clip_chars(&format!("{}\n\n{}", notice.title, notice.text), TELEGRAM_MAX_TEXT),
    });
    if let Some(thread) = thread {
        body["message_thread_id"] = thread.into();
    }
    json_request(with_segments(api, &[&bot, "sendMessage"]), &body)
}

/// `text` cut to `max` characters, ending in `…` when cut.
fn clip_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut clipped: String = text.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// `text` cut to `max` bytes at a character boundary, ending in `…` when cut.
fn clip_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Every secret of `destination` that a service might echo back, longest
/// first (so a token is masked whole before a part of it).
fn secrets(destination: &Destination) -> Vec<String> {
    let mut secrets: Vec<String> = match destination {
        Destination::Webhook { url } => {
            let mut found: Vec<String> = url.password().map(str::to_string).into_iter().collect();
            found.extend(
                url.path_segments()
                    .into_iter()
                    .flatten()
                    .filter(|s| s.len() >= 4)
                    .map(str::to_string),
            );
            found.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
            found
        }
        Destination::Ntfy { topic, auth, .. } => {
            let mut found = vec![topic.expose().to_string()];
            found.extend(auth.iter().map(|(_, s)| s.expose().to_string()));
            found
        }
        Destination::Gotify { token, .. } | Destination::Discord { token, .. } => {
            vec![token.expose().to_string()]
        }
        Destination::Slack { token, .. } => {
            let mut found = vec![token.expose().to_string()];
            found.extend(token.expose().split('/').map(str::to_string));
            found
        }
        Destination::Telegram { token, .. } => {
            let mut found = vec![token.expose().to_string()];
            found.extend(token.expose().split_once(':').map(|(_, s)| s.to_string()));
            found
        }
        Destination::Smtp(smtp) => smtp
            .auth
            .iter()
            .map(|(_, p)| p.expose().to_string())
            .collect(),
    };
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// A service's answer as one short line with every secret of `destination` masked.
fn quoted_answer(destination: &Destination, answer: &str) -> String {
    let mut line: String = answer
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets(destination) {
        line = line.replace(&secret, "***");
    }
    clip_chars(line.trim(), MAX_ANSWER_QUOTED)
}

/// The first few kB of an answer's body, at most: enough to quote, and a
/// misbehaving service cannot make us read (or hold) more.
async fn answer_start(mut response: reqwest::Response) -> String {
    const ENOUGH: usize = 4096;
    let mut start = Vec::new();
    while start.len() < ENOUGH {
        match response.chunk().await {
            Ok(Some(chunk)) => start.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    start.truncate(ENOUGH);
    String::from_utf8_lossy(&start).into_owned()
}

/// Sends one request; a non-2xx answer (a redirect too: never followed) is
/// an error naming the status and quoting the answer, masked. The error
/// does not name the destination: whoever reports it does (the notifier's
/// log line and status record, notify-test's line).
pub async fn send(
    client: &reqwest::Client,
    destination: &Destination,
    request: HttpRequest,
) -> Result<(), DeliveryError> {
    let mut builder = client.request(request.method, request.url);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.body(request.body).send().await.map_err(|e| {
        if e.is_timeout() {
            DeliveryError::new("no answer in time".to_string())
        } else {
            DeliveryError::new(format!(
                "not reached: {}",
                crate::error::error_chain(&e.without_url())
            ))
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let hint = if status.is_redirection() {
        " (a redirect: not followed with the notice; put the URL it points to in NOTIFY_URLS)"
    } else {
        ""
    };
    let answer = quoted_answer(destination, &answer_start(response).await);
    Err(DeliveryError::new(if answer.is_empty() {
        format!("HTTP {}{hint}", status.as_u16())
    } else {
        format!("HTTP {}{hint}: {answer}", status.as_u16())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn notice(severity: Severity) -> Notice {
        Notice {
            event: "backup-failed".into(),
            result: if severity == Severity::Error {
                "failure"
            } else {
                "success"
            },
            severity,
            title: "backup failed on db-backup (postgresql app)".into(),
            text: "pg_dump failed: connection refused <db:5432> & more".into(),
            database_kind: "postgresql",
            database_name: "app".into(),
            file: None,
            size_bytes: None,
            sha256: None,
            duration_seconds: Some(2.5),
            error: Some("pg_dump failed: connection refused".into()),
            host: "db-backup".into(),
            version: "0.1.0",
            time: Utc.with_ymd_and_hms(2026, 12, 2, 5, 0, 0).unwrap(),
        }
    }

    fn one(raw: &str, notice: &Notice) -> HttpRequest {
        let mut requests = render(&Destination::parse(raw).unwrap(), notice);
        assert_eq!(requests.len(), 1, "{raw}");
        requests.remove(0)
    }

    fn json(request: &HttpRequest) -> serde_json::Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn a_webhook_posts_the_json_document_with_credentials_as_a_header() {
        let n = notice(Severity::Error);
        let request = one("https://bob:pa%40ss@hooks.example.com/in/abc?key=k1", &n);
        assert_eq!(request.method, Method::POST);
        assert_eq!(
            request.url.as_str(),
            "https://hooks.example.com/in/abc?key=k1"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(
            request.header("authorization"),
            Some(basic_auth("bob", "pa@ss").as_str())
        );
        assert_eq!(json(&request), n.webhook_json());
        assert_eq!(
            one("http://hooks.example.com/x", &n).header("authorization"),
            None
        );
    }

    #[test]
    fn ntfy_posts_the_text_to_the_topic_with_title_priority_tags_and_auth() {
        let n = notice(Severity::Error);
        let request = one("ntfy://alice:pw@ntfy.example:8080/backups?scheme=http", &n);
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.url.as_str(), "http://ntfy.example:8080/backups");
        assert_eq!(request.header("title"), Some(n.title.as_str()));
        assert_eq!(request.header("priority"), Some("high"));
        assert_eq!(request.header("tags"), Some("warning,backup-failed"));
        assert_eq!(request.header("authorization"), Some("Basic YWxpY2U6cHc="));
        assert_eq!(request.body, n.text.as_bytes());

        let token = one(
            "ntfy://:tk_abc@ntfy.example/backups",
            &notice(Severity::Info),
        );
        assert_eq!(token.url.as_str(), "https://ntfy.example/backups");
        assert_eq!(token.header("authorization"), Some("Bearer tk_abc"));
        assert_eq!(token.header("priority"), Some("default"));
        assert_eq!(token.header("tags"), Some("white_check_mark,backup-failed"));
        assert_eq!(one("ntfy://ntfy.sh/t", &n).header("authorization"), None);
    }

    #[test]
    fn ntfy_titles_beyond_ascii_are_encoded_words_and_long_texts_are_cut() {
        let mut n = notice(Severity::Error);
        n.title = "Sicherung fehlgeschlagen: Müller\r\n".into();
        n.text = "é".repeat(3000);
        let request = one("ntfy://ntfy.sh/t", &n);
        let title = request.header("title").unwrap();
        let encoded = title
            .strip_prefix("=?UTF-8?B?")
            .and_then(|t| t.strip_suffix("?="))
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "Sicherung fehlgeschlagen: Müller  "
        );
        assert!(request.body.len() <= NTFY_MAX_BODY_BYTES);
        assert!(String::from_utf8(request.body).unwrap().ends_with('…'));
    }

    #[test]
    fn gotify_posts_a_message_with_the_key_as_a_header_under_the_path_prefix() {
        let n = notice(Severity::Error);
        let request = one("gotify://gotify.example:8443/sub/AzyoeNS.D4iJLVa", &n);
        assert_eq!(
            request.url.as_str(),
            "https://gotify.example:8443/sub/message"
        );
        assert_eq!(request.header("x-gotify-key"), Some("AzyoeNS.D4iJLVa"));
        let body = json(&request);
        assert_eq!(body["title"], n.title);
        assert_eq!(body["message"], n.text);
        assert_eq!(body["priority"], 8);
        let plain = one(
            "gotify://10.0.0.2/Tok?disabletls=yes",
            &notice(Severity::Info),
        );
        assert_eq!(plain.url.as_str(), "http://10.0.0.2/message");
        assert_eq!(json(&plain)["priority"], 4);
    }

    #[test]
    fn discord_executes_the_webhook_with_content_and_an_embed_and_no_mentions() {
        let n = notice(Severity::Error);
        let request = one("discord://W3dE-2O_z@693853386302554172", &n);
        assert_eq!(
            request.url.as_str(),
            "https://discord.com/api/webhooks/693853386302554172/W3dE-2O_z"
        );
        let body = json(&request);
        assert_eq!(body["content"], n.title);
        assert_eq!(body["embeds"][0]["description"], n.text);
        assert_eq!(body["embeds"][0]["color"], 0xD0_30_30);
        assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
        let relayed = one("discord://t@1?api=http://127.0.0.1:9000/relay", &n);
        assert_eq!(
            relayed.url.as_str(),
            "http://127.0.0.1:9000/relay/api/webhooks/1/t"
        );
    }

    #[test]
    fn slack_posts_escaped_text_to_the_incoming_webhook() {
        let n = notice(Severity::Error);
        let request = one("slack://hook:T0001-B0002-XXXX@webhook", &n);
        assert_eq!(
            request.url.as_str(),
            "https://hooks.slack.com/services/T0001/B0002/XXXX"
        );
        assert_eq!(
            json(&request)["text"],
            "*backup failed on db-backup (postgresql app)*\n\
             pg_dump failed: connection refused &lt;db:5432&gt; &amp; more"
        );
    }

    #[test]
    fn telegram_sends_one_message_per_chat() {
        let n = notice(Severity::Error);
        let requests = render(
            &Destination::parse("telegram://123:AbC@telegram?chats=-1001234,@ops,-1005:7").unwrap(),
            &n,
        );
        let urls: Vec<&str> = requests.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(urls, ["https://api.telegram.org/bot123:AbC/sendMessage"; 3]);
        let bodies: Vec<serde_json::Value> = requests.iter().map(json).collect();
        assert_eq!(bodies[0]["chat_id"], -1_001_234);
        assert_eq!(bodies[1]["chat_id"], "@ops");
        assert_eq!(bodies[2]["chat_id"], -1005);
        assert_eq!(bodies[2]["message_thread_id"], 7);
        assert!(bodies[0].get("message_thread_id").is_none());
        assert_eq!(bodies[0]["text"], format!("{}\n\n{}", n.title, n.text));
        assert!(bodies[0].get("parse_mode").is_none());
    }

    #[test]
    fn smtp_is_not_rendered_as_http() {
        let smtp = Destination::parse("smtp://mail/?from=a@x&to=b@y").unwrap();
        assert!(render(&smtp, &notice(Severity::Error)).is_empty());
    }

    #[test]
    fn a_quoted_answer_is_short_one_line_and_masks_the_secrets() {
        let telegram = Destination::parse("telegram://123:AbCdEf@telegram?chats=1").unwrap();
        let answer = quoted_answer(&telegram, "{\"description\":\"bot123:AbCdEf\nnot found\"}");
        assert_eq!(answer, "{\"description\":\"bot*** not found\"}");
        let long = quoted_answer(&telegram, &"x".repeat(5000));
        assert_eq!(long.chars().count(), MAX_ANSWER_QUOTED);
        let webhook = Destination::parse("https://h.example/in/s3cr3tpath?k=v4lue").unwrap();
        let answer = quoted_answer(&webhook, "no hook s3cr3tpath (k=v4lue)");
        assert_eq!(answer, "no hook *** (k=***)");
    }

    #[test]
    fn a_request_debugs_without_its_secrets() {
        let request = one(
            "telegram://123:AbCdEf@telegram?chats=1",
            &notice(Severity::Error),
        );
        let shown = format!("{request:?}");
        assert!(!shown.contains("AbCdEf"), "{shown}");
        assert!(shown.contains("api.telegram.org"), "{shown}");
    }

    #[test]
    fn clipping_keeps_characters_whole() {
        assert_eq!(clip_chars("abcdef", 4), "abc…");
        assert_eq!(clip_chars("abc", 4), "abc");
        assert_eq!(clip_bytes("ééé", 5), "é…");
        assert_eq!(clip_bytes("abc", 5), "abc");
    }
}
