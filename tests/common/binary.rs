//! The built `backupd` binary run to completion with a clean environment,
//! and what one run did ([`RunResult`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

    /// backupd for the database at `url`, backing up into `dir`.
    pub fn for_database(url: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Self {
        Backupd::new()
            .env("DATABASE_URL", url)
            .env("BACKUP_DIR", dir)
    }

    /// The value the test set last for `key`.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
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
