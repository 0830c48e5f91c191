//! The restore folder watcher on real files: settling, batches, ignored
//! names, refused entries, subfolders, polling and notify.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backupd::restore::kind::Payload;
use backupd::watch::{Found, ReadyFile, WatchConfig, Watcher, is_ignored_name};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

fn config(dir: &Path, poll_ms: u64, settle_ms: u64, use_notify: bool) -> WatchConfig {
    WatchConfig {
        dir: dir.to_path_buf(),
        poll_interval: Duration::from_millis(poll_ms),
        settle: Duration::from_millis(settle_ms),
        use_notify,
    }
}

/// Collects batches until `done` holds for everything collected or `within`
/// has passed.
async fn gather(
    watcher: &mut Watcher,
    within: Duration,
    done: impl Fn(&[Found]) -> bool,
) -> Vec<Vec<Found>> {
    let cancel = CancellationToken::new();
    let deadline = Instant::now() + within;
    let mut batches: Vec<Vec<Found>> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, watcher.next_batch(&cancel)).await {
            Ok(Some(batch)) => {
                batches.push(batch);
                if done(&batches.concat()) {
                    return batches;
                }
            }
            Ok(None) | Err(_) => return batches,
        }
    }
}

fn path_of(found: &Found) -> &Path {
    match found {
        Found::Ready(file) => &file.path,
        Found::Refused { path, .. } => path,
    }
}

fn has(found: &[Found], path: &Path) -> bool {
    found.iter().any(|f| path_of(f) == path)
}

fn ready<'a>(found: &'a [Found], path: &Path) -> Option<&'a ReadyFile> {
    found.iter().find_map(|f| match f {
        Found::Ready(file) if file.path == path => Some(file),
        _ => None,
    })
}

fn refused<'a>(found: &'a [Found], path: &Path) -> Option<&'a str> {
    found.iter().find_map(|f| match f {
        Found::Refused { path: p, reason } if p == path => Some(reason.as_str()),
        _ => None,
    })
}

/// Nothing more is reported within `quiet`.
async fn assert_quiet(watcher: &mut Watcher, quiet: Duration) {
    let more = gather(watcher, quiet, |_| true).await;
    assert!(more.is_empty(), "reported again: {more:?}");
}

#[tokio::test]
async fn a_file_written_in_chunks_is_reported_once_after_the_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunked.sql.gz");
    let mut watcher = Watcher::start(config(dir.path(), 200, 1000, true)).unwrap();

    let writer_path = path.clone();
    let writer = tokio::spawn(async move {
        let mut file = fs::File::create(&writer_path).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        file.write_all(&chunk).unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            file.write_all(&chunk).unwrap();
        }
        file.flush().unwrap();
        let size = file.metadata().unwrap().len();
        (Instant::now(), size)
    });

    let batches = gather(&mut watcher, Duration::from_secs(9), |f| has(f, &path)).await;
    let reported_at = Instant::now();
    let (finished_at, final_size) = writer.await.unwrap();
    let found = batches.concat();
    let file = ready(&found, &path).expect("the chunked file is reported");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(reported_at > finished_at, "reported before the last chunk");
    assert_eq!(file.size, final_size);
    assert_eq!(file.size, 6 * 64 * 1024);
    assert_eq!(file.name, "chunked.sql.gz");
    assert_eq!(file.kind.payload, Payload::PlainSql);
    assert!(file.kind.gzip);
    assert_quiet(&mut watcher, Duration::from_millis(1300)).await;
}

#[tokio::test]
async fn files_dropped_together_come_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 500, true)).unwrap();
    let a = dir.path().join("a.dump");
    let b = dir.path().join("bb.db.gz");
    let empty = dir.path().join("empty.sql");
    fs::write(&a, b"PGDMP").unwrap();
    fs::write(&b, b"\x1f\x8b").unwrap();
    fs::write(&empty, b"").unwrap();

    let batches = gather(&mut watcher, Duration::from_secs(5), |_| true).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    let batch = &batches[0];
    assert_eq!(batch.len(), 3, "{batch:?}");
    assert_eq!(ready(batch, &a).unwrap().kind.payload, Payload::CustomDump);
    assert_eq!(ready(batch, &b).unwrap().kind.payload, Payload::Sqlite);
    // An empty file still settles; the orchestrator rejects it.
    assert_eq!(ready(batch, &empty).unwrap().size, 0);
}

#[tokio::test]
async fn ignored_names_are_never_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    for name in [
        ".hidden.sql.gz",
        "x.sql.gz.partial",
        "y.sql.tmp",
        "notes.txt",
        ".sql",
    ] {
        assert!(is_ignored_name(name), "{name}");
        fs::write(dir.path().join(name), b"data").unwrap();
    }
    let marker = dir.path().join("marker.sql");
    fs::write(&marker, b"select 1;").unwrap();

    let batches = gather(&mut watcher, Duration::from_millis(1500), |_| false).await;
    let found = batches.concat();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(ready(&found, &marker).is_some());
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret.sql.gz");
    fs::write(&target, b"do not touch").unwrap();
    let target_mtime = fs::metadata(&target).unwrap().modified().unwrap();

    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    let link = dir.path().join("evil.sql.gz");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let batches = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &link)).await;
    let found = batches.concat();
    assert_eq!(found.len(), 1, "{found:?}");
    let reason = refused(&found, &link).expect("the symlink is refused");
    assert_eq!(reason, "not a regular file (symlink)");

    // What the orchestrator does: rename moves the link, never the target.
    let failed = outside.path().join("failed-evil.sql.gz");
    fs::rename(&link, &failed).unwrap();
    watcher.forget(&link);
    assert!(
        fs::symlink_metadata(&failed)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&target).unwrap(), b"do not touch");
    assert_eq!(
        fs::metadata(&target).unwrap().modified().unwrap(),
        target_mtime
    );
    assert_quiet(&mut watcher, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_directory_with_a_backup_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    let folder = dir.path().join("x.sql");
    fs::create_dir(&folder).unwrap();
    // What is inside it is not looked at: the folder as a whole is refused.
    fs::write(folder.join("inner.sql"), b"select 1;").unwrap();

    let batches = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &folder)).await;
    let found = batches.concat();
    assert_eq!(
        refused(&found, &folder),
        Some("not a regular file (directory)")
    );
    assert_quiet(&mut watcher, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn subfolders_count_but_failed_and_hidden_folders_do_not() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["site/deeper", "failed", ".cache", "site/failed-ish"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    let nested = dir.path().join("site/deeper/app.db");
    let near_failed = dir.path().join("site/failed-ish/b.sql");
    fs::write(&nested, b"SQLite format 3\0").unwrap();
    fs::write(&near_failed, b"select 1;").unwrap();
    fs::write(dir.path().join("failed/old.sql.gz"), b"x").unwrap();
    fs::write(dir.path().join(".cache/c.sql"), b"x").unwrap();

    let batches = gather(&mut watcher, Duration::from_millis(1500), |_| false).await;
    let found = batches.concat();
    assert_eq!(found.len(), 2, "{found:?}");
    let file = ready(&found, &nested).expect("the nested file is found");
    assert_eq!(file.name, "app.db");
    assert_eq!(file.kind.payload, Payload::Sqlite);
    assert!(ready(&found, &near_failed).is_some());
}

#[tokio::test]
async fn polling_alone_finds_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, false)).unwrap();
    assert!(!watcher.uses_events());
    let path = dir.path().join("polled.sql");
    fs::write(&path, b"select 1;").unwrap();
    let batches = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &path)).await;
    assert!(ready(&batches.concat(), &path).is_some(), "{batches:?}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn notify_finds_a_new_file_without_waiting_for_the_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 60_000, 300, true)).unwrap();
    assert!(watcher.uses_events(), "inotify did not start");
    // Let the first sweeps of next_batch pass before the file arrives.
    let quiet = gather(&mut watcher, Duration::from_millis(300), |_| true).await;
    assert!(quiet.is_empty());
    fs::create_dir(dir.path().join("later")).unwrap();
    let path = dir.path().join("later/event.sql.gz");
    fs::write(&path, b"\x1f\x8b").unwrap();
    let batches = gather(&mut watcher, Duration::from_secs(10), |f| has(f, &path)).await;
    assert!(ready(&batches.concat(), &path).is_some(), "{batches:?}");
}

#[tokio::test]
async fn forget_and_the_same_name_dropped_again_is_reported_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    let path = dir.path().join("again.sql");
    fs::write(&path, b"select 1;").unwrap();
    let first = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &path)).await;
    let mtime = ready(&first.concat(), &path).expect("first drop").mtime;

    // Handled and deleted; the same bytes with the same mtime come back
    // before any sweep noticed the file was gone.
    fs::remove_file(&path).unwrap();
    watcher.forget(&path);
    fs::write(&path, b"select 1;").unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let second = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &path)).await;
    let found = second.concat();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(ready(&found, &path).unwrap().mtime, mtime);

    // Without forget, a changed file under the same name is new too.
    fs::write(&path, b"select 2; -- longer").unwrap();
    let third = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &path)).await;
    assert_eq!(ready(&third.concat(), &path).unwrap().size, 19);
    assert_quiet(&mut watcher, Duration::from_millis(600)).await;
}

#[tokio::test]
async fn names_with_spaces_and_unicode_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 300, true)).unwrap();
    let path: PathBuf = dir.path().join("my backup ü 2026.db.gz");
    fs::write(&path, b"\x1f\x8b").unwrap();
    let batches = gather(&mut watcher, Duration::from_secs(5), |f| has(f, &path)).await;
    let found = batches.concat();
    let file = ready(&found, &path).expect("found");
    assert_eq!(file.name, "my backup ü 2026.db.gz");
    assert_eq!(file.kind.payload, Payload::Sqlite);
}

#[tokio::test]
async fn a_missing_folder_is_created_and_cancel_stops_the_wait() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("restore/incoming");
    let mut watcher = Watcher::start(config(&dir, 200, 300, true)).unwrap();
    assert!(dir.is_dir());
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopper.cancel();
    });
    let result = timeout(Duration::from_secs(5), watcher.next_batch(&cancel)).await;
    assert!(matches!(result, Ok(None)), "{result:?}");
}

#[tokio::test]
async fn a_small_file_waits_for_a_big_one_still_being_copied_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut watcher = Watcher::start(config(dir.path(), 200, 1000, true)).unwrap();
    let small = dir.path().join("small.db.gz");
    let big = dir.path().join("big.db.gz");
    fs::write(&small, b"small").unwrap();
    let writer = {
        let big = big.clone();
        std::thread::spawn(move || {
            let mut file = fs::File::create(&big).unwrap();
            for _ in 0..6 {
                file.write_all(&[7u8; 4096]).unwrap();
                file.flush().unwrap();
                std::thread::sleep(Duration::from_millis(400));
            }
        })
    };
    let batches = gather(&mut watcher, Duration::from_secs(15), |found| {
        has(found, &small) && has(found, &big)
    })
    .await;
    writer.join().unwrap();
    assert_eq!(batches.len(), 1, "the two files came apart: {batches:?}");
    assert_eq!(ready(&batches[0], &big).map(|f| f.size), Some(6 * 4096));
    assert!(ready(&batches[0], &small).is_some());
}
