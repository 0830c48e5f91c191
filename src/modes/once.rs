//! `backupd once`: one backup, for cron or by hand.

use crate::backup;
use crate::cli::BackupArgs;
use crate::clock::SystemClock;
use crate::config::BackupConfig;
use crate::error::Result;
use crate::events::Observers;

pub async fn run(args: &BackupArgs) -> Result<()> {
    let cfg = BackupConfig::from_args(args)?;
    tracing::debug!(?cfg, "configuration");
    let cancel = crate::shutdown::on_signal();
    let run = backup::run(
        &cfg,
        &cancel,
        &SystemClock,
        backup::WhenBusy::Wait,
        &Observers::new(),
    )
    .await;
    // A failed upload does not fail the backup (the status file and the log
    // say so, and the next run uploads it); the exit code is the backup's.
    let outcome = run.result?;
    // The one line on stdout, for scripts: the path of the new backup.
    println!("{}", outcome.backup.path.display());
    Ok(())
}
