//! Throwaway PostgreSQL clusters (initdb/pg_ctl of the server packages on
//! this machine), their clients, and content comparisons.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::binary::Backupd;
use super::files::{fixtures_dir, temp_dir};
use super::host::{free_port, is_root, run_ok, user_ids};
use super::prereq::{require, require_program};

/// The `bin` directory of the newest PostgreSQL under /usr/lib/postgresql
/// that has the server programs.
pub fn pg_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres", "psql", "pg_dump"]
                .iter()
                .all(|p| bin.join(p).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// `require` for the PostgreSQL server and client programs (and, when root,
/// the `postgres` user and `runuser` to run them).
pub fn require_postgres() -> Option<PathBuf> {
    let bin = require(
        "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl, postgres, psql, pg_dump)",
        pg_bin_dir(),
    )?;
    if is_root() {
        require(
            "the `postgres` system user (initdb refuses root)",
            user_ids("postgres"),
        )?;
        require_program("runuser")?;
    }
    Some(bin)
}

/// The app's role, its password and its database in [`PgCluster::start_with_app`].
pub const PG_APP_USER: &str = "app";

pub const PG_APP_PASSWORD: &str = "secret";

pub const PG_APP_DB: &str = "appdb";

/// The superuser of every test cluster and its password.
pub const PG_SUPERUSER: &str = "postgres";

pub const PG_SUPERUSER_PASSWORD: &str = "cluster-admin-pw";

/// A throwaway PostgreSQL cluster on 127.0.0.1 with password authentication
/// (scram-sha-256), its socket in the data directory and fsync off. Stopped
/// (immediately) and deleted on drop, also when the test panics.
pub struct PgCluster {
    pub bin: PathBuf,
    pub port: u16,
    running: bool,
    data: PathBuf,
    log: PathBuf,
    owner: Option<(u32, u32)>,
    dir: TempDir,
}

impl PgCluster {
    /// initdb + start. Panics when the cluster cannot be started.
    pub fn start(bin: &Path) -> PgCluster {
        let dir = temp_dir();
        let owner = if is_root() {
            let ids = user_ids("postgres").expect("the postgres system user");
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("chown the cluster directory to postgres");
            Some(ids)
        } else {
            None
        };
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{PG_SUPERUSER_PASSWORD}\n")).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let mut cluster = PgCluster {
            bin: bin.to_path_buf(),
            port: 0,
            running: false,
            log: dir.path().join("server.log"),
            data,
            owner,
            dir,
        };
        let mut initdb = cluster.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-U",
                PG_SUPERUSER,
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_ok(&mut initdb);
        let conf = format!(
            "\n# backupd integration test\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 30\n\
             max_wal_size = 256MB\nlog_min_messages = warning\nTimeZone = 'UTC'\n",
            cluster.data.display()
        );
        fs::OpenOptions::new()
            .append(true)
            .open(cluster.data.join("postgresql.conf"))
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();

        // A free port can be taken by someone else before the server binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let out = cluster
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&cluster.data)
                .arg("-l")
                .arg(&cluster.log)
                .args(["-o", &format!("-p {port}"), "-w", "-t", "60", "start"])
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                cluster.port = port;
                cluster.running = true;
                return cluster;
            }
            last_error = format!(
                "{}{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&cluster.log).unwrap_or_default()
            );
        }
        panic!("cannot start a PostgreSQL test cluster: {last_error}");
    }

    /// A cluster with role [`PG_APP_USER`] owning [`PG_APP_DB`], loaded with
    /// the fixtures at `scale` (none when `None`).
    pub fn start_with_app(bin: &Path, scale: Option<u32>) -> PgCluster {
        let cluster = PgCluster::start(bin);
        cluster.create_role(PG_APP_USER, PG_APP_PASSWORD);
        cluster.createdb(PG_APP_DB, PG_APP_USER);
        if let Some(scale) = scale {
            cluster.load_fixtures(PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD, scale);
        }
        cluster
    }

    /// The SQLAlchemy URL of the app's database as the app's role.
    pub fn app_url(&self) -> String {
        self.url(
            "postgresql+psycopg",
            PG_APP_USER,
            PG_APP_PASSWORD,
            PG_APP_DB,
        )
    }

    /// backupd for the app's database (as the app's role), backing up into
    /// `dir`, with this PostgreSQL's programs first on PATH.
    pub fn backupd(&self, dir: &Path) -> Backupd {
        Backupd::for_database(self.app_url(), dir).path_prepend(&self.bin)
    }

    /// Runs SQL in the app's database as the app's role.
    pub fn psql_app(&self, sql: &str) -> String {
        self.psql_as(PG_APP_DB, PG_APP_USER, PG_APP_PASSWORD, sql)
    }

    /// Adds table `big` to the app's database: `rows` rows of ~140 bytes of
    /// poorly compressible text, so that dumping it at gzip level 9 takes a
    /// while.
    pub fn create_big_table(&self, rows: u32) {
        self.psql_app(&format!(
            "CREATE TABLE big (id bigint NOT NULL, payload text NOT NULL); \
             INSERT INTO big SELECT i, md5(i::text) || md5((i * 7)::text) \
             || md5((i * 13)::text) || md5((i * 31)::text) \
             FROM generate_series(1, {rows}) AS i;"
        ));
    }

    /// The server pids of the sessions running a `COPY` in `db` (pg_dump
    /// dumping a table).
    pub fn active_copies(&self, db: &str) -> Vec<String> {
        self.psql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' \
                 AND state = 'active' AND query ILIKE 'COPY %' AND pid <> pg_backend_pid()"
            ),
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
    }

    /// A server program (initdb, pg_ctl) run as the cluster's owner.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.owner.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        cmd.env_remove("PGDATA").env_remove("PGPORT");
        cmd
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A SQLAlchemy-style URL for `user:password` on database `db`.
    pub fn url(&self, scheme: &str, user: &str, password: &str, db: &str) -> String {
        format!("{scheme}://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// A client program (psql, pg_dump) of this PostgreSQL version, connecting
    /// over TCP as `user` with `password` (through PGPASSWORD).
    pub fn client(&self, program: &str, db: &str, user: &str, password: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        for var in [
            "PGSERVICE",
            "PGSSLMODE",
            "PGOPTIONS",
            "PGPASSFILE",
            "PGAPPNAME",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", user)
            .env("PGPASSWORD", password)
            .env("PGDATABASE", db)
            .env("PGTZ", "UTC")
            .env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// Runs SQL as the superuser in `db`; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_as(db, PG_SUPERUSER, PG_SUPERUSER_PASSWORD, sql)
    }

    /// Runs SQL as `user` in `db`; returns unaligned, tuples-only output.
    pub fn psql_as(&self, db: &str, user: &str, password: &str, sql: &str) -> String {
        let mut cmd = self.client("psql", db, user, password);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run_ok(&mut cmd).trim_end_matches('\n').to_string()
    }

    /// `CREATE ROLE name LOGIN PASSWORD '…'`.
    pub fn create_role(&self, name: &str, password: &str) {
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD '{}'",
                password.replace('\'', "''")
            ),
        );
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub fn createdb(&self, name: &str, owner: &str) {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""),
        );
    }

    /// Loads `migrations-fixtures/postgres/{schema,seed}.sql` at `scale` into
    /// `db` as `user`.
    pub fn load_fixtures(&self, db: &str, user: &str, password: &str, scale: u32) {
        let pg = fixtures_dir().join("postgres");
        let mut cmd = self.client("psql", db, user, password);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v"])
            .arg(format!("scale={scale}"))
            .arg("-f")
            .arg(pg.join("schema.sql"))
            .arg("-f")
            .arg(pg.join("seed.sql"))
            .stdout(Stdio::null());
        run_ok(&mut cmd);
    }

    /// Restores a `.sql.gz` backup: `gunzip -c FILE | psql -v ON_ERROR_STOP=1`.
    pub fn restore_gz(&self, backup: &Path, db: &str, user: &str, password: &str) {
        let mut gunzip = Command::new("gunzip")
            .arg("-c")
            .arg(backup)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run gunzip");
        let mut psql = self.client("psql", db, user, password);
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(gunzip.stdout.take().unwrap());
        run_ok(&mut psql);
        assert!(gunzip.wait().unwrap().success(), "gunzip -c failed");
    }

    /// Per table in schema public: row count and an md5 of every row's text.
    pub fn table_checksums(&self, db: &str) -> BTreeMap<String, (i64, String)> {
        let tables = self.psql(
            db,
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
        );
        let mut sums = BTreeMap::new();
        for table in tables.lines().filter(|l| !l.is_empty()) {
            let quoted = table.replace('"', "\"\"");
            let row = self.psql(
                db,
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) \
                     FROM public.\"{quoted}\" t"
                ),
            );
            let (count, md5) = row
                .split_once('|')
                .unwrap_or_else(|| panic!("unexpected checksum row `{row}`"));
            sums.insert(table.to_string(), (count.parse().unwrap(), md5.to_string()));
        }
        sums
    }

    /// Every ordinary table of `db` (leaf partitions included, every user
    /// schema) as `format('%I.%I')` names it, with its `count(*) FROM ONLY`
    /// as the server sees it: the names and counts a manifest records.
    pub fn row_counts(&self, db: &str) -> BTreeMap<String, u64> {
        let listing = self.psql(
            db,
            "SELECT coalesce(string_agg(format('%I.%I', n.nspname, c.relname) || E'\\x1e' || \
             (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', \
             n.nspname, c.relname), false, true, '')))[1]::text, E'\\x1f'), '') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_%'",
        );
        listing
            .split('\x1f')
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (name, count) = entry
                    .split_once('\x1e')
                    .unwrap_or_else(|| panic!("unexpected entry {entry:?}"));
                (name.to_string(), count.parse().unwrap())
            })
            .collect()
    }

    /// The names of every database on the server, sorted.
    pub fn databases(&self) -> Vec<String> {
        self.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The oid of database `name` (which must exist): a database keeps it
    /// through a rename, so an unchanged oid under the live name means the
    /// live database was never swapped.
    pub fn database_oid(&self, name: &str) -> u32 {
        let oid = self.psql(
            "postgres",
            &format!(
                "SELECT oid FROM pg_database WHERE datname = '{}'",
                name.replace('\'', "''")
            ),
        );
        oid.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no database {name:?} (oid query said {oid:?})"))
    }

    /// Every sequence in schema public with its last value.
    pub fn sequences(&self, db: &str) -> BTreeMap<String, String> {
        self.psql(
            db,
            "SELECT sequencename, coalesce(last_value::text, 'NULL') FROM pg_sequences \
             WHERE schemaname = 'public' ORDER BY 1",
        )
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    /// Stops the server as an operator would (`pg_ctl stop -m fast`: the
    /// sessions are ended, the data is consistent).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run_ok(&mut cmd);
        self.running = false;
    }

    /// Starts a stopped cluster again on the same port.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args([
                "-o",
                &format!("-p {}", self.port),
                "-w",
                "-t",
                "60",
                "start",
            ]);
        run_ok(&mut cmd);
        self.running = true;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }
}

/// A directory holding `pg_dump` and `psql` shell wrappers that append
/// "$0 $*" to `log` and exec the real program from `real_bin`: put it first
/// on backupd's PATH to capture the argv of its children.
pub fn argv_logging_wrappers(dir: &Path, real_bin: &Path, log: &Path) {
    fs::create_dir_all(dir).unwrap();
    for program in ["pg_dump", "psql"] {
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real_bin.join(program).display()
        );
        let path = dir.join(program);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
