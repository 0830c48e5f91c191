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
//! The server comes from the tests' kit, included by path: `s3.rs` and the
//! two kit modules it uses. The rest of the kit is not included: it names
//! the binary with `env!("CARGO_BIN_EXE_backupd")`, which Cargo sets for
//! integration tests only.

use std::io::Write;

// The tests use every item of these modules; this server only some.
#[allow(dead_code)]
#[path = "../tests/common/files.rs"]
mod files;
#[allow(dead_code)]
#[path = "../tests/common/prereq.rs"]
mod prereq;
#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;

fn main() -> std::process::ExitCode {
    let mut server = match s3::S3Server::try_start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("s3_test_server: could not start the S3-protocol server: {e}");
            return std::process::ExitCode::FAILURE;
        }
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
