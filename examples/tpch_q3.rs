//! TPC-H Q3 written with the DataFrame API, on a remote cluster or an
//! embedded one.
//!
//! ```sh
//! cargo run --release --bin ember-bench -- tpch gen --sf 0.1 --out data/tpch/sf0.1
//! cargo run --example tpch_q3 -- data/tpch/sf0.1                           # embedded
//! cargo run --example tpch_q3 -- data/tpch/sf0.1 http://127.0.0.1:50050    # a cluster
//! ```

use ember::prelude::*;

fn date(s: &str) -> Expr {
    ember::datafusion::prelude::cast(lit(s), ember::arrow::datatypes::DataType::Date32)
}

#[tokio::main]
async fn main() -> ember::Result<()> {
    let mut args = std::env::args().skip(1);
    let data = args.next().unwrap_or_else(|| "data/tpch/sf0.1".into());
    let ctx = match args.next() {
        Some(url) => EmberContext::remote(&url).await?,
        None => EmberContext::standalone(2).await?,
    };
    for table in ["customer", "orders", "lineitem"] {
        ctx.register_parquet(
            table,
            &format!("{data}/{table}/"),
            ParquetReadOptions::default(),
        )
        .await?;
    }
    let customer = ctx
        .table("customer")
        .await?
        .filter(col("c_mktsegment").eq(lit("BUILDING")))?;
    let orders = ctx
        .table("orders")
        .await?
        .filter(col("o_orderdate").lt(date("1995-03-15")))?;
    let lineitem = ctx
        .table("lineitem")
        .await?
        .filter(col("l_shipdate").gt(date("1995-03-15")))?;
    let revenue = sum(col("l_extendedprice") * (lit(1) - col("l_discount"))).alias("revenue");
    customer
        .join(
            orders,
            JoinType::Inner,
            &["c_custkey"],
            &["o_custkey"],
            None,
        )?
        .join(
            lineitem,
            JoinType::Inner,
            &["o_orderkey"],
            &["l_orderkey"],
            None,
        )?
        .aggregate(
            vec![col("l_orderkey"), col("o_orderdate"), col("o_shippriority")],
            vec![revenue],
        )?
        .sort(vec![
            col("revenue").sort(false, true),
            col("o_orderdate").sort(true, true),
        ])?
        .limit(0, Some(10))?
        .show()
        .await?;
    Ok(())
}
