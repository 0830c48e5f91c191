//! `backupd healthcheck`: the `/healthz` answer from the status file alone —
//! no network, for Docker's HEALTHCHECK.

use crate::cli::{DirArgs, HealthArgs};
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::health;
use crate::state::Status;

pub fn run(dir: &DirArgs, args: &HealthArgs) -> Result<()> {
    let paths = Paths::from_args(dir)?;
    let status = Status::read(&paths.status_file)?;
    let health = health::evaluate(
        status.as_ref(),
        chrono::Utc::now(),
        args.health_max_age_seconds,
    );
    if health.healthy {
        println!("healthy: {}", health.reason);
        Ok(())
    } else {
        Err(Error::Other(format!("unhealthy: {}", health.reason)))
    }
}
