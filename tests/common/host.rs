//! This machine as the tests see it: the effective user and system users,
//! free ports, child processes (run, signal, find in /proc) and polling.

use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

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
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A localhost TCP port that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
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

/// Runs a Python snippet with `args` (sys.argv[1..]) and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(script).args(args))
}
