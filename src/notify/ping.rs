//! `BACKUP_PING_URL`: a healthchecks.io-style dead-man's switch. A backup
//! starting sends `GET <url>/start`, a success `GET <url>`, a failure
//! `POST <url>/fail` with the error as the body; the service raises the
//! alarm when the pings stop. An Uptime Kuma push URL (`…/api/push/TOKEN`)
//! is told in its own words: `?status=up` on success, `?status=down&msg=…`
//! on failure, nothing at the start (a push monitor has no start signal).
//!
//! The URL is a secret (its path is the check's key): it is shown as
//! `scheme://host/***` only.

use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::DeliveryError;
use crate::events::{Event, FailureKind};

/// The `destination_kind` of the ping in metrics and logs.
pub const PING_KIND: &str = "ping";

/// A parsed `BACKUP_PING_URL`. Debug and Display are masked.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl {
    url: Url,
}

impl std::fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PingUrl({self})")
    }
}

/// `https://hc-ping.com/***`: the scheme and host, never the path or query.
impl std::fmt::Display for PingUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}",
            self.url.scheme(),
            self.url.host_str().unwrap_or("")
        )?;
        if let Some(port) = self.url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str("/***")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMethod {
    Get,
    Post,
}

/// One ping to send. Its Debug is masked (the URL is the secret).
#[derive(Clone, PartialEq, Eq)]
pub struct PingRequest {
    /// `start`, `success`, `fail` or `test`.
    pub signal: &'static str,
    pub method: PingMethod,
    pub url: Url,
    /// The error, for `fail`.
    pub body: Option<String>,
    /// `scheme://host/***`, for logs.
    pub masked: String,
}

impl std::fmt::Debug for PingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PingRequest({:?} {} {})",
            self.method, self.signal, self.masked
        )
    }
}

/// The failure reason a ping body carries at most (healthchecks.io keeps
/// the first 100 kB; an error message is far shorter, this is a bound).
const MAX_BODY: usize = 10_000;

impl PingUrl {
    /// Parses `BACKUP_PING_URL`; `source` names the variable (or its
    /// `_FILE`). The error never shows the URL's path or query.
    pub fn parse(raw: &str, source: &str) -> Result<Self, String> {
        let url = Url::parse(raw.trim()).map_err(|e| {
            format!("{source} is not a URL ({e}); expected https://hc-ping.com/<uuid> or similar")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{source} must be an http:// or https:// URL with a host, not {}://…",
                url.scheme()
            ));
        }
        Ok(PingUrl { url })
    }

    fn is_uptime_kuma(&self) -> bool {
        self.url.path().contains("/api/push/")
    }

    /// The ping for `event`: backup started, finished, failed. A shutdown
    /// or a skipped run sends nothing.
    pub fn request(&self, event: &Event) -> Option<PingRequest> {
        match event {
            Event::BackupStarted(_) => self.start(),
            Event::BackupFinished(_) => Some(self.success()),
            Event::BackupFailed(failed)
                if !matches!(
                    failed.error.kind,
                    FailureKind::Cancelled | FailureKind::Busy
                ) =>
            {
                Some(self.fail(&failed.error.message))
            }
            _ => None,
        }
    }

    fn start(&self) -> Option<PingRequest> {
        if self.is_uptime_kuma() {
            return None;
        }
        Some(self.build(
            "start",
            PingMethod::Get,
            with_suffix(&self.url, "start"),
            None,
        ))
    }

    pub fn success(&self) -> PingRequest {
        let url = if self.is_uptime_kuma() {
            with_query(&self.url, &[("status", "up"), ("msg", "OK")])
        } else {
            self.url.clone()
        };
        self.build("success", PingMethod::Get, url, None)
    }

    pub fn fail(&self, error: &str) -> PingRequest {
        let mut body = error.to_string();
        if body.len() > MAX_BODY {
            let mut cut = MAX_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        if self.is_uptime_kuma() {
            // Kuma shows `msg`; a long one is cut to what a URL carries well.
            let short: String = body.chars().take(200).collect();
            let url = with_query(&self.url, &[("status", "down"), ("msg", &short)]);
            return self.build("fail", PingMethod::Get, url, None);
        }
        self.build(
            "fail",
            PingMethod::Post,
            with_suffix(&self.url, "fail"),
            Some(body),
        )
    }

    /// What `backupd notify-test` sends: healthchecks.io's `/log`, which
    /// records the message without changing the check's state; an Uptime
    /// Kuma push URL has no such signal and gets `status=up`.
    pub fn test(&self) -> PingRequest {
        const MESSAGE: &str = "backupd notify-test";
        if self.is_uptime_kuma() {
            let url = with_query(&self.url, &[("status", "up"), ("msg", MESSAGE)]);
            return self.build("test", PingMethod::Get, url, None);
        }
        self.build(
            "test",
            PingMethod::Post,
            with_suffix(&self.url, "log"),
            Some(MESSAGE.into()),
        )
    }

    fn build(
        &self,
        signal: &'static str,
        method: PingMethod,
        url: Url,
        body: Option<String>,
    ) -> PingRequest {
        PingRequest {
            signal,
            method,
            url,
            body,
            masked: self.to_string(),
        }
    }
}

/// `https://hc-ping.com/UUID?x=1` + `start` → `https://hc-ping.com/UUID/start?x=1`.
fn with_suffix(url: &Url, suffix: &str) -> Url {
    let mut url = url.clone();
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/{suffix}"));
    url
}

/// Sets `pairs` in the query, replacing keys of the same name.
fn with_query(url: &Url, pairs: &[(&str, &str)]) -> Url {
    let mut url = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !pairs.iter().any(|(name, _)| name == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .extend_pairs(pairs.iter().copied());
    url
}

/// Sends one ping, once (the notifier retries). The seam between the
/// notifier and the network for the ping.
#[async_trait]
pub trait Ping: Send + Sync {
    async fn ping(&self, request: &PingRequest) -> Result<(), DeliveryError>;
}

/// The real ping: one reqwest client.
#[derive(Debug, Clone)]
pub struct HttpPing {
    client: reqwest::Client,
}

impl HttpPing {
    /// `timeout` bounds each request (the notifier bounds each attempt too).
    pub fn new(timeout: Duration) -> Result<Self, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("backupd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                DeliveryError::new(format!(
                    "cannot set up the HTTP client for the ping: {}",
                    e.without_url()
                ))
            })?;
        Ok(HttpPing { client })
    }
}

#[async_trait]
impl Ping for HttpPing {
    async fn ping(&self, request: &PingRequest) -> Result<(), DeliveryError> {
        let builder = match request.method {
            PingMethod::Get => self.client.get(request.url.clone()),
            PingMethod::Post => self
                .client
                .post(request.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(request.body.clone().unwrap_or_default()),
        };
        let response = builder.send().await.map_err(|e| {
            DeliveryError::new(format!(
                "not reached ({}): {}",
                request.signal,
                crate::error::error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::new(format!(
                "HTTP {} ({})",
                status.as_u16(),
                request.signal
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;
    use crate::events::{BackupFailed, BackupFinished, Failure};

    fn ping(raw: &str) -> PingUrl {
        PingUrl::parse(raw, "BACKUP_PING_URL").unwrap()
    }

    fn failed(kind: FailureKind) -> Event {
        BackupFailed {
            error: Failure::new(kind, "database is locked"),
            ..samples::backup_failed()
        }
        .into()
    }

    fn finished() -> Event {
        BackupFinished {
            file: "/backups/x".into(),
            sha256: String::new(),
            ..samples::backup_finished()
        }
        .into()
    }

    fn started() -> Event {
        samples::backup_started()
    }

    #[test]
    fn start_success_and_fail_follow_healthchecks_io() {
        let url = ping("https://hc-ping.com/0b1c-uuid");
        let start = url.request(&started()).unwrap();
        assert_eq!(start.method, PingMethod::Get);
        assert_eq!(start.url.as_str(), "https://hc-ping.com/0b1c-uuid/start");
        let success = url.request(&finished()).unwrap();
        assert_eq!(success.url.as_str(), "https://hc-ping.com/0b1c-uuid");
        let fail = url.request(&failed(FailureKind::Database)).unwrap();
        assert_eq!(fail.method, PingMethod::Post);
        assert_eq!(fail.url.as_str(), "https://hc-ping.com/0b1c-uuid/fail");
        assert_eq!(fail.body.as_deref(), Some("database is locked"));
        assert_eq!(url.request(&failed(FailureKind::Cancelled)), None);
        assert_eq!(url.request(&failed(FailureKind::Busy)), None);
    }

    #[test]
    fn the_suffix_goes_before_the_query_and_after_one_slash() {
        let url = ping("https://hc-ping.com/ping/KEY/db-backup/?create=1");
        assert_eq!(
            url.request(&started()).unwrap().url.as_str(),
            "https://hc-ping.com/ping/KEY/db-backup/start?create=1"
        );
        assert_eq!(
            url.fail("x").url.as_str(),
            "https://hc-ping.com/ping/KEY/db-backup/fail?create=1"
        );
        assert_eq!(
            url.success().url.as_str(),
            "https://hc-ping.com/ping/KEY/db-backup/?create=1"
        );
        assert_eq!(
            url.test().url.as_str(),
            "https://hc-ping.com/ping/KEY/db-backup/log?create=1"
        );
        let bare = ping("http://127.0.0.1:8000");
        assert_eq!(bare.fail("x").url.as_str(), "http://127.0.0.1:8000/fail");
    }

    #[test]
    fn an_uptime_kuma_push_url_gets_status_up_or_down() {
        let url = ping("https://kuma.example/api/push/Tok3n?status=up&msg=OK&ping=");
        assert_eq!(url.request(&started()), None);
        let up = url.success();
        assert_eq!(up.method, PingMethod::Get);
        assert_eq!(
            up.url.as_str(),
            "https://kuma.example/api/push/Tok3n?ping=&status=up&msg=OK"
        );
        let down = url.fail("database is locked");
        assert_eq!(down.method, PingMethod::Get);
        assert_eq!(
            down.url.as_str(),
            "https://kuma.example/api/push/Tok3n?ping=&status=down&msg=database+is+locked"
        );
    }

    #[test]
    fn the_url_is_masked_everywhere_it_is_shown() {
        let url = ping("https://user:pw@hc-ping.com:8443/s3cret-uuid?k=v");
        assert_eq!(url.to_string(), "https://hc-ping.com:8443/***");
        let request = url.fail("boom");
        for shown in [
            format!("{url:?}"),
            format!("{request:?}"),
            request.masked.clone(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("pw"), "{shown}");
        }
    }

    #[test]
    fn a_bad_ping_url_is_refused_naming_the_variable() {
        let e = PingUrl::parse("hc-ping.com/uuid", "BACKUP_PING_URL").unwrap_err();
        assert!(e.starts_with("BACKUP_PING_URL"), "{e}");
        let e = PingUrl::parse("ftp://host/s3cret", "BACKUP_PING_URL_FILE").unwrap_err();
        assert!(
            e.contains("BACKUP_PING_URL_FILE") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let url = ping("https://hc-ping.com/uuid");
        let long = "é".repeat(MAX_BODY);
        let body = url.fail(&long).body.unwrap();
        assert!(body.len() <= MAX_BODY);
        assert!(body.chars().all(|c| c == 'é'));
    }
}
