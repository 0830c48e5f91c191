//! Lifecycle hooks: the operator's own commands around backups and restores
//! (`HOOK_BEFORE_BACKUP`, `HOOK_AFTER_RESTORE`, …), each run through
//! `/bin/sh -c` behind one seam, [`Hooks`], so the backup run and the
//! restore procedure are tested with [`FakeHooks`].
//!
//! A hook is a child like any other: built by [`crate::process::command`],
//! so it starts from an empty environment plus the allow-list and its
//! environment holds none of backupd's secrets (the database URL, the
//! Fernet key, AWS keys, notification URLs); backupd's own
//! `/proc/PID/environ` is closed to it
//! ([`crate::process::keep_own_proc_private`]). It does run with backupd's
//! uid and file access (the backups, `.encryption_key`). What it is told
//! comes in `BACKUPD_*` variables, none of them a credential; a hook that
//! connects to the database brings its own (a `PGPASSFILE` it mounts, say).
//!
//! Each hook runs in its own process group, so the timeout
//! (`HOOK_TIMEOUT_SECONDS`) kills the shell and everything it started, and
//! so does the end of the shell: a hook leaves no process behind. Its
//! output goes to the log (target `backupd::hooks`), line by line, masked,
//! bounded; the last line is kept for the error message.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::events::HookPoint;

const LOG_TARGET: &str = "backupd::hooks";

/// `HOOK_TIMEOUT_SECONDS` when unset.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;

/// Lines of a hook's output logged per run; the rest is read and dropped,
/// so a chatty hook neither floods the log nor blocks on a full pipe.
const LOGGED_LINES: usize = 200;

/// Bytes of one output line kept; a longer line is cut.
const LINE_BYTES: usize = 2048;

/// Characters of the last line quoted in an error.
const QUOTED_CHARS: usize = 300;

/// How long output is still read after the shell exited and its group was
/// killed: only a process that left the group can hold the pipes longer.
const DRAIN: Duration = Duration::from_secs(2);

/// The configured hook commands, by point, and their time limit. Its Debug
/// names the points set, never the commands: a command may carry a
/// credential (`curl -u ops:pw …`, a ping URL's UUID).
#[derive(Clone, PartialEq, Eq)]
pub struct HookConfig {
    commands: Vec<(HookPoint, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for HookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set: Vec<&str> = self.commands.iter().map(|(p, _)| p.variable()).collect();
        f.debug_struct("HookConfig")
            .field("set", &set)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            commands: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
        }
    }
}

impl HookConfig {
    /// No hooks, the default time limit.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the command of `point`; an empty one means no hook there.
    pub fn with(mut self, point: HookPoint, command: Option<&str>) -> Self {
        self.commands.retain(|(p, _)| *p != point);
        if let Some(command) = command.map(str::trim).filter(|c| !c.is_empty()) {
            self.commands.push((point, command.to_string()));
        }
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn command(&self, point: HookPoint) -> Option<&str> {
        self.commands
            .iter()
            .find(|(p, _)| *p == point)
            .map(|(_, c)| c.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }
}

/// What a hook is told about the backup or restore it runs for; what is
/// not known at that point stays `None` (an empty variable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookContext {
    pub file: Option<PathBuf>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// The failure a `*_FAILED` hook runs for (already masked).
    pub error: Option<String>,
    pub duration: Option<Duration>,
}

/// Why a hook failed. The Display names the hook's variable first: it is
/// what the run's error, the status file and a notification say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("{} could not be started: {reason}", .hook.variable())]
    Spawn { hook: HookPoint, reason: String },

    #[error("{} exited with status {code}{}", .hook.variable(), quoted(.last_line))]
    Exited {
        hook: HookPoint,
        code: i32,
        last_line: Option<String>,
    },

    #[error("{} was killed by signal {signal}{}", .hook.variable(), quoted(.last_line))]
    Signalled {
        hook: HookPoint,
        signal: i32,
        last_line: Option<String>,
    },

    #[error("{} was killed after HOOK_TIMEOUT_SECONDS={seconds}{}", .hook.variable(), quoted(.last_line))]
    TimedOut {
        hook: HookPoint,
        seconds: u64,
        last_line: Option<String>,
    },

    #[error("{} was stopped: backupd is shutting down", .hook.variable())]
    Cancelled { hook: HookPoint },
}

fn quoted(last_line: &Option<String>) -> String {
    match last_line {
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

impl HookError {
    pub fn hook(&self) -> HookPoint {
        match self {
            HookError::Spawn { hook, .. }
            | HookError::Exited { hook, .. }
            | HookError::Signalled { hook, .. }
            | HookError::TimedOut { hook, .. }
            | HookError::Cancelled { hook } => *hook,
        }
    }

    /// Stopped by backupd's shutdown, not by anything the hook did.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, HookError::Cancelled { .. })
    }
}

/// Runs the hook configured for a point; `Ok` when none is.
#[async_trait]
pub trait Hooks: Send + Sync {
    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
        cancel: &CancellationToken,
    ) -> Result<(), HookError>;

    /// A hook is configured at `point` (the restore records a phase for the
    /// after-restore hook only when there is one to run).
    fn is_configured(&self, _point: HookPoint) -> bool {
        true
    }
}

/// What a hook may know of the database: no credentials.
#[derive(Debug, Clone, Default)]
struct DatabaseFacts {
    kind: &'static str,
    /// The PostgreSQL database name or the SQLite file.
    name: String,
    host: String,
    port: String,
    /// Masked out of every output line.
    password: Option<String>,
}

impl DatabaseFacts {
    fn of(database: &Database) -> Self {
        match database {
            Database::Postgres(pg) => DatabaseFacts {
                kind: database.kind(),
                name: pg.dbname.clone().unwrap_or_default(),
                host: pg.host.clone().unwrap_or_default(),
                port: pg.port.map(|p| p.to_string()).unwrap_or_default(),
                password: pg.password.clone().filter(|p| !p.is_empty()),
            },
            Database::Sqlite(sqlite) => DatabaseFacts {
                kind: database.kind(),
                name: sqlite.path.display().to_string(),
                ..DatabaseFacts::default()
            },
        }
    }
}

/// The real hooks: `/bin/sh -c COMMAND` per configured point.
#[derive(Debug, Clone)]
pub struct ShellHooks {
    config: HookConfig,
    database: DatabaseFacts,
}

impl ShellHooks {
    pub fn new(config: &HookConfig, database: &Database) -> Self {
        ShellHooks {
            config: config.clone(),
            database: DatabaseFacts::of(database),
        }
    }

    /// The `BACKUPD_*` variables of one run, every one set (empty when not
    /// known), so a `set -u` script can read them all.
    fn environment(&self, point: HookPoint, context: &HookContext) -> Vec<(&'static str, String)> {
        let db = &self.database;
        vec![
            ("BACKUPD_EVENT", point.event().to_string()),
            (
                "BACKUPD_FILE",
                context
                    .file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "BACKUPD_SIZE_BYTES",
                context.size.map(|s| s.to_string()).unwrap_or_default(),
            ),
            ("BACKUPD_SHA256", context.sha256.clone().unwrap_or_default()),
            (
                "BACKUPD_ERROR",
                context.error.as_deref().map(one_line).unwrap_or_default(),
            ),
            (
                "BACKUPD_DURATION_SECONDS",
                context
                    .duration
                    .map(|d| format!("{:.3}", d.as_secs_f64()))
                    .unwrap_or_default(),
            ),
            ("BACKUPD_DATABASE_KIND", db.kind.to_string()),
            ("BACKUPD_DATABASE_NAME", db.name.clone()),
            ("BACKUPD_DATABASE_HOST", db.host.clone()),
            ("BACKUPD_DATABASE_PORT", db.port.clone()),
        ]
    }

    /// A line of output as it may be logged or quoted.
    fn mask(&self, line: &str) -> String {
        let line = match &self.database.password {
            Some(password) => line.replace(password.as_str(), "***"),
            None => line.to_string(),
        };
        mask_userinfo(&line)
    }

    async fn run_command(
        &self,
        point: HookPoint,
        command: &str,
        context: &HookContext,
        cancel: &CancellationToken,
    ) -> Result<(), HookError> {
        let hook = point.variable();
        let mut cmd = crate::process::command("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .envs(self.environment(point, context))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: the timeout kills the shell's children too.
            .process_group(0);
        tracing::info!(target: LOG_TARGET, hook, "running the hook");
        let mut child = cmd.spawn().map_err(|e| HookError::Spawn {
            hook: point,
            reason: format!("/bin/sh: {e}"),
        })?;
        let mut group = Group::of(child.id());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let output = Mutex::new(Output::default());
        let timeout = self.config.timeout;

        let finished = async {
            let mut readers = std::pin::pin!(async {
                tokio::join!(
                    self.read(stdout, "stdout", hook, &output),
                    self.read(stderr, "stderr", hook, &output)
                )
            });
            let mut drained = false;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = &mut readers, if !drained => drained = true,
                }
            };
            // The shell is gone: whatever it left running goes with it.
            group.kill();
            if !drained {
                let _ = tokio::time::timeout(DRAIN, &mut readers).await;
            }
            status
        };
        let ended = tokio::select! {
            ended = tokio::time::timeout(timeout, finished) => ended.map_err(|_| ()),
            _ = cancel.cancelled() => Err(()),
        };
        let last_line = output.lock().ok().and_then(|o| o.last_line());
        let status = match ended {
            Ok(status) => status,
            Err(()) => {
                group.kill();
                let _ = child.wait().await;
                return Err(if cancel.is_cancelled() {
                    HookError::Cancelled { hook: point }
                } else {
                    HookError::TimedOut {
                        hook: point,
                        seconds: timeout.as_secs(),
                        last_line,
                    }
                });
            }
        };
        let status = status.map_err(|e| HookError::Spawn {
            hook: point,
            reason: format!("cannot wait for /bin/sh: {e}"),
        })?;
        judge(point, status, last_line)
    }

    /// Logs every line of one output stream (within the bounds) and keeps
    /// the last one; reads to the end whatever the bounds.
    async fn read(
        &self,
        stream: Option<impl AsyncRead + Unpin>,
        name: &'static str,
        hook: &'static str,
        output: &Mutex<Output>,
    ) {
        let Some(stream) = stream else { return };
        let mut reader = BufReader::new(stream);
        let mut line = Vec::with_capacity(256);
        loop {
            let (used, complete) = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(buf) => {
                    let (chunk, used, complete) = match buf.iter().position(|b| *b == b'\n') {
                        Some(at) => (&buf[..at], at + 1, true),
                        None => (buf, buf.len(), false),
                    };
                    let room = LINE_BYTES.saturating_sub(line.len());
                    line.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    (used, complete)
                }
            };
            reader.consume(used);
            if complete {
                self.take_line(&line, name, hook, output);
                line.clear();
            }
        }
        if !line.is_empty() {
            self.take_line(&line, name, hook, output);
        }
    }

    fn take_line(
        &self,
        raw: &[u8],
        stream: &'static str,
        hook: &'static str,
        output: &Mutex<Output>,
    ) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            return;
        }
        let line = self.mask(text);
        let Ok(mut output) = output.lock() else {
            return;
        };
        output.lines += 1;
        if output.lines <= LOGGED_LINES {
            tracing::info!(target: LOG_TARGET, hook, stream, "{line}");
        } else if output.lines == LOGGED_LINES + 1 {
            tracing::info!(target: LOG_TARGET, hook, "further output of the hook is not logged");
        }
        match stream {
            "stderr" => output.last_stderr = Some(line),
            _ => output.last_stdout = Some(line),
        }
    }
}

#[async_trait]
impl Hooks for ShellHooks {
    fn is_configured(&self, point: HookPoint) -> bool {
        self.config.command(point).is_some()
    }

    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
        cancel: &CancellationToken,
    ) -> Result<(), HookError> {
        let Some(command) = self.config.command(point) else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let result = self.run_command(point, command, context, cancel).await;
        // A failure is logged by the caller, which knows what it means.
        if result.is_ok() {
            tracing::info!(
                target: LOG_TARGET,
                hook = point.variable(),
                duration_seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "the hook succeeded"
            );
        }
        result
    }
}

/// The outcome of a shell that ran to its end.
fn judge(point: HookPoint, status: ExitStatus, last_line: Option<String>) -> Result<(), HookError> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(HookError::Exited {
            hook: point,
            code,
            last_line,
        }),
        (None, Some(signal)) => Err(HookError::Signalled {
            hook: point,
            signal,
            last_line,
        }),
        (None, None) => Err(HookError::Exited {
            hook: point,
            code: -1,
            last_line,
        }),
    }
}

/// What was read of a hook's output.
#[derive(Debug, Default)]
struct Output {
    lines: usize,
    last_stdout: Option<String>,
    last_stderr: Option<String>,
}

impl Output {
    /// The last line on stderr (where programs say what went wrong), else
    /// on stdout, cut to a length an error message can carry.
    fn last_line(&self) -> Option<String> {
        let line = self.last_stderr.as_ref().or(self.last_stdout.as_ref())?;
        let line = line.trim();
        Some(match line.char_indices().nth(QUOTED_CHARS) {
            Some((at, _)) => format!("{}…", &line[..at]),
            None => line.to_string(),
        })
    }
}

/// A hook's process group, killed when the hook ends, times out, or its
/// future is dropped (a shutdown that gives up on the run).
struct Group(Option<libc::pid_t>);

impl Group {
    fn of(pid: Option<u32>) -> Self {
        Group(
            pid.and_then(|p| libc::pid_t::try_from(p).ok())
                .filter(|p| *p > 1),
        )
    }

    /// SIGKILL to every process of the group. After the shell was reaped
    /// its id stays taken while any member of its group lives, and is only
    /// handed out again once the group is empty (then `killpg` finds no one:
    /// ESRCH, ignored); pids wrap far too slowly for a new group to appear
    /// under it in between.
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: a plain system call with integer arguments.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A value on one line (an environment variable a script echoes).
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Masks the user information of every URL in `text`: `scheme://user:pass@`
/// becomes `scheme://user:***@`, and `scheme://token@` (a Discord or
/// Telegram style token) becomes `scheme://***@`.
///
/// The user info ends at the last `@` before the first `/` after `://`
/// (the URL's text ends at a space or a quote): a password written
/// unencoded may hold `?`, `#` or `@`, which a URL parser would take for
/// the end of the authority. When in doubt more is masked, never less; only
/// an unencoded `/` in a password cannot be told from a path.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let url_end = tail
            .find(|c: char| c.is_whitespace() || "\"'<>".contains(c))
            .unwrap_or(tail.len());
        let url = &tail[..url_end];
        let path_start = url.find('/').unwrap_or(url.len());
        rest = match url[..path_start].rfind('@') {
            Some(userinfo_end) => {
                match url[..userinfo_end].split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                }
                // From the '@' on: the host, the path, and any URL inside.
                &tail[userinfo_end..]
            }
            None => tail,
        };
    }
    out.push_str(rest);
    out
}

/// Hooks for tests: records every call with its context, fails on demand.
#[derive(Default)]
pub struct FakeHooks {
    calls: Mutex<Vec<(HookPoint, HookContext)>>,
    failing: Mutex<Vec<HookPoint>>,
    /// Points whose hook is stopped by a shutdown ([`HookError::Cancelled`]).
    cancelled: Mutex<Vec<HookPoint>>,
    /// Called at each run, before it returns: what the world looks like
    /// when the hook runs (a test captures the containers' state here).
    #[allow(clippy::type_complexity)]
    on_run: Option<Box<dyn Fn(HookPoint) + Send + Sync>>,
}

impl std::fmt::Debug for FakeHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHooks")
            .field("calls", &self.calls)
            .field("failing", &self.failing)
            .finish_non_exhaustive()
    }
}

impl FakeHooks {
    pub fn new() -> Self {
        Self::default()
    }

    /// `point` fails (exit status 3, "injected failure").
    pub fn failing(self, point: HookPoint) -> Self {
        if let Ok(mut failing) = self.failing.lock() {
            failing.push(point);
        }
        self
    }

    /// `point`'s hook is stopped by backupd's shutdown before it finishes.
    pub fn cancelled_at(self, point: HookPoint) -> Self {
        if let Ok(mut cancelled) = self.cancelled.lock() {
            cancelled.push(point);
        }
        self
    }

    pub fn on_run(mut self, look: impl Fn(HookPoint) + Send + Sync + 'static) -> Self {
        self.on_run = Some(Box::new(look));
        self
    }

    pub fn calls(&self) -> Vec<(HookPoint, HookContext)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn points(&self) -> Vec<HookPoint> {
        self.calls().into_iter().map(|(p, _)| p).collect()
    }
}

#[async_trait]
impl Hooks for FakeHooks {
    async fn run(
        &self,
        point: HookPoint,
        context: &HookContext,
        _cancel: &CancellationToken,
    ) -> Result<(), HookError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((point, context.clone()));
        }
        if let Some(look) = &self.on_run {
            look(point);
        }
        if self.cancelled.lock().is_ok_and(|c| c.contains(&point)) {
            return Err(HookError::Cancelled { hook: point });
        }
        let fails = self.failing.lock().is_ok_and(|f| f.contains(&point));
        if fails {
            return Err(HookError::Exited {
                hook: point,
                code: 3,
                last_line: Some("injected failure".into()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(point: HookPoint, command: &str) -> ShellHooks {
        let database = Database::parse(
            "postgresql://app:s3cret-pw@db.internal:5433/assess",
            "DATABASE_URL",
        )
        .unwrap();
        ShellHooks::new(
            &HookConfig::none()
                .with(point, Some(command))
                .with_timeout(Duration::from_secs(20)),
            &database,
        )
    }

    async fn run(
        hooks: &ShellHooks,
        point: HookPoint,
        context: &HookContext,
    ) -> Result<(), HookError> {
        hooks.run(point, context, &CancellationToken::new()).await
    }

    #[tokio::test]
    async fn a_hook_is_told_its_context_and_the_database_without_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let hooks = hooks(
            HookPoint::AfterBackup,
            &format!("env > '{}'", out.display()),
        );
        let context = HookContext {
            file: Some("/backups/app.sql.gz".into()),
            size: Some(42),
            sha256: Some("ab".repeat(32)),
            error: None,
            duration: Some(Duration::from_millis(1500)),
        };
        run(&hooks, HookPoint::AfterBackup, &context).await.unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        for expected in [
            "BACKUPD_EVENT=after-backup",
            "BACKUPD_FILE=/backups/app.sql.gz",
            "BACKUPD_SIZE_BYTES=42",
            "BACKUPD_DURATION_SECONDS=1.500",
            "BACKUPD_DATABASE_KIND=postgresql",
            "BACKUPD_DATABASE_NAME=assess",
            "BACKUPD_DATABASE_HOST=db.internal",
            "BACKUPD_DATABASE_PORT=5433",
            "BACKUPD_ERROR=\n",
        ] {
            assert!(env.contains(expected), "{expected} missing in {env}");
        }
        assert!(env.contains(&format!("BACKUPD_SHA256={}", "ab".repeat(32))));
        assert!(!env.contains("s3cret-pw"), "{env}");
        // Nothing but the allow-list and our own variables.
        for line in env.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                crate::process::is_inherited(std::ffi::OsStr::new(name))
                    || name.starts_with("BACKUPD_")
                    // The shell's own.
                    || ["PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn no_command_no_run() {
        let hooks = hooks(HookPoint::AfterBackup, "exit 1");
        run(&hooks, HookPoint::BeforeBackup, &HookContext::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failing_hook_is_named_with_its_status_and_last_line_masked() {
        let hooks = hooks(
            HookPoint::BeforeBackup,
            "echo starting; echo 'cannot reach postgresql://app:s3cret-pw@db/x' >&2; exit 3",
        );
        let err = run(&hooks, HookPoint::BeforeBackup, &HookContext::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOK_BEFORE_BACKUP exited with status 3: cannot reach postgresql://app:***@db/x"
        );
        assert_eq!(err.hook(), HookPoint::BeforeBackup);
        let quiet = hooks_quiet().await;
        assert_eq!(quiet, "HOOK_AFTER_RESTORE exited with status 1");
    }

    async fn hooks_quiet() -> String {
        let hooks = hooks(HookPoint::AfterRestore, "false");
        run(&hooks, HookPoint::AfterRestore, &HookContext::default())
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn a_hung_hook_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut hooks = hooks(
            HookPoint::BeforeRestore,
            &format!(
                "sleep 1000 & echo $! > '{}'; echo waiting; sleep 1000",
                pid_file.display()
            ),
        );
        hooks.config.timeout = Duration::from_secs(1);
        let err = run(&hooks, HookPoint::BeforeRestore, &HookContext::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOK_BEFORE_RESTORE was killed after HOOK_TIMEOUT_SECONDS=1: waiting"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            gone(pid).await,
            "the hook's background child {pid} lives on"
        );
    }

    #[tokio::test]
    async fn what_a_finished_hook_left_running_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let hooks = hooks(
            HookPoint::AfterBackup,
            &format!("sleep 1000 & echo $! > '{}'", pid_file.display()),
        );
        run(&hooks, HookPoint::AfterBackup, &HookContext::default())
            .await
            .unwrap();
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            gone(pid).await,
            "the hook's background child {pid} lives on"
        );
    }

    #[tokio::test]
    async fn a_cancelled_hook_is_stopped() {
        let hooks = hooks(HookPoint::AfterRestore, "sleep 1000");
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        });
        let err = hooks
            .run(HookPoint::AfterRestore, &HookContext::default(), &cancel)
            .await
            .unwrap_err();
        assert!(err.is_cancelled(), "{err}");
    }

    /// The process is gone or a zombie nobody reaped yet (its parent, the
    /// killed shell, is gone too, so init reaps it soon).
    async fn gone(pid: i32) -> bool {
        for _ in 0..50 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn output_is_bounded_and_invalid_utf8_is_read_past() {
        let hooks = hooks(
            HookPoint::AfterBackup,
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; printf 'bad \\377 byte\\n'; head -c 100000 /dev/zero | tr '\\0' x; echo; echo done >&2; exit 4",
        );
        let err = run(&hooks, HookPoint::AfterBackup, &HookContext::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOK_AFTER_BACKUP exited with status 4: done"
        );
    }

    #[test]
    fn userinfo_is_masked_in_every_url() {
        assert_eq!(
            mask_userinfo("a https://u:p@h/x and ntfy://tok@host/t, b smtp://me:pw@mail:587/?to=x"),
            "a https://u:***@h/x and ntfy://***@host/t, b smtp://me:***@mail:587/?to=x"
        );
        assert_eq!(mask_userinfo("no url here: a@b"), "no url here: a@b");
        assert_eq!(mask_userinfo("http://host/path@x"), "http://host/path@x");
    }

    #[test]
    fn a_password_holding_a_question_mark_hash_or_at_is_masked_whole() {
        for (line, masked) in [
            (
                "see https://bob:pa?ss@h.example/x",
                "see https://bob:***@h.example/x",
            ),
            (
                "see https://bob:pa#ss@h.example/x",
                "see https://bob:***@h.example/x",
            ),
            (
                "see https://bob:p@ss@h.example/x?to=a@b",
                "see https://bob:***@h.example/x?to=a@b",
            ),
            ("ntfy://t?o#k@en@host", "ntfy://***@host"),
            (
                "go to https://h.example/?next=https://u:p?w@other/x now",
                "go to https://h.example/?next=https://u:***@other/x now",
            ),
        ] {
            assert_eq!(mask_userinfo(line), masked, "{line}");
        }
        for secret in ["pa?ss", "pa#ss", "p@ss", "p?w", "ss"] {
            assert!(
                !mask_userinfo(&format!("x https://bob:{secret}@h/y")).contains(secret),
                "{secret}"
            );
        }
    }

    #[test]
    fn the_config_s_debug_names_the_hooks_set_never_their_commands() {
        let config = HookConfig::none()
            .with(
                HookPoint::BeforeBackup,
                Some("curl -fsS -u ops:pw-9f2 https://h/x"),
            )
            .with(HookPoint::AfterRestore, Some("psql -c 'fix'"));
        let shown = format!("{config:?}");
        assert_eq!(
            shown,
            r#"HookConfig { set: ["HOOK_BEFORE_BACKUP", "HOOK_AFTER_RESTORE"], timeout: 300s }"#
        );
        assert!(
            !shown.contains("pw-9f2") && !shown.contains("psql"),
            "{shown}"
        );
        let hooks = ShellHooks::new(
            &config,
            &Database::parse("sqlite:////tmp/app.db", "DATABASE_URL").unwrap(),
        );
        assert!(!format!("{hooks:?}").contains("pw-9f2"));
    }

    #[test]
    fn config_keeps_one_command_per_point() {
        let config = HookConfig::none()
            .with(HookPoint::AfterBackup, Some("a"))
            .with(HookPoint::AfterBackup, Some(" b "))
            .with(HookPoint::BeforeBackup, Some("  "));
        assert_eq!(config.command(HookPoint::AfterBackup), Some("b"));
        assert_eq!(config.command(HookPoint::BeforeBackup), None);
        assert!(!config.is_empty());
        assert!(HookConfig::none().is_empty());
    }

    #[tokio::test]
    async fn the_fake_records_and_fails_on_demand() {
        let fake = FakeHooks::new().failing(HookPoint::AfterRestore);
        let cancel = CancellationToken::new();
        fake.run(HookPoint::BeforeRestore, &HookContext::default(), &cancel)
            .await
            .unwrap();
        let err = fake
            .run(HookPoint::AfterRestore, &HookContext::default(), &cancel)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOK_AFTER_RESTORE exited with status 3: injected failure"
        );
        assert_eq!(
            fake.points(),
            [HookPoint::BeforeRestore, HookPoint::AfterRestore]
        );
    }
}
