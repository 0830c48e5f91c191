//! Prerequisites and their loud skips: a test that lacks a program, a
//! server or a package says so on stderr and returns early, and under
//! `CI=true` it fails instead (a missing prerequisite never passes silently).
//! Self-contained: `examples/s3_test_server.rs` includes it by path.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

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
