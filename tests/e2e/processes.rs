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
    procs.0.push(
        Command::new(binary("ember-scheduler"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ember-scheduler"),
    );
    // Executors retry nothing: wait until the scheduler answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "scheduler did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let executor = &mut procs.0[1];
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
