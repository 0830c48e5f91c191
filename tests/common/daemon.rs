//! The daemon harness: backupd in the background, its output collected,
//! waited for, signalled, and killed on drop.

use std::io::Read;
use std::process::Child;
use std::time::Duration;

use super::binary::{Backupd, RunResult};
use super::host::{children_of, free_port, poll, send_signal};
use super::http::wait_for_http;

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
        if cfg.env_value("STATUS_BIND").is_none() {
            cfg = cfg.env("STATUS_BIND", "127.0.0.1");
        }
        let port = match cfg.env_value("STATUS_PORT") {
            Some(v) => v.parse().expect("STATUS_PORT set by the test is a port"),
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
