//! The status server: `/` and `/status` (the status JSON), `/healthz` and
//! `/metrics`. Nothing else is served — in particular no file is ever read
//! from a request path (the old helper fell back to serving its working
//! directory).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::health;
use crate::metrics::Metrics;
use crate::state::Status;

#[derive(Clone)]
pub struct AppState {
    pub status_file: PathBuf,
    pub max_age_seconds: u64,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            json_response(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#.into())
        })
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
    tracing::info!(%addr, "status server listening: /status /healthz /metrics");
    let app = router(state);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the status server stopped");
        }
    }))
}

fn json_response(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    match tokio::fs::read(&state.status_file).await {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"no backup has run yet"}"#.into(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the status file");
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"cannot read the status file"}"#.into(),
            )
        }
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let status = match Status::read(&state.status_file) {
        Ok(status) => status,
        Err(e) => {
            let body = serde_json::json!({"status": "unhealthy", "reason": e.to_string()});
            return json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string());
        }
    };
    let health = health::evaluate(status.as_ref(), chrono::Utc::now(), state.max_age_seconds);
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
    });
    json_response(code, body.to_string())
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
