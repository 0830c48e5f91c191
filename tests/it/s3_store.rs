//! The S3 store (`backupd::store::s3`) against a real S3-protocol server on
//! loopback (s3s-fs with signature checking, see tests/common/s3.rs):
//! single and multipart uploads, listing, checked downloads, deletion,
//! refused credentials, cancellation and a server that dies mid-upload.

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use backupd::Error;
use backupd::store::s3::{MIN_PART_SIZE, PARTS_IN_FLIGHT, S3Store, ServerSideEncryption, Uploaded};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use common::s3::{self as s3_server, S3Server};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------- heap counting

/// Counts the heap used by the threads marked `MEASURED` (the client's
/// runtime in the multipart test), leaving out the in-process server and
/// the other tests. A measurement to print, not to assert (see
/// docs/design.md: memory is measured, never asserted).
struct CountingAllocator;

static CURRENT: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static MEASURED: Cell<bool> = const { Cell::new(false) };
}

fn measured() -> bool {
    MEASURED.try_with(Cell::get).unwrap_or(false) && !s3_server::is_server_thread()
}

fn count(delta: i64) {
    let now = CURRENT.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && measured() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && measured() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if measured() {
            count(-(layout.size() as i64));
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && measured() {
            count(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Starts a new peak measurement; returns the baseline.
fn reset_peak() -> i64 {
    let now = CURRENT.load(Ordering::SeqCst);
    PEAK.store(now, Ordering::SeqCst);
    now
}

// ---------------------------------------------------------------- helpers

/// A file of `size` random (incompressible) bytes; returns its path and hex
/// SHA-256.
fn random_file(dir: &Path, name: &str, size: usize) -> (PathBuf, String) {
    let mut data = vec![0u8; size];
    getrandom::fill(&mut data).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(Sha256::digest(&data)))
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Writes `NAME.sha256` as the backup does (`sha256sum` format) and uploads it.
async fn upload_sidecar(store: &S3Store, dir: &Path, name: &str, sha256: &str) {
    let path = dir.join(format!("{name}.sha256"));
    std::fs::write(&path, format!("{sha256}  {name}\n")).unwrap();
    store
        .upload(&path, &format!("{name}.sha256"), &CancellationToken::new())
        .await
        .unwrap();
}

/// Waits (asynchronously) until the server received `n` parts.
async fn wait_for_parts(server: &S3Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.parts_received() < n {
        assert!(
            Instant::now() < deadline,
            "the server never received {n} parts (got {})",
            server.parts_received()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts nothing of a multipart upload is left, by the API and on the
/// server's disk.
async fn assert_no_incomplete_upload(server: &S3Server, store: &S3Store) {
    assert_eq!(store.incomplete_uploads().await.unwrap(), vec![]);
    assert_eq!(server.incomplete_uploads(), Vec::<(String, String)>::new());
    assert_eq!(server.part_files(), Vec::<String>::new());
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_goes_up_in_one_put_and_comes_back_checked() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("/prod//db").await;
    assert_eq!(store.describe(), "s3://backupd-test/prod/db/");
    let work = common::temp_dir();
    let name = "sqlite-20260101T000000Z.db.gz";
    let size = MIB + 3;
    let (path, sha256) = random_file(work.path(), name, size);
    let cancel = CancellationToken::new();

    let uploaded = store.upload(&path, name, &cancel).await.unwrap();
    assert_eq!(
        uploaded,
        Uploaded {
            key: format!("prod/db/{name}"),
            bytes: size as u64,
            parts: 1
        }
    );
    upload_sidecar(&store, work.path(), name, &sha256).await;
    let sidecar_len = 64 + 2 + name.len() + 1;
    assert_eq!(
        server.objects(),
        vec![
            (format!("prod/db/{name}"), size as u64),
            (format!("prod/db/{name}.sha256"), sidecar_len as u64),
        ]
    );

    let listed = store.list().await.unwrap();
    let names: Vec<(&str, &str, u64)> = listed
        .iter()
        .map(|o| (o.name.as_str(), o.key.as_str(), o.size))
        .collect();
    assert_eq!(
        names,
        vec![
            (name, uploaded.key.as_str(), size as u64),
            (
                &*format!("{name}.sha256"),
                &*format!("prod/db/{name}.sha256"),
                sidecar_len as u64
            ),
        ]
    );
    for object in &listed {
        let age = chrono::Utc::now() - object.last_modified.expect("a modification time");
        assert!(age.num_minutes().abs() < 10, "{object:?}");
    }

    let restore = work.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    let dest = restore.join(name);
    let got = store.download(&uploaded.key, &dest, &cancel).await.unwrap();
    assert!(got.checksum_verified, "{got:?}");
    assert_eq!(got.sha256, sha256);
    assert_eq!(got.bytes, size as u64);
    assert_eq!(sha256_file(&dest), sha256);
    assert_eq!(common::dir_names(&restore), vec![name.to_string()]);

    store.delete(name).await.unwrap();
    store.delete(&format!("{name}.sha256")).await.unwrap();
    // Deleting what is gone is not an error (retention may race a manual clean-up).
    store.delete(name).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![]);
    assert_eq!(server.objects(), vec![]);
    assert_eq!(server.trailer_requests(), 0);
}

#[test]
fn a_large_file_goes_up_in_checksummed_parts_within_bounded_memory() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let work = common::temp_dir();
    let name = "pg_dump-20260101T000000Z.sql.gz";
    let size = 64 * MIB + 12_345;
    let (path, sha256) = random_file(work.path(), name, size);
    let expected_parts = (size as u64).div_ceil(MIN_PART_SIZE) as usize;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| MEASURED.with(|m| m.set(true)))
        .enable_all()
        .build()
        .unwrap();
    MEASURED.with(|m| m.set(true));
    runtime.block_on(async {
        let store = server.store("prod").await;
        let baseline = reset_peak();
        let started = Instant::now();
        let uploaded = store
            .upload(&path, name, &CancellationToken::new())
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let peak = PEAK.load(Ordering::SeqCst) - baseline;
        eprintln!(
            "multipart upload of {:.1} MiB in {} parts of {} MiB ({} in flight): {:.2} s, \
             peak heap of the uploading threads {:.1} MiB (bound: {} MiB of part buffers)",
            size as f64 / MIB as f64,
            uploaded.parts,
            MIN_PART_SIZE as usize / MIB,
            PARTS_IN_FLIGHT,
            elapsed.as_secs_f64(),
            peak as f64 / MIB as f64,
            PARTS_IN_FLIGHT * MIN_PART_SIZE as usize / MIB,
        );
        assert_eq!(uploaded.parts, expected_parts);
        assert_eq!(uploaded.bytes, size as u64);
        assert_eq!(uploaded.key, format!("prod/{name}"));
        assert_eq!(server.parts_received(), expected_parts);
        assert_eq!(
            server.parts_with_checksum(),
            expected_parts,
            "every part carries x-amz-checksum-sha256"
        );
        assert_eq!(server.trailer_requests(), 0);
        assert_eq!(sha256_file(&server.object_path(&uploaded.key)), sha256);
        assert_no_incomplete_upload(&server, &store).await;

        // No sidecar: the download still works but says it is unchecked.
        let dest = work.path().join("restored.sql.gz");
        let got = store
            .download(&uploaded.key, &dest, &CancellationToken::new())
            .await
            .unwrap();
        assert!(!got.checksum_verified);
        assert_eq!(got.sha256, sha256);
        assert_eq!(sha256_file(&dest), sha256);
    });
    MEASURED.with(|m| m.set(false));
}

/// A backup's companion without a `.sha256` of its own (its manifest):
/// missing is `None`, and one larger than the bound is refused before
/// anything lands at the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_companion_download_is_optional_and_bounded() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("").await;
    let work = common::temp_dir();
    let name = "pg_dump-20260102T000000Z.sql.gz.manifest.json";
    let object = server.object_path(name);
    std::fs::write(&object, vec![b'x'; 4096]).unwrap();
    let restore = work.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    let dest = restore.join(name);
    let cancel = CancellationToken::new();

    let missing = store
        .download_if_present("no-such.manifest.json", &dest, 1 << 20, &cancel)
        .await
        .unwrap();
    assert!(missing.is_none());
    assert!(!dest.exists());

    let err = store
        .download_if_present(name, &dest, 4095, &cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than 4095 bytes"), "{err}");
    assert_eq!(common::dir_names(&restore), Vec::<String>::new());

    let got = store
        .download_if_present(name, &dest, 4096, &cancel)
        .await
        .unwrap()
        .expect("the object is there");
    assert_eq!(got.bytes, 4096);
    assert!(!got.checksum_verified);
    assert_eq!(std::fs::read(&dest).unwrap(), vec![b'x'; 4096]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_does_not_match_its_checksum_is_refused() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("").await;
    let work = common::temp_dir();
    let name = "pg_dump-20260102T000000Z.sql.gz";
    let (path, sha256) = random_file(work.path(), name, 2 * MIB);
    let cancel = CancellationToken::new();
    let key = store.upload(&path, name, &cancel).await.unwrap().key;
    upload_sidecar(&store, work.path(), name, &sha256).await;
    let restore = work.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    let dest = restore.join(name);
    let sidecar_file = server.object_path(&format!("{key}.sha256"));
    let good_sidecar = std::fs::read(&sidecar_file).unwrap();

    let refused = |what: &str, err: Error, expect: &str| {
        let text = err.to_string();
        eprintln!("{what}: {text}");
        assert!(matches!(err, Error::Storage { .. }), "{what}: {err:?}");
        assert!(text.contains(expect), "{what}: {text}");
        assert!(
            text.contains(&format!("s3://backupd-test/{key}")),
            "{what}: {text}"
        );
        assert!(!dest.exists(), "{what}: the destination was written");
        assert_eq!(common::dir_names(&restore), Vec::<String>::new(), "{what}");
    };

    // A sidecar with another checksum.
    std::fs::write(&sidecar_file, format!("{}  {name}\n", "0".repeat(64))).unwrap();
    let err = store.download(&key, &dest, &cancel).await.unwrap_err();
    refused("wrong checksum", err, "checksum mismatch");

    // A sidecar that is not one.
    std::fs::write(&sidecar_file, "garbage\n").unwrap();
    let err = store.download(&key, &dest, &cancel).await.unwrap_err();
    refused("garbage sidecar", err, "is not a sha256sum line");

    // The checksum of another file.
    std::fs::write(&sidecar_file, format!("{sha256}  other.sql.gz\n")).unwrap();
    let err = store.download(&key, &dest, &cancel).await.unwrap_err();
    refused("another file's sidecar", err, "checksum of `other.sql.gz`");

    // The right sidecar but a corrupted object (one byte flipped in place).
    std::fs::write(&sidecar_file, &good_sidecar).unwrap();
    let object = server.object_path(&key);
    let mut data = std::fs::read(&object).unwrap();
    data[MIB] ^= 0x55;
    std::fs::write(&object, &data).unwrap();
    let err = store.download(&key, &dest, &cancel).await.unwrap_err();
    refused("corrupted object", err, "checksum mismatch");

    // Put right again, it downloads.
    data[MIB] ^= 0x55;
    std::fs::write(&object, &data).unwrap();
    let got = store.download(&key, &dest, &cancel).await.unwrap();
    assert!(got.checksum_verified);

    // An object that does not exist.
    let err = store
        .download(
            "pg_dump-20990101T000000Z.sql.gz",
            &restore.join("x"),
            &cancel,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("NoSuchKey"), "{err}");
    assert!(
        err.contains("s3://backupd-test/pg_dump-20990101T000000Z.sql.gz"),
        "{err}"
    );
    assert!(!restore.join("x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_a_clear_error() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let work = common::temp_dir();
    let (path, _) = random_file(work.path(), "x.sql.gz", 1000);
    let cancel = CancellationToken::new();

    let wrong_secret = "wrong-secret-that-must-not-be-printed";
    let mut settings = server.settings("");
    settings.secret_access_key = Some(wrong_secret.into());
    let store = s3_server::connect(settings).await;
    for err in [
        store.upload(&path, "x.sql.gz", &cancel).await.unwrap_err(),
        store.list().await.unwrap_err(),
    ] {
        let text = err.to_string();
        eprintln!("{text}");
        assert!(text.contains("SignatureDoesNotMatch"), "{text}");
        assert!(text.contains("HTTP 403"), "{text}");
        assert!(text.contains("check AWS_SECRET_ACCESS_KEY"), "{text}");
        assert!(text.contains("s3://backupd-test/"), "{text}");
        assert!(!text.contains(wrong_secret) && !text.contains(s3_server::SECRET_KEY));
    }
    assert!(
        store
            .upload(&path, "x.sql.gz", &cancel)
            .await
            .unwrap_err()
            .to_string()
            .starts_with(&format!(
                "cannot upload {} to s3://backupd-test/x.sql.gz: ",
                path.display()
            ))
    );

    let mut settings = server.settings("");
    settings.access_key_id = Some("AKIAUNKNOWN".into());
    let store = s3_server::connect(settings).await;
    let text = store
        .upload(&path, "x.sql.gz", &cancel)
        .await
        .unwrap_err()
        .to_string();
    eprintln!("{text}");
    assert!(text.contains("check AWS_ACCESS_KEY_ID"), "{text}");
    assert!(!text.contains(s3_server::SECRET_KEY));
    assert_eq!(server.objects(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_multipart_upload_is_aborted_and_leaves_nothing() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.set_part_delay(Duration::from_millis(500));
    let store = server.store("prod").await;
    let work = common::temp_dir();
    let name = "pg_dump-20260103T000000Z.sql.gz";
    let (path, _) = random_file(work.path(), name, 48 * MIB);
    let cancel = CancellationToken::new();
    let upload = {
        let (store, path, cancel) = (store.clone(), path.clone(), cancel.clone());
        tokio::spawn(async move { store.upload(&path, name, &cancel).await })
    };
    wait_for_parts(&server, 2).await;
    cancel.cancel();
    let result = upload.await.unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    // Parts held in the server's delay when the upload was aborted arrive
    // later; they must find the upload gone.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_no_incomplete_upload(&server, &store).await;
    assert_eq!(server.objects(), vec![]);
    assert_eq!(store.list().await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_upload_gives_a_clear_error_and_no_orphan_parts() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    server.set_part_delay(Duration::from_millis(300));
    let store = server.store("prod").await;
    let work = common::temp_dir();
    let name = "pg_dump-20260104T000000Z.sql.gz";
    let (path, _) = random_file(work.path(), name, 40 * MIB);
    let upload = {
        let (store, path) = (store.clone(), path.clone());
        tokio::spawn(async move { store.upload(&path, name, &CancellationToken::new()).await })
    };
    wait_for_parts(&server, 1).await;
    tokio::task::block_in_place(|| server.stop());
    let started = Instant::now();
    let err = upload.await.unwrap().unwrap_err();
    let text = err.to_string();
    eprintln!(
        "after {:.1} s of retries: {text}",
        started.elapsed().as_secs_f64()
    );
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(
        text.contains(&format!("s3://backupd-test/prod/{name}")),
        "{text}"
    );
    assert!(text.contains("(part "), "{text}");
    // The network cause, not just "dispatch failure".
    assert!(
        ["refused", "closed", "reset", "connect"]
            .iter()
            .any(|w| text.to_lowercase().contains(w)),
        "{text}"
    );

    // The abort could not reach the server either, so the upload may still
    // be open once it is back; a later run's abort_stale_uploads removes it.
    tokio::task::block_in_place(|| server.restart());
    let left = store.incomplete_uploads().await.unwrap();
    eprintln!("incomplete after the restart: {left:?}");
    assert_eq!(left.len(), server.incomplete_uploads().len());
    assert!(left.len() <= 1, "{left:?}");
    assert!(left.iter().all(|u| u.key == format!("prod/{name}")));
    let aborted = store
        .abort_stale_uploads(Duration::ZERO, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(aborted, left);
    assert_no_incomplete_upload(&server, &store).await;
    assert_eq!(server.objects(), vec![]);

    // And the store works again.
    let (small, _) = random_file(work.path(), "small", 10);
    store
        .upload(&small, "small", &CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_incomplete_uploads_are_listed_and_aborted_young_ones_kept() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("prod").await;
    let client = raw_client(&server);
    let mut ids = Vec::new();
    for key in ["prod/a.sql.gz", "prod/b.sql.gz", "elsewhere/c.sql.gz"] {
        let created = client
            .create_multipart_upload()
            .bucket(server.bucket())
            .key(key)
            .send()
            .await
            .unwrap();
        ids.push((key.to_string(), created.upload_id().unwrap().to_string()));
    }
    let listed: Vec<(String, String)> = store
        .incomplete_uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.key, u.upload_id))
        .collect();
    let mut expected = ids[..2].to_vec();
    expected.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected, "only those under the prefix");

    // Younger than the limit: kept (could be another upload still running).
    let aborted = store
        .abort_stale_uploads(Duration::from_secs(3600), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(aborted, vec![]);
    assert_eq!(store.incomplete_uploads().await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let aborted = store
        .abort_stale_uploads(Duration::from_secs(1), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(aborted.len(), 2);
    assert_eq!(store.incomplete_uploads().await.unwrap(), vec![]);
    // The one outside the prefix is not this store's business.
    assert_eq!(
        server.incomplete_uploads(),
        vec![(ids[2].0.clone(), ids[2].1.clone())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_reads_every_page_and_skips_subfolders() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("prod").await;
    // Planted on the server's disk: more than one page (1000 keys).
    let mut expected = Vec::new();
    for i in 0..1005 {
        let name = format!("obj-{i:05}");
        let path = server.object_path(&format!("prod/{name}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, i.to_string()).unwrap();
        expected.push((name, i.to_string().len() as u64));
    }
    for other in ["prod/sub/deeper.sql.gz", "production.sql.gz", "other/x"] {
        let path = server.object_path(other);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "x").unwrap();
    }
    let listed: Vec<(String, u64)> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    assert_eq!(listed.len(), expected.len());
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_uploads_are_retried() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("").await;
    let work = common::temp_dir();
    let cancel = CancellationToken::new();

    let (small, sha_small) = random_file(work.path(), "small.sql.gz", 1000);
    server.fail_next_uploads(2);
    store.upload(&small, "small.sql.gz", &cancel).await.unwrap();
    assert_eq!(server.failures_sent(), 2);
    assert_eq!(sha256_file(&server.object_path("small.sql.gz")), sha_small);

    let (large, sha_large) = random_file(work.path(), "large.sql.gz", 20 * MIB);
    server.fail_next_uploads(1);
    let uploaded = store.upload(&large, "large.sql.gz", &cancel).await.unwrap();
    assert_eq!(uploaded.parts, 3);
    assert_eq!(server.failures_sent(), 3);
    assert_eq!(sha256_file(&server.object_path("large.sql.gz")), sha_large);
    assert_no_incomplete_upload(&server, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_send_no_trailing_checksums_even_with_the_sdk_defaults() {
    let Some(server) = S3Server::start() else {
        return;
    };
    // The server refuses aws-chunked trailers; with the SDK's default checksum
    // behaviour (as against AWS itself) our precomputed SHA-256 headers
    // still keep them off.
    let mut settings = server.settings("");
    settings.checksum_when_required = false;
    let store = s3_server::connect(settings).await;
    let work = common::temp_dir();
    let cancel = CancellationToken::new();
    for (name, size) in [("small", 1000), ("large", 17 * MIB)] {
        let (path, sha256) = random_file(work.path(), name, size);
        store.upload(&path, name, &cancel).await.unwrap();
        assert_eq!(sha256_file(&server.object_path(name)), sha256);
    }
    assert_eq!(server.trailer_requests(), 0);
    assert_eq!(server.parts_with_checksum(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_and_encryption_reach_every_write() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let mut settings = server.settings("");
    settings.storage_class = Some("standard".into()); // s3s-fs refuses the others
    settings.sse = ServerSideEncryption::parse("aws:kms", Some("alias/backups")).unwrap();
    let store = s3_server::connect(settings).await;
    let work = common::temp_dir();
    let cancel = CancellationToken::new();
    for (name, size) in [("small", 1000), ("large", 17 * MIB)] {
        let (path, _) = random_file(work.path(), name, size);
        store.upload(&path, name, &cancel).await.unwrap();
    }
    let seen = |op, key: &str, checksum: Option<&str>| s3_server::WriteSeen {
        op,
        key: key.to_string(),
        storage_class: Some("STANDARD".into()),
        sse: Some("aws:kms".into()),
        kms_key_id: Some("alias/backups".into()),
        checksum_algorithm: checksum.map(str::to_string),
    };
    assert_eq!(
        server.writes_seen(),
        vec![
            seen("PutObject", "small", None),
            seen("CreateMultipartUpload", "large", Some("SHA256")),
        ]
    );
}

/// A plain SDK client for the test server, to do what the store never does
/// (start an upload and leave it).
fn raw_client(server: &S3Server) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .region(aws_sdk_s3::config::Region::new(s3_server::REGION))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            s3_server::ACCESS_KEY,
            s3_server::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_passes_the_remote_store_conformance_suite() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.store("prod").await;
    let work = common::temp_dir();
    backupd::store::conformance::run(&store, work.path()).await;
    assert_eq!(server.objects(), vec![]);
}
