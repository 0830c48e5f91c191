//! E-mail: one plain-text message per notice, sent over one SMTP session
//! (lettre's connection, driven step by step so an error says which step
//! failed: connecting, TLS, authentication, the sender, a recipient, the
//! message).
//!
//! Trust: TLS (implicit or after STARTTLS) checks the server's certificate
//! against lettre's default root store, which rustls-native-certs fills from
//! the system's roots, or only from `SSL_CERT_FILE` / `SSL_CERT_DIR` when
//! either is set: the way an operator trusts a private CA (and how the tests
//! trust their throwaway one). There is no switch to skip the check.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MessageBuilder};
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use crate::notify::DeliveryError;
use crate::notify::destination::{SmtpDestination, SmtpSecurity};
use crate::notify::message::Notice;

/// The mechanisms offered, in order of preference: both send the password
/// as it is, which is why anything but a trusted relay gets TLS first.
const MECHANISMS: [Mechanism; 2] = [Mechanism::Plain, Mechanism::Login];

/// Sends `notice` to every recipient of `destination` in one SMTP session,
/// within `timeout` (the whole session, and each read or write in it).
pub async fn deliver(
    destination: &SmtpDestination,
    notice: &Notice,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let outcome = match build_message(destination, notice) {
        Ok(message) => {
            match tokio::time::timeout(timeout, send(destination, &message, timeout)).await {
                Ok(sent) => sent,
                Err(_) => Err(Failure::TimedOut(timeout)),
            }
        }
        Err(failure) => Err(failure),
    };
    outcome.map_err(|failure| {
        let error = delivery_error(destination, &failure);
        match failure {
            // Sent to some: another attempt would send it to them again.
            Failure::SomeRecipients { .. } => DeliveryError::not_retried(error.to_string()),
            _ => error,
        }
    })
}

/// What went wrong in one delivery, before it is masked into a
/// [`DeliveryError`].
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("the {field} address {address:?} is not an e-mail address: {reason}")]
    Address {
        field: &'static str,
        address: String,
        reason: String,
    },
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("connecting failed: {}{hint}", detail(.0), hint = tls_hint(.0))]
    Connect(SmtpError),
    #[error(
        "connecting with TLS (implicit TLS, port 465 style) failed: {}{hint}",
        detail(.0),
        hint = tls_hint(.0)
    )]
    ConnectTls(SmtpError),
    #[error(
        "the server does not offer STARTTLS, and starttls=yes forbids sending in plain text \
         (implicit TLS is port 465; starttls=no only for a relay on a trusted network)"
    )]
    NoStartTls,
    #[error("the server refused STARTTLS: {}", detail(.0))]
    StartTlsRefused(SmtpError),
    #[error(
        "the TLS handshake after STARTTLS failed: {}{hint}",
        detail(.0),
        hint = tls_hint(.0)
    )]
    StartTlsHandshake(SmtpError),
    #[error(
        "authentication impossible: the server offers neither AUTH PLAIN nor AUTH LOGIN{hint}",
        hint = if *.encrypted { "" } else { " (many servers offer AUTH only over TLS)" }
    )]
    NoMechanism { encrypted: bool },
    #[error("authentication rejected for user {user:?}: {}", detail(.err))]
    Auth { user: String, err: SmtpError },
    #[error("the sender <{from}> was refused: {}", detail(.err))]
    Sender { from: String, err: SmtpError },
    #[error("the recipient <{to}> was refused: {}", detail(.err))]
    Recipient { to: String, err: SmtpError },
    #[error("every recipient was refused: {}", refusals(.0))]
    EveryRecipient(Vec<(String, SmtpError)>),
    /// The message went to the recipients the server accepted.
    #[error(
        "sent to {}, but {}; not sent again (the others have it)",
        addresses(.accepted),
        refusals(.refused)
    )]
    SomeRecipients {
        accepted: Vec<String>,
        refused: Vec<(String, SmtpError)>,
    },
    #[error("the message was refused: {}", detail(.0))]
    Message(SmtpError),
    #[error("timed out after {} s", .0.as_secs_f64())]
    TimedOut(Duration),
}

/// What lettre says, without its wrappers: the server's reply for a
/// refusal ("permanent error (535): 5.7.8 …"), else the innermost cause
/// ("invalid peer certificate: UnknownIssuer", "Connection refused").
fn detail(err: &SmtpError) -> String {
    if err.status().is_some() {
        return err.to_string();
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(next) = innermost.source() {
        innermost = next;
    }
    innermost.to_string()
}

/// "<a@x> was refused: 550 …; <b@y> was refused: 550 …".
fn refusals(refused: &[(String, SmtpError)]) -> String {
    refused
        .iter()
        .map(|(to, err)| format!("<{to}> was refused: {}", detail(err)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn addresses(accepted: &[String]) -> String {
    accepted
        .iter()
        .map(|to| format!("<{to}>"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A hint when TLS itself failed (an untrusted certificate, TLS spoken to a
/// plain-text port): rustls reports those as invalid data.
fn tls_hint(err: &SmtpError) -> &'static str {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
        {
            return " (a TLS failure: is the port right for this starttls setting, and is the \
                    server's certificate signed by a trusted CA? SSL_CERT_FILE names a private CA)";
        }
        source = e.source();
    }
    ""
}

fn delivery_error(destination: &SmtpDestination, failure: &Failure) -> DeliveryError {
    // Without the server: whoever reports the error names the destination.
    let line = failure.to_string();
    // A server may echo what it was sent; the password never leaves masked.
    let line = match &destination.auth {
        Some((_, password)) if !password.expose().is_empty() => {
            line.replace(password.expose(), "***")
        }
        _ => line,
    };
    DeliveryError::new(line)
}

fn mailbox(field: &'static str, address: &str) -> Result<Mailbox, Failure> {
    address
        .parse()
        .map_err(|e: lettre::address::AddressError| Failure::Address {
            field,
            address: address.to_string(),
            reason: e.to_string(),
        })
}

/// The e-mail for one notice: From/To of the destination, the notice's
/// title as the subject, its time as the date, a fresh Message-ID.
fn build_message(destination: &SmtpDestination, notice: &Notice) -> Result<Message, Failure> {
    let mut builder: MessageBuilder = Message::builder()
        .from(mailbox("from", &destination.from)?)
        .subject(notice.title.clone())
        .date(SystemTime::from(notice.time))
        .message_id(None)
        .user_agent(format!("backupd {}", notice.version))
        .header(ContentType::TEXT_PLAIN);
    for to in &destination.to {
        builder = builder.to(mailbox("to", to)?);
    }
    Ok(builder.body(body(notice))?)
}

/// The notice's text for people, then its facts as `key: value` lines for
/// mail filters and for whoever reads closely.
fn body(notice: &Notice) -> String {
    let mut body = notice.text.trim_end().to_string();
    body.push_str("\n\n");
    let mut line = |key: &str, value: &str| {
        // A multi-line value (an error with its causes) stays inside its key.
        let value = value.trim_end().replace('\n', "\n  ");
        let _ = writeln!(body, "{key}: {value}");
    };
    line("event", &notice.event);
    line("result", notice.result);
    line(
        "database",
        &format!("{} {}", notice.database_kind, notice.database_name),
    );
    if let Some(file) = &notice.file {
        line("file", file);
    }
    if let Some(size) = notice.size_bytes {
        line("size", &format!("{size} bytes"));
    }
    if let Some(sha256) = &notice.sha256 {
        line("sha256", sha256);
    }
    if let Some(duration) = notice.duration_seconds {
        line("duration", &format!("{duration:.1} s"));
    }
    if let Some(error) = &notice.error {
        line("error", error);
    }
    line("host", &notice.host);
    line("version", notice.version);
    line(
        "time",
        &notice
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    body
}

fn tls_parameters(destination: &SmtpDestination) -> Result<TlsParameters, Failure> {
    // The default store: the system's roots, or SSL_CERT_FILE/SSL_CERT_DIR.
    TlsParameters::new(destination.host.clone()).map_err(Failure::Connect)
}

async fn send(
    destination: &SmtpDestination,
    message: &Message,
    timeout: Duration,
) -> Result<(), Failure> {
    let hello = ClientId::default();
    let server = (destination.host.as_str(), destination.port);
    let mut conn = match destination.security {
        SmtpSecurity::Tls => {
            let tls = tls_parameters(destination)?;
            AsyncSmtpConnection::connect_tokio1(server, Some(timeout), &hello, Some(tls), None)
                .await
                .map_err(Failure::ConnectTls)?
        }
        SmtpSecurity::StartTls | SmtpSecurity::Plain => {
            AsyncSmtpConnection::connect_tokio1(server, Some(timeout), &hello, None, None)
                .await
                .map_err(Failure::Connect)?
        }
    };
    let sent = session(destination, message, &hello, &mut conn).await;
    match sent {
        // The message is accepted: a failed QUIT changes nothing.
        Ok(()) | Err(Failure::SomeRecipients { .. }) => {
            let _ = conn.quit().await;
        }
        // A failed handshake leaves lettre's connection without a stream:
        // nothing to say QUIT on (and lettre asserts nobody tries).
        Err(Failure::StartTlsHandshake(_)) => {}
        Err(_) => conn.abort().await,
    }
    sent
}

/// Everything after the greeting: STARTTLS, AUTH, the envelope, the message.
async fn session(
    destination: &SmtpDestination,
    message: &Message,
    hello: &ClientId,
    conn: &mut AsyncSmtpConnection,
) -> Result<(), Failure> {
    if destination.security == SmtpSecurity::StartTls {
        if !conn.can_starttls() {
            return Err(Failure::NoStartTls);
        }
        conn.starttls(tls_parameters(destination)?, hello)
            .await
            .map_err(|err| {
                if err.status().is_some() {
                    Failure::StartTlsRefused(err)
                } else {
                    Failure::StartTlsHandshake(err)
                }
            })?;
    }

    if let Some((user, password)) = &destination.auth {
        if !MECHANISMS
            .iter()
            .any(|m| conn.server_info().supports_auth_mechanism(*m))
        {
            return Err(Failure::NoMechanism {
                encrypted: conn.is_encrypted(),
            });
        }
        let credentials = Credentials::new(user.clone(), password.expose().to_string());
        conn.auth(&MECHANISMS, &credentials)
            .await
            .map_err(|err| Failure::Auth {
                user: user.clone(),
                err,
            })?;
    }

    let envelope = message.envelope();
    let email = message.formatted();
    let mut options = Vec::new();
    let server = conn.server_info();
    if envelope
        .to()
        .iter()
        .chain(envelope.from())
        .any(|a| !a.to_string().is_ascii())
        && server.supports_feature(Extension::SmtpUtfEight)
    {
        options.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() && server.supports_feature(Extension::EightBitMime) {
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(|err| Failure::Sender {
            from: destination.from.clone(),
            err,
        })?;
    // A refused recipient (a typo, a closed mailbox) does not keep the
    // message from the others; a broken connection ends the session.
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for to in envelope.to() {
        match conn.command(Rcpt::new(to.clone(), Vec::new())).await {
            Ok(_) => accepted.push(to.to_string()),
            Err(err) if err.status().is_some() => refused.push((to.to_string(), err)),
            Err(err) => {
                return Err(Failure::Recipient {
                    to: to.to_string(),
                    err,
                });
            }
        }
    }
    if accepted.is_empty() {
        return Err(match refused.len() {
            1 => {
                let (to, err) = refused.remove(0);
                Failure::Recipient { to, err }
            }
            _ => Failure::EveryRecipient(refused),
        });
    }
    conn.command(Data).await.map_err(Failure::Message)?;
    conn.message(&email).await.map_err(Failure::Message)?;
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Failure::SomeRecipients { accepted, refused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Severity;
    use crate::notify::destination::UrlSecret;
    use chrono::{TimeZone, Utc};

    const PASSWORD: &str = "s3cr3t-pa55word";

    fn destination() -> SmtpDestination {
        SmtpDestination {
            host: "mail.example".into(),
            port: 587,
            auth: Some(("alerts".into(), UrlSecret(PASSWORD.into()))),
            from: "backupd@example.org".into(),
            to: vec![
                "ops@example.org".into(),
                "Oncall <oncall@example.net>".into(),
            ],
            security: SmtpSecurity::StartTls,
        }
    }

    fn notice() -> Notice {
        Notice {
            event: "backup-failed".into(),
            result: "failure",
            severity: Severity::Error,
            title: "backup failed on db-backup (postgresql app)".into(),
            text: "The backup of postgresql app failed.\nThe previous backup is kept.".into(),
            database_kind: "postgresql",
            database_name: "app".into(),
            file: Some("app-2026-12-02T04-00-00Z.sql.gz".into()),
            size_bytes: Some(12345),
            sha256: Some("ab".repeat(32)),
            duration_seconds: Some(2.34),
            error: Some("pg_dump exited with status 1\ncaused by: connection refused".into()),
            host: "db-backup".into(),
            version: "1.2.3",
            time: Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 7).unwrap(),
        }
    }

    fn formatted(destination: &SmtpDestination, notice: &Notice) -> String {
        let message = build_message(destination, notice).unwrap();
        String::from_utf8(message.formatted()).unwrap()
    }

    fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
        let head = mail.split("\r\n\r\n").next().unwrap();
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }

    #[test]
    fn headers_name_sender_every_recipient_subject_date_and_id() {
        let mail = formatted(&destination(), &notice());
        assert_eq!(header(&mail, "From"), Some("backupd@example.org"), "{mail}");
        assert_eq!(
            header(&mail, "To"),
            Some("ops@example.org, Oncall <oncall@example.net>"),
            "{mail}"
        );
        assert_eq!(
            header(&mail, "Subject"),
            Some("backup failed on db-backup (postgresql app)"),
            "{mail}"
        );
        assert_eq!(
            header(&mail, "Date"),
            Some("Wed, 02 Dec 2026 04:00:07 +0000"),
            "{mail}"
        );
        let id = header(&mail, "Message-ID").expect("a Message-ID");
        assert!(
            id.starts_with('<') && id.ends_with('>') && id.contains('@'),
            "{id}"
        );
        assert_eq!(
            header(&mail, "Content-Type"),
            Some("text/plain; charset=utf-8"),
            "{mail}"
        );
        assert_eq!(header(&mail, "User-Agent"), Some("backupd 1.2.3"), "{mail}");
    }

    #[test]
    fn message_ids_differ_between_messages() {
        let a = formatted(&destination(), &notice());
        let b = formatted(&destination(), &notice());
        assert_ne!(header(&a, "Message-ID"), header(&b, "Message-ID"));
    }

    #[test]
    fn envelope_holds_every_recipient() {
        let message = build_message(&destination(), &notice()).unwrap();
        let to: Vec<String> = message
            .envelope()
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(to, ["ops@example.org", "oncall@example.net"]);
        assert_eq!(
            message
                .envelope()
                .from()
                .map(ToString::to_string)
                .as_deref(),
            Some("backupd@example.org")
        );
    }

    #[test]
    fn body_is_the_text_then_the_facts() {
        assert_eq!(
            body(&notice()),
            "The backup of postgresql app failed.\n\
             The previous backup is kept.\n\
             \n\
             event: backup-failed\n\
             result: failure\n\
             database: postgresql app\n\
             file: app-2026-12-02T04-00-00Z.sql.gz\n\
             size: 12345 bytes\n\
             sha256: abababababababababababababababababababababababababababababababab\n\
             duration: 2.3 s\n\
             error: pg_dump exited with status 1\n  \
             caused by: connection refused\n\
             host: db-backup\n\
             version: 1.2.3\n\
             time: 2026-12-02T04:00:07Z\n"
        );
    }

    #[test]
    fn body_leaves_out_facts_the_notice_lacks() {
        let mut test = notice();
        test.event = "test".into();
        test.result = "test";
        test.file = None;
        test.size_bytes = None;
        test.sha256 = None;
        test.duration_seconds = None;
        test.error = None;
        let body = body(&test);
        for key in ["file:", "size:", "sha256:", "duration:", "error:"] {
            assert!(!body.contains(key), "{key} in {body}");
        }
        assert!(body.contains("event: test\n"), "{body}");
    }

    #[test]
    fn the_sent_message_carries_the_body_with_crlf_line_ends() {
        let mail = formatted(&destination(), &notice());
        assert!(
            mail.contains("\r\n\r\nThe backup of postgresql app failed.\r\n"),
            "{mail}"
        );
        assert!(mail.contains("\r\nevent: backup-failed\r\n"), "{mail}");
    }

    #[test]
    fn a_bad_address_is_named_with_its_field() {
        let mut dest = destination();
        dest.to.push("not an address".into());
        let err = delivery_error(&dest, &build_message(&dest, &notice()).unwrap_err()).to_string();
        assert!(err.contains("the to address \"not an address\""), "{err}");
    }

    #[test]
    fn errors_mask_the_password_even_when_a_server_echoes_it() {
        let dest = destination();
        let echoed = Failure::Address {
            field: "to",
            address: format!("x{PASSWORD}x"),
            reason: "echo".into(),
        };
        let err = delivery_error(&dest, &echoed).to_string();
        assert!(!err.contains(PASSWORD), "{err}");
        assert!(err.contains("x***x"), "{err}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_one_masked_line() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut dest = destination();
        dest.host = "127.0.0.1".into();
        dest.port = port;
        let err = deliver(&dest, &notice(), Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("connecting failed: "), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and never greets.
        let held = tokio::spawn(async move {
            let conn = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let mut dest = destination();
        dest.host = "127.0.0.1".into();
        dest.port = port;
        let err = deliver(&dest, &notice(), Duration::from_millis(300))
            .await
            .unwrap_err()
            .to_string();
        held.abort();
        assert!(
            err.contains("timed out") || err.contains("timeout"),
            "{err}"
        );
    }
}
