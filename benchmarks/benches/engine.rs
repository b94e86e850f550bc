//! Micro-benchmarks of Ember's moving parts (`cargo bench -p ember-benchmarks`):
//!
//! * shuffle write and read throughput, in memory and spilled to Arrow IPC;
//! * one bucket fetched over Arrow Flight on loopback;
//! * stage plan serialization round trip (encode + decode) of TPC-H q5;
//! * task launch latency: submit → result of `SELECT 1` on a warm embedded
//!   cluster (scheduling, launch RPC, one task, Flight fetch, release).
//!
//! Throughputs are in bytes of Arrow data; compare runs with criterion's own
//! baseline support (`--save-baseline`, `--baseline`).

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightClient, Ticket};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ember_executor::faults::Faults;
use ember_executor::flight::ShuffleFlightService;
use ember_executor::store::ShuffleStore;
use ember_planner::MapOutputSink;
use futures::TryStreamExt;
use prost::Message;

const ROWS_PER_BATCH: usize = 8192;
const BATCHES: usize = 64;
const BUCKETS: usize = 8;

fn batch(seed: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Float64, false),
        Field::new("s", DataType::Utf8, false),
    ]));
    let k = Int64Array::from_iter_values((0..ROWS_PER_BATCH as i64).map(|i| i * 31 + seed));
    let v = Float64Array::from_iter_values((0..ROWS_PER_BATCH).map(|i| i as f64 * 0.5));
    let s =
        StringArray::from_iter_values((0..ROWS_PER_BATCH).map(|i| format!("value-{}", i % 1000)));
    RecordBatch::try_new(schema, vec![Arc::new(k), Arc::new(v), Arc::new(s)]).expect("batch")
}

fn input() -> (Vec<RecordBatch>, u64) {
    let batches: Vec<RecordBatch> = (0..BATCHES as i64).map(batch).collect();
    let bytes = batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum();
    (batches, bytes)
}

fn write_map_output(store: &Arc<ShuffleStore>, job: &str, map: u32, batches: &[RecordBatch]) {
    let mut sink = Box::new(store.sink(job, (0, map, 1), BUCKETS, batches[0].schema()));
    for (i, b) in batches.iter().enumerate() {
        sink.push(i % BUCKETS, b.clone()).expect("push");
    }
    (sink as Box<dyn MapOutputSink>).finish().expect("finish");
}

fn shuffle_store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (batches, bytes) = input();
    let mut group = c.benchmark_group("shuffle_store");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    for (name, budget) in [("memory", u64::MAX / 2), ("spilled", 0)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(ShuffleStore::new(
            dir.path().to_path_buf(),
            budget,
            unbounded_pool(),
        ));
        store.register_job("bench", "t").expect("register");
        let mut map = 0;
        group.bench_function(BenchmarkId::new("write", name), |b| {
            b.iter(|| {
                map += 1;
                let _guard = rt.enter();
                write_map_output(&store, "bench", map, &batches);
            })
        });
        store.remove_job("bench");
        store.register_job("bench", "t").expect("register");
        {
            let _guard = rt.enter();
            write_map_output(&store, "bench", 0, &batches);
        }
        group.bench_function(BenchmarkId::new("read", name), |b| {
            b.to_async(&rt).iter(|| async {
                let output = store.open_job("bench", "t", (0, 0, 1)).expect("output");
                for bucket in 0..BUCKETS as u32 {
                    let read: Vec<RecordBatch> = output
                        .stream(bucket)
                        .expect("stream")
                        .try_collect()
                        .await
                        .expect("read");
                    std::hint::black_box(read);
                }
            })
        });
    }
    group.finish();
}

fn flight_fetch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (batches, bytes) = input();
    // The executor's Flight service alone, over a store holding one map
    // output. (A whole executor would free this hand-made job as soon as its
    // heartbeat learned that the scheduler does not know it.)
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(ShuffleStore::new(
        dir.path().to_path_buf(),
        u64::MAX,
        unbounded_pool(),
    ));
    store.register_job("bench", "t").expect("register");
    let (address, server) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let service = ShuffleFlightService::new(Arc::clone(&store), Arc::new(Faults::default()));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(service))
                .serve_with_incoming(ember_proto::nodelay_incoming(listener)),
        );
        (address, server)
    });
    {
        let _guard = rt.enter();
        // One bucket holding every batch.
        let mut sink = Box::new(store.sink("bench", (0, 0, 1), 1, batches[0].schema()));
        for b in &batches {
            sink.push(0, b.clone()).expect("push");
        }
        (sink as Box<dyn MapOutputSink>).finish().expect("finish");
    }
    let ticket = ember_proto::FetchTicket {
        job_id: "bench".into(),
        job_token: "t".into(),
        stage_id: 0,
        map_partition: 0,
        bucket: 0,
        attempt: 1,
        result: false,
    }
    .encode_to_vec();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    });
    let mut group = c.benchmark_group("flight");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    group.bench_function("fetch_bucket_loopback", |b| {
        b.to_async(&rt).iter(|| async {
            let inner =
                FlightServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
            let mut client = FlightClient::new_from_inner(inner);
            let stream = client
                .do_get(Ticket::new(ticket.clone()))
                .await
                .expect("do_get");
            let read: Vec<RecordBatch> = stream.try_collect().await.expect("fetch");
            std::hint::black_box(read);
        })
    });
    group.finish();
    server.abort();
}

fn plan_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    ember::tpch::generate(dir.path(), 0.001, 2).expect("tpch");
    let ctx = datafusion::prelude::SessionContext::new_with_config(
        ember_planner::config::distributed_session_config(8),
    );
    let plan = rt.block_on(async {
        for stmt in ember::tpch::create_table_statements(dir.path()) {
            ctx.sql(&stmt).await.expect("ddl");
        }
        let sql = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/queries/q5.sql"))
            .expect("q5");
        ctx.sql(&sql)
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan")
    });
    let dag = ember_planner::StageDag::cut(plan, 8).expect("cut");
    let task_ctx = ctx.task_ctx();
    c.bench_function("plan/encode_decode_q5_stages", |b| {
        b.iter(|| {
            for stage in dag.stages() {
                let bytes =
                    ember_planner::codec::encode_plan(Arc::clone(&stage.plan)).expect("encode");
                let plan = ember_planner::codec::decode_plan(&bytes, &task_ctx).expect("decode");
                std::hint::black_box(plan);
            }
        })
    });
}

fn task_launch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ctx = rt
        .block_on(ember::EmberContext::standalone(2))
        .expect("embedded cluster");
    // Warm up connections and caches.
    rt.block_on(ctx.run_sql("SELECT 1")).expect("warm-up");
    c.bench_function("task_launch/select_1_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            std::hint::black_box(ctx.run_sql("SELECT 1").await.expect("select 1"));
        })
    });
}

criterion_group!(
    benches,
    shuffle_store,
    flight_fetch,
    plan_round_trip,
    task_launch
);
criterion_main!(benches);

/// A pool that never refuses: the store's own budget decides what spills.
fn unbounded_pool() -> Arc<dyn datafusion::execution::memory_pool::MemoryPool> {
    Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default())
}
