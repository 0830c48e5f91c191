//! What every [`ContainerControl`] must do, as one suite run against each
//! backend (the fake in unit tests, Docker in the integration tests), so the
//! fake the restore procedure is tested against cannot drift from the real
//! engine. Panics with what differed.

use std::time::Duration;

use super::{ContainerControl, HealthOutcome, StopOutcome, StopReceipt};

/// Short: the suite's container must stop on the stop signal.
const GRACE: Duration = Duration::from_secs(10);
const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// Runs the suite. `running` names a running container without a
/// healthcheck that stops on the stop signal; no container may be named
/// `missing`. Leaves `running` running.
pub async fn check(control: &dyn ContainerControl, running: &str, missing: &str) {
    let backend = control.backend();
    assert!(!backend.is_empty());
    assert!(!control.describe().is_empty());
    control.ping().await.expect("ping");

    let state = control
        .inspect(running)
        .await
        .expect("inspect")
        .unwrap_or_else(|| panic!("{backend}: inspect({running}) found nothing"));
    assert!(state.running, "{backend}: {state:?}");
    assert_eq!(state.name, running.trim_start_matches('/'), "{backend}");
    assert_eq!(state.health, None, "{backend}: {state:?}");
    assert!(state.is_exactly(running) && state.is_exactly(&state.id));
    let by_id = control.inspect(&state.id).await.expect("inspect by id");
    assert_eq!(
        by_id.map(|s| s.id),
        Some(state.id.clone()),
        "{backend}: by id"
    );
    if state.id.len() > 12 {
        let prefix = control.inspect(&state.id[..12]).await.expect("inspect");
        assert!(
            prefix.is_none(),
            "{backend}: an id prefix must not match: {prefix:?}"
        );
    }
    let none = control.inspect(missing).await.expect("inspect missing");
    assert!(none.is_none(), "{backend}: {none:?}");

    let receipt = StopReceipt::before_stop(backend, running, &state);
    assert!(receipt.was_running);
    assert_eq!(
        control.stop(running, GRACE).await.expect("stop"),
        StopOutcome::Stopped,
        "{backend}"
    );
    let stopped = control.inspect(running).await.expect("inspect").unwrap();
    assert!(!stopped.running, "{backend}: {stopped:?}");
    assert_eq!(stopped.id, state.id, "{backend}: the same container");
    assert_eq!(
        control.stop(running, GRACE).await.expect("stop again"),
        StopOutcome::AlreadyStopped,
        "{backend}"
    );
    assert_eq!(
        control
            .wait_healthy(running, HEALTH_WAIT)
            .await
            .expect("health"),
        HealthOutcome::NotRunning,
        "{backend}"
    );

    control.undo_stop(&receipt).await.expect("undo the stop");
    let again = control.inspect(running).await.expect("inspect").unwrap();
    assert!(again.running, "{backend}: {again:?}");
    control.start(running).await.expect("start a running one");
    assert_eq!(
        control
            .wait_healthy(running, HEALTH_WAIT)
            .await
            .expect("health"),
        HealthOutcome::NoHealthcheck,
        "{backend}"
    );

    for (what, err) in [
        ("stop", control.stop(missing, GRACE).await.err()),
        ("start", control.start(missing).await.err()),
        (
            "wait_healthy",
            control.wait_healthy(missing, HEALTH_WAIT).await.err(),
        ),
    ] {
        let err = err
            .unwrap_or_else(|| panic!("{backend}: {what} of a missing container succeeded"))
            .to_string();
        assert!(
            err.contains(missing) && err.contains("no such container"),
            "{backend}: {what}: {err}"
        );
    }
}
