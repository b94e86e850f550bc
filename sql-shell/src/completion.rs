//! The line editor's helper: Tab completion (SQL keywords, and table and
//! column names from the session's catalog, refreshed after statements that
//! change it) and the validator that ends input at a statement's `;`.

use std::sync::{Arc, Mutex, PoisonError};

use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Highlighter, Hinter};

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "OUTER",
    "CROSS",
    "ON",
    "USING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "EXISTS",
    "BETWEEN",
    "LIKE",
    "ILIKE",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "DISTINCT",
    "UNION",
    "ALL",
    "INTERSECT",
    "EXCEPT",
    "WITH",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "CAST",
    "INTERVAL",
    "DATE",
    "TIMESTAMP",
    "EXTRACT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CREATE",
    "EXTERNAL",
    "TABLE",
    "STORED",
    "PARQUET",
    "CSV",
    "LOCATION",
    "OPTIONS",
    "DROP",
    "SHOW",
    "TABLES",
    "COLUMNS",
    "SET",
    "EXPLAIN",
    "ANALYZE",
    "VERBOSE",
    "DESCRIBE",
    "VALUES",
    "OVER",
    "PARTITION",
    "WINDOW",
    "SUBSTRING",
];

/// Names the completer offers besides keywords.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: Vec<String>,
    pub columns: Vec<String>,
}

/// Line editing help: completion, and a validator that keeps a statement in
/// one editing session until its `;` (so a multi-line paste, or lines typed
/// faster than the shell reads them, all land in one statement).
#[derive(Helper, Hinter, Highlighter)]
pub struct SqlHelper {
    pub catalog: Arc<Mutex<Catalog>>,
}

impl SqlHelper {
    pub fn new() -> Self {
        Self {
            catalog: Arc::new(Mutex::new(Catalog::default())),
        }
    }
}

/// Candidates for `word` (case-insensitive prefix match); keywords keep the
/// case the user started typing in.
pub fn candidates(word: &str, catalog: &Catalog) -> Vec<String> {
    if word.is_empty() {
        return vec![];
    }
    let lower = word.to_ascii_lowercase();
    let lowercase_input = word.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let mut out: Vec<String> = catalog
        .tables
        .iter()
        .chain(catalog.columns.iter())
        .filter(|n| n.to_ascii_lowercase().starts_with(&lower))
        .cloned()
        .collect();
    out.extend(
        KEYWORDS
            .iter()
            .filter(|k| k.to_ascii_lowercase().starts_with(&lower))
            .map(|k| {
                if lowercase_input {
                    k.to_ascii_lowercase()
                } else {
                    k.to_string()
                }
            }),
    );
    out.sort();
    out.dedup();
    out
}

impl Validator for SqlHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let complete = input.trim().is_empty() || ember::sql::split_input(input).is_some();
        Ok(if complete {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        let pairs = candidates(&before[start..], &catalog)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_tables_columns_and_keywords() {
        let catalog = Catalog {
            tables: vec!["lineitem".into(), "nation".into()],
            columns: vec!["l_orderkey".into(), "n_name".into()],
        };
        assert_eq!(
            candidates("li", &catalog),
            vec!["like", "limit", "lineitem"]
        );
        assert_eq!(candidates("l_o", &catalog), vec!["l_orderkey"]);
        assert_eq!(candidates("SEL", &catalog), vec!["SELECT"]);
        assert!(candidates("", &catalog).is_empty());
    }
}
