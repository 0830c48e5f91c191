//! Finding the manifest of a file about to be restored or drilled.
//!
//! Where a manifest may be: beside the file (`NAME.manifest.json`), or in
//! `BACKUP_DIR` under the same name, or, for a copy the app's restore page
//! decrypted from `NAME.enc`, under `NAME.enc.manifest.json` there. A
//! manifest found is believed only when it records the file's SHA-256 (the
//! stored file's, or the gzip inside an encrypted one): a manifest is as
//! untrusted as the folder it lies in, but it cannot name counts for a
//! file it was not written for. One that is missing, unreadable or of
//! another file means "no manifest", and the note says why.

use std::path::{Path, PathBuf};

use super::record::{MANIFEST_SUFFIX, Manifest, manifest_path};

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found {
        manifest: Box<Manifest>,
        path: PathBuf,
    },
    /// No usable manifest; the note says where it looked and why none
    /// was used (for the history entry and the log).
    NotFound { note: String },
}

impl Lookup {
    pub fn manifest(&self) -> Option<&Manifest> {
        match self {
            Lookup::Found { manifest, .. } => Some(manifest),
            Lookup::NotFound { .. } => None,
        }
    }
}

/// The places a manifest of `file` may be, in the order they are tried.
pub fn candidates(file: &Path, backup_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut places = vec![manifest_path(file)];
    if let (Some(dir), Some(name)) = (backup_dir, file.file_name()) {
        let name = name.to_string_lossy();
        places.push(dir.join(format!("{name}{MANIFEST_SUFFIX}")));
        if !name.ends_with(".enc") {
            places.push(dir.join(format!("{name}.enc{MANIFEST_SUFFIX}")));
        }
    }
    places.dedup();
    places
}

/// The manifest of `file`, whose SHA-256 as read by the check is `sha256`.
pub fn find(file: &Path, sha256: &str, backup_dir: Option<&Path>) -> Lookup {
    let mut reasons = Vec::new();
    let places = candidates(file, backup_dir);
    for path in &places {
        match Manifest::read(path) {
            Ok(Some(manifest)) if manifest.describes(sha256) => {
                return Lookup::Found {
                    manifest: Box::new(manifest),
                    path: path.clone(),
                };
            }
            Ok(Some(manifest)) => reasons.push(format!(
                "{} is the manifest of another file (sha256 {})",
                path.display(),
                manifest.file.sha256
            )),
            Ok(None) => {}
            Err(e) => reasons.push(e.to_string()),
        }
    }
    let looked: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    let mut note = format!("no manifest (looked for {})", looked.join(", "));
    if !reasons.is_empty() {
        note.push_str(": ");
        note.push_str(&reasons.join("; "));
    }
    Lookup::NotFound { note }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::record::{Digest, samples};

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_manifest_beside_the_file_is_found_by_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg_dump-20261201T030000Z.sql.gz");
        let manifest = samples::postgres("pg_dump-20261201T030000Z.sql.gz", SHA, &[("t", 1)]);
        std::fs::write(manifest_path(&file), manifest.to_json()).unwrap();
        let Lookup::Found {
            manifest: found,
            path,
        } = find(&file, SHA, None)
        else {
            panic!()
        };
        assert_eq!(*found, manifest);
        assert_eq!(path, manifest_path(&file));
    }

    #[test]
    fn a_decrypted_copy_finds_the_encrypted_backup_s_manifest_in_the_backup_dir() {
        let watch = tempfile::tempdir().unwrap();
        let backups = tempfile::tempdir().unwrap();
        let inner = "a".repeat(64);
        let mut manifest = samples::postgres("pg_dump-20261201T030000Z.sql.gz.enc", SHA, &[]);
        manifest.gzip = Some(Digest {
            size: 10,
            sha256: inner.clone(),
        });
        std::fs::write(
            backups
                .path()
                .join("pg_dump-20261201T030000Z.sql.gz.enc.manifest.json"),
            manifest.to_json(),
        )
        .unwrap();
        let dropped = watch.path().join("pg_dump-20261201T030000Z.sql.gz");
        assert!(matches!(
            find(&dropped, &inner, Some(backups.path())),
            Lookup::Found { .. }
        ));
    }

    #[test]
    fn a_manifest_of_another_file_is_not_used_and_the_note_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.sql.gz");
        let manifest = samples::postgres("b.sql.gz", SHA, &[]);
        std::fs::write(manifest_path(&file), manifest.to_json()).unwrap();
        let Lookup::NotFound { note } = find(&file, &"b".repeat(64), None) else {
            panic!()
        };
        assert!(note.contains("manifest of another file"), "{note}");
        assert!(note.starts_with("no manifest (looked for "), "{note}");
    }

    #[test]
    fn no_manifest_anywhere_names_the_places_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let backups = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.sql.gz");
        let Lookup::NotFound { note } = find(&file, SHA, Some(backups.path())) else {
            panic!()
        };
        assert!(note.contains("b.sql.gz.manifest.json"), "{note}");
        assert!(note.contains("b.sql.gz.enc.manifest.json"), "{note}");
    }
}
