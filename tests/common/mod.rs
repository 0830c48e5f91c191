//! Shared parts of the integration tests: real PostgreSQL clusters, real
//! SQLite files, the built `backupd` binary, fixture loaders and content
//! comparisons. Every test file uses only some of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

// ---------------------------------------------------------------- prerequisites

/// True when the test runs under CI (`CI=true`), where a missing prerequisite
/// is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Returns `found` when it is `Some`. When it is `None` the prerequisite
/// `what` is missing: under `CI=true` this panics; otherwise it prints a loud
/// message on stderr and the test returns early:
///
/// ```ignore
/// let Some(bin) = require("PostgreSQL server binaries", pg_bin_dir()) else { return };
/// ```
pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        let test = std::thread::current()
            .name()
            .unwrap_or("<unnamed test>")
            .to_string();
        let msg = format!("prerequisite missing for test `{test}`: {what}");
        if in_ci() {
            panic!("{msg} (CI=true: a missing prerequisite is a failure)");
        }
        eprintln!();
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED: {msg}");
        eprintln!("!!! (this test did NOT run; with CI=true it would fail)");
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!();
    }
    found
}

/// Full path of `program` when it is on PATH and executable.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `require` for a program on PATH.
pub fn require_program(program: &str) -> Option<PathBuf> {
    require(&format!("`{program}` on PATH"), which(program))
}

/// `require_program` for each of `programs`, in order (stops at the first
/// missing one).
pub fn require_programs(programs: &[&str]) -> Option<()> {
    for program in programs {
        require_program(program)?;
    }
    Some(())
}

/// The effective user id of this test process (from /proc; Linux only).
pub fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .expect("parse the effective uid from /proc/self/status")
}

pub fn is_root() -> bool {
    euid() == 0
}

/// `id -u NAME`, `id -g NAME`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

// ---------------------------------------------------------------- paths and files

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures_dir() -> PathBuf {
    manifest_dir().join("migrations-fixtures")
}

/// A fresh temporary directory (removed on drop).
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("backupd-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A fresh temporary directory and its (not yet created) `backups/` folder.
pub fn temp_backup_dir() -> (TempDir, PathBuf) {
    let work = temp_dir();
    let dir = work.path().join("backups");
    (work, dir)
}

/// The final component of `path` as a `String`.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A localhost TCP port that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// Names of the entries of `dir` (not recursive), sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Which kind of backup a file name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Postgres => "pg_dump-",
            Kind::Sqlite => "sqlite-",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Postgres => ".sql.gz",
            Kind::Sqlite => ".db.gz",
        }
    }
    /// A backup name for the given UTC time (`pg_dump-YYYYMMDDTHHMMSSZ.sql.gz`).
    pub fn name_at(self, time: chrono::DateTime<chrono::Utc>) -> String {
        format!(
            "{}{}{}",
            self.prefix(),
            time.format("%Y%m%dT%H%M%SZ"),
            self.extension()
        )
    }
}

/// Parses a backup file name as the contract defines it:
/// `pg_dump-YYYYMMDDTHHMMSSZ[-N].sql.gz` or `sqlite-YYYYMMDDTHHMMSSZ[-N].db.gz`.
/// Returns the kind, the timestamp part and the same-second suffix.
pub fn parse_backup_name(name: &str) -> Option<(Kind, String, Option<u32>)> {
    // Encrypted backups carry the same name plus `.enc`.
    let name = name.strip_suffix(".enc").unwrap_or(name);
    for kind in [Kind::Postgres, Kind::Sqlite] {
        let Some(rest) = name
            .strip_prefix(kind.prefix())
            .and_then(|r| r.strip_suffix(kind.extension()))
        else {
            continue;
        };
        let (stamp, suffix) = match rest.split_once('-') {
            Some((stamp, n)) => {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (stamp, Some(n.parse().ok()?))
            }
            None => (rest, None),
        };
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
        return Some((kind, stamp.to_string(), suffix));
    }
    None
}

/// The files in `dir` whose names are backups (no sidecars, no hidden files).
pub fn backup_files(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| parse_backup_name(n).is_some())
        .collect()
}

/// Hidden work files backupd writes while a backup is in progress
/// (`.NAME.partial`, `.NAME.snapshot`).
pub fn work_files(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".partial") || n.ends_with(".snapshot"))
        .collect()
}

/// After a failed run: neither a backup under a final name (other than those
/// listed in `existing`, and their `.sha256` sidecars) nor a partial/work
/// file remains.
pub fn assert_no_new_backup(dir: &Path, existing: &[String]) {
    let names = dir_names(dir);
    let new: Vec<&String> = names
        .iter()
        .filter(|n| {
            let base = n.strip_suffix(".sha256").unwrap_or(n);
            (n.starts_with("pg_dump-") || n.starts_with("sqlite-"))
                && !existing.iter().any(|e| e == base)
        })
        .collect();
    assert!(
        new.is_empty(),
        "a failed backup left files under final names in {}: {new:?} (all: {names:?})",
        dir.display()
    );
    let work = work_files(dir);
    assert!(
        work.is_empty(),
        "a failed backup left work files in {}: {work:?}",
        dir.display()
    );
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Writes `NAME.sha256` next to `path` in sha256sum format.
pub fn write_sidecar(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy();
    let line = format!("{}  {}\n", sha256_file(path), name);
    fs::write(sidecar_path(path), line).unwrap();
}

pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// gzip-compresses `data` into `path` (flate2, one ordinary gzip member).
pub fn write_gzip(path: &Path, data: &[u8]) {
    let file = fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap().sync_all().unwrap();
}

/// Runs a command, panicking with its output when it cannot start or fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gunzip -t FILE` succeeds.
pub fn assert_gunzip_t(path: &Path) {
    run_ok(Command::new("gunzip").arg("-t").arg(path));
}

/// `gunzip -c FILE > OUT` with the real gzip tool.
pub fn gunzip_to(path: &Path, out: &Path) {
    let target = fs::File::create(out).unwrap();
    let status = Command::new("gunzip")
        .arg("-c")
        .arg(path)
        .stdout(target)
        .status()
        .expect("run gunzip");
    assert!(status.success(), "gunzip -c {} failed", path.display());
}

/// `sha256sum -c NAME.sha256`, run inside the backup's directory, accepts it.
pub fn assert_sha256sum_c(backup: &Path) {
    let dir = backup.parent().unwrap();
    let side = sidecar_path(backup);
    let content = fs::read_to_string(&side)
        .unwrap_or_else(|e| panic!("read the sidecar {}: {e}", side.display()));
    let name = backup.file_name().unwrap().to_string_lossy();
    assert_eq!(
        content,
        format!("{}  {}\n", sha256_file(backup), name),
        "sidecar {} is not `<hex>  NAME\\n`",
        side.display()
    );
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(side.file_name().unwrap())
            .current_dir(dir),
    );
}

/// A backup is sound: `gunzip -t` and `sha256sum -c` accept it.
pub fn assert_sound_backup(backup: &Path) {
    assert_gunzip_t(backup);
    assert_sha256sum_c(backup);
}

/// The default status file in the backup folder `dir`.
pub fn status_path(dir: &Path) -> PathBuf {
    dir.join("backup-status.json")
}

/// Reads and parses the status JSON.
pub fn read_status(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the status file {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status file {} is not JSON ({e}):\n{text}", path.display()))
}

/// Every key the status file must have.
pub const STATUS_KEYS: &[&str] = &[
    "last_backup",
    "last_file",
    "backups",
    "last_attempt",
    "last_error",
    "last_duration_seconds",
    "last_size_bytes",
    "last_sha256",
    "database",
    "version",
];

/// True when `s` is a UTC `YYYY-MM-DDTHH:MM:SSZ` timestamp.
pub fn is_utc_second_timestamp(s: &str) -> bool {
    s.len() == 20 && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").is_ok()
}

/// The status after a successful backup of `file`: every key, the right types.
pub fn assert_success_status(status: &serde_json::Value, file: &Path, database: &str) {
    for key in STATUS_KEYS {
        assert!(
            status.get(key).is_some(),
            "status file lacks key `{key}`: {status:#}"
        );
    }
    let last_backup = status["last_backup"].as_str().unwrap_or_default();
    assert!(
        is_utc_second_timestamp(last_backup),
        "last_backup `{last_backup}` is not YYYY-MM-DDTHH:MM:SSZ: {status:#}"
    );
    assert_eq!(
        status["last_file"].as_str(),
        Some(file.to_str().unwrap()),
        "last_file: {status:#}"
    );
    assert!(
        status["last_error"].is_null(),
        "last_error after success: {status:#}"
    );
    assert_eq!(
        status["database"].as_str(),
        Some(database),
        "database: {status:#}"
    );
    let name = file.file_name().unwrap().to_str().unwrap();
    let backups: Vec<&str> = status["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("backups is not an array: {status:#}"))
        .iter()
        .map(|v| v.as_str().expect("backups holds strings"))
        .collect();
    assert_eq!(
        backups.first(),
        Some(&name),
        "backups must list the new backup first: {status:#}"
    );
    for b in &backups {
        assert!(
            parse_backup_name(b).is_some(),
            "backups lists `{b}`, not a backup name: {status:#}"
        );
    }
    assert_eq!(
        status["last_size_bytes"].as_u64(),
        Some(fs::metadata(file).unwrap().len()),
        "last_size_bytes: {status:#}"
    );
    assert_eq!(
        status["last_sha256"].as_str(),
        Some(sha256_file(file).as_str()),
        "last_sha256: {status:#}"
    );
    assert!(
        status["last_duration_seconds"].is_number(),
        "last_duration_seconds: {status:#}"
    );
    assert!(
        status["last_attempt"].is_string(),
        "last_attempt: {status:#}"
    );
    assert!(status["version"].is_string(), "version: {status:#}");
}

// ---------------------------------------------------------------- the backupd binary

/// What one run of backupd did.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    fn from_output(out: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let code = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        RunResult {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The last non-empty line on stdout.
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }

    /// Asserts the exit code, showing the whole run when it differs.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code; run was:\n{self}");
        self
    }

    /// Asserts success and returns the path printed on the last stdout line.
    pub fn backup_path(&self) -> PathBuf {
        self.assert_code(0);
        let path = PathBuf::from(self.last_line().trim());
        assert!(
            path.is_absolute(),
            "last stdout line is not an absolute path:\n{self}"
        );
        assert!(
            path.is_file(),
            "last stdout line names no file: {}\n{self}",
            path.display()
        );
        path
    }

    /// stderr contains every word (case-insensitive).
    pub fn assert_stderr_mentions(&self, words: &[&str]) -> &Self {
        let stderr = self.stderr.to_lowercase();
        for word in words {
            assert!(
                stderr.contains(&word.to_lowercase()),
                "stderr does not mention `{word}`:\n{self}"
            );
        }
        self
    }

    /// `secret` appears neither on stdout nor on stderr.
    pub fn assert_not_shown(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the password `{secret}` appears in the output:\n{self}"
        );
        self
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the built `backupd` with a clean environment: only PATH, HOME and the
/// variables the test sets.
#[derive(Debug, Clone)]
pub struct Backupd {
    envs: Vec<(String, String)>,
    path_prefix: Vec<PathBuf>,
    cwd: Option<PathBuf>,
    as_uid: Option<u32>,
}

impl Default for Backupd {
    fn default() -> Self {
        Self::new()
    }
}

impl Backupd {
    pub fn new() -> Self {
        Backupd {
            envs: Vec::new(),
            path_prefix: Vec::new(),
            cwd: None,
            as_uid: None,
        }
    }

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_backupd")
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.envs.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// Puts `dir` in front of PATH (e.g. the PostgreSQL bin dir, or a wrapper dir).
    pub fn path_prepend(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_prefix.insert(0, dir.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs backupd as this uid (and gid) through `setpriv`; needs root.
    pub fn run_as_uid(mut self, uid: u32) -> Self {
        self.as_uid = Some(uid);
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.as_uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(Self::bin());
                c
            }
            None => Command::new(Self::bin()),
        };
        cmd.args(args).env_clear();
        let base = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut dirs = self.path_prefix.clone();
        dirs.extend(std::env::split_paths(&base));
        cmd.env("PATH", std::env::join_paths(dirs).unwrap());
        let home = if self.as_uid.is_some() {
            "/".into()
        } else {
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into())
        };
        cmd.env("HOME", home);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `backupd ARGS…` to completion.
    pub fn run(&self, args: &[&str]) -> RunResult {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", Self::bin()));
        RunResult::from_output(out)
    }

    /// Starts `backupd ARGS…` in the background with piped stdout/stderr;
    /// finish it with [`finish`].
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", Self::bin()))
    }

    /// `backupd once`.
    pub fn once(&self) -> RunResult {
        self.run(&["once"])
    }
}

/// Waits for a child started by [`Backupd::spawn`].
pub fn finish(child: Child) -> RunResult {
    RunResult::from_output(child.wait_with_output().expect("wait for backupd"))
}

// ---------------------------------------------------------------- PostgreSQL

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

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

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

    pub fn data_dir(&self) -> &Path {
        &self.data
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

    /// Stops the server (`pg_ctl stop -m MODE`).
    pub fn stop(&mut self, mode: StopMode) {
        if !self.running {
            return;
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", mode.as_str(), "-w", "-t", "60", "stop"]);
        run_ok(&mut cmd);
        self.running = false;
    }

    pub fn is_running(&self) -> bool {
        self.running
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

// ---------------------------------------------------------------- SQLite

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

// ---------------------------------------------------------------- polling

/// Polls `check` every `every` until it returns `Some` or `give_up` passes
/// (a guard against hanging, not a timed assertion).
pub fn poll<T>(
    every: Duration,
    give_up: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() > give_up {
            return None;
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------- the daemon

/// backupd running in the background (usually `backupd backup`, the
/// daemon). Its stdout and stderr are collected by threads (so the pipes
/// never fill); it is killed (SIGKILL) on drop when still running, also when
/// the test panics.
pub struct Daemon {
    child: Child,
    pid: u32,
    /// The port of its status server on 127.0.0.1 (0 when not a daemon).
    pub port: u16,
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    exit: Option<RunResult>,
}

/// A thread that appends everything read from `pipe` to `sink`.
fn collect_pipe(
    mut pipe: impl Read + Send + 'static,
    sink: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Backupd {
    /// backupd for the database at `url`, backing up into `dir`.
    pub fn for_database(url: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Self {
        Backupd::new()
            .env("DATABASE_URL", url)
            .env("BACKUP_DIR", dir)
    }

    fn has_env(&self, key: &str) -> bool {
        self.envs.iter().any(|(k, _)| k == key)
    }

    /// Starts `backupd ARGS…` in the background, its output collected by
    /// threads; see [`Daemon`] for waiting and signalling.
    pub fn background(&self, args: &[&str]) -> Daemon {
        self.background_on_port(args, 0)
    }

    fn background_on_port(&self, args: &[&str], port: u16) -> Daemon {
        let mut child = self.spawn(args);
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers = vec![
            collect_pipe(child.stdout.take().unwrap(), stdout.clone()),
            collect_pipe(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Daemon {
            pid: child.id(),
            child,
            port,
            stdout,
            stderr,
            readers,
            exit: None,
        }
    }

    /// Runs `backupd ARGS…` to completion, waiting at most `give_up` (a
    /// guard against hanging: panics with the output so far, and kills it).
    pub fn run_bounded(&self, args: &[&str], give_up: Duration) -> RunResult {
        let mut run = self.background(args);
        match run.wait_exit(give_up) {
            Some(done) => done,
            None => panic!(
                "backupd {args:?} still runs after {give_up:?}; stderr so far:\n{}",
                run.log()
            ),
        }
    }

    /// Starts `backupd backup` (the daemon) in the background. Unless the
    /// test set them, its status server listens on `STATUS_BIND=127.0.0.1`
    /// and a free `STATUS_PORT` (see [`Daemon::port`]).
    pub fn daemon(&self) -> Daemon {
        let mut cfg = self.clone();
        if !cfg.has_env("STATUS_BIND") {
            cfg = cfg.env("STATUS_BIND", "127.0.0.1");
        }
        let port = match cfg.envs.iter().rev().find(|(k, _)| k == "STATUS_PORT") {
            Some((_, v)) => v.parse().expect("STATUS_PORT set by the test is a port"),
            None => {
                let port = free_port();
                cfg = cfg.env("STATUS_PORT", port.to_string());
                port
            }
        };
        cfg.background_on_port(&["backup"], port)
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything it wrote on stderr (the log) so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls the log until `check` accepts it; false after `give_up`.
    pub fn wait_for_log(&self, give_up: Duration, check: impl Fn(&str) -> bool) -> bool {
        poll(Duration::from_millis(50), give_up, || {
            check(&self.log()).then_some(())
        })
        .is_some()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with `kill -SIG PID`.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (polling `try_wait`) up to `give_up` for it to exit; `None` when
    /// it is still running then. Once it has exited, returns the whole run.
    pub fn wait_exit(&mut self, give_up: Duration) -> Option<RunResult> {
        if let Some(done) = &self.exit {
            return Some(done.clone());
        }
        let status = poll(Duration::from_millis(20), give_up, || {
            self.child.try_wait().expect("try_wait")
        })?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let done = RunResult {
            code,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        };
        self.exit = Some(done.clone());
        Some(done)
    }

    /// SIGTERM, then waits up to `give_up` for the exit; panics with the log
    /// when it is still running then.
    pub fn terminate(&mut self, give_up: Duration) -> RunResult {
        self.signal("TERM");
        match self.wait_exit(give_up) {
            Some(run) => run,
            None => panic!(
                "backupd (pid {}) still runs {give_up:?} after SIGTERM; log so far:\n{}",
                self.pid,
                self.log()
            ),
        }
    }

    /// Asserts that its status server answers within 15 s.
    pub fn wait_until_serving(&self) {
        assert!(
            wait_for_http(self.port, Duration::from_secs(15)),
            "the status server on 127.0.0.1:{} never answered:\n{}",
            self.port,
            self.log()
        );
    }

    /// SIGTERM, waits up to 15 s for the exit, prints the run and asserts
    /// exit code 0.
    pub fn stop_cleanly(&mut self) -> RunResult {
        let run = self.terminate(Duration::from_secs(15));
        eprintln!("{run}");
        run.assert_code(0);
        run
    }

    /// The processes whose parent is the daemon (pid, command name).
    pub fn children(&self) -> Vec<(u32, String)> {
        children_of(self.pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kill -SIGNAL PID` (no libc needed).
pub fn send_signal(pid: u32, signal: &str) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    );
}

/// `/proc/PID/stat` split into (command name, state, parent pid); `None`
/// when there is no such process.
pub fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID …"; COMM may itself hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Every process whose parent is `parent` (pid, command name), from /proc.
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((comm, _, ppid)) = proc_stat(pid)
            && ppid == parent
        {
            found.push((pid, comm));
        }
    }
    found.sort();
    found
}

/// True while `pid` exists and is not a zombie (an exited process not yet
/// reaped is no longer running).
pub fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a UTC time (the status file's format).
pub fn status_timestamp(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Writes a status file as backupd would: every key of [`STATUS_KEYS`],
/// `last_backup` at `last_backup` (null when `None`), `last_error` as given.
/// Returns the JSON written.
pub fn write_status_file(
    path: &Path,
    last_backup: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<&str>,
) -> serde_json::Value {
    let file = last_backup.map(|t| Kind::Sqlite.name_at(t));
    let status = serde_json::json!({
        "last_backup": last_backup.map(status_timestamp),
        "last_file": file.as_ref().map(|f| path.with_file_name(f).display().to_string()),
        "backups": file.iter().collect::<Vec<_>>(),
        "last_attempt": status_timestamp(last_backup.unwrap_or_else(chrono::Utc::now)),
        "last_error": last_error,
        "last_duration_seconds": last_backup.map(|_| 0.5),
        "last_size_bytes": last_backup.map(|_| 1234),
        "last_sha256": last_backup.map(|_| "0".repeat(64)),
        "database": "sqlite",
        "version": "0.1.0",
    });
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, serde_json::to_string_pretty(&status).unwrap()).unwrap();
    status
}

// ---------------------------------------------------------------- HTTP

/// One HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the response when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {v}")?;
        }
        write!(f, "\n{}", self.body)
    }
}

/// Sends `METHOD TARGET HTTP/1.1` verbatim (so odd targets such as
/// `/../x` reach the server unchanged) to 127.0.0.1:`port` over a plain
/// TcpStream with `Connection: close`, and reads the whole response.
pub fn http_request(port: u16, method: &str, target: &str) -> std::io::Result<HttpResponse> {
    http_request_with(port, method, target, &[])
}

/// [`http_request`] with extra request headers (e.g. `Authorization`).
pub fn http_request_with(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(15)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: backupd-tests\r\n\
         Accept: */*\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{e}; raw response to {method} {target}:\n{}",
                String::from_utf8_lossy(&raw)
            ),
        )
    })
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of the header block")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("not an HTTP/1.x status line: `{status_line}`"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status code in `{status_line}`"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some((_, len)) = headers.iter().find(|(k, _)| k == "content-length") {
        let len: usize = len.parse().map_err(|_| format!("content-length `{len}`"))?;
        if body.len() < len {
            return Err(format!(
                "body is {} bytes, content-length {len}",
                body.len()
            ));
        }
        body.truncate(len);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// `GET target`, panicking when no response comes.
pub fn http_get(port: u16, target: &str) -> HttpResponse {
    http_request(port, "GET", target)
        .unwrap_or_else(|e| panic!("GET {target} on 127.0.0.1:{port}: {e}"))
}

/// Polls until the status server on `port` answers `GET /healthz` at all;
/// false after `give_up`.
pub fn wait_for_http(port: u16, give_up: Duration) -> bool {
    poll(Duration::from_millis(50), give_up, || {
        http_request(port, "GET", "/healthz").ok()
    })
    .is_some()
}

// ---------------------------------------------------------------- metrics

/// One sample of the Prometheus/OpenMetrics text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses every non-comment, non-empty line as `name{labels} value
/// [timestamp]`; panics naming the line when one does not parse.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            parse_sample(line).unwrap_or_else(|e| panic!("metrics line `{line}`: {e}\n{text}"))
        })
        .collect()
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        return Err(format!("`{name}` is not a metric name"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label `{key}` has no quoted value"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return Err("dangling escape".into()),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label `{key}` value is not closed"));
            }
            labels.insert(key.trim().to_string(), value);
        }
        let end = end.ok_or("labels not closed with `}`")?;
        rest = &inner[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("no value")?;
    let value: f64 = value_text
        .parse()
        .map_err(|_| format!("value `{value_text}` is not a number"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<f64>()
            .map_err(|_| format!("timestamp `{ts}` is not a number"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the value"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The value of the sample `name` whose labels include every pair of
/// `labels` (the first when several do).
pub fn metric_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

pub mod docker;

// ---------------------------------------------------------------- dump editing

/// The decompressed bytes of a gzip file.
pub fn gunzip_bytes(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `sql` with `line` inserted before the middle `COPY … FROM stdin;` of a
/// plain dump (an error half way through the load), and the 1-based number
/// of the inserted line.
pub fn insert_in_middle(sql: &str, line: &str) -> (String, usize) {
    let lines: Vec<&str> = sql.lines().collect();
    let copies: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("COPY ") && l.ends_with(" FROM stdin;"))
        .map(|(i, _)| i)
        .collect();
    assert!(copies.len() >= 3, "the dump has too few COPY statements");
    let at = copies[copies.len() / 2];
    let mut out: Vec<&str> = lines[..at].to_vec();
    out.push(line);
    out.extend_from_slice(&lines[at..]);
    (out.join("\n") + "\n", at + 1)
}

/// `python3` with `cryptography.fernet` importable, or a loud skip.
pub fn require_python_fernet() -> Option<()> {
    let works = Command::new("python3")
        .args(["-c", "import cryptography.fernet"])
        .output()
        .is_ok_and(|out| out.status.success());
    require(
        "`python3` with the `cryptography` package (cryptography.fernet)",
        works.then_some(()),
    )
}

/// Runs a Python snippet with `args` (sys.argv[1..]) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(script).args(args))
}
