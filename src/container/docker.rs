//! Docker Engine control through bollard: the restore service stops the
//! app's containers before it replaces the database and starts them again
//! afterwards, and it must never stop the container it runs in.
//!
//! Traps handled here:
//! - **API version.** bollard speaks a newer API than many engines accept, and
//!   an engine rejects a too-new version on every endpoint, `/version`
//!   included (so bollard's own `negotiate_version` fails against Docker 20.10).
//!   [`DockerControl::connect`] asks `/version`, falls back to the maximum the
//!   engine names in its refusal (or to the oldest version bollard can speak),
//!   and builds the client on min(engine, bollard).
//! - **Timeouts.** bollard has one request timeout per client; a stop whose
//!   grace period exceeds it fails while the container is still stopping. The
//!   client here is built with a timeout far beyond any call and every call
//!   carries its own deadline (a stop gets grace + 15 s); when a deadline
//!   passes, the container is inspected again and the result reported as it
//!   is, never assumed.
//! - **Socket access.** A missing socket, a directory where the socket should
//!   be (Compose creates one when the host path is missing) and permission
//!   errors are reported with the socket path, the uid/gid backupd runs as
//!   and, for EACCES, the `group_add` entry that fixes it.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    InspectContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use tokio::time::timeout;

use super::ContainerControl;
pub use super::{ContainerState, HealthOutcome, StopOutcome};
use crate::error::{Error, Result, error_chain};

/// Where the engine listens when `DOCKER_HOST` is not set.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Version probe, negotiation and ping.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A liveness ping while deciding whether to retry.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// One inspect call.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);
/// One start call (the engine answers once the process is started).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Added to the stop grace period for the stop request's own deadline.
const STOP_SLACK: Duration = Duration::from_secs(15);
/// After a stop request timed out: how long to keep inspecting for the
/// container to reach "not running" before reporting that it has not.
const STOP_SETTLE: Duration = Duration::from_secs(5);
/// Poll interval for health and for settling after a timeout.
const POLL: Duration = Duration::from_millis(500);
/// bollard's shared per-client timeout, far above every per-call deadline so
/// that only ours ever fire.
const BOLLARD_TIMEOUT_SECS: u64 = 24 * 60 * 60;
/// The oldest API version bollard speaks; used to ask an engine for its
/// version when it refuses bollard's default and does not say its maximum.
const OLDEST_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 24,
};

/// A connection to the Docker engine with a negotiated API version.
#[derive(Debug, Clone)]
pub struct DockerControl {
    docker: Docker,
    endpoint: Endpoint,
    api_version: String,
}

impl DockerControl {
    /// Connects to the engine named by `docker_host` (a `DOCKER_HOST` value:
    /// `unix:///path`, a bare socket path, `tcp://host:port` or
    /// `http://host:port`; `None` or empty means
    /// `unix:///var/run/docker.sock`), negotiates the API version and pings.
    pub async fn connect(docker_host: Option<&str>) -> Result<Self> {
        let host = docker_host
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_DOCKER_HOST);
        let endpoint = Endpoint::parse(host)?;
        if let Endpoint::Unix(path) = &endpoint {
            check_socket(path)?;
        }

        let probe = endpoint.client(API_DEFAULT_VERSION)?;
        let version = negotiate(&endpoint, &probe).await?;
        let docker = endpoint.client(&version)?;
        match timeout(CONNECT_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(endpoint.connect_error("ping", &e)),
            Err(_) => {
                return Err(endpoint
                    .unreachable(&format!("ping: no answer within {}", secs(CONNECT_TIMEOUT))));
            }
        }
        tracing::info!(endpoint = %endpoint, api_version = %version, "connected to the Docker engine");
        Ok(Self {
            docker,
            endpoint,
            api_version: version.to_string(),
        })
    }

    /// Whether the engine answers at all (a ping within a few seconds): the
    /// restore service retries starting containers only while it does not.
    pub async fn ping(&self) -> Result<()> {
        match timeout(PING_TIMEOUT, self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.endpoint.connect_error("ping", &e)),
            Err(_) => Err(self
                .endpoint
                .unreachable(&format!("ping: no answer within {}", secs(PING_TIMEOUT)))),
        }
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.api_version.clone()
    }

    /// The state of container `name` (its exact name or its full 64-hex
    /// id); `None` when the engine has no such container.
    ///
    /// The engine also resolves an unknown name as an id prefix, so an
    /// all-hex name in `RESTORE_STOP_CONTAINERS` would otherwise find (and
    /// stop) some other container. A container is only the one asked for
    /// when its name or full id equals what was asked.
    pub async fn inspect(&self, name: &str) -> Result<Option<ContainerState>> {
        let name = container_ref(name, "inspect")?;
        self.inspect_exact(name, &format!("inspecting container `{name}`"))
            .await
    }

    /// [`inspect_checked`](Self::inspect_checked), keeping only the
    /// container whose name or full id is exactly `name`.
    async fn inspect_exact(&self, name: &str, doing: &str) -> Result<Option<ContainerState>> {
        Ok(self
            .inspect_checked(name, doing)
            .await?
            .filter(|state| {
                let exact = state.is_exactly(name);
                if !exact {
                    tracing::warn!(
                        asked = name,
                        matched = %state.name,
                        "the engine matched this name as an id prefix of another container; treating it as missing"
                    );
                }
                exact
            }))
    }

    /// Stops container `name`, giving it `grace` between the stop signal and
    /// SIGKILL. Nothing is done when it is not running. The request's own
    /// deadline is `grace` + 15 s; when it passes, the container is inspected
    /// again and the outcome reported from what the engine says.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<StopOutcome> {
        self.stop_with_request_timeout(name, grace, grace + STOP_SLACK)
            .await
    }

    /// [`stop`](Self::stop) with an explicit deadline for the stop request
    /// (tests use a deadline shorter than the grace period to exercise the
    /// timeout path).
    #[doc(hidden)]
    pub async fn stop_with_request_timeout(
        &self,
        name: &str,
        grace: Duration,
        request_timeout: Duration,
    ) -> Result<StopOutcome> {
        let name = container_ref(name, "stop")?;
        let doing = format!("stopping container `{name}`");
        let Some(before) = self.inspect_exact(name, &doing).await? else {
            return Err(Error::Other(format!("{doing}: no such container")));
        };
        // From here on the container is addressed by its full id, so the
        // engine cannot resolve the name to another one.
        let id = before.id.clone();
        if !before.running {
            tracing::info!(container = name, status = %before.status, "container already stopped");
            return Ok(StopOutcome::AlreadyStopped);
        }

        let grace_secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(grace_secs),
            signal: None, // API 1.42+; the container's own stop signal is used
        };
        tracing::info!(
            container = name,
            grace_seconds = grace_secs,
            "stopping container"
        );
        let started = Instant::now();
        match timeout(
            request_timeout,
            self.docker.stop_container(&id, Some(options)),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_not_found(&e) => {
                return Err(Error::Other(format!(
                    "{doing}: the container no longer exists (removed while stopping; \
                     does it run with auto-remove?)"
                )));
            }
            Ok(Err(e)) => return Err(self.engine_error(&doing, &e)),
            Err(_) => {
                tracing::warn!(
                    container = name,
                    request_timeout_seconds = request_timeout.as_secs_f64(),
                    "the stop request got no answer in time; inspecting the container again"
                );
                return self
                    .settle_after_timeout(&id, &doing, request_timeout, started)
                    .await;
            }
        }

        match self.inspect_checked(&id, &doing).await? {
            None => Err(Error::Other(format!(
                "{doing}: the container was removed after it stopped (does it run with \
                 auto-remove?)"
            ))),
            Some(after) if after.running => Err(Error::Other(format!(
                "{doing}: the engine reported it stopped, but it is running again (status \
                 {}); something restarted it",
                after.status
            ))),
            Some(after) => {
                tracing::info!(
                    container = name,
                    status = %after.status,
                    duration_seconds = started.elapsed().as_secs_f64(),
                    "container stopped"
                );
                Ok(StopOutcome::Stopped)
            }
        }
    }

    /// The stop request's deadline passed: inspect until the container is
    /// seen stopped or `STOP_SETTLE` passes.
    async fn settle_after_timeout(
        &self,
        name: &str,
        doing: &str,
        request_timeout: Duration,
        started: Instant,
    ) -> Result<StopOutcome> {
        let settle_until = Instant::now() + STOP_SETTLE;
        loop {
            match self.inspect_checked(name, doing).await? {
                None => {
                    return Err(Error::Other(format!(
                        "{doing}: no answer to the stop request within {} and the container \
                         no longer exists (does it run with auto-remove?)",
                        secs(request_timeout)
                    )));
                }
                Some(state) if !state.running => {
                    tracing::info!(
                        container = name,
                        status = %state.status,
                        duration_seconds = started.elapsed().as_secs_f64(),
                        "container stopped (seen by inspect after the stop request timed out)"
                    );
                    return Ok(StopOutcome::Stopped);
                }
                Some(state) if Instant::now() >= settle_until => {
                    return Err(Error::Other(format!(
                        "{doing}: no answer to the stop request within {} and the container is \
                         still running (status {}) {} after the request was sent; it may still \
                         be stopping",
                        secs(request_timeout),
                        state.status,
                        secs(started.elapsed())
                    )));
                }
                Some(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Starts container `name`; a container that already runs is fine.
    pub async fn start(&self, name: &str) -> Result<()> {
        let name = container_ref(name, "start")?;
        let doing = format!("starting container `{name}`");
        let Some(before) = self.inspect_exact(name, &doing).await? else {
            return Err(Error::Other(format!("{doing}: no such container")));
        };
        let id = before.id.clone();
        if before.running {
            tracing::info!(container = name, status = %before.status, "container already running");
            return Ok(());
        }

        let started = Instant::now();
        match timeout(
            START_TIMEOUT,
            self.docker
                .start_container(&id, None::<StartContainerOptions>),
        )
        .await
        {
            // 204 started, or 304 when something else started it meanwhile.
            Ok(Ok(())) => {}
            Ok(Err(e)) if is_not_found(&e) => {
                return Err(Error::Other(format!("{doing}: no such container")));
            }
            Ok(Err(e)) => return Err(self.engine_error(&doing, &e)),
            Err(_) => match self.inspect_checked(&id, &doing).await? {
                Some(state) if state.running => {
                    tracing::warn!(
                        container = name,
                        "the start request got no answer in time, but the container runs"
                    );
                }
                state => {
                    return Err(Error::Other(format!(
                        "{doing}: no answer to the start request within {} and the container \
                         is {}",
                        secs(START_TIMEOUT),
                        state.map_or_else(
                            || "gone".to_string(),
                            |s| format!("not running (status {})", s.status)
                        )
                    )));
                }
            },
        }
        tracing::info!(
            container = name,
            duration_seconds = started.elapsed().as_secs_f64(),
            "container started"
        );
        Ok(())
    }

    /// Polls container `name` every 500 ms until its healthcheck reports
    /// healthy or unhealthy, it stops running, or `timeout` passes. A running
    /// container without a healthcheck is reported at once.
    pub async fn wait_healthy(&self, name: &str, timeout: Duration) -> Result<HealthOutcome> {
        let name = container_ref(name, "wait for")?;
        let doing = format!("waiting for container `{name}` to become healthy");
        let started = Instant::now();
        let deadline = started + timeout;
        let outcome = loop {
            let Some(state) = self.inspect_exact(name, &doing).await? else {
                return Err(Error::Other(format!("{doing}: no such container")));
            };
            if !state.running {
                break HealthOutcome::NotRunning;
            }
            match state.health.as_deref() {
                None => break HealthOutcome::NoHealthcheck,
                Some("healthy") => break HealthOutcome::Healthy,
                Some("unhealthy") => break HealthOutcome::Unhealthy,
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                break HealthOutcome::TimedOut;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        };
        tracing::info!(
            container = name,
            outcome = ?outcome,
            duration_seconds = started.elapsed().as_secs_f64(),
            "container health"
        );
        Ok(outcome)
    }

    /// The id of the container backupd runs in, when the engine knows it.
    /// Candidates come from `/proc/self/mountinfo` (the engine bind-mounts
    /// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from
    /// `…/containers/<id>/`), `/proc/self/cgroup` and a hostname that looks
    /// like an id prefix; each is confirmed by inspecting it.
    pub async fn own_container_id(&self) -> Option<String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string());
        for candidate in container_id_candidates(&mountinfo, &cgroup, hostname.as_deref()) {
            // An id prefix (the hostname) is meant here, so not `inspect`.
            let doing = format!("inspecting container `{candidate}`");
            match self.inspect_checked(&candidate, &doing).await {
                Ok(Some(state)) if state.id.starts_with(&candidate) => {
                    tracing::debug!(container_id = %state.id, "backupd runs in a container of this engine");
                    return Some(state.id);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(candidate = %candidate, error = %e, "could not check whether backupd runs in this container");
                }
            }
        }
        None
    }

    /// Inspect with its own deadline; 404 is `None`.
    async fn inspect_checked(&self, name: &str, doing: &str) -> Result<Option<ContainerState>> {
        match timeout(
            INSPECT_TIMEOUT,
            self.docker
                .inspect_container(name, None::<InspectContainerOptions>),
        )
        .await
        {
            Ok(Ok(response)) => Ok(Some(state_from_inspect(name, response))),
            Ok(Err(e)) if is_not_found(&e) => Ok(None),
            Ok(Err(e)) => Err(self.engine_error(doing, &e)),
            Err(_) => Err(Error::Other(format!(
                "{doing}: the Docker engine did not answer an inspect request within {}",
                secs(INSPECT_TIMEOUT)
            ))),
        }
    }

    fn engine_error(&self, doing: &str, err: &BollardError) -> Error {
        match err {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => Error::Other(format!(
                "{doing}: the Docker engine answered {status_code}: {message}"
            )),
            _ => {
                let reason = self.endpoint.connect_error("request", err);
                Error::Other(format!("{doing}: {reason}"))
            }
        }
    }
}

/// The trait is the inherent API: a restore procedure written against
/// [`ContainerControl`] gets exactly what the integration tests check here.
#[async_trait::async_trait]
impl ContainerControl for DockerControl {
    fn backend(&self) -> &'static str {
        "docker"
    }

    fn describe(&self) -> String {
        format!(
            "the Docker engine at {} (API {})",
            self.endpoint, self.api_version
        )
    }

    async fn own_id(&self) -> Option<String> {
        self.own_container_id().await
    }

    async fn ping(&self) -> Result<()> {
        DockerControl::ping(self).await
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>> {
        DockerControl::inspect(self, name).await
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<StopOutcome> {
        DockerControl::stop(self, name, grace).await
    }

    async fn start(&self, name: &str) -> Result<()> {
        DockerControl::start(self, name).await
    }

    async fn wait_healthy(&self, name: &str, timeout: Duration) -> Result<HealthOutcome> {
        DockerControl::wait_healthy(self, name, timeout).await
    }
}

fn state_from_inspect(
    asked: &str,
    response: bollard::models::ContainerInspectResponse,
) -> ContainerState {
    let state = response.state.unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    ContainerState {
        id: response.id.unwrap_or_default(),
        name: response
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| asked.to_string()),
        running: state.running.unwrap_or(false),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        health,
        replicas: None,
    }
}

/// Checks a container name or id before it goes into a URL path.
fn container_ref<'a>(name: &'a str, action: &str) -> Result<&'a str> {
    let trimmed = name.trim().trim_start_matches('/');
    let valid = trimmed
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(trimmed)
    } else {
        Err(Error::Config(format!(
            "cannot {action} container `{name}`: not a valid container name or id"
        )))
    }
}

fn is_not_found(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------- version negotiation

/// min(engine, bollard). The engine refuses a too-new version on every
/// endpoint, so a refusal is read for the maximum it names; when it names
/// none, the engine is asked again with the oldest version bollard speaks.
async fn negotiate(endpoint: &Endpoint, probe: &Docker) -> Result<ClientVersion> {
    let ours = *API_DEFAULT_VERSION;
    let engine = match timeout(CONNECT_TIMEOUT, probe.version()).await {
        Err(_) => {
            return Err(endpoint.unreachable(&format!(
                "asking the engine's version: no answer within {}",
                secs(CONNECT_TIMEOUT)
            )));
        }
        Ok(Ok(version)) => engine_version(endpoint, version)?,
        Ok(Err(BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        })) => match max_version_in(&message) {
            Some(max) => {
                tracing::debug!(bollard = %ours, engine = %max, "the engine refused bollard's API version");
                max
            }
            None => {
                let old = endpoint.client(&OLDEST_VERSION)?;
                match timeout(CONNECT_TIMEOUT, old.version()).await {
                    Ok(Ok(version)) => engine_version(endpoint, version)?,
                    Ok(Err(e)) => return Err(endpoint.connect_error("version negotiation", &e)),
                    Err(_) => {
                        return Err(endpoint.unreachable(&format!(
                            "asking the engine's version: no answer within {}",
                            secs(CONNECT_TIMEOUT)
                        )));
                    }
                }
            }
        },
        Ok(Err(e)) => return Err(endpoint.connect_error("asking the engine's version", &e)),
    };
    let chosen = if engine < ours { engine } else { ours };
    Ok(chosen)
}

fn engine_version(
    endpoint: &Endpoint,
    version: bollard::models::SystemVersion,
) -> Result<ClientVersion> {
    let api = version.api_version.unwrap_or_default();
    let engine = parse_version(&api).ok_or_else(|| {
        Error::Other(format!(
            "cannot use the Docker engine at {endpoint}: it reports API version `{api}`, \
             which is not MAJOR.MINOR"
        ))
    })?;
    let ours = *API_DEFAULT_VERSION;
    if let Some(min) = version.min_api_version.as_deref().and_then(parse_version)
        && ours < min
    {
        return Err(Error::Other(format!(
            "cannot use the Docker engine at {endpoint}: it accepts API versions {min} to \
             {engine}, but backupd speaks at most {ours}"
        )));
    }
    Ok(engine)
}

fn parse_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// "client version 1.53 is too new. Maximum supported API version is 1.41"
fn max_version_in(message: &str) -> Option<ClientVersion> {
    const MARKER: &str = "Maximum supported API version is ";
    let at = message.find(MARKER)? + MARKER.len();
    let rest = &message[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    parse_version(rest[..end].trim_end_matches('.'))
}

// ---------------------------------------------------------------- endpoint and identity

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "the socket {}", path.display()),
            Endpoint::Tcp(url) => write!(f, "{url}"),
        }
    }
}

impl Endpoint {
    fn parse(host: &str) -> Result<Self> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if host.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(host)));
        }
        if host.starts_with("tcp://") || host.starts_with("http://") {
            return Ok(Endpoint::Tcp(host.to_string()));
        }
        Err(Error::Config(format!(
            "DOCKER_HOST=`{host}` is not supported: use unix:///path/to/docker.sock or \
             tcp://HOST:PORT (plain HTTP; TLS and ssh are not built in)"
        )))
    }

    fn client(&self, version: &ClientVersion) -> Result<Docker> {
        let made = match self {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), BOLLARD_TIMEOUT_SECS, version)
            }
            Endpoint::Tcp(url) => Docker::connect_with_http(url, BOLLARD_TIMEOUT_SECS, version),
        };
        made.map_err(|e| self.connect_error("creating the client", &e))
    }

    /// A failure to reach the engine, with who we are.
    fn unreachable(&self, detail: &str) -> Error {
        Error::Other(format!(
            "cannot connect to the Docker engine at {self} (backupd runs as {}): {detail}",
            Identity::current()
        ))
    }

    /// Maps a bollard error met while talking to the engine; EACCES and a
    /// missing socket get their own messages.
    fn connect_error(&self, step: &str, err: &BollardError) -> Error {
        if let Endpoint::Unix(path) = self {
            if let BollardError::SocketNotFoundError(_) = err {
                return socket_missing(path);
            }
            if let Some(io) = io_error_in(err) {
                match io.kind() {
                    io::ErrorKind::PermissionDenied => return permission_denied(path),
                    io::ErrorKind::NotFound => return socket_missing(path),
                    io::ErrorKind::ConnectionRefused => {
                        return self.unreachable(&format!(
                            "{step}: connection refused (the socket exists but no engine \
                             listens on it; is the Docker daemon running?)"
                        ));
                    }
                    _ => {}
                }
            }
        }
        self.unreachable(&format!("{step}: {}", error_chain(err)))
    }
}

/// Checks the socket path before connecting: bollard only asks whether it
/// exists, which is also false when a parent directory is not searchable.
fn check_socket(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(meta) if meta.is_dir() => Err(Error::Other(format!(
            "cannot connect to the Docker engine: {} is a directory, not a socket (backupd \
             runs as {}); Docker creates an empty directory when the host path of a bind \
             mount does not exist: check the host path of the socket mount",
            path.display(),
            Identity::current()
        ))),
        Ok(meta) => Err(Error::Other(format!(
            "cannot connect to the Docker engine: {} is not a socket (mode {:o}; backupd runs \
             as {})",
            path.display(),
            meta.mode(),
            Identity::current()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(socket_missing(path)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(Error::Other(format!(
            "cannot connect to the Docker engine: cannot look up the socket {} (a parent \
             directory is not searchable by backupd, which runs as {}): {e}",
            path.display(),
            Identity::current()
        ))),
        Err(e) => Err(Error::Other(format!(
            "cannot connect to the Docker engine: cannot look up the socket {} (backupd runs \
             as {}): {e}",
            path.display(),
            Identity::current()
        ))),
    }
}

fn socket_missing(path: &Path) -> Error {
    Error::Other(format!(
        "cannot connect to the Docker engine: no socket at {} (backupd runs as {}); mount the \
         engine's socket into the container (`- /var/run/docker.sock:/var/run/docker.sock`) \
         or set DOCKER_HOST",
        path.display(),
        Identity::current()
    ))
}

fn permission_denied(path: &Path) -> Error {
    Error::Other(permission_message(
        path,
        fs::metadata(path)
            .ok()
            .map(|m| (m.uid(), m.gid(), m.mode())),
        &Identity::current(),
    ))
}

fn permission_message(path: &Path, owner: Option<(u32, u32, u32)>, who: &Identity) -> String {
    match owner {
        Some((uid, gid, mode)) => format!(
            "cannot connect to the Docker engine: permission denied on the socket {} (owner \
             uid {uid}, group id {gid}, mode {:o}) for backupd running as {who}; give the \
             backupd service the socket's group in the compose file: `group_add: [\"{gid}\"]`",
            path.display(),
            mode & 0o7777
        ),
        None => format!(
            "cannot connect to the Docker engine: permission denied on the socket {} for \
             backupd running as {who}; give the backupd service the socket's group with \
             `group_add` (its id is printed by `stat -c %g {}` on the host)",
            path.display(),
            path.display()
        ),
    }
}

/// The first `std::io::Error` in an error's source chain.
fn io_error_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// The effective uid, gid and supplementary groups of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Vec<u32>,
}

impl Identity {
    fn current() -> Self {
        let mut who = fs::read_to_string("/proc/self/status")
            .map(|s| Self::from_status(&s))
            .unwrap_or(Identity {
                uid: None,
                gid: None,
                groups: Vec::new(),
            });
        if (who.uid.is_none() || who.gid.is_none())
            && let Ok(meta) = fs::metadata("/proc/self")
        {
            who.uid = who.uid.or(Some(meta.uid()));
            who.gid = who.gid.or(Some(meta.gid()));
        }
        who
    }

    /// From `/proc/self/status`: the second (effective) field of `Uid:` and
    /// `Gid:`, and `Groups:`.
    fn from_status(status: &str) -> Self {
        let field = |key: &str| -> Option<u32> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|id| id.parse().ok())
        };
        let groups = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        Identity {
            uid: field("Uid:"),
            gid: field("Gid:"),
            groups,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        write!(f, "uid {}, gid {}", id(self.uid), id(self.gid))?;
        if self.groups.is_empty() {
            write!(f, ", no supplementary groups")
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            write!(f, ", supplementary groups {}", list.join(" "))
        }
    }
}

// ---------------------------------------------------------------- own container

/// Container ids (or id prefixes) that may be the container this process
/// runs in, most reliable first, without duplicates. Public for tests.
#[doc(hidden)]
pub fn container_id_candidates(
    mountinfo: &str,
    cgroup: &str,
    hostname: Option<&str>,
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut add = |id: &str| {
        if !found.iter().any(|f| f == id) {
            found.push(id.to_string());
        }
    };

    // "36 35 0:31 /var/lib/docker/containers/<id>/hostname /etc/hostname rw … - ext4 …":
    // field 4 is the root of the mount inside its file system, field 5 the
    // mount point. Only these bind mounts count: on the host, mountinfo also
    // lists `…/containers/<id>/mounts/shm` of every running container.
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if !matches!(
            *mount_point,
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        ) {
            continue;
        }
        let mut parts = root.split('/');
        while let Some(part) = parts.next() {
            if part == "containers"
                && let Some(id) = parts.next()
                && is_hex(id, 64)
            {
                add(id);
            }
        }
    }

    // "12:memory:/docker/<id>", "0::/system.slice/docker-<id>.scope".
    for line in cgroup.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for part in path.split('/') {
            let part = part.strip_prefix("docker-").unwrap_or(part);
            let part = part.strip_suffix(".scope").unwrap_or(part);
            if is_hex(part, 64) {
                add(part);
            }
        }
    }

    // The engine names a container's host after the first 12 hex digits of its id.
    if let Some(host) = hostname.map(str::trim)
        && (12..=64).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        add(host);
    }
    found
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c6a8e2b0d4c5e9a7f1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";

    #[test]
    fn candidates_come_from_the_container_bind_mounts() {
        let mountinfo = format!(
            "620 590 0:52 / / rw,relatime - overlay overlay rw\n\
             631 620 8:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n\
             632 620 8:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_candidates(&mountinfo, "", None), vec![ID]);
    }

    #[test]
    fn host_mounts_of_other_containers_are_not_candidates() {
        let mountinfo =
            format!("100 30 0:60 / /var/lib/docker/containers/{ID}/mounts/shm rw - tmpfs shm rw\n");
        assert!(container_id_candidates(&mountinfo, "0::/\n", Some("vm")).is_empty());
    }

    #[test]
    fn candidates_from_cgroup_and_hostname() {
        let cgroup = format!("12:memory:/docker/{ID}\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            container_id_candidates("", &cgroup, Some(&ID[..12])),
            vec![ID.to_string(), ID[..12].to_string()]
        );
        assert!(
            container_id_candidates("", "4:memory:/process_api/2fb5fed4\n", Some("web-1"))
                .is_empty()
        );
    }

    #[test]
    fn refusal_names_the_maximum_version() {
        let msg = "client version 1.53 is too new. Maximum supported API version is 1.41";
        assert_eq!(max_version_in(msg), parse_version("1.41"));
        assert_eq!(max_version_in("something else"), None);
    }

    #[test]
    fn permission_message_shows_group_add() {
        let who = Identity::from_status(
            "Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t1000 27\n",
        );
        let msg = permission_message(
            Path::new("/var/run/docker.sock"),
            Some((0, 998, 0o140660)),
            &who,
        );
        assert!(msg.contains("/var/run/docker.sock"), "{msg}");
        assert!(
            msg.contains("uid 1000, gid 1000, supplementary groups 1000 27"),
            "{msg}"
        );
        assert!(msg.contains("group_add: [\"998\"]"), "{msg}");
        assert!(msg.contains("mode 660"), "{msg}");
    }

    #[test]
    fn container_refs_are_checked() {
        assert_eq!(container_ref("/web", "stop").unwrap(), "web");
        assert_eq!(container_ref("app_web-1.x", "stop").unwrap(), "app_web-1.x");
        assert!(container_ref("", "stop").is_err());
        assert!(container_ref("../images", "stop").is_err());
        assert!(container_ref("web?x=1", "stop").is_err());
    }
}
