//! A remote cluster: connect to a running scheduler, build a DataFrame from
//! SQL, and stream a large result batch by batch (client memory stays at a
//! few batches however many rows there are).
//!
//! ```sh
//! cargo run --release --bin ember-scheduler -- --bind 127.0.0.1:50050 &
//! cargo run --release --bin ember-executor -- --scheduler http://127.0.0.1:50050 &
//! cargo run --example remote -- http://127.0.0.1:50050 10000000
//! ```

use ember::prelude::*;

#[tokio::main]
async fn main() -> ember::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50050".to_string());
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let ctx = EmberContext::remote(&url).await?;
    let info = ctx.cluster_info().await?;
    println!("connected to {url}: {} executor(s)", info.executors.len());

    let df = ctx
        .sql(&format!("SELECT value FROM generate_series(1, {n})"))
        .await?
        .select(vec![
            col("value"),
            (col("value") * lit(2)).alias("doubled"),
            (col("value") % lit(7)).alias("bucket"),
        ])?;
    let mut stream = df.execute_stream().await?;
    let (mut rows, mut batches, mut sum) = (0u64, 0u64, 0i64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let doubled = batch
            .column(1)
            .as_any()
            .downcast_ref::<ember::arrow::array::Int64Array>()
            .expect("doubled is Int64");
        sum += doubled.iter().flatten().sum::<i64>();
        rows += batch.num_rows() as u64;
        batches += 1;
    }
    println!("rows={rows} batches={batches} sum_doubled={sum}");
    if let Some(peak) = peak_rss_mib() {
        println!("peak_rss_mib={peak}");
    }
    ctx.close().await
}

/// This process's peak resident memory (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
