//! `NOTIFY_URLS`: one URL per destination, in the style of shoutrrr and
//! Apprise. Parsing checks every URL at start-up; a destination displays
//! itself with its secrets masked.
//!
//! Where the two disagree this follows shoutrrr (its documentation at
//! containrrr.dev/shoutrrr): `ntfy://` is HTTPS unless `?scheme=http`
//! (Apprise reads `ntfy://` as plain HTTP; here `ntfys://` is accepted as
//! HTTPS too, so neither spelling sends a password in the clear by
//! surprise); `smtp://` without a port is port 25. Query parameter names are
//! matched in any case; an unknown one is an error, so a typo (`chat=` for
//! `chats=`) stops start-up instead of silently changing nothing. Query
//! values are percent-decoded only: a `+` stays a `+` (`ops+backup@…`).

use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{Error, Result};

/// A secret inside a destination URL (a token, a password): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlSecret(pub String);

impl UrlSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UrlSecret {
    fn from(secret: &str) -> Self {
        UrlSecret(secret.to_string())
    }
}

impl std::fmt::Debug for UrlSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One parsed entry of `NOTIFY_URLS`.
///
/// `api` fields are the service's public API by default
/// (`https://discord.com`, `https://hooks.slack.com`,
/// `https://api.telegram.org`); the `api=` query parameter points them at a
/// relay or a self-hosted server (the Telegram Bot API server), and at the
/// loopback receiver in the tests.
///
/// `Debug` is the masked [`Display`](fmt::Display): a webhook URL is a
/// secret as a whole.
#[derive(Clone, PartialEq, Eq)]
pub enum Destination {
    /// `http(s)://…`: POST of the webhook JSON document. The URL may carry
    /// `user:pass@` (sent as Basic auth) and tokens in its path or query.
    Webhook { url: Url },
    /// `ntfy://[user:pass@]host[:port]/topic` (HTTPS; `?scheme=http` for
    /// HTTP), `ntfys://…` (HTTPS). `ntfy://:TOKEN@host/topic` is an access
    /// token (empty user name). The topic is a secret on public servers:
    /// whoever knows it reads the messages.
    Ntfy {
        /// `http(s)://host[:port]/`
        server: Url,
        topic: UrlSecret,
        auth: Option<(String, UrlSecret)>,
    },
    /// `gotify://host[:port][/path]/TOKEN` (HTTPS; `?disabletls=yes` for HTTP).
    /// `server` keeps the path prefix, with a trailing slash.
    Gotify { server: Url, token: UrlSecret },
    /// `discord://TOKEN@WEBHOOK_ID`
    Discord {
        api: Url,
        webhook_id: String,
        token: UrlSecret,
    },
    /// `slack://hook:TOKEN@webhook` (or shoutrrr's older `slack://TOKEN`),
    /// TOKEN being `T…/B…/…` of an incoming webhook (with `/` or `-` between
    /// the parts). Kept as `T…/B…/…`.
    Slack { api: Url, token: UrlSecret },
    /// `telegram://TOKEN@telegram?chats=ID[,ID]` (`channels=` as in older
    /// shoutrrr URLs). A chat is a numeric id or `@channelname`, with
    /// `:THREAD_ID` for a topic of a forum group.
    Telegram {
        api: Url,
        token: UrlSecret,
        chats: Vec<String>,
    },
    /// `smtp://[user:pass@]host[:port]/?from=…&to=…[,…]&starttls=yes|no`
    Smtp(SmtpDestination),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpDestination {
    pub host: String,
    pub port: u16,
    pub auth: Option<(String, UrlSecret)>,
    pub from: String,
    pub to: Vec<String>,
    pub security: SmtpSecurity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// STARTTLS required (`starttls=yes`, the default on other ports).
    StartTls,
    /// Plain text (`starttls=no`): only for a relay on a trusted network.
    Plain,
}

/// Why one URL is not a destination: the URL masked, and what is wrong
/// with it including the form it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{masked}: {reason}")]
pub struct InvalidDestination {
    pub masked: String,
    pub reason: String,
}

pub const DEFAULT_DISCORD_API: &str = "https://discord.com";
pub const DEFAULT_SLACK_API: &str = "https://hooks.slack.com";
pub const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";
const DEFAULT_NTFY_HOST: &str = "ntfy.sh";
const DEFAULT_SMTP_PORT: u16 = 25;

const NTFY_FORM: &str = "ntfy://[user:pass@]host[:port]/topic[?scheme=http]";
const GOTIFY_FORM: &str = "gotify://host[:port][/path]/TOKEN[?disabletls=yes]";
const DISCORD_FORM: &str = "discord://TOKEN@WEBHOOK_ID";
const SLACK_FORM: &str = "slack://hook:T…/B…/…@webhook";
const TELEGRAM_FORM: &str = "telegram://TOKEN@telegram?chats=ID[,ID]";
const SMTP_FORM: &str = "smtp://[user:pass@]host[:port]/?from=…&to=…[,…][&starttls=yes|no]";

impl Destination {
    /// The `destination_kind` label: `webhook`, `ntfy`, `gotify`, `discord`,
    /// `slack`, `telegram`, `smtp` (and `ping` for `BACKUP_PING_URL`).
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook { .. } => "webhook",
            Destination::Ntfy { .. } => "ntfy",
            Destination::Gotify { .. } => "gotify",
            Destination::Discord { .. } => "discord",
            Destination::Slack { .. } => "slack",
            Destination::Telegram { .. } => "telegram",
            Destination::Smtp(_) => "smtp",
        }
    }

    /// This destination, split into one per Telegram chat (any other: itself).
    pub fn one_per_chat(self) -> Vec<Destination> {
        match self {
            Destination::Telegram { api, token, chats } if chats.len() > 1 => chats
                .into_iter()
                .map(|chat| Destination::Telegram {
                    api: api.clone(),
                    token: token.clone(),
                    chats: vec![chat],
                })
                .collect(),
            other => vec![other],
        }
    }

    /// Parses one URL (already trimmed). The error names the URL masked.
    pub fn parse(raw: &str) -> Result<Destination, InvalidDestination> {
        let invalid = |reason: String| InvalidDestination {
            masked: mask_raw(raw),
            reason,
        };
        let Some((scheme, _)) = raw.split_once("://") else {
            return Err(invalid(
                "not a URL; each entry is scheme://…, e.g. https://… or ntfy://host/topic"
                    .to_string(),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            // Slack's token holds '/', which a URL parser reads as the end
            // of the user info: taken apart by hand.
            "slack" => parse_slack(raw).map_err(invalid),
            "http" | "https" | "ntfy" | "ntfys" | "gotify" | "discord" | "telegram" | "smtp" => {
                let url = Url::parse(raw).map_err(|e| invalid(format!("not a valid URL ({e})")))?;
                match url.scheme() {
                    "http" | "https" => parse_webhook(url),
                    "ntfy" | "ntfys" => parse_ntfy(&url),
                    "gotify" => parse_gotify(&url),
                    "discord" => parse_discord(&url),
                    "telegram" => parse_telegram(&url),
                    _ => parse_smtp(&url),
                }
                .map_err(invalid)
            }
            other => Err(invalid(format!(
                "unknown kind of destination '{other}'; one of https, http, ntfy, ntfys, \
                 gotify, discord, slack, telegram, smtp"
            ))),
        }
    }
}

/// Every destination in `raw` (the value of `source`: `NOTIFY_URLS` or
/// `NOTIFY_URLS_FILE (path)`), in order.
///
/// Entries are separated by commas or line breaks; empty entries are
/// ignored. A Telegram URL naming several chats becomes one destination
/// per chat, so each is retried (and counted) on its own: a retry after one
/// chat failed does not repeat the message in the chats that got it. Some URLs hold commas themselves (`chats=1,2`, `to=a@x,b@y`):
/// a piece that does not begin with `scheme://` belongs to the entry before it.
pub fn parse_list(source: &str, raw: &str) -> Result<Vec<Destination>> {
    let mut entries: Vec<String> = Vec::new();
    for piece in raw.split([',', '\n']) {
        let piece = piece.trim_matches(|c: char| c.is_whitespace());
        if piece.is_empty() {
            continue;
        }
        match entries.last_mut() {
            Some(last) if !starts_with_scheme(piece) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => entries.push(piece.to_string()),
        }
    }
    let mut destinations = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let destination = Destination::parse(entry)
            .map_err(|e| Error::Config(format!("{source}, entry {}: {e}", index + 1)))?;
        destinations.extend(destination.one_per_chat());
    }
    Ok(destinations)
}

/// `scheme://` at the start: letters, digits, `+`, `-`, `.` after a letter.
fn starts_with_scheme(piece: &str) -> bool {
    let Some((scheme, _)) = piece.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A URL as given, masked for an error message before (or without) being
/// understood: the scheme, the user name, the host and port; the password
/// and everything after the host become `***`.
pub fn mask_raw(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return "(not a URL: not shown)".to_string();
    };
    let (userinfo, after) = match userinfo_end(rest) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, tail) = after.split_at(host_end);
    let mut masked = format!("{scheme}://");
    match userinfo.map(|u| u.split_once(':')) {
        Some(Some((user, _))) => masked.push_str(&format!("{user}:***@")),
        Some(None) => masked.push_str("***@"),
        None => {}
    }
    masked.push_str(host);
    if !tail.is_empty() && tail != "/" {
        masked.push_str("/***");
    } else {
        masked.push_str(tail);
    }
    masked
}

/// Where the user info of `rest` (a URL after its `://`) ends: at the last
/// '@' before the query. A password may hold an unencoded '/', '@' or '?',
/// a query an e-mail address, so the query begins only at a '?' that
/// follows a host: after an '@' and a `host[:port]` (a path may follow),
/// or with no '@' after it (then nothing after it is user info). When in
/// doubt more is masked, never less.
fn userinfo_end(rest: &str) -> Option<usize> {
    let query = rest
        .match_indices('?')
        .map(|(at, _)| at)
        .find(|&at| match rest[..at].rfind('@') {
            Some(user_end) => looks_like_host(&rest[user_end + 1..at]),
            None => !rest[at..].contains('@'),
        })
        .unwrap_or(rest.len());
    rest[..query].rfind('@')
}

/// `host[:port]`, a path possibly after it: what follows a URL's user info.
fn looks_like_host(text: &str) -> bool {
    let authority = text.split('/').next().unwrap_or(text);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    let bracketed = host.starts_with('[') && host.ends_with(']');
    !host.is_empty()
        && (bracketed
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~' | '%')))
}

/// The query parameters, names lower-cased, values percent-decoded (a `+`
/// stays a `+`); an unknown name or a repeated one is an error.
fn query(
    url: &Url,
    known: &[&str],
    form: &str,
) -> std::result::Result<Vec<(String, String)>, String> {
    query_of(url.query().unwrap_or(""), known, form)
}

fn query_of(
    raw: &str,
    known: &[&str],
    form: &str,
) -> std::result::Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?.to_ascii_lowercase();
        if !known.contains(&name.as_str()) {
            return Err(if known.is_empty() {
                format!("unknown parameter '{name}' (this kind takes none); the form is {form}")
            } else {
                format!(
                    "unknown parameter '{name}' (known: {}); the form is {form}",
                    known.join(", ")
                )
            });
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(format!("parameter '{name}' is given twice"));
        }
        pairs.push((name, decode(value)?));
    }
    Ok(pairs)
}

fn param<'a>(pairs: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| names.contains(&n.as_str()))
        .map(|(_, v)| v.as_str())
}

fn decode(raw: &str) -> std::result::Result<String, String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a percent-encoded part is not UTF-8".to_string())
}

fn yes_no(name: &str, value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        other => Err(format!("{name} must be yes or no, not '{other}'")),
    }
}

/// `user:pass@` of the URL, decoded: `None` without a password.
fn credentials(url: &Url) -> std::result::Result<Option<(String, UrlSecret)>, String> {
    match url.password() {
        None if url.username().is_empty() => Ok(None),
        None => Err("a user name without a password (user:pass@host)".to_string()),
        Some(password) => Ok(Some((
            decode(url.username())?,
            UrlSecret(decode(password)?),
        ))),
    }
}

/// The `api=` parameter (an http or https base URL), or `default`.
fn api_base(pairs: &[(String, String)], default: &str) -> std::result::Result<Url, String> {
    let Some(raw) = param(pairs, &["api"]) else {
        return Ok(Url::parse(default).expect("the default API URL parses"));
    };
    let mut url = Url::parse(raw).map_err(|e| format!("api= is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("api= must be an http:// or https:// URL".to_string());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn host_of(url: &Url, form: &str) -> std::result::Result<String, String> {
    match url.host_str() {
        Some(host) if !host.is_empty() => Ok(host.to_string()),
        _ => Err(format!("no host; the form is {form}")),
    }
}

fn server_url(
    scheme: &str,
    host: &str,
    port: Option<u16>,
    path: &str,
) -> std::result::Result<Url, String> {
    let authority = match port {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Url::parse(&format!("{scheme}://{authority}{path}"))
        .map_err(|e| format!("the server address is not valid ({e})"))
}

fn parse_webhook(url: Url) -> std::result::Result<Destination, String> {
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host; the form is https://host/path".to_string());
    }
    if url.password().is_none() && !url.username().is_empty() {
        return Err("a user name without a password (https://user:pass@host/…)".to_string());
    }
    Ok(Destination::Webhook { url })
}

fn parse_ntfy(url: &Url) -> std::result::Result<Destination, String> {
    let pairs = query(url, &["scheme"], NTFY_FORM)?;
    let scheme = match (url.scheme(), param(&pairs, &["scheme"])) {
        ("ntfys", Some(s)) if !s.eq_ignore_ascii_case("https") => {
            return Err("ntfys:// is HTTPS; use ntfy://…?scheme=http for plain HTTP".to_string());
        }
        (_, Some(s)) if s.eq_ignore_ascii_case("http") => "http",
        (_, Some(s)) if s.eq_ignore_ascii_case("https") => "https",
        (_, Some(other)) => return Err(format!("scheme must be http or https, not '{other}'")),
        (_, None) => "https",
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_string(),
        _ => DEFAULT_NTFY_HOST.to_string(),
    };
    let topic = decode(url.path().trim_start_matches('/'))?;
    if topic.is_empty() || topic.contains('/') {
        return Err(format!("one topic is required; the form is {NTFY_FORM}"));
    }
    let auth = match url.password() {
        // An access token alone (ntfy://:tk_…@host/topic) or user and password.
        Some(password) => Some((decode(url.username())?, UrlSecret(decode(password)?))),
        None if url.username().is_empty() => None,
        None => {
            return Err(format!(
                "a user name without a password; the form is {NTFY_FORM} \
                 (an access token: ntfy://:TOKEN@host/topic)"
            ));
        }
    };
    Ok(Destination::Ntfy {
        server: server_url(scheme, &host, url.port(), "/")?,
        topic: UrlSecret(topic),
        auth,
    })
}

fn parse_gotify(url: &Url) -> std::result::Result<Destination, String> {
    let pairs = query(url, &["disabletls"], GOTIFY_FORM)?;
    let plain = match param(&pairs, &["disabletls"]) {
        Some(value) => yes_no("disabletls", value)?,
        None => false,
    };
    let host = host_of(url, GOTIFY_FORM)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("no user info here; the form is {GOTIFY_FORM}"));
    }
    let path = url.path().trim_end_matches('/');
    let (prefix, token) = path.rsplit_once('/').unwrap_or(("", path));
    let token = decode(token)?;
    if token.is_empty() {
        return Err(format!("no application token; the form is {GOTIFY_FORM}"));
    }
    Ok(Destination::Gotify {
        server: server_url(
            if plain { "http" } else { "https" },
            &host,
            url.port(),
            &format!("{prefix}/"),
        )?,
        token: UrlSecret(token),
    })
}

fn parse_discord(url: &Url) -> std::result::Result<Destination, String> {
    let pairs = query(url, &["api"], DISCORD_FORM)?;
    let webhook_id = host_of(url, DISCORD_FORM)?;
    if !webhook_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "the webhook id '{webhook_id}' is not a number; the form is {DISCORD_FORM} \
             (from https://discord.com/api/webhooks/WEBHOOK_ID/TOKEN)"
        ));
    }
    let token = decode(url.username())?;
    if token.is_empty() || url.password().is_some() {
        return Err(format!("no token; the form is {DISCORD_FORM}"));
    }
    if !matches!(url.path(), "" | "/") || url.port().is_some() {
        return Err(format!(
            "nothing after the webhook id; the form is {DISCORD_FORM}"
        ));
    }
    Ok(Destination::Discord {
        api: api_base(&pairs, DEFAULT_DISCORD_API)?,
        webhook_id,
        token: UrlSecret(token),
    })
}

fn parse_slack(raw: &str) -> std::result::Result<Destination, String> {
    let rest = &raw["slack://".len()..];
    let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pairs = query_of(query, &["api"], SLACK_FORM)?;
    let token = match body.strip_prefix("hook:") {
        Some(hook) => {
            let Some((token, host)) = hook.rsplit_once('@') else {
                return Err(format!("no @webhook; the form is {SLACK_FORM}"));
            };
            if !host.trim_end_matches('/').eq_ignore_ascii_case("webhook") {
                return Err(format!(
                    "the host must be 'webhook' (incoming webhooks); the form is {SLACK_FORM}"
                ));
            }
            token
        }
        None if body.contains('@') => {
            return Err(format!(
                "only incoming webhooks are supported; the form is {SLACK_FORM}"
            ));
        }
        None => body.trim_end_matches('/'),
    };
    let token = decode(token)?;
    let parts: Vec<&str> = token.split(['/', '-']).collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(format!(
            "the token is not of the form T…/B…/… (three parts, / or - between them); \
             the form is {SLACK_FORM} (from https://hooks.slack.com/services/T…/B…/…)"
        ));
    }
    Ok(Destination::Slack {
        api: api_base(&pairs, DEFAULT_SLACK_API)?,
        token: UrlSecret(parts.join("/")),
    })
}

fn parse_telegram(url: &Url) -> std::result::Result<Destination, String> {
    let pairs = query(url, &["chats", "channels", "api"], TELEGRAM_FORM)?;
    if !host_of(url, TELEGRAM_FORM)?.eq_ignore_ascii_case("telegram")
        || !matches!(url.path(), "" | "/")
    {
        return Err(format!(
            "the host must be 'telegram'; the form is {TELEGRAM_FORM}"
        ));
    }
    // A bot token is `123456:ABC…`: a user name and a password to a URL parser.
    let token = match url.password() {
        Some(password) => format!("{}:{}", decode(url.username())?, decode(password)?),
        None => decode(url.username())?,
    };
    let (bot_id, secret) = token.split_once(':').unwrap_or(("", ""));
    if bot_id.is_empty() || !bot_id.chars().all(|c| c.is_ascii_digit()) || secret.is_empty() {
        return Err(format!(
            "no bot token of the form 123456:ABC…; the form is {TELEGRAM_FORM}"
        ));
    }
    let chats: Vec<String> = param(&pairs, &["chats", "channels"])
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if chats.is_empty() {
        return Err(format!("no chats; the form is {TELEGRAM_FORM}"));
    }
    if pairs
        .iter()
        .filter(|(n, _)| n == "chats" || n == "channels")
        .count()
        > 1
    {
        return Err("give chats= or channels=, not both".to_string());
    }
    Ok(Destination::Telegram {
        api: api_base(&pairs, DEFAULT_TELEGRAM_API)?,
        token: UrlSecret(token),
        chats,
    })
}

fn parse_smtp(url: &Url) -> std::result::Result<Destination, String> {
    let pairs = query(
        url,
        &["from", "fromaddress", "to", "toaddresses", "starttls"],
        SMTP_FORM,
    )?;
    let host = host_of(url, SMTP_FORM)?;
    if !matches!(url.path(), "" | "/") {
        return Err(format!(
            "nothing between the host and '?'; the form is {SMTP_FORM}"
        ));
    }
    let port = url.port().unwrap_or(DEFAULT_SMTP_PORT);
    let from = param(&pairs, &["from", "fromaddress"]).unwrap_or("").trim();
    if !from.contains('@') {
        return Err(format!(
            "from= must be an e-mail address; the form is {SMTP_FORM}"
        ));
    }
    let to: Vec<String> = param(&pairs, &["to", "toaddresses"])
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    if to.is_empty() {
        return Err(format!("to= names no recipient; the form is {SMTP_FORM}"));
    }
    if let Some(bad) = to.iter().find(|a| !a.contains('@')) {
        return Err(format!("to= holds '{bad}', not an e-mail address"));
    }
    let starttls = match param(&pairs, &["starttls"]) {
        Some(value) => yes_no("starttls", value)?,
        None => true,
    };
    let security = if port == 465 {
        SmtpSecurity::Tls
    } else if starttls {
        SmtpSecurity::StartTls
    } else {
        SmtpSecurity::Plain
    };
    Ok(Destination::Smtp(SmtpDestination {
        host,
        port,
        auth: credentials(url)?,
        from: from.to_string(),
        to,
        security,
    }))
}

/// `https://host[:port]` of a URL with its user info dropped, and the
/// path as `/***` when there is one: what a message may say about it.
fn masked_base(url: &Url) -> String {
    let user = match (url.username(), url.password()) {
        ("", None) => String::new(),
        ("", Some(_)) => "***@".to_string(),
        (user, _) => format!("{user}:***@"),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{}://{user}{}{port}",
        url.scheme(),
        url.host_str().unwrap_or("")
    )
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Webhook { url } => {
                let tail = if url.path() != "/" || url.query().is_some() {
                    "/***"
                } else {
                    "/"
                };
                write!(f, "webhook {}{tail}", masked_base(url))
            }
            Destination::Ntfy { server, auth, .. } => {
                let user = match auth {
                    Some((user, _)) if user.is_empty() => "***@".to_string(),
                    Some((user, _)) => format!("{user}:***@"),
                    None => String::new(),
                };
                let base = masked_base(server);
                let (scheme, host) = base.split_once("://").unwrap_or(("", &base));
                write!(f, "ntfy {scheme}://{user}{host}/***")
            }
            Destination::Gotify { server, .. } => {
                write!(f, "gotify {}{}***", masked_base(server), server.path())
            }
            Destination::Discord {
                api, webhook_id, ..
            } => write!(
                f,
                "discord {}{}api/webhooks/{webhook_id}/***",
                masked_base(api),
                api.path()
            ),
            Destination::Slack { api, .. } => {
                write!(f, "slack {}{}services/***", masked_base(api), api.path())
            }
            Destination::Telegram { api, chats, .. } => write!(
                f,
                "telegram {}{}bot***/ chats {}",
                masked_base(api),
                api.path(),
                chats.join(",")
            ),
            Destination::Smtp(smtp) => write!(f, "{smtp}"),
        }
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination({self})")
    }
}

impl fmt::Display for SmtpDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = match &self.auth {
            Some((user, _)) => format!("{user}:***@"),
            None => String::new(),
        };
        let security = match self.security {
            SmtpSecurity::Tls => "TLS",
            SmtpSecurity::StartTls => "STARTTLS",
            SmtpSecurity::Plain => "plain",
        };
        write!(
            f,
            "smtp {user}{}:{} ({security}) to {}",
            self.host,
            self.port,
            self.to.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Destination {
        Destination::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn url(raw: &str) -> Url {
        Url::parse(raw).unwrap()
    }

    fn secret(s: &str) -> UrlSecret {
        UrlSecret(s.to_string())
    }

    /// Parses `raw`, checks that none of `secrets` shows in Display, Debug,
    /// and returns the masked display.
    fn shown(raw: &str, secrets: &[&str]) -> String {
        let destination = parse(raw);
        let display = destination.to_string();
        let debug = format!("{destination:?}");
        for secret in secrets {
            assert!(!display.contains(secret), "{secret} in {display}");
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        display
    }

    #[test]
    fn webhooks_are_http_or_https_urls_shown_without_path_or_password() {
        assert_eq!(
            parse("https://hooks.example.com/in/abc123?key=k1"),
            Destination::Webhook {
                url: url("https://hooks.example.com/in/abc123?key=k1")
            }
        );
        assert_eq!(
            shown(
                "https://hooks.example.com/in/abc123?key=k1",
                &["abc123", "k1"]
            ),
            "webhook https://hooks.example.com/***"
        );
        assert_eq!(
            shown("http://bob:pw9@10.0.0.5:8080/h00k", &["pw9", "h00k"]),
            "webhook http://bob:***@10.0.0.5:8080/***"
        );
        assert_eq!(
            shown("https://example.com", &[]),
            "webhook https://example.com/"
        );
    }

    #[test]
    fn ntfy_is_https_unless_asked_otherwise_with_optional_user_token_and_port() {
        assert_eq!(
            parse("ntfy://ntfy.example/backups"),
            Destination::Ntfy {
                server: url("https://ntfy.example/"),
                topic: secret("backups"),
                auth: None,
            }
        );
        assert_eq!(
            parse("ntfys://alice:s%2Fcret@ntfy.example:8443/backups"),
            Destination::Ntfy {
                server: url("https://ntfy.example:8443/"),
                topic: secret("backups"),
                auth: Some(("alice".into(), secret("s/cret"))),
            }
        );
        assert_eq!(
            parse("ntfy://alice:pw@127.0.0.1:8080/backups?scheme=http"),
            Destination::Ntfy {
                server: url("http://127.0.0.1:8080/"),
                topic: secret("backups"),
                auth: Some(("alice".into(), secret("pw"))),
            }
        );
        assert_eq!(
            parse("ntfy://:tk_abc@ntfy.example/backups"),
            Destination::Ntfy {
                server: url("https://ntfy.example/"),
                topic: secret("backups"),
                auth: Some((String::new(), secret("tk_abc"))),
            }
        );
        assert_eq!(
            shown(
                "ntfys://alice:hunter2@ntfy.example:8443/mytopic",
                &["hunter2", "mytopic"]
            ),
            "ntfy https://alice:***@ntfy.example:8443/***"
        );
        assert_eq!(
            shown(
                "ntfy://:tk_abc@ntfy.example/mytopic",
                &["tk_abc", "mytopic"]
            ),
            "ntfy https://***@ntfy.example/***"
        );
        assert_eq!(
            shown("ntfy://ntfy.sh/mytopic", &["mytopic"]),
            "ntfy https://ntfy.sh/***"
        );
        for bad in [
            "ntfy://ntfy.example/",
            "ntfy://ntfy.example/a/b",
            "ntfy://alice@ntfy.example/t",
            "ntfys://ntfy.example/t?scheme=http",
            "ntfy://ntfy.example/t?scheme=ftp",
            "ntfy://ntfy.example/t?priority=5",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gotify_takes_host_port_path_prefix_and_token() {
        assert_eq!(
            parse("gotify://gotify.example/AzyoeNS.D4iJLVa"),
            Destination::Gotify {
                server: url("https://gotify.example/"),
                token: secret("AzyoeNS.D4iJLVa"),
            }
        );
        assert_eq!(
            parse("gotify://example.com:8443/path/to/gotify/AzyoeNS.D4iJLVa/"),
            Destination::Gotify {
                server: url("https://example.com:8443/path/to/gotify/"),
                token: secret("AzyoeNS.D4iJLVa"),
            }
        );
        assert_eq!(
            parse("gotify://127.0.0.1:8080/Tok?DisableTLS=yes"),
            Destination::Gotify {
                server: url("http://127.0.0.1:8080/"),
                token: secret("Tok"),
            }
        );
        assert_eq!(
            shown("gotify://example.com/sub/AzyoeNS.D4iJLVa", &["AzyoeNS"]),
            "gotify https://example.com/sub/***"
        );
        for bad in [
            "gotify://example.com/",
            "gotify://example.com",
            "gotify://example.com/T?disabletls=maybe",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discord_takes_token_at_webhook_id() {
        assert_eq!(
            parse("discord://W3dE2OZz4C13_4z-uHfD@693853386302554172"),
            Destination::Discord {
                api: url(DEFAULT_DISCORD_API),
                webhook_id: "693853386302554172".into(),
                token: secret("W3dE2OZz4C13_4z-uHfD"),
            }
        );
        assert_eq!(
            parse("discord://tok@123?api=http://127.0.0.1:9000"),
            Destination::Discord {
                api: url("http://127.0.0.1:9000/"),
                webhook_id: "123".into(),
                token: secret("tok"),
            }
        );
        assert_eq!(
            shown(
                "discord://W3dE2OZz4C13@693853386302554172",
                &["W3dE2OZz4C13"]
            ),
            "discord https://discord.com/api/webhooks/693853386302554172/***"
        );
        for bad in [
            "discord://693853386302554172",
            "discord://tok@not-a-number",
            "discord://tok@123/extra",
            "discord://tok@123?api=ftp://x",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slack_takes_an_incoming_webhook_token_with_slashes_or_dashes() {
        let expected = Destination::Slack {
            api: url(DEFAULT_SLACK_API),
            token: secret("T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
        };
        for raw in [
            "slack://hook:T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX@webhook",
            "slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook",
            "slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook/",
            "slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        ] {
            assert_eq!(parse(raw), expected, "{raw}");
        }
        assert_eq!(
            parse("slack://hook:T1-B2-X3@webhook?api=http://127.0.0.1:9000/relay"),
            Destination::Slack {
                api: url("http://127.0.0.1:9000/relay/"),
                token: secret("T1/B2/X3"),
            }
        );
        assert_eq!(
            shown(
                "slack://hook:T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX@webhook",
                &["XXXXXXXX", "B00000000"]
            ),
            "slack https://hooks.slack.com/services/***"
        );
        for bad in [
            "slack://hook:T1-B2@webhook",
            "slack://hook:T1-B2-X3@example.com",
            "slack://hook:T1-B2-X3",
            "slack://bot@T1/B2/X3",
            "slack://hook:T1-B2-X$@webhook",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn telegram_takes_a_bot_token_and_one_or_more_chats() {
        assert_eq!(
            parse(
                "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=-1001234,@ops_channel,42:7"
            ),
            Destination::Telegram {
                api: url(DEFAULT_TELEGRAM_API),
                token: secret("110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
                chats: vec!["-1001234".into(), "@ops_channel".into(), "42:7".into()],
            }
        );
        assert_eq!(
            parse("telegram://1:abc@telegram/?channels=%40ops&api=http://127.0.0.1:8081"),
            Destination::Telegram {
                api: url("http://127.0.0.1:8081/"),
                token: secret("1:abc"),
                chats: vec!["@ops".into()],
            }
        );
        assert_eq!(
            shown(
                "telegram://110201543:AAHdqTcvCH1vG@telegram?chats=-100123,@ops",
                &["AAHdqTcvCH1vG", "110201543"]
            ),
            "telegram https://api.telegram.org/bot***/ chats -100123,@ops"
        );
        for bad in [
            "telegram://110201543:AAH@telegram",
            "telegram://110201543:AAH@telegram?chats=",
            "telegram://AAH@telegram?chats=1",
            "telegram://1:AAH@api.telegram.org?chats=1",
            "telegram://1:AAH@telegram?chats=1&channels=2",
            "telegram://1:AAH@telegram?chat=1",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smtp_takes_auth_port_from_to_and_starttls() {
        assert_eq!(
            parse(
                "smtp://me%40example.com:p%40ss@mail.example.com:465/?from=backupd@example.com&to=ops+db@example.com,oncall@example.com"
            ),
            Destination::Smtp(SmtpDestination {
                host: "mail.example.com".into(),
                port: 465,
                auth: Some(("me@example.com".into(), secret("p@ss"))),
                from: "backupd@example.com".into(),
                to: vec!["ops+db@example.com".into(), "oncall@example.com".into()],
                security: SmtpSecurity::Tls,
            })
        );
        let Destination::Smtp(starttls) = parse("smtp://relay.lan/?from=a@x&to=b@y&starttls=yes")
        else {
            panic!()
        };
        assert_eq!(
            (starttls.port, starttls.security, starttls.auth),
            (25, SmtpSecurity::StartTls, None)
        );
        let Destination::Smtp(default) =
            parse("smtp://u:p@mail:587/?fromAddress=a@x&toAddresses=b@y")
        else {
            panic!()
        };
        assert_eq!(
            (default.port, default.security),
            (587, SmtpSecurity::StartTls)
        );
        let Destination::Smtp(plain) = parse("smtp://relay.lan:2525/?from=a@x&to=b@y&StartTLS=no")
        else {
            panic!()
        };
        assert_eq!((plain.port, plain.security), (2525, SmtpSecurity::Plain));
        let Destination::Smtp(tls) = parse("smtp://mail:465/?from=a@x&to=b@y&starttls=no") else {
            panic!()
        };
        assert_eq!(
            tls.security,
            SmtpSecurity::Tls,
            "465 is TLS from the first byte"
        );
        assert_eq!(
            shown(
                "smtp://me:hunter2@mail.example.com:587/?from=a@x&to=b@y,c@z",
                &["hunter2"]
            ),
            "smtp me:***@mail.example.com:587 (STARTTLS) to b@y,c@z"
        );
        for bad in [
            "smtp://mail/?to=b@y",
            "smtp://mail/?from=a@x",
            "smtp://mail/?from=a@x&to=nobody",
            "smtp://mail/?from=a@x&to=b@y&starttls=maybe",
            "smtp://user@mail/?from=a@x&to=b@y",
            "smtp://mail/inbox?from=a@x&to=b@y",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_list_splits_at_commas_and_line_breaks_keeping_commas_inside_a_url() {
        let list = parse_list(
            "NOTIFY_URLS",
            " https://hooks.example.com/a ,, telegram://1:x@telegram?chats=1,2,\n\
             smtp://mail/?from=a@x&to=b@y,c@z\nntfy://ntfy.sh/t,",
        )
        .unwrap();
        let kinds: Vec<&str> = list.iter().map(Destination::kind).collect();
        assert_eq!(kinds, ["webhook", "telegram", "telegram", "smtp", "ntfy"]);
        let chats: Vec<&[String]> = list[1..3]
            .iter()
            .map(|d| match d {
                Destination::Telegram { chats, .. } => chats.as_slice(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(chats, [["1"], ["2"]], "one destination per chat");
        let Destination::Smtp(smtp) = &list[3] else {
            panic!()
        };
        assert_eq!(smtp.to, ["b@y", "c@z"]);
        assert!(parse_list("NOTIFY_URLS", "").unwrap().is_empty());
        assert!(parse_list("NOTIFY_URLS", " , \n").unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_is_named_by_variable_position_and_masked_url() {
        let err = parse_list(
            "NOTIFY_URLS",
            "https://ok.example/x,ntfy://alice:hunter2@ntfy.example/",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Config(_)));
        assert!(
            message.starts_with(
                "NOTIFY_URLS, entry 2: ntfy://alice:***@ntfy.example/: one topic is required"
            ),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        for (raw, secret) in [
            ("gopher://host/tok3n", "tok3n"),
            ("discord://s3cret@not-a-number", "s3cret"),
            ("slack://hook:T1-B2-s3cret@elsewhere", "s3cret"),
            ("telegram://1:s3cret@telegram", "s3cret"),
            ("smtp://u:s3cret@mail/?from=a@x", "s3cret"),
            ("https://u:s3cret@[::1/x", "s3cret"),
            ("ntfy://u:s3/xcr3t@host/t?bad=1", "xcr3t"),
            ("s3cret-without-scheme", "s3cret"),
        ] {
            let message = parse_list("NOTIFY_URLS_FILE (/run/secrets/n)", raw)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with("NOTIFY_URLS_FILE (/run/secrets/n), entry 1: "),
                "{message}"
            );
            assert!(!message.contains(secret), "{raw}: {message}");
        }
    }

    #[test]
    fn raw_urls_are_masked_before_they_are_understood() {
        assert_eq!(mask_raw("ntfy://a:b@h:1/t"), "ntfy://a:***@h:1/***");
        assert_eq!(mask_raw("discord://tok@123"), "discord://***@123");
        assert_eq!(
            mask_raw("slack://hook:T1/B2/X3@webhook"),
            "slack://hook:***@webhook"
        );
        assert_eq!(
            mask_raw("smtp://u:p@mail:25/?from=a@x&to=b@y"),
            "smtp://u:***@mail:25/***"
        );
        assert_eq!(mask_raw("https://h/"), "https://h/");
        assert_eq!(mask_raw("no scheme"), "(not a URL: not shown)");
        assert_eq!(
            mask_raw("smtp://u:p@mail:25?from=a@x&to=b@y"),
            "smtp://u:***@mail:25/***"
        );
        assert_eq!(mask_raw("https://h:8080?x=1"), "https://h:8080/***");
    }

    #[test]
    fn a_password_holding_a_question_mark_is_masked_whole() {
        for (raw, masked) in [
            (
                "ntfy://alice:se?cret@ntfy.example/t",
                "ntfy://alice:***@ntfy.example/***",
            ),
            (
                "ntfy://alice:12?cret@ntfy.example/t",
                "ntfy://alice:***@ntfy.example/***",
            ),
            ("gotify://h.example/p?a#s@s/x", "gotify://***@s/***"),
            (
                "smtp://u:p?a@ss@mail:25/?from=a@x&to=b@y",
                "smtp://u:***@mail:25/***",
            ),
            ("slack://hook:T1/B2?X3@webhook", "slack://hook:***@webhook"),
        ] {
            assert_eq!(mask_raw(raw), masked, "{raw}");
        }
        let error = parse_list("NOTIFY_URLS", "ntfy://alice:se?cret@ntfy.example/t")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("se?") && !error.contains("cret"), "{error}");
        assert!(error.contains("ntfy://alice:***@ntfy.example"), "{error}");
    }
}
