//! User-defined functions on real processes: a scheduler and executors
//! built with `examples/udf.rs`'s functions (through `SchedulerBuilder` and
//! `ExecutorBuilder`) run them from SQL and from DataFrames; a plain
//! `ember-executor` asked to run one fails the query, naming the function
//! and the executor.

use crate::cluster::{ProcessCluster, Program};
use crate::common::{assert_same, oracle_rows, register_tpch, rows};

const NET: &str = "SELECT l_returnflag, round(sum(net_price(l_extendedprice, l_discount)), 2), \
     round(spread(l_quantity), 2) FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag";
const NET_ORACLE: &str = "SELECT l_returnflag, round(sum(l_extendedprice * (1 - l_discount)), 2), \
     round(max(l_quantity) - min(l_quantity), 2) FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udfs_run_on_executors_built_with_them() {
    let cluster = ProcessCluster::start_programs(
        2,
        "",
        &[],
        Program::example("udf", "scheduler"),
        Program::example("udf", "executor"),
    );
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let got = ctx.run_sql(NET).await.unwrap();
    assert_same(
        "UDFs in SQL",
        rows(&got.batches),
        oracle_rows(NET_ORACLE).await,
        true,
    );
    // Through a DataFrame too: the plan comes back to the client, which
    // must know the functions by name.
    let e = ctx.sql(NET).await.unwrap_err();
    assert!(
        e.to_string().contains("register it in the EmberContext"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_executor_without_the_function_fails_the_query_clearly() {
    let cluster = ProcessCluster::start_programs(
        1,
        "",
        &[],
        Program::example("udf", "scheduler"),
        Program::binary("ember-executor"),
    );
    let ctx = cluster.session(1).await;
    register_tpch(&ctx).await;
    let e = ctx.run_sql(NET).await.unwrap_err().to_string();
    assert!(
        e.contains("executor exec-0 cannot run function 'net_price'")
            || e.contains("executor exec-0 cannot run function 'spread'"),
        "{e}"
    );
    assert!(e.contains("ExecutorBuilder"), "{e}");
    // It failed at once (the same on every attempt), and the cluster serves on.
    assert!(!e.contains("failed 4 times"), "{e}");
    let r = ctx.run_sql("SELECT count(*) FROM nation").await.unwrap();
    assert_eq!(rows(&r.batches), vec![vec!["25"]]);
}

fn plus_one() -> ember::prelude::ScalarUDF {
    use ember::arrow::array::Int64Array;
    use ember::arrow::datatypes::DataType;
    use ember::datafusion::common::cast::as_int64_array;
    use ember::datafusion::logical_expr::ColumnarValue;
    use ember::prelude::*;
    create_udf(
        "plus_one",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let out: Int64Array = as_int64_array(&arrays[0])?
                .iter()
                .map(|v| v.map(|v| v + 1))
                .collect();
            Ok(ColumnarValue::Array(std::sync::Arc::new(out)))
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_cluster_runs_udfs_from_sql_and_dataframes() {
    use ember::prelude::*;
    let options = StandaloneOptions::default().with_udf(plus_one());
    let ctx = EmberContext::standalone_with(options).await.unwrap();
    register_tpch(&ctx).await;
    let want = vec![vec!["325".to_string()]]; // sum of 1..=25
    let sql = ctx
        .sql("SELECT sum(plus_one(n_nationkey)) FROM nation")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&sql), want);
    let df = ctx
        .table("nation")
        .await
        .unwrap()
        .aggregate(vec![], vec![sum(plus_one().call(vec![col("n_nationkey")]))])
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&df), want);
}
