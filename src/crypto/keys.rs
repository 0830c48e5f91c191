//! Where the Fernet keys come from, as the app's admin page and the old
//! helpers had it: `BACKUP_ENCRYPTION_KEY` (or `BACKUP_ENCRYPTION_KEY_FILE`,
//! which the configuration resolves into a ring before it gets here), else
//! the file `$BACKUP_DIR/.encryption_key`, which the admin page may write at
//! any time and is therefore read again before every backup. The restore
//! service also knows `<parent of the watch folder>/.encryption_key`.
//!
//! Every source is checked at start-up, so a bad key stops the service at
//! once instead of failing the first backup at night.

use std::io;
use std::path::{Path, PathBuf};

use crate::crypto::fernet::{Key, KeyRing};
use crate::error::{Error, Result};

/// The key file the admin page writes beside the backups.
pub const KEY_FILE_NAME: &str = ".encryption_key";

/// The key sources of one service.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// `BACKUP_ENCRYPTION_KEY` or its `_FILE`, fixed for the life of the process.
    configured: Option<KeyRing>,
    /// `$BACKUP_DIR/.encryption_key`: encrypts when nothing is configured.
    backup_dir_file: Option<PathBuf>,
    /// Further key files that only decrypt (the restore service's).
    decrypt_only_files: Vec<PathBuf>,
}

impl Keys {
    /// `configured` is the ring of `BACKUP_ENCRYPTION_KEY` (or its `_FILE`),
    /// already resolved and parsed by the configuration. Checks
    /// `backup_dir/.encryption_key` when it exists.
    pub fn new(configured: Option<KeyRing>, backup_dir: &Path) -> Result<Keys> {
        let keys = Keys {
            configured,
            backup_dir_file: Some(backup_dir.join(KEY_FILE_NAME)),
            decrypt_only_files: Vec::new(),
        };
        keys.check_files()?;
        Ok(keys)
    }

    /// Adds a key file used only to decrypt, checked now if it exists.
    pub fn with_decrypt_only_file(mut self, path: PathBuf) -> Result<Keys> {
        if !self.decrypt_only_files.contains(&path) && self.backup_dir_file.as_ref() != Some(&path)
        {
            match read_key_file(&path) {
                Err(KeyFileError::Invalid(reason)) => return Err(Error::Config(reason)),
                Err(KeyFileError::Unreadable(reason)) => tracing::error!(
                    "{reason}; files encrypted with its key cannot be restored until it is readable"
                ),
                Ok(_) => {}
            }
            self.decrypt_only_files.push(path);
        }
        Ok(self)
    }

    /// A malformed key file stops start-up; an unreadable one does not
    /// (the app writes it as root 0600): the problem is logged now, and
    /// every backup fails with it until it is fixed, so the daemon stays up,
    /// records the error and turns unhealthy instead of crash-looping.
    fn check_files(&self) -> Result<()> {
        for path in self.backup_dir_file.iter() {
            match read_key_file(path) {
                Ok(_) => {}
                Err(KeyFileError::Invalid(reason)) => return Err(Error::Config(reason)),
                Err(KeyFileError::Unreadable(reason)) => tracing::error!(
                    "{reason}; backupd keeps running, and every backup fails until the file is readable"
                ),
            }
        }
        Ok(())
    }

    /// The keys that encrypt a backup taken now (the first of the ring
    /// encrypts), or `None` when backups are not encrypted. The key file is
    /// read afresh; if it exists but is unreadable or invalid the backup
    /// must fail rather than be written in the clear.
    pub fn for_encryption(&self) -> Result<Option<KeyRing>> {
        if let Some(ring) = &self.configured {
            return Ok(Some(ring.clone()));
        }
        match &self.backup_dir_file {
            Some(path) => read_key_file(path).map_err(|e| match e {
                KeyFileError::Invalid(reason) => Error::Config(reason),
                // A run-time failure of this backup, not a usage error.
                KeyFileError::Unreadable(reason) => Error::Other(format!(
                    "{reason}; no backup is written unencrypted while it exists"
                )),
            }),
            None => Ok(None),
        }
    }

    /// Every key known now, to decrypt with; `None` when there is none.
    pub fn for_decryption(&self) -> std::result::Result<Option<KeyRing>, String> {
        let mut keys: Vec<Key> = Vec::new();
        let mut add = |ring: KeyRing| {
            for key in ring.keys() {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        };
        if let Some(ring) = &self.configured {
            add(ring.clone());
        }
        let mut unreadable = Vec::new();
        for path in self.backup_dir_file.iter().chain(&self.decrypt_only_files) {
            match read_key_file(path) {
                Ok(Some(ring)) => add(ring),
                Ok(None) => {}
                Err(KeyFileError::Invalid(reason)) => return Err(reason),
                Err(KeyFileError::Unreadable(reason)) => unreadable.push(reason),
            }
        }
        match KeyRing::new(keys) {
            Ok(ring) => {
                for reason in &unreadable {
                    tracing::warn!("{reason}; decrypting with the other keys");
                }
                Ok(Some(ring))
            }
            // The only key is out of reach: say so, not "no key configured".
            Err(_) if !unreadable.is_empty() => Err(unreadable.join("; ")),
            Err(_) => Ok(None),
        }
    }

    /// Where keys are looked for, for the message when none is found.
    pub fn sources(&self) -> String {
        let mut sources = vec!["BACKUP_ENCRYPTION_KEY".to_string()];
        sources.extend(
            self.backup_dir_file
                .iter()
                .chain(&self.decrypt_only_files)
                .map(|p| p.display().to_string()),
        );
        sources.join(", ")
    }
}

/// Why a key file gives no key.
#[derive(Debug)]
enum KeyFileError {
    /// It exists but backupd may not read it; the message says how to fix it.
    Unreadable(String),
    /// Its content is not a key (the message never quotes it).
    Invalid(String),
}

/// A key file's ring; `None` when the file does not exist or holds only
/// whitespace (which the app and the old helper read as "no key": backups
/// are then not encrypted, with a warning). Errors name the file and never
/// quote its content.
fn read_key_file(path: &Path) -> std::result::Result<Option<KeyRing>, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(
                file = %path.display(),
                "the key file is empty: no encryption key, backups are NOT encrypted"
            );
            Ok(None)
        }
        Ok(text) => KeyRing::parse(&text)
            .map(Some)
            .map_err(|e| KeyFileError::Invalid(format!("the key file {}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyFileError::Unreadable(unreadable_message(path, &e))),
    }
}

/// Names the file, its owner and mode, who backupd runs as, and the fix.
fn unreadable_message(path: &Path, e: &io::Error) -> String {
    let file = crate::files::owner_and_mode(path);
    let (uid, gid) = crate::files::running_as();
    // As the compose file mounts it (`./backups` → `/backups`).
    let name = path
        .iter()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<PathBuf>()
        .display()
        .to_string();
    format!(
        "cannot read the key file {} ({file}) as uid {uid} gid {gid}: {e}. Make it readable \
         by backupd on the host, e.g. `sudo chown {uid}:{gid} {name}` (or \
         `sudo chgrp {gid} {name} && sudo chmod 0640 {name}`); running \
         the service as `user: \"0:0\"` is not the fix",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_text() -> String {
        Key::generate().to_base64()
    }

    fn ring(text: &str) -> KeyRing {
        KeyRing::parse(text).unwrap()
    }

    #[test]
    fn nothing_configured_means_no_encryption() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(None, dir.path()).unwrap();
        assert!(keys.for_encryption().unwrap().is_none());
        assert!(keys.for_decryption().unwrap().is_none());
    }

    #[test]
    fn the_key_file_is_read_again_before_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(None, dir.path()).unwrap();
        let first = key_text();
        std::fs::write(dir.path().join(KEY_FILE_NAME), format!("\"{first}\"\r\n")).unwrap();
        let ring = keys.for_encryption().unwrap().unwrap();
        assert_eq!(ring.encrypting_key().to_base64(), first);
        let second = key_text();
        std::fs::write(dir.path().join(KEY_FILE_NAME), &second).unwrap();
        let ring = keys.for_encryption().unwrap().unwrap();
        assert_eq!(ring.encrypting_key().to_base64(), second);
    }

    #[test]
    fn a_configured_key_wins_and_every_source_decrypts() {
        let dir = tempfile::tempdir().unwrap();
        let (env_key, file_key, extra_key) = (key_text(), key_text(), key_text());
        std::fs::write(dir.path().join(KEY_FILE_NAME), &file_key).unwrap();
        let extra = dir.path().join("extra_key");
        std::fs::write(&extra, &extra_key).unwrap();
        let keys = Keys::new(Some(ring(&env_key)), dir.path())
            .unwrap()
            .with_decrypt_only_file(extra)
            .unwrap();
        let ring = keys.for_encryption().unwrap().unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert_eq!(ring.encrypting_key().to_base64(), env_key);
        let all: Vec<String> = keys
            .for_decryption()
            .unwrap()
            .unwrap()
            .keys()
            .iter()
            .map(Key::to_base64)
            .collect();
        assert_eq!(all, [env_key, file_key, extra_key]);
    }

    #[test]
    fn a_bad_key_file_fails_at_start_naming_the_file_not_the_key() {
        // A bad BACKUP_ENCRYPTION_KEY is config's test (it parses the ring).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE_NAME), "short").unwrap();
        let message = Keys::new(None, dir.path()).unwrap_err().to_string();
        assert!(message.contains(KEY_FILE_NAME), "{message}");
        assert!(!message.contains("short"), "{message}");
    }

    #[test]
    fn an_empty_key_file_means_no_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE_NAME), " \n\t\r\n").unwrap();
        let keys = Keys::new(None, dir.path()).unwrap();
        assert!(keys.for_encryption().unwrap().is_none());
        assert!(keys.for_decryption().unwrap().is_none());
    }

    #[test]
    fn a_key_file_spoiled_at_run_time_fails_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(None, dir.path()).unwrap();
        std::fs::write(dir.path().join(KEY_FILE_NAME), "garbage").unwrap();
        assert!(keys.for_encryption().is_err());
    }
}
