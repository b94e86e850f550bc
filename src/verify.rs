//! Comparing query results the way a benchmark or a test must: exactly for
//! integers, strings and dates; numbers with a fraction to the cent (or a
//! relative 1e-9 for large values); row order only where the query orders.

use arrow::array::{Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use crate::error::{EmberError, Result};

/// Every value of `batches` as text (`NULL` for nulls), row by row.
pub fn rows_as_text(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let mut out = vec![];
    for batch in batches {
        let cols = batch
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8))
            .collect::<Result<Vec<_>, _>>()?;
        let cols: Vec<&StringArray> = cols
            .iter()
            .map(|c| {
                c.as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| EmberError::Internal("cast to Utf8 gave another type".into()))
            })
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            c.value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Do two rendered values denote the same value?
pub fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let fractional = a.contains('.') || b.contains('.') || a.contains('e') || b.contains('e');
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if fractional => {
            let diff = (x - y).abs();
            diff <= 0.005 + 1e-12 * x.abs().max(y.abs()) || diff <= 1e-9 * x.abs().max(y.abs())
        }
        _ => false,
    }
}

fn sort_key(row: &[String]) -> String {
    row.iter()
        .map(|v| match v.parse::<f64>() {
            Ok(n) if v.contains('.') => format!("{n:.2}"),
            _ => v.clone(),
        })
        .collect::<Vec<_>>()
        .join("\u{1}")
}

/// Compares `actual` with `expected`; the first difference is the error.
pub fn compare(
    mut actual: Vec<Vec<String>>,
    mut expected: Vec<Vec<String>>,
    ordered: bool,
) -> std::result::Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{} rows, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    if !ordered {
        actual.sort_by_cached_key(|r| sort_key(r));
        expected.sort_by_cached_key(|r| sort_key(r));
    }
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        if a.len() != e.len() || a.iter().zip(e).any(|(x, y)| !same_value(x, y)) {
            return Err(format!("row {i} is {a:?}, expected {e:?}"));
        }
    }
    Ok(())
}

/// Does the statement order its result (a top-level `ORDER BY`)?
pub fn is_ordered(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("order by")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn decimals_compare_to_the_cent_and_integers_exactly() {
        assert!(same_value("10.004", "10.001"));
        assert!(!same_value("10.02", "10.00"));
        assert!(!same_value("10", "11"));
        assert!(same_value("1234567890123.12", "1234567890123.1234"));
        assert!(!same_value("abc", "abd"));
    }

    #[test]
    fn order_matters_only_when_asked() {
        let a = rows(&[&["1", "x"], &["2", "y"]]);
        let b = rows(&[&["2", "y"], &["1", "x"]]);
        assert!(compare(a.clone(), b.clone(), false).is_ok());
        assert!(compare(a, b, true).is_err());
    }

    #[test]
    fn missing_rows_are_reported() {
        let a = rows(&[&["1"]]);
        let b = rows(&[&["1"], &["2"]]);
        assert_eq!(compare(a, b, false).unwrap_err(), "1 rows, expected 2");
    }
}
