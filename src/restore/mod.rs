//! Restoring a backup into the live database without ever losing it.
//!
//! [`procedure`] runs one restore over seams: [`target::RestoreTarget`] (the
//! database side; [`target::LiveDatabase`] for PostgreSQL and SQLite),
//! [`containers::ContainerControl`], [`state::StateStore`] and the clock.
//! [`recovery`] finishes what a crash interrupted.

pub mod check;
pub mod containers;
pub mod error;
pub mod failed;
#[cfg(test)]
pub(crate) mod fakes;
pub mod input;
pub mod postgres;
pub mod procedure;
pub mod recovery;
pub mod sqlite;
pub mod state;
pub mod target;

/// What a restore input is, and the scan of its SQL, are the inspection's.
pub use crate::inspect::{kind, sql_scan};

/// What crash recovery found the live database to be, checked rather than
/// assumed, for PostgreSQL and SQLite alike: the history records the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// The restore had finished: the live database is the restored one.
    Finished(String),
    /// The restore never took effect (not started, or rolled back): the
    /// live database is what it was before.
    NotRestored(String),
    /// Neither could be confirmed (e.g. written since the crash): the
    /// message says what is known and where the previous content is.
    Unknown(String),
}

impl Recovered {
    /// The one-line account for the history and the log.
    pub fn message(&self) -> &str {
        match self {
            Recovered::Finished(m) | Recovered::NotRestored(m) | Recovered::Unknown(m) => m,
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self, Recovered::Finished(_))
    }
}

/// Test builds only: `BACKUPD_TEST_PAUSE=<point>` parks the restore at that
/// point for good, so a test can kill -9 it at an exact moment (e.g.
/// `after-swap`: the swap committed, nothing recorded yet). Release builds
/// never read the variable.
pub(crate) async fn test_pause(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("BACKUPD_TEST_PAUSE").is_ok_and(|p| p == point) {
        tracing::warn!(point, "BACKUPD_TEST_PAUSE: paused here until killed");
        std::future::pending::<()>().await;
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
