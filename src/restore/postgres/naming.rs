//! The names backupd gives databases (`<db>_restore_<stamp>` while
//! loading, `<db>_pre_restore_<stamp>` for the replaced one), the stamps in
//! them, and quoting of identifiers, literals and connection strings: pure
//! text, so every name recovery and pruning trust is decided here alone.

use crate::error::{Error, Result};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER: usize = 63;
const STAGING_SUFFIX: &str = "_restore_";
const PREVIOUS_SUFFIX: &str = "_pre_restore_";
/// `YYYYMMDDTHHMMSS.ffffffZ`: microseconds, so two restores within one
/// second get different names.
const STAMP_LEN: usize = 23;
/// `YYYYMMDDTHHMMSSZ`, written before stamps had microseconds; still
/// recognised so such databases are pruned and recovered.
const OLD_STAMP_LEN: usize = 16;
/// The format of [`STAMP_LEN`] stamps, for chrono.
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.6fZ";

/// `<db>_restore_<stamp>`, the base shortened (at a character boundary) so
/// the whole name fits PostgreSQL's 63 bytes.
pub fn staging_name(db: &str, stamp: &str) -> String {
    suffixed(db, STAGING_SUFFIX, stamp)
}

/// `<db>_pre_restore_<stamp>`, shortened like [`staging_name`].
pub fn previous_name(db: &str, stamp: &str) -> String {
    suffixed(db, PREVIOUS_SUFFIX, stamp)
}

fn suffixed(db: &str, suffix: &str, stamp: &str) -> String {
    let room = MAX_IDENTIFIER.saturating_sub(suffix.len() + stamp.len());
    let mut end = db.len().min(room);
    while !db.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}{stamp}", &db[..end])
}

/// `YYYYMMDDTHHMMSS.ffffffZ` (or the older `YYYYMMDDTHHMMSSZ`), digits
/// where digits belong.
pub fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    let seconds = |b: &[u8]| {
        b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
    };
    match b.len() {
        STAMP_LEN => {
            seconds(b) && b[15] == b'.' && b[16..22].iter().all(u8::is_ascii_digit) && b[22] == b'Z'
        }
        OLD_STAMP_LEN => seconds(b) && b[15] == b'Z',
        _ => false,
    }
}

/// A stamp of either form as a key that sorts in time order.
pub(super) fn stamp_order(stamp: &str) -> String {
    if stamp.len() == OLD_STAMP_LEN {
        format!("{}.000000Z", &stamp[..15])
    } else {
        stamp.to_string()
    }
}

pub(super) fn check_stamp(stamp: &str) -> Result<()> {
    if is_stamp(stamp) {
        Ok(())
    } else {
        Err(Error::BadStamp(stamp.to_string()))
    }
}

/// The stamp when `name` is exactly `<db><suffix><stamp>` as
/// [`suffixed`] writes it, for a stamp of either length.
fn suffixed_stamp<'n>(db: &str, suffix: &str, name: &'n str) -> Option<&'n str> {
    [STAMP_LEN, OLD_STAMP_LEN].into_iter().find_map(|len| {
        let prefix = suffixed(db, suffix, &"0".repeat(len));
        let prefix = &prefix[..prefix.len() - len];
        name.strip_prefix(prefix)
            .filter(|s| s.len() == len && is_stamp(s))
    })
}

/// The stamp of a previous database of `db`, when `name` is exactly
/// `<db>_pre_restore_<stamp>`.
pub(super) fn previous_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    suffixed_stamp(db, PREVIOUS_SUFFIX, name)
}

/// The stamp of a staging database of `db`, when `name` is exactly
/// `<db>_restore_<stamp>`.
pub(super) fn staging_stamp<'n>(db: &str, name: &'n str) -> Option<&'n str> {
    suffixed_stamp(db, STAGING_SUFFIX, name)
}

/// `"name"` with embedded quotes doubled.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that reads the same whatever standard_conforming_strings is.
pub(super) fn literal(value: &str) -> String {
    if value.contains('\\') {
        format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// `dbname='…'` for `-d`: a connection string, so a name containing `=` is
/// never read as one, while every other setting still comes from the
/// environment.
pub(super) fn conninfo(dbname: &str) -> String {
    format!(
        "dbname='{}'",
        dbname.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = "20261129T030405Z";

    #[test]
    fn names_fit_postgres_identifiers_deterministically() {
        assert_eq!(
            staging_name("appdb", STAMP),
            "appdb_restore_20261129T030405Z"
        );
        assert_eq!(
            previous_name("appdb", STAMP),
            "appdb_pre_restore_20261129T030405Z"
        );
        let long = "d".repeat(80);
        let staging = staging_name(&long, STAMP);
        let previous = previous_name(&long, STAMP);
        assert_eq!(staging.len(), 63);
        assert_eq!(previous.len(), 63);
        assert!(previous.ends_with("_pre_restore_20261129T030405Z"));
        assert_eq!(staging, staging_name(&long, STAMP));
        // Never cut inside a character.
        let wide = "é".repeat(40);
        let name = previous_name(&wide, STAMP);
        assert!(name.len() <= 63 && name.ends_with(STAMP), "{name}");
    }

    #[test]
    fn only_exact_previous_names_are_recognised() {
        assert_eq!(
            previous_stamp("appdb", "appdb_pre_restore_20261129T030405Z"),
            Some(STAMP)
        );
        for other in [
            "appdb",
            "appdb_pre_restore_20261129T030405",
            "appdb_pre_restore_20261129T030405Z_x",
            "appdb_pre_restore_2026112XT030405Z",
            "xappdb_pre_restore_20261129T030405Z",
            "appdb_restore_20261129T030405Z",
            "appdb2_pre_restore_20261129T030405Z",
        ] {
            assert_eq!(previous_stamp("appdb", other), None, "{other}");
        }
        let long = "d".repeat(80);
        assert_eq!(
            previous_stamp(&long, &previous_name(&long, STAMP)),
            Some(STAMP)
        );
        assert!(check_stamp("2026-11-29").is_err());
    }

    const NEW: &str = "20261129T030405.123456Z";

    #[test]
    fn microsecond_stamps_name_databases_in_time_order() {
        assert!(is_stamp(NEW) && is_stamp(STAMP));
        for bad in [
            "20261129T030405.12345Z",
            "20261129T030405,123456Z",
            "20261129T030405.123456",
        ] {
            assert!(!is_stamp(bad), "{bad}");
        }
        let stamp = chrono::DateTime::parse_from_rfc3339("2026-11-29T03:04:05.000007Z")
            .unwrap()
            .format(STAMP_FORMAT)
            .to_string();
        assert_eq!(stamp, "20261129T030405.000007Z");
        let long = "d".repeat(80);
        for db in ["appdb", long.as_str()] {
            for name in [previous_name(db, NEW), staging_name(db, NEW)] {
                assert!(name.len() <= 63, "{name}");
            }
            assert_eq!(previous_stamp(db, &previous_name(db, NEW)), Some(NEW));
            assert_eq!(staging_stamp(db, &staging_name(db, NEW)), Some(NEW));
            // Names from before microseconds are still ours.
            assert_eq!(previous_stamp(db, &previous_name(db, STAMP)), Some(STAMP));
            assert_eq!(staging_stamp(db, &staging_name(db, STAMP)), Some(STAMP));
            assert_eq!(staging_stamp(db, &previous_name(db, NEW)), None);
            assert_eq!(previous_stamp(db, &staging_name(db, NEW)), None);
        }
        for other in [
            "appdb_restore_20261129T030405.123456Z_x",
            "appdb2_restore_20261129T030405.123456Z",
            "appdb_restore_20261129T030405.1234567Z",
            "xappdb_restore_20261129T030405Z",
        ] {
            assert_eq!(staging_stamp("appdb", other), None, "{other}");
        }
        // Old and new stamps sort by time.
        let mut stamps = vec![
            stamp_order("20261129T030406Z"),
            stamp_order("20261129T030405.000001Z"),
            stamp_order("20261129T030405Z"),
        ];
        stamps.sort();
        assert_eq!(
            stamps,
            [
                "20261129T030405.000000Z",
                "20261129T030405.000001Z",
                "20261129T030406.000000Z"
            ]
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(conninfo(r"x' y\z"), r"dbname='x\' y\\z'");
    }
}
