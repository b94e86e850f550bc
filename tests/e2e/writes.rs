//! Distributed writes on real processes: COPY TO, INSERT INTO an external
//! table and `DataFrame::write_*` round-trip (written by the executors in
//! parallel, read back, same rows as single-process DataFusion); exactly one
//! copy of every row after a write task fails or its executor dies; nothing
//! visible after a cancelled write.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember::prelude::*;
use ember::{EmberContext, Submitted};

use crate::cluster::ProcessCluster;
use crate::common::{assert_same, oracle_rows, register_tpch, rows};

/// Data files under `dir` (recursively), staging directory excluded.
fn visible_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == ".ember-staging" {
            continue;
        }
        if path.is_dir() {
            out.extend(visible_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn staged_files(dir: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|it| {
                it.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join(".ember-staging"))
}

async fn count_written(ctx: &EmberContext, sql: &str) -> u64 {
    let result = ctx
        .run_sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let r = rows(&result.batches);
    assert_eq!(r.len(), 1, "a write answers one row (count): {r:?}");
    r[0][0].parse().unwrap()
}

async fn read_back(
    ctx: &EmberContext,
    name: &str,
    format: &str,
    compression: &str,
    dir: &Path,
) -> Vec<Vec<String>> {
    let options = match (format, compression) {
        ("CSV", "") => " OPTIONS ('format.has_header' 'true')".to_string(),
        ("CSV", c) => {
            format!(" OPTIONS ('format.has_header' 'true', 'format.compression' '{c}')")
        }
        (_, "") => String::new(),
        (_, c) => format!(" OPTIONS ('format.compression' '{c}')"),
    };
    ctx.run_sql(&format!(
        "CREATE OR REPLACE EXTERNAL TABLE {name} STORED AS {format} LOCATION '{}/'{options}",
        dir.display()
    ))
    .await
    .unwrap();
    // JSON schema inference sorts columns by name: select them in order.
    rows(
        &ctx.run_sql(&format!(
            "SELECT o_orderkey, o_custkey, o_totalprice, o_orderpriority FROM {name}"
        ))
        .await
        .unwrap()
        .batches,
    )
}

const BIG_ORDERS: &str = "SELECT o_orderkey, o_custkey, o_totalprice, o_orderpriority FROM orders WHERE o_totalprice > 100000";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_insert_and_dataframe_writes_round_trip_on_processes() {
    let cluster = ProcessCluster::start(3, "", &[]);
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    let out = tempfile::tempdir().unwrap();
    let expected = oracle_rows(BIG_ORDERS).await;

    // COPY to Parquet, CSV and JSON directories, and compressed CSV and
    // JSON: written in parallel (one task per input partition, so several
    // files), read back identical (executors decompress as they scan).
    for (format, compression) in [
        ("PARQUET", ""),
        ("CSV", ""),
        ("JSON", ""),
        ("CSV", "gzip"),
        ("JSON", "zstd"),
        ("ARROW", ""),
    ] {
        let label = format!("{}{compression}", format.to_lowercase());
        let dir = out.path().join(&label);
        let options = if compression.is_empty() {
            String::new()
        } else {
            format!(" OPTIONS ('format.compression' '{compression}')")
        };
        let n = count_written(
            &ctx,
            &format!(
                "COPY ({BIG_ORDERS}) TO '{}/' STORED AS {format}{options}",
                dir.display()
            ),
        )
        .await;
        assert_eq!(n as usize, expected.len(), "{format}: rows written");
        let files = visible_files(&dir);
        assert!(
            files.len() > 1,
            "{format}: one task wrote everything: {files:?}"
        );
        assert!(
            !dir.join(".ember-staging").exists(),
            "{format}: staging left behind"
        );
        let back = read_back(&ctx, &format!("back_{label}"), format, compression, &dir).await;
        assert_same(&format!("COPY TO {label}"), back, expected.clone(), false);
    }

    // PARTITIONED BY: hive-style directories, every row in its partition.
    let part = out.path().join("by_priority");
    let n = count_written(
        &ctx,
        &format!(
            "COPY ({BIG_ORDERS}) TO '{}/' STORED AS PARQUET PARTITIONED BY (o_orderpriority)",
            part.display()
        ),
    )
    .await;
    assert_eq!(n as usize, expected.len());
    let mut dirs: Vec<String> = std::fs::read_dir(&part)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"]
            .map(|p| format!("o_orderpriority={p}")),
    );
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE by_priority (o_orderkey BIGINT, o_custkey BIGINT, \
         o_totalprice DOUBLE, o_orderpriority VARCHAR) STORED AS PARQUET \
         PARTITIONED BY (o_orderpriority) LOCATION '{}/'",
        part.display()
    ))
    .await
    .unwrap();
    let back = rows(
        &ctx.run_sql(
            "SELECT o_orderkey, o_custkey, o_totalprice, o_orderpriority FROM by_priority",
        )
        .await
        .unwrap()
        .batches,
    );
    assert_same("COPY PARTITIONED BY", back, expected.clone(), false);

    // A single file: one writer, the exact path.
    let one = out.path().join("one.parquet");
    count_written(
        &ctx,
        &format!(
            "COPY ({BIG_ORDERS} ORDER BY o_orderkey) TO '{}'",
            one.display()
        ),
    )
    .await;
    assert!(one.is_file());
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE one STORED AS PARQUET LOCATION '{}'",
        one.display()
    ))
    .await
    .unwrap();
    // One writer keeps the query's order.
    let back = rows(&ctx.run_sql("SELECT * FROM one").await.unwrap().batches);
    let in_order = oracle_rows(&format!("{BIG_ORDERS} ORDER BY o_orderkey")).await;
    assert_same("COPY to one file", back, in_order, true);

    // CREATE EXTERNAL TABLE + INSERT INTO, twice: appended, both copies there.
    for format in ["PARQUET", "ARROW"] {
        let name = format!("appended_{}", format.to_lowercase());
        let table = out.path().join(&name);
        std::fs::create_dir(&table).unwrap();
        ctx.run_sql(&format!(
            "CREATE EXTERNAL TABLE {name} (o_orderkey BIGINT, o_custkey BIGINT, \
             o_totalprice DOUBLE, o_orderpriority VARCHAR) STORED AS {format} LOCATION '{}/'",
            table.display()
        ))
        .await
        .unwrap();
        for _ in 0..2 {
            let n = count_written(&ctx, &format!("INSERT INTO {name} {BIG_ORDERS}")).await;
            assert_eq!(n as usize, expected.len());
        }
        let back = rows(
            &ctx.run_sql(&format!("SELECT * FROM {name}"))
                .await
                .unwrap()
                .batches,
        );
        let twice: Vec<_> = expected.iter().chain(expected.iter()).cloned().collect();
        assert_same(&format!("INSERT INTO twice ({format})"), back, twice, false);
    }

    // A NULL for a NOT NULL column fails the write, as in DataFusion (the
    // Parquet writer would store a zero), and publishes nothing.
    let strict = out.path().join("strict");
    std::fs::create_dir(&strict).unwrap();
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE strict (a BIGINT NOT NULL, b BIGINT) STORED AS PARQUET LOCATION '{}/'",
        strict.display()
    ))
    .await
    .unwrap();
    assert_eq!(
        count_written(&ctx, "INSERT INTO strict (a) VALUES (3)").await,
        1
    );
    let err = ctx
        .run_sql("INSERT INTO strict (b) VALUES (300)")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has null but schema specifies non-nullable"),
        "{err}"
    );
    let back = rows(&ctx.run_sql("SELECT * FROM strict").await.unwrap().batches);
    assert_eq!(back, vec![vec!["3".to_string(), "NULL".to_string()]]);

    // The DataFrame API writes on the cluster too.
    let df_dir = out.path().join("dataframe");
    let written = ctx
        .table("orders")
        .await
        .unwrap()
        .filter(col("o_totalprice").gt(lit(100_000.0)))
        .unwrap()
        .select_columns(&["o_orderkey", "o_custkey", "o_totalprice", "o_orderpriority"])
        .unwrap()
        .write_parquet(
            &format!("{}/", df_dir.display()),
            DataFrameWriteOptions::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(rows(&written), vec![vec![expected.len().to_string()]]);
    let back = ctx
        .read_parquet(
            &format!("{}/", df_dir.display()),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_same("DataFrame::write_parquet", rows(&back), expected, false);
}

/// A write task that fails after writing its files, or whose executor dies
/// then, is retried; only the files of the accepted attempt are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_write_tasks_leave_exactly_one_copy_of_every_row() {
    let expected = oracle_rows(BIG_ORDERS).await;
    for fault in [
        "fail@task-end:stage=0:times=1",
        "kill@task-end:stage=0:times=1",
    ] {
        let cluster = ProcessCluster::start(3, fault, &[]);
        let ctx = cluster.session(3).await;
        register_tpch(&ctx).await;
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("t");
        let result = ctx
            .run_sql(&format!(
                "COPY ({BIG_ORDERS}) TO '{}/' STORED AS PARQUET",
                dir.display()
            ))
            .await
            .unwrap_or_else(|e| panic!("{fault}: the write must survive: {e}"));
        let status = result.job.expect("job status");
        assert!(
            status.stages.iter().any(|s| s.attempt > 0) || !status.events.is_empty(),
            "{fault}: the fault never fired: {status:?}"
        );
        let back = read_back(&ctx, "t", "PARQUET", "", &dir).await;
        assert_same(
            &format!("write with {fault}"),
            back,
            expected.clone(),
            false,
        );
        // The failed attempt's files were staged, then deleted with the rest.
        assert!(
            !dir.join(".ember-staging").exists(),
            "{fault}: staging left behind"
        );
    }
}

/// Cancelling a write whose tasks have already staged files publishes
/// nothing and removes the staged files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_write_leaves_no_visible_files() {
    let cluster = ProcessCluster::start(2, "hang@task-end:stage=0:times=100", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("t");
    let Submitted::Job(job) = ctx
        .submit_sql(&format!(
            "COPY ({BIG_ORDERS}) TO '{}/' STORED AS PARQUET",
            dir.display()
        ))
        .await
        .unwrap()
    else {
        panic!("a write is a job");
    };
    // Wait until tasks have written their files (into staging) and hang.
    let deadline = Instant::now() + Duration::from_secs(30);
    while staged_files(&dir) == 0 {
        assert!(Instant::now() < deadline, "no task staged any file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        visible_files(&dir).is_empty(),
        "staged files must not be visible"
    );
    assert!(ctx.cancel(&job.job_id).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.join(".ember-staging").exists() {
        assert!(Instant::now() < deadline, "staged files never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        visible_files(&dir).is_empty(),
        "a cancelled write published files"
    );
}

/// Hive partition values are dictionary-encoded. Merged from map outputs on
/// two executors (one local, one fetched over Flight), they must keep one
/// type: Flight used to hydrate dictionaries into plain strings, and the
/// merge failed mixing the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_columns_keep_their_dictionary_type_across_executors() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().display();
    ctx.run_sql(&format!(
        "COPY (SELECT 1 AS a, 'x' AS p UNION ALL SELECT 2, 'y') TO '{dir}/' \
         STORED AS PARQUET PARTITIONED BY (p)"
    ))
    .await
    .unwrap();
    ctx.run_sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET PARTITIONED BY (p) LOCATION '{dir}/'"
    ))
    .await
    .unwrap();
    let sorted = ctx.run_sql("SELECT a, p FROM t ORDER BY a").await.unwrap();
    assert_eq!(rows(&sorted.batches), vec![vec!["1", "x"], vec!["2", "y"]]);
}
