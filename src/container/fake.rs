//! An in-memory [`ContainerControl`] that records every call, for fast
//! tests of code that stops and starts containers (the restore procedure,
//! crash recovery). Containers have a running flag and a health word; calls
//! can be told to fail, and the engine to go away, at a chosen call.
//!
//! Time does not pass in the fake: `wait_healthy` answers from the current
//! health at once (`starting` is reported as [`HealthOutcome::TimedOut`]),
//! and a stop takes effect immediately.
//!
//! Typical use: `FakeContainers::new().running("web")`, `engine.fail(Op::Stop,
//! "web")`, hand `&engine` to the code under test as `&dyn ContainerControl`,
//! then assert on `engine.actions()` (`["stop web", "start web"]`),
//! `engine.calls()` (every call, typed) and `engine.is_running("web")` (the unit
//! tests below show each fault).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{ContainerControl, ContainerState, HealthOutcome, StopOutcome};
use crate::error::{Error, Result};

/// One call as the fake received it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    OwnId,
    Ping,
    Inspect(String),
    Stop { name: String, grace: Duration },
    Start(String),
    WaitHealthy { name: String, timeout: Duration },
}

impl Call {
    /// The kind of call, for matching faults.
    pub fn op(&self) -> Op {
        match self {
            Call::OwnId => Op::OwnId,
            Call::Ping => Op::Ping,
            Call::Inspect(_) => Op::Inspect,
            Call::Stop { .. } => Op::Stop,
            Call::Start(_) => Op::Start,
            Call::WaitHealthy { .. } => Op::WaitHealthy,
        }
    }

    /// The container the call names (`None` for `OwnId` and `Ping`).
    pub fn name(&self) -> Option<&str> {
        match self {
            Call::OwnId | Call::Ping => None,
            Call::Inspect(name) | Call::Start(name) => Some(name),
            Call::Stop { name, .. } | Call::WaitHealthy { name, .. } => Some(name),
        }
    }
}

/// A kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    OwnId,
    Ping,
    Inspect,
    Stop,
    Start,
    WaitHealthy,
}

/// What an injected fault does to the call it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// The engine answers with an error; nothing changes.
    Refuse,
    /// The engine goes away before it acts: this and every later call fail
    /// (ping too) until [`FakeContainers::engine_back`].
    GoneBefore,
    /// The engine acts (a stop completes), then goes away before it
    /// answers: the caller sees an error.
    GoneAfter,
}

#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    name: String,
    /// How many more matching calls fail; `None`: all of them.
    left: Option<u32>,
    effect: Effect,
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    running: bool,
    /// Reported while running; `None`: no healthcheck.
    health: Option<String>,
}

#[derive(Debug, Default)]
struct Engine {
    containers: BTreeMap<String, Container>,
    own: Option<String>,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    gone: bool,
}

impl Engine {
    /// The container named exactly `name` or with exactly that id.
    fn find(&mut self, name: &str) -> Option<(&String, &mut Container)> {
        self.containers
            .iter_mut()
            .find(|(n, c)| n.as_str() == name || c.id == name)
    }

    /// The effect of the first fault matching `op` on `name`, used up.
    fn fault(&mut self, op: Op, name: &str) -> Option<Effect> {
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.op == op && f.name == name && f.left != Some(0))?;
        if let Some(left) = fault.left.as_mut() {
            *left -= 1;
        }
        Some(fault.effect)
    }
}

/// The in-memory engine. Share it with `Arc` to keep a handle for
/// assertions while the code under test holds it as `&dyn ContainerControl`.
#[derive(Debug, Default)]
pub struct FakeContainers {
    engine: Mutex<Engine>,
}

/// A deterministic 64-hex id for `name`, like the engine's.
pub fn fake_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

impl FakeContainers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a running container without a healthcheck.
    pub fn running(self, name: &str) -> Self {
        self.add(name, true)
    }

    /// Adds a stopped container without a healthcheck.
    pub fn stopped(self, name: &str) -> Self {
        self.add(name, false)
    }

    fn add(self, name: &str, running: bool) -> Self {
        self.lock().containers.insert(
            name.to_string(),
            Container {
                id: fake_id(name),
                running,
                health: None,
            },
        );
        self
    }

    /// Gives `name` a healthcheck that reports `word` (`healthy`,
    /// `unhealthy`, `starting`) while it runs.
    pub fn with_health(self, name: &str, word: &str) -> Self {
        self.set_health(name, Some(word));
        self
    }

    /// Marks `name` as the container backupd runs in.
    pub fn own_container(self, name: &str) -> Self {
        {
            let mut engine = self.lock();
            let id = engine
                .find(name)
                .map(|(_, c)| c.id.clone())
                .unwrap_or_else(|| fake_id(name));
            engine.own = Some(id);
        }
        self
    }

    /// Changes what `name`'s healthcheck reports (`None`: no healthcheck).
    pub fn set_health(&self, name: &str, word: Option<&str>) {
        if let Some((_, c)) = self.lock().find(name) {
            c.health = word.map(str::to_string);
        }
    }

    /// Removes `name`, as `docker rm` would.
    pub fn remove(&self, name: &str) {
        self.lock().containers.remove(name);
    }

    /// Every `op` call on `name` is refused by the engine.
    pub fn fail(&self, op: Op, name: &str) {
        self.inject(op, name, None, Effect::Refuse);
    }

    /// The next `times` `op` calls on `name` are refused; later ones work.
    pub fn fail_times(&self, op: Op, name: &str, times: u32) {
        self.inject(op, name, Some(times), Effect::Refuse);
    }

    /// The engine goes away when `op` on `name` arrives, before it acts.
    pub fn engine_gone_at(&self, op: Op, name: &str) {
        self.inject(op, name, Some(1), Effect::GoneBefore);
    }

    /// `op` on `name` takes effect (a stop in flight completes in the
    /// engine), then the engine goes away before it answers.
    pub fn engine_gone_after(&self, op: Op, name: &str) {
        self.inject(op, name, Some(1), Effect::GoneAfter);
    }

    /// The engine goes away now: every call fails, ping too.
    pub fn engine_gone(&self) {
        self.lock().gone = true;
    }

    /// The engine answers again.
    pub fn engine_back(&self) {
        self.lock().gone = false;
    }

    fn inject(&self, op: Op, name: &str, left: Option<u32>, effect: Effect) {
        self.lock().faults.push(Fault {
            op,
            name: name.trim_start_matches('/').to_string(),
            left,
            effect,
        });
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of kind `op`, by container name, in order.
    pub fn names_of(&self, op: Op) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op() == op)
            .filter_map(|c| c.name().map(str::to_string))
            .collect()
    }

    /// The calls that change something, as the operator would tell them:
    /// `stop web`, `start web` (refused ones too: they were asked for).
    pub fn actions(&self) -> Vec<String> {
        self.lock()
            .calls
            .iter()
            .filter_map(|call| match call {
                Call::Stop { name, .. } => Some(format!("stop {name}")),
                Call::Start(name) => Some(format!("start {name}")),
                _ => None,
            })
            .collect()
    }

    /// Whether `name` runs now; `None` when there is no such container.
    pub fn is_running(&self, name: &str) -> Option<bool> {
        self.lock().find(name).map(|(_, c)| c.running)
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        // A test that panicked while holding the lock already failed.
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `call`, applies a fault on it, and runs `act` on the engine
    /// unless the fault stops it; `doing` heads every error.
    fn call<T>(
        &self,
        call: Call,
        doing: &str,
        act: impl FnOnce(&mut Engine) -> Result<T>,
    ) -> Result<T> {
        let mut engine = self.lock();
        let (op, name) = (call.op(), call.name().unwrap_or_default().to_string());
        engine.calls.push(call);
        if engine.gone {
            return Err(gone(doing));
        }
        match engine.fault(op, &name) {
            None => act(&mut engine),
            Some(Effect::Refuse) => Err(Error::Other(format!(
                "{doing}: the fake engine refused (injected failure)"
            ))),
            Some(Effect::GoneBefore) => {
                engine.gone = true;
                Err(gone(doing))
            }
            Some(Effect::GoneAfter) => {
                let _ = act(&mut engine);
                engine.gone = true;
                Err(gone(doing))
            }
        }
    }
}

fn gone(doing: &str) -> Error {
    Error::Other(format!(
        "{doing}: cannot connect to the fake container engine (injected: engine gone)"
    ))
}

fn no_such(doing: &str) -> Error {
    Error::Other(format!("{doing}: no such container"))
}

#[async_trait]
impl ContainerControl for FakeContainers {
    fn backend(&self) -> &'static str {
        "fake"
    }

    fn describe(&self) -> String {
        "the fake container engine".to_string()
    }

    async fn own_id(&self) -> Option<String> {
        let mut engine = self.lock();
        engine.calls.push(Call::OwnId);
        if engine.gone {
            return None;
        }
        engine.own.clone()
    }

    async fn ping(&self) -> Result<()> {
        self.call(Call::Ping, "ping", |_| Ok(()))
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerState>> {
        let name = name.trim_start_matches('/');
        let doing = format!("inspecting container `{name}`");
        self.call(Call::Inspect(name.into()), &doing, |engine| {
            Ok(engine.find(name).map(|(n, c)| ContainerState {
                id: c.id.clone(),
                name: n.clone(),
                running: c.running,
                status: if c.running { "running" } else { "exited" }.into(),
                health: c.health.clone(),
                replicas: None,
            }))
        })
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<StopOutcome> {
        let name = name.trim_start_matches('/');
        let doing = format!("stopping container `{name}`");
        let call = Call::Stop {
            name: name.into(),
            grace,
        };
        self.call(call, &doing, |engine| {
            let (_, c) = engine.find(name).ok_or_else(|| no_such(&doing))?;
            if !c.running {
                return Ok(StopOutcome::AlreadyStopped);
            }
            c.running = false;
            Ok(StopOutcome::Stopped)
        })
    }

    async fn start(&self, name: &str) -> Result<()> {
        let name = name.trim_start_matches('/');
        let doing = format!("starting container `{name}`");
        self.call(Call::Start(name.into()), &doing, |engine| {
            let (_, c) = engine.find(name).ok_or_else(|| no_such(&doing))?;
            c.running = true;
            Ok(())
        })
    }

    async fn wait_healthy(&self, name: &str, timeout: Duration) -> Result<HealthOutcome> {
        let name = name.trim_start_matches('/');
        let doing = format!("waiting for container `{name}` to become healthy");
        let call = Call::WaitHealthy {
            name: name.into(),
            timeout,
        };
        self.call(call, &doing, |engine| {
            let (_, c) = engine.find(name).ok_or_else(|| no_such(&doing))?;
            Ok(if !c.running {
                HealthOutcome::NotRunning
            } else {
                match c.health.as_deref() {
                    None => HealthOutcome::NoHealthcheck,
                    Some("healthy") => HealthOutcome::Healthy,
                    Some("unhealthy") => HealthOutcome::Unhealthy,
                    Some(_) => HealthOutcome::TimedOut,
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::container::StopReceipt;

    const GRACE: Duration = Duration::from_secs(10);

    fn run<T>(test: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(test)
    }

    #[test]
    fn stop_and_start_change_the_state_and_are_recorded_in_order() {
        run(async {
            let engine = FakeContainers::new().running("web").stopped("worker");
            assert_eq!(
                engine.stop("web", GRACE).await.unwrap(),
                StopOutcome::Stopped
            );
            assert_eq!(
                engine.stop("/worker", GRACE).await.unwrap(),
                StopOutcome::AlreadyStopped
            );
            assert_eq!(engine.is_running("web"), Some(false));
            engine.start("web").await.unwrap();
            engine.start("web").await.unwrap();
            assert_eq!(engine.is_running("web"), Some(true));
            assert_eq!(
                engine.calls(),
                vec![
                    Call::Stop {
                        name: "web".into(),
                        grace: GRACE
                    },
                    Call::Stop {
                        name: "worker".into(),
                        grace: GRACE
                    },
                    Call::Start("web".into()),
                    Call::Start("web".into()),
                ]
            );
            assert_eq!(engine.names_of(Op::Start), vec!["web", "web"]);
            assert_eq!(
                engine.actions(),
                vec!["stop web", "stop worker", "start web", "start web"]
            );
        });
    }

    #[test]
    fn inspect_matches_exact_names_and_full_ids_only() {
        run(async {
            let engine = FakeContainers::new()
                .running("web")
                .with_health("web", "starting");
            let state = engine.inspect("web").await.unwrap().unwrap();
            assert_eq!(state.id, fake_id("web"));
            assert_eq!(state.id.len(), 64);
            assert!(state.running);
            assert_eq!(state.status, "running");
            assert_eq!(state.health.as_deref(), Some("starting"));
            assert_eq!(
                engine.inspect(&fake_id("web")).await.unwrap(),
                Some(state.clone())
            );
            assert_eq!(engine.inspect(&state.id[..12]).await.unwrap(), None);
            assert_eq!(engine.inspect("we").await.unwrap(), None);
        });
    }

    #[test]
    fn missing_containers_are_named_in_the_error() {
        run(async {
            let engine = FakeContainers::new();
            let err = engine.stop("web", GRACE).await.unwrap_err().to_string();
            assert_eq!(err, "stopping container `web`: no such container");
            let err = engine.start("web").await.unwrap_err().to_string();
            assert_eq!(err, "starting container `web`: no such container");
            assert!(engine.wait_healthy("web", GRACE).await.is_err());
        });
    }

    #[test]
    fn health_is_read_from_the_current_state() {
        run(async {
            let engine = FakeContainers::new()
                .running("plain")
                .running("db")
                .with_health("db", "healthy")
                .running("api")
                .with_health("api", "unhealthy")
                .running("slow")
                .with_health("slow", "starting")
                .stopped("off")
                .with_health("off", "healthy");
            let outcome = |name: &'static str| engine.wait_healthy(name, GRACE);
            assert_eq!(
                outcome("plain").await.unwrap(),
                HealthOutcome::NoHealthcheck
            );
            assert_eq!(outcome("db").await.unwrap(), HealthOutcome::Healthy);
            assert_eq!(outcome("api").await.unwrap(), HealthOutcome::Unhealthy);
            assert_eq!(outcome("slow").await.unwrap(), HealthOutcome::TimedOut);
            assert_eq!(outcome("off").await.unwrap(), HealthOutcome::NotRunning);
            engine.set_health("slow", Some("healthy"));
            assert_eq!(outcome("slow").await.unwrap(), HealthOutcome::Healthy);
        });
    }

    #[test]
    fn an_injected_stop_failure_leaves_the_container_running() {
        run(async {
            let engine = FakeContainers::new().running("web").running("worker");
            engine.fail(Op::Stop, "worker");
            engine.stop("web", GRACE).await.unwrap();
            let err = engine.stop("worker", GRACE).await.unwrap_err().to_string();
            assert!(err.starts_with("stopping container `worker`: "), "{err}");
            assert!(engine.stop("worker", GRACE).await.is_err(), "every time");
            assert_eq!(engine.is_running("worker"), Some(true));
            engine.ping().await.unwrap();
        });
    }

    #[test]
    fn a_start_can_fail_a_given_number_of_times() {
        run(async {
            let engine = FakeContainers::new().stopped("web");
            engine.fail_times(Op::Start, "web", 2);
            assert!(engine.start("web").await.is_err());
            assert!(engine.start("web").await.is_err());
            assert_eq!(engine.is_running("web"), Some(false));
            engine.start("web").await.unwrap();
            assert_eq!(engine.is_running("web"), Some(true));
            assert_eq!(engine.names_of(Op::Start).len(), 3);
        });
    }

    #[test]
    fn an_inspect_failure_is_an_error_not_a_missing_container() {
        run(async {
            let engine = FakeContainers::new().running("web");
            engine.fail_times(Op::Inspect, "web", 1);
            let err = engine.inspect("web").await.unwrap_err().to_string();
            assert!(err.starts_with("inspecting container `web`: "), "{err}");
            assert!(engine.inspect("web").await.unwrap().is_some());
        });
    }

    #[test]
    fn a_gone_engine_fails_every_call_until_it_is_back() {
        run(async {
            let engine = FakeContainers::new().running("web").own_container("web");
            assert_eq!(engine.own_id().await, Some(fake_id("web")));
            engine.engine_gone();
            assert!(engine.ping().await.is_err());
            assert!(engine.inspect("web").await.is_err());
            assert!(engine.stop("web", GRACE).await.is_err());
            assert_eq!(engine.own_id().await, None);
            assert_eq!(engine.is_running("web"), Some(true));
            engine.engine_back();
            engine.ping().await.unwrap();
            assert_eq!(
                engine.stop("web", GRACE).await.unwrap(),
                StopOutcome::Stopped
            );
        });
    }

    #[test]
    fn the_engine_can_go_away_at_a_chosen_call() {
        run(async {
            let engine = FakeContainers::new().stopped("web").stopped("worker");
            engine.engine_gone_at(Op::Start, "worker");
            engine.start("web").await.unwrap();
            assert!(engine.start("worker").await.is_err());
            assert_eq!(engine.is_running("worker"), Some(false));
            assert!(engine.ping().await.is_err(), "gone for every call after");
            engine.engine_back();
            engine.start("worker").await.unwrap();
            assert_eq!(engine.is_running("worker"), Some(true));
        });
    }

    #[test]
    fn a_stop_in_flight_completes_although_its_answer_is_lost() {
        run(async {
            let engine = FakeContainers::new().running("web");
            engine.engine_gone_after(Op::Stop, "web");
            assert!(engine.stop("web", GRACE).await.is_err());
            assert_eq!(engine.is_running("web"), Some(false));
            assert!(engine.ping().await.is_err());
        });
    }

    #[test]
    fn undoing_a_stop_starts_the_container_by_its_configured_name() {
        run(async {
            let engine = Arc::new(FakeContainers::new().running("web"));
            let control: Arc<dyn ContainerControl> = engine.clone();
            let state = control.inspect("web").await.unwrap().unwrap();
            let receipt = StopReceipt::before_stop(control.backend(), "web", &state);
            control.stop("web", GRACE).await.unwrap();
            control.undo_stop(&receipt).await.unwrap();
            assert_eq!(engine.is_running("web"), Some(true));
            assert_eq!(engine.names_of(Op::Start), vec!["web"]);
            assert_eq!(receipt.backend, "fake");
        });
    }

    #[test]
    fn the_fake_passes_the_suite_every_backend_passes() {
        run(async {
            let engine = FakeContainers::new().running("web");
            crate::container::conformance::check(&engine, "web", "web-missing").await;
            assert_eq!(engine.is_running("web"), Some(true));
        });
    }

    #[test]
    fn removed_containers_are_missing() {
        run(async {
            let engine = FakeContainers::new().running("web");
            engine.remove("web");
            assert_eq!(engine.inspect("web").await.unwrap(), None);
            assert_eq!(engine.is_running("web"), None);
        });
    }
}
