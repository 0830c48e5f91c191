//! Restore drills (issue 13): prove on a schedule that a backup loads and
//! holds the rows its manifest records. This first part is the naming of the
//! scratch database, pure text, so that which databases a drill may drop is
//! decided here alone.
//!
//! A drill loads into `<db>_drill_<stamp>` (stamp `YYYYMMDDTHHMMSS.ffffffZ`,
//! [`STAMP_FORMAT`]); a kill -9 mid-load leaves such a database behind, and
//! the next drill (and the daemon at start-up) drops exactly the names of
//! this form for the configured database, never `<db>_restore_<stamp>` or
//! `<db>_pre_restore_<stamp>` (the restore's) nor any other database.

use chrono::{DateTime, Utc};

use crate::restore::postgres::{STAMP_FORMAT, is_stamp};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER: usize = 63;
const DRILL_SUFFIX: &str = "_drill_";
/// The length of a [`STAMP_FORMAT`] stamp. Drills never wrote the older
/// 16-byte form, so only this one is recognised.
const STAMP_LEN: usize = 23;

/// The stamp of a drill started at `at`.
pub fn drill_stamp_at(at: DateTime<Utc>) -> String {
    at.format(STAMP_FORMAT).to_string()
}

/// `<db>_drill_<stamp>`, `db` shortened (at a character boundary) so the
/// whole name fits PostgreSQL's 63 bytes; `db` keeps 33 bytes.
pub fn drill_database_name(db: &str, stamp: &str) -> String {
    let room = MAX_IDENTIFIER.saturating_sub(DRILL_SUFFIX.len() + stamp.len());
    let mut end = db.len().min(room);
    while !db.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{DRILL_SUFFIX}{stamp}", &db[..end])
}

/// The stamp when `name` is exactly a drill database of `db` as
/// [`drill_database_name`] writes it: such a database is a leftover of a
/// drill that did not finish (one drill runs at a time, under the
/// `BACKUP_DIR` lock), so it may be dropped.
pub fn leftover_drill_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    let prefix = drill_database_name(db, &"0".repeat(STAMP_LEN));
    let prefix = &prefix[..prefix.len() - STAMP_LEN];
    name.strip_prefix(prefix)
        .filter(|s| s.len() == STAMP_LEN && is_stamp(s))
}

/// The databases among `names` that are leftover drills of `db`.
pub fn leftover_drill_databases<'n>(db: &str, names: &'n [String]) -> Vec<&'n str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| leftover_drill_stamp(db, name).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::postgres::{previous_name, staging_name};
    use chrono::TimeZone;

    const STAMP: &str = "20261202T040000.123456Z";

    #[test]
    fn the_stamp_is_the_restore_stamp_form() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 4, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456);
        assert_eq!(drill_stamp_at(at), STAMP);
        assert!(is_stamp(&drill_stamp_at(at)));
    }

    #[test]
    fn names_fit_postgres_identifiers() {
        assert_eq!(
            drill_database_name("appdb", STAMP),
            "appdb_drill_20261202T040000.123456Z"
        );
        let long = "d".repeat(80);
        let name = drill_database_name(&long, STAMP);
        assert_eq!(name.len(), 63);
        assert_eq!(leftover_drill_stamp(&long, &name), Some(STAMP));
        // Never cut inside a character.
        let wide = "ä".repeat(40);
        let name = drill_database_name(&wide, STAMP);
        assert!(name.len() <= 63);
        assert_eq!(leftover_drill_stamp(&wide, &name), Some(STAMP));
    }

    #[test]
    fn only_drill_names_of_the_configured_database_are_leftovers() {
        let names: Vec<String> = [
            drill_database_name("appdb", STAMP),
            // The restore's own names: never a drill's to drop.
            staging_name("appdb", STAMP),
            previous_name("appdb", STAMP),
            // Other databases, and near misses.
            "appdb".into(),
            "postgres".into(),
            "appdb_drill_".into(),
            "appdb_drill_latest".into(),
            "appdb_drill_20261202T040000Z".into(),
            format!("appdb_drill_{STAMP}x"),
            format!("other_drill_{STAMP}"),
            format!("appdb2_drill_{STAMP}"),
            format!("xappdb_drill_{STAMP}"),
            drill_database_name("appdb_drill", STAMP),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            leftover_drill_databases("appdb", &names),
            [drill_database_name("appdb", STAMP)]
        );
    }

    #[test]
    fn a_drill_name_is_never_a_restore_name() {
        // The restore drops `<db>_restore_<stamp>` and prunes
        // `<db>_pre_restore_<stamp>`; a drill's name must be neither, for
        // any database name.
        for db in ["appdb", "app_restore", "app_pre", "x", &"d".repeat(80)] {
            let name = drill_database_name(db, STAMP);
            assert_ne!(name, staging_name(db, STAMP));
            assert_ne!(name, previous_name(db, STAMP));
            // What the restore recognises is the suffix after the name.
            assert!(!name.ends_with(&format!("_restore_{STAMP}")), "{name}");
        }
    }
}
