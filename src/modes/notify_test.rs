//! `backupd notify-test`: one test message to every destination and the
//! ping URL, at once, and one line per destination saying how it went.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::cli::{DatabaseArgs, NotifyArgs};
use crate::config::{NotifyConfig, resolve_database};
use crate::error::{Error, Result};
use crate::notify::message::{Notice, NoticeContext};
use crate::notify::notifier::{describe, real_senders};

pub async fn run(notify: &NotifyArgs, database: &DatabaseArgs) -> Result<()> {
    let cfg = NotifyConfig::from_args(notify)?;
    if cfg.is_empty() {
        return Err(Error::Config(
            "nothing to test: set NOTIFY_URLS (or NOTIFY_URLS_FILE) or BACKUP_PING_URL (or BACKUP_PING_URL_FILE)".into(),
        ));
    }
    // The message names the database when one is configured; notify-test
    // works without one.
    let ctx = match resolve_database(database) {
        Ok(db) => NoticeContext::new(&db),
        Err(_) => NoticeContext::without_database(),
    };
    let notice = Arc::new(Notice::test(&ctx));
    let (deliver, pinger) = real_senders(cfg.timeout)?;
    let timeout = cfg.timeout;
    let mut tasks = JoinSet::new();
    for (index, destination) in cfg.destinations.iter().cloned().enumerate() {
        let (deliver, notice) = (Arc::clone(&deliver), Arc::clone(&notice));
        tasks.spawn(async move {
            let shown = describe(&destination);
            let result =
                tokio::time::timeout(timeout, deliver.deliver(&destination, &notice)).await;
            (index, shown, flatten(result, timeout))
        });
    }
    if let Some(url) = cfg.ping.clone() {
        let index = cfg.destinations.len();
        tasks.spawn(async move {
            let request = url.test();
            let result = tokio::time::timeout(timeout, pinger.ping(&request)).await;
            (index, format!("ping {url}"), flatten(result, timeout))
        });
    }
    let mut lines = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(line) => lines.push(line),
            Err(e) => return Err(Error::Other(format!("a notify-test task failed: {e}"))),
        }
    }
    lines.sort_by_key(|(index, _, _)| *index);
    let mut failed = 0;
    for (_, shown, result) in &lines {
        match result {
            Ok(()) => println!("ok  {shown}"),
            Err(e) => {
                failed += 1;
                println!("FAILED {shown}: {e}");
            }
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Error::Other(format!(
            "{n} of {} notification destinations failed the test",
            lines.len()
        ))),
    }
}

fn flatten(
    result: std::result::Result<
        std::result::Result<(), crate::notify::DeliveryError>,
        tokio::time::error::Elapsed,
    >,
    timeout: std::time::Duration,
) -> std::result::Result<(), String> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} s (NOTIFY_TIMEOUT_SECONDS)",
            timeout.as_secs()
        )),
    }
}
