//! `backupd once`: one backup, for cron or by hand.

use crate::backup;
use crate::cli::BackupArgs;
use crate::clock::SystemClock;
use crate::config::BackupConfig;
use crate::error::Result;

pub async fn run(args: &BackupArgs) -> Result<()> {
    let cfg = BackupConfig::from_args(args)?;
    tracing::debug!(?cfg, "configuration");
    let cancel = crate::shutdown::on_signal();
    let outcome = backup::run(&cfg, &cancel, &SystemClock, backup::WhenBusy::Wait).await?;
    // The one line on stdout, for scripts: the path of the new backup.
    println!("{}", outcome.backup.path.display());
    Ok(())
}
