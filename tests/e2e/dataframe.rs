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
    let want = ctx.run_sql(&query_text(1)).await.unwrap();
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
    let want = ctx.run_sql(&query_text(3)).await.unwrap();
    assert_same("q3 as a DataFrame", rows(&got), rows(&want.batches), true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_parquet_counts_and_shows_on_the_cluster() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    let path = format!("{}/", tpch_dir().join("nation").display());
    let nation = ctx
        .read_parquet(&path, ParquetReadOptions::default())
        .await
        .unwrap();
    assert_eq!(nation.clone().count().await.unwrap(), 25);

    // Read options travel: a CSV header read as data is one more row;
    // hive partitions become a column.
    let out = tempfile::tempdir().unwrap();
    let csv = format!("{}/csv/", out.path().display());
    nation
        .clone()
        .write_csv(&csv, DataFrameWriteOptions::new(), None)
        .await
        .unwrap();
    let with_header = ctx.read_csv(&csv, CsvReadOptions::new()).await.unwrap();
    assert_eq!(with_header.count().await.unwrap(), 25);
    let no_header = ctx
        .read_csv(&csv, CsvReadOptions::new().has_header(false))
        .await
        .unwrap();
    let files = std::fs::read_dir(&csv).unwrap().count();
    assert_eq!(
        no_header.count().await.unwrap(),
        25 + files,
        "one header per file"
    );
    // JSON array files, not one object per line.
    let arrays = out.path().join("arrays");
    std::fs::create_dir(&arrays).unwrap();
    std::fs::write(
        arrays.join("a.json"),
        "[{\"k\": 1}, {\"k\": 2},\n{\"k\": 3}]\n",
    )
    .unwrap();
    let json = ctx
        .read_json(
            &format!("{}/", arrays.display()),
            JsonReadOptions::default().newline_delimited(false),
        )
        .await
        .unwrap();
    assert_eq!(json.count().await.unwrap(), 3);
    let parts = format!("{}/parts/", out.path().display());
    ctx.run_sql(&format!(
        "COPY (SELECT n_nationkey, n_regionkey FROM nation_by_region_src) TO '{parts}' \
         STORED AS PARQUET PARTITIONED BY (n_regionkey)"
    ))
    .await
    .unwrap_err(); // no such table: a clear error, nothing written
    nation
        .clone()
        .select_columns(&["n_nationkey", "n_regionkey"])
        .unwrap()
        .write_parquet(
            &parts,
            DataFrameWriteOptions::new().with_partition_by(vec!["n_regionkey".into()]),
            None,
        )
        .await
        .unwrap();
    let by_region = ctx
        .read_parquet(
            &parts,
            ParquetReadOptions::default().table_partition_cols(vec![(
                "n_regionkey".into(),
                ember::arrow::datatypes::DataType::Utf8,
            )]),
        )
        .await
        .unwrap()
        .filter(col("n_regionkey").eq(lit("3")))
        .unwrap();
    assert_eq!(by_region.count().await.unwrap(), 5);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_batch_is_shipped_to_the_cluster_and_capped_in_size() {
    use ember::arrow::array::{Int64Array, StringArray};
    use ember::arrow::datatypes::{DataType, Field, Schema};
    use ember::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    let ctx = tpch_cluster(2).await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("label", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![0, 1, 2])),
            Arc::new(StringArray::from(vec!["zero", "one", "two"])),
        ],
    )
    .unwrap();
    ctx.register_batch("labels", batch.clone()).await.unwrap();
    // SQL and DataFrames of the session both see it; the join runs on the
    // executors (the batch travels inside the stage plans).
    let sql = ctx
        .run_sql("SELECT label, count(*) AS n FROM nation JOIN labels ON n_regionkey = key GROUP BY label ORDER BY label")
        .await
        .unwrap();
    assert_eq!(
        rows(&sql.batches),
        vec![
            vec!["one".to_string(), "5".to_string()],
            vec!["two".to_string(), "5".to_string()],
            vec!["zero".to_string(), "5".to_string()],
        ]
    );
    let df = ctx.read_batch(batch).await.unwrap();
    assert_eq!(df.count().await.unwrap(), 3);

    // Past the limit: a clear error, and the session goes on.
    let big = "x".repeat(1024 * 1024);
    let big_batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec![big.as_str(); 20]))],
    )
    .unwrap();
    let e = ctx
        .register_batch("too_big", big_batch)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the limit") && e.contains("Parquet"), "{e}");
    assert_eq!(ctx.run_sql("SELECT 1").await.unwrap().num_rows(), 1);
}

/// customer ⋈ orders placed in [`from`, `to`) ⋈ lineitem: the start of Q5
/// and Q10.
async fn orders_in(ctx: &EmberContext, from: &str, to: &str) -> DataFrame {
    let table = |name: &'static str| async move { ctx.table(name).await.unwrap() };
    table("customer")
        .await
        .join(
            table("orders").await,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )
        .unwrap()
        .filter(
            col("o_orderdate")
                .gt_eq(date(from))
                .and(col("o_orderdate").lt(date(to))),
        )
        .unwrap()
        .join(
            table("lineitem").await,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_q5_q10_and_q18_written_as_dataframes_equal_their_sql_answers() {
    let ctx = tpch_cluster(2).await;
    let t = |name: &'static str| {
        let ctx = &ctx;
        async move { ctx.table(name).await.unwrap() }
    };
    let revenue = || sum(col("l_extendedprice") * (lit(1) - col("l_discount"))).alias("revenue");

    // Q5
    let q5 = orders_in(&ctx, "1994-01-01", "1995-01-01")
        .await
        .join(
            t("supplier").await,
            JoinType::Inner,
            &["l_suppkey", "c_nationkey"],
            &["s_suppkey", "s_nationkey"],
            None,
        )
        .unwrap()
        .join(
            t("nation").await,
            JoinType::Inner,
            &["s_nationkey"],
            &["n_nationkey"],
            None,
        )
        .unwrap()
        .join(
            t("region").await,
            JoinType::Inner,
            &["n_regionkey"],
            &["r_regionkey"],
            None,
        )
        .unwrap()
        .filter(col("r_name").eq(lit("ASIA")))
        .unwrap()
        .aggregate(vec![col("n_name")], vec![revenue()])
        .unwrap()
        .sort(vec![col("revenue").sort(false, true)])
        .unwrap();
    let want = ctx.run_sql(&query_text(5)).await.unwrap();
    assert!(want.num_rows() > 0, "q5 has rows at this scale");
    assert_same(
        "q5 as a DataFrame",
        rows(&q5.collect().await.unwrap()),
        rows(&want.batches),
        true,
    );

    // Q10
    let q10 = orders_in(&ctx, "1993-10-01", "1994-01-01")
        .await
        .filter(col("l_returnflag").eq(lit("R")))
        .unwrap()
        .join(
            t("nation").await,
            JoinType::Inner,
            &["c_nationkey"],
            &["n_nationkey"],
            None,
        )
        .unwrap()
        .aggregate(
            vec![
                col("c_custkey"),
                col("c_name"),
                col("c_acctbal"),
                col("c_phone"),
                col("n_name"),
                col("c_address"),
                col("c_comment"),
            ],
            vec![revenue()],
        )
        .unwrap()
        .select(vec![
            col("c_custkey"),
            col("c_name"),
            col("revenue"),
            col("c_acctbal"),
            col("n_name"),
            col("c_address"),
            col("c_phone"),
            col("c_comment"),
        ])
        .unwrap()
        .sort(vec![col("revenue").sort(false, true)])
        .unwrap()
        .limit(0, Some(20))
        .unwrap();
    let want = ctx.run_sql(&query_text(10)).await.unwrap();
    assert!(want.num_rows() > 0, "q10 has rows at this scale");
    assert_same(
        "q10 as a DataFrame",
        rows(&q10.collect().await.unwrap()),
        rows(&want.batches),
        true,
    );

    // Q18
    let big_orders = t("lineitem")
        .await
        .aggregate(
            vec![col("l_orderkey")],
            vec![sum(col("l_quantity")).alias("total")],
        )
        .unwrap()
        .filter(col("total").gt(lit(300)))
        .unwrap()
        .select(vec![col("l_orderkey").alias("big_orderkey")])
        .unwrap();
    let q18 = t("customer")
        .await
        .join(
            t("orders").await,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )
        .unwrap()
        .join(
            big_orders,
            JoinType::LeftSemi,
            &["o_orderkey"],
            &["big_orderkey"],
            None,
        )
        .unwrap()
        .join(
            t("lineitem").await,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )
        .unwrap()
        .aggregate(
            vec![
                col("c_name"),
                col("c_custkey"),
                col("o_orderkey"),
                col("o_orderdate"),
                col("o_totalprice"),
            ],
            vec![sum(col("l_quantity"))],
        )
        .unwrap()
        .sort(vec![
            col("o_totalprice").sort(false, true),
            col("o_orderdate").sort(true, true),
        ])
        .unwrap()
        .limit(0, Some(100))
        .unwrap();
    let want = ctx.run_sql(&query_text(18)).await.unwrap();
    assert!(want.num_rows() > 0, "q18 has rows at this scale");
    assert_same(
        "q18 as a DataFrame",
        rows(&q18.collect().await.unwrap()),
        rows(&want.batches),
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_gives_a_dataframe_to_build_on_with_the_same_answers() {
    let ctx = tpch_cluster(2).await;
    // All 22 TPC-H queries, planned by the scheduler, built into a client
    // DataFrame, shipped back and run: the same answers as statements.
    for q in 1..=22 {
        let sql = query_text(q);
        let want = ctx.run_sql(&sql).await.unwrap();
        let got = ctx
            .sql(&sql)
            .await
            .unwrap_or_else(|e| panic!("q{q}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("q{q}: {e}"));
        assert_same(
            &format!("q{q} via sql()"),
            rows(&got),
            rows(&want.batches),
            true,
        );
    }

    // Built on: filtered and aggregated after the SQL.
    let got = ctx
        .sql("SELECT n_name, n_regionkey FROM nation")
        .await
        .unwrap()
        .filter(col("n_regionkey").lt(lit(2)))
        .unwrap()
        .aggregate(vec![col("n_regionkey")], vec![count(lit(1)).alias("n")])
        .unwrap()
        .sort(vec![col("n_regionkey").sort(true, true)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&got), vec![vec!["0", "5"], vec!["1", "5"]]);

    // Table functions, parameters.
    // (count(value), not count(*): datafusion-proto drops the empty
    // projection of a generate_series scan.)
    let series = ctx
        .sql("SELECT value FROM generate_series(1, 100000)")
        .await
        .unwrap()
        .aggregate(vec![], vec![count(col("value")), sum(col("value"))])
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&series), vec![vec!["100000", "5000050000"]]);
    let by_param = ctx
        .sql_with_params(
            "SELECT n_name FROM nation WHERE n_regionkey = $1 ORDER BY n_name",
            vec![ember::datafusion::common::ScalarValue::Int64(Some(3))],
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows(&by_param).len(), 5);

    // Catalog statements run at once; their rows are a DataFrame too.
    let dir = crate::common::tpch_dir().join("region");
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE region_again STORED AS PARQUET LOCATION '{}/'",
        dir.display()
    ))
    .await
    .unwrap();
    assert_eq!(
        ctx.table("region_again")
            .await
            .unwrap()
            .count()
            .await
            .unwrap(),
        5
    );
    let tables = ctx
        .sql("SHOW TABLES")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        rows(&tables)
            .iter()
            .any(|r| r.contains(&"region_again".to_string()))
    );

    // cache() would pull everything into the client: refused, clearly.
    let e = ctx
        .table("orders")
        .await
        .unwrap()
        .cache()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("DataFrame::cache()"), "{e}");
}
