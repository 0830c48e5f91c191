//! `backupd healthcheck`: the `/healthz` answer from the status file alone —
//! no network, for Docker's HEALTHCHECK.

use crate::cli::{DirArgs, HealthArgs};
use crate::clock::Clock;
use crate::config::HealthConfig;
use crate::error::{Error, Result};
use crate::health;
use crate::state::Status;

pub fn run(dir: &DirArgs, args: &HealthArgs, clock: &dyn Clock) -> Result<()> {
    let cfg = HealthConfig::from_args(dir, args)?;
    let status = Status::read(&cfg.paths.status_file)?;
    let health = health::evaluate_with_drills(
        status.as_ref(),
        clock.now(),
        cfg.max_age_seconds,
        cfg.max_drill_age_seconds,
    );
    if health.healthy {
        println!("healthy: {}", health.reason);
        Ok(())
    } else {
        Err(Error::Other(format!("unhealthy: {}", health.reason)))
    }
}
