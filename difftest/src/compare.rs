//! Comparing what the two engines answered.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Serialize;

use crate::engines::{Outcome, Table};

/// How Ember's answer differs from DataFusion's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// DataFusion answered, Ember failed.
    EmberFailed,
    /// DataFusion failed, Ember answered.
    EmberSucceeded,
    /// A batch Ember returned does not have the schema Ember announced.
    BatchSchema,
    /// Column types differ.
    Types,
    /// Column names differ.
    Names,
    /// Column nullability differs.
    Nullability,
    /// Different rows (as multisets).
    Values,
    /// The same rows in another order, where the query orders them.
    Order,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 8] = [
        Class::EmberFailed,
        Class::EmberSucceeded,
        Class::BatchSchema,
        Class::Types,
        Class::Names,
        Class::Nullability,
        Class::Values,
        Class::Order,
    ];

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Class::EmberFailed => "ember_failed",
            Class::EmberSucceeded => "ember_succeeded",
            Class::BatchSchema => "batch_schema",
            Class::Types => "types",
            Class::Names => "names",
            Class::Nullability => "nullability",
            Class::Values => "values",
            Class::Order => "order",
        }
    }
}

/// The verdict on one statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Both answered the same.
    Agree,
    /// Both failed (the error texts may differ).
    BothFailed,
    /// They differ; the text says how.
    Differ(Class, String),
}

/// Compares two outcomes. `results` is false for statements whose rows do not
/// matter (only success or failure does); `ordered` when the query orders
/// its rows.
pub fn compare(datafusion: &Outcome, ember: &Outcome, results: bool, ordered: bool) -> Verdict {
    match (datafusion, ember) {
        (Outcome::Failed(_), Outcome::Failed(_)) => Verdict::BothFailed,
        (Outcome::Rows(_), Outcome::Failed(e)) => Verdict::Differ(Class::EmberFailed, e.clone()),
        (Outcome::Failed(e), Outcome::Rows(_)) => Verdict::Differ(
            Class::EmberSucceeded,
            format!("DataFusion failed with: {e}"),
        ),
        (Outcome::Rows(_), Outcome::Rows(_)) if !results => Verdict::Agree,
        (Outcome::Rows(d), Outcome::Rows(e)) => match compare_tables(d, e, ordered) {
            Ok(()) => Verdict::Agree,
            Err((class, detail)) => Verdict::Differ(class, detail),
        },
    }
}

fn compare_tables(df: &Table, ember: &Table, ordered: bool) -> Result<(), (Class, String)> {
    for batch in &ember.batches {
        if let Some(diff) = schema_difference(&ember.schema, &batch.schema(), true) {
            return Err((
                Class::BatchSchema,
                format!("announced vs batch: {}", diff.1),
            ));
        }
    }
    if let Some(diff) = schema_difference(&df.schema, &ember.schema, false) {
        return Err(diff);
    }
    let expected = render(&df.batches).map_err(|e| (Class::Values, e))?;
    let actual = render(&ember.batches).map_err(|e| (Class::Values, e))?;
    if expected.len() != actual.len() {
        return Err((
            Class::Values,
            format!(
                "{} rows, DataFusion {}{}",
                actual.len(),
                expected.len(),
                first_extra_row(&actual, &expected)
            ),
        ));
    }
    if ordered && actual != expected {
        let i = actual.iter().zip(&expected).position(|(a, e)| a != e);
        let sorted_equal = sorted(actual.clone()) == sorted(expected.clone());
        let detail = match i {
            Some(i) => format!("row {i} is {:?}, DataFusion {:?}", actual[i], expected[i]),
            None => String::new(),
        };
        return Err(if sorted_equal {
            (Class::Order, detail)
        } else {
            (Class::Values, detail)
        });
    }
    let (actual, expected) = (sorted(actual), sorted(expected));
    if let Some(i) = actual.iter().zip(&expected).position(|(a, e)| a != e) {
        return Err((
            Class::Values,
            format!(
                "sorted row {i} is {:?}, DataFusion {:?}",
                actual[i], expected[i]
            ),
        ));
    }
    Ok(())
}

/// The first difference between two schemas: types, then names, then
/// nullability (`strict`: also nullability of nested fields, as a batch must
/// match what was announced exactly).
fn schema_difference(expected: &Schema, actual: &Schema, strict: bool) -> Option<(Class, String)> {
    if expected.fields().len() != actual.fields().len() {
        return Some((
            Class::Types,
            format!(
                "{} columns, expected {}",
                actual.fields().len(),
                expected.fields().len()
            ),
        ));
    }
    let pairs = || expected.fields().iter().zip(actual.fields());
    for (e, a) in pairs() {
        let same = if strict {
            e.data_type() == a.data_type()
        } else {
            e.data_type().equals_datatype(a.data_type())
        };
        if !same {
            return Some((
                Class::Types,
                format!(
                    "column {}: {} where {} was expected",
                    e.name(),
                    a.data_type(),
                    e.data_type()
                ),
            ));
        }
    }
    if !strict {
        for (e, a) in pairs() {
            if e.name() != a.name() {
                return Some((
                    Class::Names,
                    format!("column {:?} where {:?} was expected", a.name(), e.name()),
                ));
            }
        }
    }
    for (e, a) in pairs() {
        if e.is_nullable() != a.is_nullable() || e.data_type() != a.data_type() {
            return Some((
                Class::Nullability,
                format!(
                    "column {}: {} where {} was expected",
                    e.name(),
                    describe(a.data_type(), a.is_nullable()),
                    describe(e.data_type(), e.is_nullable())
                ),
            ));
        }
    }
    None
}

fn describe(t: &DataType, nullable: bool) -> String {
    format!("{t}{}", if nullable { "" } else { " NOT NULL" })
}

fn sorted(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    rows.sort();
    rows
}

fn first_extra_row(actual: &[Vec<String>], expected: &[Vec<String>]) -> String {
    let (a, e) = (sorted(actual.to_vec()), sorted(expected.to_vec()));
    match a.iter().zip(&e).position(|(x, y)| x != y) {
        Some(i) => format!(
            "; first difference (sorted) {:?} vs DataFusion {:?}",
            a[i], e[i]
        ),
        None => String::new(),
    }
}

/// Every value of `batches` as text, row by row; floating-point values to 10
/// significant digits, so that sums added up in another order compare equal.
pub fn render(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = vec![];
    for batch in batches {
        let columns: Vec<Vec<String>> = batch
            .columns()
            .iter()
            .map(|c| render_column(c, &options))
            .collect::<Result<_, _>>()?;
        for r in 0..batch.num_rows() {
            rows.push(columns.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(rows)
}

fn render_column(column: &ArrayRef, options: &FormatOptions) -> Result<Vec<String>, String> {
    let float = |v: f64| {
        if v.is_finite() && v != 0.0 {
            format!("{v:.9e}")
        } else {
            format!("{v}")
        }
    };
    if matches!(
        column.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    ) {
        let wide = arrow::compute::cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
        return Ok(wide
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map_or_else(|| "NULL".to_string(), float))
            .collect());
    }
    let formatter = ArrayFormatter::try_new(column.as_ref(), options).map_err(|e| e.to_string())?;
    Ok((0..column.len())
        .map(|i| formatter.value(i).to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    fn table(columns: Vec<(&str, ArrayRef)>) -> Outcome {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        Outcome::Rows(Table {
            schema: batch.schema(),
            batches: vec![batch],
        })
    }

    #[test]
    fn sums_in_another_order_agree_but_other_values_do_not() {
        let a = table(vec![(
            "x",
            Arc::new(Float64Array::from(vec![0.1 + 0.2 + 0.3, 2.0])),
        )]);
        let b = table(vec![(
            "x",
            Arc::new(Float64Array::from(vec![2.0, 0.3 + 0.2 + 0.1])),
        )]);
        assert_eq!(compare(&a, &b, true, false), Verdict::Agree);
        assert!(matches!(
            compare(&a, &b, true, true),
            Verdict::Differ(Class::Order, _)
        ));
        let c = table(vec![("x", Arc::new(Float64Array::from(vec![0.6, 2.5])))]);
        assert!(matches!(
            compare(&a, &c, true, false),
            Verdict::Differ(Class::Values, _)
        ));
    }

    #[test]
    fn types_names_and_batches_are_checked() {
        let ints = table(vec![("x", Arc::new(Int64Array::from(vec![1])))]);
        let strings = table(vec![("x", Arc::new(StringArray::from(vec!["1"])))]);
        assert!(matches!(
            compare(&ints, &strings, true, false),
            Verdict::Differ(Class::Types, _)
        ));
        let renamed = table(vec![("y", Arc::new(Int64Array::from(vec![1])))]);
        assert!(matches!(
            compare(&ints, &renamed, true, false),
            Verdict::Differ(Class::Names, _)
        ));
        // Announced Int64, delivered Utf8.
        let Outcome::Rows(t) = &strings else {
            unreachable!()
        };
        let lying = Outcome::Rows(Table {
            schema: Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            batches: t.batches.clone(),
        });
        assert!(matches!(
            compare(&ints, &lying, true, false),
            Verdict::Differ(Class::BatchSchema, _)
        ));
        assert_eq!(
            compare(
                &Outcome::Failed("a".into()),
                &Outcome::Failed("b".into()),
                true,
                false
            ),
            Verdict::BothFailed
        );
        assert!(matches!(
            compare(&ints, &Outcome::Failed("boom".into()), true, false),
            Verdict::Differ(Class::EmberFailed, _)
        ));
    }
}
