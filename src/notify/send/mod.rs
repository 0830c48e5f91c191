//! The real [`Deliver`](super::Deliver): HTTP for the web services, SMTP
//! for e-mail.

pub mod http;
pub mod smtp;

use std::time::Duration;

use async_trait::async_trait;

use super::{Deliver, DeliveryError, Destination, Notice};

/// The `User-Agent` of every notification request.
pub const USER_AGENT: &str = concat!("backupd/", env!("CARGO_PKG_VERSION"));

/// Delivers to every kind of destination: one HTTP client for the life of
/// the process (its connection pool and TLS set-up shared by every
/// notice), SMTP through [`smtp::deliver`].
#[derive(Debug, Clone)]
pub struct Delivery {
    client: reqwest::Client,
    timeout: Duration,
}

impl Delivery {
    /// `timeout` bounds each attempt: a request from connecting to the end
    /// of the answer, an SMTP session as a whole.
    ///
    /// Redirects are not followed: a webhook that moved is fixed in
    /// `NOTIFY_URLS`, rather than the notice (and its `Authorization`) sent
    /// on to wherever an answer points.
    pub fn new(timeout: Duration) -> Result<Self, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| {
                DeliveryError::new(format!(
                    "cannot set up the HTTP client for notifications: {}",
                    crate::error::error_chain(&e.without_url())
                ))
            })?;
        Ok(Delivery { client, timeout })
    }
}

#[async_trait]
impl Deliver for Delivery {
    async fn deliver(
        &self,
        destination: &Destination,
        notice: &Notice,
    ) -> Result<(), DeliveryError> {
        if let Destination::Smtp(smtp) = destination {
            return smtp::deliver(smtp, notice, self.timeout).await;
        }
        // Telegram sends one request per chat: every chat gets its try, and
        // the error names each that failed.
        let chats = match destination {
            Destination::Telegram { chats, .. } => chats.as_slice(),
            _ => &[],
        };
        let mut failures = Vec::new();
        for (index, request) in http::render(destination, notice).into_iter().enumerate() {
            if let Err(e) = http::send(&self.client, destination, request).await {
                failures.push(match chats.get(index) {
                    Some(chat) if chats.len() > 1 => format!("chat {chat}: {e}"),
                    _ => e.to_string(),
                });
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(DeliveryError::new(failures.remove(0))),
            n => Err(DeliveryError::new(format!(
                "{n} requests failed: {}",
                failures.join("; ")
            ))),
        }
    }
}
