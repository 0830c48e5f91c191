//! The one way backupd starts a child process.
//!
//! backupd's environment holds its secrets (the Fernet key, the database
//! URL, AWS keys and session tokens), and whatever a child inherits can be
//! read by anyone who may read `/proc/PID/environ` of that child, or leaks
//! into its core dumps and error reports. So [`command`] starts from an empty
//! environment and copies back only what programs need to run and format
//! their output: `PATH`, `HOME`, `LANG`, `LC_*`, `TZ`, `TMPDIR`. Everything
//! else a child needs (libpq's `PG*` variables, for instance) is set
//! explicitly by the caller.
//!
//! Every child also dies with backupd: `kill_on_drop` covers a dropped
//! future or task (shutdown, timeout), and `PR_SET_PDEATHSIG(SIGKILL)` covers
//! backupd itself being killed with SIGKILL (the OOM killer, `docker kill`),
//! where no destructor runs; without it a `pg_dump` waiting for a table lock
//! would outlive us and hold its connection.
//!
//! **Spawn only from async code** (a task or `block_on`), never from
//! `spawn_blocking` or a thread of our own. Linux sends the death signal when
//! the *thread* that forked the child exits, not the process. Tokio's worker
//! threads (and the `block_on` thread) live as long as the runtime, but a
//! blocking-pool thread exits after ten idle seconds, and would take the
//! child with it in the middle of its work. `tokio::process::Command::spawn`
//! forks on the calling thread, so an `async fn` that spawns is safe wherever
//! it is awaited from a task. For the same reason backupd never uses
//! `block_in_place` (it turns a worker into a blocking thread).
//!
//! What a child prints on stderr is kept by [`StderrLog`] (the first error
//! with its detail, and the last lines), read by [`capture_stderr`].

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;
use tokio::process::{ChildStderr, Command};

/// Closes backupd's own `/proc/PID` files (`environ`, `mem`, `fd`, …) to
/// every other process of its uid: a hook runs as that uid and could
/// otherwise read the database URL and the keys from `/proc/$PPID/environ`.
/// `PR_SET_DUMPABLE=0` makes those files root's (and turns off core dumps,
/// which would hold the same secrets). backupd still reads its own
/// `/proc/self/fd` and `/proc/self/status`; a child is dumpable again once
/// it executes its program, so its own `/proc` stays its own.
pub fn keep_own_proc_private() -> io::Result<()> {
    // SAFETY: a plain system call with integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Variables copied from our environment into every child's, when set.
pub const INHERITED_VARIABLES: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// True for a variable a child may inherit: one of [`INHERITED_VARIABLES`]
/// or a locale category (`LC_ALL`, `LC_CTYPE`, …).
pub fn is_inherited(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    INHERITED_VARIABLES.contains(&name) || name.starts_with("LC_")
}

/// A child process for `program`: empty environment plus the allow-list,
/// stdin closed, killed when dropped and when backupd dies. Spawn it from
/// async code only (see the module documentation).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        if is_inherited(&name) {
            cmd.env(name, value);
        }
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: it calls prctl(2) and getppid(2)
    // and builds an io::Error from a raw errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || die_with_parent(parent));
    }
    cmd
}

/// Asks the kernel to SIGKILL this (forked, not yet exec'd) process when its
/// parent thread exits; fails when the parent is already gone, since the
/// signal would then never come.
fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls with integer arguments.
    let set = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if set == -1 {
        return Err(io::Error::last_os_error());
    }
    // backupd may have died between fork and prctl: then we were already
    // re-parented and no signal will follow.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// How many of a child's last stderr lines a [`StderrLog`] keeps unless told.
pub const STDERR_TAIL: usize = 10;

/// What a child printed on stderr, each line as the caller cleaned it
/// (masked): the first error line with up to two `DETAIL:`/`HINT:` lines
/// after it, and the last few lines, so a message can say what went wrong
/// in one line while memory stays bounded however much the child prints.
#[derive(Debug)]
pub struct StderrLog {
    first_error: Option<String>,
    context: Vec<String>,
    after_error: bool,
    tail: VecDeque<String>,
    keep: usize,
}

impl Default for StderrLog {
    fn default() -> Self {
        StderrLog::keeping(STDERR_TAIL)
    }
}

impl StderrLog {
    /// A log that keeps the last `lines` lines.
    pub fn keeping(lines: usize) -> Self {
        StderrLog {
            first_error: None,
            context: Vec::new(),
            after_error: false,
            tail: VecDeque::with_capacity(lines),
            keep: lines,
        }
    }

    pub fn push(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let is_context = line.starts_with("DETAIL:") || line.starts_with("HINT:");
        if self.first_error.is_none() {
            if line.contains("ERROR:") || line.contains("FATAL:") || line.contains("error:") {
                self.first_error = Some(line.to_string());
                self.after_error = true;
            }
        } else if self.after_error && is_context && self.context.len() < 2 {
            self.context.push(line.to_string());
        } else if !line.starts_with("LINE ") && !line.ends_with('^') {
            self.after_error = false;
        }
        if self.keep == 0 {
            return;
        }
        if self.tail.len() == self.keep {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
    }

    /// The first error line, when there was one.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The last lines kept, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    /// Every line kept: the first error, its detail, the tail.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.first_error
            .iter()
            .chain(&self.context)
            .chain(&self.tail)
            .map(String::as_str)
    }

    /// The first error with its detail, or else the last lines.
    pub fn summary(&self) -> String {
        match &self.first_error {
            Some(first) => {
                let mut parts = vec![first.clone()];
                parts.extend(self.context.iter().cloned());
                parts.join(" ")
            }
            None if self.tail.is_empty() => "no error message".to_string(),
            None => self.tail.iter().cloned().collect::<Vec<_>>().join(" | "),
        }
    }
}

/// Reads a child's stderr to its end into a [`StderrLog`] keeping `keep`
/// lines. Lines are read as bytes, so invalid UTF-8 never stops the reading
/// (which would leave the child blocked on a full pipe). Each line goes
/// through `clean` first (mask secrets, log it); `None` leaves it out.
pub async fn capture_stderr(
    stderr: ChildStderr,
    keep: usize,
    mut clean: impl FnMut(&str) -> Option<String>,
) -> StderrLog {
    let mut log = StderrLog::keeping(keep);
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(line) = clean(String::from_utf8_lossy(&buf).trim_end()) {
            log.push(&line);
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_allow_list_is_inherited() {
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"] {
            assert!(is_inherited(OsStr::new(name)), "{name}");
        }
        for name in [
            "BACKUP_ENCRYPTION_KEY",
            "DATABASE_URL",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "PGPASSWORD",
            "PGPASSFILE",
            "LD_PRELOAD",
            "path",
        ] {
            assert!(!is_inherited(OsStr::new(name)), "{name}");
        }
    }

    #[tokio::test]
    async fn a_child_sees_nothing_of_our_environment_but_the_allow_list() {
        // The test process has plenty besides the allow-list (CARGO_*, RUST_*).
        assert!(std::env::vars_os().any(|(k, _)| !is_inherited(&k)));
        let out = command("env").output().await.expect("run env");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for line in text.lines() {
            let name = line.split('=').next().unwrap_or("");
            assert!(is_inherited(OsStr::new(name)), "the child inherited {name}");
        }
        assert!(text.contains("PATH="), "{text}");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // Blocking-pool threads go away almost at once, as they would
            // after ten idle seconds in backupd.
            .thread_keep_alive(Duration::from_millis(10))
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_child_outlives_the_task_that_spawned_it() {
        let rt = runtime();
        let mut child = rt
            .block_on(async {
                tokio::spawn(async { command("sh").args(["-c", "sleep 1; exit 3"]).spawn() })
                    .await
                    .unwrap()
            })
            .expect("spawn sh");
        // Give short-lived blocking threads every chance to exit meanwhile.
        rt.block_on(async {
            for _ in 0..5 {
                tokio::task::spawn_blocking(|| ()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let status = rt.block_on(child.wait()).unwrap();
        assert_eq!(status.code(), Some(3), "{status:?}");
    }

    #[test]
    fn stderr_summaries_name_the_first_error_with_its_detail() {
        let mut log = StderrLog::default();
        for line in [
            "NOTICE:  something",
            "psql:<stdin>:120: ERROR:  relation \"no_such_table\" does not exist",
            "LINE 1: SELECT * FROM no_such_table;",
            "                      ^",
            "DETAIL:  more",
            "psql:<stdin>:130: ERROR:  current transaction is aborted",
        ] {
            log.push(line);
        }
        assert_eq!(
            log.summary(),
            "psql:<stdin>:120: ERROR:  relation \"no_such_table\" does not exist DETAIL:  more"
        );
        assert!(log.lines().any(|l| l.contains("aborted")));
        let mut quiet = StderrLog::default();
        quiet.push("killed");
        assert_eq!(quiet.summary(), "killed");
    }

    #[tokio::test]
    async fn stderr_is_read_to_the_end_past_invalid_utf8_keeping_the_tail() {
        let mut child = command("sh")
            .args(["-c", "printf 'a\\377\\nsecret b\\n\\nc\\nd\\n' >&2"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stderr = child.stderr.take().unwrap();
        let log = capture_stderr(stderr, 3, |l| Some(l.replace("secret", "***"))).await;
        child.wait().await.unwrap();
        assert_eq!(log.tail().collect::<Vec<_>>(), ["*** b", "c", "d"]);
        assert_eq!(log.first_error(), None);
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        // Why spawning from spawn_blocking or an own thread is forbidden: the
        // death signal follows the forking thread.
        let rt = runtime();
        let handle = rt.handle().clone();
        let mut child = std::thread::spawn(move || {
            let _inside = handle.enter();
            command("sleep").arg("60").spawn().expect("spawn sleep")
        })
        .join()
        .unwrap();
        let status = rt.block_on(child.wait()).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
