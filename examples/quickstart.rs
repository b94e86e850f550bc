//! Quick start: an embedded cluster (a scheduler and two executors in this
//! process, talking gRPC and Flight on loopback), a table from in-memory
//! data, SQL and a DataFrame over it, and a streamed result.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::sync::Arc;

use ember::arrow::array::{Int64Array, StringArray};
use ember::arrow::datatypes::{DataType, Field, Schema};
use ember::arrow::record_batch::RecordBatch;
use ember::prelude::*;

#[tokio::main]
async fn main() -> ember::Result<()> {
    let ctx = EmberContext::standalone(2).await?;

    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("population", DataType::Int64, false),
    ]));
    let cities = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["Lyon", "Oslo", "Porto", "Quito"])),
            Arc::new(Int64Array::from(vec![522_000, 709_000, 232_000, 2_800_000])),
        ],
    )?;
    ctx.register_batch("cities", cities).await?;

    // SQL, collected.
    let result = ctx
        .run_sql("SELECT city FROM cities WHERE population > 500000 ORDER BY city")
        .await?;
    println!("{}", result.pretty()?);

    // The same session's table as a DataFrame; it runs on the cluster.
    let big = ctx
        .table("cities")
        .await?
        .filter(col("population").gt(lit(500_000)))?
        .aggregate(vec![], vec![count(lit(1)).alias("big_cities")])?;
    big.show().await?;

    // A streamed result: batches as the executors serve them.
    let mut stream = ctx.sql_stream("SELECT * FROM cities").await?;
    while let Some(batch) = stream.next().await {
        println!("a batch of {} rows", batch?.num_rows());
    }
    ctx.close().await
}
