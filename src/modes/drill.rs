//! `backupd drill [FILE|latest]`: one restore drill, by hand or from cron.

use crate::cli::DrillArgs;
use crate::clock::SystemClock;
use crate::config::DrillConfig;
use crate::drill;
use crate::error::{Error, Result};

pub async fn run(args: &DrillArgs) -> Result<()> {
    let cfg = DrillConfig::from_args(args)?;
    tracing::debug!(?cfg, "configuration");
    let cancel = crate::shutdown::on_signal();
    let report = drill::run(&cfg.settings, &cfg.which, &SystemClock, &cancel).await;
    match report.failure() {
        None => {
            // The one line on stdout, for scripts and people.
            let file = report.file.as_ref().map(|f| f.display().to_string());
            println!(
                "{}: drill passed (loaded into {}, {}; {:.1} s)",
                file.unwrap_or_default(),
                report.loaded_into.as_deref().unwrap_or("a scratch copy"),
                report.manifest.as_deref().unwrap_or(""),
                report.duration.as_secs_f64()
            );
            Ok(())
        }
        Some(reason) => Err(Error::Other(reason)),
    }
}
