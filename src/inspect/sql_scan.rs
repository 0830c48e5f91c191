//! The check-time scan of a plain SQL restore file: what pg_dump never
//! writes is refused with a reason naming the line, before anything is
//! stopped.
//!
//! This is the *message*, not the defence. A line scanner cannot follow
//! dollar quotes or multi-line strings, so a crafted file can hide a line
//! from it (or make it skip lines as "COPY data"). The defence is psql's
//! restricted mode, which `restore::postgres::load` turns on with a key the
//! file cannot know; the scan exists so that an operator reads "line 12:
//! psql meta-command \! is not allowed" in `failed/` instead of a psql error
//! after the containers were already stopped.
//!
//! The scanner is an [`io::Write`] sink fed by the same decompression pass
//! that checks the file, line by line, in bounded memory: a line longer
//! than [`SEGMENT`] is looked at in overlapping segments.

use std::collections::BTreeSet;
use std::io;

/// How much of one line is held at a time.
const SEGMENT: usize = 64 * 1024;
/// Kept from a segment when the line goes on, so a forbidden name cut in
/// two by the segment boundary is still seen whole.
const OVERLAP: usize = 64;
/// Table names remembered; a dump with more is compared on these.
const MAX_TABLES: usize = 10_000;

/// Functions that read or write the server's files or run programs there.
/// pg_dump writes none of them (large objects come as lo_create, lo_open,
/// lowrite, which pass).
const SERVER_FILE_FUNCTIONS: &[&str] = &[
    "lo_import",
    "lo_export",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
];

/// Roles that give file or program access on the server; granting one of
/// them is nothing a database dump does.
const SERVER_FILE_ROLES: &[&str] = &[
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_execute_server_program",
];

/// Why the scan refused a file: what stands on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {forbidden}")]
pub struct Refusal {
    pub line: u64,
    pub forbidden: Forbidden,
}

/// What pg_dump never writes into a database dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// Holds the command as written (`\!`, `\copy`, …).
    #[error("psql meta-command {0} is not allowed in a restore file; pg_dump never writes it")]
    MetaCommand(String),
    #[error("COPY … PROGRAM runs a program on the database server; pg_dump never writes it")]
    CopyProgram,
    #[error("{0}() reads or writes files on the database server; pg_dump never writes it")]
    ServerFileFunction(&'static str),
    #[error(
        "{0} gives access to the database server's files or programs; pg_dump never writes it into a database dump"
    )]
    ServerFileRole(&'static str),
}

/// What the scan found in a file it accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scanned {
    /// `schema.table` of every `CREATE TABLE` outside COPY data (at most
    /// [`MAX_TABLES`]), identifiers unquoted.
    pub tables: BTreeSet<String>,
    /// Lines in the file.
    pub lines: u64,
}

/// The streaming scanner. Write the decompressed file into it, then call
/// [`SqlScan::finish`].
#[derive(Debug)]
pub struct SqlScan {
    /// Refuse psql meta-commands (plain SQL for psql). Off for the SQL that
    /// `pg_restore` generates from a custom dump: pg_restore runs no
    /// meta-commands and writes `\connect`/`\restrict` lines itself.
    meta_commands: bool,
    segment: Vec<u8>,
    /// The current line has been cut into segments; its start was looked at.
    continued: bool,
    /// The current line starts with `COPY`: a `COPY … PROGRAM` candidate.
    copy_statement: bool,
    /// The current line is COPY data (or its `\.` end).
    line_is_data: bool,
    line_no: u64,
    in_copy: bool,
    /// Inside a COPY header whose quoted table or column name holds a
    /// newline (pg_dump writes such names as they are): the header goes on
    /// until the quote closes.
    header_open: bool,
    refusal: Option<Refusal>,
    scanned: Scanned,
}

impl SqlScan {
    /// A scanner for plain SQL that psql will run.
    pub fn for_psql() -> Self {
        Self::new(true)
    }

    /// A scanner for the SQL pg_restore prints for a custom dump.
    pub fn for_pg_restore() -> Self {
        Self::new(false)
    }

    fn new(meta_commands: bool) -> Self {
        SqlScan {
            meta_commands,
            segment: Vec::with_capacity(1024),
            continued: false,
            copy_statement: false,
            line_is_data: false,
            line_no: 0,
            in_copy: false,
            header_open: false,
            refusal: None,
            scanned: Scanned::default(),
        }
    }

    /// Scans the last line (one without a line break) and returns what was
    /// found, or the reason the file is refused.
    pub fn finish(mut self) -> Result<Scanned, Refusal> {
        if !self.segment.is_empty() || self.continued {
            self.end_line();
        }
        self.scanned.lines = self.line_no;
        match self.refusal {
            Some(reason) => Err(reason),
            None => Ok(self.scanned),
        }
    }

    fn refuse(&mut self, forbidden: Forbidden) {
        if self.refusal.is_none() {
            self.refusal = Some(Refusal {
                line: self.line_no,
                forbidden,
            });
        }
    }

    /// The segment holds the start of a line, or a later part of a long one.
    fn look(&mut self, last: bool) {
        let segment = std::mem::take(&mut self.segment);
        let content = trim_line_end(&segment);
        if !self.continued {
            self.line_no += 1;
            self.line_is_data = self.in_copy;
            self.start_of_line(content);
        }
        if !self.line_is_data {
            self.anywhere(content);
        }
        self.segment = segment;
        if last {
            self.segment.clear();
            self.continued = false;
            self.copy_statement = false;
        } else {
            let keep = self.segment.len().saturating_sub(OVERLAP);
            self.segment.drain(..keep);
            self.continued = true;
        }
    }

    fn end_line(&mut self) {
        self.look(true);
    }

    /// COPY data, meta-commands, COPY statements and CREATE TABLE: what the
    /// start of a line tells.
    fn start_of_line(&mut self, content: &[u8]) {
        if self.in_copy {
            if content == b"\\." {
                self.in_copy = false;
            }
            return;
        }
        if self.header_open {
            // A line of a quoted name: text, not a command.
            if odd_quotes(content) {
                self.header_open = false;
                self.in_copy = content.ends_with(b" FROM stdin;");
            }
            return;
        }
        if self.copy_header(content) {
            self.in_copy = true;
        } else if content.starts_with(b"COPY ") && odd_quotes(content) {
            self.header_open = true;
        }
        let trimmed = trim_start(content);
        if self.meta_commands && trimmed.first() == Some(&b'\\') && !is_dump_restrict(trimmed) {
            let name: String = String::from_utf8_lossy(
                &trimmed[..trimmed
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(trimmed.len())
                    .min(20)],
            )
            .into_owned();
            self.refuse(Forbidden::MetaCommand(name));
        }
        self.copy_statement = starts_with_word(trimmed, b"COPY");
        if let Some(table) = created_table(trimmed)
            && self.scanned.tables.len() < MAX_TABLES
        {
            self.scanned.tables.insert(table);
        }
    }

    /// pg_dump's own `COPY table (cols) FROM stdin;`.
    fn copy_header(&self, content: &[u8]) -> bool {
        content.starts_with(b"COPY ") && content.ends_with(b" FROM stdin;") && !odd_quotes(content)
    }

    /// Server-side programs and files, wherever they stand on the line.
    fn anywhere(&mut self, content: &[u8]) {
        let lower = content.to_ascii_lowercase();
        if self.copy_statement
            && let Some(at) = find_word(&lower, b"program")
        {
            let after = trim_start(&lower[at + b"program".len()..]);
            if matches!(after.first(), Some(b'\'' | b'$' | b'e')) {
                self.refuse(Forbidden::CopyProgram);
            }
        }
        for name in SERVER_FILE_FUNCTIONS {
            if let Some(at) = find_word(&lower, name.as_bytes()) {
                let after = trim_start(&lower[at + name.len()..]);
                let after = after.strip_prefix(b"\"").unwrap_or(after);
                if trim_start(after).first() == Some(&b'(') {
                    self.refuse(Forbidden::ServerFileFunction(name));
                }
            }
        }
        for role in SERVER_FILE_ROLES {
            if find_word(&lower, role.as_bytes()).is_some() {
                self.refuse(Forbidden::ServerFileRole(role));
            }
        }
    }
}

/// An odd number of `"`: the line opens (or closes) a quoted name that
/// goes on over the line end. A doubled `""` inside a name counts twice.
fn odd_quotes(line: &[u8]) -> bool {
    line.iter().filter(|&&b| b == b'"').count() % 2 == 1
}

impl io::Write for SqlScan {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push(&rest[..=i]);
                    self.end_line();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.push(rest);
                    rest = &[];
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SqlScan {
    /// Adds bytes of the current line, looking at full segments as they
    /// fill up.
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = SEGMENT - self.segment.len();
            let take = room.min(bytes.len());
            self.segment.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.segment.len() == SEGMENT && self.segment.last() != Some(&b'\n') {
                self.look(false);
            }
        }
    }
}

/// pg_dump's own `\restrict KEY` / `\unrestrict KEY` (KEY alphanumeric).
fn is_dump_restrict(line: &[u8]) -> bool {
    let rest = line
        .strip_prefix(b"\\restrict ")
        .or_else(|| line.strip_prefix(b"\\unrestrict "));
    rest.is_some_and(|key| !key.is_empty() && key.iter().all(u8::is_ascii_alphanumeric))
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[start..]
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn starts_with_word(s: &[u8], word: &[u8]) -> bool {
    s.len() >= word.len()
        && s[..word.len()].eq_ignore_ascii_case(word)
        && s.get(word.len()).is_none_or(|&b| !is_ident_byte(b))
}

/// The first place `word` (lower case) stands in `hay` as a whole word.
fn find_word(hay: &[u8], word: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from + word.len() <= hay.len() {
        let at = from + hay[from..].windows(word.len()).position(|w| w == word)?;
        let before_ok = at == 0 || !is_ident_byte(hay[at - 1]);
        let after_ok = hay.get(at + word.len()).is_none_or(|&b| !is_ident_byte(b));
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `schema.table` of a `CREATE [UNLOGGED] TABLE [IF NOT EXISTS] name` line.
fn created_table(line: &[u8]) -> Option<String> {
    let mut rest = line.strip_prefix(b"CREATE ")?;
    if let Some(r) = rest.strip_prefix(b"UNLOGGED ") {
        rest = r;
    }
    rest = rest.strip_prefix(b"TABLE ")?;
    if let Some(r) = rest.strip_prefix(b"IF NOT EXISTS ") {
        rest = r;
    }
    let text = String::from_utf8_lossy(rest);
    let parts = qualified_name(&text)?;
    match parts.as_slice() {
        [table] => Some(format!("public.{table}")),
        [schema, table] => Some(format!("{schema}.{table}")),
        _ => None,
    }
}

/// The parts of a possibly quoted, dotted name at the start of `s`:
/// quoted parts as written, unquoted ones in lower case (as PostgreSQL
/// folds them).
fn qualified_name(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    part.push(c.to_ascii_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        if chars.peek() == Some(&'.') {
            chars.next();
        } else {
            return Some(parts);
        }
    }
}

/// A few names of `set`, for a one-line reason: `a, b, c and 7 more`.
pub fn shortened(set: &BTreeSet<String>, show: usize) -> String {
    if set.is_empty() {
        return "none".into();
    }
    let shown: Vec<&str> = set.iter().take(show).map(String::as_str).collect();
    let more = set.len().saturating_sub(show);
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The refusal as the failed folder shows it.
    fn scan(text: &str) -> Result<Scanned, String> {
        let mut s = SqlScan::for_psql();
        s.write_all(text.as_bytes()).unwrap();
        s.finish().map_err(|refusal| refusal.to_string())
    }

    /// Feeds the text in tiny pieces, so line ends fall inside writes.
    fn scan_bytewise(text: &str) -> Result<Scanned, String> {
        let mut s = SqlScan::for_psql();
        for chunk in text.as_bytes().chunks(3) {
            s.write_all(chunk).unwrap();
        }
        s.finish().map_err(|refusal| refusal.to_string())
    }

    const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abcDEF123\n\
        SET statement_timeout = 0;\n\
        CREATE TABLE public.accounts (\n    id integer NOT NULL\n);\n\
        CREATE UNLOGGED TABLE \"Odd\".\"We\"\"ird\" (x int);\n\
        CREATE TABLE IF NOT EXISTS Plain (x int);\n\
        COPY public.accounts (id) FROM stdin;\n\\! not a command: COPY data\n\\N\n\\.\n\
        SELECT pg_catalog.lo_create('16390');\nSELECT pg_catalog.lo_open('16390', 131072);\n\
        SELECT pg_catalog.lowrite(0, '\\x41');\nSELECT pg_catalog.lo_close(0);\n\
        COMMENT ON TABLE public.accounts IS 'we lo_import nothing, say program ''x''';\n\
        -- PostgreSQL database dump complete\n\n\\unrestrict abcDEF123\n";

    #[test]
    fn a_pg_dump_file_passes_and_its_tables_are_collected() {
        for result in [scan(DUMP), scan_bytewise(DUMP)] {
            let scanned = result.unwrap();
            let tables: Vec<&str> = scanned.tables.iter().map(String::as_str).collect();
            assert_eq!(tables, ["Odd.We\"ird", "public.accounts", "public.plain"]);
            assert_eq!(scanned.lines, DUMP.lines().count() as u64);
        }
    }

    #[test]
    fn a_copy_header_whose_quoted_names_hold_newlines_starts_copy_data() {
        let text = "CREATE TABLE public.\"new\nline\" (\"tab\tcol\" text);\n\
            COPY public.\"new\nline\" (\"a\nb\", c) FROM stdin;\n\\! data, not a command\n\\.\n\
            SELECT 1;\n";
        scan(text).expect("pg_dump's own output");
        scan_bytewise(text).expect("pg_dump's own output, in pieces");
        let after = format!("{text}\\! not data\n");
        let refusal = scan(&after).unwrap_err();
        assert!(
            refusal.contains("line 9") && refusal.contains("\\!"),
            "{refusal}"
        );
    }

    #[test]
    fn meta_commands_outside_copy_data_are_refused_with_their_line() {
        for (line, name) in [
            ("\\! touch /tmp/x", "\\!"),
            ("\\o |cat", "\\o"),
            ("  \\copy (select 1) TO PROGRAM 'id'", "\\copy"),
            ("\\i /etc/passwd", "\\i"),
            ("\\c otherdb", "\\c"),
            ("\\connect postgres", "\\connect"),
            ("\\restrict", "\\restrict"),
            ("\\unrestrict KEY; \\! id", "\\unrestrict"),
            ("\\set x 1", "\\set"),
        ] {
            let text = format!("SELECT 1;\nCOPY t (a) FROM stdin;\n1\n\\.\n{line}\nSELECT 2;\n");
            let reason = scan(&text).unwrap_err();
            assert_eq!(
                reason,
                format!(
                    "line 5: psql meta-command {name} is not allowed in a restore file; pg_dump never writes it"
                ),
                "{line}"
            );
            assert_eq!(scan_bytewise(&text).unwrap_err(), reason);
        }
    }

    #[test]
    fn server_programs_and_files_are_refused_outside_copy_data() {
        for (sql, word) in [
            ("COPY t TO PROGRAM 'id';", "COPY … PROGRAM"),
            ("copy (select 1) from program $$id$$;", "COPY … PROGRAM"),
            ("SELECT lo_import('/etc/passwd');", "lo_import()"),
            ("SELECT pg_catalog.lo_export(1, '/tmp/x');", "lo_export()"),
            ("SELECT PG_READ_FILE ('/etc/passwd');", "pg_read_file()"),
            (
                "select \"pg_read_binary_file\"('x');",
                "pg_read_binary_file()",
            ),
            (
                "GRANT pg_execute_server_program TO app;",
                "pg_execute_server_program",
            ),
            ("GRANT pg_read_server_files TO app;", "pg_read_server_files"),
        ] {
            let reason = scan(&format!("SELECT 1;\n{sql}\n")).unwrap_err();
            assert!(
                reason.starts_with("line 2: ") && reason.contains(word),
                "{sql}: {reason}"
            );
        }
        // As COPY data, the same words are just data.
        let data = "COPY t (a) FROM stdin;\nCOPY t TO PROGRAM 'id'\nlo_import('x')\n\\.\n";
        assert!(scan(data).is_ok());
        // Names that merely contain the words pass.
        assert!(
            scan("SELECT my_lo_import(1), pg_read_file_count;\nCREATE TABLE program (x int);\n")
                .is_ok()
        );
    }

    #[test]
    fn a_long_line_is_scanned_whole_in_bounded_segments() {
        let mut text = String::from("INSERT INTO t VALUES ('");
        text.push_str(&"a".repeat(3 * SEGMENT - 30));
        text.push_str("'); SELECT pg_read_file('/etc/passwd');\n\\! id\n");
        let reason = scan(&text).unwrap_err();
        assert!(reason.starts_with("line 1: pg_read_file()"), "{reason}");
        let mut s = SqlScan::for_psql();
        s.write_all(text.as_bytes()).unwrap();
        assert!(s.segment.capacity() <= 2 * SEGMENT);
        // A line cut right inside the forbidden name is still caught.
        for cut in 0..12 {
            let mut text = "x".repeat(SEGMENT - cut);
            text.push_str(" lo_export(1, 'f');\n");
            assert!(scan(&text).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn the_last_line_without_a_break_is_scanned() {
        assert!(
            scan("SELECT 1;\n\\! id")
                .unwrap_err()
                .starts_with("line 2:")
        );
    }

    #[test]
    fn pg_restore_output_may_hold_its_own_meta_commands() {
        let mut s = SqlScan::for_pg_restore();
        s.write_all(b"\\connect app\nCREATE TABLE public.a (x int);\nSELECT lo_import('x');\n")
            .unwrap();
        let refusal = s.finish().unwrap_err();
        assert_eq!(
            (refusal.line, &refusal.forbidden),
            (3, &Forbidden::ServerFileFunction("lo_import"))
        );
        assert!(refusal.to_string().starts_with("line 3: lo_import()"));
    }

    #[test]
    fn table_lists_are_shortened() {
        let set: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        assert_eq!(shortened(&set, 2), "a, b and 2 more");
        assert_eq!(shortened(&set, 9), "a, b, c, d");
        assert_eq!(shortened(&BTreeSet::new(), 3), "none");
    }
}
