//! [`EmberContext`]: sessions, statements, job progress and result fetching.

use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use ember_executor::{Executor, ExecutorConfig};
use ember_proto::scheduler_service_client::SchedulerServiceClient;
use ember_proto::{
    CloseSessionRequest, ClusterInfoRequest, CreateSessionRequest, JobStatus, PlanSqlRequest,
    RegisterTableRequest, execute_request,
};
use ember_scheduler::{Scheduler, SchedulerConfig};
use tonic::transport::{Channel, Endpoint};

use datafusion::dataframe::DataFrame;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionContext;
use datafusion::prelude::{
    CsvReadOptions, JsonReadOptions as NdJsonReadOptions, ParquetReadOptions,
};
use ember_planner::Functions;

use crate::dataframe::{ClusterPlanner, ClusterTable, ClusterTableCodec};
use crate::error::{EmberError, Result};
use crate::fetch::{Fetcher, ResultStream};
use crate::read_options::FilesDdl;

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The rows, in order.
    pub batches: Vec<RecordBatch>,
    /// False for statements without a result set (DDL, SET).
    pub has_result_set: bool,
    /// The job's final status, for statements the cluster ran.
    pub job: Option<JobStatus>,
}

impl QueryResult {
    /// Rows in all batches.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The result as an aligned text table.
    pub fn pretty(&self) -> Result<String> {
        Ok(arrow::util::pretty::pretty_format_batches(&self.batches)?.to_string())
    }
}

/// What [`EmberContext::submit_sql`] returns.
#[derive(Debug)]
pub enum Submitted {
    /// Answered by the scheduler (DDL, SET, SHOW, EXPLAIN, ...).
    Done(QueryResult),
    /// A distributed job is running.
    Job(RunningJob),
}

/// A job submitted to the cluster.
#[derive(Debug, Clone)]
pub struct RunningJob {
    /// The job's id on the scheduler.
    pub job_id: String,
    /// The schema its result will have.
    pub schema: SchemaRef,
    /// Set when the client merges the sorted result partitions.
    pub(crate) merge: Option<ember_planner::ResultMerge>,
}

/// Shape of an embedded cluster.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Executors to start (at least 1).
    pub executors: usize,
    /// Slots per executor (default: cores / executors, at least 1).
    pub slots: Option<usize>,
    /// Memory per executor, operators and shuffle outputs together.
    pub memory_bytes: u64,
    /// Shuffle outputs stay in memory while an executor's memory in use stays
    /// under this (default: three quarters of `memory_bytes`).
    pub shuffle_memory_bytes: u64,
    /// User-defined functions the embedded scheduler and executors know
    /// (and the context registers).
    pub functions: Functions,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        Self {
            executors: 2,
            slots: None,
            memory_bytes: 2 << 30,
            shuffle_memory_bytes: 1536 << 20,
            functions: Functions::default(),
        }
    }
}

impl StandaloneOptions {
    ember_planner::with_function_methods!(
        "the embedded cluster (scheduler, executors and this context)"
    );
}

/// A scheduler and executors running inside this process.
struct Embedded {
    scheduler: Option<Scheduler>,
    executors: Vec<Executor>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Dropping the handles aborts their servers.
        self.executors.clear();
        self.scheduler.take();
    }
}

/// A session on an Ember cluster. Dropping it closes the session on the
/// scheduler (cancelling whatever it still runs); [`close`](Self::close) does
/// the same and waits for the scheduler's answer.
pub struct EmberContext {
    url: String,
    scheduler: SchedulerServiceClient<Channel>,
    session_id: String,
    /// Follows jobs and fetches their results.
    fetcher: Fetcher,
    /// Client-side DataFusion context that builds DataFrames over the
    /// session's tables; its planner runs every plan on the cluster.
    local: SessionContext,
    embedded: Option<Arc<Embedded>>,
    /// The embedded scheduler's web UI, REST API and metrics.
    web_url: Option<String>,
}

impl std::fmt::Debug for EmberContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmberContext")
            .field("url", &self.url)
            .field("session", &self.session_id)
            .finish()
    }
}

impl EmberContext {
    /// Starts a scheduler and `executors` executors in this process, on
    /// loopback ephemeral ports, and opens a session on them.
    pub async fn standalone(executors: usize) -> Result<Self> {
        Self::standalone_with(StandaloneOptions {
            executors,
            ..Default::default()
        })
        .await
    }

    /// Starts an embedded cluster shaped by `options` (executors, slots,
    /// memory, functions) and opens a session on it.
    ///
    /// ```no_run
    /// # async fn demo() -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let options = StandaloneOptions { executors: 3, ..Default::default() };
    /// let ctx = EmberContext::standalone_with(options).await?;
    /// ctx.sql("SELECT 1").await?.show().await?;
    /// # Ok(()) }
    /// ```
    pub async fn standalone_with(options: StandaloneOptions) -> Result<Self> {
        if options.executors == 0 {
            return Err(EmberError::Cluster(
                "an embedded cluster needs at least one executor".into(),
            ));
        }
        let scheduler = Scheduler::start(SchedulerConfig {
            bind: "127.0.0.1:0"
                .parse()
                .map_err(|e| EmberError::Internal(format!("{e}")))?,
            functions: options.functions.clone(),
            // The web UI and metrics on a free loopback port.
            http: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..SchedulerConfig::default()
        })
        .await
        .map_err(|e| EmberError::Io(format!("cannot start the embedded scheduler: {e}")))?;
        let url = scheduler.url();
        let web_url = scheduler.http_url();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let slots = options
            .slots
            .unwrap_or_else(|| (cores / options.executors).max(1));
        let mut executors = Vec::with_capacity(options.executors);
        for i in 0..options.executors {
            let mut config = ExecutorConfig::new(url.clone());
            config.slots = slots;
            config.memory_bytes = options.memory_bytes;
            config.shuffle_memory_bytes = options.shuffle_memory_bytes;
            config.executor_id = Some(format!("embedded-{i}"));
            config.functions = options.functions.clone();
            let executor = Executor::start(config).await.map_err(|e| {
                EmberError::Cluster(format!("cannot start an embedded executor: {e}"))
            })?;
            executors.push(executor);
        }
        let embedded = Arc::new(Embedded {
            scheduler: Some(scheduler),
            executors,
        });
        let mut ctx = Self::remote(&url).await?;
        ctx.embedded = Some(embedded);
        ctx.web_url = web_url;
        options.functions.register_in(&ctx.local);
        Ok(ctx)
    }

    /// Connects to the scheduler at `url` (e.g. `http://host:50050`) and opens
    /// a session. Fails within seconds if nobody answers.
    pub async fn remote(url: &str) -> Result<Self> {
        let connect_err = |message: String| EmberError::Connect {
            url: url.to_string(),
            message,
        };
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| connect_err(format!("invalid URL: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(transport_message(&e)))?;
        let max = ember_proto::DEFAULT_MAX_MESSAGE_SIZE;
        let mut scheduler = SchedulerServiceClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let session_id = scheduler
            .create_session(CreateSessionRequest::default())
            .await
            .map_err(|s| connect_err(s.message().to_string()))?
            .into_inner()
            .session_id;
        let fetcher = Fetcher::new(scheduler.clone(), max);
        let local = local_context(fetcher.clone(), session_id.clone());
        Ok(Self {
            url: url.to_string(),
            fetcher,
            local,
            scheduler,
            session_id,
            embedded: None,
            web_url: None,
        })
    }

    /// Registers scalar function `udf` in this context, so DataFrames and
    /// plans the scheduler sends back can name it. The cluster runs it only
    /// if it was started with it too: [`StandaloneOptions::with_udf`] for an
    /// embedded cluster, `ember_scheduler::SchedulerBuilder` and
    /// `ember_executor::ExecutorBuilder` for a real one; an executor without
    /// it fails the query with an error naming the function and executor.
    pub fn register_udf(&self, udf: ScalarUDF) {
        self.local.register_udf(udf);
    }

    /// Registers aggregate function `udaf` (see [`register_udf`](Self::register_udf)).
    pub fn register_udaf(&self, udaf: AggregateUDF) {
        self.local.register_udaf(udaf);
    }

    /// Registers window function `udwf` (see [`register_udf`](Self::register_udf)).
    pub fn register_udwf(&self, udwf: WindowUDF) {
        self.local.register_udwf(udwf);
    }

    /// `http://...` of the embedded cluster's web UI, REST API and
    /// metrics (`None` for a remote cluster: its scheduler's `--http`).
    pub fn web_url(&self) -> Option<&str> {
        self.web_url.as_deref()
    }

    /// The scheduler this context talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This session's id on the scheduler.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Closes the session on the scheduler: its tables and settings are
    /// forgotten and its running jobs cancelled.
    pub async fn close(self) -> Result<()> {
        let mut scheduler = self.scheduler.clone();
        let session_id = self.session_id.clone();
        // Closed here, not again on drop.
        let mut this = self;
        this.session_id.clear();
        scheduler
            .close_session(CloseSessionRequest { session_id })
            .await?;
        Ok(())
    }

    /// Executors, slots and running jobs of the cluster.
    pub async fn cluster_info(&self) -> Result<ember_proto::ClusterInfo> {
        Ok(self
            .scheduler
            .clone()
            .get_cluster_info(ClusterInfoRequest {})
            .await?
            .into_inner())
    }

    /// Plans one SQL statement into a [`DataFrame`], as DataFusion's
    /// `SessionContext::sql` does: build on it, then collect, show, stream
    /// or write it (on the cluster). The statement is planned by the
    /// scheduler, against the session's catalog. Statements that only touch
    /// the catalog (`CREATE EXTERNAL TABLE`, `SET`, `SHOW`, `EXPLAIN`, ...)
    /// run now; their DataFrame holds their answer.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &ember::EmberContext) -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let big = ctx
    ///     .sql("SELECT o_orderkey, o_totalprice FROM orders")
    ///     .await?
    ///     .filter(col("o_totalprice").gt(lit(100_000.0)))?;
    /// big.show_limit(5).await?;
    /// # Ok(()) }
    /// ```
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let bytes = self
            .scheduler
            .clone()
            .plan_sql(PlanSqlRequest {
                session_id: self.session_id.clone(),
                sql: sql.to_string(),
            })
            .await?
            .into_inner()
            .logical_plan;
        let plan = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
            &bytes,
            &self.local.task_ctx(),
            &ClusterTableCodec::default(),
        )?;
        Ok(DataFrame::new(self.local.state(), plan))
    }

    /// [`sql`](Self::sql) with `$1`, `$2`, ... (or `$name`) placeholders
    /// bound to `params`.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &ember::EmberContext) -> ember::Result<()> {
    /// use ember::datafusion::common::ScalarValue;
    /// let df = ctx
    ///     .sql_with_params(
    ///         "SELECT n_name FROM nation WHERE n_regionkey = $1",
    ///         vec![ScalarValue::Int64(Some(3))],
    ///     )
    ///     .await?;
    /// df.show().await?;
    /// # Ok(()) }
    /// ```
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: impl Into<datafusion::common::ParamValues>,
    ) -> Result<DataFrame> {
        Ok(self.sql(sql).await?.with_param_values(params)?)
    }

    /// Runs one SQL statement to its end and collects its result, with the
    /// job's final status (stages, recovery events).
    pub async fn run_sql(&self, sql: &str) -> Result<QueryResult> {
        self.run_sql_with_progress(sql, |_| {}).await
    }

    /// Like [`run_sql`](Self::run_sql), calling `progress` with every job
    /// snapshot the scheduler streams while the query runs.
    pub async fn run_sql_with_progress(
        &self,
        sql: &str,
        progress: impl FnMut(&JobStatus),
    ) -> Result<QueryResult> {
        self.execute(execute_request::Query::Sql(sql.to_string()), progress)
            .await
    }

    /// Runs a DataFusion logical plan (e.g. built with the DataFrame API
    /// against the same tables) on the cluster. Tables are resolved by name in
    /// this session's catalog on the scheduler.
    pub async fn execute_logical_plan(
        &self,
        plan: &datafusion::logical_expr::LogicalPlan,
    ) -> Result<QueryResult> {
        let bytes = datafusion_proto::bytes::logical_plan_to_bytes(plan)
            .map_err(|e| EmberError::NotSupported(e.to_string()))?;
        self.execute(execute_request::Query::LogicalPlan(bytes.to_vec()), |_| {})
            .await
    }

    async fn execute(
        &self,
        query: execute_request::Query,
        progress: impl FnMut(&JobStatus),
    ) -> Result<QueryResult> {
        match self.submit(query).await? {
            Submitted::Done(result) => Ok(result),
            Submitted::Job(job) => self.complete(job, progress).await,
        }
    }

    /// Submits one SQL statement without waiting for a distributed job:
    /// statements the scheduler answers itself come back done; queries come
    /// back as a [`RunningJob`] to [`complete`](Self::complete) or
    /// [`cancel`](Self::cancel).
    pub async fn submit_sql(&self, sql: &str) -> Result<Submitted> {
        self.submit(execute_request::Query::Sql(sql.to_string()))
            .await
    }

    async fn submit(&self, query: execute_request::Query) -> Result<Submitted> {
        self.fetcher.submit(&self.session_id, query).await
    }

    /// Follows `job` to its end (calling `progress` with every snapshot),
    /// fetches its result from the executors and frees the job's data.
    ///
    /// A result partition that cannot be fetched (its executor died) is
    /// reported to the scheduler, which recomputes it; the fetch then goes
    /// on from that partition. Partitions are taken whole, so nothing is
    /// returned twice or lost.
    pub async fn complete(
        &self,
        job: RunningJob,
        mut progress: impl FnMut(&JobStatus),
    ) -> Result<QueryResult> {
        let result = self.fetcher.collect(&job.job_id, &mut progress).await;
        // Free the job's data on the executors whatever happened; the
        // partitions are merged meanwhile.
        let release = self.fetcher.release(&job.job_id);
        let (status, partitions) = match result {
            Ok(fetched) => fetched,
            Err(e) => {
                release.await;
                return Err(e);
            }
        };
        let batches = async {
            match &job.merge {
                Some(merge) => crate::fetch::merge_partitions(merge, &job.schema, partitions).await,
                None => partitions
                    .into_iter()
                    .flatten()
                    .map(|b| crate::fetch::conform(b, &job.schema))
                    .collect::<Result<_>>(),
            }
        };
        let ((), batches) = tokio::join!(release, batches);
        let batches = batches?;
        Ok(QueryResult {
            schema: job.schema,
            batches,
            has_result_set: true,
            job: Some(status),
        })
    }

    /// Runs one SQL statement and streams its result: batches arrive as
    /// the executors serve them and the client holds only a few at a time.
    /// Dropping the stream before its end cancels the query.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &ember::EmberContext) -> ember::Result<()> {
    /// use futures::StreamExt;
    /// let mut stream = ctx.sql_stream("SELECT * FROM lineitem").await?;
    /// while let Some(batch) = stream.next().await {
    ///     println!("{} rows", batch?.num_rows());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sql_stream(&self, sql: &str) -> Result<ResultStream> {
        Ok(match self.submit_sql(sql).await? {
            Submitted::Done(result) => ResultStream::ready(result.schema, result.batches),
            Submitted::Job(job) => self.stream(job),
        })
    }

    /// Streams the result of a submitted job (see [`sql_stream`](Self::sql_stream)).
    pub fn stream(&self, job: RunningJob) -> ResultStream {
        ResultStream::job(self.fetcher.clone(), job)
    }

    /// Follows `job` until it succeeds (calling `progress` with every
    /// snapshot), without fetching its result: [`stream`](Self::stream) it
    /// next, or [`release`](Self::release) it.
    pub async fn wait_for(
        &self,
        job: &RunningJob,
        mut progress: impl FnMut(&JobStatus),
    ) -> Result<JobStatus> {
        self.fetcher.wait(&job.job_id, &mut progress).await
    }

    /// A DataFrame over table `name` of this session (created by DDL or
    /// `register_*`). It is DataFusion's own `DataFrame`; everything it
    /// computes runs on the cluster.
    ///
    /// ```no_run
    /// # async fn demo(ctx: &ember::EmberContext) -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let orders = ctx.table("orders").await?;
    /// let big = orders.filter(col("o_totalprice").gt(lit(100_000.0)))?;
    /// big.show_limit(5).await?;
    /// # Ok(()) }
    /// ```
    pub async fn table(&self, name: &str) -> Result<DataFrame> {
        if !self.local.table_exist(name)? {
            // Learn the table's schema from the cluster session.
            let schema = match self
                .submit_sql(&format!("SELECT * FROM {name} LIMIT 0"))
                .await?
            {
                Submitted::Done(r) => r.schema,
                Submitted::Job(job) => {
                    self.release(&job.job_id).await;
                    job.schema
                }
            };
            self.local
                .register_table(name, Arc::new(ClusterTable::new(name, schema)))?;
        }
        Ok(self.local.table(name).await?)
    }

    /// Registers Parquet files (a file or a directory, local to the
    /// executors or on an object store) as table `name` of this session,
    /// with DataFusion's read options (those `CREATE EXTERNAL TABLE` can
    /// express; the others are refused with a clear error).
    pub async fn register_parquet(
        &self,
        name: &str,
        path: &str,
        options: ParquetReadOptions<'_>,
    ) -> Result<()> {
        self.register_files(name, path, FilesDdl::parquet(&options)?)
            .await
    }

    /// Registers CSV files as table `name` (see
    /// [`register_parquet`](Self::register_parquet)).
    pub async fn register_csv(
        &self,
        name: &str,
        path: &str,
        options: CsvReadOptions<'_>,
    ) -> Result<()> {
        self.register_files(name, path, FilesDdl::csv(&options)?)
            .await
    }

    /// Registers newline-delimited JSON files as table `name` (see
    /// [`register_parquet`](Self::register_parquet)).
    pub async fn register_json(
        &self,
        name: &str,
        path: &str,
        options: NdJsonReadOptions<'_>,
    ) -> Result<()> {
        self.register_files(name, path, FilesDdl::json(&options)?)
            .await
    }

    /// Registers a small in-memory batch as table `name` of this session. It
    /// is shipped to the scheduler and travels to the executors inside the
    /// plans that read it, so it is limited to
    /// [`MAX_REGISTERED_TABLE_BYTES`](ember_proto::MAX_REGISTERED_TABLE_BYTES)
    /// (16 MiB as Arrow IPC); larger data belongs in files.
    pub async fn register_batch(&self, name: &str, batch: RecordBatch) -> Result<()> {
        let ipc = ember_planner::ipc_types::write_stream(&batch.schema(), [&batch])?;
        let max = ember_proto::MAX_REGISTERED_TABLE_BYTES;
        if ipc.len() > max {
            return Err(EmberError::Query(format!(
                "register_batch({name}): the batch is {} bytes as Arrow IPC, over the limit of \
                 {max} bytes for in-memory tables; write it to Parquet files and register those",
                ipc.len()
            )));
        }
        self.scheduler
            .clone()
            .register_table(RegisterTableRequest {
                session_id: self.session_id.clone(),
                name: name.to_string(),
                ipc_stream: ipc,
            })
            .await?;
        let _ = self.local.deregister_table(name);
        Ok(())
    }

    /// A DataFrame over a small in-memory batch (see
    /// [`register_batch`](Self::register_batch)).
    pub async fn read_batch(&self, batch: RecordBatch) -> Result<DataFrame> {
        let name = self.temporary_name();
        self.register_batch(&name, batch).await?;
        self.table(&name).await
    }

    /// A DataFrame over Parquet files (see [`register_parquet`](Self::register_parquet)).
    ///
    /// ```no_run
    /// # async fn demo(ctx: &ember::EmberContext) -> ember::Result<()> {
    /// use ember::prelude::*;
    /// let orders = ctx.read_parquet("data/tpch/sf1/orders/", ParquetReadOptions::default()).await?;
    /// println!("{} orders", orders.count().await?);
    /// # Ok(()) }
    /// ```
    pub async fn read_parquet(
        &self,
        path: &str,
        options: ParquetReadOptions<'_>,
    ) -> Result<DataFrame> {
        let name = self.temporary_name();
        self.register_parquet(&name, path, options).await?;
        self.table(&name).await
    }

    /// A DataFrame over CSV files (see [`register_csv`](Self::register_csv)).
    pub async fn read_csv(&self, path: &str, options: CsvReadOptions<'_>) -> Result<DataFrame> {
        let name = self.temporary_name();
        self.register_csv(&name, path, options).await?;
        self.table(&name).await
    }

    /// A DataFrame over newline-delimited JSON files (see
    /// [`register_json`](Self::register_json)).
    pub async fn read_json(&self, path: &str, options: NdJsonReadOptions<'_>) -> Result<DataFrame> {
        let name = self.temporary_name();
        self.register_json(&name, path, options).await?;
        self.table(&name).await
    }

    async fn register_files(&self, name: &str, path: &str, ddl: FilesDdl) -> Result<()> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
            return Err(EmberError::Query(format!(
                "invalid table name {name:?}: use letters, digits and '_'"
            )));
        }
        self.run_sql(&format!(
            "CREATE OR REPLACE EXTERNAL TABLE {name} {}",
            ddl.clause(path)
        ))
        .await?;
        // A re-registered name gets its new schema on next use.
        let _ = self.local.deregister_table(name);
        Ok(())
    }

    fn temporary_name(&self) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!("ember_read_{}", NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Cancels a running job.
    pub async fn cancel(&self, job_id: &str) -> Result<bool> {
        self.fetcher.cancel(job_id).await
    }

    /// Frees a job's data on the cluster (cancelling it if it still runs).
    pub async fn release(&self, job_id: &str) {
        self.fetcher.release(job_id).await
    }
}

impl Drop for EmberContext {
    fn drop(&mut self) {
        if self.session_id.is_empty() {
            return;
        }
        // Best effort: the scheduler also closes sessions idle past its TTL.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut scheduler = self.scheduler.clone();
            let session_id = std::mem::take(&mut self.session_id);
            handle.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    scheduler.close_session(CloseSessionRequest { session_id }),
                )
                .await;
            });
        }
    }
}

/// The client-side planning context of a session: DataFusion's defaults,
/// with a query planner that runs every plan on the cluster.
fn local_context(fetcher: Fetcher, session_id: String) -> SessionContext {
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_default_features()
        .with_query_planner(Arc::new(ClusterPlanner {
            fetcher,
            session_id,
        }))
        .with_cache_factory(Some(Arc::new(crate::dataframe::NoClientCache)))
        .build();
    SessionContext::new_with_state(state)
}

pub(crate) fn transport_message(e: &tonic::transport::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}
