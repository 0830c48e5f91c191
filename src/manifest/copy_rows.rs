//! Row counts of a plain-format pg_dump, read from its `COPY … FROM stdin;`
//! blocks as the bytes stream past (see the module docs of
//! [`crate::manifest`] for why this is exact and what it cannot see).
//!
//! The counter is a byte-level state machine: chunks may be split anywhere
//! (inside a header, inside a row, between `\` and `.`), and it keeps at most
//! a table's name and a few bytes of the current line, never a row.

use std::collections::BTreeMap;

/// The longest qualified table name kept from a header. pg_dump's names are
/// two identifiers of at most 63 bytes, quoted and with `"` doubled: about
/// 260 bytes. A longer "name" is not a pg_dump header.
const NAME_CAP: usize = 1024;

/// The longest header line followed to its end. A header holds the column
/// list, which is not kept, only scanned for quotes (1600 columns of 63-byte
/// quoted names are about 210 KiB); a longer `COPY ` line is ordinary SQL.
const HEADER_CAP: usize = 1 << 20;

const HEADER_PREFIX: &[u8] = b"COPY ";
const HEADER_SUFFIX: &[u8] = b" FROM stdin;";

/// A COPY block still open when the dump ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyCountError {
    #[error(
        "the dump ends inside the data of table {table} after {rows} rows, without its `\\.` line: the dump is truncated"
    )]
    Truncated { table: String, rows: u64 },
}

#[derive(Debug)]
enum State {
    /// Outside a block, at the start of a line.
    LineStart,
    /// Outside a block, `matched` bytes of `COPY ` seen at the line start.
    Prefix {
        matched: usize,
    },
    /// In a header, reading the qualified name up to its first space outside
    /// double quotes.
    Name {
        quoted: bool,
    },
    /// In a header after the name: only the quote state and the last bytes
    /// (for ` FROM stdin;`) are kept.
    Rest {
        quoted: bool,
    },
    /// Outside a block, in a line that is not a header: skipped to its end.
    Ordinary,
    /// Inside a block at the start of a row line, or after its first bytes:
    /// `\` (`Backslash`) or `\.` (`Terminator`); `Row` is any other line.
    BlockLineStart,
    BlockBackslash,
    BlockTerminator,
    BlockRow,
}

/// Counts the rows of every COPY block of a plain-format pg_dump fed to it
/// in chunks.
#[derive(Debug)]
pub struct CopyRowCounter {
    state: State,
    /// The qualified name of the header being read or of the open block.
    name: Vec<u8>,
    /// The last bytes of the header line after the name.
    tail: Vec<u8>,
    header_len: usize,
    rows: u64,
    counts: BTreeMap<String, u64>,
}

impl Default for CopyRowCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyRowCounter {
    pub fn new() -> Self {
        CopyRowCounter {
            state: State::LineStart,
            name: Vec::with_capacity(64),
            tail: Vec::with_capacity(HEADER_SUFFIX.len()),
            header_len: 0,
            rows: 0,
            counts: BTreeMap::new(),
        }
    }

    /// Feeds the next bytes of the dump.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match self.state {
                // The bulk of a dump: skip to the end of the line in one scan.
                State::Ordinary | State::BlockRow => match rest.iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        if matches!(self.state, State::BlockRow) {
                            self.rows += 1;
                            self.state = State::BlockLineStart;
                        } else {
                            self.state = State::LineStart;
                        }
                        rest = &rest[at + 1..];
                    }
                    None => return,
                },
                _ => {
                    self.step(rest[0]);
                    rest = &rest[1..];
                }
            }
        }
    }

    fn step(&mut self, byte: u8) {
        self.state = match std::mem::replace(&mut self.state, State::LineStart) {
            State::LineStart => self.prefix(0, byte),
            State::Prefix { matched } => self.prefix(matched, byte),
            State::Name { quoted } => self.name_byte(quoted, byte),
            State::Rest { quoted } => self.rest_byte(quoted, byte),
            State::BlockLineStart => match byte {
                b'\\' => State::BlockBackslash,
                b'\n' => self.row_ended(),
                _ => State::BlockRow,
            },
            State::BlockBackslash => match byte {
                b'.' => State::BlockTerminator,
                b'\n' => self.row_ended(),
                _ => State::BlockRow,
            },
            State::BlockTerminator => match byte {
                b'\n' => self.block_ended(),
                _ => State::BlockRow,
            },
            State::Ordinary | State::BlockRow => unreachable!("handled in feed"),
        };
    }

    fn prefix(&mut self, matched: usize, byte: u8) -> State {
        if byte == b'\n' {
            return State::LineStart;
        }
        if byte != HEADER_PREFIX[matched] {
            return State::Ordinary;
        }
        if matched + 1 < HEADER_PREFIX.len() {
            return State::Prefix {
                matched: matched + 1,
            };
        }
        self.name.clear();
        self.tail.clear();
        self.header_len = HEADER_PREFIX.len();
        State::Name { quoted: false }
    }

    /// Counts a header byte against [`HEADER_CAP`]; `None` once it is over.
    fn header_byte(&mut self, byte: u8, quoted: bool) -> Option<State> {
        self.header_len += 1;
        if self.header_len > HEADER_CAP {
            // Not a header: the line goes on as ordinary SQL.
            return Some(if byte == b'\n' && !quoted {
                State::LineStart
            } else {
                State::Ordinary
            });
        }
        None
    }

    fn name_byte(&mut self, quoted: bool, byte: u8) -> State {
        if let Some(given_up) = self.header_byte(byte, quoted) {
            return given_up;
        }
        match byte {
            b'"' => {
                self.name.push(byte);
                State::Name { quoted: !quoted }
            }
            b' ' if !quoted => {
                if self.name.is_empty() {
                    return State::Ordinary;
                }
                self.push_tail(byte);
                State::Rest { quoted: false }
            }
            b'\n' if !quoted => State::LineStart,
            _ if self.name.len() >= NAME_CAP => {
                if byte == b'\n' {
                    State::LineStart
                } else {
                    State::Ordinary
                }
            }
            _ => {
                self.name.push(byte);
                State::Name { quoted }
            }
        }
    }

    fn rest_byte(&mut self, quoted: bool, byte: u8) -> State {
        if let Some(given_up) = self.header_byte(byte, quoted) {
            return given_up;
        }
        match byte {
            b'\n' if !quoted => {
                if self.tail == HEADER_SUFFIX {
                    self.block_started()
                } else {
                    State::LineStart
                }
            }
            b'"' => {
                self.push_tail(byte);
                State::Rest { quoted: !quoted }
            }
            _ => {
                self.push_tail(byte);
                State::Rest { quoted }
            }
        }
    }

    fn push_tail(&mut self, byte: u8) {
        if self.tail.len() == HEADER_SUFFIX.len() {
            self.tail.remove(0);
        }
        self.tail.push(byte);
    }

    fn block_started(&mut self) -> State {
        self.rows = 0;
        // Zero-row tables are listed too.
        self.counts.entry(self.table_name()).or_insert(0);
        State::BlockLineStart
    }

    fn row_ended(&mut self) -> State {
        self.rows += 1;
        State::BlockLineStart
    }

    fn block_ended(&mut self) -> State {
        // A table dumped twice (pg_dump does not) sums.
        *self.counts.entry(self.table_name()).or_insert(0) += self.rows;
        self.rows = 0;
        State::LineStart
    }

    fn table_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The row count of every table whose COPY block the dump held, by the
    /// qualified name as pg_dump wrote it (`public.users`,
    /// `public."Odd Name"`). A block still open is a truncated dump.
    pub fn finish(self) -> Result<BTreeMap<String, u64>, CopyCountError> {
        match self.state {
            State::BlockLineStart
            | State::BlockBackslash
            | State::BlockTerminator
            | State::BlockRow => Err(CopyCountError::Truncated {
                table: self.table_name(),
                rows: self.rows,
            }),
            _ => Ok(self.counts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dump as pg_dump 15–18 writes it (abridged), with the escapes of
    /// COPY text format: `\n`, `\t`, `\\` inside values, a value that is a
    /// literal backslash-dot (`\\.`), an empty table and a quoted name.
    const DUMP: &[u8] = b"--\n-- PostgreSQL database dump\n--\n\n\
SET statement_timeout = 0;\n\
CREATE TABLE public.users (\n    id integer NOT NULL,\n    name text\n);\n\
CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $$SELECT 'COPY x'$$;\n\
--\n-- Data for Name: users; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n\
COPY public.users (id, name) FROM stdin;\n\
1\talice\n\
2\tline one\\nline two\\ttabbed\\\\back\n\
3\t\\\\.\n\
4\t\\N\n\
\\.\n\n\n\
COPY public.empty (id) FROM stdin;\n\
\\.\n\n\n\
COPY public.\"Odd Name\" (\"Weird Col\", \"a b\") FROM stdin;\n\
x\ty\n\
\\\\.\n\
\n\
\\.\n\n\n\
COPY public.zero_columns  FROM stdin;\n\
\n\
\n\
\\.\n\n\n\
--\n-- PostgreSQL database dump complete\n--\n\n";

    fn expected() -> BTreeMap<String, u64> {
        [
            ("public.users", 4),
            ("public.empty", 0),
            ("public.\"Odd Name\"", 3),
            ("public.zero_columns", 2),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_string(), n))
        .collect()
    }

    fn count(chunks: &[&[u8]]) -> Result<BTreeMap<String, u64>, CopyCountError> {
        let mut counter = CopyRowCounter::new();
        for chunk in chunks {
            counter.feed(chunk);
        }
        counter.finish()
    }

    /// A small deterministic generator (xorshift64*), so a failing split
    /// can be replayed from its seed.
    struct Splits(u64);

    impl Splits {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
        }
    }

    #[test]
    fn counts_every_block_of_a_whole_dump() {
        assert_eq!(count(&[DUMP]).unwrap(), expected());
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_counts() {
        let bytes: Vec<&[u8]> = DUMP.chunks(1).collect();
        assert_eq!(count(&bytes).unwrap(), expected());
    }

    #[test]
    fn a_split_at_every_byte_position_gives_the_same_counts() {
        for at in 0..=DUMP.len() {
            let (a, b) = DUMP.split_at(at);
            assert_eq!(count(&[a, b]).unwrap(), expected(), "split at byte {at}");
        }
    }

    #[test]
    fn random_splits_give_the_same_counts() {
        for seed in 1..=500u64 {
            let mut splits = Splits(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut chunks = Vec::new();
            let mut rest = DUMP;
            while !rest.is_empty() {
                let take = 1 + splits.next(rest.len().min(40));
                let (a, b) = rest.split_at(take);
                chunks.push(a);
                rest = b;
            }
            assert_eq!(count(&chunks).unwrap(), expected(), "seed {seed}");
        }
    }

    #[test]
    fn an_escaped_backslash_dot_is_a_row_not_the_end() {
        let dump = b"COPY public.t (v) FROM stdin;\n\\\\.\n\\\\.\n\\.\n";
        let counts = count(&[dump]).unwrap();
        assert_eq!(counts["public.t"], 2);
    }

    #[test]
    fn a_line_that_only_starts_with_backslash_dot_is_a_row() {
        // Not pg_dump's output (it escapes the backslash), but only the
        // whole line `\.` ends a block.
        let dump = b"COPY public.t (v) FROM stdin;\n\\.x\n\\\n\\\\\n\\.\n";
        assert_eq!(count(&[dump]).unwrap()["public.t"], 3);
    }

    #[test]
    fn a_dump_ending_inside_a_block_is_truncated() {
        for cut in [
            &b"COPY public.t (v) FROM stdin;\n"[..],
            b"COPY public.t (v) FROM stdin;\na\nb\n",
            b"COPY public.t (v) FROM stdin;\na\nb",
            b"COPY public.t (v) FROM stdin;\na\n\\",
            b"COPY public.t (v) FROM stdin;\na\n\\.",
        ] {
            let err = count(&[cut]).unwrap_err();
            assert!(
                matches!(&err, CopyCountError::Truncated { table, .. } if table == "public.t"),
                "{err:?}"
            );
            assert!(err.to_string().contains("public.t"), "{err}");
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        let CopyCountError::Truncated { rows, .. } =
            count(&[b"COPY public.t (v) FROM stdin;\na\nb\n"]).unwrap_err();
        assert_eq!(rows, 2);
    }

    #[test]
    fn a_table_dumped_twice_sums() {
        let dump =
            b"COPY public.t (v) FROM stdin;\na\n\\.\nCOPY public.t (v) FROM stdin;\nb\nc\n\\.\n";
        assert_eq!(count(&[dump]).unwrap()["public.t"], 3);
    }

    #[test]
    fn lines_that_are_not_headers_are_sql() {
        let dump = b"COPY\nCOPY \nCOPY public.t (v) TO stdout;\nxCOPY public.u (v) FROM stdin;\n \
COPY public.v (v) FROM stdin;\n-- COPY public.w (v) FROM stdin;\nCOPY  FROM stdin;\nrow?\n";
        assert_eq!(count(&[dump]).unwrap(), BTreeMap::new());
    }

    #[test]
    fn a_quoted_name_with_spaces_quotes_and_a_newline_is_kept_as_written() {
        let dump = b"COPY \"My Schema\".\"say \"\"hi\"\"\nthere\" (\"col\nx\", \"FROM stdin;\") FROM stdin;\n1\n2\n\\.\n";
        let counts = count(&[dump]).unwrap();
        assert_eq!(
            counts,
            BTreeMap::from([("\"My Schema\".\"say \"\"hi\"\"\nthere\"".to_string(), 2)])
        );
    }

    #[test]
    fn long_rows_are_counted_without_being_kept() {
        let long_row = vec![b'x'; 3 << 20];
        let mut counter = CopyRowCounter::new();
        counter.feed(b"COPY public.big (v) FROM stdin;\n");
        for _ in 0..3 {
            for piece in long_row.chunks(64 * 1024 + 7) {
                counter.feed(piece);
            }
            counter.feed(b"\n");
        }
        counter.feed(b"\\.\n");
        assert!(counter.name.capacity() <= NAME_CAP.max(64));
        assert!(counter.tail.capacity() <= 2 * HEADER_SUFFIX.len());
        assert_eq!(counter.finish().unwrap()["public.big"], 3);
    }

    #[test]
    fn a_long_sql_line_is_skipped_and_the_next_header_is_seen() {
        let mut dump = b"INSERT INTO x VALUES ('".to_vec();
        dump.extend(std::iter::repeat_n(b'y', 200_000));
        dump.extend(b"');\nCOPY public.x (");
        // A `COPY ` line longer than any header is not one, whatever its end.
        dump.extend(std::iter::repeat_n(b'z', HEADER_CAP + 10));
        dump.extend(b") FROM stdin;\nnot a row\n\\.\nCOPY public.t (v) FROM stdin;\na\n\\.\n");
        let counts = count(&[&dump]).unwrap();
        assert_eq!(counts, BTreeMap::from([("public.t".to_string(), 1)]));
    }

    #[test]
    fn a_header_with_many_long_columns_is_a_header() {
        let columns: Vec<String> = (0..1600).map(|i| format!("\"{:0>61}\"", i)).collect();
        let dump = format!(
            "COPY public.wide ({}) FROM stdin;\n1\n\\.\n",
            columns.join(", ")
        );
        assert!(dump.len() > 64 * 1024);
        assert_eq!(count(&[dump.as_bytes()]).unwrap()["public.wide"], 1);
    }

    /// pg_dump ends every line with `\n` alone and escapes a carriage return
    /// in a value as `\r`, so CRLF never occurs in its output. A dump whose
    /// line ends were rewritten to CRLF is not pg_dump's: its headers end in
    /// `;\r` and are not recognised, so nothing is counted (the manifest
    /// check then fails loudly rather than counting wrongly).
    #[test]
    fn crlf_line_ends_are_not_pg_dump_output_and_not_counted() {
        let dump = b"COPY public.t (v) FROM stdin;\r\na\r\n\\.\r\n";
        assert_eq!(count(&[dump]).unwrap(), BTreeMap::new());
        let escaped_cr = b"COPY public.t (v) FROM stdin;\nline\\r\n\\.\n";
        assert_eq!(count(&[escaped_cr]).unwrap()["public.t"], 1);
    }

    #[test]
    fn a_dump_without_data_counts_nothing() {
        assert_eq!(count(&[]).unwrap(), BTreeMap::new());
        assert_eq!(
            count(&[b"CREATE TABLE t (id int);\n"]).unwrap(),
            BTreeMap::new()
        );
    }
}
