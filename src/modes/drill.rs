//! `backupd drill [FILE|latest]`: one restore drill, by hand or from cron.

use std::sync::Arc;

use crate::cli::DrillArgs;
use crate::clock::SystemClock;
use crate::config::{DrillConfig, NotifyConfig};
use crate::drill;
use crate::error::{Error, Result};
use crate::events::Observers;
use crate::notify::message::NoticeContext;
use crate::notify::notifier::{self, StatusFileRecord};

pub async fn run(args: &DrillArgs) -> Result<()> {
    let cfg = DrillConfig::from_args(args)?;
    let notify = NotifyConfig::from_args(&args.notify)?;
    tracing::debug!(?cfg, "configuration");
    let cancel = crate::shutdown::on_signal();
    let notifier = notifier::start_from_config(
        &notify,
        NoticeContext::new(&cfg.settings.database),
        None,
        Some(Arc::new(StatusFileRecord(cfg.settings.status_file.clone()))),
    )?;
    let mut observers = Observers::new();
    if let Some(notifier) = &notifier {
        observers.push(notifier.clone());
    }
    let report = drill::run(&cfg.settings, &cfg.which, &SystemClock, &cancel, &observers).await;
    // Bounded, as for `once`: a destination that hangs delays the exit by
    // at most NOTIFY_TIMEOUT_SECONDS.
    if let Some(notifier) = &notifier
        && !notifier.flush(notify.timeout).await
    {
        tracing::warn!(
            timeout_seconds = notify.timeout.as_secs(),
            "exiting before every notification was delivered (NOTIFY_TIMEOUT_SECONDS)"
        );
    }
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
