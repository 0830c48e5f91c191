//! One suite every [`RemoteStore`] passes (restic's shape): the memory
//! store in a unit test, the S3 store in tests/s3_store.rs against a real
//! S3-protocol server. It panics on the first broken promise. The store
//! must start empty and is left empty.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::remote::RemoteStore;

const NAME: &str = "pg_dump-20260101T000000Z.sql.gz";

/// Runs the suite, writing its local files under `scratch`.
pub async fn run(store: &dyn RemoteStore, scratch: &Path) {
    let cancel = CancellationToken::new();
    let sidecar = format!("{NAME}.sha256");
    assert_eq!(listed(store).await, vec![], "the store must start empty");

    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sha256 = hex::encode(Sha256::digest(&data));
    let path = scratch.join(NAME);
    std::fs::write(&path, &data).unwrap();
    let sidecar_path = scratch.join(&sidecar);
    let sidecar_line = format!("{sha256}  {NAME}\n");
    std::fs::write(&sidecar_path, &sidecar_line).unwrap();

    let put = store.put(&path, NAME, &cancel).await.unwrap();
    assert_eq!(put.bytes, data.len() as u64);
    store.put(&sidecar_path, &sidecar, &cancel).await.unwrap();
    assert_eq!(
        listed(store).await,
        vec![
            (NAME.to_string(), data.len() as u64),
            (sidecar.clone(), sidecar_line.len() as u64),
        ],
        "list gives names and sizes, sorted"
    );
    assert!(
        store
            .list()
            .await
            .unwrap()
            .iter()
            .all(|o| o.last_modified.is_some()),
        "list gives times"
    );
    assert_eq!(store.require_checksum(NAME).await.unwrap(), sha256);

    let downloads = scratch.join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let dest = downloads.join(NAME);
    let got = store.get_checked(NAME, &dest, &cancel).await.unwrap();
    assert!(got.checksum_verified);
    assert_eq!(
        (got.bytes, got.sha256.as_str()),
        (data.len() as u64, &*sha256)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    std::fs::remove_file(&dest).unwrap();

    // A sidecar that does not match: nothing is written.
    std::fs::write(&sidecar_path, format!("{}  {NAME}\n", "0".repeat(64))).unwrap();
    store.put(&sidecar_path, &sidecar, &cancel).await.unwrap();
    let err = store.get_checked(NAME, &dest, &cancel).await.unwrap_err();
    assert!(matches!(err, Error::Storage { .. }), "{err:?}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(
        entries(&downloads),
        Vec::<String>::new(),
        "after a mismatch"
    );

    // No sidecar: refused, nothing written.
    store.delete(&sidecar).await.unwrap();
    for err in [
        store.require_checksum(NAME).await.unwrap_err(),
        store.get_checked(NAME, &dest, &cancel).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Storage { .. }), "{err:?}");
        assert!(err.to_string().contains(&sidecar), "{err}");
    }
    assert_eq!(
        entries(&downloads),
        Vec::<String>::new(),
        "without a sidecar"
    );

    store.delete(NAME).await.unwrap();
    store.delete(NAME).await.unwrap();
    assert_eq!(
        listed(store).await,
        vec![],
        "deleted, and deleting again is fine"
    );
}

async fn listed(store: &dyn RemoteStore) -> Vec<(String, u64)> {
    let mut objects: Vec<(String, u64)> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    assert!(objects.is_sorted(), "{objects:?}");
    objects.sort();
    objects
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
