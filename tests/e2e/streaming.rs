//! Streamed results: batches arrive as executors serve them, the schema
//! announced is every batch's schema, and dropping a stream frees the job.

use std::time::{Duration, Instant};

use ember::EmberContext;
use ember_executor::{Executor, ExecutorConfig};
use ember_scheduler::{Scheduler, SchedulerConfig};
use futures::StreamExt;

use crate::common::{assert_same, register_tpch, rows, tpch_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_result_equals_the_collected_one() {
    let ctx = tpch_cluster(2).await;
    // 7.5 million rows, several result partitions.
    let sql =
        "SELECT l_orderkey + n_nationkey AS k FROM lineitem CROSS JOIN nation CROSS JOIN region";
    let mut stream = ctx.sql_stream(sql).await.unwrap();
    let schema = stream.schema();
    let (mut rows_seen, mut batches, mut sum) = (0usize, 0usize, 0i64);
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert_eq!(batch.schema(), schema);
        assert!(batch.num_rows() <= 8192, "batches arrive as produced");
        let k = batch
            .column(0)
            .as_any()
            .downcast_ref::<ember::arrow::array::Int64Array>()
            .unwrap();
        sum += k.iter().flatten().sum::<i64>();
        rows_seen += batch.num_rows();
        batches += 1;
    }
    let expected = ctx
        .run_sql(&format!("SELECT count(*), sum(k) FROM ({sql})"))
        .await
        .unwrap();
    assert_eq!(
        rows(&expected.batches),
        vec![vec![rows_seen.to_string(), sum.to_string()]]
    );
    assert!(
        rows_seen > 7_000_000 && batches > 100,
        "{rows_seen} rows in {batches} batches"
    );

    // Statements the scheduler answers stream too.
    let mut shown = ctx.sql_stream("SHOW TABLES").await.unwrap();
    assert!(shown.next().await.unwrap().unwrap().num_rows() >= 8);
    let small = "SELECT n_name FROM nation ORDER BY n_name";
    let streamed: Vec<_> = ctx
        .sql_stream(small)
        .await
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
        .await;
    assert_same(
        "ordered stream",
        rows(&streamed),
        rows(&ctx.run_sql(small).await.unwrap().batches),
        true,
    );

    // A sorted result over several partitions: the client merges them,
    // streamed and collected alike, with and without a limit.
    for sorted in [
        "SELECT l_orderkey, l_linenumber, l_comment FROM lineitem WHERE l_orderkey < 30000 \
         ORDER BY l_orderkey DESC, l_linenumber",
        "SELECT o_orderkey, o_totalprice FROM orders ORDER BY o_totalprice DESC, o_orderkey LIMIT 25",
    ] {
        let explain = ctx.run_sql(&format!("EXPLAIN {sorted}")).await.unwrap();
        let plan = rows(&explain.batches).concat().join("\n");
        assert!(plan.contains("Client: merges the "), "{plan}");
        let streamed: Vec<_> = ctx
            .sql_stream(sorted)
            .await
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
            .await;
        let collected = ctx.run_sql(sorted).await.unwrap();
        let expected = crate::common::oracle_rows(sorted).await;
        assert!(expected.len() >= 25, "{sorted}: {} rows", expected.len());
        assert_same(sorted, rows(&streamed), expected.clone(), true);
        assert_same(sorted, rows(&collected.batches), expected, true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_stream_cancels_its_job_and_frees_its_data() {
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut executors = vec![];
    for i in 0..2 {
        let mut config = ExecutorConfig::new(scheduler.url());
        config.slots = 1;
        config.executor_id = Some(format!("stream-{i}"));
        executors.push(Executor::start(config).await.unwrap());
    }
    let ctx = EmberContext::remote(&scheduler.url()).await.unwrap();
    register_tpch(&ctx).await;
    let freed = |executors: &[Executor]| executors.iter().all(|e| e.store().job_ids().is_empty());

    // Read one batch of a finished job, then drop the stream: data freed.
    let mut stream = ctx.sql_stream("SELECT * FROM lineitem").await.unwrap();
    assert!(stream.next().await.unwrap().unwrap().num_rows() > 0);
    assert!(!freed(&executors), "the result is still on the executors");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !freed(&executors) {
        assert!(Instant::now() < deadline, "result data never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Drop a stream whose job still runs: the job is cancelled.
    let slow = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey < b.l_suppkey";
    let mut stream = ctx.sql_stream(slow).await.unwrap();
    let first = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(first.is_err(), "the query was expected to take longer");
    drop(stream);
    while ctx.cluster_info().await.unwrap().running_jobs > 0 || !freed(&executors) {
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "job kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctx.run_sql("SELECT 1").await.unwrap().num_rows(), 1);
    for e in executors {
        e.shutdown().await;
    }
    scheduler.shutdown().await;
}

/// `examples/remote.rs` streams a 10-million-row DataFrame (three Int64
/// columns: 229 MiB of Arrow data) from a cluster of processes through
/// `execute_stream`; its peak memory must stay far below the result's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ten_million_row_stream_keeps_client_memory_bounded() {
    let cluster = crate::cluster::ProcessCluster::start(2, "", &[]);
    let _ = cluster.session(2).await;
    let example = crate::common::binary("examples").join("remote");
    let url = cluster.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&example)
            .args([url.as_str(), "10000000"])
            .output()
    })
    .await
    .unwrap()
    .expect("run examples/remote");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| -> u64 {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
    };
    assert_eq!(value("rows="), 10_000_000);
    assert_eq!(value("sum_doubled="), 100_000_010_000_000);
    let result_mib = 10_000_000 * 3 * 8 / (1 << 20);
    let peak = value("peak_rss_mib=");
    assert!(
        peak < result_mib / 2,
        "the client peaked at {peak} MiB for a {result_mib} MiB result"
    );
}

/// A client that does not say it merges sorted results (an older one) gets
/// its result merged on the cluster: one partition, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_cannot_merge_gets_a_result_merged_on_the_cluster() {
    use ember_proto::scheduler_service_client::SchedulerServiceClient;
    use ember_proto::{CreateSessionRequest, ExecuteRequest, execute_request, execute_response};

    let ctx = tpch_cluster(2).await;
    let mut scheduler = SchedulerServiceClient::connect(ctx.url().to_string())
        .await
        .unwrap();
    let session_id = scheduler
        .create_session(CreateSessionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .session_id;
    for stmt in ember::tpch::create_table_statements(crate::common::tpch_dir()) {
        scheduler
            .execute(ExecuteRequest {
                session_id: session_id.clone(),
                query: Some(execute_request::Query::Sql(stmt)),
                merges_results: false,
            })
            .await
            .unwrap();
    }
    let sorted = "SELECT o_orderkey FROM orders ORDER BY o_orderkey DESC";
    for merges in [false, true] {
        let response = scheduler
            .execute(ExecuteRequest {
                session_id: session_id.clone(),
                query: Some(execute_request::Query::Sql(sorted.into())),
                merges_results: merges,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(execute_response::Result::Job(job)) = response.result else {
            panic!("a job was expected: {response:?}");
        };
        assert_eq!(job.merge.is_some(), merges, "merges_results = {merges}");
        let _ = scheduler
            .release_job(ember_proto::ReleaseJobRequest { job_id: job.job_id })
            .await;
    }
}
