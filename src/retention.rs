//! Which backups retention deletes: a pure decision over names and a time,
//! the same for the folder and the bucket.
//!
//! Age comes from the timestamp in the file name (when backupd made it), not
//! the mtime, which copies and restores of the folder change. The newest
//! `keep_min` backups of each kind are kept whatever their age, so a stack
//! that stopped producing backups still has its last good copies. Only
//! names this tool gives ([`BackupName`]) ever reach the decision.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::store::local::StoredBackup;
use crate::store::{BackupName, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// 0 turns retention off.
    pub days: u32,
    pub keep_min: usize,
}

/// Anything retention can decide about: it has one of our names.
pub trait Named {
    fn backup_name(&self) -> &BackupName;
}

impl Named for BackupName {
    fn backup_name(&self) -> &BackupName {
        self
    }
}

impl Named for StoredBackup {
    fn backup_name(&self) -> &BackupName {
        &self.name
    }
}

/// Why a backup is kept or deleted, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `RETENTION_DAYS=0`.
    Off,
    /// Among the `keep_min` newest of its kind (`rank` 1 is the newest).
    Newest { rank: usize, keep_min: usize },
    /// No older than the limit.
    Young { age_days: i64, days: u32 },
    /// Older than the limit and not among the newest: deleted.
    Expired { age_days: i64, days: u32 },
}

impl Reason {
    pub fn deletes(self) -> bool {
        matches!(self, Reason::Expired { .. })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Off => write!(f, "retention is off (0 days)"),
            Reason::Newest { rank, keep_min } => {
                write!(
                    f,
                    "newest {rank} of its kind (the newest {keep_min} are kept)"
                )
            }
            Reason::Young { age_days, days } => {
                write!(f, "{age_days} day(s) old, within {days} day(s)")
            }
            Reason::Expired { age_days, days } => write!(
                f,
                "{age_days} day(s) old, older than {days} day(s) and not among the newest"
            ),
        }
    }
}

/// What retention decided for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a, T> {
    pub backup: &'a T,
    pub reason: Reason,
}

/// A decision for every backup, kind by kind (pg_dump, then SQLite), each
/// newest first. `backups` may be in any order.
pub fn decide<T: Named>(backups: &[T], policy: Policy, now: DateTime<Utc>) -> Vec<Decision<'_, T>> {
    let max_age = Duration::days(i64::from(policy.days));
    let mut decisions = Vec::new();
    for kind in [Kind::PgDump, Kind::Sqlite] {
        let mut of_kind: Vec<&T> = backups
            .iter()
            .filter(|b| b.backup_name().kind == kind)
            .collect();
        of_kind.sort_by(|a, b| BackupName::newest_first(a.backup_name(), b.backup_name()));
        for (index, backup) in of_kind.into_iter().enumerate() {
            let age = now.signed_duration_since(backup.backup_name().time);
            let (age_days, days) = (age.num_days(), policy.days);
            let reason = if policy.days == 0 {
                Reason::Off
            } else if index < policy.keep_min {
                Reason::Newest {
                    rank: index + 1,
                    keep_min: policy.keep_min,
                }
            } else if age > max_age {
                Reason::Expired { age_days, days }
            } else {
                Reason::Young { age_days, days }
            };
            decisions.push(Decision { backup, reason });
        }
    }
    decisions
}

/// The backups to delete. `backups` may be in any order.
pub fn expired<T: Named + Clone>(backups: &[T], policy: Policy, now: DateTime<Utc>) -> Vec<T> {
    decide(backups, policy, now)
        .into_iter()
        .filter(|d| d.reason.deletes())
        .map(|d| d.backup.clone())
        .collect()
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

    #[test]
    fn every_decision_says_why() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        let all: Vec<BackupName> = [1, 3, 10]
            .iter()
            .map(|d| BackupName::new(Kind::PgDump, now - Duration::days(*d), 0))
            .collect();
        let policy = Policy {
            days: 2,
            keep_min: 1,
        };
        let reasons: Vec<(String, Reason)> = decide(&all, policy, now)
            .into_iter()
            .map(|d| (d.backup.file_name(), d.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    all[0].file_name(),
                    Reason::Newest {
                        rank: 1,
                        keep_min: 1
                    }
                ),
                (
                    all[1].file_name(),
                    Reason::Expired {
                        age_days: 3,
                        days: 2
                    }
                ),
                (
                    all[2].file_name(),
                    Reason::Expired {
                        age_days: 10,
                        days: 2
                    }
                ),
            ]
        );
        assert_eq!(
            reasons[1].1.to_string(),
            "3 day(s) old, older than 2 day(s) and not among the newest"
        );
        assert!(
            decide(
                &all,
                Policy {
                    days: 0,
                    keep_min: 0
                },
                now
            )
            .iter()
            .all(|d| d.reason == Reason::Off)
        );
    }
}
