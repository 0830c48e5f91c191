//! `backupd status`: the status JSON, as the HTTP endpoint serves it.

use crate::cli::DirArgs;
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::state::Status;

pub fn run(args: &DirArgs) -> Result<()> {
    let paths = Paths::from_args(args)?;
    let status = Status::read(&paths.status_file)?.ok_or_else(|| {
        Error::Other(format!(
            "no status file at {} yet: no backup has run with this BACKUP_DIR",
            paths.status_file.display()
        ))
    })?;
    let json = serde_json::to_string_pretty(&status).map_err(|e| Error::Other(e.to_string()))?;
    println!("{json}");
    Ok(())
}
