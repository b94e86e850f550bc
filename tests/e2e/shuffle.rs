//! The distributed path really is distributed: tasks on both executors,
//! shuffle data fetched remotely, and data freed afterwards.

use ember::{EmberContext, StandaloneOptions};

use crate::common::{assert_same, oracle_rows, register_tpch, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_stage_query_runs_on_both_executors_and_fetches_remotely() {
    let ctx = EmberContext::standalone_with(StandaloneOptions {
        executors: 2,
        slots: Some(2),
        ..Default::default()
    })
    .await
    .unwrap();
    register_tpch(&ctx).await;
    let sql = "SELECT l_orderkey % 7 AS k, count(*) AS n, sum(l_quantity) AS q \
               FROM lineitem GROUP BY l_orderkey % 7 ORDER BY k";
    let result = ctx.run_sql(sql).await.unwrap();
    assert_same(
        "group by",
        rows(&result.batches),
        oracle_rows(sql).await,
        true,
    );

    let job = result.job.expect("a distributed job");
    assert!(job.stages.len() >= 2, "expected several stages: {job:?}");
    // Every task decoded its plan: some setup time, within its run time.
    for s in &job.stages {
        assert!(
            s.task_setup_us > 0 && s.task_setup_us <= (s.task_time_ms + 1) * 1000,
            "{s:?}"
        );
    }
    let mut executors: Vec<&String> = job.stages.iter().flat_map(|s| &s.executors).collect();
    executors.sort();
    executors.dedup();
    assert_eq!(executors.len(), 2, "tasks ran on {executors:?}");
    let remote: u64 = job.stages.iter().map(|s| s.remote_fetches).sum();
    let local: u64 = job.stages.iter().map(|s| s.local_fetches).sum();
    assert!(remote > 0, "no shuffle data crossed executors: {job:?}");
    assert!(
        local > 0,
        "local map outputs should be read without a network hop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trivial_query_and_empty_results_work() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    let one = ctx.run_sql("SELECT 1 AS x").await.unwrap();
    assert_eq!(one.num_rows(), 1);
    register_tpch(&ctx).await;
    let none = ctx
        .run_sql("SELECT n_name FROM nation WHERE n_nationkey < 0 ORDER BY n_name")
        .await
        .unwrap();
    assert_eq!(none.num_rows(), 0);
    assert_eq!(none.schema.fields().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_set_show_and_explain_answer_from_the_session() {
    let ctx = EmberContext::standalone(1).await.unwrap();
    register_tpch(&ctx).await;
    let tables = ctx.run_sql("SHOW TABLES").await.unwrap();
    assert!(tables.pretty().unwrap().contains("lineitem"));
    let set = ctx
        .run_sql("SET datafusion.execution.batch_size = 1024")
        .await
        .unwrap();
    assert!(!set.has_result_set);
    let show = ctx
        .run_sql("SHOW datafusion.execution.batch_size")
        .await
        .unwrap();
    assert!(show.pretty().unwrap().contains("1024"));
    let explain = ctx
        .run_sql("EXPLAIN SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1")
        .await
        .unwrap();
    let text = explain.pretty().unwrap();
    assert!(text.contains("Stage 0"), "{text}");
    assert!(text.contains("ShuffleWriterExec"), "{text}");
    assert!(text.contains("ShuffleReaderExec"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_running_query_stops_it_and_frees_the_slots() {
    let ctx = std::sync::Arc::new(EmberContext::standalone(2).await.unwrap());
    register_tpch(&ctx).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let runner = std::sync::Arc::clone(&ctx);
    let query = tokio::spawn(async move {
        let mut tx = Some(tx);
        // Billions of row pairs: runs far longer than this test waits.
        runner
            .run_sql_with_progress(
                "SELECT count(*) FROM lineitem a, lineitem b WHERE a.l_orderkey < b.l_orderkey",
                |status| {
                    if status.stages.iter().any(|s| s.tasks_running > 0)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(status.job_id.clone());
                    }
                },
            )
            .await
    });
    let job_id = tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .expect("the query should start")
        .unwrap();
    assert!(ctx.cancel(&job_id).await.unwrap());
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), query)
        .await
        .expect("a cancelled query returns promptly")
        .unwrap();
    assert!(
        matches!(outcome, Err(ember::EmberError::Cancelled)),
        "{outcome:?}"
    );
    // Killed tasks report back, so every slot is free for the next query.
    let sql = "SELECT n_regionkey, count(*) FROM nation GROUP BY n_regionkey";
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), ctx.run_sql(sql))
        .await
        .expect("slots must be free again")
        .unwrap();
    assert_eq!(next.num_rows(), 5);
    assert_eq!(ctx.cluster_info().await.unwrap().running_jobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serialized_logical_plan_runs_like_sql() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    let oracle = crate::common::oracle().await;
    let sql =
        "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey ORDER BY n_regionkey";
    let plan = oracle.sql(sql).await.unwrap().into_unoptimized_plan();
    let result = ctx.execute_logical_plan(&plan).await.unwrap();
    assert_same(
        "logical plan",
        rows(&result.batches),
        oracle_rows(sql).await,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_analyze_runs_the_query_and_reports_stage_metrics() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    let result = ctx
        .run_sql("EXPLAIN ANALYZE SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1")
        .await
        .unwrap();
    let text = result.pretty().unwrap();
    assert!(text.contains("distributed_plan_with_metrics"), "{text}");
    // The scan stage wrote one partial row per group and task.
    assert!(text.contains("Stage 0"), "{text}");
    assert!(text.contains("rows="), "{text}");
    assert!(text.contains("task_time_total="), "{text}");
    // Of which setting up tasks (context, plan decoding) and waiting for a slot.
    assert!(text.contains("(setup "), "{text}");
    assert!(text.contains("waiting for a slot "), "{text}");
    assert!(text.contains("fetches(local/remote)="), "{text}");
    assert!(text.contains("ms of planning"), "{text}");
    assert!(!text.contains("scalar subqueries"), "{text}");
    let with_subquery = ctx
        .run_sql(
            "EXPLAIN ANALYZE SELECT count(*) FROM nation \
             WHERE n_regionkey = (SELECT max(r_regionkey) FROM region)",
        )
        .await
        .unwrap()
        .pretty()
        .unwrap();
    // Its subquery ran beside it and handed it the value.
    assert!(
        with_subquery.contains("value arrived: scalar subquery 0 = 4"),
        "{with_subquery}"
    );
    // Its data is gone, and the cluster is idle again.
    assert_eq!(ctx.cluster_info().await.unwrap().running_jobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filter_subquery_runs_beside_its_query_and_still_prunes_its_scan() {
    use ember_proto::JobEventKind;
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    let value_events = |status: &ember_proto::JobStatus| -> Vec<String> {
        status
            .events
            .iter()
            .filter(|e| e.kind == JobEventKind::SubqueryValue as i32)
            .map(|e| e.detail.clone())
            .collect()
    };
    // lineitem's 3 files hold ascending order keys: only the last file's
    // row groups can hold keys above the value.
    let sql = "SELECT count(*), sum(l_quantity) FROM lineitem \
               WHERE l_orderkey > (SELECT max(o_orderkey) - 100 FROM orders)";
    let all_rows = 60_175;
    let beside = ctx.run_sql(sql).await.unwrap();
    assert_same(
        "beside",
        rows(&beside.batches),
        oracle_rows(sql).await,
        true,
    );
    let job = beside.job.unwrap();
    let max = oracle_rows("SELECT max(o_orderkey) - 100 FROM orders").await[0][0].clone();
    assert_eq!(
        value_events(&job),
        [format!("scalar subquery 0 = {max}")],
        "{job:?}"
    );
    let scanned = job.stages[0].input_rows;
    assert!(
        scanned > 0 && scanned < all_rows / 2,
        "the value pruned the scan: {job:?}"
    );

    // An average's job ends with its tasks' partial sums and counts, which
    // the scheduler finishes; turned off, a last one-task stage does, for
    // the same answer.
    let above_average = "SELECT count(*) FROM orders \
                         WHERE o_totalprice > (SELECT avg(o_totalprice) FROM orders)";
    let subquery_stages = || async {
        let jobs = ctx
            .run_sql(
                "SELECT stages, state FROM ember.jobs \
                 WHERE description LIKE 'scalar subquery of:%' \
                 ORDER BY submitted_at_ms DESC, job_id LIMIT 1",
            )
            .await
            .unwrap();
        rows(&jobs.batches)
    };
    let expected = oracle_rows(above_average).await;
    for (here, stages) in [(false, "2"), (true, "1")] {
        ctx.run_sql(&format!("SET ember.finish_subqueries_here = {here}"))
            .await
            .unwrap();
        let result = ctx.run_sql(above_average).await.unwrap();
        assert_same(
            "above average",
            rows(&result.batches),
            expected.clone(),
            true,
        );
        assert_eq!(
            subquery_stages().await,
            [[stages, "succeeded"]],
            "here: {here}"
        );
    }

    // Run first instead: the same answer, the same pruning.
    ctx.run_sql("SET ember.concurrent_subqueries = false")
        .await
        .unwrap();
    let first = ctx.run_sql(sql).await.unwrap();
    assert_eq!(rows(&first.batches), rows(&beside.batches));
    let job = first.job.unwrap();
    assert!(value_events(&job).is_empty(), "{job:?}");
    assert_eq!(job.stages[0].input_rows, scanned);
    ctx.run_sql("SET ember.concurrent_subqueries = true")
        .await
        .unwrap();

    // A subquery of several rows fails its query in DataFusion's words; the
    // session goes on and nothing is left running.
    let err = ctx
        .run_sql("SELECT count(*) FROM nation WHERE n_regionkey > (SELECT r_regionkey FROM region)")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Scalar subquery returned more than one row"),
        "{err}"
    );
    let sql = "SELECT n_name FROM nation WHERE n_regionkey = (SELECT max(r_regionkey) FROM region) \
               ORDER BY n_name";
    let ok = ctx.run_sql(sql).await.unwrap();
    assert_same("after", rows(&ok.batches), oracle_rows(sql).await, true);
    assert_eq!(ctx.cluster_info().await.unwrap().running_jobs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_semi_join_with_a_small_side_sends_on_matched_keys_not_its_large_side() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    // TPC-H q4's shape: a quarter's orders that have a late line item.
    let late = "SELECT l_orderkey FROM lineitem WHERE l_commitdate < l_receiptdate";
    let late_rows = oracle_rows(&format!("SELECT count(*) FROM ({late})")).await[0][0]
        .parse::<u64>()
        .unwrap();
    let quarter = "o_orderdate >= DATE '1993-07-01' AND o_orderdate < DATE '1993-10-01'";
    let queries = [
        format!(
            "SELECT o_orderpriority, count(*) FROM orders WHERE {quarter} AND EXISTS \
             (SELECT * FROM lineitem WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate) \
             GROUP BY o_orderpriority ORDER BY o_orderpriority"
        ),
        format!(
            "SELECT o_orderpriority, count(*) FROM orders WHERE {quarter} AND NOT EXISTS \
             (SELECT * FROM lineitem WHERE l_orderkey = o_orderkey AND l_commitdate < l_receiptdate) \
             GROUP BY o_orderpriority ORDER BY o_orderpriority"
        ),
        format!(
            "SELECT o_orderkey, o_custkey FROM orders WHERE {quarter} AND o_orderkey IN ({late})"
        ),
    ];
    let most_sent =
        |job: &ember_proto::JobStatus| job.stages.iter().map(|s| s.output_rows).max().unwrap_or(0);
    for sql in &queries {
        let reduced = ctx.run_sql(sql).await.unwrap();
        let ordered = sql.contains("ORDER BY");
        assert_same(sql, rows(&reduced.batches), oracle_rows(sql).await, ordered);
        // No stage sends on the late line items themselves: only the keys
        // of the quarter's orders that they match.
        let job = reduced.job.unwrap();
        assert!(
            most_sent(&job) < late_rows / 4,
            "{sql}: {late_rows} late line items, a stage sent {}: {job:?}",
            most_sent(&job)
        );

        // Off: the line items are shuffled to the join, with the same answer.
        ctx.run_sql("SET ember.reduce_semi_joins = false")
            .await
            .unwrap();
        let shuffled = ctx.run_sql(sql).await.unwrap();
        ctx.run_sql("SET ember.reduce_semi_joins = true")
            .await
            .unwrap();
        assert_same(
            sql,
            rows(&shuffled.batches),
            rows(&reduced.batches),
            ordered,
        );
        assert_eq!(most_sent(&shuffled.job.unwrap()), late_rows, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aggregate_is_prefiltered_when_its_joins_left_side_turns_out_small() {
    use ember_proto::JobEventKind;
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    // A correlated average, decorrelated into an aggregate of all of
    // lineitem joined back by part. DataFusion only estimates the outer
    // side (a join, a filter): the stage reading it decides.
    let subquery = "l_quantity < (SELECT 0.2 * avg(l2.l_quantity) FROM lineitem l2 \
                    WHERE l2.l_partkey = l.l_partkey)";
    for (sql, form) in [
        // TPC-H q17: the parts of one brand and container, a few lines.
        (
            format!(
                "SELECT sum(l_extendedprice) / 7.0 AS avg_yearly FROM lineitem l, part \
                 WHERE p_partkey = l_partkey AND p_brand = 'Brand#23' \
                 AND p_container = 'MED BOX' AND {subquery}"
            ),
            "the rewritten form",
        ),
        // Almost every line: more than a quarter of the aggregate's input.
        (
            format!(
                "SELECT count(*), sum(l_quantity) FROM lineitem l WHERE l_discount >= 0.01 AND {subquery}"
            ),
            "the plain form",
        ),
    ] {
        let result = ctx.run_sql(&sql).await.unwrap();
        assert_same(&sql, rows(&result.batches), oracle_rows(&sql).await, true);
        let job = result.job.unwrap();
        let chosen: Vec<&str> = job
            .events
            .iter()
            .filter(|e| e.kind == JobEventKind::PlanChosen as i32)
            .map(|e| e.detail.as_str())
            .collect();
        assert!(
            chosen.len() == 1 && chosen[0].starts_with(form),
            "{sql}: {chosen:?}"
        );
    }
    let explain = ctx
        .run_sql(&format!(
            "EXPLAIN SELECT count(*) FROM lineitem l, part WHERE p_partkey = l_partkey \
             AND p_brand = 'Brand#23' AND {subquery}"
        ))
        .await
        .unwrap()
        .pretty()
        .unwrap();
    assert!(
        explain.contains("rows, each task runs instead:"),
        "{explain}"
    );
}
