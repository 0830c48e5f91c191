//! `NOTIFY_URLS`: one URL per destination, in the style of shoutrrr and
//! Apprise. Parsing checks every URL at start-up; a destination displays
//! itself with its secrets masked.

use url::Url;

/// A secret inside a destination URL (a token, a password): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlSecret(pub String);

impl UrlSecret {
    pub fn expose(&self) -> &str {
        &self.0
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `http(s)://…`: POST of the webhook JSON document.
    Webhook { url: Url },
    /// `ntfy://[user:pass@]host[:port]/topic`, `ntfys://…` (HTTPS).
    Ntfy {
        /// `http(s)://host[:port]`
        server: Url,
        topic: String,
        auth: Option<(String, UrlSecret)>,
    },
    /// `gotify://host[:port][/path]/TOKEN` (HTTPS; `?disabletls=yes` for HTTP).
    Gotify { server: Url, token: UrlSecret },
    /// `discord://TOKEN@WEBHOOK_ID`
    Discord {
        api: Url,
        webhook_id: String,
        token: UrlSecret,
    },
    /// `slack://hook:TOKEN@webhook`, TOKEN being `T…/B…/…` of an incoming
    /// webhook (with `/` or `-` between the parts).
    Slack { api: Url, token: UrlSecret },
    /// `telegram://TOKEN@telegram?chats=ID[,ID]`
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
}
