//! The library's error type. Every variant says what was being done and to
//! which file or database; database URLs only ever appear masked.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or invalid; names the variable. Exit code 2.
    #[error("{0}")]
    Config(String),

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database could not be read (connection, authentication, pg_dump,
    /// SQLite errors). `database` is the masked URL or the file path.
    #[error("backup of {database} failed: {reason}")]
    Database { database: String, reason: String },

    /// A backup file is not sound.
    #[error("{} is not a sound backup: {reason}", path.display())]
    Verify { path: PathBuf, reason: String },

    /// A remote storage (S3) operation failed. `action` reads as a verb phrase
    /// ("upload /backups/x.sql.gz to"), `target` is `s3://bucket/key` and
    /// `reason` the service's error code and message or the network error;
    /// none of them ever holds a credential.
    #[error("cannot {action} {target}: {reason}")]
    Storage {
        action: String,
        target: String,
        reason: String,
    },

    /// A step of a PostgreSQL restore failed. `database` is the masked URL;
    /// `notes` are what was found out while cleaning up (what is true of the
    /// live database now, a staging database that could not be dropped), in
    /// the order found.
    #[error("restore of {database} failed: {reason}{}", Notes(notes))]
    PgRestore {
        database: String,
        reason: String,
        notes: Vec<String>,
    },

    /// A restore stamp not of the form the restore names databases with: a
    /// bug, caught before any name is made from it.
    #[error("internal: restore stamp '{0}' is not of the form YYYYMMDDTHHMMSS.ffffffZ")]
    BadStamp(String),

    /// A `before` hook failed, so the run did not go on. `hook` is its
    /// variable; `message` names it too (the output in it is masked).
    #[error("{message}")]
    Hook { hook: &'static str, message: String },

    #[error("cancelled by shutdown")]
    Cancelled,

    /// Another backup holds the directory lock.
    #[error("another backup is running in this directory")]
    Busy,

    #[error("{0}")]
    Other(String),
}

/// `; note` for every note.
struct Notes<'a>(&'a [String]);

impl std::fmt::Display for Notes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|note| write!(f, "; {note}"))
    }
}

impl Error {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn database(database: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Database {
            database: database.into(),
            reason: reason.into(),
        }
    }

    pub fn verify(path: &Path, reason: impl Into<String>) -> Self {
        Error::Verify {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub fn storage(
        action: impl Into<String>,
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Storage {
            action: action.into(),
            target: target.into(),
            reason: reason.into(),
        }
    }

    /// The process exit code this error maps to.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

/// "outer: inner: innermost", skipping a source its parent already quotes
/// (SDK and hyper errors often repeat their cause in their own message).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_keep_every_cause_once() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::io("connect", Path::new("/x"), root);
        assert_eq!(error_chain(&outer), "cannot connect /x: refused");
    }

    #[test]
    fn error_chains_add_causes_the_message_leaves_out() {
        #[derive(Debug, thiserror::Error)]
        #[error("request failed")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&outer), "request failed: connection reset");
    }
}
