//! Finding complete backup files in the restore folder.
//!
//! The truth always comes from a fresh sweep of the folder (recursive, never
//! following symlinks). notify events only wake the loop early: they do not
//! arrive through many bind mounts and network filesystems, so the folder is
//! also swept every poll interval. A regular file counts as complete only
//! once its size and mtime have been seen unchanged for the settle period,
//! because a file being copied looks complete to no watcher.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::Watcher as _;
use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::restore::kind::{self, FileKind};

/// A subfolder of the watch folder with this name is never looked into (the
/// failed folder may be configured inside the watch folder).
const FAILED_DIR: &str = "failed";
/// Subfolders deeper than this are not looked into.
const MAX_DEPTH: usize = 16;
/// After a notify event, wait this long so a burst of events (a file being
/// copied) costs one sweep.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);
/// Wake this long after the earliest settle deadline, so files dropped
/// together (within this margin) settle in the same sweep and come in one
/// batch. Never more than the settle period itself.
const COALESCE: Duration = Duration::from_millis(100);
/// The shortest poll interval used, whatever the configuration says.
const MIN_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The folder to watch (created at start when missing).
    pub dir: PathBuf,
    /// Sweep the folder at least this often (at least 50 ms).
    pub poll_interval: Duration,
    /// A file is complete once its size and mtime were unchanged this long.
    pub settle: Duration,
    /// Also wake on filesystem events (inotify); polling alone when false.
    pub use_notify: bool,
}

/// A file the watcher reports.
#[derive(Debug, Clone)]
pub enum Found {
    /// A regular file with a backup name whose size and mtime have settled.
    Ready(ReadyFile),
    /// Something with a backup name that must not be read: a symlink, a
    /// directory, a fifo, … (move it away; never follow it).
    Refused { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct ReadyFile {
    pub path: PathBuf,
    /// The file name alone (without the subfolder).
    pub name: String,
    pub size: u64,
    pub mtime: SystemTime,
    pub kind: FileKind,
}

/// True for names the watcher silently skips: dotfiles, `*.partial`,
/// `*.tmp`, a backup's companions (`*.manifest.json`, `*.sha256`: read
/// with their file, never restored, refused or moved on their own) and
/// anything [`kind::classify`] does not accept.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with(".partial")
        || name.ends_with(".tmp")
        || crate::manifest::is_manifest_name(name)
        || name.ends_with(".sha256")
        || kind::classify(name).is_none()
}

/// What identifies one version of a directory entry: any change restarts
/// the settle clock and allows it to be reported again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signature {
    size: u64,
    mtime: Option<SystemTime>,
    regular: bool,
}

#[derive(Debug, Clone)]
enum Class {
    Regular(FileKind),
    Refused(String),
}

/// One entry seen by a sweep.
#[derive(Debug)]
struct Observed {
    path: PathBuf,
    name: String,
    class: Class,
    signature: Signature,
    /// When its metadata was read.
    at: Instant,
}

#[derive(Debug, Default)]
struct Sweep {
    found: Vec<Observed>,
    ignored: Vec<PathBuf>,
    problems: Vec<(PathBuf, io::Error)>,
}

#[derive(Debug)]
struct Tracked {
    name: String,
    class: Class,
    signature: Signature,
    /// The first observation of the current signature.
    stable_since: Instant,
    /// The latest observation of the current signature.
    last_seen: Instant,
    reported: bool,
}

impl Tracked {
    /// When a pending regular file may become ready (after a sweep then).
    fn settle_deadline(&self, settle: Duration) -> Option<Instant> {
        match self.class {
            Class::Regular(_) if !self.reported => Some(self.stable_since + settle),
            _ => None,
        }
    }
}

/// The shortest time ready files are held back for others still settling.
const MAX_HOLD_FLOOR: Duration = Duration::from_secs(30);

/// Watches the restore folder; see the module documentation.
pub struct Watcher {
    cfg: WatchConfig,
    tracked: HashMap<PathBuf, Tracked>,
    /// Ignored names already logged (pruned to what the folder holds).
    ignored: HashSet<PathBuf>,
    /// Subfolders that could not be read, already warned about.
    problems: HashSet<PathBuf>,
    wake: Arc<Notify>,
    /// Kept alive for its events; `None` when polling only.
    events: Option<notify::RecommendedWatcher>,
    next_poll: Instant,
    /// The last sweep could not read the folder itself.
    sweep_failing: bool,
    sweeps: u64,
    /// Since when ready files have been held back for others still settling.
    holding_since: Option<Instant>,
}

impl Watcher {
    /// Starts notify (recursive) when `cfg.use_notify`, falling back to
    /// polling only (with a warning log) if notify cannot start. Does an
    /// initial sweep immediately.
    pub fn start(cfg: WatchConfig) -> Result<Self> {
        crate::files::create_dir_all(&cfg.dir)
            .map_err(|e| Error::io("create the restore watch folder", &cfg.dir, e))?;
        let cfg = WatchConfig {
            poll_interval: cfg.poll_interval.max(MIN_POLL),
            ..cfg
        };
        let wake = Arc::new(Notify::new());
        let events = if cfg.use_notify {
            start_events(&cfg.dir, &wake)
        } else {
            None
        };
        let mut watcher = Watcher {
            next_poll: Instant::now() + cfg.poll_interval,
            cfg,
            tracked: HashMap::new(),
            ignored: HashSet::new(),
            problems: HashSet::new(),
            wake,
            events,
            sweep_failing: false,
            sweeps: 0,
            holding_since: None,
        };
        let swept = sweep(&watcher.cfg.dir);
        watcher.apply(swept);
        Ok(watcher)
    }

    /// Waits until at least one file is ready (settled) or refused, then
    /// returns everything that is ready or refused at that moment; `None`
    /// when `cancel` fires. Wakes on notify events, on the poll interval and
    /// when a pending file's settle time elapses; every wake-up sweeps the
    /// folder afresh. Cancel-safe: dropping the future (e.g. in a timeout)
    /// loses nothing.
    pub async fn next_batch(&mut self, cancel: &CancellationToken) -> Option<Vec<Found>> {
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let dir = self.cfg.dir.clone();
            let swept = tokio::select! {
                _ = cancel.cancelled() => return None,
                swept = tokio::task::spawn_blocking(move || sweep(&dir)) => swept,
            };
            match swept {
                Ok(swept) => self.apply(swept),
                Err(e) => {
                    tracing::warn!(error = %e, "the restore folder sweep failed; retrying at the next tick");
                    self.next_poll = Instant::now() + self.cfg.poll_interval;
                }
            }
            let batch = self.collect();
            if !batch.is_empty() {
                return Some(batch);
            }
            let slack = self.cfg.settle.min(COALESCE);
            let settle = self.cfg.settle;
            let hold_ends = self
                .holding_since
                .map(|since| since + (settle * 6).max(MAX_HOLD_FLOOR));
            let deadline = self
                .tracked
                .values()
                // A file already settled but held back waits for the others'
                // deadlines, not its own (which has passed).
                .filter(|t| t.last_seen.duration_since(t.stable_since) < settle)
                .filter_map(|t| t.settle_deadline(settle))
                .map(|d| d + slack)
                .chain(hold_ends)
                .fold(self.next_poll, Instant::min);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = self.wake.notified() => {
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(EVENT_DEBOUNCE) => {}
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Forget a path (after the orchestrator moved or deleted it), so a new
    /// file dropped under the same name is reported again even with the same
    /// size and mtime. A path that is still there unchanged (moving it
    /// failed) stays reported, so it is not handed back in a loop; it is
    /// reported again once it changes. Forgetting a folder forgets what is
    /// under it.
    pub fn forget(&mut self, path: &Path) {
        let still_there = fs::symlink_metadata(path).ok().map(|m| signature(&m));
        match self.tracked.get(path) {
            Some(t) if still_there == Some(t.signature) && t.reported => {
                tracing::debug!(file = %path.display(), "not forgetting a file that is still there unchanged");
            }
            _ => self.tracked.retain(|p, _| !p.starts_with(path)),
        }
    }

    /// How many sweeps have run (for tests of the idle cost).
    #[doc(hidden)]
    pub fn sweep_count(&self) -> u64 {
        self.sweeps
    }

    /// Whether filesystem events are in use (false: polling only).
    pub fn uses_events(&self) -> bool {
        self.events.is_some()
    }

    /// Merges a sweep into the tracked state.
    fn apply(&mut self, swept: io::Result<Sweep>) {
        self.sweeps += 1;
        self.next_poll = Instant::now() + self.cfg.poll_interval;
        let swept = match swept {
            Ok(swept) => swept,
            Err(e) => {
                if !self.sweep_failing {
                    tracing::warn!(dir = %self.cfg.dir.display(), error = %e, "cannot read the restore watch folder; retrying every poll interval");
                } else {
                    tracing::debug!(dir = %self.cfg.dir.display(), error = %e, "the restore watch folder is still unreadable");
                }
                self.sweep_failing = true;
                return;
            }
        };
        if self.sweep_failing {
            self.sweep_failing = false;
            tracing::info!(dir = %self.cfg.dir.display(), "the restore watch folder is readable again");
            if self.cfg.use_notify {
                // The folder may have been recreated: watch the new one.
                self.events = None;
                self.events = start_events(&self.cfg.dir, &self.wake);
            }
        }

        let mut seen = HashSet::with_capacity(swept.found.len());
        for observed in swept.found {
            seen.insert(observed.path.clone());
            self.observe(observed);
        }
        self.tracked.retain(|path, t| {
            let keep = seen.contains(path);
            if !keep && !t.reported {
                tracing::debug!(file = %t.name, "file disappeared before it settled");
            }
            keep
        });

        let ignored: HashSet<PathBuf> = swept.ignored.into_iter().collect();
        for path in &ignored {
            if !self.ignored.contains(path) {
                tracing::debug!(file = %path.display(), "ignoring a file that is not a backup");
            }
        }
        self.ignored = ignored;

        let mut problems = HashSet::with_capacity(swept.problems.len());
        for (path, error) in swept.problems {
            if !self.problems.contains(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot read in the restore watch folder");
            }
            problems.insert(path);
        }
        self.problems = problems;
    }

    fn observe(&mut self, o: Observed) {
        match self.tracked.get_mut(&o.path) {
            Some(t) if t.signature == o.signature => t.last_seen = o.at,
            Some(t) => {
                let was_reported = t.reported;
                t.class = o.class;
                t.signature = o.signature;
                t.stable_since = o.at;
                t.last_seen = o.at;
                t.reported = false;
                if was_reported {
                    log_first_seen(&t.name, &o.path, &t.class);
                }
            }
            None => {
                log_first_seen(&o.name, &o.path, &o.class);
                self.tracked.insert(
                    o.path,
                    Tracked {
                        name: o.name,
                        class: o.class,
                        signature: o.signature,
                        stable_since: o.at,
                        last_seen: o.at,
                        reported: false,
                    },
                );
            }
        }
    }

    /// Everything ready or refused and not reported yet, marked reported.
    ///
    /// Ready files are held back while another accepted file is still
    /// settling, so files dropped together are chosen from together (the
    /// newest wins) even when a big one takes longer to copy; the hold is
    /// bounded so a file that never settles cannot block restores.
    fn collect(&mut self) -> Vec<Found> {
        let settle = self.cfg.settle;
        let still_settling = self.tracked.values().any(|t| {
            !t.reported
                && matches!(t.class, Class::Regular(_))
                && t.last_seen.duration_since(t.stable_since) < settle
        });
        let hold = if still_settling {
            let since = *self.holding_since.get_or_insert_with(Instant::now);
            since.elapsed() < (settle * 6).max(MAX_HOLD_FLOOR)
        } else {
            self.holding_since = None;
            false
        };
        let mut batch: Vec<Found> = Vec::new();
        for (path, t) in &mut self.tracked {
            if t.reported {
                continue;
            }
            if hold && matches!(t.class, Class::Regular(_)) {
                continue;
            }
            match &t.class {
                Class::Refused(reason) => {
                    tracing::warn!(file = %t.name, path = %path.display(), reason = %reason, "refusing a backup file");
                    batch.push(Found::Refused {
                        path: path.clone(),
                        reason: reason.clone(),
                    });
                }
                Class::Regular(kind) => {
                    if t.last_seen.duration_since(t.stable_since) < settle {
                        continue;
                    }
                    tracing::info!(file = %t.name, size = t.signature.size, "{} is ready", t.name);
                    batch.push(Found::Ready(ReadyFile {
                        path: path.clone(),
                        name: t.name.clone(),
                        size: t.signature.size,
                        mtime: t.signature.mtime.unwrap_or(SystemTime::UNIX_EPOCH),
                        kind: *kind,
                    }));
                }
            }
            t.reported = true;
        }
        batch.sort_by(|a, b| found_path(a).cmp(found_path(b)));
        batch
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.cfg.dir)
            .field("tracked", &self.tracked.len())
            .field("uses_events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

fn found_path(found: &Found) -> &Path {
    match found {
        Found::Ready(file) => &file.path,
        Found::Refused { path, .. } => path,
    }
}

fn log_first_seen(name: &str, path: &Path, class: &Class) {
    if let Class::Regular(_) = class {
        tracing::info!(file = %name, path = %path.display(), "waiting for {name} to settle");
    }
}

/// Starts recursive filesystem events that wake `wake`; `None` (with a
/// warning) when they cannot start.
fn start_events(dir: &Path, wake: &Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let wake = Arc::clone(wake);
    // Runs on notify's own thread: never block here.
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !wakes(&event.kind) => {}
        // An error may mean lost events: a sweep finds out.
        _ => wake.notify_one(),
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let started = notify::RecommendedWatcher::new(handler, config).and_then(|mut watcher| {
        watcher.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "filesystem events unavailable; polling only");
            None
        }
    }
}

/// Reads (opens, closes without writing) change nothing; our own sweeps and
/// the restore reading a file cause them, so they must not wake the loop.
fn wakes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn signature(meta: &fs::Metadata) -> Signature {
    Signature {
        size: meta.len(),
        mtime: meta.modified().ok(),
        regular: meta.file_type().is_file(),
    }
}

fn describe_type(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        return "symlink";
    }
    if ft.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "fifo";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
    }
    "special file"
}

/// Lists the folder recursively without following symlinks. Fails only when
/// the folder itself cannot be read.
fn sweep(root: &Path) -> io::Result<Sweep> {
    let mut out = Sweep::default();
    let mut folders = vec![(root.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = folders.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if depth == 0 => return Err(e),
            // Removed between listing and reading: nothing to report.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.problems.push((folder, e));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    out.problems.push((folder.clone(), e));
                    break;
                }
            };
            let path = entry.path();
            let Ok(name) = entry.file_name().into_string() else {
                out.ignored.push(path);
                continue;
            };
            // DirEntry::file_type does not follow symlinks.
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && (name.starts_with('.') || (depth == 0 && name == FAILED_DIR)) {
                continue;
            }
            let accepted = !is_ignored_name(&name);
            if is_dir && !accepted {
                if depth < MAX_DEPTH {
                    folders.push((path, depth + 1));
                }
                continue;
            }
            if !accepted {
                out.ignored.push(path);
                continue;
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.problems.push((path, e));
                    continue;
                }
            };
            let at = Instant::now();
            let file_type = meta.file_type();
            let class = match kind::classify(&name) {
                Some(kind) if file_type.is_file() => Class::Regular(kind),
                _ => Class::Refused(format!("not a regular file ({})", describe_type(file_type))),
            };
            out.found.push(Observed {
                path,
                name,
                class,
                signature: signature(&meta),
                at,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, settle: Duration, use_notify: bool) -> WatchConfig {
        WatchConfig {
            dir: dir.to_path_buf(),
            poll_interval: Duration::from_secs(60),
            settle,
            use_notify,
        }
    }

    #[test]
    fn ignored_names() {
        for name in [
            ".hidden.sql.gz",
            "x.sql.gz.partial",
            "x.sql.tmp",
            "notes.txt",
            ".sql",
            "x.gz",
            "a.sql.gz.manifest.json",
            "a.sql.gz.enc.manifest.json",
            "a.sql.gz.sha256",
        ] {
            assert!(is_ignored_name(name), "{name}");
        }
        for name in [
            "a.sql",
            "a.sql.gz",
            "a.dump.gz.enc",
            "my backup ü 2026.db.gz",
        ] {
            assert!(!is_ignored_name(name), "{name}");
        }
    }

    #[test]
    fn read_events_do_not_wake() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(!wakes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!wakes(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(wakes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(wakes(&EventKind::Create(CreateKind::File)));
        assert!(wakes(&EventKind::Modify(ModifyKind::Any)));
    }

    #[tokio::test]
    async fn idle_watcher_does_not_wake_itself() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let mut w = Watcher::start(config(dir.path(), Duration::from_millis(100), true)).unwrap();
        let cancel = CancellationToken::new();
        let child = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            child.cancel();
        });
        assert!(w.next_batch(&cancel).await.is_none());
        // The initial sweep, the first of next_batch, perhaps one more from
        // the events of creating the files above: never a loop.
        assert!(w.sweep_count() <= 3, "{} sweeps", w.sweep_count());
    }

    #[tokio::test]
    async fn forget_keeps_a_file_that_is_still_there() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.sql");
        fs::write(&file, b"select 1;").unwrap();
        let mut w = Watcher::start(config(dir.path(), Duration::ZERO, false)).unwrap();
        let cancel = CancellationToken::new();
        let batch = w.next_batch(&cancel).await.unwrap();
        assert_eq!(batch.len(), 1);
        // Moving it away failed: forgetting must not hand it back at once.
        w.forget(&file);
        let again = tokio::time::timeout(Duration::from_millis(300), w.next_batch(&cancel)).await;
        assert!(again.is_err(), "reported again: {again:?}");
        // Once it is gone, the same name dropped again is new.
        fs::remove_file(&file).unwrap();
        w.forget(&file);
        fs::write(&file, b"select 2;").unwrap();
        let batch = w.next_batch(&cancel).await.unwrap();
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn cancel_returns_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watcher::start(config(dir.path(), Duration::from_secs(1), false)).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(w.next_batch(&cancel).await.is_none());
    }
}
