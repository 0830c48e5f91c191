//! Test doubles for the restore procedure's seams (the container engine is
//! `container::fake`): a database target that records whether the live database was
//! swapped, the state in memory (with writes that can be made to fail) and a
//! fixed clock. In-process and instant: no Docker, PostgreSQL or S3.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::restore::Recovered;
use crate::restore::check::CheckError;
use crate::restore::error::RestoreError;
use crate::restore::kind::FileKind;
use crate::restore::postgres::{Strategy, SwapRecord};
use crate::restore::state::{self, InProgress, RestoreState, StateStore};
use crate::restore::target::{Loaded, RestoreTarget};

pub struct FixedClock(pub DateTime<Utc>);

impl Default for FixedClock {
    fn default() -> Self {
        FixedClock(Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap())
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Where a [`FakeTarget`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    Check,
    SameApplication,
    SafetyBackup,
    Load,
    /// After the swap record was written, as a swap that rolled back.
    Swap,
}

pub const LIVE_OID: u32 = 100;
pub const STAGING_OID: u32 = 200;

/// A database whose live content is a word: `old` until a load swaps
/// `restored` in.
pub struct FakeTarget {
    pub fail: Option<FailAt>,
    pub exists: bool,
    pub live: Mutex<String>,
    /// What the server says the live name's oid is, for recovery.
    pub live_oid_now: Mutex<Option<u32>>,
    pub swaps: Mutex<u32>,
    pub recovered: Mutex<Vec<InProgress>>,
}

impl Default for FakeTarget {
    fn default() -> Self {
        FakeTarget {
            fail: None,
            exists: true,
            live: Mutex::new("old".into()),
            live_oid_now: Mutex::new(Some(LIVE_OID)),
            swaps: Mutex::new(0),
            recovered: Mutex::new(Vec::new()),
        }
    }
}

impl FakeTarget {
    pub fn failing(at: FailAt) -> Self {
        FakeTarget {
            fail: Some(at),
            ..FakeTarget::default()
        }
    }

    pub fn live(&self) -> String {
        self.live.lock().unwrap().clone()
    }

    pub fn swaps(&self) -> u32 {
        *self.swaps.lock().unwrap()
    }

    fn fails_at(&self, at: FailAt) -> bool {
        self.fail == Some(at)
    }
}

pub struct FakeChecked {
    pub sha256: String,
}

#[async_trait]
impl RestoreTarget for FakeTarget {
    type Checked = FakeChecked;

    fn describe(&self) -> String {
        "postgresql://app@db/app".into()
    }

    fn strategy(&self) -> Option<Strategy> {
        Some(Strategy::Staging)
    }

    async fn check(
        &self,
        _file: &Path,
        _kind: FileKind,
        _stamp: &str,
    ) -> std::result::Result<FakeChecked, RestoreError> {
        if self.fails_at(FailAt::Check) {
            return Err(
                CheckError::Read(std::io::Error::other("gzip: unexpected end of file")).into(),
            );
        }
        Ok(FakeChecked {
            sha256: "ab".repeat(32),
        })
    }

    fn sha256(checked: &FakeChecked) -> &str {
        &checked.sha256
    }

    fn size(_: &FakeChecked) -> u64 {
        6
    }

    async fn same_application(&self, _: &FakeChecked) -> std::result::Result<(), RestoreError> {
        if self.fails_at(FailAt::SameApplication) {
            return Err(CheckError::CompareTables(Error::Other("no server".into())).into());
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.exists)
    }

    async fn safety_backup(
        &self,
        _cancel: &CancellationToken,
        _clock: &dyn Clock,
    ) -> Result<PathBuf> {
        if self.fails_at(FailAt::SafetyBackup) {
            return Err(Error::database("postgresql://app@db/app", "pg_dump failed"));
        }
        Ok(PathBuf::from("/backups/pre-restore-app.dump.gz"))
    }

    async fn load(
        &self,
        _checked: FakeChecked,
        _stamp: &str,
        journal: &dyn StateStore,
        _cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError> {
        if self.fails_at(FailAt::Load) {
            return Err(RestoreError::Load(Error::database(
                "postgresql://app@db/app",
                "psql failed; the live database was not changed",
            )));
        }
        let record = SwapRecord {
            live_oid: Some(LIVE_OID),
            staging: "app_restore_x".into(),
            staging_oid: STAGING_OID,
            previous: "app_pre_restore_x".into(),
        };
        state::record_swap(journal, &record).map_err(RestoreError::Evidence)?;
        if self.fails_at(FailAt::Swap) {
            return Err(RestoreError::Load(Error::database(
                "postgresql://app@db/app",
                "the swap was rolled back; the live database was not changed",
            )));
        }
        *self.live.lock().unwrap() = "restored".into();
        *self.live_oid_now.lock().unwrap() = Some(STAGING_OID);
        *self.swaps.lock().unwrap() += 1;
        Ok(Loaded {
            previous: Some(record.previous),
        })
    }

    /// Decides by the recorded oids, as the PostgreSQL recovery does.
    async fn recover(&self, interrupted: &InProgress) -> Result<Recovered> {
        self.recovered.lock().unwrap().push(interrupted.clone());
        let now = *self.live_oid_now.lock().unwrap();
        Ok(match &interrupted.swap {
            Some(record) if now == Some(record.staging_oid) => {
                Recovered::Finished("the restore had finished".into())
            }
            _ => Recovered::NotRestored("the live database was not changed".into()),
        })
    }
}

/// The restore state in memory; `fail_when` makes a write fail.
#[derive(Default)]
pub struct MemoryState {
    pub state: Mutex<RestoreState>,
    #[allow(clippy::type_complexity)]
    pub fail_when: Option<Box<dyn Fn(&RestoreState, usize) -> bool + Send + Sync>>,
    pub writes: Mutex<usize>,
}

impl MemoryState {
    pub fn get(&self) -> RestoreState {
        self.state.lock().unwrap().clone()
    }
}

impl StateStore for MemoryState {
    fn read(&self) -> Result<RestoreState> {
        Ok(self.get())
    }

    fn write(&self, state: &RestoreState) -> Result<()> {
        let n = {
            let mut writes = self.writes.lock().unwrap();
            *writes += 1;
            *writes
        };
        if let Some(fail) = &self.fail_when
            && fail(state, n)
        {
            return Err(Error::Other("disk full".into()));
        }
        *self.state.lock().unwrap() = state.clone();
        Ok(())
    }
}
