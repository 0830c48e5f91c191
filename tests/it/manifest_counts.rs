//! The manifest's row counts against real databases: the rows counted from
//! a real pg_dump's COPY blocks (fed in random chunks) are the server's own
//! `count(*)` of every table, through awkward text, bytea, empty and
//! zero-column tables, partitions and quoted names, and so are the counts
//! `Server::table_counts` takes of a restored database to compare with the
//! manifest; and a SQLite file in WAL mode with an open writer is counted
//! with its committed rows only.

use crate::common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use backupd::db::Database;
use backupd::db::postgres::PG_DUMP_ARGS;
use backupd::manifest::{CopyRowCounter, sqlite_table_counts};
use backupd::restore::postgres::Server;
use common::*;

/// xorshift64*: chunk sizes that are random but replayable from the seed.
struct Sizes(u64);

impl Sizes {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
    }
}

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, blob bytea);
INSERT INTO notes
  SELECT i,
         'line one' || E'\n' || 'line two' || E'\t' || 'tabbed \ back\slash ' || E'\r' || i,
         decode(md5(i::text), 'hex') || '\x0a5c2e0d09'::bytea
  FROM generate_series(1, 500) AS i;
INSERT INTO notes VALUES (1001, '\.', '\x5c2e'), (1002, E'\\.\n\\.', NULL),
  (1003, '', ''), (1004, E'\n', '\x0a');
CREATE TABLE empty_one (id int, v text);
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
CREATE TABLE events (id int NOT NULL, kind text NOT NULL) PARTITION BY LIST (kind);
CREATE TABLE events_a PARTITION OF events FOR VALUES IN ('a');
CREATE TABLE events_b PARTITION OF events FOR VALUES IN ('b');
INSERT INTO events SELECT i, 'a' FROM generate_series(1, 7) AS i;
INSERT INTO events SELECT i, 'b' FROM generate_series(1, 5) AS i;
CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."Odd Name" ("Weird Col" text, "from stdin;" int);
INSERT INTO "Sales"."Odd Name" SELECT 'x' || i, i FROM generate_series(1, 11) AS i;
CREATE TABLE "MixedCase" (id int);
INSERT INTO "MixedCase" SELECT generate_series(1, 4);
CREATE TABLE "new
line" ("tab	col" text);
INSERT INTO "new
line" VALUES ('a'), ('b');
"#;

#[test]
fn pg_dump_copy_rows_equal_the_servers_counts_for_every_table() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app(SCHEMA);
    let expected = cluster.row_counts(PG_APP_DB);
    assert_eq!(expected.get("public.notes"), Some(&504), "{expected:?}");
    assert_eq!(expected.get("public.events_a"), Some(&7), "{expected:?}");
    assert_eq!(expected.get("\"Sales\".\"Odd Name\""), Some(&11));
    assert_eq!(expected.get("public.\"new\nline\""), Some(&2));

    for seed in [1u64, 7, 4242] {
        let mut dump = cluster.client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
        dump.args(PG_DUMP_ARGS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = dump.spawn().expect("run pg_dump");
        let mut stdout = child.stdout.take().unwrap();
        let mut counter = CopyRowCounter::new();
        let mut sizes = Sizes(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut buf = vec![0u8; 4096];
        let mut total = 0usize;
        loop {
            let want = 1 + sizes.next(buf.len());
            let n = stdout
                .read(&mut buf[..want])
                .expect("read pg_dump's output");
            if n == 0 {
                break;
            }
            total += n;
            // Split each read once more, so boundaries fall anywhere.
            let (a, b) = buf[..n].split_at(sizes.next(n + 1));
            counter.feed(a);
            counter.feed(b);
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(total > 0);
        let counted = counter.finish().expect("the dump is complete");
        assert_eq!(
            counted, expected,
            "seed {seed}: counts from the COPY blocks differ from count(*)"
        );
        assert!(
            !counted.contains_key("public.events"),
            "the partitioned parent has no COPY block of its own"
        );
    }
}

#[tokio::test]
async fn the_servers_table_counts_of_a_restored_database_are_its_own_count_star() {
    // What a restore compares with the manifest: the same names and counts
    // the server itself gives, through the same awkward schema.
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app(SCHEMA);
    let expected = cluster.row_counts(PG_APP_DB);
    let Database::Postgres(target) = Database::parse(&cluster.app_url(), "DATABASE_URL").unwrap()
    else {
        panic!("the app URL is not PostgreSQL");
    };
    let server = Server::connect(&target)
        .await
        .expect("connect to the server");
    let counted = server
        .table_counts(PG_APP_DB)
        .await
        .expect("count the tables");
    assert_eq!(counted, expected);
    assert_eq!(counted.get("public.no_columns"), Some(&3), "{counted:?}");
    assert_eq!(counted.get("public.empty_one"), Some(&0), "{counted:?}");
    assert!(
        !counted.contains_key("public.events"),
        "the partitioned parent has no rows of its own: {counted:?}"
    );
}

#[test]
fn a_truncated_real_dump_is_an_error_naming_the_table() {
    let Some(bin) = require_postgres() else {
        return;
    };
    let cluster = PgCluster::start_with_app(&bin, None);
    cluster.psql_app(SCHEMA);
    let mut dump = cluster.client("pg_dump", PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD);
    dump.args(PG_DUMP_ARGS);
    let text = run_ok(&mut dump).into_bytes();
    let header = b"COPY public.notes (id, body, blob) FROM stdin;\n";
    let at = text
        .windows(header.len())
        .position(|w| w == header)
        .expect("the dump has the notes block");
    let mut counter = CopyRowCounter::new();
    counter.feed(&text[..at + header.len() + 100]);
    let err = counter.finish().unwrap_err();
    assert!(err.to_string().contains("public.notes"), "{err}");
}

#[test]
fn sqlite_counts_in_wal_mode_with_an_open_writer_are_the_committed_rows() {
    let work = temp_dir();
    let db = work.path().join("app.db");
    sqlite_fixture(&db, 1, true);

    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.busy_timeout(Duration::from_secs(30)).unwrap();
    let _: i64 = writer
        .query_row("PRAGMA wal_autocheckpoint = 0", [], |r| r.get(0))
        .unwrap();
    writer
        .execute_batch(
            "CREATE TABLE \"Odd \"\"Name\"\"\" (v); \
             INSERT INTO \"Odd \"\"Name\"\"\" VALUES (1), (2), (3); \
             CREATE TABLE empty_one (v);",
        )
        .unwrap();
    // Committed rows that so far live only in the -wal file.
    for seq in 0..50 {
        writer
            .execute(
                "INSERT INTO audit_log (action, entity_type, entity_id, message) \
                 VALUES ('test', 'marker', ?1, 'wal only')",
                [seq],
            )
            .unwrap();
    }
    let wal = std::fs::metadata(work.path().join("app.db-wal")).map_or(0, |m| m.len());
    assert!(
        wal > 0,
        "the committed rows should still be in the -wal file"
    );
    let committed = sqlite_row_counts(&writer);
    assert!(committed.len() >= 14, "{committed:?}");
    assert_eq!(committed.get("Odd \"Name\""), Some(&3));

    // An open write transaction with rows not yet committed.
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer
        .execute("INSERT INTO \"Odd \"\"Name\"\"\" VALUES (4)", [])
        .unwrap();
    writer.execute("DELETE FROM audit_log", []).unwrap();

    let counts = sqlite_table_counts(&db).expect("count the tables");
    assert_eq!(counts, committed);
    assert_eq!(counts.get("empty_one"), Some(&0));

    writer.execute_batch("COMMIT").unwrap();
    let after = sqlite_table_counts(&db).unwrap();
    assert_eq!(after.get("Odd \"Name\""), Some(&4));
    assert_eq!(after.get("audit_log"), Some(&0));
}
