//! How a PostgreSQL restore fails: [`Error::PgRestore`] names the target
//! (its URL masked) and says what was being done; after a load or swap its
//! notes say what is true of the live database now.

use std::fmt;

use crate::db::PgTarget;
use crate::error::Error;

/// The psql on PATH cannot load a plain SQL dump safely (or cannot be asked).
#[derive(Debug, thiserror::Error)]
pub enum PsqlUnfit {
    #[error("cannot run psql --version: {0} (is the PostgreSQL client installed and on PATH?)")]
    CannotRun(std::io::Error),

    #[error("psql --version failed ({status}): {stderr}")]
    VersionFailed {
        status: std::process::ExitStatus,
        stderr: String,
    },

    #[error(
        "the psql in use ({version}) is too old to load a plain SQL dump safely: it lacks restricted mode (\\restrict), so the file's psql meta-commands could run programs and read files; install psql 18, 17.6, 16.10, 15.14, 14.19, 13.22 or newer (nothing was changed)"
    )]
    TooOld { version: String },
}

/// The restore of `target` failed: `reason`.
pub(super) fn failed(target: &PgTarget, reason: impl fmt::Display) -> Error {
    Error::PgRestore {
        database: target.to_string(),
        reason: reason.to_string(),
        notes: Vec::new(),
    }
}

/// Adds what went wrong while cleaning up to an error; an error that has no
/// room for it (a cancellation) leaves it in the log instead.
pub(super) fn with_note(mut err: Error, note: Option<String>) -> Error {
    if let Some(note) = note {
        match &mut err {
            Error::PgRestore { notes, .. } => notes.push(note),
            _ => tracing::error!("{note}"),
        }
    }
    err
}

/// True when `err` has room for notes ([`with_note`] keeps them).
pub(super) fn takes_notes(err: &Error) -> bool {
    matches!(err, Error::PgRestore { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_follow_the_reason_in_the_order_found() {
        let target = PgTarget {
            host: Some("db".into()),
            port: None,
            user: Some("app".into()),
            password: Some("pw".into()),
            dbname: Some("appdb".into()),
            options: vec![],
        };
        let err = with_note(
            with_note(failed(&target, "loading x failed"), Some("live".into())),
            Some("drop it by hand".into()),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("restore of postgresql://")
                && text.ends_with("failed: loading x failed; live; drop it by hand"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
        assert!(matches!(
            with_note(Error::Cancelled, Some("n".into())),
            Error::Cancelled
        ));
    }
}
