//! `backupd once`: one backup, for cron or by hand.

use std::sync::Arc;

use crate::backup;
use crate::cli::BackupArgs;
use crate::clock::SystemClock;
use crate::config::{BackupConfig, NotifyConfig};
use crate::crypto::keys::KEY_FILE_NAME;
use crate::error::Result;
use crate::events::{KeyUnreadable, Observer, Observers};
use crate::notify::message::NoticeContext;
use crate::notify::notifier::{self, StatusFileRecord};
use crate::state::Status;

pub async fn run(args: &BackupArgs) -> Result<()> {
    let cfg = BackupConfig::from_args(args)?;
    let notify = NotifyConfig::from_args(&args.notify)?;
    tracing::debug!(?cfg, "configuration");
    let cancel = crate::shutdown::on_signal();
    let notifier = notifier::start_from_config(
        &notify,
        NoticeContext::new(&cfg.database),
        None,
        Some(Arc::new(StatusFileRecord(cfg.paths.status_file.clone()))),
    )?;
    let mut observers = Observers::new();
    if let Some(notifier) = &notifier {
        // From cron, each run is a new process: the status file remembers
        // that the bucket was failing, so a failure streak is told once.
        let failing = Status::read(&cfg.paths.status_file)
            .ok()
            .flatten()
            .is_some_and(|s| s.last_upload_error.is_some());
        notifier.offsite_was_failing(failing);
        // As the daemon at its start: the run fails on the key too, but
        // this names the file and the fix (the run reads it again).
        if let Err(e) = cfg.keys.for_encryption() {
            notifier.observe(
                &KeyUnreadable {
                    path: cfg.paths.backup_dir.join(KEY_FILE_NAME),
                    error: e.to_string(),
                }
                .into(),
            );
        }
        observers.push(notifier.clone());
    }
    let run = backup::run(
        &cfg,
        &cancel,
        &SystemClock,
        backup::WhenBusy::Wait,
        &observers,
    )
    .await;
    // The one line on stdout, for scripts: the path of the new backup.
    if let Ok(outcome) = &run.result {
        println!("{}", outcome.backup.path.display());
    }
    // Bounded: a destination that hangs delays the exit by at most
    // NOTIFY_TIMEOUT_SECONDS, never the backup.
    if let Some(notifier) = &notifier
        && !notifier.flush(notify.timeout).await
    {
        tracing::warn!(
            timeout_seconds = notify.timeout.as_secs(),
            "exiting before every notification was delivered (NOTIFY_TIMEOUT_SECONDS)"
        );
    }
    // A failed upload does not fail the backup (the status file and the log
    // say so, and the next run uploads it); the exit code is the backup's.
    run.result.map(drop)
}
