//! A [`RemoteStore`] in memory, for tests of what drives a bucket (the
//! offsite pass): objects by name, with ways to make a request fail and a
//! record of what was written and deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::store::remote::{Downloaded, RemoteObject, RemoteStore, Uploaded, parse_sidecar};

/// What to report as the time of a write; tests pass theirs.
const DEFAULT_TIME: DateTime<Utc> = DateTime::UNIX_EPOCH;

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, (Vec<u8>, DateTime<Utc>)>,
    failing_puts: BTreeSet<String>,
    failing_deletes: BTreeSet<String>,
    failing_lists: bool,
    puts: Vec<String>,
    deletes: Vec<String>,
}

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    time: DateTime<Utc>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::at(DEFAULT_TIME)
    }

    /// A store whose writes are dated `time`.
    pub fn at(time: DateTime<Utc>) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            time,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `data` as `name` without recording a put (what was there before).
    pub fn insert(&self, name: &str, data: impl Into<Vec<u8>>) {
        let time = self.time;
        self.state()
            .objects
            .insert(name.to_string(), (data.into(), time));
    }

    /// The names stored, sorted.
    pub fn names(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    pub fn object(&self, name: &str) -> Option<Vec<u8>> {
        self.state().objects.get(name).map(|(data, _)| data.clone())
    }

    /// Every put that succeeded, in order.
    pub fn puts(&self) -> Vec<String> {
        self.state().puts.clone()
    }

    /// Every delete that succeeded, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.state().deletes.clone()
    }

    /// Puts of `name` fail (as an unreachable server would, after retries).
    pub fn fail_puts_of(&self, name: &str) {
        self.state().failing_puts.insert(name.to_string());
    }

    pub fn fail_deletes_of(&self, name: &str) {
        self.state().failing_deletes.insert(name.to_string());
    }

    pub fn fail_lists(&self) {
        self.state().failing_lists = true;
    }

    fn refused(action: impl Into<String>, target: String) -> Error {
        Error::storage(action, target, "the test store refused the request")
    }
}

#[async_trait::async_trait]
impl RemoteStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".to_string()
    }

    fn location(&self, name: &str) -> String {
        format!("memory://{name}")
    }

    async fn list(&self) -> Result<Vec<RemoteObject>> {
        let state = self.state();
        if state.failing_lists {
            return Err(Self::refused("list", self.describe()));
        }
        Ok(state
            .objects
            .iter()
            .map(|(name, (data, time))| RemoteObject {
                name: name.clone(),
                key: name.clone(),
                size: data.len() as u64,
                last_modified: Some(*time),
            })
            .collect())
    }

    async fn put(&self, path: &Path, name: &str, cancel: &CancellationToken) -> Result<Uploaded> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.state().failing_puts.contains(name) {
            return Err(Self::refused(
                format!("upload {} to", path.display()),
                self.location(name),
            ));
        }
        let data = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let bytes = data.len() as u64;
        let mut state = self.state();
        state.objects.insert(name.to_string(), (data, self.time));
        state.puts.push(name.to_string());
        Ok(Uploaded {
            key: name.to_string(),
            bytes,
            parts: 1,
        })
    }

    async fn require_checksum(&self, name: &str) -> Result<String> {
        let sidecar = format!("{name}.sha256");
        let data = self.object(&sidecar).ok_or_else(|| {
            Error::storage(
                "restore",
                self.location(name),
                format!("there is no {sidecar} object beside it (refused)"),
            )
        })?;
        let object_name = name.rsplit('/').next().unwrap_or(name);
        parse_sidecar(&data, object_name)
            .map_err(|why| Error::storage("use the checksum", self.location(&sidecar), why))
    }

    async fn get_checked(
        &self,
        name: &str,
        dest: &Path,
        cancel: &CancellationToken,
    ) -> Result<Downloaded> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let expected = self.require_checksum(name).await?;
        let fail = |reason: String| {
            Error::storage(
                format!("download {} to", self.location(name)),
                dest.display().to_string(),
                reason,
            )
        };
        let data = self
            .object(name)
            .ok_or_else(|| fail("NoSuchKey: there is no such object".into()))?;
        let sha256 = hex::encode(Sha256::digest(&data));
        if sha256 != expected {
            return Err(fail(format!(
                "checksum mismatch: the object's SHA-256 is {sha256} but {name}.sha256 says \
                 {expected}; the download was discarded"
            )));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut temp = crate::files::temp_in(&dir)
            .map_err(|e| Error::io("create a temporary file in", &dir, e))?;
        std::io::Write::write_all(&mut temp, &data)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| Error::io("write", temp.path(), e))?;
        temp.persist(dest)
            .map_err(|e| Error::io("rename into place", dest, e.error))?;
        Ok(Downloaded {
            path: dest.to_path_buf(),
            bytes: data.len() as u64,
            sha256,
            checksum_verified: true,
        })
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let mut state = self.state();
        if state.failing_deletes.contains(name) {
            return Err(Self::refused("delete", self.location(name)));
        }
        state.objects.remove(name);
        state.deletes.push(name.to_string());
        Ok(())
    }

    async fn clean_up_stale_uploads(
        &self,
        _older_than: Duration,
        _now: DateTime<Utc>,
    ) -> Result<usize> {
        // Puts here are whole or nothing: no upload is ever left half done.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_passes_the_conformance_suite() {
        let scratch = tempfile::tempdir().unwrap();
        crate::store::conformance::run(&MemoryStore::new(), scratch.path()).await;
    }
}
