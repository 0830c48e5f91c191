//! Restoring a backup into the live database without ever losing it.

pub mod check;
pub mod failed;
pub mod input;
pub mod kind;
pub mod postgres;
pub mod sqlite;
pub mod state;

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
