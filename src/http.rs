//! The status server: `/` and `/status` (the status JSON), `/healthz` and
//! `/metrics`. Nothing else is served — in particular no file is ever read
//! from a request path (the old helper fell back to serving its working
//! directory).
//!
//! Connections are served here rather than by `axum::serve`, which has no
//! header-read timeout and no connection cap: 300 clients that never finish
//! their headers used to hold 300 descriptors until the scheduled backup
//! failed with EMFILE. Now at most [`MAX_CONNECTIONS`] are open at once
//! (more are closed as soon as they are accepted), headers must arrive
//! within [`HEADER_READ_TIMEOUT`], a request is answered within
//! [`REQUEST_TIMEOUT`], and no connection lives longer than
//! [`CONNECTION_DEADLINE`] (keep-alive is off: one request per connection).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::health;
use crate::metrics::Metrics;
use crate::state::Status;

/// Connections served at once; more are closed when accepted. The answers
/// are tiny and probes few: 64 leaves the backup nearly all descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request that takes longer is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection, however it behaves, is held longer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Request heads larger than this are refused (hyper's minimum buffer).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// On shutdown, connections get this long to finish their answer.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AppState {
    pub status_file: PathBuf,
    pub max_age_seconds: u64,
    /// `HEALTH_MAX_DRILL_AGE_SECONDS`: `/healthz` also wants a passed drill this recent.
    pub max_drill_age_seconds: Option<u64>,
    pub metrics: Arc<Metrics>,
    /// `STATUS_TOKEN`: when set, `/`, `/status` and `/metrics` need it as a
    /// bearer token; `/healthz` stays open for probes.
    pub token: Option<StatusToken>,
    /// Why the last run could not start, while that could not be written
    /// to the status file (kept here so `/healthz` still says so).
    pub unrecorded_start_error: Arc<Mutex<Option<String>>>,
    /// What `/healthz` measures the last backup's age against.
    pub clock: Arc<dyn Clock>,
}

/// The bearer token, kept as its SHA-256 so comparing takes the same time
/// whatever the guess (and whatever its length). Never logged.
#[derive(Clone)]
pub struct StatusToken([u8; 32]);

impl StatusToken {
    pub fn new(token: &str) -> Self {
        StatusToken(Sha256::digest(token.as_bytes()).into())
    }

    fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for StatusToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusToken(***)")
    }
}

pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/", get(status))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .fallback(|| async {
            json_response(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into())
        })
        .layer(middleware::from_fn(within_request_timeout))
        .with_state(state)
}

/// Binds at once (so a taken port fails start-up) and serves until `cancel`.
pub async fn start(
    addr: SocketAddr,
    state: AppState,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::Other(format!(
            "cannot listen on {addr} (STATUS_BIND/STATUS_PORT): {e}"
        ))
    })?;
    tracing::info!(
        %addr,
        token = if state.token.is_some() { "required" } else { "off" },
        max_connections = MAX_CONNECTIONS,
        "status server listening: /status /healthz /metrics"
    );
    let clock = Arc::clone(&state.clock);
    let app = router(state);
    Ok(tokio::spawn(serve(listener, app, clock, cancel)))
}

/// Accepts connections until `cancel`, each under the cap and the timeouts.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let refusals = RateLimitedWarning::new(clock);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning; the
                // connections in flight free descriptors as they finish.
                tracing::warn!(error = %e, "the status server cannot accept a connection");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = cancel.cancelled() => break,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Closing at once (dropping the stream) rather than queueing:
            // a waiting connection would hold its descriptor all the same.
            refusals.warn(|| {
                tracing::warn!(
                    %peer,
                    max_connections = MAX_CONNECTIONS,
                    "the status server is at its connection limit; closing new connections"
                )
            });
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "status connection ended");
                    }
                }
                _ = tokio::time::sleep(CONNECTION_DEADLINE) => {
                    tracing::debug!(%peer, "status connection closed at its deadline");
                }
                _ = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN * 2, connections.wait()).await;
}

/// A warning logged at most once a minute, so a flood cannot flood the log.
struct RateLimitedWarning {
    clock: Arc<dyn Clock>,
    last: AtomicI64,
}

impl RateLimitedWarning {
    fn new(clock: Arc<dyn Clock>) -> Self {
        RateLimitedWarning {
            clock,
            last: AtomicI64::new(0),
        }
    }

    fn warn(&self, log: impl FnOnce()) {
        let now = self.clock.now().timestamp();
        let last = self.last.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log();
        }
    }
}

async fn within_request_timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"the request timed out"}"#.into(),
        ),
    }
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    if bearer(request.headers()).is_some_and(|presented| token.accepts(presented)) {
        return next.run(request).await;
    }
    tracing::debug!(path = %request.uri().path(), "refused a request without the status token");
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::WWW_AUTHENTICATE, r#"Bearer realm="backupd""#),
        ],
        r#"{"error":"this endpoint needs Authorization: Bearer <STATUS_TOKEN>"}"#,
    )
        .into_response()
}

/// The credentials of `Authorization: Bearer …` (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

fn json_response(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// [`Status::read`] off the async workers (a slow disk must not stall them).
async fn read_status(state: &AppState) -> Result<Option<Status>> {
    let path = state.status_file.clone();
    tokio::task::spawn_blocking(move || Status::read(&path))
        .await
        .map_err(|e| Error::Other(format!("the status read task failed: {e}")))?
}

/// The status file, parsed and serialized again: only the keys backupd
/// knows ever leave (unknown keys stay in the file), whatever it holds.
async fn status(State(state): State<AppState>) -> Response {
    match read_status(&state).await {
        Ok(Some(mut status)) => {
            status.other.clear();
            serialized(&status)
        }
        Ok(None) => json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"no backup has run yet"}"#.into(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "GET /status: cannot serve the status file");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"cannot read the status file (see the log)"}"#.into(),
            )
        }
    }
}

fn serialized(status: &Status) -> Response {
    match serde_json::to_string_pretty(status) {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serialize the status");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"cannot serialize the status"}"#.into(),
            )
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let unrecorded = state
        .unrecorded_start_error
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default();
    if let Some(e) = unrecorded {
        let body = serde_json::json!({
            "status": "unhealthy",
            "reason": format!("the last backup could not start, nor be recorded in the status file: {e}"),
        });
        return json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string());
    }
    let status = match read_status(&state).await {
        Ok(status) => status,
        Err(e) => {
            let body = serde_json::json!({"status": "unhealthy", "reason": e.to_string()});
            return json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string());
        }
    };
    let health = health::evaluate_with_drills(
        status.as_ref(),
        state.clock.now(),
        state.max_age_seconds,
        state.max_drill_age_seconds,
    );
    let code = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if health.healthy { "ok" } else { "unhealthy" },
        "reason": health.reason,
        "last_backup": health.last_backup,
        "age_seconds": health.age_seconds,
        "max_age_seconds": health.max_age_seconds,
        "last_drill_success": status.as_ref().and_then(|s| s.last_drill_success.clone()),
    });
    json_response(code, body.to_string())
}

/// The daemon's own metrics, and what the status file holds at this scrape
/// (a restore's downtime, written by `backupd restore`); an unreadable
/// status file leaves those out and is logged, the rest is served.
async fn metrics(State(state): State<AppState>) -> Response {
    let status = match read_status(&state).await {
        Ok(status) => status,
        Err(e) => {
            tracing::debug!(error = %e, "GET /metrics: the status file's values are left out");
            None
        }
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode_with_status(status.as_ref()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Method;
    use chrono::{DateTime, Utc};
    use tower::ServiceExt;

    /// Noon on 2026-01-01: the instant every request here is answered at.
    const NOW: &str = "2026-01-01T12:00:00Z";

    struct FixedClock(DateTime<Utc>);

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn state(dir: &std::path::Path, token: Option<&str>) -> AppState {
        AppState {
            status_file: dir.join("backup-status.json"),
            max_age_seconds: 3600,
            max_drill_age_seconds: None,
            metrics: Arc::new(Metrics::new()),
            token: token.map(StatusToken::new),
            unrecorded_start_error: Arc::default(),
            clock: Arc::new(FixedClock(NOW.parse().unwrap())),
        }
    }

    fn write_status(dir: &std::path::Path, json: &str) {
        std::fs::write(dir.join("backup-status.json"), json).unwrap();
    }

    struct Answer {
        code: StatusCode,
        headers: HeaderMap,
        body: String,
    }

    impl Answer {
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }

        fn content_type(&self) -> &str {
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        }
    }

    async fn send(app: &Router, method: Method, path: &str, authorization: Option<&str>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Answer {
            code,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(app: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
        let answer = send(app, Method::GET, path, authorization).await;
        (answer.code, answer.body)
    }

    #[tokio::test]
    async fn the_token_guards_status_and_metrics_but_not_healthz() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("backup-status.json"),
            r#"{"last_backup": null}"#,
        )
        .unwrap();
        let app = router(state(dir.path(), Some("s3cret-token")));
        for path in ["/", "/status", "/metrics"] {
            assert_eq!(get(&app, path, None).await.0, StatusCode::UNAUTHORIZED);
            assert_eq!(
                get(&app, path, Some("Bearer wrong")).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                get(&app, path, Some("Basic s3cret-token")).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                get(&app, path, Some("bearer s3cret-token")).await.0,
                StatusCode::OK,
                "{path}"
            );
        }
        let (code, body) = get(&app, "/healthz", None).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no backup has succeeded"), "{body}");
    }

    #[tokio::test]
    async fn a_refusal_says_how_to_authenticate_and_never_echoes_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), Some("s3cret-token")));
        let answer = send(&app, Method::GET, "/status", Some("Bearer s3cret-tokeN")).await;
        assert_eq!(answer.code, StatusCode::UNAUTHORIZED);
        assert_eq!(
            answer.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer realm="backupd""#
        );
        assert_eq!(answer.content_type(), "application/json");
        assert_eq!(
            answer.json()["error"],
            "this endpoint needs Authorization: Bearer <STATUS_TOKEN>"
        );
        assert!(!answer.body.contains("s3cret"), "{}", answer.body);
        // Without the guard's routes, an unknown path is not found, not refused.
        let answer = send(&app, Method::GET, "/nope", None).await;
        assert_eq!(answer.code, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn status_and_root_serve_the_status_file_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));
        let (code, body) = get(&app, "/status", None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("no backup has run yet"), "{body}");

        write_status(
            dir.path(),
            r#"{"last_backup": "2026-01-01T11:30:00Z", "last_file": "pg_dump-20260101T113000Z.sql.gz"}"#,
        );
        for path in ["/", "/status"] {
            let answer = send(&app, Method::GET, path, None).await;
            assert_eq!(answer.code, StatusCode::OK, "{path}: {}", answer.body);
            assert_eq!(answer.content_type(), "application/json", "{path}");
            let json = answer.json();
            assert_eq!(json["last_backup"], "2026-01-01T11:30:00Z", "{path}");
            assert_eq!(
                json["last_file"], "pg_dump-20260101T113000Z.sql.gz",
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn healthz_measures_the_last_backup_against_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));

        let answer = send(&app, Method::GET, "/healthz", None).await;
        assert_eq!(answer.code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer.json()["reason"],
            "no status file yet: no backup has run"
        );

        // Half an hour before the clock's noon: healthy, and exactly that old.
        write_status(dir.path(), r#"{"last_backup": "2026-01-01T11:30:00Z"}"#);
        let answer = send(&app, Method::GET, "/healthz", None).await;
        assert_eq!(answer.code, StatusCode::OK, "{}", answer.body);
        let json = answer.json();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["age_seconds"], 1800);
        assert_eq!(json["max_age_seconds"], 3600);
        assert_eq!(json["last_backup"], "2026-01-01T11:30:00Z");

        // Two hours before: older than HEALTH_MAX_AGE_SECONDS.
        write_status(
            dir.path(),
            r#"{"last_backup": "2026-01-01T10:00:00Z", "last_error": "connection refused"}"#,
        );
        let answer = send(&app, Method::GET, "/healthz", None).await;
        assert_eq!(answer.code, StatusCode::SERVICE_UNAVAILABLE);
        let json = answer.json();
        assert_eq!(json["status"], "unhealthy");
        assert_eq!(json["age_seconds"], 7200);
        let reason = json["reason"].as_str().unwrap();
        assert!(reason.contains("HEALTH_MAX_AGE_SECONDS=3600"), "{reason}");
        assert!(reason.contains("connection refused"), "{reason}");
    }

    #[tokio::test]
    async fn a_recorded_start_error_makes_healthz_unhealthy_at_once() {
        let dir = tempfile::tempdir().unwrap();
        write_status(
            dir.path(),
            r#"{"last_backup": "2026-01-01T11:59:00Z", "last_attempt": "2026-01-01T11:59:30Z", "start_error": "cannot create the lock file"}"#,
        );
        let answer = send(
            &router(state(dir.path(), None)),
            Method::GET,
            "/healthz",
            None,
        )
        .await;
        assert_eq!(answer.code, StatusCode::SERVICE_UNAVAILABLE);
        let reason = answer.json()["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("could not start"), "{reason}");
        assert!(reason.contains("cannot create the lock file"), "{reason}");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text() {
        let dir = tempfile::tempdir().unwrap();
        let answer = send(
            &router(state(dir.path(), None)),
            Method::GET,
            "/metrics",
            None,
        )
        .await;
        assert_eq!(answer.code, StatusCode::OK);
        assert_eq!(
            answer.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(answer.body.trim_end().ends_with("# EOF"), "{}", answer.body);
    }

    #[tokio::test]
    async fn metrics_read_the_restore_downtime_from_the_status_file_at_each_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));
        let name = "backupd_last_restore_downtime_seconds";
        let answer = send(&app, Method::GET, "/metrics", None).await;
        assert!(!answer.body.contains(name), "{}", answer.body);

        write_status(
            dir.path(),
            r#"{"last_backup": null, "last_restore_result": "success", "last_restore_downtime_seconds": 1.5}"#,
        );
        let answer = send(&app, Method::GET, "/metrics", None).await;
        assert_eq!(answer.code, StatusCode::OK);
        assert!(
            answer.body.contains(&format!("{name} 1.5")),
            "{}",
            answer.body
        );

        // A restore that stopped nothing: no value, so no sample.
        write_status(
            dir.path(),
            r#"{"last_restore_result": "failed", "last_restore_downtime_seconds": null}"#,
        );
        let answer = send(&app, Method::GET, "/metrics", None).await;
        assert!(!answer.body.contains(name), "{}", answer.body);
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_other_methods_405() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path(), None));
        for path in [
            "/nope",
            "/status/extra",
            "/backup-status.json",
            "/../etc/passwd",
        ] {
            let answer = send(&app, Method::GET, path, None).await;
            assert_eq!(answer.code, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(answer.json()["error"], "not found", "{path}");
        }
        for path in ["/", "/status", "/healthz", "/metrics"] {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let answer = send(&app, method.clone(), path, None).await;
                assert_eq!(
                    answer.code,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_linked_status_file_is_refused_and_a_real_one_reserialized() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.json");
        std::fs::write(&secret, r#"{"last_backup": null, "password": "hunter2"}"#).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("backup-status.json")).unwrap();
        let app = router(state(dir.path(), None));
        for path in ["/", "/status", "/healthz"] {
            let (code, body) = get(&app, path, None).await;
            assert!(code.is_server_error(), "{path}: {code} {body}");
            assert!(!body.contains("hunter2"), "{path}: {body}");
        }

        std::fs::remove_file(dir.path().join("backup-status.json")).unwrap();
        std::fs::write(
            dir.path().join("backup-status.json"),
            "{\"last_backup\": \"2026-01-01T00:00:00Z\",    \"future\": [1]}",
        )
        .unwrap();
        let (code, body) = get(&app, "/status", None).await;
        assert_eq!(code, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["last_backup"], "2026-01-01T00:00:00Z");
        assert!(
            json.get("future").is_none(),
            "unknown keys are not served: {body}"
        );
        assert!(json.get("start_error").is_some(), "{body}");
    }

    #[tokio::test]
    async fn an_unrecorded_start_failure_makes_healthz_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), None);
        *state.unrecorded_start_error.lock().unwrap() = Some("Too many open files".into());
        let (code, body) = get(&router(state), "/healthz", None).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("Too many open files"), "{body}");
    }
}
