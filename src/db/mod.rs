//! The database seam: which database the app uses, parsed from its
//! SQLAlchemy URL, and how each kind produces a backup stream.

pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use percent_encoding::percent_decode_str;

use crate::archive::{BackupFile, Contents};
use crate::error::{Error, Result};
use crate::manifest::DatabaseInfo;

/// A backup streamed into its file, not yet committed, and what the
/// source knows of the data (for the manifest).
pub struct Dumped {
    pub file: BackupFile,
    pub database: DatabaseInfo,
    pub server_version: Option<String>,
    pub pg_dump_version: Option<String>,
    /// Every table's row count; `None` when they could not be counted
    /// (the backup stands, without a manifest).
    pub tables: Option<BTreeMap<String, u64>>,
}

impl Dumped {
    /// The file, and the contents of its manifest (when there are counts).
    pub fn into_parts(
        self,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> (BackupFile, Option<Contents>) {
        let contents = self.tables.map(|tables| Contents {
            database: self.database,
            server_version: self.server_version,
            pg_dump_version: self.pg_dump_version,
            started_at,
            finished_at,
            tables,
        });
        (self.file, contents)
    }
}

/// The app's database, as named by `SQLALCHEMY_DATABASE_URI`/`DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Postgres(PgTarget),
    Sqlite(SqliteTarget),
}

impl Database {
    /// The value of the status file's `database` key.
    pub fn kind(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgresql",
            Database::Sqlite(_) => "sqlite",
        }
    }

    /// Parses a SQLAlchemy URL. `source` names the variable it came from.
    pub fn parse(url: &str, source: &str) -> Result<Self> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        let base_scheme = scheme.split('+').next().unwrap_or("").to_ascii_lowercase();
        match base_scheme.as_str() {
            "postgresql" | "postgres" => PgTarget::parse(url, source).map(Database::Postgres),
            "sqlite" => SqliteTarget::parse(url, source).map(Database::Sqlite),
            "" => Err(Error::Config(format!(
                "{source} is not a database URL (expected postgresql://… or sqlite:///…): {}",
                mask_unparsed(url)
            ))),
            _ => Err(Error::Config(format!(
                "{source} uses the unsupported scheme '{scheme}'; backupd supports postgresql (postgresql://, postgresql+psycopg://, postgresql+psycopg2://, postgres://) and sqlite (sqlite:///relative.db, sqlite:////absolute.db)"
            ))),
        }
    }
}

/// Debug never shows the password.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Postgres(pg) => fmt::Display::fmt(pg, f),
            Database::Sqlite(sqlite) => write!(f, "sqlite:{}", sqlite.path.display()),
        }
    }
}

/// A PostgreSQL connection, kept as libpq environment variables so nothing
/// secret is ever placed on a child's command line.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    /// Query parameters mapped to their libpq environment variable.
    pub options: Vec<(&'static str, String)>,
}

/// URL query parameters that libpq also reads from the environment.
const LIBPQ_PARAMS: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("gssencmode", "PGGSSENCMODE"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("service", "PGSERVICE"),
    ("passfile", "PGPASSFILE"),
];

impl PgTarget {
    fn parse(raw: &str, source: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::Config(format!(
                "{source} is not a valid PostgreSQL URL ({why}): {}",
                mask_unparsed(raw)
            ))
        };
        let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let mut target = PgTarget {
            host: match url.host() {
                Some(url::Host::Ipv6(addr)) => Some(addr.to_string()),
                Some(host) => Some(decode(&host.to_string())).filter(|h| !h.is_empty()),
                None => None,
            },
            port: url.port(),
            user: Some(decode(url.username())).filter(|u| !u.is_empty()),
            password: url.password().map(decode),
            dbname: Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty()),
            options: Vec::new(),
        };
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "host" => target.host = Some(value.into_owned()),
                "port" => {
                    target.port = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("the port is not a number"))?,
                    )
                }
                "user" => target.user = Some(value.into_owned()),
                "password" => target.password = Some(value.into_owned()),
                "dbname" => target.dbname = Some(value.into_owned()),
                other => match LIBPQ_PARAMS.iter().find(|(name, _)| *name == other) {
                    Some((_, var)) => target.options.push((var, value.into_owned())),
                    None => tracing::warn!(
                        parameter = other,
                        "ignoring a database URL parameter that pg_dump does not understand"
                    ),
                },
            }
        }
        Ok(target)
    }

    /// The libpq environment for child processes. The password is not part
    /// of it: it travels in a private password file (`PGPASSFILE`, see
    /// `db::postgres::Passfile`), never in an environment others can read.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(host) = &self.host {
            env.push(("PGHOST", host.clone()));
        }
        if let Some(port) = self.port {
            env.push(("PGPORT", port.to_string()));
        }
        if let Some(user) = &self.user {
            env.push(("PGUSER", user.clone()));
        }
        if let Some(dbname) = &self.dbname {
            env.push(("PGDATABASE", dbname.clone()));
        }
        env.extend(self.options.iter().cloned());
        if !env.iter().any(|(k, _)| *k == "PGCONNECT_TIMEOUT") {
            // An unreachable server should fail the run, not hang it.
            env.push(("PGCONNECT_TIMEOUT", "10".into()));
        }
        if !env.iter().any(|(k, _)| *k == "PGAPPNAME") {
            env.push(("PGAPPNAME", "backupd".into()));
        }
        env
    }

    /// Replaces the password wherever it appears in `text` (pg_dump's stderr).
    pub fn mask(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgresql://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        match &self.host {
            Some(h) if h.contains(':') && !h.starts_with('/') => write!(f, "[{h}]")?,
            Some(h) if !h.starts_with('/') => write!(f, "{h}")?,
            _ => {}
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "/{}", self.dbname.as_deref().unwrap_or(""))?;
        if let Some(h) = self.host.as_ref().filter(|h| h.starts_with('/')) {
            write!(f, "?host={h}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A SQLite database file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteTarget {
    pub path: PathBuf,
}

impl SqliteTarget {
    fn parse(raw: &str, source: &str) -> Result<Self> {
        let rest = raw.split_once("://").map(|(_, r)| r).unwrap_or("");
        let rest = rest.split('?').next().unwrap_or("");
        // sqlite:///relative.db keeps one slash as the separator; a fourth slash
        // makes the path absolute, exactly as SQLAlchemy reads it.
        let path = rest.strip_prefix('/').unwrap_or("");
        if path.is_empty() || path == ":memory:" {
            return Err(Error::Config(format!(
                "{source} names no SQLite database file ({raw}); use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )));
        }
        let path = percent_decode_str(path).decode_utf8_lossy().into_owned();
        Ok(SqliteTarget {
            path: PathBuf::from(path),
        })
    }
}

/// Masks `user:password@` in a string that did not parse as a URL.
pub fn mask_unparsed(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            let creds = &raw[start + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &raw[..start + 3], user, &raw[at..]),
                None => raw.to_string(),
            }
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> PgTarget {
        match Database::parse(url, "DATABASE_URL").unwrap() {
            Database::Postgres(pg) => pg,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn sqlalchemy_postgres_urls_become_libpq_settings() {
        for scheme in [
            "postgresql+psycopg",
            "postgresql+psycopg2",
            "postgresql",
            "postgres",
        ] {
            let target = pg(&format!(
                "{scheme}://app:s%40cret@db.internal:5433/assess?sslmode=require"
            ));
            assert_eq!(target.host.as_deref(), Some("db.internal"));
            assert_eq!(target.port, Some(5433));
            assert_eq!(target.user.as_deref(), Some("app"));
            assert_eq!(target.password.as_deref(), Some("s@cret"));
            assert_eq!(target.dbname.as_deref(), Some("assess"));
            assert!(
                target
                    .libpq_env()
                    .contains(&("PGSSLMODE", "require".into()))
            );
        }
    }

    #[test]
    fn the_password_is_never_a_libpq_variable() {
        let target = pg("postgresql://app:hunter2@db/assess?passfile=/run/secrets/pgpass");
        let env = target.libpq_env();
        assert!(
            !env.iter()
                .any(|(k, v)| *k == "PGPASSWORD" || v.contains("hunter2")),
            "{env:?}"
        );
        // The operator's own password file stays usable for URLs without a password.
        assert!(
            env.contains(&("PGPASSFILE", "/run/secrets/pgpass".into())),
            "{env:?}"
        );
    }

    #[test]
    fn the_password_never_shows_in_display_or_debug() {
        let target = pg("postgresql://app:hunter2@[::1]:5432/assess");
        let shown = format!(
            "{target} {target:?} {:?}",
            Database::Postgres(target.clone())
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgresql://app:***@[::1]:5432/assess"),
            "{shown}"
        );
        assert_eq!(
            target.mask("FATAL: password hunter2 wrong"),
            "FATAL: password *** wrong"
        );
    }

    #[test]
    fn sqlite_urls_follow_sqlalchemy_slash_rules() {
        let parse = |u: &str| match Database::parse(u, "DATABASE_URL").unwrap() {
            Database::Sqlite(s) => s.path,
            other => panic!("{other}"),
        };
        assert_eq!(
            parse("sqlite:///instance/app.db"),
            PathBuf::from("instance/app.db")
        );
        assert_eq!(
            parse("sqlite:////data/app.db"),
            PathBuf::from("/data/app.db")
        );
        assert!(Database::parse("sqlite://", "DATABASE_URL").is_err());
        assert!(Database::parse("sqlite:///:memory:", "DATABASE_URL").is_err());
    }

    #[test]
    fn unknown_schemes_are_named_and_credentials_hidden() {
        let err = Database::parse("mysql://root:pw123@db/app", "DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("'mysql'"), "{err}");
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("pw123"), "{err}");
        let err = Database::parse("not a url", "DATABASE_URL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a database URL"), "{err}");
    }
}
