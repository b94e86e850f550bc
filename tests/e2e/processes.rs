//! The real binaries: one `ember-scheduler` and two `ember-executor`
//! processes, a query with a shuffle through them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember::EmberContext;

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_with_shuffle_runs_through_real_scheduler_and_executor_processes() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = Processes(vec![]);
    // Executors started before their scheduler keep trying to register.
    for _ in 0..2 {
        procs.0.push(
            Command::new(binary("ember-executor"))
                .args(["--scheduler", &url, "--slots", "1", "--memory", "1GiB"])
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
    let result = ctx.sql(sql).await.expect("query through processes");
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

fn spawn_cluster(port: u16, executor_ids: &[&str]) -> Processes {
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = Processes(vec![
        Command::new(binary("ember-scheduler"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args([
                "--heartbeat-interval-ms",
                "200",
                "--executor-timeout-secs",
                "2",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ember-scheduler"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "scheduler did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in executor_ids {
        procs.0.push(
            Command::new(binary("ember-executor"))
                .args(["--scheduler", &url, "--slots", "1", "--id", id])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn ember-executor"),
        );
    }
    procs
}

async fn wait_for_executors(ctx: &EmberContext, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctx.cluster_info().await.unwrap().executors.len() != n {
        assert!(Instant::now() < deadline, "expected {n} executors");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_killed_mid_query_is_recomputed_from_lineage() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = spawn_cluster(port, &["exec-a", "exec-b"]);
    let ctx = EmberContext::remote(&url).await.expect("connect");
    wait_for_executors(&ctx, 2).await;
    let ctx = EmberContext::remote(&url).await.expect("connect");
    register_tpch(&ctx).await;

    let sql = crate::common::query_text(3);
    let expected = oracle_rows(&sql).await;
    let mut killed = false;
    let victim = &mut procs.0[2];
    let run = ctx.sql_with_progress(&sql, |status| {
        // Kill exec-b (SIGKILL) as soon as it holds finished map outputs that
        // the rest of the job still needs.
        let holds_outputs = status
            .stages
            .iter()
            .any(|s| s.tasks_done == s.tasks_total && s.executors.iter().any(|e| e == "exec-b"));
        let unfinished = status.stages.iter().any(|s| s.tasks_done < s.tasks_total);
        if !killed && holds_outputs && unfinished {
            victim.kill().expect("kill executor");
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
    wait_for_executors(&ctx, 1).await;
    let again = ctx.sql(&sql).await.expect("next query");
    assert_eq!(again.num_rows(), result.num_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_executors_dead_fails_the_query_instead_of_hanging() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut procs = spawn_cluster(port, &["only"]);
    let ctx = EmberContext::remote(&url).await.expect("connect");
    wait_for_executors(&ctx, 1).await;
    register_tpch(&ctx).await;
    procs.0[1].kill().unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        ctx.sql(&crate::common::query_text(1)),
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
