//! What a backup file is and whether it is sound, decided in one place for
//! `backupd verify`, `backupd list --verify` and the restore check, so the
//! three cannot disagree.
//!
//! What a file is comes from its name ([`kind`]: `.sql`, `.dump`, `.db`,
//! each optionally `.gz`, then optionally `.enc`). Whether it is sound comes
//! from its content, in one streaming pass over the decoded bytes
//! ([`inspect`]): the whole gzip stream; for plain SQL pg_dump's trailer and
//! the [`sql_scan`] refusals; for a custom-format dump `pg_restore -f -`
//! (nothing connects anywhere) with its SQL through the scanner; for SQLite
//! `integrity_check` of a decompressed copy. The Fernet token of an `.enc`
//! file is authenticated by `crypto::fernet` before its plaintext reaches
//! the pass, and the `.sha256` sidecar is compared by the caller that reads
//! it ([`sidecar`]).
//!
//! The caller opens the file once ([`read::open`]) and reads it in the pass
//! it hands to [`inspect`], with its own reader: the restore check tees the
//! bytes into its private folder, so that what it loads is what was checked.

pub mod kind;
pub mod read;
pub mod sidecar;
pub mod sql_scan;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;

use flate2::read::MultiGzDecoder;
use tokio::process::ChildStdin;
use tokio_util::io::SyncIoBridge;

use crate::archive::has_pg_dump_trailer;
use crate::crypto::fernet::DecryptError;
use crate::manifest::CopyRowCounter;
use kind::{FileKind, Payload};
use sql_scan::{Refusal, SqlScan};

/// Why a file is not sound, or why its soundness could not be found out.
/// The wording is what `backupd verify` prints after "is not a sound
/// backup:" and what the failed folder records.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the gzip stream ends early (truncated file)")]
    GzipTruncated,
    #[error("the gzip stream is damaged: {0}")]
    GzipDamaged(#[source] io::Error),
    /// The Fernet token of an `.enc` file.
    #[error(transparent)]
    Token(#[from] DecryptError),
    #[error(
        "the SQL dump does not end with pg_dump's trailer '-- PostgreSQL database dump complete' (incomplete dump)"
    )]
    NoTrailer,
    /// A plain SQL dump holds what pg_dump never writes.
    #[error(transparent)]
    Refused(Refusal),
    #[error("in the SQL of the custom dump, {0}")]
    RefusedInCustomDump(Refusal),
    /// Holds the first line pg_restore wrote to stderr.
    #[error("pg_restore rejected the dump: {0}")]
    PgRestoreRejected(String),
    #[error("SQLite integrity_check failed: {0}")]
    SqliteUnsound(String),

    #[error("cannot run pg_restore: {0}")]
    RunPgRestore(#[source] io::Error),
    #[error("pg_restore: {0}")]
    WaitPgRestore(#[source] io::Error),
    #[error("reading pg_restore's output: {0}")]
    ReadPgRestore(#[source] io::Error),
    #[error("writing {}: {source}", path.display())]
    WriteCopy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("fsync {}: {source}", path.display())]
    SyncCopy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the checking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the content checks found in a sound file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sound {
    /// Length of the content (after decryption and decompression).
    pub raw_bytes: u64,
    /// A PostgreSQL dump's tables (`schema.table`), as the scan collected them.
    pub tables: Option<BTreeSet<String>>,
    /// A plain-format dump's row count per table, from its COPY blocks
    /// (see [`crate::manifest`]); `None` for other kinds, or when a COPY
    /// block was left open.
    pub rows: Option<BTreeMap<String, u64>>,
}

/// Where a SQLite payload is decompressed for its integrity check (SQLite
/// opens files by name). The caller picks a place nobody else can swap a
/// file in, and keeps or removes the copy afterwards.
#[derive(Debug)]
pub struct SqliteCopy {
    pub file: File,
    pub path: PathBuf,
}

/// Inspects the content of a file of `kind` (its `.enc` layer, if any,
/// already removed by the caller's reader). `pass` runs on a blocking
/// thread: it reads the file through its own reader into
/// [`Feed::decode`], once, and returns what it wants to keep of that
/// reading (a digest, the checked input). Errors of the pass come first, as
/// they explain the content's (a truncated file, not "no trailer").
pub async fn inspect<T, E>(
    kind: FileKind,
    sqlite_copy: Option<SqliteCopy>,
    pass: impl FnOnce(&mut Feed) -> Result<T, E> + Send + 'static,
) -> Result<(Sound, T), E>
where
    T: Send + 'static,
    E: From<InspectError> + Send + 'static,
{
    let (content, mut pg_restore) = match (kind.payload, sqlite_copy) {
        (Payload::PlainSql, _) => (
            Content::PlainSql {
                tail: TailSink::default(),
                scan: SqlScan::for_psql(),
                rows: CopyRowCounter::new(),
            },
            None,
        ),
        (Payload::CustomDump, _) => {
            let (stdin, running) = PgRestore::start()?;
            (Content::CustomDump { stdin: Some(stdin) }, Some(running))
        }
        (Payload::Sqlite, Some(SqliteCopy { file, path })) => (
            Content::Sqlite {
                out: io::BufWriter::new(file),
                path,
            },
            None,
        ),
        (Payload::Sqlite, None) => unreachable!("a SQLite payload comes with its copy"),
    };
    let mut feed = Feed {
        gzip: kind.gzip,
        raw_bytes: 0,
        content,
    };
    let passing = tokio::task::spawn_blocking(move || {
        let kept = pass(&mut feed);
        // pg_restore sees its end of input here, while its output is read.
        feed.end_of_input();
        (feed, kept)
    });
    // pg_restore's stderr is read while the pass feeds it: a pg_restore
    // blocked on a full stderr pipe would stop reading its input.
    let pg_restore_output = match pg_restore.as_mut() {
        Some(running) => Some(running.wait().await),
        None => None,
    };
    let (feed, kept) = passing.await.map_err(InspectError::from)?;
    let kept = kept?;
    let sound = feed.conclude(pg_restore, pg_restore_output).await?;
    Ok((sound, kept))
}

/// The content checks as one sink, fed by the pass.
pub struct Feed {
    gzip: bool,
    raw_bytes: u64,
    content: Content,
}

enum Content {
    PlainSql {
        tail: TailSink,
        scan: SqlScan,
        rows: CopyRowCounter,
    },
    CustomDump {
        stdin: Option<UntilClosed<SyncIoBridge<ChildStdin>>>,
    },
    Sqlite {
        out: io::BufWriter<File>,
        path: PathBuf,
    },
}

impl Feed {
    /// Decodes `from` (gunzipping when the file is gzipped) to its end into
    /// the content checks; returns the content's length.
    pub fn decode(&mut self, from: impl Read) -> Result<u64, InspectError> {
        let reader = BufReader::with_capacity(1 << 16, from);
        let mut reader: Box<dyn Read> = if self.gzip {
            Box::new(MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let n = io::copy(&mut reader, self).map_err(gzip_error)?;
        self.raw_bytes += n;
        Ok(n)
    }

    fn end_of_input(&mut self) {
        if let Content::CustomDump { stdin } = &mut self.content {
            *stdin = None;
        }
    }

    async fn conclude(
        self,
        pg_restore: Option<PgRestore>,
        pg_restore_output: Option<io::Result<std::process::Output>>,
    ) -> Result<Sound, InspectError> {
        let raw_bytes = self.raw_bytes;
        match self.content {
            Content::PlainSql { tail, scan, rows } => {
                let scanned = scan.finish().map_err(InspectError::Refused)?;
                if !has_pg_dump_trailer(&tail.bytes) {
                    return Err(InspectError::NoTrailer);
                }
                Ok(Sound {
                    raw_bytes,
                    tables: Some(scanned.tables),
                    rows: rows.finish().ok(),
                })
            }
            Content::CustomDump { .. } => {
                let running = pg_restore.expect("a custom dump runs pg_restore");
                let output = pg_restore_output
                    .expect("pg_restore was waited for")
                    .map_err(InspectError::WaitPgRestore)?;
                let scan = running.scan.await??;
                if !output.status.success() {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    return Err(InspectError::PgRestoreRejected(
                        stderr.lines().next().unwrap_or("").trim().to_string(),
                    ));
                }
                let scanned = scan.finish().map_err(InspectError::RefusedInCustomDump)?;
                Ok(Sound {
                    raw_bytes,
                    tables: Some(scanned.tables),
                    rows: None,
                })
            }
            Content::Sqlite { out, path } => {
                let file = out.into_inner().map_err(|e| InspectError::WriteCopy {
                    path: path.clone(),
                    source: e.into_error(),
                })?;
                file.sync_all().map_err(|source| InspectError::SyncCopy {
                    path: path.clone(),
                    source,
                })?;
                drop(file);
                tokio::task::spawn_blocking(move || {
                    crate::db::sqlite::check_integrity(&path, "integrity_check")
                })
                .await?
                .map_err(|unsound| InspectError::SqliteUnsound(unsound.to_string()))?;
                Ok(Sound {
                    raw_bytes,
                    tables: None,
                    rows: None,
                })
            }
        }
    }
}

impl Write for Feed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.content {
            // One pass feeds the trailer check and the scan.
            Content::PlainSql { tail, scan, rows } => {
                tail.write_all(buf)?;
                scan.write_all(buf)?;
                rows.feed(buf);
            }
            Content::CustomDump { stdin } => {
                if let Some(stdin) = stdin {
                    stdin.write_all(buf)?;
                }
            }
            Content::Sqlite { out, .. } => out.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.content {
            Content::Sqlite { out, .. } => out.flush(),
            _ => Ok(()),
        }
    }
}

/// `pg_restore -f -` over a custom-format dump: the SQL comes out on
/// stdout, nothing connects anywhere. pg_restore runs no psql
/// meta-commands, but the SQL of a crafted custom dump is the server's to
/// run all the same: it goes through the scanner, which also collects the
/// tables.
struct PgRestore {
    child: Option<tokio::process::Child>,
    scan: tokio::task::JoinHandle<Result<SqlScan, InspectError>>,
}

impl PgRestore {
    fn start() -> Result<(UntilClosed<SyncIoBridge<ChildStdin>>, PgRestore), InspectError> {
        let mut command = crate::process::command("pg_restore");
        command
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(InspectError::RunPgRestore)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let scan = tokio::task::spawn_blocking(move || {
            let mut from = SyncIoBridge::new(stdout);
            let mut scan = SqlScan::for_pg_restore();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = from.read(&mut buf).map_err(InspectError::ReadPgRestore)?;
                if n == 0 {
                    return Ok(scan);
                }
                let _ = scan.write(&buf[..n]);
            }
        });
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdin = UntilClosed(Some(SyncIoBridge::new(stdin)));
        Ok((
            stdin,
            PgRestore {
                child: Some(child),
                scan,
            },
        ))
    }

    async fn wait(&mut self) -> io::Result<std::process::Output> {
        let child = self.child.take().expect("waited for once");
        child.wait_with_output().await
    }
}

/// Writes to the inner writer until it fails (pg_restore closes its input
/// once it has the table of contents), then swallows the rest, so the
/// decompression still runs to the end of the file.
struct UntilClosed<W: Write>(Option<W>);

impl<W: Write> Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(inner) = self.0.as_mut()
            && inner.write_all(buf).is_err()
        {
            self.0 = None;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(inner) = self.0.as_mut()
            && inner.flush().is_err()
        {
            self.0 = None;
        }
        Ok(())
    }
}

/// A read error of the pass, as the gzip layer (or the file under it) saw it.
pub fn gzip_error(e: io::Error) -> InspectError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        InspectError::GzipTruncated
    } else {
        InspectError::GzipDamaged(e)
    }
}

/// The last 4 KiB written: where pg_dump's trailer stands.
#[derive(Default)]
struct TailSink {
    bytes: Vec<u8>,
}

impl Write for TailSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        const KEEP: usize = 4096;
        self.bytes
            .extend_from_slice(&buf[buf.len().saturating_sub(KEEP)..]);
        if self.bytes.len() > KEEP {
            let excess = self.bytes.len() - KEEP;
            self.bytes.drain(..excess);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
