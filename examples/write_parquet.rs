//! Writing Parquet: a DataFrame and a SQL `COPY` written by the executors
//! (one task per partition, files published only when the whole job
//! succeeded), then read back.
//!
//! ```sh
//! cargo run --example write_parquet -- /tmp/ember-out
//! ```

use ember::prelude::*;

#[tokio::main]
async fn main() -> ember::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("ember-write-parquet")
            .display()
            .to_string()
    });
    let ctx = EmberContext::standalone(2).await?;

    // A DataFrame written as a directory of Parquet files.
    let squares = ctx
        .sql("SELECT value AS n, value * value AS square FROM generate_series(1, 100000)")
        .await?
        .filter(col("n").gt(lit(10)))?;
    let written = squares
        .write_parquet(
            &format!("{out}/squares/"),
            DataFrameWriteOptions::new(),
            None,
        )
        .await?;
    let rows = ember::arrow::util::pretty::pretty_format_batches(&written)?;
    println!("DataFrame::write_parquet wrote\n{rows}");

    // SQL, partitioned by a column: one directory per value (n_mod=0/, ...).
    ctx.register_parquet(
        "squares_src",
        &format!("{out}/squares/"),
        ParquetReadOptions::default(),
    )
    .await?;
    ctx.sql(&format!(
        "COPY (SELECT n, square, n % 4 AS n_mod FROM squares_src) TO '{out}/by_mod/' \
         STORED AS PARQUET PARTITIONED BY (n_mod)"
    ))
    .await?
    .show()
    .await?;

    // Read back.
    let back = ctx
        .read_parquet(&format!("{out}/squares/"), ParquetReadOptions::default())
        .await?;
    println!("read back {} rows from {out}/squares/", back.count().await?);
    Ok(())
}
