//! Fault tolerance on real processes: executors SIGKILLed at chosen points
//! of a query (by injected faults, so the point is exact), late reports from
//! old attempts, retries running out, the scheduler restarting, and sessions
//! staying bounded. Every recovered answer is compared with single-process
//! DataFusion.

use std::time::{Duration, Instant};

use ember::{EmberContext, JobStatus};
use ember_proto::JobEventKind;

use crate::cluster::ProcessCluster;
use crate::common::{assert_same, oracle_rows, query_text, register_tpch, rows};

fn events(status: &JobStatus) -> Vec<(JobEventKind, String)> {
    status
        .events
        .iter()
        .map(|e| {
            (
                JobEventKind::try_from(e.kind).unwrap_or(JobEventKind::Unspecified),
                ember_scheduler::session::event_text(e),
            )
        })
        .collect()
}

/// Waits until the scheduler lists `n` executors; with a cluster, replaces
/// its dead executors meanwhile (one killed late is replaced too).
async fn wait_for_executors(
    ctx: &EmberContext,
    n: usize,
    mut cluster: Option<&mut ProcessCluster>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = cluster.as_deref_mut() {
            c.replace_dead_executors();
        }
        let info = ctx.cluster_info().await.unwrap();
        if info.executors.len() == n {
            return;
        }
        let ids: Vec<&str> = info
            .executors
            .iter()
            .map(|e| e.executor_id.as_str())
            .collect();
        assert!(
            Instant::now() < deadline,
            "expected {n} executors, the scheduler lists {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes every result partition stay on its executor, to be fetched from
/// there (small ones otherwise come with their task's report and are never
/// served by an executor: `ember.direct_result_max_bytes`).
async fn fetch_every_result(ctx: &EmberContext) {
    ctx.run_sql("SET ember.direct_result_max_bytes = 0")
        .await
        .unwrap();
}

/// Runs TPC-H Q3, Q4, Q9 and Q18 on 3 executor processes whose `fault` SIGKILLs
/// one executor once per query; each answer must equal the no-failure
/// answer, and the job's events must show the loss (noticed through the
/// broken connection, not the heartbeat timeout) and what was recomputed.
async fn queries_survive(fault: &str, recomputed: &[JobEventKind]) {
    let mut cluster = ProcessCluster::start(3, fault, &[]);
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    fetch_every_result(&ctx).await;
    // Q4's orders stage is read by two stages (`semi_reduction`).
    for q in [3, 4, 9, 18] {
        let sql = query_text(q);
        let expected = oracle_rows(&sql).await;
        cluster.reset_faults();
        let result = tokio::time::timeout(Duration::from_secs(120), ctx.run_sql(&sql))
            .await
            .unwrap_or_else(|_| panic!("q{q} hung after an executor died ({fault})"))
            .unwrap_or_else(|e| panic!("q{q} must survive ({fault}): {e}"));
        assert_same(
            &format!("q{q} with {fault}"),
            rows(&result.batches),
            expected,
            true,
        );
        let status = result.job.expect("job status");
        let events = events(&status);
        eprintln!("q{q} with {fault}:");
        for (_, text) in &events {
            eprintln!("  {text}");
        }
        assert_eq!(
            cluster.replace_dead_executors(),
            1,
            "the fault should have killed exactly one executor during q{q}"
        );
        let lost: Vec<&String> = events
            .iter()
            .filter(|(k, _)| *k == JobEventKind::ExecutorLost)
            .map(|(_, t)| t)
            .collect();
        assert!(!lost.is_empty(), "q{q}: no executor-lost event: {events:?}");
        assert!(
            lost.iter().all(|t| !t.contains("no heartbeat")),
            "q{q}: the loss must be noticed by the connection, not the clock: {lost:?}"
        );
        let reruns: Vec<_> = status
            .events
            .iter()
            .filter(|e| recomputed.iter().any(|k| *k as i32 == e.kind) && !e.partitions.is_empty())
            .collect();
        assert!(
            !reruns.is_empty(),
            "q{q}: no event names the recomputed partitions ({recomputed:?}): {events:?}"
        );
        wait_for_executors(&ctx, 3, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_while_the_first_stage_runs() {
    queries_survive(
        "kill@task-start:stage=0:times=1",
        &[JobEventKind::TaskRetried],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_after_a_map_stage_finished_before_its_readers_ran() {
    queries_survive(
        "kill@task-start:reads=1:times=1",
        &[JobEventKind::OutputsLost, JobEventKind::TaskRetried],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_while_readers_fetch_from_it() {
    queries_survive("kill@serve-shuffle:times=1", &[JobEventKind::OutputsLost]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_after_success_while_the_client_fetches_the_result() {
    queries_survive("kill@serve-result:times=1", &[JobEventKind::ResultLost]).await;
}

/// The first result served is a scalar subquery's value, fetched by the
/// scheduler (the query's last stage needs it): the executor serving it
/// dies, and the subquery's job recomputes the value, whether the subquery
/// runs beside its query or first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_while_the_scheduler_fetches_a_scalar_subquery_value() {
    let mut cluster = ProcessCluster::start(3, "kill@serve-result:times=1", &[]);
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    fetch_every_result(&ctx).await;
    let sql = "SELECT n_name FROM nation \
               WHERE n_regionkey = (SELECT max(r_regionkey) FROM region) ORDER BY n_name";
    let expected = oracle_rows(sql).await;
    for concurrent in [true, false] {
        ctx.run_sql(&format!("SET ember.concurrent_subqueries = {concurrent}"))
            .await
            .unwrap();
        cluster.reset_faults();
        let result = tokio::time::timeout(Duration::from_secs(120), ctx.run_sql(sql))
            .await
            .unwrap_or_else(|_| panic!("hung after an executor died (beside: {concurrent})"))
            .unwrap_or_else(|e| panic!("must survive (beside: {concurrent}): {e}"));
        assert_same(
            &format!("beside: {concurrent}"),
            rows(&result.batches),
            expected.clone(),
            true,
        );
        assert_eq!(
            cluster.replace_dead_executors(),
            1,
            "the fault should have killed exactly one executor (beside: {concurrent})"
        );
        wait_for_executors(&ctx, 3, None).await;
    }
}

/// A sorted result streamed to the client, which merges its partitions
/// (all open at once): the executor serving one of them dies before the
/// first row is handed out. The lost partition is recomputed and the merge
/// starts over; the client gets every row once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_sorted_result_survives_an_executor_killed_while_serving_it() {
    use futures::TryStreamExt;

    let mut cluster = ProcessCluster::start(3, "kill@serve-result:times=1", &[]);
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    fetch_every_result(&ctx).await;
    let sql = "SELECT o_orderkey, o_custkey, o_totalprice FROM orders \
               ORDER BY o_totalprice DESC, o_orderkey";
    let expected = oracle_rows(sql).await;
    let plan = ctx.run_sql(&format!("EXPLAIN {sql}")).await.unwrap();
    assert!(
        rows(&plan.batches)
            .concat()
            .join("\n")
            .contains("Client: merges"),
        "the client should merge this result"
    );
    cluster.reset_faults();
    let stream = ctx.sql_stream(sql).await.unwrap();
    let batches: Vec<_> = tokio::time::timeout(Duration::from_secs(120), stream.try_collect())
        .await
        .expect("the stream hung after an executor died")
        .unwrap_or_else(|e| panic!("the stream must survive: {e}"));
    assert_same("streamed sorted orders", rows(&batches), expected, true);
    assert_eq!(
        cluster.replace_dead_executors(),
        1,
        "the fault should have killed exactly one executor"
    );
    // The merge noticed the loss and had the partition recomputed.
    let log = cluster.scheduler_log_text();
    assert!(
        log.contains("client could not fetch a result partition"),
        "no lost result partition reported:\n{log}"
    );
}

/// Small results come with their tasks' reports (Spark's direct results):
/// executors set to die when asked to serve a result are never asked, for a
/// query's rows (also a sorted result the client merges) nor for a scalar
/// subquery's value; nothing is recomputed. A larger result is still served
/// by its executor (the fault fires then).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_results_come_with_the_job_status_and_never_need_their_executor() {
    let mut cluster = ProcessCluster::start(3, "kill@serve-result:times=1", &[]);
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    let subquery = "SELECT n_name FROM nation \
                    WHERE n_regionkey = (SELECT max(r_regionkey) FROM region) ORDER BY n_name";
    for sql in [query_text(3), query_text(18), subquery.to_string()] {
        let expected = oracle_rows(&sql).await;
        let result = tokio::time::timeout(Duration::from_secs(120), ctx.run_sql(&sql))
            .await
            .expect("hung")
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_same(&sql, rows(&result.batches), expected, true);
        let status = result.job.expect("job status");
        assert!(
            status.results.iter().all(|r| !r.direct_result.is_empty()),
            "every result partition should have come with the status: {sql}"
        );
        let events = events(&status);
        assert!(
            !events.iter().any(|(k, _)| matches!(
                k,
                JobEventKind::ResultLost | JobEventKind::ExecutorLost | JobEventKind::OutputsLost
            )),
            "{sql}: {events:?}"
        );
        assert_eq!(
            cluster.replace_dead_executors(),
            0,
            "{sql}: an executor served a result"
        );
    }
    // Past the limit, the executor serves the result (and dies doing so);
    // the partition is recomputed.
    ctx.run_sql("SET ember.direct_result_max_bytes = 100")
        .await
        .unwrap();
    let sql = query_text(3);
    let expected = oracle_rows(&sql).await;
    let result = tokio::time::timeout(Duration::from_secs(120), ctx.run_sql(&sql))
        .await
        .expect("hung")
        .unwrap();
    assert_same("q3, results fetched", rows(&result.batches), expected, true);
    let status = result.job.expect("job status");
    assert!(status.results.iter().all(|r| r.direct_result.is_empty()));
    assert_eq!(cluster.replace_dead_executors(), 1);
}

/// An executor cut off from the scheduler (its control stream ends, its
/// reports are held) is declared lost and its work re-run; when it comes
/// back, it re-registers and delivers the report of its old attempt late.
/// That report must be ignored, never applied to the re-run. (A reader task
/// is made to take 1.5 s so the job is still running when the report comes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_report_from_an_old_attempt_is_ignored() {
    let cluster = ProcessCluster::start(
        3,
        "disconnect@task-end:stage=0:ms=500:times=1;hang@task-start:reads=1:ms=1500:times=1",
        &[],
    );
    let ctx = cluster.session(3).await;
    register_tpch(&ctx).await;
    let sql = query_text(9);
    let expected = oracle_rows(&sql).await;
    let result = ctx.run_sql(&sql).await.expect("q9 survives a partition");
    assert_same(
        "q9 with a late report",
        rows(&result.batches),
        expected,
        true,
    );
    let events = events(result.job.as_ref().unwrap());
    for (_, text) in &events {
        eprintln!("  {text}");
    }
    assert!(
        events
            .iter()
            .any(|(k, t)| *k == JobEventKind::ExecutorLost && t.contains("control stream")),
        "{events:?}"
    );
    assert!(
        events.iter().any(
            |(k, t)| *k == JobEventKind::StaleReportIgnored && t.contains("success of attempt")
        ),
        "the old attempt's late success must be ignored: {events:?}"
    );
    assert!(
        cluster
            .scheduler_log_text()
            .contains("stale report ignored")
    );
    // The executor is back and the cluster works.
    wait_for_executors(&ctx, 3, None).await;
    let again = ctx.run_sql(&sql).await.expect("next query");
    assert_eq!(again.num_rows(), result.num_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_exhausted_fail_the_query_clearly_and_the_next_one_works() {
    // Stage 0 partition 0 fails on every attempt (4 = ember.task_max_attempts).
    let cluster = ProcessCluster::start(2, "fail@task-start:stage=0:partition=0:times=4", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let sql = query_text(3);
    let e = ctx.run_sql(&sql).await.unwrap_err().to_string();
    assert!(
        e.contains("task 0.0 failed 4 times") && e.contains("injected fault"),
        "{e}"
    );
    let ok = ctx.run_sql(&sql).await.expect("the next query works");
    assert_same(
        "q3 after failures",
        rows(&ok.batches),
        oracle_rows(&sql).await,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_kills_every_executor_it_lands_on_fails_the_query() {
    let mut cluster = ProcessCluster::start(2, "kill@task-start:stage=0:partition=0:times=2", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    ctx.run_sql("SET ember.task_max_attempts = 2")
        .await
        .unwrap();
    let sql = query_text(3);
    let run = ctx.run_sql(&sql);
    tokio::pin!(run);
    // Executors killed by the fault are replaced while the job goes on.
    let outcome = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                cluster.replace_dead_executors();
            }
        }
    };
    let e = outcome
        .expect_err("the crashing task must fail the job")
        .to_string();
    assert!(
        e.contains("task 0.0 failed 2 times") && e.contains("lost"),
        "{e}"
    );
    wait_for_executors(&ctx, 2, Some(&mut cluster)).await;
    let ok = ctx.run_sql(&sql).await.expect("the next query works");
    assert_same(
        "q3 after the crashes",
        rows(&ok.batches),
        oracle_rows(&sql).await,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_killed_and_restarted_executors_come_back() {
    let mut cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let sql = query_text(18);
    // A query in flight when the scheduler dies gets a clear error, not a hang.
    let running = ctx.run_sql(&sql);
    tokio::pin!(running);
    tokio::select! {
        _ = &mut running => {}
        _ = tokio::time::sleep(Duration::from_millis(150)) => {
            cluster.kill_scheduler();
            let e = tokio::time::timeout(Duration::from_secs(30), running)
                .await
                .expect("a client must not hang when the scheduler dies");
            if let Err(e) = e {
                let msg = e.to_string();
                assert!(msg.contains("scheduler"), "{msg}");
            }
        }
    }
    cluster.kill_scheduler();
    cluster.start_scheduler();
    // Executors re-register by themselves.
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let result = ctx.run_sql(&sql).await.expect("query after restart");
    assert_same(
        "q18 after restart",
        rows(&result.batches),
        oracle_rows(&sql).await,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_stay_bounded_over_many_short_clients() {
    let cluster = ProcessCluster::start(1, "", &["--max-sessions", "20"]);
    let _ = cluster.session(1).await;
    // 2,000 short clients in this process: connect, query, go away.
    for i in 0..2000 {
        let ctx = EmberContext::remote(&cluster.url)
            .await
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        if i % 100 == 0 {
            let r = ctx.run_sql("SELECT 1").await.unwrap();
            assert_eq!(r.num_rows(), 1);
        }
        ctx.close().await.unwrap();
    }
    // Dropped without close: the session is closed in the background.
    for _ in 0..40 {
        let ctx = EmberContext::remote(&cluster.url).await.unwrap();
        drop(ctx);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And the real shell, as a user runs it, 30 times.
    for i in 0..30 {
        let out = std::process::Command::new(crate::common::binary("ember-sql"))
            .args([
                "--scheduler",
                &cluster.url,
                "-c",
                "SELECT 1 AS one",
                "--format",
                "csv",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ember-sql run {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ctx = EmberContext::remote(&cluster.url)
        .await
        .expect("still room");
    ctx.run_sql("SELECT 1").await.unwrap();
}

/// Forgotten jobs are freed on an executor that was away when the job was
/// released: its next heartbeats learn the job is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_of_jobs_released_while_an_executor_was_away_is_freed() {
    use ember_executor::{Executor, ExecutorConfig};
    use ember_scheduler::{Scheduler, SchedulerConfig};
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        heartbeat_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut executors = vec![];
    for (i, faults) in ["", "disconnect@task-end:ms=800:times=1"]
        .iter()
        .enumerate()
    {
        let mut config = ExecutorConfig::new(scheduler.url());
        config.slots = 1;
        config.executor_id = Some(format!("inproc-{i}"));
        config.faults = faults.to_string();
        executors.push(Executor::start(config).await.unwrap());
    }
    let ctx = EmberContext::remote(&scheduler.url()).await.unwrap();
    register_tpch(&ctx).await;
    let sql = query_text(3);
    let result = ctx
        .run_sql(&sql)
        .await
        .expect("query survives the disconnect");
    assert_same("q3", rows(&result.batches), oracle_rows(&sql).await, true);
    // The job is released; the executor that was away still held its
    // outputs and must drop them once it is back.
    let away = executors[1].store().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !away.job_ids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "jobs never freed: {:?}",
            away.job_ids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(away.memory_used(), 0);
    for e in executors {
        e.shutdown().await;
    }
    scheduler.shutdown().await;
}

/// A client that goes away while its job runs (the future is dropped, its
/// watch stream closes) cancels the job on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_mid_job_cancels_it() {
    let ctx = crate::common::tpch_cluster(2).await;
    let slow = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey < b.l_suppkey";
    let ember::Submitted::Job(job) = ctx.submit_sql(slow).await.unwrap() else {
        panic!("expected a job");
    };
    let job_id = job.job_id.clone();
    let gave_up = tokio::time::timeout(Duration::from_millis(300), ctx.complete(job, |_| {})).await;
    assert!(gave_up.is_err(), "the query was expected to take longer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctx.cluster_info().await.unwrap().running_jobs > 0 {
        assert!(Instant::now() < deadline, "job {job_id} kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cluster is free for the next query.
    assert_eq!(ctx.run_sql("SELECT 1").await.unwrap().num_rows(), 1);
}
