//! The executor process: configuration, the `ExecutorService` gRPC API,
//! registration and heartbeats, and running tasks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use ember_planner::{MapOutputLocation, codec, find_fetch_failure, stats_from_batch};
use ember_proto::executor_service_server::{ExecutorService, ExecutorServiceServer};
use ember_proto::scheduler_service_client::SchedulerServiceClient;
use ember_proto::{
    CancelTasksRequest, CancelTasksResponse, ExecutorInfo, HeartbeatRequest, LaunchTasksRequest,
    LaunchTasksResponse, RegisterExecutorRequest, RemoveJobDataRequest, RemoveJobDataResponse,
    TaskFailure, TaskId, TaskStatusUpdate, TaskSucceeded, task_failure,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::error::{ExecutorError, Result};
use crate::flight::ShuffleFlightService;
use crate::store::{ShuffleStore, is_valid_id};
use crate::task::{FetchCounters, PeerChannels, TaskShuffle, task_session};

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Scheduler URL, e.g. `http://127.0.0.1:50050`.
    pub scheduler_url: String,
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Host name other executors and clients use to reach this one
    /// (defaults to the bind IP).
    pub advertise_host: Option<String>,
    /// Tasks run concurrently.
    pub slots: usize,
    /// Memory for task execution (DataFusion's pool, spilling operators).
    pub memory_bytes: u64,
    /// Memory for shuffle outputs before they spill to `work_dir`.
    pub shuffle_memory_bytes: u64,
    /// Where spill files go; a temporary directory if unset.
    pub work_dir: Option<PathBuf>,
    /// Stable id; a random one if unset.
    pub executor_id: Option<String>,
    /// Cap on one gRPC/Flight message.
    pub max_message_size: usize,
    /// How long to keep trying to reach the scheduler at start.
    pub register_timeout: Duration,
}

impl ExecutorConfig {
    pub fn new(scheduler_url: impl Into<String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            scheduler_url: scheduler_url.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            slots: cores,
            memory_bytes: 4 << 30,
            shuffle_memory_bytes: 1 << 30,
            work_dir: None,
            executor_id: None,
            max_message_size: ember_proto::DEFAULT_MAX_MESSAGE_SIZE,
            register_timeout: Duration::ZERO,
        }
    }
}

/// State shared by the gRPC services and the running tasks.
#[derive(Debug)]
struct Inner {
    id: String,
    address: String,
    slots: usize,
    memory_bytes: u64,
    store: Arc<ShuffleStore>,
    peers: Arc<PeerChannels>,
    runtime: Arc<RuntimeEnv>,
    scheduler: SchedulerServiceClient<Channel>,
    /// Per job, a flag its tasks watch: set, they stop and report `Killed`.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    task_slots: Arc<Semaphore>,
    /// Tasks run here, apart from the runtime serving gRPC, Flight and
    /// heartbeats: CPU-bound operators must not starve the network side (a
    /// starved heartbeat would get the executor declared lost).
    cpu: tokio::runtime::Handle,
}

/// A running executor.
pub struct Executor {
    inner: Arc<Inner>,
    _cpu_runtime: CpuRuntime,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    _work_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("id", &self.inner.id)
            .finish()
    }
}

fn scheduler_channel(url: &str, max: usize) -> Result<SchedulerServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ExecutorError::Config(format!("invalid scheduler URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(SchedulerServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

impl Executor {
    /// Binds the executor's port, registers with the scheduler and starts
    /// heartbeating. Fails if the scheduler cannot be reached or refuses.
    pub async fn start(config: ExecutorConfig) -> Result<Self> {
        if config.slots == 0 {
            return Err(ExecutorError::Config("--slots must be at least 1".into()));
        }
        let (work_dir, temp) = match &config.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ember-executor-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let id = config
            .executor_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !is_valid_id(&id) {
            return Err(ExecutorError::Config(format!(
                "executor id {id:?} must be 1-64 letters, digits or '-'"
            )));
        }
        let listener = TcpListener::bind(config.bind).await?;
        let local = listener.local_addr()?;
        let host = config
            .advertise_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string());
        let address = format!("{host}:{}", local.port());

        // One thread beyond the slots: a cancelled task keeps its thread until
        // its operator yields, and must not block the next task meanwhile.
        let cpu_runtime = CpuRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.slots + 1)
                .thread_name("ember-task")
                .enable_all()
                .build()?,
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_bytes as usize)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![work_dir.join("spill")])),
            )
            .build_arc()?;
        std::fs::create_dir_all(work_dir.join("spill"))?;

        let inner = Arc::new(Inner {
            id: id.clone(),
            address: address.clone(),
            slots: config.slots,
            memory_bytes: config.memory_bytes,
            store: Arc::new(ShuffleStore::new(
                work_dir.join("shuffle"),
                config.shuffle_memory_bytes,
            )),
            peers: Arc::new(PeerChannels::new(config.max_message_size)),
            runtime,
            scheduler: scheduler_channel(&config.scheduler_url, config.max_message_size)?,
            running: Mutex::new(HashMap::new()),
            task_slots: Arc::new(Semaphore::new(config.slots)),
            cpu: cpu_runtime.handle(),
        });

        let (tx, rx) = oneshot::channel::<()>();
        let max = config.max_message_size;
        let grpc = ExecutorServiceServer::new(Api(Arc::clone(&inner)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let flight = FlightServiceServer::new(ShuffleFlightService::new(Arc::clone(&inner.store)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let incoming = ember_proto::nodelay_incoming(listener);
        let server = tokio::spawn(async move {
            let result = Server::builder()
                .tcp_nodelay(true)
                .add_service(grpc)
                .add_service(flight)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "executor server stopped");
            }
        });

        let interval = register_patiently(&inner, &config).await?;
        tracing::info!(executor = %id, %address, slots = config.slots, "executor registered");
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&inner),
            config.scheduler_url.clone(),
            interval,
        ));
        Ok(Self {
            inner,
            _cpu_runtime: cpu_runtime,
            shutdown: Some(tx),
            server,
            heartbeat,
            _work_dir: temp,
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// `host:port` of the gRPC + Flight endpoint.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    pub fn store(&self) -> &Arc<ShuffleStore> {
        &self.inner.store
    }

    /// Stops heartbeating, cancels running tasks and closes the port.
    pub async fn shutdown(mut self) {
        self.heartbeat.abort();
        for (_, cancel) in self.inner.running.lock().drain() {
            cancel.send_replace(true);
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.server.abort();
    }
}

/// The runtime tasks run on. Dropped without blocking, so an executor can be
/// dropped (or fail to start) inside another runtime.
struct CpuRuntime(Option<tokio::runtime::Runtime>);

impl CpuRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn register(inner: &Inner, url: &str) -> Result<Duration> {
    let request = RegisterExecutorRequest {
        executor: Some(ExecutorInfo {
            executor_id: inner.id.clone(),
            address: inner.address.clone(),
            slots: inner.slots as u32,
            memory_bytes: inner.memory_bytes,
        }),
    };
    let response = inner
        .scheduler
        .clone()
        .register_executor(request)
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded => {
                ExecutorError::SchedulerUnreachable {
                    url: url.to_string(),
                    message: s.message().to_string(),
                }
            }
            _ => ExecutorError::RegistrationRefused(s.message().to_string()),
        })?;
    Ok(Duration::from_millis(
        response.into_inner().heartbeat_interval_ms.max(100),
    ))
}

/// Registers, retrying while the scheduler is unreachable (it may still be
/// starting) for up to `register_timeout`; a refusal fails at once.
async fn register_patiently(inner: &Inner, config: &ExecutorConfig) -> Result<Duration> {
    let deadline = Instant::now() + config.register_timeout;
    let mut backoff = Duration::from_millis(100);
    loop {
        match register(inner, &config.scheduler_url).await {
            Err(ExecutorError::SchedulerUnreachable { .. })
                if Instant::now() + backoff < deadline =>
            {
                tracing::info!(url = %config.scheduler_url, "scheduler not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

async fn heartbeat_loop(inner: Arc<Inner>, url: String, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let request = HeartbeatRequest {
            executor_id: inner.id.clone(),
        };
        match inner.scheduler.clone().heartbeat(request).await {
            Ok(r) if r.get_ref().reregister => {
                tracing::warn!("scheduler does not know this executor any more; registering again");
                // Whatever the scheduler thought we held is gone from its view.
                if let Err(e) = register(&inner, &url).await {
                    tracing::warn!(error = %e, "re-registration failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e.message(), "heartbeat failed"),
        }
    }
}

/// The `ExecutorService` gRPC API.
struct Api(Arc<Inner>);

#[tonic::async_trait]
impl ExecutorService for Api {
    async fn launch_tasks(
        &self,
        request: Request<LaunchTasksRequest>,
    ) -> std::result::Result<Response<LaunchTasksResponse>, Status> {
        let req = request.into_inner();
        if !is_valid_id(&req.job_id) || req.job_token.is_empty() {
            return Err(Status::invalid_argument("invalid job id or token"));
        }
        self.0
            .store
            .register_job(&req.job_id, &req.job_token)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let inputs: HashMap<u32, Vec<MapOutputLocation>> = req
            .inputs
            .iter()
            .map(|input| {
                let locs = input
                    .locations
                    .iter()
                    .map(|l| MapOutputLocation {
                        map_partition: l.map_partition,
                        executor_id: l.executor_id.clone(),
                        address: l.address.clone(),
                    })
                    .collect();
                (input.stage_id, locs)
            })
            .collect();
        let launch = Arc::new(Launch {
            job_id: req.job_id.clone(),
            job_token: req.job_token,
            stage_id: req.stage_id,
            stage_attempt: req.stage_attempt,
            plan: req.plan,
            inputs,
            settings: req.settings,
        });
        let cancelled = self
            .0
            .running
            .lock()
            .entry(req.job_id)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe();
        for partition in req.partitions {
            let inner = Arc::clone(&self.0);
            let launch = Arc::clone(&launch);
            tokio::spawn(run_and_report(inner, launch, partition, cancelled.clone()));
        }
        Ok(Response::new(LaunchTasksResponse {}))
    }

    async fn cancel_tasks(
        &self,
        request: Request<CancelTasksRequest>,
    ) -> std::result::Result<Response<CancelTasksResponse>, Status> {
        let job = request.into_inner().job_id;
        if let Some(cancel) = self.0.running.lock().remove(&job) {
            tracing::info!(job, "cancelling tasks");
            cancel.send_replace(true);
        }
        Ok(Response::new(CancelTasksResponse {}))
    }

    async fn remove_job_data(
        &self,
        request: Request<RemoveJobDataRequest>,
    ) -> std::result::Result<Response<RemoveJobDataResponse>, Status> {
        let job = request.into_inner().job_id;
        if let Some(cancel) = self.0.running.lock().remove(&job) {
            cancel.send_replace(true);
        }
        self.0.store.remove_job(&job);
        tracing::debug!(job, "job data removed");
        Ok(Response::new(RemoveJobDataResponse {}))
    }
}

/// What all the tasks of one `LaunchTasks` share.
struct Launch {
    job_id: String,
    job_token: String,
    stage_id: u32,
    stage_attempt: u32,
    plan: Vec<u8>,
    inputs: HashMap<u32, Vec<MapOutputLocation>>,
    settings: HashMap<String, String>,
}

async fn run_and_report(
    inner: Arc<Inner>,
    launch: Arc<Launch>,
    partition: u32,
    mut cancelled: watch::Receiver<bool>,
) {
    let task = TaskId {
        job_id: launch.job_id.clone(),
        stage_id: launch.stage_id,
        stage_attempt: launch.stage_attempt,
        partition,
    };
    let permit = Arc::clone(&inner.task_slots).acquire_owned().await;
    let started = Instant::now();
    let counters = Arc::new(FetchCounters::default());
    // Every launched task reports exactly once, killed ones included: the
    // scheduler's slot accounting depends on it.
    let mut work = {
        let inner = Arc::clone(&inner);
        let launch = Arc::clone(&launch);
        let counters = Arc::clone(&counters);
        inner
            .cpu
            .clone()
            .spawn(async move { run_task(&inner, &launch, partition, counters).await })
    };
    // Cancellation is answered from this (network) side at once; the task
    // itself stops at its next yield point.
    let result = tokio::select! {
        r = &mut work => match r {
            Ok(r) => r.map_err(Some),
            Err(e) => Err(Some(DataFusionError::Internal(format!("task panicked: {e}")))),
        },
        _ = cancelled.wait_for(|c| *c) => {
            work.abort();
            Err(None)
        }
    };
    drop(permit);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = match result {
        Ok(stats) => ember_proto::task_status_update::Outcome::Succeeded(TaskSucceeded {
            output_rows: stats.rows,
            output_bytes: stats.bytes,
            local_fetches: load(&counters.local),
            remote_fetches: load(&counters.remote),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }),
        Err(Some(e)) => {
            tracing::warn!(task = %task.display(), error = %e, "task failed");
            ember_proto::task_status_update::Outcome::Failed(classify_failure(&e))
        }
        Err(None) => ember_proto::task_status_update::Outcome::Failed(TaskFailure {
            message: "task killed".into(),
            reason: Some(task_failure::Reason::Killed(ember_proto::TaskKilled {})),
        }),
    };
    let update = TaskStatusUpdate {
        executor_id: inner.id.clone(),
        task: Some(task.clone()),
        outcome: Some(outcome),
    };
    // The scheduler must hear about every task; retry a few times.
    for attempt in 0..5u32 {
        match inner
            .scheduler
            .clone()
            .update_task_status(update.clone())
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(task = %task.display(), error = %e.message(), "status report failed");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
}

async fn run_task(
    inner: &Arc<Inner>,
    launch: &Launch,
    partition: u32,
    counters: Arc<FetchCounters>,
) -> datafusion::error::Result<ember_planner::MapOutputStats> {
    let shuffle = Arc::new(TaskShuffle {
        executor_id: inner.id.clone(),
        job_id: launch.job_id.clone(),
        job_token: launch.job_token.clone(),
        inputs: launch.inputs.clone(),
        store: Arc::clone(&inner.store),
        peers: Arc::clone(&inner.peers),
        counters,
    });
    let session = task_session(&launch.settings, Arc::clone(&inner.runtime), shuffle)?;
    let task_ctx = session.task_ctx();
    let plan = codec::decode_plan(&launch.plan, &task_ctx)?;
    let stream = plan.execute(partition as usize, task_ctx)?;
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await?;
    batches
        .first()
        .and_then(stats_from_batch)
        .ok_or_else(|| DataFusionError::Internal("shuffle writer returned no statistics".into()))
}

/// Turns a task error into the typed failure the scheduler acts on.
fn classify_failure(e: &DataFusionError) -> TaskFailure {
    let message = e.to_string();
    if let Some(f) = find_fetch_failure(e) {
        return TaskFailure {
            message,
            reason: Some(task_failure::Reason::FetchFailed(
                ember_proto::FetchFailed {
                    executor_id: f.executor_id,
                    map_stage: f.map_stage,
                    map_partition: f.map_partition,
                },
            )),
        };
    }
    // Errors about the query itself fail the same way on every attempt.
    let retryable = !matches!(
        e.find_root(),
        DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_)
    );
    TaskFailure {
        message,
        reason: Some(task_failure::Reason::Execution(
            ember_proto::ExecutionError { retryable },
        )),
    }
}
