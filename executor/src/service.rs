//! The executor's lifecycle ([`Executor`]: bind, register, serve, shut down)
//! and its `ExecutorService` gRPC API (launch, cancel, free a job's data).
//! Registration and heartbeats live in [`control`](crate::control), running a
//! task in [`task`](crate::task).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use ember_planner::MapOutputLocation;
use ember_proto::executor_service_server::{ExecutorService, ExecutorServiceServer};
use ember_proto::scheduler_service_client::SchedulerServiceClient;
use ember_proto::{
    CancelTasksRequest, CancelTasksResponse, LaunchTasksRequest, LaunchTasksResponse,
    RemoveJobDataRequest, RemoveJobDataResponse,
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::config::ExecutorConfig;
use crate::control;
use crate::error::{ExecutorError, Result};
use crate::faults::Faults;
use crate::flight::ShuffleFlightService;
use crate::jobs::JobTable;
use crate::memory::ExecutorPool;
use crate::shuffle::PeerChannels;
use crate::store::{ShuffleStore, is_valid_id};
use crate::task::{Launch, run_and_report};
use crate::work_dir::WorkDir;

/// State shared by the gRPC services, the control stream and the tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub id: String,
    pub address: String,
    /// `host:port` of `/metrics` and the health checks, if served.
    pub http_address: Option<String>,
    pub slots: usize,
    pub memory_bytes: u64,
    /// The pool of `runtime`, operators and shuffle outputs together.
    pub pool: Arc<ExecutorPool>,
    pub store: Arc<ShuffleStore>,
    pub peers: Arc<PeerChannels>,
    pub runtime: Arc<RuntimeEnv>,
    pub scheduler_url: String,
    pub scheduler: SchedulerServiceClient<Channel>,
    /// Per job, a flag its tasks watch (set: they stop and report `Killed`),
    /// and tombstones of removed jobs.
    pub jobs: JobTable,
    /// Attempts launched here whose final report the scheduler has not
    /// acknowledged yet, with their job.
    pub attempts: Mutex<HashMap<u64, String>>,
    pub task_slots: Arc<Semaphore>,
    /// Tasks run here, apart from the runtime serving gRPC, Flight and
    /// heartbeats: CPU-bound operators must not starve the network side (a
    /// starved heartbeat would get the executor declared lost).
    pub cpu: tokio::runtime::Handle,
    pub faults: Arc<Faults>,
    /// The functions tasks may call, user-defined ones included.
    pub functions: crate::task::TaskFunctions,
    pub metrics: crate::metrics::Metrics,
    /// Attached to a scheduler (its control stream is up).
    pub attached: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Forgets `job`: cancels its tasks, stops retrying their reports, frees
    /// its data, and refuses its late launches.
    pub fn remove_job(&self, job: &str) {
        self.jobs.remove(job);
        self.attempts.lock().retain(|_, j| j != job);
        self.store.remove_job(job);
    }

    /// The gauges of `/metrics` and of heartbeats, now.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        crate::metrics::Snapshot {
            memory_pool_used: self.pool.reserved() as i64,
            memory_pool_peak: self.pool.peak() as u64,
            resident_peak: crate::metrics::resident_peak_bytes(),
            shuffle_memory_used: self.store.memory_used() as i64,
            shuffle_spilled_total: self.store.spilled_bytes(),
            tasks_running: (self.slots - self.task_slots.available_permits()) as i64,
            slots: self.slots as i64,
        }
    }
}

/// A running executor.
pub struct Executor {
    inner: Arc<Inner>,
    _cpu_runtime: CpuRuntime,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    /// `/metrics` and health checks, if configured.
    http: Option<(std::net::SocketAddr, JoinHandle<()>)>,
    /// Shuffle files and spills; removed when the executor stops.
    _work_dir: WorkDir,
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
        let faults = Arc::new(Faults::parse(&config.faults, config.faults_dir.clone())?);
        let id = config
            .executor_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !is_valid_id(&id) {
            return Err(ExecutorError::Config(format!(
                "executor id {id:?} must be 1-64 letters, digits or '-'"
            )));
        }
        let work = match &config.work_dir {
            Some(parent) => WorkDir::claim(parent, &id)?,
            None => WorkDir::temporary()?,
        };
        let work_dir = work.path().to_path_buf();
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
        // One pool for operators and shuffle outputs alike (see `memory`).
        let pool = Arc::new(ExecutorPool::new(config.memory_bytes as usize));
        let store = Arc::new(ShuffleStore::new(
            work_dir.join("shuffle"),
            config.shuffle_memory_bytes,
            Arc::clone(&pool) as Arc<dyn MemoryPool>,
        ));
        pool.set_store(&store);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::clone(&pool) as Arc<dyn MemoryPool>)
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![work_dir.join("spill")])),
            )
            .build_arc()?;
        std::fs::create_dir_all(work_dir.join("spill"))?;
        let http_listener = match config.http {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let http_address = match &http_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };

        let inner = Arc::new(Inner {
            id: id.clone(),
            address: address.clone(),
            http_address: http_address.map(|a| format!("{host}:{}", a.port())),
            slots: config.slots,
            memory_bytes: config.memory_bytes,
            pool,
            store,
            peers: Arc::new(PeerChannels::new(config.max_message_size)),
            runtime,
            scheduler_url: config.scheduler_url.clone(),
            scheduler: scheduler_channel(&config.scheduler_url, config.max_message_size)?,
            jobs: JobTable::default(),
            attempts: Mutex::new(HashMap::new()),
            task_slots: Arc::new(Semaphore::new(config.slots)),
            cpu: cpu_runtime.handle(),
            faults: Arc::clone(&faults),
            functions: crate::task::TaskFunctions::new(&config.functions),
            metrics: Default::default(),
            attached: Default::default(),
        });

        let (tx, rx) = oneshot::channel::<()>();
        let max = config.max_message_size;
        let grpc = ExecutorServiceServer::new(Api(Arc::clone(&inner)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let flight =
            FlightServiceServer::new(ShuffleFlightService::new(Arc::clone(&inner.store), faults))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
        let incoming = ember_proto::nodelay_incoming(listener);
        let errors = {
            let inner = Arc::clone(&inner);
            ember_proto::CountErrorsLayer(Arc::new(move |method: &str| {
                inner.metrics.grpc_error("server", method)
            }))
        };
        let server = tokio::spawn(async move {
            let result = Server::builder()
                .tcp_nodelay(true)
                .layer(errors)
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

        let registration =
            control::register_patiently(&inner, Some(Instant::now() + config.register_timeout))
                .await?;
        tracing::info!(executor = %id, %address, slots = config.slots, "executor registered");
        let heartbeat = tokio::spawn(control::control_loop(Arc::clone(&inner), registration));
        let http = http_listener.zip(http_address).map(|(listener, address)| {
            let router = crate::http::router(Arc::clone(&inner));
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "executor HTTP server stopped");
                }
            });
            (address, task)
        });
        Ok(Self {
            inner,
            _cpu_runtime: cpu_runtime,
            shutdown: Some(tx),
            server,
            heartbeat,
            http,
            _work_dir: work,
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// `host:port` of the gRPC + Flight endpoint.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// `http://host:port` of `/metrics` and the health checks.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(|(a, _)| format!("http://{a}"))
    }

    pub fn store(&self) -> &Arc<ShuffleStore> {
        &self.inner.store
    }

    /// Stops heartbeating, cancels running tasks and closes the port.
    pub async fn shutdown(mut self) {
        self.heartbeat.abort();
        if let Some((_, http)) = &self.http {
            http.abort();
        }
        self.inner.jobs.cancel_all();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some((_, http)) = &self.http {
            http.abort();
        }
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
                        attempt: l.attempt,
                    })
                    .collect();
                (input.stage_id, locs)
            })
            .collect();
        let subquery_values =
            ember_planner::subquery_value::SubqueryValues::decode(&req.subquery_values)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A job removed before this launch arrived is not re-created: its
        // tasks are reported killed at once.
        let cancelled = self.0.jobs.admit(&req.job_id);
        if cancelled.is_some() {
            self.0
                .store
                .register_job(&req.job_id, &req.job_token)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
        } else {
            tracing::debug!(job = %req.job_id, "launch for a removed job; reporting its tasks killed");
        }
        let launch = Arc::new(Launch {
            job_id: req.job_id.clone(),
            job_token: req.job_token,
            stage_id: req.stage_id,
            stage_attempt: req.stage_attempt,
            plan: req.plan,
            inputs,
            settings: req.settings,
            subquery_values: Arc::new(subquery_values),
            direct_result_max_bytes: req.direct_result_max_bytes,
        });
        {
            let mut attempts = self.0.attempts.lock();
            for t in &req.tasks {
                attempts.insert(t.attempt, req.job_id.clone());
            }
        }
        for t in req.tasks {
            let inner = Arc::clone(&self.0);
            let launch = Arc::clone(&launch);
            tokio::spawn(run_and_report(
                inner,
                launch,
                t.partition,
                t.attempt,
                cancelled.clone(),
            ));
        }
        Ok(Response::new(LaunchTasksResponse {}))
    }

    async fn cancel_tasks(
        &self,
        request: Request<CancelTasksRequest>,
    ) -> std::result::Result<Response<CancelTasksResponse>, Status> {
        let job = request.into_inner().job_id;
        if self.0.jobs.remove(&job) {
            tracing::info!(job, "cancelling tasks");
        }
        Ok(Response::new(CancelTasksResponse {}))
    }

    async fn remove_job_data(
        &self,
        request: Request<RemoveJobDataRequest>,
    ) -> std::result::Result<Response<RemoveJobDataResponse>, Status> {
        let job = request.into_inner().job_id;
        self.0.remove_job(&job);
        tracing::debug!(job, "job data removed");
        Ok(Response::new(RemoveJobDataResponse {}))
    }
}
