//! The shipped images, end to end on this machine's Docker engine, with no
//! registry: `docker/test/e2e.sh` builds a Debian base by debootstrap (kept
//! between runs), a PostgreSQL server image on it, and Dockerfile.backup's
//! runtime stage with this build's binary, tagged twice from the same
//! layers: the backup image (default command `backup`) and the db-restore
//! image (its `restore` target, default command `restore`). Then:
//!
//! 1. through docker/compose.backup.yml, db-backup backs up the PostgreSQL
//!    container (encrypted), the file is dropped into restore/incoming,
//!    db-restore stops the stand-in web container, restores, starts it
//!    again, and the data matches;
//! 2. through docker/test/compose.app.yml (a reconstruction of the app's own
//!    compose file: no `command:`, db-restore mounts only /restore) with only
//!    BACKUP_IMAGE and RESTORE_IMAGE changed, db-backup backs up, the app's
//!    manual backup stays listed in backup-status.json's `backups` after the
//!    next run, a backup the app drops into
//!    restore/incoming is restored by db-restore, and the safety copy is in
//!    restore/safety.

use crate::common;

use std::process::{Command, Stdio};

use common::{is_root, manifest_dir, require, which};

/// What the script needs that may be missing, or `None` when all is there.
fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("root (the bind-mounted folders are given to the image's uid 10001)".into());
    }
    for program in ["docker", "objcopy", "python3"] {
        if which(program).is_none() {
            return Some(format!("`{program}` on PATH"));
        }
    }
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    if !engine.is_ok_and(|out| out.status.success()) {
        return Some("a reachable Docker engine".into());
    }
    let compose_v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !compose_v2 && which("docker-compose").is_none() {
        return Some("Docker Compose (`docker compose` or `docker-compose`)".into());
    }
    let images_exist = Command::new("docker")
        .args(["image", "inspect", "backupd-test/debian:bookworm"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !images_exist && which("debootstrap").is_none() && which("apt-get").is_none() {
        return Some("debootstrap (to build the Debian base image)".into());
    }
    None
}

#[test]
fn db_backup_and_db_restore_round_trip_a_postgres_container_through_compose() {
    let missing = missing_prerequisite();
    if let Some(what) = &missing {
        eprintln!("image end-to-end test cannot run: {what}");
    }
    let Some(()) = require(
        "root, the Docker engine, Docker Compose, objcopy and debootstrap (docker/test/e2e.sh)",
        missing.is_none().then_some(()),
    ) else {
        return;
    };
    let script = manifest_dir().join("docker/test/e2e.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_backupd"))
        .stdin(Stdio::null())
        .output()
        .expect("run docker/test/e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The story of the run, visible with --nocapture and on failure.
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "docker/test/e2e.sh failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    assert!(stderr.contains("PASS"), "{stderr}");
}
