//! Shared helpers: TPC-H data generated once per test run, the single-process
//! DataFusion oracle, and result comparison.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::{Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use ember::EmberContext;

/// SF 0.01 TPC-H, 3 files per large table, generated once per test binary.
pub fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ember-e2e-tpch-{}", std::process::id()));
        ember::tpch::generate(&dir, 0.01, 3).expect("generate TPC-H data");
        dir
    })
}

pub fn query_text(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benchmarks/queries/q{n}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An embedded cluster of `executors` executors with the TPC-H tables.
pub async fn tpch_cluster(executors: usize) -> EmberContext {
    let ctx = EmberContext::standalone(executors)
        .await
        .expect("embedded cluster");
    register_tpch(&ctx).await;
    ctx
}

pub async fn register_tpch(ctx: &EmberContext) {
    for stmt in ember::tpch::create_table_statements(tpch_dir()) {
        ctx.sql(&stmt).await.expect("create table");
    }
}

/// Single-process DataFusion over the same files: the correctness oracle.
pub async fn oracle() -> SessionContext {
    let ctx = SessionContext::new();
    for t in ember::tpch::TABLES {
        let path = format!("{}/", tpch_dir().join(t).display());
        ctx.register_parquet(t, &path, ParquetReadOptions::default())
            .await
            .expect("register table");
    }
    ctx
}

pub async fn oracle_rows(sql: &str) -> Vec<Vec<Cell>> {
    let batches = oracle()
        .await
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    rows(&batches)
}

/// A value, compared exactly unless it is a number with a fraction.
#[derive(Debug, Clone)]
pub enum Cell {
    Exact(String),
    Number(f64),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cell::Exact(a), Cell::Exact(b)) => a == b,
            (Cell::Number(a), Cell::Number(b)) => {
                (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0) + 1e-9
            }
            _ => false,
        }
    }
}

pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = vec![];
    for batch in batches {
        let cols: Vec<(bool, std::sync::Arc<dyn Array>)> = batch
            .columns()
            .iter()
            .map(|c| {
                let numeric = matches!(
                    c.data_type(),
                    DataType::Float16
                        | DataType::Float32
                        | DataType::Float64
                        | DataType::Decimal128(..)
                        | DataType::Decimal256(..)
                );
                let as_text = cast(c, &DataType::Utf8).expect("cast to text");
                (numeric, as_text)
            })
            .collect();
        for r in 0..batch.num_rows() {
            out.push(
                cols.iter()
                    .map(|(numeric, col)| {
                        let s = col
                            .as_any()
                            .downcast_ref::<arrow::array::StringArray>()
                            .unwrap();
                        if col.is_null(r) {
                            Cell::Exact("NULL".into())
                        } else if *numeric {
                            Cell::Number(s.value(r).parse().unwrap())
                        } else {
                            Cell::Exact(s.value(r).to_string())
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

fn sort_key(row: &[Cell]) -> String {
    row.iter()
        .map(|c| match c {
            Cell::Exact(s) => s.clone(),
            Cell::Number(n) => format!("{:.2}", n),
        })
        .collect::<Vec<_>>()
        .join("\u{1}")
}

/// Compares results; row order counts only when `ordered`.
pub fn assert_same(
    what: &str,
    mut actual: Vec<Vec<Cell>>,
    mut expected: Vec<Vec<Cell>>,
    ordered: bool,
) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} rows, expected {}",
        actual.len(),
        expected.len()
    );
    if !ordered {
        actual.sort_by_key(|r| sort_key(r));
        expected.sort_by_key(|r| sort_key(r));
    }
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{what}: row {i} differs");
    }
}

/// Path of a workspace binary built next to this test binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, as the README's test command does)",
        path.display()
    );
    path
}
