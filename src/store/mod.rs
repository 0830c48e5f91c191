//! Where finished backups live. `local` is `BACKUP_DIR`; `remote` is the
//! bucket seen by name ([`remote::RemoteStore`], implemented by `s3` and by
//! the in-memory `memory`). The names this tool gives its files are defined
//! here, so retention can recognise exactly them.

#[doc(hidden)]
pub mod conformance;
pub mod local;
pub mod memory;
pub mod remote;
pub mod s3;

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The two kinds of backup file, named as the old helper named them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PgDump,
    Sqlite,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::PgDump => "pg_dump",
            Kind::Sqlite => "sqlite",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::PgDump => ".sql.gz",
            Kind::Sqlite => ".db.gz",
        }
    }
}

const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Name prefix of the backups taken before a restore (the restore service names them;
/// listings and retention recognise them).
pub const SAFETY_PREFIX: &str = "pre-restore-";

/// Appended to the name of a Fernet-encrypted backup (`NAME.gz.enc`).
pub const ENCRYPTED_SUFFIX: &str = ".enc";

/// `pg_dump-YYYYMMDDTHHMMSSZ.sql.gz` or `sqlite-YYYYMMDDTHHMMSSZ.db.gz`, with
/// `-N` before the extension when several backups fall in the same second,
/// and `.enc` after it when the file is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    pub kind: Kind,
    pub time: DateTime<Utc>,
    pub seq: u32,
    pub encrypted: bool,
}

impl BackupName {
    pub fn new(kind: Kind, time: DateTime<Utc>, seq: u32) -> Self {
        // Names carry whole seconds; keep the value equal to what parses back.
        let time = DateTime::from_timestamp(time.timestamp(), 0).unwrap_or(time);
        BackupName {
            kind,
            time,
            seq,
            encrypted: false,
        }
    }

    /// The same name with or without `.enc`.
    pub fn with_encryption(self, encrypted: bool) -> Self {
        BackupName { encrypted, ..self }
    }

    /// Recognises only names this tool writes; anything else is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        let (name, encrypted) = match name.strip_suffix(ENCRYPTED_SUFFIX) {
            Some(rest) => (rest, true),
            None => (name, false),
        };
        [Kind::PgDump, Kind::Sqlite].into_iter().find_map(|kind| {
            let rest = name.strip_prefix(kind.prefix())?.strip_prefix('-')?;
            let stem = rest.strip_suffix(kind.extension())?;
            let (stamp, seq) = match stem.split_once('-') {
                Some((stamp, seq)) => {
                    if seq.is_empty()
                        || !seq.bytes().all(|b| b.is_ascii_digit())
                        || seq.starts_with('0')
                    {
                        return None;
                    }
                    (stamp, seq.parse().ok()?)
                }
                None => (stem, 0),
            };
            if stamp.len() != 16 {
                return None;
            }
            let time = NaiveDateTime::parse_from_str(stamp, TIME_FORMAT)
                .ok()?
                .and_utc();
            Some(BackupName {
                kind,
                time,
                seq,
                encrypted,
            })
        })
    }

    pub fn file_name(&self) -> String {
        let stamp = self.time.format(TIME_FORMAT);
        let seq = if self.seq == 0 {
            String::new()
        } else {
            format!("-{}", self.seq)
        };
        let enc = if self.encrypted { ENCRYPTED_SUFFIX } else { "" };
        format!(
            "{}-{stamp}{seq}{}{enc}",
            self.kind.prefix(),
            self.kind.extension()
        )
    }

    /// Newest first: by time, then by the same-second sequence number.
    pub fn newest_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        (b.time, b.seq).cmp(&(a.time, a.seq))
    }
}

/// How far ahead of our clock a name's stamp may be and still count: clock
/// steps between hosts or containers of one machine stay well below this,
/// and a real backup is named at the instant it starts.
pub const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// A name stamped more than [`FUTURE_TOLERANCE`] after `now`: nobody wrote
/// that backup yet, so it was planted (or the clock ran away). Such names
/// are never "newest", never kept by keep-min, never uploaded or restored
/// as `latest`. Logged once per name per process.
pub fn stamped_in_future(name: &BackupName, now: DateTime<Utc>, place: &str) -> bool {
    time_in_future(&name.file_name(), name.time, now, place)
}

/// [`stamped_in_future`] for any file named `file` dated `time` (the app's
/// manual backups, safety backups).
pub fn time_in_future(file: &str, time: DateTime<Utc>, now: DateTime<Utc>, place: &str) -> bool {
    if time <= now + FUTURE_TOLERANCE {
        return false;
    }
    static SEEN: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .map(|mut seen| seen.insert(format!("{place}/{file}")))
        .unwrap_or(true);
    if first {
        tracing::warn!(
            file = %file,
            place,
            stamp = %time.format(TIME_FORMAT),
            "ignoring a backup name stamped in the future (planted, or a clock was wrong); it is not listed, kept, uploaded or restored as latest"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_round_trip_and_keep_the_old_format() {
        let time = Utc.with_ymd_and_hms(2026, 11, 29, 2, 3, 4).unwrap();
        let name = BackupName::new(Kind::PgDump, time, 0);
        assert_eq!(name.file_name(), "pg_dump-20261129T020304Z.sql.gz");
        assert_eq!(BackupName::parse(&name.file_name()), Some(name));
        let second = BackupName::new(Kind::Sqlite, time, 2);
        assert_eq!(second.file_name(), "sqlite-20261129T020304Z-2.db.gz");
        assert_eq!(BackupName::parse(&second.file_name()), Some(second.clone()));
        let encrypted = second.with_encryption(true);
        assert_eq!(encrypted.file_name(), "sqlite-20261129T020304Z-2.db.gz.enc");
        assert_eq!(BackupName::parse(&encrypted.file_name()), Some(encrypted));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "pg_dump-foo.sql.gz",
            "pg_dump-20261129T020304Z.sql",
            "pg_dump-20261129T020304Z.sql.gz.sha256",
            "pg_dump-20261129T020304Z.sql.gz.enc.sha256",
            "pg_dump-20261129T020304Z.sql.enc",
            "pg_dump-20261129T020304Z.sql.gz.enc.enc",
            ".pg_dump-20261129T020304Z.sql.gz.partial",
            "sqlite-20261129T020304Z.sql.gz",
            "sqlite-20261329T020304Z.db.gz",
            "sqlite-20261129T020304Z-.db.gz",
            "sqlite-20261129T020304Z-01.db.gz",
            "backup-status.json",
            ".encryption_key",
        ] {
            assert_eq!(BackupName::parse(name), None, "{name}");
        }
    }
}
