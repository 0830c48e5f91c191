//! The backup manifest (`NAME.manifest.json`, [`record`]): what a backup
//! holds, with the row count of every table taken from the backup itself;
//! [`lookup`] finds the manifest of a file to restore, [`compare`] checks a
//! restored database's counts against it.
//!
//! # PostgreSQL: counted from the dump's COPY blocks
//!
//! A plain-format pg_dump (backupd's format, see `db::postgres::PG_DUMP_ARGS`)
//! writes the data of each table as one `COPY <table> (<columns>) FROM stdin;`
//! block in COPY text format: one line per row, every newline, carriage
//! return, tab and backslash inside a value escaped (`\n`, `\r`, `\t`, `\\`,
//! bytea as `\\x…` hex), and the block ended by the line `\.` (a value that
//! is a literal backslash-dot is written `\\.`). So the number of lines of a
//! block is exactly the number of rows pg_dump read. [`CopyRowCounter`]
//! counts them as the bytes stream past on their way to compression: no
//! second pass, no query, a few bytes of state; and since pg_dump reads
//! every table in one repeatable-read snapshot, the counts are by
//! construction those of the very data in the file, whatever the app wrote
//! meanwhile (a `SELECT count(*)` beside the dump could not promise that).
//!
//! Names are kept as pg_dump writes them, schema-qualified and quoted where
//! needed (`public.users`, `public."Odd Name"`), which is
//! `format('%I.%I', nspname, relname)` on the server, so counts taken from a
//! restored database can be matched to them. Names not in UTF-8 (a database
//! in another encoding) are kept lossily.
//!
//! A partitioned table has no rows of its own: pg_dump writes one COPY block
//! per leaf partition, so the counts are per leaf (`public.events_2024`, …)
//! and the partitioned parent does not appear. Compare leaves with leaves
//! (`SELECT count(*) FROM ONLY leaf`). With `--load-via-partition-root`
//! (backupd does not use it) every leaf's block names the root instead, and
//! the root's count is their sum.
//!
//! Limits:
//! - Custom-, directory- and tar-format dumps are not counted here (their
//!   data is compressed inside the archive); backupd writes plain format.
//! - A table dumped with `--inserts`/`--column-inserts` has INSERT
//!   statements instead of a COPY block and is not counted; backupd does
//!   not use those options.
//! - A line outside the data that itself reads exactly like a pg_dump COPY
//!   header (say, inside a dollar-quoted function body) would be taken for
//!   one: telling them apart needs an SQL lexer, which this does not have.
//! - pg_dump never writes CRLF (see the tests); a dump whose line ends were
//!   rewritten is not recognised.
//!
//! # SQLite: counted from the snapshot file
//!
//! [`sqlite_table_counts`] opens a database file read-only and counts every
//! user table in one read transaction, so the counts are of one consistent
//! state even while another connection writes. Virtual tables (FTS, R-tree)
//! are left out: their module may be missing where the count is taken, and
//! their contents are in their shadow tables, which are ordinary tables and
//! counted.

pub mod compare;
pub mod copy_rows;
pub mod lookup;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use compare::{CountMismatch, TableDifference, compare_counts};
pub use copy_rows::{CopyCountError, CopyRowCounter};
pub use lookup::Lookup;
pub use record::{
    DatabaseInfo, Digest, FORMAT_VERSION, MANIFEST_SUFFIX, Manifest, ManifestError,
    is_manifest_name, manifest_path,
};

/// A failure to count the rows of a SQLite database.
#[derive(Debug, thiserror::Error)]
pub enum SqliteCountError {
    #[error("cannot open the SQLite database {} read-only: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot list the tables of the SQLite database {}: {source}", .path.display())]
    List {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot count the rows of table {table:?} in the SQLite database {}: {source}", .path.display())]
    Count {
        path: PathBuf,
        table: String,
        source: rusqlite::Error,
    },
}

/// Long enough for a writer's checkpoint or WAL recovery to finish; a read
/// transaction in WAL mode otherwise never waits for writers.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The row count of every user table of the SQLite database at `path` (from
/// `sqlite_master`, `type = 'table'`, neither `sqlite_%` nor virtual), by
/// its name, all in one read transaction on a read-only connection.
pub fn sqlite_table_counts(path: &Path) -> Result<BTreeMap<String, u64>, SqliteCountError> {
    let open = |source| SqliteCountError::Open {
        path: path.to_path_buf(),
        source,
    };
    let list = |source| SqliteCountError::List {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(open)?;
    // One snapshot for the list and every count.
    conn.execute_batch("BEGIN DEFERRED").map_err(list)?;
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
            )
            .map_err(list)?;
        stmt.query_map([], |row| row.get(0))
            .map_err(list)?
            .collect::<Result<_, _>>()
            .map_err(list)?
    };
    let mut counts = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT count(*) FROM {}", quote_sqlite_identifier(&table));
        match conn.query_row(&sql, [], |row| row.get::<_, i64>(0)) {
            Ok(n) => {
                counts.insert(table, n.max(0) as u64);
            }
            Err(source) => {
                return Err(SqliteCountError::Count {
                    path: path.to_path_buf(),
                    table,
                    source,
                });
            }
        }
    }
    conn.execute_batch("COMMIT").map_err(list)?;
    Ok(counts)
}

/// `"name"` with every `"` doubled: safe for any table name.
fn quote_sqlite_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_user_table_including_awkward_names_and_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
             INSERT INTO users (name) VALUES ('a'), ('b'), ('c');
             CREATE TABLE \"odd \"\"name\"\"; DROP TABLE users; --\" (v);
             INSERT INTO \"odd \"\"name\"\"; DROP TABLE users; --\" VALUES (1), (2);
             CREATE TABLE empty (v);
             CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             INSERT INTO kv VALUES ('x', 1);",
        )
        .unwrap();
        drop(conn);
        let counts = sqlite_table_counts(&path).unwrap();
        assert_eq!(
            counts,
            BTreeMap::from([
                ("empty".to_string(), 0),
                ("kv".to_string(), 1),
                ("odd \"name\"; DROP TABLE users; --".to_string(), 2),
                ("users".to_string(), 3),
            ]),
            "sqlite_sequence is SQLite's own and left out"
        );
    }

    #[test]
    fn virtual_tables_are_left_out_and_their_shadow_tables_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fts.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE VIRTUAL TABLE docs USING fts5(body);
             INSERT INTO docs VALUES ('hello'), ('world');",
        )
        .unwrap();
        drop(conn);
        let counts = sqlite_table_counts(&path).unwrap();
        assert!(!counts.contains_key("docs"), "{counts:?}");
        assert_eq!(counts.get("docs_content"), Some(&2), "{counts:?}");
    }

    #[test]
    fn a_missing_file_is_an_open_error_naming_it_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.db");
        let err = sqlite_table_counts(&path).unwrap_err();
        assert!(matches!(err, SqliteCountError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.db"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = sqlite_table_counts(&path).unwrap_err();
        assert!(err.to_string().contains("junk.db"), "{err}");
    }
}
