//! Notifications: the places operators look (a webhook, ntfy, Gotify,
//! Discord, Slack, Telegram, e-mail) and a dead-man's switch ping.
//!
//! Data flows one way: an [`Event`](crate::events::Event) reaches the
//! [`notifier::Notifier`] (an observer: it never blocks the emitter), which
//! turns it into a [`Notice`] when `NOTIFY_LEVEL` asks for it and queues it;
//! its own task hands each notice to every [`Destination`] through the
//! [`Deliver`] seam, with a timeout per attempt and a few retries, then
//! counts the result. [`send::Delivery`] is the real implementation (HTTP
//! and SMTP); tests of the orchestration use a recording fake.
//!
//! Secrets live inside destination URLs (tokens, passwords): a
//! [`Destination`] displays itself masked, and a [`DeliveryError`] is built
//! masked, so no log line, status field or error carries them.

pub mod destination;
pub mod message;
pub mod notifier;
pub mod ping;
pub mod send;

use async_trait::async_trait;

pub use destination::Destination;
pub use message::{Notice, Severity};

/// Why one delivery attempt failed, in one masked line ("HTTP 500: …",
/// "no answer in time"). It does not name the destination: whoever reports
/// it puts the destination before it ("ntfy https://ntfy.sh/***: HTTP 500").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    message: String,
    retry: bool,
}

impl DeliveryError {
    /// A failure another attempt may mend (no answer, HTTP 500, a refusal).
    pub fn new(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            retry: true,
        }
    }

    /// A failure after which another attempt would repeat what already
    /// arrived: an e-mail accepted for some recipients and refused for the
    /// others. Counted failed and recorded, never retried.
    pub fn not_retried(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            retry: false,
        }
    }

    /// Whether the notifier tries again after its pause.
    pub fn retry(&self) -> bool {
        self.retry
    }
}

/// Sends one notice to one destination, once (no retries: the notifier
/// retries). The seam between the notifier and the network.
#[async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(
        &self,
        destination: &Destination,
        notice: &Notice,
    ) -> Result<(), DeliveryError>;
}
