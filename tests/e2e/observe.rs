//! Seeing the cluster: the scheduler's REST API, Prometheus `/metrics`,
//! health checks and the `ember.*` system tables, checked against the
//! figures of a job that just ran (TPC-H Q5 on two executor processes).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::ProcessCluster;
use crate::common::{query_text, register_tpch, rows};

/// `GET url` over plain HTTP/1.1: (status, body).
fn get(url: &str) -> (u16, String) {
    let rest = url.trim_start_matches("http://");
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head[9..12].parse().unwrap();
    // Bodies may come chunked; the JSON and text here are small.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_metrics_and_system_tables_agree_with_a_job() {
    let cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let http = cluster.http_url();
    let result = ctx.run_sql(&query_text(5)).await.unwrap();
    let result_rows = result.num_rows() as u64;
    let status = result.job.unwrap();
    let tasks: u64 = status.stages.iter().map(|s| s.tasks_total as u64).sum();
    // Where the statement's time went before its job started: planning,
    // and (q22) its scalar subquery's job: planned while the statement is
    // (only waiting for it counts), it runs beside the statement's and hands
    // it the value; or, run first, the whole of that job.
    assert!(status.planning_us > 0, "{status:?}");
    assert_eq!(status.subqueries_us, 0);
    let with_subquery = ctx.run_sql(&query_text(22)).await.unwrap().job.unwrap();
    assert!(with_subquery.planning_us > 0, "{with_subquery:?}");
    assert!(
        with_subquery
            .events
            .iter()
            .any(|e| e.kind == ember_proto::JobEventKind::SubqueryValue as i32),
        "{with_subquery:?}"
    );
    ctx.run_sql("SET ember.concurrent_subqueries = false")
        .await
        .unwrap();
    let subquery_first = ctx.run_sql(&query_text(22)).await.unwrap().job.unwrap();
    assert!(subquery_first.subqueries_us > 0, "{subquery_first:?}");
    assert!(
        subquery_first.events.is_empty(),
        "the value was there before the job: {subquery_first:?}"
    );
    ctx.run_sql("SET ember.concurrent_subqueries = true")
        .await
        .unwrap();

    assert_eq!(get(&format!("{http}/healthz")), (200, "ok".to_string()));
    assert_eq!(get(&format!("{http}/readyz")).0, 200);

    // The job, through the API: released by its client, kept in history.
    let (code, body) = get(&format!("{http}/api/v1/jobs"));
    assert_eq!(code, 200);
    let jobs: Value = serde_json::from_str(&body).unwrap();
    let listed = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == status.job_id.as_str())
        .unwrap_or_else(|| panic!("job {} not listed: {body}", status.job_id));
    assert_eq!(listed["state"], "succeeded");
    assert_eq!(listed["result_rows"], result_rows);
    assert_eq!(listed["planning_us"], status.planning_us);
    assert!(listed["description"].as_str().unwrap().contains("n_name"));
    let (code, body) = get(&format!("{http}/api/v1/jobs/{}", status.job_id));
    assert_eq!(code, 200);
    let job: Value = serde_json::from_str(&body).unwrap();
    let stages = job["stages"].as_array().unwrap();
    assert_eq!(stages.len(), status.stages.len());
    let api_tasks: u64 = stages
        .iter()
        .map(|s| s["tasks_total"].as_u64().unwrap())
        .sum();
    assert_eq!(api_tasks, tasks, "tasks = partitions summed over stages");
    assert_eq!(stages.last().unwrap()["output_rows"], result_rows);
    assert!(
        stages
            .iter()
            .any(|s| !s["inputs"].as_array().unwrap().is_empty())
    );
    for s in stages {
        assert_eq!(s["tasks_failed"], 0, "{s}");
        let (rows_in, rows_out) = (
            s["input_rows"].as_u64().unwrap(),
            s["output_rows"].as_u64().unwrap(),
        );
        if s["inputs"].as_array().unwrap().is_empty() {
            // Scans that filter and aggregate: they read more than they write.
            assert!(rows_in > 0 && rows_in >= rows_out, "{s}");
        }
        for locality in ["local", "remote"] {
            let fetches = s[format!("{locality}_fetches")].as_u64().unwrap();
            let bytes = s[format!("{locality}_fetch_bytes")].as_u64().unwrap();
            assert!(fetches > 0 || bytes == 0, "{s}");
        }
    }
    let fetched: u64 = stages
        .iter()
        .map(|s| {
            s["local_fetch_bytes"].as_u64().unwrap() + s["remote_fetch_bytes"].as_u64().unwrap()
        })
        .sum();
    assert!(fetched > 0, "shuffle bytes read");
    // The final stage reads all its one input wrote.
    let last = stages.last().unwrap();
    let input = last["inputs"][0].as_u64().unwrap();
    let wrote = stages.iter().find(|s| s["id"] == input).unwrap()["output_rows"].clone();
    assert_eq!(last["input_rows"], wrote);
    assert_eq!(get(&format!("{http}/api/v1/jobs/no-such-job")).0, 404);
    let (_, body) = get(&format!("{http}/api/v1/executors"));
    let executors: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(executors.as_array().unwrap().len(), 2);

    // Prometheus.
    let (code, text) = get(&format!("{http}/metrics"));
    assert_eq!(code, 200);
    assert!(metric(&text, "ember_jobs_total{state=\"succeeded\"}") >= 1.0);
    assert!(metric(&text, "ember_tasks_total{state=\"succeeded\"}") >= tasks as f64);
    assert!(metric(&text, "ember_tasks_total{state=\"launched\"}") >= tasks as f64);
    assert_eq!(metric(&text, "ember_executors"), 2.0);
    assert!(metric(&text, "ember_task_duration_seconds_count") >= tasks as f64);
    // q5, and q22 twice with its subquery.
    assert!(metric(&text, "ember_job_planning_seconds_count") >= 5.0);

    // The same figures from SQL.
    let row = ctx
        .run_sql(&format!(
            "SELECT state, result_rows, tasks, stages, planning_us, subqueries_us FROM ember.jobs WHERE job_id = '{}'",
            status.job_id
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&row.batches),
        vec![vec![
            "succeeded".to_string(),
            result_rows.to_string(),
            tasks.to_string(),
            status.stages.len().to_string(),
            status.planning_us.to_string(),
            "0".to_string(),
        ]]
    );
    let row = ctx
        .run_sql(&format!(
            "SELECT subqueries_us FROM ember.jobs WHERE job_id = '{}'",
            with_subquery.job_id
        ))
        .await
        .unwrap();
    assert_eq!(
        rows(&row.batches),
        vec![vec![with_subquery.subqueries_us.to_string()]]
    );
    let per_stage = ctx
        .run_sql(&format!(
            "SELECT sum(tasks_total) FROM ember.stages WHERE job_id = '{}'",
            status.job_id
        ))
        .await
        .unwrap();
    assert_eq!(rows(&per_stage.batches), vec![vec![tasks.to_string()]]);
    let setup: u64 = status.stages.iter().map(|s| s.task_setup_us).sum();
    let per_stage = ctx
        .run_sql(&format!(
            "SELECT sum(task_setup_us) FROM ember.stages WHERE job_id = '{}'",
            status.job_id
        ))
        .await
        .unwrap();
    assert!(setup > 0, "{status:?}");
    assert_eq!(rows(&per_stage.batches), vec![vec![setup.to_string()]]);
    let executors = ctx
        .run_sql("SELECT count(*) FROM ember.executors WHERE connected")
        .await
        .unwrap();
    assert_eq!(rows(&executors.batches), vec![vec!["2"]]);
    let sessions = ctx
        .run_sql(&format!(
            "SELECT count(*) FROM ember.sessions WHERE session_id = '{}'",
            ctx.session_id()
        ))
        .await
        .unwrap();
    assert_eq!(rows(&sessions.batches), vec![vec!["1"]]);
    // Tasks of a job still held: submit one and look before releasing it.
    let ember::Submitted::Job(job) = ctx.submit_sql(&query_text(5)).await.unwrap() else {
        panic!("Q5 is a job");
    };
    ctx.wait_for(&job, |_| {}).await.unwrap();
    let per_task = ctx
        .run_sql(&format!(
            "SELECT count(*), sum(output_rows) FROM ember.tasks \
             WHERE job_id = '{}' AND state = 'succeeded'",
            job.job_id
        ))
        .await
        .unwrap();
    let rows_out: u64 = status.stages.iter().map(|s| s.output_rows).sum();
    assert_eq!(
        rows(&per_task.batches),
        vec![vec![tasks.to_string(), rows_out.to_string()]]
    );
    ctx.release(&job.job_id).await;

    // A lost executor stays listed, with why.
    let mut cluster = cluster;
    cluster.kill_executor("exec-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(&format!("{http}/api/v1/executors"));
        let executors: Value = serde_json::from_str(&body).unwrap();
        let lost = executors
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == "exec-1" && !e["lost_reason"].is_null());
        if let Some(lost) = lost {
            assert_eq!(lost["connected"], false);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "exec-1 not shown lost: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An executor's own `/metrics` and health checks (`--http`), what its
/// heartbeats tell the scheduler, and spill: its shuffle budget is one byte
/// and its memory pool small, so map outputs and a sort spill to disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_metrics_count_its_tasks_shuffle_output_and_spill() {
    use ember_executor::{Executor, ExecutorConfig};
    use ember_scheduler::{Scheduler, SchedulerConfig};
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        heartbeat_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let scheduler_http = scheduler.http_url().unwrap();
    let mut config = ExecutorConfig::new(scheduler.url());
    config.slots = 2;
    config.http = Some("127.0.0.1:0".parse().unwrap());
    config.shuffle_memory_bytes = 1;
    config.memory_bytes = 6 << 20;
    let executor = Executor::start(config).await.unwrap();
    let http = executor.http_url().unwrap();
    let ctx = ember::EmberContext::remote(&scheduler.url()).await.unwrap();
    register_tpch(&ctx).await;
    let result = ctx.run_sql(&query_text(3)).await.unwrap();
    let status = result.job.unwrap();
    let mut tasks: u64 = status.stages.iter().map(|s| s.tasks_total as u64).sum();
    let mut rows_out: u64 = status.stages.iter().map(|s| s.output_rows).sum();
    let shuffle_spilled: u64 = status.stages.iter().map(|s| s.spilled_bytes).sum();
    assert!(shuffle_spilled > 0, "a one-byte shuffle budget spills");
    // A sort bigger than the memory pool spills inside the operator.
    ctx.run_sql("SET datafusion.execution.sort_spill_reservation_bytes = 262144")
        .await
        .unwrap();
    let sorted = ctx
        .run_sql("SELECT l_comment, l_orderkey FROM lineitem ORDER BY l_comment, l_orderkey")
        .await
        .unwrap();
    let sort = sorted.job.unwrap();
    tasks += sort
        .stages
        .iter()
        .map(|s| s.tasks_total as u64)
        .sum::<u64>();
    rows_out += sort.stages.iter().map(|s| s.output_rows).sum::<u64>();
    let spilled: u64 = sort.stages.iter().map(|s| s.spilled_bytes).sum();

    // The scheduler's view of the executor, from its heartbeats.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let (_, body) = get(&format!("{scheduler_http}/api/v1/executors"));
        let executors: Value = serde_json::from_str(&body).unwrap();
        let e = executors[0].clone();
        if e["tasks_succeeded"] == tasks {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        format!("http://{}", seen["http_address"].as_str().unwrap()),
        http
    );
    // An attempt may fail and run again (CI once saw two on a loaded
    // machine, reason unknown): its job then records the retry, and the
    // events say why.
    let retried: Vec<String> = [&status, &sort]
        .iter()
        .flat_map(|job| job.events.iter())
        .filter(|e| e.kind == ember_proto::JobEventKind::TaskRetried as i32)
        .map(ember_scheduler::session::event_text)
        .collect();
    let failed = seen["tasks_failed"].as_u64().unwrap();
    assert!(failed == 0 || !retried.is_empty(), "{failed} failed");
    if failed > 0 {
        eprintln!("retried attempts: {retried:#?}");
    }
    assert_eq!(seen["memory_bytes"], 6u64 << 20);
    assert!(seen["shuffle_spilled_bytes"].as_u64().unwrap() > 0);
    let from_sql = ctx
        .run_sql("SELECT tasks_succeeded, shuffle_spilled_bytes > 0 FROM ember.executors")
        .await
        .unwrap();
    assert_eq!(
        rows(&from_sql.batches),
        vec![vec![tasks.to_string(), "true".to_string()]]
    );
    let (_, text) = get(&format!("{scheduler_http}/metrics"));
    assert_eq!(
        metric(&text, "ember_spilled_bytes_total{kind=\"shuffle\"}")
            + metric(&text, "ember_spilled_bytes_total{kind=\"operator\"}"),
        (shuffle_spilled + spilled) as f64
    );
    assert_eq!(metric(&text, "ember_tasks_runnable"), 0.0);
    assert!(
        metric(&text, "ember_spilled_bytes_total{kind=\"operator\"}") > 0.0,
        "the sort spilled"
    );

    // A call the scheduler refuses is counted as a gRPC error.
    assert!(ctx.run_sql("SELECT * FROM no_such_table").await.is_err());
    let (_, text) = get(&format!("{scheduler_http}/metrics"));
    assert!(
        text.lines()
            .any(|l| l.starts_with("ember_grpc_errors_total{") && l.contains("side=\"server\"")),
        "{text}"
    );

    assert_eq!(get(&format!("{http}/healthz")), (200, "ok".to_string()));
    assert_eq!(get(&format!("{http}/readyz")).0, 200);
    let (code, text) = get(&format!("{http}/metrics"));
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "ember_executor_tasks_total{state=\"succeeded\"}"),
        tasks as f64
    );
    // A failed attempt may have written rows before it failed.
    let written = metric(&text, "ember_shuffle_written_rows_total");
    if failed == 0 {
        assert_eq!(written, rows_out as f64);
    } else {
        assert!(written >= rows_out as f64);
    }
    assert_eq!(metric(&text, "ember_executor_slots"), 2.0);
    assert!(metric(&text, "ember_executor_task_duration_seconds_count") >= tasks as f64);
    let _ = metric(&text, "ember_memory_pool_used_bytes");
    // Operators held memory (they spilled), never past the pool's 6 MiB.
    let peak = metric(&text, "ember_memory_pool_peak_bytes");
    assert!(peak > 0.0 && peak <= (6 << 20) as f64, "pool peak {peak}");
    assert!(metric(&text, "ember_process_resident_peak_bytes") > 0.0);
    assert!(metric(&text, "ember_shuffle_spilled_bytes_total") > 0.0);
    assert!(metric(&text, "ember_operator_spilled_bytes_total") > 0.0);
    assert_eq!(metric(&text, "ember_executor_tasks_queued"), 0.0);
}

/// The event log: JSON lines per job, and the finished job shown again by
/// a restarted scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_job_reloads_from_the_event_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().display().to_string();
    // One task of stage 1 fails once and runs again: a recovery event.
    let mut cluster = ProcessCluster::start(
        2,
        "fail@task-start:stage=1:partition=0:times=1",
        &["--event-log-dir", &log_dir],
    );
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;
    let result = ctx.run_sql(&query_text(5)).await.unwrap();
    let rows_out = result.num_rows() as u64;
    let status = result.job.unwrap();
    let file = dir.path().join(format!("job-{}.jsonl", status.job_id));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // The `finished` line is the file's last, written whole; a read
        // while it is being written sees part of it (no newline yet).
        if text.contains("\"event\":\"finished\"") && text.ends_with('\n') {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished event:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l["v"] == 1));
    assert_eq!(lines[0]["event"], "submitted");
    let tasks: u64 = status.stages.iter().map(|s| s.tasks_total as u64).sum();
    let task_lines = lines.iter().filter(|l| l["event"] == "task").count() as u64;
    assert_eq!(task_lines, tasks, "one line per succeeded task");
    for event in ["stage_started", "stage_finished"] {
        let n = lines.iter().filter(|l| l["event"] == event).count();
        assert_eq!(n, status.stages.len(), "one {event} line per stage");
    }
    let finished_rows = lines
        .iter()
        .filter(|l| l["event"] == "stage_finished")
        .find(|l| l["stage"] == status.stages.last().unwrap().stage_id)
        .unwrap()["rows"]
        .clone();
    assert_eq!(finished_rows, rows_out);
    let retried: Vec<&Value> = lines.iter().filter(|l| l["event"] == "recovery").collect();
    assert_eq!(retried.len(), 1, "{text}");
    assert_eq!(retried[0]["kind"], "task_retried");
    assert_eq!(retried[0]["stage"], 1);
    let failed: u32 = status.stages.iter().map(|s| s.tasks_failed).sum();
    assert_eq!(failed, 1);
    let (_, metrics) = get(&format!("{}/metrics", cluster.http_url()));
    assert_eq!(
        metric(&metrics, "ember_tasks_total{state=\"retried\"}"),
        1.0
    );

    drop(ctx);
    cluster.kill_scheduler();
    cluster.start_scheduler();
    let http = cluster.http_url();
    let (code, body) = get(&format!("{http}/api/v1/jobs/{}", status.job_id));
    assert_eq!(code, 200, "{body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result_rows"], rows_out);
    assert_eq!(job["stages"].as_array().unwrap().len(), status.stages.len());
}
