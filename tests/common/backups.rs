//! Backup files as the contract defines them: names, sidecars, the checks
//! the operator's own tools make (`gunzip -t`, `sha256sum -c`), and edits
//! of a plain dump for failure tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::files::{dir_names, sha256_file};
use super::host::run_ok;

/// Which kind of backup a file name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Postgres => "pg_dump-",
            Kind::Sqlite => "sqlite-",
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Kind::Postgres => ".sql.gz",
            Kind::Sqlite => ".db.gz",
        }
    }
    /// A backup name for the given UTC time (`pg_dump-YYYYMMDDTHHMMSSZ.sql.gz`).
    pub fn name_at(self, time: chrono::DateTime<chrono::Utc>) -> String {
        format!(
            "{}{}{}",
            self.prefix(),
            time.format("%Y%m%dT%H%M%SZ"),
            self.extension()
        )
    }
}

/// Parses a backup file name as the contract defines it:
/// `pg_dump-YYYYMMDDTHHMMSSZ[-N].sql.gz` or `sqlite-YYYYMMDDTHHMMSSZ[-N].db.gz`.
/// Returns the kind, the timestamp part and the same-second suffix.
pub fn parse_backup_name(name: &str) -> Option<(Kind, String, Option<u32>)> {
    // Encrypted backups carry the same name plus `.enc`.
    let name = name.strip_suffix(".enc").unwrap_or(name);
    for kind in [Kind::Postgres, Kind::Sqlite] {
        let Some(rest) = name
            .strip_prefix(kind.prefix())
            .and_then(|r| r.strip_suffix(kind.extension()))
        else {
            continue;
        };
        let (stamp, suffix) = match rest.split_once('-') {
            Some((stamp, n)) => {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (stamp, Some(n.parse().ok()?))
            }
            None => (rest, None),
        };
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
        return Some((kind, stamp.to_string(), suffix));
    }
    None
}

/// The files in `dir` whose names are backups (no sidecars, no hidden files).
pub fn backup_files(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| parse_backup_name(n).is_some())
        .collect()
}

/// Hidden work files backupd writes while a backup is in progress
/// (`.NAME.partial`, `.NAME.snapshot`).
pub fn work_files(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".partial") || n.ends_with(".snapshot"))
        .collect()
}

/// After a failed run: neither a backup under a final name (other than those
/// listed in `existing`, and their `.sha256` sidecars and manifests) nor a partial/work
/// file remains.
pub fn assert_no_new_backup(dir: &Path, existing: &[String]) {
    let names = dir_names(dir);
    let new: Vec<&String> = names
        .iter()
        .filter(|n| {
            let base = n
                .strip_suffix(".sha256")
                .or_else(|| n.strip_suffix(".manifest.json"))
                .unwrap_or(n);
            (n.starts_with("pg_dump-") || n.starts_with("sqlite-"))
                && !existing.iter().any(|e| e == base)
        })
        .collect();
    assert!(
        new.is_empty(),
        "a failed backup left files under final names in {}: {new:?} (all: {names:?})",
        dir.display()
    );
    let work = work_files(dir);
    assert!(
        work.is_empty(),
        "a failed backup left work files in {}: {work:?}",
        dir.display()
    );
}

/// Writes `NAME.sha256` next to `path` in sha256sum format.
pub fn write_sidecar(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy();
    let line = format!("{}  {}\n", sha256_file(path), name);
    fs::write(sidecar_path(path), line).unwrap();
}

pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// `gunzip -t FILE` succeeds.
pub fn assert_gunzip_t(path: &Path) {
    run_ok(Command::new("gunzip").arg("-t").arg(path));
}

/// `sha256sum -c NAME.sha256`, run inside the backup's directory, accepts it.
pub fn assert_sha256sum_c(backup: &Path) {
    let dir = backup.parent().unwrap();
    let side = sidecar_path(backup);
    let content = fs::read_to_string(&side)
        .unwrap_or_else(|e| panic!("read the sidecar {}: {e}", side.display()));
    let name = backup.file_name().unwrap().to_string_lossy();
    assert_eq!(
        content,
        format!("{}  {}\n", sha256_file(backup), name),
        "sidecar {} is not `<hex>  NAME\\n`",
        side.display()
    );
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg(side.file_name().unwrap())
            .current_dir(dir),
    );
}

/// A backup is sound: `gunzip -t` and `sha256sum -c` accept it.
pub fn assert_sound_backup(backup: &Path) {
    assert_gunzip_t(backup);
    assert_sha256sum_c(backup);
}

/// `sql` with `line` inserted before the middle `COPY … FROM stdin;` of a
/// plain dump (an error half way through the load), and the 1-based number
/// of the inserted line.
pub fn insert_in_middle(sql: &str, line: &str) -> (String, usize) {
    let lines: Vec<&str> = sql.lines().collect();
    let copies: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("COPY ") && l.ends_with(" FROM stdin;"))
        .map(|(i, _)| i)
        .collect();
    assert!(copies.len() >= 3, "the dump has too few COPY statements");
    let at = copies[copies.len() / 2];
    let mut out: Vec<&str> = lines[..at].to_vec();
    out.push(line);
    out.extend_from_slice(&lines[at..]);
    (out.join("\n") + "\n", at + 1)
}

/// A file that belongs to a backup beside it: its `.sha256` or its manifest.
pub fn is_companion(name: &str) -> bool {
    name.ends_with(".sha256") || name.ends_with(".manifest.json")
}
