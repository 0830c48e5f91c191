//! The app's containers around a restore: which to stop (planned before
//! anything is stopped), starting them again with retries while the engine
//! does not answer, and letting a stop still in flight after a crash finish
//! first. Runs over the container-control seam, so the procedure is tested
//! against a recording fake.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::container::{ContainerControl, HealthOutcome, StopReceipt};
use crate::restore::error::{RestoreError, StartError, StartFailure};
use crate::restore::state::InProgress;
use crate::restore::target::Order;

/// Backoff between attempts to start a container while the engine does not
/// answer: 1 s, doubling, at most 30 s, within RESTORE_START_RETRY_SECONDS.
const START_RETRY_FIRST: Duration = Duration::from_secs(1);
const START_RETRY_MAX: Duration = Duration::from_secs(30);
/// Added to the stop grace period when waiting for a stop that may still be
/// in flight in the engine (as the stop request's own deadline).
const STOP_IN_FLIGHT_SLACK: Duration = Duration::from_secs(15);

/// The operator's container settings (`RESTORE_*_CONTAINERS`, timeouts).
#[derive(Debug, Clone, Default)]
pub struct ContainerPolicy {
    pub stop: Vec<String>,
    pub start: Vec<String>,
    pub allow_missing: bool,
    pub stop_timeout: Duration,
    pub stop_wait: StopWait,
    pub start_wait: Duration,
    /// How long starting is retried while the engine does not answer.
    pub start_retry: Duration,
    pub health_timeout: Duration,
}

/// `RESTORE_STOP_WAIT_SECONDS` left unset: the old helper's 5 s, in the
/// orders where it still protects something.
pub const DEFAULT_STOP_WAIT: Duration = Duration::from_secs(5);

/// How long a restore waits after its containers have stopped, by its order.
///
/// The old helper waited so that what the stopped app left behind (sessions
/// the server had not yet seen close, a pooler's connections, a last write
/// to the SQLite file from a process not stopped) was gone before it touched
/// the database. The staging swap needs no such wait: it ends the live
/// database's remaining sessions itself and retries when they come back,
/// and a wait there would be outage and nothing else. The stop-first orders
/// (inplace, SQLite) touch the live database right after the stop (safety
/// backup, load) and are down for the whole load anyway, so they keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopWait {
    /// Before the safety backup and load of an inplace or SQLite restore.
    pub stop_first: Duration,
    /// Before a staging swap, inside the outage.
    pub load_while_running: Duration,
}

impl StopWait {
    /// From `RESTORE_STOP_WAIT_SECONDS`: a value the operator set is waited
    /// in every order (they may know of something else to wait for);
    /// unset, [`DEFAULT_STOP_WAIT`] in the stop-first orders and none
    /// before a staging swap.
    pub fn from_setting(seconds: Option<u64>) -> Self {
        match seconds {
            Some(seconds) => StopWait {
                stop_first: Duration::from_secs(seconds),
                load_while_running: Duration::from_secs(seconds),
            },
            None => StopWait {
                stop_first: DEFAULT_STOP_WAIT,
                load_while_running: Duration::ZERO,
            },
        }
    }

    pub fn after_stopping(&self, order: Order) -> Duration {
        match order {
            Order::StopFirst => self.stop_first,
            Order::LoadWhileRunning => self.load_while_running,
        }
    }
}

impl ContainerPolicy {
    pub fn uses_containers(&self) -> bool {
        !self.stop.is_empty() || !self.start.is_empty()
    }

    /// Named in RESTORE_STOP_CONTAINERS or RESTORE_START_CONTAINERS: the
    /// only containers backupd ever starts, whatever a state file says.
    pub fn is_configured(&self, name: &str) -> bool {
        self.stop.iter().any(|c| c == name) || self.start.iter().any(|c| c == name)
    }

    /// What was stopped, then RESTORE_START_CONTAINERS not among them.
    pub fn start_list(&self, stopped: &[String]) -> Vec<String> {
        let mut list: Vec<String> = stopped.to_vec();
        for name in &self.start {
            if !list.contains(name) {
                list.push(name.clone());
            }
        }
        list
    }
}

/// The containers a restore stopped or asked to stop: the `stopping` intent
/// (older state files: the planned list) and those seen stopped.
pub fn asked_to_stop(p: &InProgress) -> Vec<String> {
    let mut list = p.stopping.clone().unwrap_or_else(|| p.containers.clone());
    for name in &p.stopped {
        if !list.contains(name) {
            list.push(name.clone());
        }
    }
    list
}

/// The containers to stop, each with the receipt that undoes its stop:
/// every named one must exist (unless allowed missing), and backupd never
/// stops the container it runs in.
pub async fn plan(
    control: Option<&dyn ContainerControl>,
    policy: &ContainerPolicy,
) -> std::result::Result<Vec<StopReceipt>, RestoreError> {
    let Some(control) = control else {
        return Ok(vec![]);
    };
    let own = control.own_id().await;
    let mut plan = Vec::new();
    for name in &policy.stop {
        match control
            .inspect(name)
            .await
            .map_err(RestoreError::Containers)?
        {
            Some(state)
                if own
                    .as_deref()
                    .is_some_and(|own| state.id.starts_with(own) || own.starts_with(&state.id)) =>
            {
                tracing::warn!(container = %name, "not stopping the container backupd runs in");
            }
            Some(state) => plan.push(StopReceipt::before_stop(control.backend(), name, &state)),
            None if policy.allow_missing => {
                tracing::warn!(container = %name, "container does not exist; going on (RESTORE_ALLOW_MISSING_CONTAINERS)");
            }
            None => return Err(RestoreError::MissingContainer(name.clone())),
        }
    }
    Ok(plan)
}

/// Starts the containers (and RESTORE_START_CONTAINERS) and waits for
/// those with a healthcheck; their health is written into `health` for the
/// history. A container with a receipt of the same backend is started by
/// undoing its stop. While the engine does not answer, starting is retried
/// (1 s, doubling, at most 30 s apart) for RESTORE_START_RETRY_SECONDS in
/// all; a container the engine refuses is not retried.
pub async fn start(
    control: Option<&dyn ContainerControl>,
    policy: &ContainerPolicy,
    stopped: &[String],
    receipts: &[StopReceipt],
    health: &mut BTreeMap<String, String>,
) -> std::result::Result<(), StartFailure> {
    let Some(control) = control else {
        return Ok(());
    };
    let mut errors = Vec::new();
    let list = policy.start_list(stopped);
    let give_up = Instant::now() + policy.start_retry;
    for name in &list {
        let receipt = receipts
            .iter()
            .find(|r| &r.name == name && r.backend == control.backend());
        if let Err(e) = start_with_retry(control, name, receipt, give_up).await {
            errors.push(e);
        }
    }
    let failure = StartFailure { errors };
    if failure.engine_lost() {
        for name in &list {
            health.insert(name.clone(), "unknown".into());
        }
        return Err(failure);
    }
    if !list.is_empty() {
        tokio::time::sleep(policy.start_wait).await;
    }
    for name in &list {
        let outcome = control.wait_healthy(name, policy.health_timeout).await;
        let word = match &outcome {
            Ok(seen) => seen.as_str(),
            Err(_) => "unknown",
        };
        health.insert(name.clone(), word.to_string());
        match outcome {
            Ok(HealthOutcome::Healthy) => tracing::info!(container = %name, "healthy"),
            Ok(HealthOutcome::NoHealthcheck) => {}
            Ok(other) => {
                tracing::warn!(container = %name, outcome = ?other, "container not healthy after the restore")
            }
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot read the container's health")
            }
        }
    }
    if failure.errors.is_empty() {
        Ok(())
    } else {
        Err(failure)
    }
}

/// Starts `name` (undoing its stop when there is a receipt), retrying while
/// the engine does not answer (a failed ping) until `give_up`.
async fn start_with_retry(
    control: &dyn ContainerControl,
    name: &str,
    receipt: Option<&StopReceipt>,
    give_up: Instant,
) -> std::result::Result<(), StartError> {
    let mut delay = START_RETRY_FIRST;
    let mut attempt = 1u32;
    loop {
        let started = match receipt {
            Some(receipt) => control.undo_stop(receipt).await,
            None => control.start(name).await,
        };
        let error = match started {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(container = %name, attempt, "the Docker engine answers again; container started");
                }
                return Ok(());
            }
            Err(e) => e,
        };
        if control.ping().await.is_ok() {
            return Err(StartError::Refused {
                name: name.to_string(),
                source: error,
            });
        }
        let now = Instant::now();
        if now >= give_up {
            tracing::error!(container = %name, attempts = attempt, error = %error, "the Docker engine still does not answer; giving up starting the container for now");
            return Err(StartError::EngineLost {
                name: name.to_string(),
                attempts: attempt,
                source: error,
            });
        }
        let wait = delay.min(give_up - now);
        tracing::warn!(
            container = %name,
            attempt,
            retry_in_seconds = wait.as_secs_f64(),
            error = %error,
            "the Docker engine does not answer; retrying to start the container"
        );
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(START_RETRY_MAX);
        attempt += 1;
    }
}

/// A stop request sent just before backupd died still completes in the
/// engine (SIGTERM, the grace period, SIGKILL): starting such a container
/// at once would find it running and leave it to die. Waits, at most until
/// grace + 15 s after the request was recorded, for each container named in
/// `stopping` but not seen stopped to stop.
pub async fn settle_in_flight_stops(
    control: Option<&dyn ContainerControl>,
    policy: &ContainerPolicy,
    clock: &dyn Clock,
    interrupted: &InProgress,
    names: &[String],
) {
    let Some(control) = control else {
        return;
    };
    let Some(requested) = interrupted
        .stop_requested_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return;
    };
    let window = policy.stop_timeout + STOP_IN_FLIGHT_SLACK;
    let since = (clock.now() - requested.with_timezone(&chrono::Utc))
        .to_std()
        .unwrap_or_default();
    let Some(left) = window.checked_sub(since) else {
        return;
    };
    let until = Instant::now() + left;
    let in_flight = interrupted
        .stopping
        .iter()
        .flatten()
        .filter(|n| !interrupted.stopped.contains(n) && names.contains(n));
    for name in in_flight {
        let mut logged = false;
        loop {
            match control.inspect(name).await {
                Ok(Some(c)) if c.running && Instant::now() < until => {
                    if !logged {
                        tracing::info!(
                            container = %name,
                            wait_seconds = until.saturating_duration_since(Instant::now()).as_secs(),
                            "a stop request may still be in flight; waiting for it before starting the container again"
                        );
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_wait_left_unset_spares_the_staging_swap_and_a_value_set_applies_everywhere() {
        let unset = StopWait::from_setting(None);
        assert_eq!(unset.after_stopping(Order::StopFirst), DEFAULT_STOP_WAIT);
        assert_eq!(
            unset.after_stopping(Order::LoadWhileRunning),
            Duration::ZERO
        );

        let set = StopWait::from_setting(Some(7));
        assert_eq!(set.after_stopping(Order::StopFirst), Duration::from_secs(7));
        assert_eq!(
            set.after_stopping(Order::LoadWhileRunning),
            Duration::from_secs(7)
        );

        let zero = StopWait::from_setting(Some(0));
        assert_eq!(zero.after_stopping(Order::StopFirst), Duration::ZERO);
    }
}
