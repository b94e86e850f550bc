//! Shared helpers: TPC-H data generated once per test run, the single-process
//! DataFusion oracle, and result comparison.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use ember::EmberContext;

/// SF 0.01 TPC-H, 3 files per large table: generated once and reused by
/// later runs (generation is deterministic). Written to a private directory
/// and renamed into place, so concurrent runs never see half a data set.
pub fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("ember-e2e-tpch-sf0.01-3files");
        if !dir.join(ember::tpch::METADATA_FILE).exists() {
            let staging =
                std::env::temp_dir().join(format!("ember-e2e-tpch-staging-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&staging);
            ember::tpch::generate(&staging, 0.01, 3).expect("generate TPC-H data");
            if std::fs::rename(&staging, &dir).is_err() {
                // Another run got there first; its data is the same.
                let _ = std::fs::remove_dir_all(&staging);
            }
        }
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
        ctx.run_sql(&stmt).await.expect("create table");
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

pub async fn oracle_rows(sql: &str) -> Vec<Vec<String>> {
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

pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    ember::verify::rows_as_text(batches).expect("render rows")
}

/// Compares results; row order counts only when `ordered`.
pub fn assert_same(
    what: &str,
    actual: Vec<Vec<String>>,
    expected: Vec<Vec<String>>,
    ordered: bool,
) {
    if let Err(e) = ember::verify::compare(actual, expected, ordered) {
        panic!("{what}: {e}");
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
