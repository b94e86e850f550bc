//! All 22 TPC-H queries on an embedded cluster of two executors, each checked
//! against single-process DataFusion on the same files.

use crate::common::{assert_same, oracle_rows, query_text, rows, tpch_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_22_tpch_queries_match_single_process_datafusion() {
    let ctx = tpch_cluster(2).await;
    let mut failures = vec![];
    for q in 1..=22 {
        let sql = query_text(q);
        let ordered = ember::verify::is_ordered(&sql);
        let result = match ctx.run_sql(&sql).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("q{q}: {e}"));
                continue;
            }
        };
        let expected = oracle_rows(&sql).await;
        let actual = rows(&result.batches);
        let outcome = std::panic::catch_unwind(move || {
            assert_same(&format!("q{q}"), actual, expected, ordered)
        });
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "mismatch".into());
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "TPC-H failures:\n{}",
        failures.join("\n")
    );
}
