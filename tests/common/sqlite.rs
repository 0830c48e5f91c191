//! SQLite fixtures (real database files) and content comparisons.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::binary::Backupd;
use super::files::{fixtures_dir, gunzip_to, temp_backup_dir};
use super::status::status_path;

/// Creates a new SQLite database at `path` from
/// `migrations-fixtures/sqlite/{schema,seed}.sql` at `scale`, in WAL mode when
/// `wal` (journal_mode=DELETE otherwise). The loading connection is closed.
pub fn sqlite_fixture(path: &Path, scale: u32, wal: bool) {
    assert!(!path.exists(), "{} already exists", path.display());
    let sqlite = fixtures_dir().join("sqlite");
    let schema = fs::read_to_string(sqlite.join("schema.sql")).expect("read sqlite/schema.sql");
    let seed = fs::read_to_string(sqlite.join("seed.sql")).expect("read sqlite/seed.sql");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&schema).expect("load sqlite/schema.sql");
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE fixture_scale(n INTEGER NOT NULL); INSERT INTO fixture_scale VALUES ({scale});"
    ))
    .unwrap();
    conn.execute_batch(&seed).expect("load sqlite/seed.sql");
    let mode = if wal { "wal" } else { "delete" };
    let got: String = conn
        .query_row(&format!("PRAGMA journal_mode = {mode}"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(got.to_lowercase(), mode);
    conn.close().map_err(|(_, e)| e).unwrap();
}

/// A small SQLite database (one table, `rows` rows) for tests where the
/// content does not matter.
pub fn sqlite_small(path: &Path, rows: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);")
        .unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO notes (body) SELECT 'note ' || i FROM n",
        [rows],
    )
    .unwrap();
}

/// An app on SQLite: its database (`app.db`) in a temporary directory, and
/// its backup folder `backups/` next to it (not created).
pub struct SqliteApp {
    pub work: TempDir,
    pub db: PathBuf,
    pub dir: PathBuf,
}

impl SqliteApp {
    /// The fixture database at `scale` in WAL mode.
    pub fn new(scale: u32) -> Self {
        Self::fixture(scale, true)
    }

    /// The fixture database at `scale`, in WAL mode when `wal`
    /// (journal_mode=DELETE otherwise).
    pub fn fixture(scale: u32, wal: bool) -> Self {
        Self::with_db(|db| sqlite_fixture(db, scale, wal))
    }

    /// A small database of `rows` rows ([`sqlite_small`]).
    pub fn small(rows: u32) -> Self {
        Self::with_db(|db| sqlite_small(db, rows))
    }

    fn with_db(create: impl FnOnce(&Path)) -> Self {
        let (work, dir) = temp_backup_dir();
        let db = work.path().join("app.db");
        create(&db);
        SqliteApp { work, db, dir }
    }

    /// backupd for this database and backup folder.
    pub fn backupd(&self) -> Backupd {
        Backupd::for_database(sqlite_url(&self.db), &self.dir)
    }

    /// The default status file in the backup folder.
    pub fn status_file(&self) -> PathBuf {
        status_path(&self.dir)
    }
}

/// `sqlite:////abs/path.db` for an absolute path.
pub fn sqlite_url(path: &Path) -> String {
    assert!(path.is_absolute());
    format!("sqlite:///{}", path.display())
}

fn sqlite_value_text(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => format!("i:{i}"),
        ValueRef::Real(f) => format!("r:{:016x}", f.to_bits()),
        ValueRef::Text(t) => format!("t:{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("x:{}", hex::encode(b)),
    }
}

/// The tables of a SQLite database (sqlite_master, including sqlite_sequence).
pub fn sqlite_tables(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_stat%' ORDER BY name",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// `count(*)` of every user table (not SQLite's own `sqlite_*`), as this
/// connection sees them.
pub fn sqlite_row_counts(conn: &rusqlite::Connection) -> BTreeMap<String, u64> {
    sqlite_tables(conn)
        .into_iter()
        .filter(|t| !t.starts_with("sqlite_"))
        .map(|t| {
            let n: i64 = conn
                .query_row(
                    &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            (t, n as u64)
        })
        .collect()
}

/// Every row of every table, each row rendered deterministically (blobs as
/// hex, reals by their bits), rows sorted (so WITHOUT ROWID tables work too).
pub fn sqlite_contents(conn: &rusqlite::Connection) -> BTreeMap<String, Vec<String>> {
    let mut all = BTreeMap::new();
    for table in sqlite_tables(conn) {
        let sql = format!("SELECT * FROM \"{}\"", table.replace('"', "\"\""));
        let mut stmt = conn.prepare(&sql).unwrap();
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut cells = Vec::with_capacity(columns);
                for i in 0..columns {
                    cells.push(sqlite_value_text(r.get_ref(i)?));
                }
                Ok(cells.join("\u{1f}"))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.sort();
        all.insert(table, rows);
    }
    all
}

/// Compares two SQLite contents table by table, with a readable message.
pub fn assert_same_sqlite_contents(
    expected: &BTreeMap<String, Vec<String>>,
    actual: &BTreeMap<String, Vec<String>>,
) {
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "the snapshot has other tables"
    );
    for (table, rows) in expected {
        let got = &actual[table];
        assert_eq!(
            rows.len(),
            got.len(),
            "table {table}: {} rows expected, snapshot has {}",
            rows.len(),
            got.len()
        );
        assert!(rows == got, "table {table}: row contents differ");
    }
}

/// `PRAGMA integrity_check` of a database file.
pub fn sqlite_integrity(path: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows.join("\n")
}

/// Gunzips a `.db.gz` backup into `out` and opens it read-only after
/// checking its integrity.
pub fn open_sqlite_backup(backup: &Path, out: &Path) -> rusqlite::Connection {
    gunzip_to(backup, out);
    assert_eq!(
        sqlite_integrity(out),
        "ok",
        "the snapshot in {} fails integrity_check",
        backup.display()
    );
    rusqlite::Connection::open_with_flags(out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}
