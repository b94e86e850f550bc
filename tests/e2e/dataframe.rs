//! The DataFrame API: DataFusion's own `DataFrame`, executed on the cluster.

use ember::prelude::*;

use crate::common::{assert_same, query_text, rows, tpch_cluster, tpch_dir};

fn date(s: &str) -> Expr {
    ember::datafusion::prelude::cast(lit(s), ember::arrow::datatypes::DataType::Date32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_q1_and_q3_written_as_dataframes_equal_their_sql_answers() {
    let ctx = tpch_cluster(2).await;

    // Q1
    let disc_price = col("l_extendedprice") * (lit(1) - col("l_discount"));
    let q1 = ctx
        .table("lineitem")
        .await
        .unwrap()
        .filter(col("l_shipdate").lt_eq(date("1998-09-02")))
        .unwrap()
        .aggregate(
            vec![col("l_returnflag"), col("l_linestatus")],
            vec![
                sum(col("l_quantity")).alias("sum_qty"),
                sum(col("l_extendedprice")).alias("sum_base_price"),
                sum(disc_price.clone()).alias("sum_disc_price"),
                sum(disc_price.clone() * (lit(1) + col("l_tax"))).alias("sum_charge"),
                avg(col("l_quantity")).alias("avg_qty"),
                avg(col("l_extendedprice")).alias("avg_price"),
                avg(col("l_discount")).alias("avg_disc"),
                count(lit(1)).alias("count_order"),
            ],
        )
        .unwrap()
        .sort(vec![
            col("l_returnflag").sort(true, true),
            col("l_linestatus").sort(true, true),
        ])
        .unwrap();
    let got = q1.collect().await.unwrap();
    let want = ctx.sql(&query_text(1)).await.unwrap();
    assert_same("q1 as a DataFrame", rows(&got), rows(&want.batches), true);

    // Q3
    let customer = ctx
        .table("customer")
        .await
        .unwrap()
        .filter(col("c_mktsegment").eq(lit("BUILDING")))
        .unwrap();
    let orders = ctx
        .table("orders")
        .await
        .unwrap()
        .filter(col("o_orderdate").lt(date("1995-03-15")))
        .unwrap();
    let lineitem = ctx
        .table("lineitem")
        .await
        .unwrap()
        .filter(col("l_shipdate").gt(date("1995-03-15")))
        .unwrap();
    let q3 = customer
        .join(
            orders,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )
        .unwrap()
        .join(
            lineitem,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )
        .unwrap()
        .aggregate(
            vec![col("l_orderkey"), col("o_orderdate"), col("o_shippriority")],
            vec![sum(disc_price).alias("revenue")],
        )
        .unwrap()
        .select(vec![
            col("l_orderkey"),
            col("revenue"),
            col("o_orderdate"),
            col("o_shippriority"),
        ])
        .unwrap()
        .sort(vec![
            col("revenue").sort(false, true),
            col("o_orderdate").sort(true, true),
        ])
        .unwrap()
        .limit(0, Some(10))
        .unwrap();
    // Streamed, batch by batch, from the executors.
    let mut stream = q3.execute_stream().await.unwrap();
    let mut got = vec![];
    while let Some(batch) = stream.next().await {
        got.push(batch.unwrap());
    }
    let want = ctx.sql(&query_text(3)).await.unwrap();
    assert_same("q3 as a DataFrame", rows(&got), rows(&want.batches), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_parquet_counts_and_shows_on_the_cluster() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    let path = format!("{}/", tpch_dir().join("nation").display());
    let nation = ctx.read_parquet(&path).await.unwrap();
    assert_eq!(nation.clone().count().await.unwrap(), 25);
    let per_region = nation
        .aggregate(vec![col("n_regionkey")], vec![count(lit(1)).alias("n")])
        .unwrap()
        .sort(vec![col("n_regionkey").sort(true, true)])
        .unwrap();
    let got = per_region.collect().await.unwrap();
    assert_eq!(
        rows(&got),
        (0..5)
            .map(|r| vec![r.to_string(), "5".to_string()])
            .collect::<Vec<_>>()
    );
    // The plan that ran is the cluster's: one node on the client.
    let plan = ctx
        .table("nation_by_name_does_not_exist")
        .await
        .unwrap_err()
        .to_string();
    assert!(plan.contains("not found"), "{plan}");
}
