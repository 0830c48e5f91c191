//! Values as they arrive from flags, the environment and secret files: the
//! cleaning every one gets, the clap parsers of the typed ones, and the one
//! rule for secrets given as `X` or as the file `X_FILE`.
//!
//! A leaf: `cli` (parsing) and `config` (validation) both use it, so it
//! imports nothing of the crate but the error type.

use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// Strips what env files add: surrounding whitespace, a trailing `\r`, and
/// one pair of matching quotes.
pub fn clean(raw: &str) -> String {
    let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c == '\r');
    let unquoted = match trimmed.as_bytes() {
        [first @ (b'"' | b'\''), .., last] if first == last && trimmed.len() >= 2 => {
            &trimmed[1..trimmed.len() - 1]
        }
        _ => trimmed,
    };
    unquoted
        .trim_matches(|c: char| c.is_whitespace() || c == '\r')
        .to_string()
}

/// The clap parser of every plain string setting.
pub fn clean_value(raw: &str) -> std::result::Result<String, String> {
    Ok(clean(raw))
}

/// A shell command (`HOOK_*`): trimmed, and unquoted only when one pair of
/// quotes wraps all of it (`"curl -fsS URL"` from an env file), never when
/// the command quotes its own words (`echo 'a' 'b'`).
pub fn shell_command(raw: &str) -> std::result::Result<String, String> {
    let trimmed = raw.trim_matches(|c: char| c.is_whitespace() || c == '\r');
    let wrapped = match trimmed.as_bytes() {
        [first @ (b'"' | b'\''), inner @ .., last] if first == last => !inner.contains(first),
        _ => false,
    };
    let command = if wrapped {
        &trimmed[1..trimmed.len() - 1]
    } else {
        trimmed
    };
    Ok(command.trim().to_string())
}

/// `BACKUP_RETENTION_DAYS`: non-digits are dropped as the old script did
/// (`2d` → 2); nothing left means the default of 2.
pub fn retention_days(raw: &str) -> std::result::Result<u32, String> {
    let digits: String = clean(raw).chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Ok(2);
    }
    digits
        .parse()
        .map_err(|_| format!("BACKUP_RETENTION_DAYS '{raw}' is too large"))
}

/// A parser for a whole number where an empty value (`VAR=` in an env file)
/// means the default, as `${VAR:-default}` did in the old scripts.
pub fn whole_number(
    variable: &'static str,
    default: u64,
) -> impl Fn(&str) -> std::result::Result<u64, String> + Clone + Send + Sync {
    move |raw| match clean(raw).as_str() {
        "" => Ok(default),
        value => value
            .parse()
            .map_err(|_| format!("{variable} must be a whole number, not '{value}'")),
    }
}

/// A whole number the operator may leave unset, where unset means what no
/// one number says (`RESTORE_STOP_WAIT_SECONDS`: a wait that depends on the
/// restore's order). An empty value is unset too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionalNumber(pub Option<u64>);

/// The parser of an [`OptionalNumber`]: empty is unset, else a whole number.
pub fn optional_whole_number(
    variable: &'static str,
) -> impl Fn(&str) -> std::result::Result<OptionalNumber, String> + Clone + Send + Sync {
    move |raw| match clean(raw).as_str() {
        "" => Ok(OptionalNumber(None)),
        value => value
            .parse()
            .map(|n| OptionalNumber(Some(n)))
            .map_err(|_| format!("{variable} must be a whole number, not '{value}'")),
    }
}

/// A yes/no setting: true/false, yes/no, on/off, 1/0; empty means the default.
pub fn boolean(
    variable: &'static str,
    default: bool,
) -> impl Fn(&str) -> std::result::Result<bool, String> + Clone + Send + Sync {
    move |raw| match clean(raw).to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("{variable} must be true or false, not '{other}'")),
    }
}

/// text or json
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `LOG_FORMAT`: `text` or `json`, any case; empty means text.
pub fn log_format(raw: &str) -> std::result::Result<LogFormat, String> {
    match clean(raw).to_ascii_lowercase().as_str() {
        "" | "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("LOG_FORMAT must be text or json, not '{other}'")),
    }
}

/// `BACKUP_COMPRESSION_LEVEL`: 0 to 9; empty means 6.
pub fn compression_level(raw: &str) -> std::result::Result<u32, String> {
    match clean(raw).as_str() {
        "" => Ok(6),
        value => match value.parse() {
            Ok(level) if level <= 9 => Ok(level),
            _ => Err(format!(
                "BACKUP_COMPRESSION_LEVEL must be a number from 0 to 9, not '{value}'"
            )),
        },
    }
}

/// Mode of backups, sidecars, temporary files, snapshots and downloads
/// unless `BACKUP_FILE_MODE` says otherwise.
pub const DEFAULT_FILE_MODE: u32 = 0o640;

/// `BACKUP_FILE_MODE`: octal (`0640`, `640`, `0o600`); no permission for
/// other users, and the owner (backupd) must be able to read and write.
pub fn file_mode(raw: &str) -> std::result::Result<u32, String> {
    let value = clean(raw);
    if value.is_empty() {
        return Ok(DEFAULT_FILE_MODE);
    }
    let digits = value.strip_prefix("0o").unwrap_or(&value);
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            format!("BACKUP_FILE_MODE must be an octal file mode such as 0640, not '{value}'")
        })?;
    if mode & 0o007 != 0 {
        return Err(format!(
            "BACKUP_FILE_MODE {value} lets every local user read or change the backups; \
             use 0640 or 0600"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "BACKUP_FILE_MODE {value} must let backupd (the owner) read and write its files \
             (0600 at least)"
        ));
    }
    Ok(mode)
}

/// A secret and where it came from (`NAME`, or `NAME_FILE (path)`), so a
/// message about a bad value can name its source without quoting it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: String,
}

impl Secret {
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn into_value(self) -> String {
        self.value
    }

    /// `NAME` or `NAME_FILE (path)`: never the value.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}: ***)", self.source)
    }
}

/// The secret `name`, given directly (`value`) or as a file (`file`, a Docker
/// secret). Empty counts as unset; a direct value wins over its file, with a
/// warning; a file that cannot be read or holds nothing stops start-up
/// rather than leaving the secret unset.
pub fn secret(name: &str, value: Option<&str>, file: Option<&str>) -> Result<Option<Secret>> {
    let value = value.filter(|v| !v.is_empty());
    let file = file.filter(|f| !f.is_empty());
    match (value, file) {
        (Some(value), file) => {
            if file.is_some() {
                tracing::warn!("both {name} and {name}_FILE are set; using {name}");
            }
            Ok(Some(Secret {
                value: value.to_string(),
                source: name.to_string(),
            }))
        }
        (None, Some(file)) => {
            let variable = format!("{name}_FILE");
            Ok(Some(Secret {
                value: read_secret_file(Path::new(file), &variable)?,
                source: format!("{variable} ({file})"),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// The cleaned content of the secret file `path`, named `variable` in errors.
fn read_secret_file(path: &Path, variable: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{variable}: cannot read {}: {e}", path.display())))?;
    let value = clean(&text);
    if value.is_empty() {
        return Err(Error::Config(format!(
            "{variable}: {} is empty",
            path.display()
        )));
    }
    Ok(value)
}

/// A size for people: `512 B`, `4.0 KiB`, `1.2 GiB` (binary units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_decorations_are_stripped() {
        assert_eq!(clean("\"postgresql://a\"\r"), "postgresql://a");
        assert_eq!(clean("'x'"), "x");
        assert_eq!(clean(" /backups\r\n"), "/backups");
        assert_eq!(clean("\"unbalanced"), "\"unbalanced");
        assert_eq!(clean("\""), "\"");
    }

    #[test]
    fn retention_days_keep_only_digits() {
        assert_eq!(retention_days("2d"), Ok(2));
        assert_eq!(retention_days("\"14\"\r"), Ok(14));
        assert_eq!(retention_days("0"), Ok(0));
        assert_eq!(retention_days(""), Ok(2));
    }

    #[test]
    fn compression_level_errors_name_the_variable() {
        assert_eq!(compression_level("9"), Ok(9));
        assert!(
            compression_level("12")
                .unwrap_err()
                .contains("BACKUP_COMPRESSION_LEVEL")
        );
    }

    #[test]
    fn whole_numbers_booleans_and_log_formats_default_when_empty() {
        let keep_min = whole_number("BACKUP_KEEP_MIN", 3);
        assert_eq!(keep_min("\"\""), Ok(3));
        assert_eq!(keep_min(" 7\r"), Ok(7));
        assert_eq!(
            keep_min("seven").unwrap_err(),
            "BACKUP_KEEP_MIN must be a whole number, not 'seven'"
        );
        let stop_wait = optional_whole_number("RESTORE_STOP_WAIT_SECONDS");
        assert_eq!(stop_wait(""), Ok(OptionalNumber(None)));
        assert_eq!(stop_wait("\"\""), Ok(OptionalNumber(None)));
        assert_eq!(stop_wait(" 0\r"), Ok(OptionalNumber(Some(0))));
        assert_eq!(
            stop_wait("5s").unwrap_err(),
            "RESTORE_STOP_WAIT_SECONDS must be a whole number, not '5s'"
        );
        let on_start = boolean("BACKUP_ON_START", true);
        assert_eq!(on_start(""), Ok(true));
        assert_eq!(on_start("'Off'"), Ok(false));
        assert_eq!(
            on_start("maybe").unwrap_err(),
            "BACKUP_ON_START must be true or false, not 'maybe'"
        );
        assert_eq!(log_format(""), Ok(LogFormat::Text));
        assert_eq!(log_format("JSON"), Ok(LogFormat::Json));
        assert!(log_format("xml").unwrap_err().contains("LOG_FORMAT"));
    }

    #[test]
    fn file_modes_are_octal_and_never_for_other_users() {
        assert_eq!(file_mode("0640"), Ok(0o640));
        assert_eq!(file_mode("600"), Ok(0o600));
        assert_eq!(file_mode("0o660"), Ok(0o660));
        assert_eq!(file_mode(""), Ok(DEFAULT_FILE_MODE));
        for bad in ["0644", "0606", "0641", "0440", "abc", "0999", "4640"] {
            let e = file_mode(bad).unwrap_err();
            assert!(e.contains("BACKUP_FILE_MODE"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_secret_comes_from_its_value_or_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "'from-file'\r\n").unwrap();
        let path = file.to_str().unwrap();

        let direct = secret("STATUS_TOKEN", Some("direct"), None)
            .unwrap()
            .unwrap();
        assert_eq!(direct.value(), "direct");
        assert_eq!(direct.source(), "STATUS_TOKEN");

        let from_file = secret("STATUS_TOKEN", None, Some(path)).unwrap().unwrap();
        assert_eq!(from_file.value(), "from-file");
        assert_eq!(from_file.source(), format!("STATUS_TOKEN_FILE ({path})"));

        let both = secret("STATUS_TOKEN", Some("direct"), Some(path))
            .unwrap()
            .unwrap();
        assert_eq!(both.value(), "direct", "the value wins over its file");
    }

    #[test]
    fn an_empty_secret_is_unset() {
        assert_eq!(secret("STATUS_TOKEN", None, None).unwrap(), None);
        assert_eq!(secret("STATUS_TOKEN", Some(""), Some("")).unwrap(), None);
    }

    #[test]
    fn an_empty_or_unreadable_secret_file_stops_start_up_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \"\" \r\n").unwrap();
        let err = secret("DATABASE_URL", None, Some(empty.to_str().unwrap())).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert_eq!(
            err.to_string(),
            format!("DATABASE_URL_FILE: {} is empty", empty.display())
        );

        let missing = dir.path().join("missing");
        let err = secret("DATABASE_URL", None, Some(missing.to_str().unwrap())).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Config(_)));
        assert!(
            message.starts_with(&format!(
                "DATABASE_URL_FILE: cannot read {}",
                missing.display()
            )),
            "{message}"
        );

        // A directory cannot be read as a file either.
        let err = secret("DATABASE_URL", None, Some(dir.path().to_str().unwrap())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("DATABASE_URL_FILE: cannot read")
        );
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let secret = secret("AWS_SECRET_ACCESS_KEY", Some("hunter2"), None)
            .unwrap()
            .unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY"), "{shown}");
    }
}
