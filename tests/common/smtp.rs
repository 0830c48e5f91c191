//! A real SMTP server on loopback: Python's `aiosmtpd` in a child process,
//! plain, with STARTTLS or with TLS from the first byte, with or without
//! AUTH. Each accepted message is recorded (envelope, data, whether TLS
//! carried it, who logged in) as a line of `messages.jsonl` in its folder.
//!
//! TLS uses a throwaway CA made at start-up (Python's `cryptography`) and a
//! server certificate for `localhost` and `127.0.0.1`; [`SmtpServer::ca_file`]
//! is the CA in PEM, what a client is given as `SSL_CERT_FILE`.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::files::temp_dir;
use super::host::poll;
use super::prereq::require;

/// How the server protects the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text, no STARTTLS offered.
    None,
    /// STARTTLS offered and required before MAIL (and before AUTH).
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
}

/// One message the server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message as sent after DATA (headers and body, CRLF line ends).
    pub data: String,
    /// Whether the session was encrypted when the message arrived.
    pub tls: bool,
    /// The user the session authenticated as, if any.
    pub login: Option<String>,
}

impl ReceivedMail {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    /// The body after the headers, with LF line ends.
    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.replace("\r\n", "\n"))
            .unwrap_or_default()
    }
}

/// A running `aiosmtpd`; stopped on drop.
pub struct SmtpServer {
    child: Child,
    dir: TempDir,
    port: u16,
    tls: SmtpTls,
}

impl SmtpServer {
    /// Starts a server on a free loopback port; with `auth`, AUTH PLAIN and
    /// LOGIN accept that user and password only. `None` (after a loud skip)
    /// when `python3` with `aiosmtpd` and `cryptography` is missing.
    pub fn start(tls: SmtpTls, auth: Option<(&str, &str)>) -> Option<SmtpServer> {
        Self::start_refusing(tls, auth, &[])
    }

    /// [`SmtpServer::start`] that answers RCPT for each of `refused` with
    /// `550 5.1.1 no such user` (a typo in `to=`), the others with 250.
    pub fn start_refusing(
        tls: SmtpTls,
        auth: Option<(&str, &str)>,
        refused: &[&str],
    ) -> Option<SmtpServer> {
        let usable = Command::new("python3")
            .args(["-c", "import aiosmtpd, cryptography"])
            .output()
            .is_ok_and(|out| out.status.success());
        require(
            "`python3` with the `aiosmtpd` and `cryptography` packages (pip install aiosmtpd)",
            usable.then_some(()),
        )?;

        let dir = temp_dir();
        let script = dir.path().join("smtp_server.py");
        fs::write(&script, SERVER_SCRIPT).unwrap();
        let log = fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(dir.path())
            .env(
                "SMTP_TEST_TLS",
                match tls {
                    SmtpTls::None => "none",
                    SmtpTls::StartTls => "starttls",
                    SmtpTls::Implicit => "implicit",
                },
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.env("SMTP_TEST_REFUSE", refused.join(","));
        if let Some((user, password)) = auth {
            cmd.env("SMTP_TEST_USER", user)
                .env("SMTP_TEST_PASSWORD", password);
        }
        let mut child = cmd.spawn().expect("start python3 with the SMTP server");

        let port_file = dir.path().join("port");
        let port = poll(Duration::from_millis(50), Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the SMTP server exited ({status}) before listening:\n{}",
                    fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                );
            }
            fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
        })
        .unwrap_or_else(|| panic!("the SMTP server did not listen within 30 s"));
        Some(SmtpServer {
            child,
            dir,
            port,
            tls,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The throwaway CA that signed the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        assert_ne!(self.tls, SmtpTls::None, "a plain server has no CA");
        self.dir.path().join("ca.pem")
    }

    /// The messages accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let Ok(text) = fs::read_to_string(self.dir.path().join("messages.jsonl")) else {
            return Vec::new();
        };
        // A line is whole once its newline is written.
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("a recorded message: {e}: {line}"))
            })
            .collect()
    }

    /// What the server printed (its own log), for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server: aiosmtpd's SMTP protocol on an asyncio server bound to port
/// 0 (the port is written to `port` once it listens, so no two tests race
/// for one).
const SERVER_SCRIPT: &str = r#"
import asyncio, datetime, ipaddress, json, os, ssl, sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

folder = sys.argv[1]
mode = os.environ["SMTP_TEST_TLS"]
user = os.environ.get("SMTP_TEST_USER")
password = os.environ.get("SMTP_TEST_PASSWORD")
refused = {a for a in os.environ.get("SMTP_TEST_REFUSE", "").split(",") if a}


def make_certificates():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backupd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(folder, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(folder, "server.pem"), "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(os.path.join(folder, "server.key"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.path.join(folder, "server.pem"), os.path.join(folder, "server.key"))
    return context


class Recorder:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in refused:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "login": session.auth_data if session.authenticated else None,
        }
        with open(os.path.join(folder, "messages.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


async def main():
    context = make_certificates() if mode != "none" else None
    options = dict(hostname="localhost", decode_data=False)
    if mode == "starttls":
        options.update(tls_context=context, require_starttls=True)
    if user is not None:
        # Over STARTTLS, AUTH only once encrypted; plain and implicit-TLS
        # servers take it at once (aiosmtpd cannot see implicit TLS).
        options.update(authenticator=authenticator, auth_require_tls=(mode == "starttls"))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Recorder(), **options),
        host="127.0.0.1",
        port=0,
        ssl=context if mode == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(folder, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(folder, "port.tmp"), os.path.join(folder, "port"))
    print(f"listening on 127.0.0.1:{port} ({mode})", flush=True)
    await server.serve_forever()


asyncio.run(main())
"#;
