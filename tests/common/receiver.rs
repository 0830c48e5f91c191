//! A loopback HTTP/1.1 receiver: the stand-in for the web services
//! notifications go to (none of them can be reached from here). It records
//! every request whole and answers as told: a status and body, after a
//! delay, or never (a hung service).
//!
//! Plain threads and std sockets, so it serves a test whether or not that
//! test runs a tokio runtime, and a hung answer cannot stall one.
//!
//! ```ignore
//! let receiver = Receiver::start(Behaviour::status(500));
//! // … point backupd at receiver.url() …
//! let got = receiver.wait_for_requests(1, Duration::from_secs(30));
//! assert_eq!(got[0].method, "POST");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How the receiver answers each request (changeable while it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// `status` with `body` (as text/plain) and extra `headers`, `delay`
    /// after the request was read and recorded.
    Respond {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        delay: Duration,
    },
    /// Record the request and never answer; the connection stays open until
    /// the receiver is dropped.
    Hang,
}

impl Behaviour {
    /// 200 with the body `ok`, at once.
    pub fn ok() -> Self {
        Behaviour::status(200)
    }

    /// `code` with a short body naming it, at once.
    pub fn status(code: u16) -> Self {
        Behaviour::Respond {
            status: code,
            body: format!("receiver answered {code}"),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// This answer with `body` instead.
    pub fn with_body(mut self, new_body: impl Into<String>) -> Self {
        if let Behaviour::Respond { body, .. } = &mut self {
            *body = new_body.into();
        }
        self
    }

    /// This answer with the header `name: value` as well (`Location` of a redirect).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Behaviour::Respond { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// This answer, `delay` late.
    pub fn after(mut self, new_delay: Duration) -> Self {
        if let Behaviour::Respond { delay, .. } = &mut self {
            *delay = new_delay;
        }
        self
    }
}

/// One request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    /// The path of the request target, still percent-encoded (`/bot1%3Ax/sendMessage`).
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// Header names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes (chunked bodies already joined).
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the request when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the request body is not JSON ({e}):\n{self}"))
    }

    /// The query parameters, percent-decoded (`+` as a space).
    pub fn query_pairs(&self) -> HashMap<String, String> {
        self.query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k), form_decode(v))
            })
            .collect()
    }
}

impl fmt::Display for ReceivedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(query) = &self.query {
            write!(f, "?{query}")?;
        }
        writeln!(f)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        write!(f, "\n{}", self.text())
    }
}

fn form_decode(raw: &str) -> String {
    let bytes = raw.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<ReceivedRequest>>,
    arrived: Condvar,
    behaviour: Mutex<Option<Behaviour>>,
    stopping: AtomicBool,
    /// Woken on drop, so hung answers end.
    stop_signal: Condvar,
    stop_lock: Mutex<()>,
    /// Every accepted connection, shut down on drop (unblocks reads).
    connections: Mutex<Vec<TcpStream>>,
}

/// A running receiver on 127.0.0.1 (a free port). Dropping it closes every
/// connection, hung ones included.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listens on 127.0.0.1:0 and answers every request per `behaviour`.
    pub fn start(behaviour: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver to 127.0.0.1:0");
        let address = listener.local_addr().expect("the receiver's address");
        let shared = Arc::new(Shared::default());
        *shared.behaviour.lock().unwrap() = Some(behaviour);
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(listener, shared))
        };
        Receiver {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `127.0.0.1:PORT`, for URL forms that take a host (`ntfy://`, `gotify://`).
    pub fn host_port(&self) -> String {
        self.address.to_string()
    }

    /// How the following requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = Some(behaviour);
    }

    /// Every request recorded so far, in order of arrival.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived and returns them all;
    /// panics naming what did arrive after `timeout` (a guard against a
    /// hang, not a measure of speed). It blocks its thread: a tokio test
    /// that sends from a spawned task wants `flavor = "multi_thread"`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        let mut requests = self.shared.requests.lock().unwrap();
        while requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen: Vec<String> = requests.iter().map(ToString::to_string).collect();
                panic!(
                    "the receiver at {} got {} of {n} requests within {timeout:?}:\n{}",
                    self.address,
                    requests.len(),
                    seen.join("\n---\n")
                );
            }
            requests = self.shared.arrived.wait_timeout(requests, left).unwrap().0;
        }
        requests.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.stop_lock.lock().unwrap();
            self.shared.stop_signal.notify_all();
        }
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
        // The acceptor blocks in accept(): one connection wakes it to see the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            shared.connections.lock().unwrap().push(clone);
        }
        let shared = Arc::clone(&shared);
        thread::spawn(move || serve_connection(stream, &shared));
    }
}

/// Serves requests on one connection until the client closes it (keep-alive,
/// as reqwest's pool uses it) or the receiver stops.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        {
            let mut requests = shared.requests.lock().unwrap();
            requests.push(request);
            shared.arrived.notify_all();
        }
        let behaviour = shared.behaviour.lock().unwrap().clone();
        match behaviour.unwrap_or_else(Behaviour::ok) {
            Behaviour::Hang => {
                wait_until_stopped(shared, None);
                return;
            }
            Behaviour::Respond {
                status,
                mut body,
                headers,
                delay,
            } => {
                if !delay.is_zero() && wait_until_stopped(shared, Some(delay)) {
                    return;
                }
                if status == 204 || status == 304 {
                    // No body by definition: bytes here would corrupt the next
                    // response on this connection.
                    body.clear();
                }
                let extra: String = headers
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}\r\n"))
                    .collect();
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
                     Content-Length: {}\r\n{extra}{}\r\n",
                    reason(status),
                    body.len(),
                    if close { "Connection: close\r\n" } else { "" }
                );
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(body.as_bytes()).is_err()
                    || writer.flush().is_err()
                    || close
                {
                    return;
                }
            }
        }
    }
}

/// Sleeps until the receiver stops or `limit` passes; true if it stopped.
fn wait_until_stopped(shared: &Shared, limit: Option<Duration>) -> bool {
    let deadline = limit.map(|l| Instant::now() + l);
    let mut guard = shared.stop_lock.lock().unwrap();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return true;
        }
        match deadline {
            None => guard = shared.stop_signal.wait(guard).unwrap(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                guard = shared.stop_signal.wait_timeout(guard, left).unwrap().0;
            }
        }
    }
}

/// One request, or `None` when the client closed the connection between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> std::io::Result<Option<ReceivedRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("not an HTTP request line: {line:?}")));
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("the connection closed inside the headers".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("not a header line: {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize = header("content-length")
            .map(|v| v.parse().map_err(|_| bad(format!("Content-Length {v:?}"))))
            .transpose()?
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(ReceivedRequest {
        method: method.to_string(),
        path,
        query,
        headers,
        body,
    }))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn bad(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
