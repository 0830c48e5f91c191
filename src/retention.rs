//! Which backups retention deletes: a pure decision over names and a time.
//!
//! Age comes from the timestamp in the file name (when backupd made it), not
//! the mtime, which copies and restores of the folder change. The newest
//! `keep_min` backups of each kind are kept whatever their age, so a stack
//! that stopped producing backups still has its last good copies.

use chrono::{DateTime, Duration, Utc};

use crate::store::local::StoredBackup;
use crate::store::{BackupName, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// 0 turns retention off.
    pub days: u32,
    pub keep_min: usize,
}

/// The backups to delete. `backups` may be in any order.
pub fn expired(backups: &[StoredBackup], policy: Policy, now: DateTime<Utc>) -> Vec<StoredBackup> {
    if policy.days == 0 {
        return Vec::new();
    }
    let max_age = Duration::days(i64::from(policy.days));
    let mut doomed = Vec::new();
    for kind in [Kind::PgDump, Kind::Sqlite] {
        let mut of_kind: Vec<&StoredBackup> =
            backups.iter().filter(|b| b.name.kind == kind).collect();
        of_kind.sort_by(|a, b| BackupName::newest_first(&a.name, &b.name));
        doomed.extend(
            of_kind
                .into_iter()
                .skip(policy.keep_min)
                .filter(|b| now.signed_duration_since(b.name.time) > max_age)
                .cloned(),
        );
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::PathBuf;

    fn backup(kind: Kind, days_ago: i64, now: DateTime<Utc>) -> StoredBackup {
        let name = BackupName::new(kind, now - Duration::days(days_ago), 0);
        StoredBackup {
            path: PathBuf::from(name.file_name()),
            name,
            size: 1,
            has_sidecar: true,
        }
    }

    fn names(list: &[StoredBackup]) -> Vec<String> {
        list.iter().map(|b| b.name.file_name()).collect()
    }

    #[test]
    fn old_backups_go_but_the_newest_few_of_each_kind_stay() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let all: Vec<_> = [0, 1, 5, 6, 7]
            .iter()
            .map(|d| backup(Kind::Sqlite, *d, now))
            .chain(
                [9, 10, 11, 12]
                    .iter()
                    .map(|d| backup(Kind::PgDump, *d, now)),
            )
            .collect();
        let gone = expired(
            &all,
            Policy {
                days: 2,
                keep_min: 3,
            },
            now,
        );
        let expected = [
            backup(Kind::PgDump, 12, now),
            backup(Kind::Sqlite, 6, now),
            backup(Kind::Sqlite, 7, now),
        ];
        assert_eq!(names(&gone), names(&expected));
    }

    #[test]
    fn zero_days_turns_retention_off() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let all: Vec<_> = (10..20).map(|d| backup(Kind::PgDump, d, now)).collect();
        assert!(
            expired(
                &all,
                Policy {
                    days: 0,
                    keep_min: 0
                },
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn a_backup_exactly_at_the_limit_is_kept() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let all: Vec<_> = [2, 3]
            .iter()
            .map(|d| backup(Kind::PgDump, *d, now))
            .collect();
        let gone = expired(
            &all,
            Policy {
                days: 2,
                keep_min: 0,
            },
            now,
        );
        assert_eq!(names(&gone), names(&[backup(Kind::PgDump, 3, now)]));
    }
}
