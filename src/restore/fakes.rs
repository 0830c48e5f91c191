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
use crate::restore::target::{Counts, Loaded, Order, RestoreTarget, SafetySource};

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
    /// Counting the staged copy's rows.
    Count,
    /// After the swap record was written, as a swap that rolled back.
    Swap,
}

pub const LIVE_OID: u32 = 100;
pub const STAGING_OID: u32 = 200;

/// A database whose live content is a word: `old` until a swap puts
/// `restored` in. Its staged copy holds `rows`.
pub struct FakeTarget {
    pub fail: Option<FailAt>,
    /// Load while the app runs (PostgreSQL staging) or stop first.
    pub order: Order,
    /// The staged copy's row counts.
    pub rows: Counts,
    /// The counts are known at check time (as SQLite's prepared copy).
    pub counts_at_check: bool,
    /// What was asked of the target, in order (`stage`, `swap`,
    /// `abandon`, `safety live`, `safety app_pre_restore_x`, `prune`).
    pub calls: Mutex<Vec<String>>,
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
            order: Order::LoadWhileRunning,
            rows: Counts::from([("public.users".to_string(), 3)]),
            counts_at_check: false,
            calls: Mutex::new(Vec::new()),
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

    pub fn ordered(order: Order) -> Self {
        FakeTarget {
            order,
            ..FakeTarget::default()
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, what: impl Into<String>) {
        self.calls.lock().unwrap().push(what.into());
    }

    fn fails_at(&self, at: FailAt) -> bool {
        self.fail == Some(at)
    }
}

pub struct FakeChecked {
    pub sha256: String,
}

/// The fake's staging database.
pub struct FakeStaged;

#[async_trait]
impl RestoreTarget for FakeTarget {
    type Checked = FakeChecked;
    type Staged = FakeStaged;

    fn describe(&self) -> String {
        "postgresql://app@db/app".into()
    }

    fn strategy(&self) -> Option<Strategy> {
        Some(match self.order {
            Order::LoadWhileRunning => Strategy::Staging,
            Order::StopFirst => Strategy::Inplace,
        })
    }

    fn order(&self) -> Order {
        self.order
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

    async fn checked_counts(
        &self,
        _: &FakeChecked,
    ) -> std::result::Result<Option<Counts>, RestoreError> {
        Ok(self.counts_at_check.then(|| self.rows.clone()))
    }

    async fn exists(&self) -> Result<bool> {
        Ok(self.exists)
    }

    async fn safety_backup(
        &self,
        source: SafetySource<'_>,
        _cancel: &CancellationToken,
        _clock: &dyn Clock,
    ) -> Result<PathBuf> {
        self.call(match source {
            SafetySource::Live => "safety live".to_string(),
            SafetySource::Previous(name) => format!("safety {name}"),
        });
        if self.fails_at(FailAt::SafetyBackup) {
            return Err(Error::database("postgresql://app@db/app", "pg_dump failed"));
        }
        Ok(PathBuf::from("/backups/pre-restore-app.dump.gz"))
    }

    async fn stage(
        &self,
        _checked: FakeChecked,
        _stamp: &str,
        _cancel: &CancellationToken,
    ) -> std::result::Result<FakeStaged, RestoreError> {
        self.call("stage");
        if self.fails_at(FailAt::Load) {
            return Err(RestoreError::Load(Error::database(
                "postgresql://app@db/app",
                "psql failed; the live database was not changed",
            )));
        }
        if self.order == Order::StopFirst {
            *self.live.lock().unwrap() = "restored".into();
        }
        Ok(FakeStaged)
    }

    async fn staged_counts(&self, _: &FakeStaged) -> std::result::Result<Counts, RestoreError> {
        self.call("count");
        if self.fails_at(FailAt::Count) {
            return Err(RestoreError::Counting(Error::Other("no server".into())));
        }
        Ok(self.rows.clone())
    }

    async fn abandon(&self, _: FakeStaged) -> String {
        self.call("abandon");
        match self.order {
            Order::LoadWhileRunning => {
                "the staging database \"app_restore_x\" was dropped and the live database was not changed".into()
            }
            Order::StopFirst => "the live database was ALREADY REPLACED".into(),
        }
    }

    async fn swap(
        &self,
        _staged: FakeStaged,
        _stamp: &str,
        journal: &dyn StateStore,
        _cancel: &CancellationToken,
    ) -> std::result::Result<Loaded, RestoreError> {
        self.call("swap");
        if self.order == Order::StopFirst {
            *self.swaps.lock().unwrap() += 1;
            return Ok(Loaded { previous: None });
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

    async fn prune(&self, keep_newest: bool) -> Vec<String> {
        self.call(if keep_newest {
            "prune keeping the newest"
        } else {
            "prune"
        });
        Vec::new()
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
