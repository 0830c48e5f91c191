//! `backupd list`: every backup file in `BACKUP_DIR` (backupd's, the app's
//! manual ones, safety backups), newest first, marked by origin.

use crate::cli::{DirArgs, EncryptionArgs, S3Args};
use crate::clock::Clock;
use crate::config::{Paths, load_keys, s3_settings};
use crate::error::{Error, Result};
use crate::offsite;
use crate::store::local;
use crate::store::remote::RemoteStore;
use crate::store::s3::S3Store;
use crate::verify;

pub async fn run(
    args: &DirArgs,
    encryption: &EncryptionArgs,
    full_verify: bool,
    clock: &dyn Clock,
) -> Result<()> {
    let paths = Paths::from_args(args)?;
    let keys = load_keys(encryption, &paths)?.for_decryption();
    let now = clock.now();
    let backups = local::list_all(&paths.backup_dir, now)?;
    if backups.is_empty() {
        eprintln!("no backups in {}", paths.backup_dir.display());
        return Ok(());
    }
    let width = backups.iter().map(|b| b.file_name.len()).max().unwrap_or(0);
    println!(
        "{:<width$}  {:<9}  {:>10}  {:>8}  VERIFIED",
        "NAME", "ORIGIN", "SIZE", "AGE"
    );
    let mut unsound = 0;
    for backup in &backups {
        let verified = if full_verify {
            match verify::verify(
                &backup.path,
                keys.as_ref().map(Option::as_ref).map_err(Clone::clone),
                Some(&paths.backup_dir),
            )
            .await
            {
                Ok(_) => "yes (full check)".to_string(),
                Err(e) => {
                    unsound += 1;
                    format!("NO: {e}")
                }
            }
        } else if backup.has_sidecar {
            // backupd checks the content before it names a file and records
            // its checksum; --verify re-reads everything.
            "checksum recorded".to_string()
        } else {
            "no checksum".to_string()
        };
        println!(
            "{:<width$}  {:<9}  {:>10}  {:>8}  {verified}",
            backup.file_name,
            backup.origin.describe(),
            crate::values::human_size(backup.size),
            human_age(now.signed_duration_since(backup.time)),
        );
    }
    if unsound > 0 {
        return Err(Error::Other(format!(
            "{unsound} backup(s) failed verification"
        )));
    }
    Ok(())
}

/// `backupd list --remote`: this tool's backups in the bucket.
pub async fn run_remote(args: &S3Args, clock: &dyn Clock) -> Result<()> {
    let settings = s3_settings(args)?.ok_or_else(|| {
        Error::Config("list --remote needs AWS_S3_BUCKET (and credentials) to be set".into())
    })?;
    let store = S3Store::connect(settings).await?;
    print_remote(&store, clock).await
}

async fn print_remote(store: &dyn RemoteStore, clock: &dyn Clock) -> Result<()> {
    let now = clock.now();
    let backups = offsite::list_backups(store, now).await?;
    if backups.is_empty() {
        eprintln!("no backups in {}", store.describe());
        return Ok(());
    }
    let width = backups
        .iter()
        .map(|b| b.object.name.len())
        .max()
        .unwrap_or(0);
    println!("{:<width$}  {:>10}  {:>8}  CHECKSUM", "NAME", "SIZE", "AGE");
    for backup in &backups {
        println!(
            "{:<width$}  {:>10}  {:>8}  {}",
            backup.object.name,
            crate::values::human_size(backup.object.size),
            human_age(now.signed_duration_since(backup.name.time)),
            if backup.has_sidecar {
                "stored (.sha256)"
            } else {
                "none"
            }
        );
    }
    eprintln!("{} backup(s) in {}", backups.len(), store.describe());
    Ok(())
}

fn human_age(age: chrono::Duration) -> String {
    let secs = age.num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
