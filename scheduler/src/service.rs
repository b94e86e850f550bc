//! The `SchedulerService` gRPC API and the scheduler's lifecycle.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::ipc::writer::StreamWriter;
use ember_planner::codec::{encode_plan, schema_to_bytes};
use ember_planner::config::ember_options;
use ember_proto::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use ember_proto::{
    CancelJobRequest, CancelJobResponse, CloseSessionRequest, CloseSessionResponse, ClusterInfo,
    ClusterInfoRequest, CreateSessionRequest, CreateSessionResponse, ExecuteRequest,
    ExecuteResponse, HeartbeatRequest, HeartbeatResponse, InlineResult, JobAccepted, JobState,
    JobStatus, RegisterExecutorRequest, RegisterExecutorResponse, ReleaseJobRequest,
    ReleaseJobResponse, TaskStatusAck, TaskStatusUpdate, WatchJobRequest, execute_request,
    execute_response,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::SchedulerConfig;
use crate::core::Core;
use crate::error::SchedulerError;
use crate::job::{Job, JobLimits};
use crate::session::{Planned, Session};

/// A running scheduler.
pub struct Scheduler {
    core: Arc<Core>,
    address: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("address", &self.address)
            .finish()
    }
}

impl Scheduler {
    /// Binds the port and starts serving.
    pub async fn start(config: SchedulerConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.bind).await?;
        let address = listener.local_addr()?;
        let core = Core::new(config.clone());
        let api = Api {
            core: Arc::clone(&core),
            sessions: Arc::new(Mutex::new(HashMap::new())),
        };
        let service = SchedulerServiceServer::new(api)
            .max_decoding_message_size(config.max_message_size)
            .max_encoding_message_size(config.max_message_size);
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = ember_proto::nodelay_incoming(listener);
        let server = tokio::spawn(async move {
            let result = Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "scheduler server stopped");
            }
        });
        let ticker_core = Arc::clone(&core);
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ticker_core.config.heartbeat_interval);
            loop {
                tick.tick().await;
                ticker_core.check_liveness();
            }
        });
        tracing::info!(%address, "scheduler listening");
        Ok(Self {
            core,
            address,
            shutdown: Some(tx),
            server,
            ticker,
        })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// `http://host:port`, what clients and executors connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        self.core.cluster_info()
    }

    pub async fn shutdown(mut self) {
        self.ticker.abort();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.server).await;
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.ticker.abort();
        self.server.abort();
    }
}

struct Api {
    core: Arc<Core>,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

impl Api {
    fn session(&self, id: &str) -> Result<Arc<Session>, SchedulerError> {
        self.sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| SchedulerError::UnknownSession(id.to_string()))
    }

    async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, SchedulerError> {
        let session = self.session(&req.session_id)?;
        let planned = match req.query {
            Some(execute_request::Query::Sql(sql)) => session.plan_sql(&sql).await?,
            Some(execute_request::Query::LogicalPlan(bytes)) => {
                let ctx = session.ctx.task_ctx();
                let plan = datafusion_proto::bytes::logical_plan_from_bytes(&bytes, &ctx)?;
                session.plan_logical(plan).await?
            }
            None => {
                return Err(SchedulerError::InvalidQuery(
                    "empty request: no SQL or plan".into(),
                ));
            }
        };
        match planned {
            Planned::Inline {
                has_result_set,
                schema,
                batches,
            } => inline_response(has_result_set, &schema, &batches),
            Planned::Job {
                dag,
                schema,
                settings,
            } => {
                let id = self.submit_job(&session, &dag, settings)?;
                Ok(ExecuteResponse {
                    result: Some(execute_response::Result::Job(JobAccepted {
                        job_id: id,
                        schema: schema_to_bytes(&schema)?,
                    })),
                })
            }
            Planned::Analyze {
                dag,
                settings,
                verbose,
            } => {
                let id = self.submit_job(&session, &dag, settings)?;
                let last = self.wait_for_end(&id).await?;
                // The rows themselves are not wanted: free them now.
                self.core.release_job(&id);
                if last.state != JobState::Succeeded as i32 {
                    return Err(SchedulerError::InvalidQuery(format!(
                        "EXPLAIN ANALYZE: the query failed: {}",
                        last.error
                    )));
                }
                let text = crate::session::analyze_text(&dag, &last, verbose);
                let (schema, batch) = crate::session::explain_batch(vec![(
                    "distributed_plan_with_metrics".to_string(),
                    text,
                )])?;
                inline_response(true, &schema, &[batch])
            }
        }
    }

    /// The job's final status.
    async fn wait_for_end(&self, job_id: &str) -> Result<JobStatus, SchedulerError> {
        let mut status = self.core.watch(job_id)?;
        loop {
            let current = status.borrow_and_update().clone();
            if current.state != JobState::Running as i32 {
                return Ok(current);
            }
            if status.changed().await.is_err() {
                return Ok(status.borrow().clone());
            }
        }
    }

    /// Encodes the DAG's stage plans and hands the job to the core.
    fn submit_job(
        &self,
        session: &Session,
        dag: &ember_planner::StageDag,
        settings: Arc<HashMap<String, String>>,
    ) -> Result<String, SchedulerError> {
        let plans = dag
            .stages()
            .iter()
            .map(|s| encode_plan(Arc::clone(&s.plan)))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = ember_options(session.ctx.state().config());
        let id = uuid::Uuid::new_v4().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let job = Job::new(
            id.clone(),
            token,
            dag,
            plans,
            settings,
            JobLimits {
                task_max_attempts: opts.task_max_attempts.max(1) as u32,
                stage_max_attempts: opts.stage_max_attempts.max(1) as u32,
            },
        );
        tracing::debug!(job = %id, stages = dag.stages().len(), "job submitted");
        self.core.submit(job)?;
        Ok(id)
    }
}

/// An answer computed on the scheduler, as an Arrow IPC stream.
fn inline_response(
    has_result_set: bool,
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::record_batch::RecordBatch],
) -> Result<ExecuteResponse, SchedulerError> {
    let internal = |e: arrow::error::ArrowError| SchedulerError::Internal(e.to_string());
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, schema).map_err(internal)?;
        for b in batches {
            w.write(b).map_err(internal)?;
        }
        w.finish().map_err(internal)?;
    }
    Ok(ExecuteResponse {
        result: Some(execute_response::Result::Inline(InlineResult {
            has_result_set,
            ipc_stream: buf,
        })),
    })
}

type StatusStream = std::pin::Pin<Box<dyn Stream<Item = Result<JobStatus, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for Api {
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let req = request.into_inner();
        if self.sessions.lock().len() >= self.core.config.max_sessions {
            return Err(SchedulerError::LimitExceeded(format!(
                "{} sessions are open (max_sessions)",
                self.core.config.max_sessions
            ))
            .into());
        }
        let partitions = match self.core.config.default_partitions {
            0 => self.core.total_slots().max(2),
            n => n,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let session = Session::new(id.clone(), partitions, &req.settings)?;
        self.sessions.lock().insert(id.clone(), Arc::new(session));
        tracing::debug!(session = %id, partitions, "session opened");
        Ok(Response::new(CreateSessionResponse { session_id: id }))
    }

    async fn close_session(
        &self,
        request: Request<CloseSessionRequest>,
    ) -> Result<Response<CloseSessionResponse>, Status> {
        self.sessions
            .lock()
            .remove(&request.into_inner().session_id);
        Ok(Response::new(CloseSessionResponse {}))
    }

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        Ok(Response::new(
            Api::execute(self, request.into_inner()).await?,
        ))
    }

    type WatchJobStream = StatusStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let rx = self.core.watch(&request.into_inner().job_id)?;
        let stream = tokio_stream::wrappers::WatchStream::new(rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, Ok))))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let cancelled = self.core.cancel(&request.into_inner().job_id)?;
        Ok(Response::new(CancelJobResponse { cancelled }))
    }

    async fn release_job(
        &self,
        request: Request<ReleaseJobRequest>,
    ) -> Result<Response<ReleaseJobResponse>, Status> {
        self.core.release_job(&request.into_inner().job_id);
        Ok(Response::new(ReleaseJobResponse {}))
    }

    async fn get_cluster_info(
        &self,
        _request: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfo>, Status> {
        Ok(Response::new(self.core.cluster_info()))
    }

    async fn register_executor(
        &self,
        request: Request<RegisterExecutorRequest>,
    ) -> Result<Response<RegisterExecutorResponse>, Status> {
        let info = request
            .into_inner()
            .executor
            .ok_or_else(|| Status::invalid_argument("registration without executor info"))?;
        self.core.register_executor(info)?;
        Ok(Response::new(RegisterExecutorResponse {
            heartbeat_interval_ms: self.core.config.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let known = self.core.heartbeat(&request.into_inner().executor_id);
        Ok(Response::new(HeartbeatResponse { reregister: !known }))
    }

    async fn update_task_status(
        &self,
        request: Request<TaskStatusUpdate>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        self.core.task_update(request.into_inner());
        Ok(Response::new(TaskStatusAck {}))
    }
}
