//! The integration tests' S3-protocol server (`tests/common/s3.rs`: s3s-fs
//! behind s3s, SigV4 checked against one access key, on 127.0.0.1 at a free
//! port) as a standalone process, for `bench/offsite.sh` and manual runs:
//!
//! ```sh
//! cargo run --release --example s3_test_server
//! ```
//!
//! On start-up it prints `KEY=VALUE` lines on stdout and flushes: the
//! environment a `backupd` process needs to upload there (`AWS_ENDPOINT_URL`,
//! `AWS_S3_BUCKET`, the credentials, `AWS_REGION`, `AWS_S3_FORCE_PATH_STYLE`),
//! then `S3_ROOT=<folder>`: object `KEY` of the bucket is the file
//! `$S3_ROOT/$AWS_S3_BUCKET/KEY`. The folder is a fresh temporary directory
//! under `$TMPDIR` (default `/tmp`). It then serves until stdin reaches EOF
//! (Ctrl-D, or a script closing the pipe), stops the server, removes the
//! folder and exits 0. Exit status 1 when the server cannot start.
//!
//! Only `s3.rs` is included. `tests/common/mod.rs` cannot be: it names the
//! binary with `env!("CARGO_BIN_EXE_backupd")`, which Cargo sets for
//! integration tests only, so an example including it does not compile. The
//! two helpers `s3.rs` takes from it are restated below.

use std::io::Write;

#[path = "../tests/common/s3.rs"]
mod s3_server;

/// What `s3.rs` uses of `tests/common/mod.rs`, with the same behaviour
/// minus the test-only parts (no CI panic, no test name in the message).
mod common {
    /// `found`, after a message on stderr when it is `None`.
    pub fn require<T>(what: &str, found: Option<T>) -> Option<T> {
        if found.is_none() {
            eprintln!("s3_test_server: could not start {what}");
        }
        found
    }

    /// A fresh temporary directory (removed on drop).
    pub fn temp_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("backupd-s3-")
            .tempdir()
            .expect("create a temporary directory")
    }
}

fn main() -> std::process::ExitCode {
    let Some(mut server) = s3_server::S3Server::start() else {
        return std::process::ExitCode::FAILURE;
    };
    let mut out = std::io::stdout().lock();
    for (key, value) in server.env() {
        let _ = writeln!(out, "{key}={value}");
    }
    let _ = writeln!(out, "S3_ROOT={}", server.root().display());
    let _ = out.flush();
    drop(out);

    // Serve until stdin ends; a read error counts as the end too.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    server.stop();
    std::process::ExitCode::SUCCESS
}
