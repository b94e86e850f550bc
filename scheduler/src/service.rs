//! The `SchedulerService` gRPC API and the scheduler's lifecycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{LogicalPlan, Subquery};
use ember_planner::FinishHere;
use ember_planner::codec::schema_to_bytes;

use crate::commit::Output;
use crate::overview::describe;
use ember_proto::scheduler_service_server::{SchedulerService, SchedulerServiceServer};
use ember_proto::{
    CancelJobRequest, CancelJobResponse, CloseSessionRequest, CloseSessionResponse, ClusterInfo,
    ClusterInfoRequest, CreateSessionRequest, CreateSessionResponse, ExecuteRequest,
    ExecuteResponse, Heartbeat, HeartbeatResponse, InlineResult, JobAccepted, JobState, JobStatus,
    PlanSqlRequest, PlanSqlResponse, RegisterExecutorRequest, RegisterExecutorResponse,
    RegisterTableRequest, RegisterTableResponse, ReleaseJobRequest, ReleaseJobResponse,
    ResultLostRequest, ResultLostResponse, TaskStatusAck, TaskStatusUpdate, WatchJobRequest,
    execute_request, execute_response,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::SchedulerConfig;
use crate::core::Core;
use crate::error::SchedulerError;
use crate::job::{Job, JobLimits, PlanningTime};
use crate::session::{Planned, Session};
use crate::subqueries::{FetchFailure, LostResult};

/// A running scheduler.
pub struct Scheduler {
    core: Arc<Core>,
    address: std::net::SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    ticker: JoinHandle<()>,
    /// The HTTP server (REST API, metrics), if configured.
    http: Option<(std::net::SocketAddr, JoinHandle<()>)>,
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
        let sessions: Arc<Mutex<HashMap<String, Arc<Session>>>> = Arc::default();
        let api = Api {
            core: Arc::clone(&core),
            sessions: Arc::clone(&sessions),
        };
        let service = SchedulerServiceServer::new(api)
            .max_decoding_message_size(config.max_message_size)
            .max_encoding_message_size(config.max_message_size);
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = ember_proto::nodelay_incoming(listener);
        let errors = {
            let core = Arc::clone(&core);
            ember_proto::CountErrorsLayer(Arc::new(move |method: &str| {
                core.metrics.grpc_error("server", method)
            }))
        };
        let server = tokio::spawn(async move {
            let result = Server::builder()
                .tcp_nodelay(true)
                .layer(errors)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "scheduler server stopped");
            }
        });
        let http = match config.http {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let http_address = listener.local_addr()?;
                let router = crate::http::router(crate::http::Http {
                    core: Arc::clone(&core),
                    sessions: Arc::clone(&sessions),
                });
                let task = tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!(error = %e, "HTTP server stopped");
                    }
                });
                tracing::info!(address = %http_address, "scheduler HTTP (REST API, /metrics)");
                Some((http_address, task))
            }
            None => None,
        };
        let ticker_core = Arc::clone(&core);
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ticker_core.config.heartbeat_interval);
            loop {
                tick.tick().await;
                ticker_core.check_liveness();
                expire_sessions(&ticker_core, &sessions);
            }
        });
        tracing::info!(%address, "scheduler listening");
        Ok(Self {
            core,
            address,
            shutdown: Some(tx),
            server,
            ticker,
            http,
        })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// `http://host:port`, what clients and executors connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://host:port` of the REST API, `/metrics` and health checks.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(|(a, _)| format!("http://{a}"))
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        self.core.cluster_info()
    }

    pub async fn shutdown(mut self) {
        self.ticker.abort();
        if let Some((_, http)) = &self.http {
            http.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.server).await;
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some((_, http)) = &self.http {
            http.abort();
        }
        self.server.abort();
    }
}

/// Closes sessions idle for longer than `session_idle_timeout` that have no
/// job left on the cluster.
fn expire_sessions(core: &Arc<Core>, sessions: &Mutex<HashMap<String, Arc<Session>>>) {
    let ttl = core.config.session_idle_timeout;
    let busy = core.sessions_with_jobs();
    let expired: Vec<String> = sessions
        .lock()
        .iter()
        .filter(|(id, s)| s.idle_for() > ttl && !busy.contains(*id))
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        tracing::info!(session = %id, "closing idle session");
        sessions.lock().remove(&id);
    }
}

#[derive(Clone)]
struct Api {
    core: Arc<Core>,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

/// A client's `WatchJob` stream. Dropped before the client was sent an end
/// state, while its job still runs (the client went away), it cancels the
/// job: nobody is left to fetch it. (A client that saw the job succeed and
/// stopped watching must not cancel it if it is reopened to recompute a
/// lost result partition.)
struct WatchGuard {
    core: Arc<Core>,
    job_id: String,
    saw_end: bool,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if !self.saw_end && self.core.is_running(&self.job_id) {
            tracing::info!(job = %self.job_id, "client stopped watching a running job; cancelling it");
            let _ = self.core.cancel(&self.job_id);
        }
    }
}

impl Api {
    fn session(&self, id: &str) -> Result<Arc<Session>, SchedulerError> {
        let session = self
            .sessions
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| SchedulerError::UnknownSession(id.to_string()))?;
        session.touch();
        Ok(session)
    }

    async fn execute(&self, req: ExecuteRequest) -> Result<ExecuteResponse, SchedulerError> {
        let session = self.session(&req.session_id)?;
        let received = Instant::now();
        let (plan, description) = match req.query {
            Some(execute_request::Query::Sql(sql)) => {
                (session.logical_plan(&sql).await?, describe(&sql))
            }
            Some(execute_request::Query::LogicalPlan(bytes)) => {
                let plan = session.decode_plan(&bytes).await?;
                let description = format!("DataFrame: {}", plan.display());
                (plan, describe(&description))
            }
            None => {
                return Err(SchedulerError::InvalidQuery(
                    "empty request: no SQL or plan".into(),
                ));
            }
        };
        // What DataFusion answers a query with scalar subqueries says
        // nullable where their values, substituted, would not. Its
        // optimized plan says so (constant folding can make a subquery's
        // column NOT NULL): a second optimization, for such statements only,
        // and only where a subquery's value can reach an output column.
        let declared = crate::subqueries::next_scalar_subquery(&plan)
            .filter(|_| crate::subqueries::may_reach_outputs(&plan))
            .and_then(|_| session.datafusion_schema(&plan));
        let (plan, beside) = self.start_subqueries_beside(&session, plan, &description)?;
        let (plan, subqueries) = self
            .run_scalar_subqueries(&session, plan, &description)
            .await?;
        let planned = session.plan_logical(plan).await?;
        // The statement's job goes in after its subqueries' (theirs take
        // the free slots first); waiting for them is their time.
        let waiting = Instant::now();
        let beside = beside.submitted().await?;
        let waited = if beside.is_empty() {
            Duration::ZERO
        } else {
            waiting.elapsed()
        };
        let timing = Timing {
            since: received,
            subqueries: subqueries + waited,
        };
        match planned {
            Planned::Inline {
                has_result_set,
                schema,
                batches,
            } => inline_response(has_result_set, &schema, &batches),
            Planned::Job {
                mut dag,
                schema,
                settings,
            } => {
                let schema = match declared {
                    Some(declared) => crate::subqueries::nullable_as(&schema, &declared),
                    None => schema,
                };
                // The client reads the result: it does the last merge, if
                // it can (older clients cannot).
                let merge = if req.merges_results {
                    session.merge_on_client(&mut dag).map(|m| m.to_proto())
                } else {
                    None
                };
                let id = self.submit_job(&session, &dag, settings, description, timing)?;
                self.supply_values(id.clone(), beside);
                Ok(ExecuteResponse {
                    result: Some(execute_response::Result::Job(JobAccepted {
                        job_id: id,
                        schema: schema_to_bytes(&schema)?,
                        merge,
                    })),
                })
            }
            Planned::Analyze {
                mut dag,
                settings,
                verbose,
            } => {
                // As the query would run for a client (whose merge of the
                // sorted result nobody needs here).
                session.merge_on_client(&mut dag);
                let id = self.submit_job(&session, &dag, settings, description, timing)?;
                self.supply_values(id.clone(), beside);
                let last = wait_for_end(&self.core, &id).await?;
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

    /// `plan` with each uncorrelated scalar subquery that filters it (see
    /// `subqueries::defer_filter_subqueries`) replaced by a placeholder for
    /// its value, and those subqueries' jobs, planned and submitted on a
    /// thread of their own while the statement itself is planned: they run
    /// beside the statement's job, whose stages reading a value wait for it
    /// ([`Self::supply_values`]). None for statements answered here, where
    /// the session turned this off (`ember.concurrent_subqueries`), and for
    /// subqueries answered here.
    fn start_subqueries_beside(
        &self,
        session: &Arc<Session>,
        plan: LogicalPlan,
        description: &str,
    ) -> Result<(LogicalPlan, BesideStart), SchedulerError> {
        if crate::session::answered_here(&plan) || !session.options().concurrent_subqueries {
            return Ok((plan, BesideStart(None)));
        }
        let (plan, subqueries) = crate::subqueries::defer_filter_subqueries(plan, |s| {
            !crate::session::answered_here(&s.subquery)
        })?;
        if subqueries.is_empty() {
            return Ok((plan, BesideStart(None)));
        }
        let api = self.clone();
        let session = Arc::clone(session);
        let description = description.to_string();
        let submitting = tokio::spawn(off_the_workers(async move {
            api.submit_beside(&session, subqueries, &description).await
        }));
        Ok((plan, BesideStart(Some(submitting))))
    }

    /// Plans and submits the jobs of the scalar `subqueries` deferred from
    /// statement `description`, in order: the `n`th is placeholder `n`.
    async fn submit_beside(
        &self,
        session: &Session,
        subqueries: Vec<Subquery>,
        description: &str,
    ) -> Result<Vec<BesideJob>, SchedulerError> {
        let mut jobs = vec![];
        for (id, subquery) in subqueries.into_iter().enumerate() {
            let since = Instant::now();
            let query = subquery.subquery.as_ref().clone();
            let data_type = query.schema().field(0).data_type().clone();
            let (query, nested) =
                Box::pin(self.run_scalar_subqueries(session, query, description)).await?;
            let Planned::Job { dag, settings, .. } = session.plan_logical(query).await? else {
                return Err(SchedulerError::Internal(
                    "a scalar subquery run beside its query was not planned as a job".into(),
                ));
            };
            let timing = Timing {
                since,
                subqueries: nested,
            };
            jobs.push(BesideJob {
                id: id as u32,
                data_type,
                job: self.submit_subquery(session, dag, settings, description, timing)?,
            });
        }
        Ok(jobs)
    }

    /// Hands the values of the scalar subqueries running `beside` job
    /// `job_id` to it as they arrive; fails it if one fails. Their jobs are
    /// released once their values are in, or when `job_id` ends first.
    fn supply_values(&self, job_id: String, beside: Vec<BesideJob>) {
        if beside.is_empty() {
            return;
        }
        let core = Arc::clone(&self.core);
        tokio::spawn(async move {
            let values = futures::future::try_join_all(beside.iter().map(|b| async {
                let value = subquery_result(&core, &b.job, &b.data_type).await?;
                let bytes = ember_planner::subquery_value::encode_value(&value)?;
                core.subquery_value(&job_id, b.id, bytes, &value.to_string());
                Ok::<_, SchedulerError>(())
            }));
            tokio::select! {
                result = values => {
                    if let Err(e) = result {
                        core.fail_job(&job_id, e.to_string());
                    }
                }
                _ = wait_for_end(&core, &job_id) => {}
            }
        });
    }

    /// `plan` with each uncorrelated scalar subquery run as a job of its own
    /// and replaced by its value (see `subqueries`), and the time that took
    /// (zero when there were none). Only for what runs now: `EXPLAIN` runs
    /// nothing, and a view (or any catalog statement) keeps its subqueries,
    /// to be evaluated whenever it is read.
    async fn run_scalar_subqueries(
        &self,
        session: &Session,
        mut plan: LogicalPlan,
        description: &str,
    ) -> Result<(LogicalPlan, Duration), SchedulerError> {
        if matches!(
            plan,
            LogicalPlan::Explain(_)
                | LogicalPlan::Ddl(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::DescribeTable(_)
        ) {
            return Ok((plan, Duration::ZERO));
        }
        let started = Instant::now();
        let mut ran = false;
        while let Some(subquery) = crate::subqueries::next_scalar_subquery(&plan) {
            ran = true;
            let query = subquery.subquery.as_ref().clone();
            let data_type = query.schema().field(0).data_type().clone();
            let since = Instant::now();
            let value = match session.plan_logical(query).await? {
                Planned::Inline { batches, .. } => {
                    crate::subqueries::scalar_value(&batches, &data_type)?
                }
                Planned::Job { dag, settings, .. } => {
                    let timing = Timing {
                        since,
                        subqueries: Duration::ZERO,
                    };
                    // Freed however this ends (a client gone meanwhile included).
                    let job = self.submit_subquery(session, dag, settings, description, timing)?;
                    subquery_result(&self.core, &job, &data_type).await?
                }
                Planned::Analyze { .. } => {
                    return Err(SchedulerError::Internal(
                        "a scalar subquery planned as EXPLAIN ANALYZE".into(),
                    ));
                }
            };
            plan = crate::subqueries::substitute(plan, &subquery, &value)?;
        }
        let spent = if ran {
            started.elapsed()
        } else {
            Duration::ZERO
        };
        Ok((plan, spent))
    }

    /// Submits the job of a scalar subquery of statement `description`,
    /// released when the returned job is dropped. Its last aggregation step
    /// may be left to the scheduler (see `FinishHere`).
    fn submit_subquery(
        &self,
        session: &Session,
        mut dag: ember_planner::StageDag,
        settings: Arc<HashMap<String, String>>,
        description: &str,
        timing: Timing,
    ) -> Result<SubqueryJob, SchedulerError> {
        let finish = session
            .finish_here(&mut dag)
            .map(|step| (step, session.task_ctx()));
        let what = format!("scalar subquery of: {description}");
        let id = self.submit_job(session, &dag, settings, what, timing)?;
        Ok(SubqueryJob {
            job: ReleaseOnDrop(Arc::clone(&self.core), id),
            finish,
        })
    }

    /// Encodes the DAG's stage plans and hands the job to the core (its
    /// stages reading scalar subquery values run once those arrive).
    fn submit_job(
        &self,
        session: &Session,
        dag: &ember_planner::StageDag,
        settings: Arc<HashMap<String, String>>,
        description: String,
        timing: Timing,
    ) -> Result<String, SchedulerError> {
        let task_ctx = session.ctx.task_ctx();
        let plans = dag
            .stages()
            .iter()
            .map(|s| ember_planner::fidelity::encode_checked(s.id, &s.plan, &task_ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let adaptive = dag
            .stages()
            .iter()
            .map(|s| {
                s.adaptive
                    .as_ref()
                    .map(|a| ember_planner::fidelity::encode_checked(s.id, &a.plan, &task_ctx))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let awaits = dag
            .stages()
            .iter()
            .map(|s| {
                let mut awaits = ember_planner::subquery_value::awaited_by(&s.plan)?;
                if let Some(a) = &s.adaptive {
                    awaits.extend(ember_planner::subquery_value::awaited_by(&a.plan)?);
                }
                Ok::<_, datafusion::error::DataFusionError>(awaits)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let opts = session.options();
        let id = uuid::Uuid::new_v4().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut job = Job::new(
            id.clone(),
            token,
            session.id.clone(),
            dag,
            plans,
            settings,
            JobLimits {
                task_max_attempts: opts.task_max_attempts.max(1) as u32,
                stage_max_attempts: opts.stage_max_attempts.max(1) as u32,
                direct_result_max_bytes: opts.direct_result_max_bytes,
            },
        )
        .with_description(description, dag)
        .with_awaited(awaits)
        .with_adaptive(dag, adaptive)
        .with_planning(timing.finish());
        if let Some(target) = dag.write_target() {
            let store = session
                .ctx
                .runtime_env()
                .object_store(target.destination.object_store())?;
            job = job.with_output(Output {
                target: target.clone(),
                store,
            });
        }
        tracing::debug!(job = %id, stages = dag.stages().len(), "job submitted");
        self.core.submit(job)?;
        Ok(id)
    }
}

/// Runs a statement's planning, CPU work that hardly ever yields, on a
/// thread of the blocking pool instead of on one of the runtime's workers.
/// Tokio keeps the last task a worker spawns or wakes in that worker's LIFO
/// slot, which no other worker steals: the launches of a job submitted
/// while the statement's planning goes on (the job of a scalar subquery run
/// beside its query) waited there until the planning ended, an executor
/// idle meanwhile (5-8 ms on TPC-H q22). Spawned from a thread outside the
/// workers they go to the runtime's shared queue and start at once.
/// Dropping the returned future (the client went away) drops `planning` at
/// its next `await`, as on a worker. The thread is held for the whole
/// statement, also while it waits (a scalar subquery run before its query,
/// `EXPLAIN ANALYZE` waiting for its job): one blocking-pool thread per
/// statement in flight, parked while it waits.
async fn off_the_workers<T: Send + 'static>(
    planning: impl Future<Output = Result<T, SchedulerError>> + Send + 'static,
) -> Result<T, SchedulerError> {
    let runtime = tokio::runtime::Handle::current();
    let (_cancel, cancelled) = oneshot::channel::<()>();
    let planned = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            tokio::select! {
                result = planning => result,
                _ = cancelled => Err(SchedulerError::Internal("planning cancelled".into())),
            }
        })
    });
    planned
        .await
        .map_err(|e| SchedulerError::Internal(format!("planning a statement failed: {e}")))?
}

/// The final status of job `job_id`.
async fn wait_for_end(core: &Core, job_id: &str) -> Result<JobStatus, SchedulerError> {
    let mut status = core.watch(job_id)?;
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

/// The value of the scalar subquery job `job_id` runs, of `data_type`, once
/// it has run: its error if it failed. A result partition that cannot be
/// fetched (its executor died) is reported lost, as a client does, and
/// fetched again once recomputed.
async fn subquery_result(
    core: &Arc<Core>,
    job: &SubqueryJob,
    data_type: &DataType,
) -> Result<ScalarValue, SchedulerError> {
    let job_id = job.id();
    let mut lost = 0;
    loop {
        let last = wait_for_end(core, job_id).await?;
        if last.state != JobState::Succeeded as i32 {
            return Err(SchedulerError::InvalidQuery(last.error));
        }
        match crate::subqueries::fetch_rows(&last, core.config.max_message_size).await {
            Ok(rows) => {
                let rows = match &job.finish {
                    Some((step, ctx)) => step.run(rows, Arc::clone(ctx)).await?,
                    None => rows,
                };
                return crate::subqueries::scalar_value(&rows, data_type);
            }
            // The job bounds its own recomputations (stage_max_attempts);
            // this bounds reports it ignores (an attempt no longer current).
            Err(FetchFailure::Lost(e)) if lost < MAX_LOST_RESULTS => {
                lost += 1;
                tracing::warn!(job = job_id, partition = e.partition, error = %e.why, "scalar subquery result lost; recomputing it");
                core.result_lost(job_id, e.partition, e.attempt, &e.why)?;
            }
            Err(FetchFailure::Lost(LostResult { why, .. }) | FetchFailure::Corrupt(why)) => {
                return Err(SchedulerError::Internal(why));
            }
        }
    }
}

/// Result partitions of a scalar subquery's job reported lost before its
/// value is given up on.
const MAX_LOST_RESULTS: u32 = 4;

/// A scalar subquery running as a job beside its statement's: the number
/// its placeholder reads, its type, and its job (released when dropped).
struct BesideJob {
    id: u32,
    data_type: DataType,
    job: SubqueryJob,
}

/// The planning and submission of the jobs of a statement's subqueries run
/// beside it (see `Api::start_subqueries_beside`), if it has any. Dropped
/// before they are in (the statement failed, its client went away), it
/// stops that planning, and the jobs already submitted are released.
/// (tokio-util's `AbortOnDropHandle` is this guard, behind its `rt` feature,
/// which nothing in the tree enables: turning it on rebuilds tokio-util and
/// the network and storage crates above it for ten lines.)
struct BesideStart(Option<JoinHandle<Result<Vec<BesideJob>, SchedulerError>>>);

impl BesideStart {
    /// The subqueries' jobs, once all are submitted.
    async fn submitted(mut self) -> Result<Vec<BesideJob>, SchedulerError> {
        match self.0.take() {
            None => Ok(vec![]),
            Some(submitting) => submitting.await.map_err(|e| {
                SchedulerError::Internal(format!("planning a scalar subquery failed: {e}"))
            })?,
        }
    }
}

impl Drop for BesideStart {
    fn drop(&mut self) {
        if let Some(submitting) = &self.0 {
            submitting.abort();
        }
    }
}

/// A scalar subquery's job (released when dropped) and the last step of
/// its aggregate when the scheduler is to run it on the job's result.
struct SubqueryJob {
    job: ReleaseOnDrop,
    finish: Option<(FinishHere, Arc<TaskContext>)>,
}

impl SubqueryJob {
    fn id(&self) -> &str {
        &self.job.1
    }
}

/// When a statement's planning began, and how much of the time since went
/// to its scalar subqueries' jobs.
#[derive(Debug, Clone, Copy)]
struct Timing {
    since: Instant,
    subqueries: Duration,
}

impl Timing {
    /// The split, as the job is handed to the core.
    fn finish(self) -> PlanningTime {
        PlanningTime {
            planning: self.since.elapsed().saturating_sub(self.subqueries),
            subqueries: self.subqueries,
        }
    }
}

/// An answer computed on the scheduler, as an Arrow IPC stream.
fn inline_response(
    has_result_set: bool,
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::record_batch::RecordBatch],
) -> Result<ExecuteResponse, SchedulerError> {
    let schema = Arc::new(schema.clone());
    let buf = ember_planner::ipc_types::write_stream(&schema, batches)
        .map_err(|e| SchedulerError::Internal(e.to_string()))?;
    Ok(ExecuteResponse {
        result: Some(execute_response::Result::Inline(InlineResult {
            has_result_set,
            ipc_stream: buf,
        })),
    })
}

type StatusStream = std::pin::Pin<Box<dyn Stream<Item = Result<JobStatus, Status>> + Send>>;
type HeartbeatStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for Api {
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let req = request.into_inner();
        if self.sessions.lock().len() >= self.core.config.max_sessions {
            return Err(SchedulerError::LimitExceeded(format!(
                "{} sessions are open (--max-sessions); close unused ones or wait for idle ones to expire",
                self.core.config.max_sessions
            ))
            .into());
        }
        let partitions = match self.core.config.default_partitions {
            0 => self.core.total_slots().max(2),
            n => n,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let session = Session::new(
            id.clone(),
            partitions,
            &req.settings,
            &self.core.config.functions,
        )?;
        let sessions = Arc::downgrade(&self.sessions);
        session.register_system_tables(
            Arc::clone(&self.core),
            Arc::new(move || {
                sessions
                    .upgrade()
                    .map(|s| {
                        s.lock()
                            .values()
                            .map(|s| crate::overview::SessionRow {
                                session_id: s.id.clone(),
                                idle_ms: s.idle_for().as_millis() as u64,
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }),
        )?;
        self.sessions.lock().insert(id.clone(), Arc::new(session));
        tracing::debug!(session = %id, partitions, "session opened");
        Ok(Response::new(CreateSessionResponse { session_id: id }))
    }

    async fn register_table(
        &self,
        request: Request<RegisterTableRequest>,
    ) -> Result<Response<RegisterTableResponse>, Status> {
        let req = request.into_inner();
        let session = self.session(&req.session_id)?;
        session.register_ipc_table(&req.name, &req.ipc_stream)?;
        Ok(Response::new(RegisterTableResponse {}))
    }

    async fn close_session(
        &self,
        request: Request<CloseSessionRequest>,
    ) -> Result<Response<CloseSessionResponse>, Status> {
        let id = request.into_inner().session_id;
        if self.sessions.lock().remove(&id).is_some() {
            tracing::debug!(session = %id, "session closed");
            self.core.close_session(&id);
        }
        Ok(Response::new(CloseSessionResponse {}))
    }

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let api = self.clone();
        let req = request.into_inner();
        Ok(Response::new(
            off_the_workers(async move { api.execute(req).await }).await?,
        ))
    }

    async fn plan_sql(
        &self,
        request: Request<PlanSqlRequest>,
    ) -> Result<Response<PlanSqlResponse>, Status> {
        let req = request.into_inner();
        let session = self.session(&req.session_id)?;
        let logical_plan = session.plan_sql_for_client(&req.sql).await?;
        Ok(Response::new(PlanSqlResponse { logical_plan }))
    }

    type WatchJobStream = StatusStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job_id = request.into_inner().job_id;
        let rx = self.core.watch(&job_id)?;
        let mut guard = WatchGuard {
            core: Arc::clone(&self.core),
            job_id,
            saw_end: false,
        };
        let stream = tokio_stream::wrappers::WatchStream::new(rx);
        Ok(Response::new(Box::pin(futures::StreamExt::map(
            stream,
            move |status| {
                // The whole guard moves into the closure (not just the
                // field): it lives, and is dropped, with the stream.
                let guard = &mut guard;
                guard.saw_end |= status.state != JobState::Running as i32;
                Ok(status)
            },
        ))))
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

    async fn result_lost(
        &self,
        request: Request<ResultLostRequest>,
    ) -> Result<Response<ResultLostResponse>, Status> {
        let r = request.into_inner();
        tracing::warn!(job = %r.job_id, partition = r.partition, attempt = r.attempt, error = %r.message, "client could not fetch a result partition");
        self.core
            .result_lost(&r.job_id, r.partition, r.attempt, &r.message)?;
        Ok(Response::new(ResultLostResponse {}))
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
        let registration = self.core.register_executor(info)?;
        Ok(Response::new(RegisterExecutorResponse {
            heartbeat_interval_ms: self.core.config.heartbeat_interval.as_millis() as u64,
            registration,
        }))
    }

    type ControlStream = HeartbeatStream;

    async fn control(
        &self,
        request: Request<Streaming<Heartbeat>>,
    ) -> Result<Response<Self::ControlStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let core = Arc::clone(&self.core);
        tokio::spawn(async move {
            // The first heartbeat names the registration this stream belongs to.
            let mut me: Option<(String, u64)> = None;
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(hb)) => {
                        if me.is_none() {
                            me = Some((hb.executor_id.clone(), hb.registration));
                        }
                        let response = core.heartbeat(&hb);
                        let unknown = response.reregister;
                        if tx.send(Ok(response)).await.is_err() {
                            break "the executor stopped reading its control stream".to_string();
                        }
                        if unknown {
                            break "control stream of an unknown registration".to_string();
                        }
                    }
                    Ok(None) => break "control stream closed by the executor".to_string(),
                    Err(e) => break format!("control stream broken: {}", e.message()),
                }
            };
            if let Some((executor, registration)) = me {
                core.control_stream_ended(&executor, registration, &reason);
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn update_task_status(
        &self,
        request: Request<TaskStatusUpdate>,
    ) -> Result<Response<TaskStatusAck>, Status> {
        self.core.task_update(request.into_inner());
        Ok(Response::new(TaskStatusAck {}))
    }
}

/// Releases a job (freeing its data, cancelling it if still running) when
/// dropped.
struct ReleaseOnDrop(Arc<Core>, String);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release_job(&self.1);
    }
}
