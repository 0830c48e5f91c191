//! What a file dropped for restore (or handed to `verify`) is, by name:
//! `.sql`, `.sql.gz`, `.dump`, `.dump.gz`, `.db`, `.db.gz`, each optionally
//! with `.enc`.

/// The database payload inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// pg_dump plain format (SQL text).
    PlainSql,
    /// pg_dump custom format, for pg_restore.
    CustomDump,
    /// A SQLite database file.
    Sqlite,
}

impl Payload {
    pub fn is_postgres(self) -> bool {
        matches!(self, Payload::PlainSql | Payload::CustomDump)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Payload::PlainSql => "PostgreSQL plain SQL dump",
            Payload::CustomDump => "PostgreSQL custom-format dump",
            Payload::Sqlite => "SQLite database",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    pub payload: Payload,
    pub gzip: bool,
    /// Fernet-encrypted (`.enc`): decrypted before anything else.
    pub encrypted: bool,
}

/// Classifies a file name; `None` for anything that is not a backup.
pub fn classify(name: &str) -> Option<FileKind> {
    let kind = by_extension(name)?;
    // A dotfile (".sql", ".x.sql.gz") is not a backup.
    if name.starts_with('.') {
        return None;
    }
    Some(kind)
}

/// What the extensions of `name` say, dotfile or not: `backupd verify`
/// inspects whatever file it is handed.
pub fn by_extension(name: &str) -> Option<FileKind> {
    let (rest, encrypted) = match name.strip_suffix(".enc") {
        Some(rest) => (rest, true),
        None => (name, false),
    };
    let (rest, gzip) = match rest.strip_suffix(".gz") {
        Some(rest) => (rest, true),
        None => (rest, false),
    };
    let (stem, payload) = if let Some(stem) = rest.strip_suffix(".sql") {
        (stem, Payload::PlainSql)
    } else if let Some(stem) = rest.strip_suffix(".dump") {
        (stem, Payload::CustomDump)
    } else if let Some(stem) = rest.strip_suffix(".db") {
        (stem, Payload::Sqlite)
    } else {
        return None;
    };
    // ".sql" alone names no file, only an extension.
    if stem.is_empty() {
        return None;
    }
    Some(FileKind {
        payload,
        gzip,
        encrypted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_extension_is_recognised() {
        let sql_gz = classify("pg_dump-20260101T000000Z.sql.gz").unwrap();
        assert_eq!(
            (sql_gz.payload, sql_gz.gzip, sql_gz.encrypted),
            (Payload::PlainSql, true, false)
        );
        let enc = classify("app.dump.gz.enc").unwrap();
        assert_eq!(
            (enc.payload, enc.gzip, enc.encrypted),
            (Payload::CustomDump, true, true)
        );
        assert_eq!(classify("my backup ü.db").unwrap().payload, Payload::Sqlite);
        assert_eq!(classify("b.db").unwrap().payload, Payload::Sqlite);
        for name in [
            "notes.txt",
            ".sql",
            ".hidden.sql.gz",
            "x.sql.gz.partial",
            "x.gz",
            "x.tmp",
        ] {
            assert_eq!(classify(name), None, "{name}");
        }
    }
}
