//! PostgreSQL backups: `pg_dump` in plain format, streamed through the
//! archive pipeline. Connection settings reach the children only through
//! libpq environment variables, so no secret is ever on a command line.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::PgTarget;
use crate::archive::{self, BackupFile, Committed};
use crate::error::{Error, Result};

/// Arguments of every dump; plain SQL because the app's admin page reads it.
pub const PG_DUMP_ARGS: &[&str] = &[
    "--format=plain",
    "--no-owner",
    "--no-privileges",
    "--no-password",
];

const CHUNK: usize = 256 * 1024;
const STDERR_LINES_KEPT: usize = 20;

/// Secrets backupd reads from its environment; child processes never get them.
const SECRET_VARIABLES: [&str; 6] = [
    "BACKUP_ENCRYPTION_KEY",
    "SQLALCHEMY_DATABASE_URI",
    "DATABASE_URL",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
];

/// A libpq client program for `target`: connection settings from the
/// environment only (never argv), stdin closed, killed when dropped.
pub(crate) fn command(program: &str, target: &PgTarget) -> Command {
    let mut cmd = Command::new(program);
    // Settings the operator's environment may carry must not override the URL.
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    // Our own secrets are no business of the database client.
    for var in SECRET_VARIABLES {
        cmd.env_remove(var);
    }
    cmd.envs(target.libpq_env())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Major version of the `pg_dump` on PATH, from `pg_dump --version`.
pub async fn pg_dump_major() -> Result<u32> {
    let out = Command::new("pg_dump")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            Error::Other(format!(
                "cannot run pg_dump: {e} (is the PostgreSQL client installed and on PATH?)"
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_pg_dump_version(&text).ok_or_else(|| {
        Error::Other(format!(
            "cannot read the version of pg_dump from '{}'",
            text.trim()
        ))
    })
}

/// `pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+1)` → 18.
pub fn parse_pg_dump_version(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim();
    let version = after.split_whitespace().next()?;
    version.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Asks the server for `server_version_num`; also proves we can connect.
pub async fn server_major(target: &PgTarget) -> Result<u32> {
    let out = command("psql", target)
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SHOW server_version_num",
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
    let num: u32 = text.trim().parse().map_err(|_| {
        Error::database(
            target.to_string(),
            format!("unexpected server_version_num '{}'", text.trim()),
        )
    })?;
    Ok(if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    })
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

/// Dumps `target` into `file`. The file is committed only if pg_dump exits 0
/// and its output ends with the completion trailer; otherwise it is removed.
pub async fn backup(
    target: &PgTarget,
    file: BackupFile,
    cancel: &CancellationToken,
    timeout: Duration,
) -> Result<Committed> {
    let dump_major = pg_dump_major().await?;
    let server = tokio::select! {
        s = server_major(target) => s?,
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
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr_task = tokio::spawn(log_stderr(
        child.stderr.take().expect("stderr is piped"),
        target.clone(),
        Arc::clone(&stderr_tail),
    ));

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<BackupFile> {
        let mut file = file;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        Ok(file)
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
    let _ = stderr_task.await;
    let file = writer
        .await
        .map_err(|e| Error::Other(format!("the compression task failed: {e}")))?;
    pumped?;
    let file = file?;
    if !status.success() {
        let tail: Vec<String> = stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
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
    tokio::task::spawn_blocking(move || file.commit())
        .await
        .map_err(|e| Error::Other(format!("the commit task failed: {e}")))?
}

async fn log_stderr(
    stderr: tokio::process::ChildStderr,
    target: PgTarget,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = target.mask(&line);
        tracing::warn!(target: "backupd::pg_dump", "pg_dump: {line}");
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == STDERR_LINES_KEPT {
            tail.pop_front();
        }
        tail.push_back(line);
    }
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
