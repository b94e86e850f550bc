//! The real binaries: one `ember-scheduler` and two `ember-executor`
//! processes, a query with a shuffle through them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember::EmberContext;

use crate::cluster::{ProcessCluster, free_port};
use crate::common::{assert_same, binary, oracle_rows, register_tpch, rows};

/// Kills its processes (SIGKILL) when dropped, even if the test fails.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_with_shuffle_runs_through_real_scheduler_and_executor_processes() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = Processes(vec![]);
    // Their spill directories, removed even when they are killed.
    let work = tempfile::tempdir().unwrap();
    // Executors started before their scheduler keep trying to register.
    for i in 0..2 {
        procs.0.push(
            Command::new(binary("ember-executor"))
                .args(["--scheduler", &url, "--slots", "1", "--memory", "1GiB"])
                .arg("--work-dir")
                .arg(work.path().join(i.to_string()))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn ember-executor"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    procs.0.push(
        Command::new(binary("ember-scheduler"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--http", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ember-scheduler"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "scheduler did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ctx = EmberContext::remote(&url).await.expect("connect");
    loop {
        if ctx.cluster_info().await.unwrap().executors.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "executors did not register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fresh session sees both executors' slots as its partitions.
    let ctx = EmberContext::remote(&url).await.expect("connect");
    register_tpch(&ctx).await;

    let sql = "SELECT o_orderpriority, count(*) AS n FROM orders JOIN lineitem ON o_orderkey = l_orderkey \
               GROUP BY o_orderpriority ORDER BY o_orderpriority";
    let result = ctx.run_sql(sql).await.expect("query through processes");
    assert_same(
        "processes",
        rows(&result.batches),
        oracle_rows(sql).await,
        true,
    );
    let job = result.job.unwrap();
    let remote: u64 = job.stages.iter().map(|s| s.remote_fetches).sum();
    assert!(remote > 0, "shuffle data should cross processes: {job:?}");

    // SIGTERM shuts an executor down cleanly.
    let executor = &mut procs.0[0];
    let pid = executor.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = executor.try_wait().unwrap() {
            assert!(status.success(), "executor exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "executor ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_mid_query_is_recomputed_from_lineage() {
    let mut cluster = ProcessCluster::start(2, "", &[]);
    let ctx = cluster.session(2).await;
    register_tpch(&ctx).await;

    let sql = crate::common::query_text(3);
    let expected = oracle_rows(&sql).await;
    let mut killed = false;
    let run = ctx.run_sql_with_progress(&sql, |status| {
        // Kill exec-1 (SIGKILL) as soon as it holds finished map outputs that
        // the rest of the job still needs.
        let holds_outputs = status
            .stages
            .iter()
            .any(|s| s.tasks_done == s.tasks_total && s.executors.iter().any(|e| e == "exec-1"));
        let unfinished = status.stages.iter().any(|s| s.tasks_done < s.tasks_total);
        if !killed && holds_outputs && unfinished {
            cluster.kill_executor("exec-1");
            killed = true;
        }
    });
    let result = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the query must not hang after an executor died")
        .expect("the query must survive the executor's death");
    assert!(killed, "the victim never held map outputs");
    let attempts: Vec<u32> = result
        .job
        .as_ref()
        .unwrap()
        .stages
        .iter()
        .map(|s| s.attempt)
        .collect();
    assert!(
        attempts.iter().any(|a| *a > 0),
        "no stage was recomputed after the loss: {attempts:?}"
    );
    assert_same(
        "q3 after executor loss",
        rows(&result.batches),
        expected,
        true,
    );

    // The dead executor is dropped from the cluster and the next query works.
    assert_eq!(ctx.cluster_info().await.unwrap().executors.len(), 1);
    let again = ctx.run_sql(&sql).await.expect("next query");
    assert_eq!(again.num_rows(), result.num_rows());

    // The killed executor's files stay behind until the next executor
    // started on the same work dir removes them; the running one's stay.
    let work = cluster.work_dir();
    let dir = |id: &str| work.join(format!("executor-{id}"));
    assert!(
        dir("exec-1").is_dir(),
        "the killed executor had no work dir"
    );
    cluster.spawn_executor();
    cluster.session(2).await;
    assert!(
        !dir("exec-1").exists(),
        "the killed executor's files were left"
    );
    assert!(dir("exec-0").is_dir() && dir("exec-2").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_executors_dead_fails_the_query_instead_of_hanging() {
    let mut cluster = ProcessCluster::start(1, "", &[]);
    let ctx = cluster.session(1).await;
    register_tpch(&ctx).await;
    cluster.kill_executor("exec-0");
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        ctx.run_sql(&crate::common::query_text(1)),
    )
    .await
    .expect("must not hang")
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("executor") || msg.contains("no executors"),
        "unexpected error: {msg}"
    );
}
