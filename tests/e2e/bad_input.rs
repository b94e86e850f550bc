//! Bad input gets a clear error, and the cluster keeps serving.

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, Ticket};
use ember::{EmberContext, EmberError};
use ember_executor::{Executor, ExecutorConfig};
use ember_scheduler::{Scheduler, SchedulerConfig};
use prost::Message;
use tokio::io::AsyncWriteExt;

use crate::common::register_tpch;

const HEALTH: &str = "SELECT r_name, count(*) FROM region GROUP BY r_name ORDER BY r_name";

async fn assert_healthy(ctx: &EmberContext) {
    let r = ctx
        .run_sql(HEALTH)
        .await
        .expect("the next query must succeed");
    assert_eq!(r.num_rows(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_sql_unknown_table_and_column_are_clear_errors() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;

    let e = ctx.run_sql("SELEC * FROM region").await.unwrap_err();
    assert!(matches!(e, EmberError::Query(_)), "{e:?}");
    assert!(e.to_string().contains("Line: 1, Column: 1"), "{e}");
    assert_healthy(&ctx).await;

    let e = ctx
        .run_sql("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no_such_table"), "{e}");
    assert_healthy(&ctx).await;

    let e = ctx
        .run_sql("SELECT no_such_column FROM region")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no_such_column"), "{e}");
    assert_healthy(&ctx).await;

    let e = ctx.run_sql("SELECT 1; SELECT 2").await.unwrap_err();
    assert!(
        matches!(e, EmberError::Query(_) | EmberError::NotSupported(_)),
        "{e:?}"
    );
    assert_healthy(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_ember_cannot_do_are_clear_errors() {
    let ctx = EmberContext::standalone(1).await.unwrap();
    register_tpch(&ctx).await;
    ctx.run_sql("CREATE TABLE mem AS SELECT r_regionkey FROM region")
        .await
        .unwrap();
    // In-memory tables live on the scheduler, which changes them itself.
    ctx.run_sql("INSERT INTO mem SELECT r_regionkey FROM region")
        .await
        .unwrap();
    ctx.run_sql("DELETE FROM mem WHERE r_regionkey = 0")
        .await
        .unwrap();
    let rows = ctx.run_sql("SELECT * FROM mem").await.unwrap().num_rows();
    assert_eq!(rows, 8);

    // Files are written, never changed in place.
    let e = ctx.run_sql("DELETE FROM region").await.unwrap_err();
    assert!(e.to_string().contains("Ember writes files"), "{e}");
    assert_healthy(&ctx).await;

    let e = ctx
        .run_sql(
            "COPY (SELECT * FROM region) TO '/proc/ember-cannot-write-here/' STORED AS PARQUET",
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ember-cannot-write-here"), "{e}");
    assert_healthy(&ctx).await;

    // Streams are not tables a task can finish reading.
    let csv = std::env::temp_dir().join(format!("ember-events-{}.csv", std::process::id()));
    std::fs::write(&csv, "1\n2\n").unwrap();
    ctx.run_sql(&format!(
        "CREATE UNBOUNDED EXTERNAL TABLE events (a INT) STORED AS CSV LOCATION '{}'",
        csv.display()
    ))
    .await
    .unwrap();
    let e = ctx.run_sql("SELECT * FROM events").await.unwrap_err();
    assert!(e.to_string().contains("reading an UNBOUNDED table"), "{e}");
    // The same, with a filter subquery planned (and maybe submitted) beside
    // the statement when its own planning fails: that job goes too.
    let e = ctx
        .run_sql("SELECT * FROM events WHERE a > (SELECT min(r_regionkey) FROM region)")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("reading an UNBOUNDED table"), "{e}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctx.cluster_info().await.unwrap().running_jobs > 0 {
        assert!(
            Instant::now() < deadline,
            "a subquery's job was left running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.run_sql("DROP TABLE events").await.unwrap();
    let _ = std::fs::remove_file(&csv);
    assert_healthy(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_parquet_path_is_a_clear_error() {
    let ctx = EmberContext::standalone(1).await.unwrap();
    register_tpch(&ctx).await;
    let e = ctx
        .run_sql("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/nonexistent/ember/path/'")
        .await;
    match e {
        Err(e) => assert!(e.to_string().contains("nonexistent"), "{e}"),
        Ok(_) => {
            // DataFusion may accept an empty listing; reading it must then fail or be empty.
            let r = ctx.run_sql("SELECT * FROM t").await;
            assert!(r.is_err() || r.unwrap().num_rows() == 0);
        }
    }
    assert_healthy(&ctx).await;
}

#[tokio::test]
async fn scheduler_nobody_listens_on_fails_within_seconds() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let e = EmberContext::remote(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(e, EmberError::Connect { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = EmberContext::remote("not a url").await.unwrap_err();
    assert!(matches!(e, EmberError::Connect { .. }), "{e:?}");
}

async fn flight(address: &str) -> FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new_from_inner(FlightServiceClient::new(channel))
}

async fn do_get(address: &str, ticket: Vec<u8>) -> Result<usize, String> {
    let mut client = flight(address).await;
    let stream = client
        .do_get(Ticket::new(ticket))
        .await
        .map_err(|e| e.to_string())?;
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(batches.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flight_refuses_garbage_paths_foreign_jobs_and_freed_data() {
    let ctx = EmberContext::standalone(2).await.unwrap();
    register_tpch(&ctx).await;
    let result = ctx.run_sql(HEALTH).await.unwrap();
    let job = result.job.unwrap();
    let location = &job.results[0];
    let address = location.flight_address.clone();

    let garbage = do_get(&address, vec![0xff, 0x13, 0x37, 0x00, 0x42])
        .await
        .unwrap_err();
    assert!(garbage.contains("malformed ticket"), "{garbage}");

    let path = do_get(&address, b"../../etc/passwd".to_vec())
        .await
        .unwrap_err();
    assert!(path.contains("malformed ticket"), "{path}");

    let mut ticket = ember_proto::FetchTicket::decode(location.ticket.as_slice()).unwrap();
    ticket.job_id = "../../etc/passwd".into();
    let traversal = do_get(&address, ticket.encode_to_vec()).await.unwrap_err();
    assert!(traversal.contains("invalid job id"), "{traversal}");

    let mut ticket = ember_proto::FetchTicket::decode(location.ticket.as_slice()).unwrap();
    ticket.job_id = "00000000-0000-0000-0000-000000000000".into();
    let unknown = do_get(&address, ticket.encode_to_vec()).await.unwrap_err();
    assert!(unknown.contains("unknown job"), "{unknown}");

    // The real ticket of a job whose result was fetched: its data is freed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match do_get(&address, location.ticket.clone()).await {
            Err(e) if e.contains("unknown job") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "job data was not freed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_healthy(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_token_is_refused_while_the_job_data_exists() {
    // A finished job whose result waits on an executor (a real job: the
    // executor frees data of jobs the scheduler does not know), and a client
    // guessing its token.
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let executor = Executor::start(ExecutorConfig::new(scheduler.url()))
        .await
        .unwrap();
    let ctx = EmberContext::remote(&scheduler.url()).await.unwrap();
    register_tpch(&ctx).await;
    let ember::Submitted::Job(job) = ctx.submit_sql("SELECT * FROM nation").await.unwrap() else {
        panic!("expected a job");
    };
    let status = ctx.wait_for(&job, |_| {}).await.unwrap();
    let result = &status.results[0];
    let mut ticket = ember_proto::FetchTicket::decode(result.ticket.as_slice()).unwrap();
    ticket.job_token = "guessed".into();
    let e = do_get(&result.flight_address, ticket.encode_to_vec())
        .await
        .unwrap_err();
    assert!(e.contains("wrong token"), "{e}");
    ctx.release(&job.job_id).await;
    executor.shutdown().await;
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn executor_registering_twice_with_one_id_is_refused() {
    let ctx = EmberContext::standalone(1).await.unwrap();
    register_tpch(&ctx).await;
    let mut config = ExecutorConfig::new(ctx.url().to_string());
    config.executor_id = Some("embedded-0".into());
    let e = Executor::start(config).await.unwrap_err();
    assert!(e.to_string().contains("already registered"), "{e}");
    assert_eq!(ctx.cluster_info().await.unwrap().executors.len(), 1);
    assert_healthy(&ctx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_message_and_socket_garbage_are_refused() {
    let scheduler = Scheduler::start(SchedulerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_message_size: 1 << 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = ExecutorConfig::new(scheduler.url());
    config.slots = 2;
    let executor = Executor::start(config).await.unwrap();
    let ctx = EmberContext::remote(&scheduler.url()).await.unwrap();
    register_tpch(&ctx).await;

    let huge = format!("SELECT '{}' AS x", "x".repeat(2 << 20));
    let e = ctx.run_sql(&huge).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("message"), "{e:?}");
    assert_healthy(&ctx).await;

    // Garbage on the scheduler's and the executor's sockets.
    for address in [
        scheduler.address().to_string(),
        executor.address().to_string(),
    ] {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket
            .write_all(b"GET / HTTP/1.0\r\n\r\n\x00\xff garbage \x13\x37")
            .await
            .unwrap();
        drop(socket);
    }
    assert_healthy(&ctx).await;
    executor.shutdown().await;
    scheduler.shutdown().await;
}
