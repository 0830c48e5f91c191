//! PostgreSQL backups: `pg_dump` in plain format, streamed through the
//! archive pipeline. Connection settings reach the children only through
//! libpq environment variables and the password through a private password
//! file, so no secret is ever on a command line or in a child's environment.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{Dumped, PgTarget};
use crate::archive::{self, BackupFile};
use crate::error::{Error, Result};
use crate::manifest::{CopyRowCounter, DatabaseInfo};

/// Arguments of every dump; plain SQL because the app's admin page reads it.
pub const PG_DUMP_ARGS: &[&str] = &[
    "--format=plain",
    "--no-owner",
    "--no-privileges",
    "--no-password",
];

const CHUNK: usize = 256 * 1024;
const STDERR_LINES_KEPT: usize = 20;

/// A libpq client program (`psql`, `pg_dump`, `pg_restore`) for `target`,
/// built on [`crate::process::command`]: nothing of our environment but the
/// allow-list, the connection settings as `PG*` variables (never argv), and
/// the password in a private password file made for each spawn.
pub(crate) fn command(program: &str, target: &PgTarget) -> PgCommand {
    let mut command = crate::process::command(program);
    command.envs(target.libpq_env());
    PgCommand {
        command,
        login: target
            .password
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|password| (target.user.clone(), password.clone())),
    }
}

/// A child-to-be with a database login. Spawning writes the password to a
/// [`Passfile`] (`PGPASSFILE`) that lives exactly as long as the child
/// handle: libpq reads it when it connects, and it is removed when the
/// handle is dropped (after `wait`, or on an error or cancellation).
pub(crate) struct PgCommand {
    command: Command,
    /// (user, password) for the password file.
    login: Option<(Option<String>, String)>,
}

impl PgCommand {
    pub fn arg(&mut self, arg: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        self.command.env(key, value);
        self
    }

    pub fn stdin(&mut self, cfg: Stdio) -> &mut Self {
        self.command.stdin(cfg);
        self
    }

    pub fn stdout(&mut self, cfg: Stdio) -> &mut Self {
        self.command.stdout(cfg);
        self
    }

    pub fn stderr(&mut self, cfg: Stdio) -> &mut Self {
        self.command.stderr(cfg);
        self
    }

    fn passfile(&mut self) -> std::io::Result<Option<Passfile>> {
        let Some((user, password)) = &self.login else {
            return Ok(None);
        };
        let passfile = Passfile::create(user.as_deref(), password)?;
        self.command.env("PGPASSFILE", passfile.path());
        Ok(Some(passfile))
    }

    /// Starts the child (from async code, see [`crate::process`]).
    pub fn spawn(&mut self) -> std::io::Result<PgChild> {
        let passfile = self.passfile()?;
        let child = self.command.spawn()?;
        Ok(PgChild {
            child,
            _passfile: passfile,
        })
    }

    /// Runs the child to its end, collecting its output.
    pub async fn output(&mut self) -> std::io::Result<std::process::Output> {
        let _passfile = self.passfile()?;
        self.command.output().await
    }
}

/// A running libpq program and its password file, removed on drop.
pub(crate) struct PgChild {
    child: tokio::process::Child,
    _passfile: Option<Passfile>,
}

impl PgChild {
    pub async fn wait_with_output(self) -> std::io::Result<std::process::Output> {
        let PgChild { child, _passfile } = self;
        child.wait_with_output().await
    }
}

impl std::ops::Deref for PgChild {
    type Target = tokio::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.child
    }
}

impl std::ops::DerefMut for PgChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.child
    }
}

/// A libpq password file for one child: one line `*:*:*:USER:PASSWORD` in a
/// 0600 file inside a fresh 0700 directory with a random name under
/// `$TMPDIR`; both are removed on drop. Host, port and database match
/// anything (as `PGPASSWORD` did: the restore connects to the live, the
/// staging and a maintenance database of the one server).
pub(crate) struct Passfile {
    dir: tempfile::TempDir,
}

const PASSFILE_NAME: &str = "pgpass";

impl Passfile {
    pub fn create(user: Option<&str>, password: &str) -> std::io::Result<Passfile> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        if password.contains(['\n', '\r']) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the database password contains a line break, which a libpq password file cannot hold",
            ));
        }
        let context = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot create a private password file under {}: {e}",
                    std::env::temp_dir().display()
                ),
            )
        };
        let dir = tempfile::Builder::new()
            .prefix("backupd-pg-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(context)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.path().join(PASSFILE_NAME))
            .map_err(context)?;
        let user = user.map_or_else(|| "*".to_string(), passfile_field);
        writeln!(file, "*:*:*:{user}:{}", passfile_field(password)).map_err(context)?;
        Ok(Passfile { dir })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(PASSFILE_NAME)
    }
}

/// A `.pgpass` field: `\` and `:` escaped with a backslash.
fn passfile_field(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

/// Major version of the `pg_dump` on PATH, from `pg_dump --version`.
pub async fn pg_dump_major() -> Result<u32> {
    pg_dump_version().await.map(|(major, _)| major)
}

/// The `pg_dump` on PATH: its major version and its release (`18.1`).
pub async fn pg_dump_version() -> Result<(u32, String)> {
    let out = crate::process::command("pg_dump")
        .arg("--version")
        .output()
        .await
        .map_err(|e| {
            Error::Other(format!(
                "cannot run pg_dump: {e} (is the PostgreSQL client installed and on PATH?)"
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let unreadable = || {
        Error::Other(format!(
            "cannot read the version of pg_dump from '{}'",
            text.trim()
        ))
    };
    let major = parse_pg_dump_version(&text).ok_or_else(unreadable)?;
    let release = parse_pg_dump_release(&text).ok_or_else(unreadable)?;
    Ok((major, release))
}

/// `pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+1)` → `18.1`.
pub fn parse_pg_dump_release(text: &str) -> Option<String> {
    let after = text.split(')').nth(1)?.trim();
    after.split_whitespace().next().map(str::to_string)
}

/// `pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+1)` → 18.
pub fn parse_pg_dump_version(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim();
    let version = after.split_whitespace().next()?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Asks the server for `server_version_num`; also proves we can connect.
pub async fn server_major(target: &PgTarget) -> Result<u32> {
    server_version(target).await.map(|(major, _)| major)
}

/// The server's major version and its `server_version` (`18.1 (Debian …)`);
/// also proves we can connect.
pub async fn server_version(target: &PgTarget) -> Result<(u32, String)> {
    let out = command("psql", target)
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT current_setting('server_version_num') || ' ' || current_setting('server_version')",
        ])
        .output()
        .await
        .map_err(|e| {
            Error::database(
                target.to_string(),
                format!("cannot run psql: {e} (is the PostgreSQL client installed and on PATH?)"),
            )
        })?;
    if !out.status.success() {
        let stderr = target.mask(String::from_utf8_lossy(&out.stderr).trim());
        return Err(Error::database(
            target.to_string(),
            format!("cannot connect: {}", one_line(&stderr)),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (num, version) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let num: u32 = num.parse().map_err(|_| {
        Error::database(
            target.to_string(),
            format!("unexpected server_version_num '{}'", text.trim()),
        )
    })?;
    let major = if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    };
    Ok((major, version.to_string()))
}

/// pg_dump refuses servers newer than itself; say so before trying.
pub fn check_versions(target: &PgTarget, pg_dump: u32, server: u32) -> Result<()> {
    if pg_dump < server {
        return Err(Error::database(
            target.to_string(),
            format!(
                "pg_dump is version {pg_dump} but the server runs PostgreSQL {server}; pg_dump cannot dump a newer server. Use an image with postgresql-client-{server} (or newer)"
            ),
        ));
    }
    Ok(())
}

/// Dumps `target` into `file`, counting every table's rows from the COPY
/// blocks on the way (see [`crate::manifest`]). The file is handed back for
/// its commit only if pg_dump exits 0 and its output ends with the
/// completion trailer; otherwise it is removed.
pub async fn backup(
    target: &PgTarget,
    file: BackupFile,
    cancel: &CancellationToken,
    timeout: Duration,
) -> Result<Dumped> {
    let (dump_major, dump_release) = pg_dump_version().await?;
    let (server, server_release) = tokio::select! {
        s = server_version(target) => s?,
        _ = cancel.cancelled() => return Err(Error::Cancelled),
    };
    check_versions(target, dump_major, server)?;
    tracing::debug!(pg_dump = dump_major, server, "versions checked");

    let mut child = command("pg_dump", target)
        .args(PG_DUMP_ARGS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::database(target.to_string(), format!("cannot run pg_dump: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let masking = target.clone();
    let stderr_task = tokio::spawn(crate::process::capture_stderr(
        child.stderr.take().expect("stderr is piped"),
        STDERR_LINES_KEPT,
        move |line| {
            let line = masking.mask(line);
            tracing::warn!(target: "backupd::pg_dump", "pg_dump: {line}");
            Some(line)
        },
    ));

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<(BackupFile, CopyRowCounter)> {
        let mut file = file;
        let mut rows = CopyRowCounter::new();
        while let Some(chunk) = rx.blocking_recv() {
            rows.feed(&chunk);
            file.write_all(&chunk)?;
        }
        Ok((file, rows))
    });

    let pump = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = stdout.read(&mut buf).await.map_err(|e| {
                Error::database(target.to_string(), format!("reading pg_dump's output: {e}"))
            })?;
            if n == 0 {
                return Ok(true);
            }
            if tx.send(buf[..n].to_vec()).await.is_err() {
                // The writer stopped; its own error says why.
                return Ok(false);
            }
        }
    };
    let pumped: Result<bool> = tokio::select! {
        r = pump => r,
        _ = cancel.cancelled() => Err(Error::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(Error::database(
            target.to_string(),
            format!("pg_dump did not finish within {}s (BACKUP_TIMEOUT_SECONDS)", timeout.as_secs()),
        )),
    };
    drop(tx);
    if !matches!(pumped, Ok(true)) {
        // Cancelled, timed out or the writer failed: pg_dump would otherwise
        // block on a full pipe forever.
        let _ = child.start_kill();
    }
    let status = child
        .wait()
        .await
        .map_err(|e| Error::database(target.to_string(), format!("waiting for pg_dump: {e}")))?;
    let stderr = stderr_task.await.unwrap_or_default();
    let file = writer
        .await
        .map_err(|e| Error::Other(format!("the compression task failed: {e}")))?;
    pumped?;
    let (file, rows) = file?;
    if !status.success() {
        let tail: Vec<&str> = stderr.tail().collect();
        let detail = if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" | "))
        };
        return Err(Error::database(
            target.to_string(),
            format!("pg_dump exited with {status}{detail}"),
        ));
    }
    if !archive::has_pg_dump_trailer(file.tail()) {
        return Err(Error::database(
            target.to_string(),
            "pg_dump's output ended without '-- PostgreSQL database dump complete'; the dump is incomplete",
        ));
    }
    let tables = match rows.finish() {
        Ok(tables) => Some(tables),
        Err(e) => {
            // The dump itself is complete (pg_dump's exit and trailer say
            // so): a line the counter took for a COPY header is not data.
            tracing::warn!(error = %e, "the rows of this dump could not be counted; it gets no manifest");
            None
        }
    };
    Ok(Dumped {
        file,
        database: DatabaseInfo {
            kind: "postgresql".into(),
            name: target
                .dbname
                .clone()
                .or_else(|| target.user.clone())
                .unwrap_or_default(),
        },
        server_version: Some(server_release),
        pg_dump_version: Some(dump_release),
        tables,
    })
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_versions_are_read_from_their_banner() {
        assert_eq!(
            parse_pg_dump_version("pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+1)\n"),
            Some(18)
        );
        assert_eq!(
            parse_pg_dump_version("pg_dump (PostgreSQL) 15.18\n"),
            Some(15)
        );
        assert_eq!(
            parse_pg_dump_version("pg_dump (PostgreSQL) 19beta1\n"),
            Some(19)
        );
        assert_eq!(parse_pg_dump_version("garbage"), None);
        assert_eq!(
            parse_pg_dump_release("pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+1)\n")
                .as_deref(),
            Some("18.1")
        );
    }

    #[test]
    fn the_password_file_is_private_escaped_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt;
        let passfile = Passfile::create(Some("ap:p"), r"p\w:rd").unwrap();
        let path = passfile.path();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "*:*:*:ap\\:p:p\\\\w\\:rd\n"
        );
        let dir = path.parent().unwrap().to_path_buf();
        drop(passfile);
        assert!(!path.exists() && !dir.exists());
        assert!(Passfile::create(None, "two\nlines").is_err());
    }

    #[test]
    fn an_older_pg_dump_is_refused_naming_both_versions() {
        let target = PgTarget {
            host: Some("db".into()),
            port: None,
            user: Some("app".into()),
            password: Some("pw".into()),
            dbname: Some("app".into()),
            options: vec![],
        };
        let err = check_versions(&target, 15, 18).unwrap_err().to_string();
        assert!(
            err.contains("version 15") && err.contains("PostgreSQL 18"),
            "{err}"
        );
        assert!(!err.contains("pw@"), "{err}");
        check_versions(&target, 18, 18).unwrap();
        check_versions(&target, 18, 16).unwrap();
    }
}
