//! Row counts of a restored (or drilled) database against a manifest.
//!
//! The rule: every table the manifest lists must be there with exactly
//! its count; a table the manifest does not list must be empty (a dump of
//! ours creates no table it has no COPY block for, but the load may run
//! `CREATE EXTENSION`, whose own tables the caller leaves out of `actual`).

use std::collections::BTreeMap;
use std::fmt;

/// How many differing tables a message names before "and N more".
const NAMED_IN_MESSAGE: usize = 8;

/// One table whose count differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDifference {
    pub table: String,
    /// `None`: not in the manifest.
    pub expected: Option<u64>,
    /// `None`: not in the restored database.
    pub actual: Option<u64>,
}

impl fmt::Display for TableDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = &self.table;
        match (self.expected, self.actual) {
            (Some(e), Some(a)) => write!(f, "{table}: {a} rows, the manifest says {e}"),
            (Some(e), None) => write!(f, "{table}: missing, the manifest says {e} rows"),
            (None, Some(a)) => write!(f, "{table}: {a} rows, not in the manifest"),
            (None, None) => write!(f, "{table}"),
        }
    }
}

/// The counts did not match: every differing table, in name order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CountMismatch {
    pub differences: Vec<TableDifference>,
    /// Tables compared in all.
    pub compared: usize,
}

impl fmt::Display for CountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.differences.len();
        write!(
            f,
            "the row counts differ from the manifest in {n} of {} table{}: ",
            self.compared,
            if self.compared == 1 { "" } else { "s" }
        )?;
        for (i, d) in self.differences.iter().take(NAMED_IN_MESSAGE).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        if n > NAMED_IN_MESSAGE {
            write!(f, "; and {} more", n - NAMED_IN_MESSAGE)?;
        }
        Ok(())
    }
}

/// Compares `actual` (counted in the restored database) with `expected`
/// (the manifest's `tables`). Ok carries the number of tables compared.
pub fn compare_counts(
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
) -> Result<usize, CountMismatch> {
    let mut differences = Vec::new();
    for (table, &e) in expected {
        match actual.get(table) {
            Some(&a) if a == e => {}
            a => differences.push(TableDifference {
                table: table.clone(),
                expected: Some(e),
                actual: a.copied(),
            }),
        }
    }
    for (table, &a) in actual {
        if a > 0 && !expected.contains_key(table) {
            differences.push(TableDifference {
                table: table.clone(),
                expected: None,
                actual: Some(a),
            });
        }
    }
    differences.sort_by(|x, y| x.table.cmp(&y.table));
    let compared = expected.len() + actual.keys().filter(|t| !expected.contains_key(*t)).count();
    if differences.is_empty() {
        Ok(compared)
    } else {
        Err(CountMismatch {
            differences,
            compared,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn equal_counts_pass_and_say_how_many_tables_were_compared() {
        let c = counts(&[("public.a", 1), ("public.b", 0)]);
        assert_eq!(compare_counts(&c, &c), Ok(2));
        // An empty table the manifest does not know (an extension's) passes.
        let more = counts(&[("public.a", 1), ("public.b", 0), ("public.ext", 0)]);
        assert_eq!(compare_counts(&c, &more), Ok(3));
    }

    #[test]
    fn every_difference_is_named_with_both_counts() {
        let expected = counts(&[("public.a", 10), ("public.b", 5), ("public.c", 1)]);
        let actual = counts(&[("public.a", 9), ("public.c", 1), ("public.z", 2)]);
        let err = compare_counts(&expected, &actual).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the row counts differ from the manifest in 3 of 4 tables: \
             public.a: 9 rows, the manifest says 10; \
             public.b: missing, the manifest says 5 rows; \
             public.z: 2 rows, not in the manifest"
        );
    }

    #[test]
    fn a_long_list_is_cut_after_eight_names() {
        let expected: BTreeMap<String, u64> = (0..20).map(|i| (format!("t{i:02}"), 1)).collect();
        let err = compare_counts(&expected, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.differences.len(), 20);
        let text = err.to_string();
        assert!(text.ends_with("; and 12 more"), "{text}");
        assert!(text.contains("t07") && !text.contains("t08"), "{text}");
    }
}
