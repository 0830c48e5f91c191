//! backupd: backs up and restores the database of a Docker Compose web stack.
//!
//! Data flows one way: database (`db`) → compression (`archive`) → storage
//! (`store`) → status (`state`). `main.rs` only parses the command line and
//! maps the result of [`run`] to an exit code.

pub mod archive;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod container;
pub mod crypto;
pub mod db;
pub mod drill;
pub mod error;
pub mod events;
pub mod files;
pub mod health;
pub mod hooks;
pub mod http;
pub mod inspect;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod modes;
pub mod notify;
pub mod offsite;
pub mod process;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod shutdown;
pub mod stale;
pub mod state;
pub mod store;
pub mod values;
pub mod verify;
pub mod watch;

pub use error::{Error, Result};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs the chosen subcommand.
pub async fn run(cli: cli::Cli) -> Result<()> {
    files::init(cli.files.file_mode);
    match &cli.command {
        cli::Command::Once(args) => modes::once::run(args).await,
        cli::Command::Backup(args) => modes::daemon::run(args).await,
        cli::Command::Restore(args) => modes::restore::run(args).await,
        cli::Command::Drill(args) => modes::drill::run(args).await,
        cli::Command::Healthcheck { dir, health } => {
            modes::healthcheck::run(dir, health, &clock::SystemClock)
        }
        cli::Command::Verify {
            file,
            dir,
            encryption,
        } => modes::verify::run(file, dir, encryption).await,
        cli::Command::List {
            dir,
            encryption,
            s3,
            remote,
            verify,
        } => {
            if *remote {
                modes::list::run_remote(s3, &clock::SystemClock).await
            } else {
                modes::list::run(dir, encryption, *verify, &clock::SystemClock).await
            }
        }
        cli::Command::Keygen => modes::keygen::run(),
        cli::Command::Status { dir } => modes::status::run(dir),
        cli::Command::NotifyTest { notify, database } => {
            modes::notify_test::run(notify, database).await
        }
    }
}
