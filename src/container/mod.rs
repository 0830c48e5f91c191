//! Container control seam: what the restore service needs from whatever runs
//! the app (stop it before the database is replaced, start it afterwards,
//! never stop itself), independent of the engine.
//!
//! - [`ContainerControl`] is the trait; [`docker::DockerControl`] implements
//!   it against the Docker Engine API, [`fake::FakeContainers`] in memory for
//!   fast tests of the restore procedure.
//! - [`StopReceipt`] is what undoing a stop needs, serialisable so the
//!   restore state can carry it across a crash. It is built from the
//!   inspection that precedes the stop ([`StopReceipt::before_stop`]), so it
//!   can be on disk before the stop request is sent. A backend that scales a
//!   Kubernetes Deployment to 0 fills [`ContainerState::replicas`] and
//!   overrides [`ContainerControl::undo_stop`] to scale back to the recorded
//!   count.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The behaviour every backend shares, checked against each (test support).
#[doc(hidden)]
pub mod conformance;
pub mod docker;
pub mod fake;

/// What an inspection says about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// The engine's own id (Docker: the full 64-hex container id).
    pub id: String,
    /// The container name without the leading `/`.
    pub name: String,
    /// True while the container's process runs (also when paused or restarting).
    pub running: bool,
    /// The engine's status word (Docker: created, running, paused,
    /// restarting, removing, exited or dead).
    pub status: String,
    /// `healthy`, `unhealthy` or `starting` when the container has a
    /// healthcheck; `None` otherwise.
    pub health: Option<String>,
    /// How many replicas a scaled workload asks for (a Kubernetes
    /// Deployment); `None` for a single container.
    pub replicas: Option<u32>,
}

impl ContainerState {
    /// True when `asked` is this container's name (with or without the
    /// leading `/`) or its full id.
    pub fn is_exactly(&self, asked: &str) -> bool {
        let asked = asked.trim_start_matches('/');
        self.name == asked || self.id == asked
    }
}

/// What [`ContainerControl::stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The container was running and is now observed stopped.
    Stopped,
    /// The container was not running; nothing was done.
    AlreadyStopped,
}

/// What [`ContainerControl::wait_healthy`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthOutcome {
    /// The container runs and has no healthcheck (nothing to wait for).
    NoHealthcheck,
    Healthy,
    Unhealthy,
    /// Still `starting` when the timeout passed.
    TimedOut,
    /// The container is not running (it exited or was stopped).
    NotRunning,
}

impl HealthOutcome {
    /// The word the restore history records for a started container.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthOutcome::Healthy => "healthy",
            HealthOutcome::NoHealthcheck => "no healthcheck",
            HealthOutcome::Unhealthy => "unhealthy",
            HealthOutcome::TimedOut => "not healthy within RESTORE_HEALTH_TIMEOUT",
            HealthOutcome::NotRunning => "not running",
        }
    }
}

/// What undoing the stop of one container needs, recorded before the stop
/// is requested (a stop in flight when backupd dies still completes in the
/// engine). Unknown keys from later versions are ignored; keys added later
/// must be `#[serde(default)]` so older receipts still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReceipt {
    /// [`ContainerControl::backend`] of the control that wrote it
    /// (`docker`); a receipt is only undone by the same backend.
    pub backend: String,
    /// The name as configured (what start is asked for).
    pub name: String,
    /// The engine's id at the time of the stop: a container recreated under
    /// the same name since then has another one.
    pub id: String,
    /// Running when the stop was planned; a container that was not running
    /// is not started again.
    pub was_running: bool,
    /// The replica count to scale back to (Kubernetes); `None` for Docker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

impl StopReceipt {
    /// The receipt for stopping `name` (as configured), from the state
    /// inspected just before.
    pub fn before_stop(backend: &str, name: &str, state: &ContainerState) -> Self {
        Self {
            backend: backend.to_string(),
            name: name.to_string(),
            id: state.id.clone(),
            was_running: state.running,
            replicas: state.replicas,
        }
    }
}

/// Control of the app's containers. Every method addresses a container by
/// its configured name (or full id) and reports what the engine says; none
/// assumes an outcome it has not observed. Errors say what was being done
/// to which container.
#[async_trait]
pub trait ContainerControl: Send + Sync {
    /// The backend's word in receipts and logs: `docker`.
    fn backend(&self) -> &'static str;

    /// Where the containers are controlled, for messages: `the Docker
    /// engine at the socket /var/run/docker.sock (API 1.41)`.
    fn describe(&self) -> String;

    /// The id of the container backupd itself runs in, when this engine
    /// runs it: never to be stopped.
    async fn own_id(&self) -> Option<String>;

    /// Whether the engine answers at all: a start that failed is retried
    /// only while it does not.
    async fn ping(&self) -> Result<()>;

    /// The state of container `name`; `None` when there is no container by
    /// exactly that name or id.
    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>>;

    /// Stops `name`, giving it `grace` before it is killed; nothing is done
    /// when it is not running.
    async fn stop(&self, name: &str, grace: Duration) -> Result<StopOutcome>;

    /// Starts `name`; one that already runs is fine.
    async fn start(&self, name: &str) -> Result<()>;

    /// Undoes the stop `receipt` records. A single container is started
    /// again by name; a scaled backend scales back to the recorded count.
    async fn undo_stop(&self, receipt: &StopReceipt) -> Result<()> {
        self.start(&receipt.name).await
    }

    /// Waits until `name`'s healthcheck says healthy or unhealthy, it stops
    /// running, or `timeout` passes.
    async fn wait_healthy(&self, name: &str, timeout: Duration) -> Result<HealthOutcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(running: bool) -> ContainerState {
        ContainerState {
            id: "a".repeat(64),
            name: "web".into(),
            running,
            status: if running { "running" } else { "exited" }.into(),
            health: None,
            replicas: None,
        }
    }

    #[test]
    fn receipts_record_what_the_stop_will_change() {
        let receipt = StopReceipt::before_stop("docker", "/web", &web(true));
        assert_eq!(receipt.backend, "docker");
        assert_eq!(receipt.name, "/web");
        assert_eq!(receipt.id, "a".repeat(64));
        assert!(receipt.was_running);
        assert_eq!(receipt.replicas, None);
        assert!(!StopReceipt::before_stop("docker", "web", &web(false)).was_running);
    }

    #[test]
    fn receipts_round_trip_and_docker_ones_have_no_replicas_key() {
        let receipt = StopReceipt::before_stop("docker", "web", &web(true));
        let json = serde_json::to_value(&receipt).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "backend": "docker",
                "name": "web",
                "id": "a".repeat(64),
                "was_running": true,
            })
        );
        let back: StopReceipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, receipt);
    }

    #[test]
    fn a_scaled_receipt_keeps_the_replica_count_and_unknown_keys_are_ignored() {
        let json = r#"{"backend":"kubernetes","name":"app/web","id":"uid-1",
                       "was_running":true,"replicas":3,"namespace":"app"}"#;
        let receipt: StopReceipt = serde_json::from_str(json).unwrap();
        assert_eq!(receipt.replicas, Some(3));
        assert_eq!(receipt.backend, "kubernetes");
    }

    #[test]
    fn exact_match_is_by_name_or_full_id_only() {
        let state = web(true);
        assert!(state.is_exactly("web"));
        assert!(state.is_exactly("/web"));
        assert!(state.is_exactly(&"a".repeat(64)));
        assert!(!state.is_exactly(&"a".repeat(12)));
    }

    #[test]
    fn health_words_are_the_history_words() {
        assert_eq!(HealthOutcome::Healthy.as_str(), "healthy");
        assert_eq!(HealthOutcome::NoHealthcheck.as_str(), "no healthcheck");
        assert_eq!(
            HealthOutcome::TimedOut.as_str(),
            "not healthy within RESTORE_HEALTH_TIMEOUT"
        );
    }
}
