//! Sessions: each has an identity, a DataFusion `SessionContext` holding its
//! catalog (tables created by DDL) and settings, and turns SQL into either an
//! answer computed here or a stage DAG for the cluster.
//!
//! SQL is planned on the scheduler, not the client: the catalog lives here, so
//! the shell, the DataFrame API and future protocol clients see the same
//! tables, and clients stay thin.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_planner::CutOptions;
use ember_planner::config::{EmberOptions, distributed_session_config, ember_options};
use ember_planner::object_stores::{EmberStores, S3Config, StoreCache};
use ember_planner::{FinishHere, ResultMerge, StageDag};

use crate::error::{Result, SchedulerError};

/// One client session.
pub struct Session {
    pub id: String,
    pub ctx: SessionContext,
    /// Object stores under the session's current `ember.s3.*` settings.
    stores: Arc<EmberStores>,
    last_used: parking_lot::Mutex<std::time::Instant>,
}

/// What a statement turned into.
pub enum Planned {
    /// Answered on the scheduler (DDL, SET, SHOW, EXPLAIN, DESCRIBE).
    Inline {
        has_result_set: bool,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// `EXPLAIN ANALYZE`: run the job, then describe its stages with metrics.
    Analyze {
        dag: StageDag,
        settings: Arc<HashMap<String, String>>,
        verbose: bool,
    },
    /// To be run by the cluster.
    Job {
        dag: StageDag,
        schema: SchemaRef,
        settings: Arc<HashMap<String, String>>,
    },
}

impl Session {
    pub fn new(
        id: String,
        target_partitions: usize,
        settings: &HashMap<String, String>,
        functions: &ember_planner::Functions,
    ) -> Result<Self> {
        let mut config = distributed_session_config(target_partitions);
        for (k, v) in settings {
            ember_planner::config::check_setting(k, v).map_err(SchedulerError::InvalidQuery)?;
            config
                .options_mut()
                .set(k, v)
                .map_err(|e| SchedulerError::InvalidQuery(e.strip_backtrace()))?;
        }
        let stores = Arc::new(EmberStores::new(
            S3Config::of(&ember_options(&config)),
            StoreCache::global(),
        ));
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::clone(&stores) as _)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        functions.register_in(&ctx);
        // Arrow files are written through a sink Ember can distribute.
        ctx.state_ref().write().register_file_format(
            Arc::new(ember_planner::arrow_write::ArrowWriteFactory),
            true,
        )?;
        Ok(Self {
            id,
            ctx,
            stores,
            last_used: parking_lot::Mutex::new(std::time::Instant::now()),
        })
    }

    /// The schema single-process DataFusion gives `plan` (`None` if it
    /// cannot optimize it): its nullability depends on how uncorrelated
    /// scalar subqueries run, which Ember does differently (see `config`).
    pub fn datafusion_schema(&self, plan: &LogicalPlan) -> Option<SchemaRef> {
        let mut state = self.ctx.state();
        state
            .config_mut()
            .options_mut()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = true;
        let optimized = state.optimize(plan).ok()?;
        Some(Arc::new(optimized.schema().as_arrow().clone()))
    }

    /// Decodes a logical plan a client built (e.g. with the DataFrame API):
    /// its tables are named, and resolved here in this session's catalog.
    pub async fn decode_plan(&self, bytes: &[u8]) -> Result<LogicalPlan> {
        self.sync_stores();
        let codec = ember_planner::ClusterTableCodec::resolving(self.catalog_tables().await?);
        Ok(
            datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
                bytes,
                &self.ctx.task_ctx(),
                &codec,
            )?,
        )
    }

    /// The tables of the session's default schema, by name.
    async fn catalog_tables(
        &self,
    ) -> Result<HashMap<String, Arc<dyn datafusion::catalog::TableProvider>>> {
        let (catalog, schema) = self.with_config(|config| {
            let names = &config.options().catalog;
            (names.default_catalog.clone(), names.default_schema.clone())
        });
        let mut tables = HashMap::new();
        if let Some(schema) = self.ctx.catalog(&catalog).and_then(|c| c.schema(&schema)) {
            for name in schema.table_names() {
                if let Some(table) = schema.table(&name).await? {
                    tables.insert(name, table);
                }
            }
        }
        Ok(tables)
    }

    /// Registers in-memory data a client sent (an Arrow IPC stream) as table
    /// `name`, replacing any table of that name.
    pub fn register_ipc_table(&self, name: &str, ipc: &[u8]) -> Result<()> {
        if ipc.len() > ember_proto::MAX_REGISTERED_TABLE_BYTES {
            return Err(SchedulerError::LimitExceeded(format!(
                "in-memory table {name} is {} bytes; at most {} bytes can be registered \
                 (write larger data to files and register those)",
                ipc.len(),
                ember_proto::MAX_REGISTERED_TABLE_BYTES
            )));
        }
        let bad = |e: arrow::error::ArrowError| {
            SchedulerError::InvalidQuery(format!("in-memory table {name}: {e}"))
        };
        let (schema, batches) = ember_planner::ipc_types::read_stream(ipc).map_err(bad)?;
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
        let _ = self.ctx.deregister_table(name)?;
        self.ctx.register_table(name, Arc::new(table))?;
        Ok(())
    }

    /// Moves a table's `aws.*` options (as DataFusion spells them) into the
    /// session's settings for that table's bucket
    /// (`ember.s3.bucket.<bucket>.*`), which reach the executors with every
    /// job and are masked like all secrets.
    fn take_s3_options(
        &self,
        cmd: &mut datafusion::logical_expr::CreateExternalTable,
    ) -> Result<()> {
        let aws: Vec<(String, String)> = cmd
            .options
            .iter()
            .filter(|(k, _)| k.starts_with("aws."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut buckets = vec![];
        for location in &cmd.locations {
            let url = datafusion::datasource::listing::ListingTableUrl::parse(location)?;
            match url.scheme() {
                "s3" | "s3a" => {
                    buckets.push(url.get_url().host_str().unwrap_or_default().to_string())
                }
                other => {
                    return Err(SchedulerError::InvalidQuery(format!(
                        "aws.* options apply to s3:// locations, not {other}://"
                    )));
                }
            }
        }
        // The statement's text (`SHOW CREATE TABLE`) would carry the secrets.
        cmd.definition = None;
        let state = self.ctx.state_ref();
        let mut state = state.write();
        for ((key, value), bucket) in aws
            .iter()
            .flat_map(|kv| buckets.iter().map(move |b| (kv, b)))
        {
            let field = match &key["aws.".len()..] {
                "virtual_hosted_style_request" => "virtual_hosted_style",
                "token" => "session_token",
                other => other,
            };
            state
                .config_mut()
                .options_mut()
                .set(&format!("ember.s3.bucket.{bucket}.{field}"), value)
                .map_err(|_| {
                    SchedulerError::InvalidQuery(format!(
                        "unknown table option {key} (aws.endpoint, aws.region, \
                         aws.access_key_id, aws.secret_access_key, aws.session_token, \
                         aws.allow_http, aws.virtual_hosted_style_request)"
                    ))
                })?;
        }
        drop(state);
        for (key, _) in &aws {
            cmd.options.remove(key);
        }
        self.sync_stores();
        Ok(())
    }

    /// Adds the `ember.*` system tables.
    pub fn register_system_tables(
        &self,
        core: Arc<crate::core::Core>,
        sessions: crate::system_tables::SessionLister,
    ) -> Result<()> {
        let catalog_name =
            self.with_config(|config| config.options().catalog.default_catalog.clone());
        let catalog = self
            .ctx
            .catalog(&catalog_name)
            .ok_or_else(|| SchedulerError::Internal(format!("no catalog {catalog_name}")))?;
        catalog.register_schema(
            crate::system_tables::SCHEMA,
            Arc::new(crate::system_tables::SystemSchema::new(core, sessions)),
        )?;
        Ok(())
    }

    /// Points the session's object stores at its current `ember.s3.*`
    /// settings (a `SET` may have changed them).
    fn sync_stores(&self) {
        self.stores.set_settings(S3Config::of(&self.options()));
    }

    /// Reads the session's configuration where it lies.
    /// (`SessionContext::state` clones the whole state, function registries
    /// included: a query paid for that several times over here.)
    pub fn with_config<T>(&self, read: impl FnOnce(&SessionConfig) -> T) -> T {
        read(self.ctx.state_ref().read().config())
    }

    /// The session's `ember.*` settings.
    pub fn options(&self) -> EmberOptions {
        self.with_config(ember_options)
    }

    /// Marks the session used now (it is closed after a long idle time).
    pub fn touch(&self) {
        *self.last_used.lock() = std::time::Instant::now();
    }

    pub fn idle_for(&self) -> std::time::Duration {
        self.last_used.lock().elapsed()
    }

    /// Hands `dag`'s last merge to the client (see
    /// `StageDag::merge_on_client`) unless the session turned that off
    /// (`ember.merge_on_client`); the merge the client is to do.
    pub fn merge_on_client<'d>(&self, dag: &'d mut StageDag) -> Option<&'d ResultMerge> {
        if self.options().merge_on_client {
            dag.merge_on_client()
        } else {
            None
        }
    }

    /// Takes a scalar subquery's last aggregation step off the cluster (see
    /// `StageDag::finish_here`) unless the session turned that off
    /// (`ember.finish_subqueries_here`); the step the scheduler is to run.
    pub fn finish_here(&self, dag: &mut StageDag) -> Option<FinishHere> {
        if self.options().finish_subqueries_here {
            dag.finish_here()
        } else {
            None
        }
    }

    /// A context to run a step of a job here (see [`FinishHere`]).
    pub fn task_ctx(&self) -> Arc<TaskContext> {
        self.ctx.task_ctx()
    }

    /// How the session's plans are distributed before they are cut.
    fn cut_options(&self) -> CutOptions {
        self.with_config(|config| {
            CutOptions::new(config.target_partitions(), &ember_options(config))
        })
    }

    /// The session's settings as shipped to executors with every task:
    /// those that differ from the configuration a task starts from.
    pub fn settings(&self) -> HashMap<String, String> {
        self.with_config(ember_planner::config::task_settings)
    }

    /// Plans one SQL statement for a client's DataFrame: the logical plan,
    /// encoded with the session's tables named (see `PlanSqlRequest`).
    /// Catalog statements run now and come back as a plan of their rows.
    pub async fn plan_sql_for_client(&self, sql: &str) -> Result<Vec<u8>> {
        self.sync_stores();
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        let plan = if matches!(plan, LogicalPlan::Analyze(_)) {
            return Err(SchedulerError::NotSupported(
                "EXPLAIN ANALYZE as a DataFrame (run it as a statement: run_sql, ember-sql)".into(),
            ));
        } else if answered_here(&plan) {
            match self.plan_logical(plan).await? {
                Planned::Inline {
                    schema, batches, ..
                } => rows_plan(&schema, &batches)?,
                _ => {
                    return Err(SchedulerError::Internal(
                        "a catalog statement became a job".into(),
                    ));
                }
            }
        } else {
            // Optimized here: correlated subqueries are decorrelated into
            // joins (a plan still naming outer columns cannot be encoded),
            // uncorrelated ones checked first for a single row.
            let plan = ember_planner::scalar_subquery::check_scalar_subqueries(plan)?;
            self.ctx.state().optimize(&plan)?
        };
        let names = self.name_tables(&plan).await?;
        let codec = ember_planner::ClusterTableCodec::naming(names);
        Ok(
            datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(&plan, &codec)?
                .to_vec(),
        )
    }

    /// The session's tables by name, plus every table `plan` scans that is
    /// not in the catalog (e.g. `generate_series(...)`), registered now
    /// under a generated name so the client's plan can name it.
    async fn name_tables(
        &self,
        plan: &LogicalPlan,
    ) -> Result<Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)>> {
        let mut names: Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)> =
            self.catalog_tables().await?.into_iter().collect();
        let mut scanned = vec![];
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                scanned.push(
                    datafusion::catalog::default_table_source::source_as_provider(&scan.source)?,
                );
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        for provider in scanned {
            let known = names
                .iter()
                .any(|(_, t)| std::ptr::addr_eq(Arc::as_ptr(t), Arc::as_ptr(&provider)));
            if !known {
                let name = format!("__ember_sql_{}", uuid::Uuid::new_v4().simple());
                self.ctx.register_table(&name, Arc::clone(&provider))?;
                names.push((name, provider));
            }
        }
        Ok(names)
    }

    /// The logical plan of one SQL statement (see `plan_logical`).
    pub async fn logical_plan(&self, sql: &str) -> Result<LogicalPlan> {
        self.sync_stores();
        Ok(self.ctx.state().create_logical_plan(sql).await?)
    }

    pub async fn plan_logical(&self, plan: LogicalPlan) -> Result<Planned> {
        self.sync_stores();
        match &plan {
            LogicalPlan::Explain(explain) => {
                let physical = self.physical_plan(&explain.plan).await?;
                let mut dag = StageDag::cut(physical, self.cut_options())?;
                // As it runs for a client.
                self.merge_on_client(&mut dag);
                let mut rows = vec![(
                    "logical_plan".to_string(),
                    explain.plan.display_indent().to_string(),
                )];
                rows.push(("distributed_plan".to_string(), dag.display(explain.verbose)));
                let (schema, batch) = explain_batch(rows)?;
                Ok(Planned::Inline {
                    has_result_set: true,
                    schema,
                    batches: vec![batch],
                })
            }
            LogicalPlan::Analyze(analyze) => {
                let physical = self.physical_plan(&analyze.input).await?;
                Ok(Planned::Analyze {
                    dag: StageDag::cut(physical, self.cut_options())?,
                    settings: Arc::new(self.settings()),
                    verbose: analyze.verbose,
                })
            }
            // Memory tables live here, like the tables `CREATE TABLE AS`
            // fills here: changing one is a catalog statement.
            _ if modifies_memory_table(&plan) => self.run_here(plan, true).await,
            LogicalPlan::Dml(dml) if !matches!(dml.op, WriteOp::Insert(_)) => {
                Err(SchedulerError::NotSupported(format!(
                    "{} (Ember writes files: COPY TO and INSERT INTO an external table)",
                    dml.op.to_string().to_uppercase()
                )))
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd))
                if cmd.options.keys().any(|k| k.starts_with("aws.")) =>
            {
                let mut cmd = cmd.clone();
                self.take_s3_options(&mut cmd)?;
                Box::pin(
                    self.plan_logical(LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd))),
                )
                .await
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(cmd)) => {
                // Errors reading the files (a missing bucket, a corrupt
                // object) say which table and where.
                let what = format!(
                    "CREATE EXTERNAL TABLE {} at {}",
                    cmd.name,
                    cmd.locations.join(", ")
                );
                self.run_here(plan.clone(), false)
                    .await
                    .map_err(|e| match e {
                        SchedulerError::InvalidQuery(m) => {
                            SchedulerError::InvalidQuery(format!("{what}: {m}"))
                        }
                        other => other,
                    })
            }
            LogicalPlan::Statement(Statement::SetVariable(set)) => {
                ember_planner::config::check_setting(&set.variable, &set.value)
                    .map_err(SchedulerError::InvalidQuery)?;
                self.run_here(plan, false).await
            }
            // A fixed setting never left its value.
            LogicalPlan::Statement(Statement::ResetVariable(reset))
                if ember_planner::config::is_pinned(&reset.variable) =>
            {
                Ok(Planned::Inline {
                    has_result_set: false,
                    schema: Arc::new(Schema::empty()),
                    batches: vec![],
                })
            }
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::DescribeTable(_) => {
                let has_result_set = matches!(plan, LogicalPlan::DescribeTable(_))
                    || matches!(&plan, LogicalPlan::Statement(s) if !matches!(s, Statement::SetVariable(_)
                        | Statement::TransactionStart(_) | Statement::TransactionEnd(_)));
                self.run_here(plan, has_result_set).await
            }
            _ if reads_information_schema(&plan) => self.run_here(plan, true).await,
            _ => {
                let physical = self.physical_plan(&plan).await?;
                // The schema of the batches the plan produces, which can
                // differ from the logical one in nullability: clients are
                // told what they will receive.
                let schema = physical.schema();
                let dag = StageDag::cut(physical, self.cut_options())?;
                Ok(Planned::Job {
                    dag,
                    schema,
                    settings: Arc::new(self.settings()),
                })
            }
        }
    }

    /// DataFusion's physical plan for `plan`, with scans balanced for tasks
    /// that each run one partition.
    async fn physical_plan(&self, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
        let state = self.ctx.state();
        let plan = ember_planner::window_filter::rewrite_window_filters(plan.clone())?;
        let plan = ember_planner::scalar_subquery::check_scalar_subqueries(plan)?;
        let physical = state.create_physical_plan(&plan).await?;
        let json_arrays = ember_planner::fidelity::json_array_tables(&plan)?;
        let physical = ember_planner::fidelity::mark_json_array_scans(physical, &json_arrays)?;
        let mut streams = false;
        physical.apply(|p| {
            streams |= p.name() == "StreamingTableExec";
            Ok(TreeNodeRecursion::Continue)
        })?;
        if streams {
            return Err(SchedulerError::NotSupported(
                "reading an UNBOUNDED table (a stream: Ember's tasks read bounded inputs; \
                 create the table without UNBOUNDED)"
                    .into(),
            ));
        }
        if !ember_options(state.config()).balance_scans {
            return Ok(physical);
        }
        Ok(ember_planner::balance::balance_scans(physical, &state).await?)
    }

    /// Runs a catalog-only statement on the scheduler itself.
    async fn run_here(&self, plan: LogicalPlan, has_result_set: bool) -> Result<Planned> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let max_rows = self.options().inline_result_max_rows;
        let batches = df.limit(0, Some(max_rows + 1))?.collect().await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        if rows > max_rows {
            return Err(SchedulerError::LimitExceeded(format!(
                "the result has more than {max_rows} rows (ember.inline_result_max_rows)"
            )));
        }
        Ok(Planned::Inline {
            has_result_set,
            schema,
            batches,
        })
    }
}

/// `1234` µs as "1.2 ms".
fn micros_as_ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The text of `EXPLAIN ANALYZE`: the stage DAG with each stage's metrics.
pub fn analyze_text(dag: &StageDag, status: &ember_proto::JobStatus, verbose: bool) -> String {
    let mut text = dag.display_annotated(verbose, |id| {
        let s = status.stages.iter().find(|s| s.stage_id == id)?;
        Some(format!(
            "input_rows={} rows={} bytes={} spilled={} tasks={} failed_attempts={} task_time_total={}ms task_time_max={}ms (setup {:.1}ms, waiting for a slot {:.1}ms) fetches(local/remote)={}/{} fetched_bytes(local/remote)={}/{} attempts={} executors=[{}]",
            s.input_rows,
            s.output_rows,
            s.output_bytes,
            s.spilled_bytes,
            s.tasks_total,
            s.tasks_failed,
            s.task_time_ms,
            s.task_time_max_ms,
            s.task_setup_us as f64 / 1000.0,
            s.task_queued_us as f64 / 1000.0,
            s.local_fetches,
            s.remote_fetches,
            s.local_fetch_bytes,
            s.remote_fetch_bytes,
            s.attempt + 1,
            s.executors.join(", ")
        ))
    });
    text.push_str(&format!(
        "Job {} took {} ms, after {} of planning{}\n",
        status.job_id,
        status.elapsed_ms,
        micros_as_ms(status.planning_us),
        match status.subqueries_us {
            0 => String::new(),
            us => format!(" and {} on scalar subqueries", micros_as_ms(us)),
        }
    ));
    if !status.events.is_empty() {
        text.push_str("Job events:\n");
        for e in &status.events {
            text.push_str(&format!("  {}\n", event_text(e)));
        }
    }
    text
}

/// One line for a recovery event, e.g.
/// `+812ms outputs lost: stage 1 partitions [0, 2] on exec-b (executor exec-b lost: ...)`.
pub fn event_text(e: &ember_proto::JobEvent) -> String {
    use ember_proto::JobEventKind as K;
    let kind = K::try_from(e.kind).unwrap_or(K::Unspecified);
    let what = match kind {
        K::ExecutorLost => format!("executor {} lost", e.executor_id),
        K::OutputsLost => format!(
            "outputs lost: stage {} partitions {:?} on {}",
            e.stage_id, e.partitions, e.executor_id
        ),
        K::TaskRetried => format!(
            "task retried: stage {} partition {:?} (attempt {} on {})",
            e.stage_id, e.partitions, e.attempt, e.executor_id
        ),
        K::StaleReportIgnored => format!(
            "stale report ignored: stage {} partition {:?}",
            e.stage_id, e.partitions
        ),
        K::ResultLost => format!(
            "result lost: partitions {:?} on {}; recomputing",
            e.partitions, e.executor_id
        ),
        K::SubqueryValue => "value arrived".to_string(),
        K::PlanChosen => format!("plan chosen: stage {}", e.stage_id),
        K::Unspecified => "note".to_string(),
    };
    format!("+{}ms {what}: {}", e.at_ms, e.detail)
}

/// A `(plan_type, plan)` batch like DataFusion's `EXPLAIN` output.
pub fn explain_batch(rows: Vec<(String, String)>) -> Result<(SchemaRef, RecordBatch)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("plan_type", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
    ]));
    let (types, plans): (Vec<String>, Vec<String>) = rows.into_iter().unzip();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(types)),
            Arc::new(StringArray::from(plans)),
        ],
    )
    .map_err(|e| SchedulerError::Internal(e.to_string()))?;
    Ok((schema, batch))
}

/// Statements the scheduler answers itself (catalog only), rather than
/// running a job: DDL, SET, SHOW, DESCRIBE, EXPLAIN, `information_schema`.
pub fn answered_here(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
    ) || reads_information_schema(plan)
        || modifies_memory_table(plan)
}

/// Is `plan` an `INSERT`, `UPDATE` or `DELETE` of an in-memory table?
fn modifies_memory_table(plan: &LogicalPlan) -> bool {
    let LogicalPlan::Dml(dml) = plan else {
        return false;
    };
    datafusion::catalog::default_table_source::source_as_provider(&dml.target).is_ok_and(|t| {
        t.downcast_ref::<datafusion::datasource::MemTable>()
            .is_some()
    })
}

/// The rows of an answer computed here, as a plan (`VALUES`) a client can
/// build on.
fn rows_plan(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<LogicalPlan> {
    let df_schema = Arc::new(datafusion::common::DFSchema::try_from(
        schema.as_ref().clone(),
    )?);
    let mut rows = vec![];
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        datafusion::common::ScalarValue::try_from_array(c, row)
                            .map(datafusion::prelude::lit)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            );
        }
    }
    if rows.is_empty() {
        return Ok(LogicalPlan::EmptyRelation(
            datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: df_schema,
            },
        ));
    }
    Ok(
        datafusion::logical_expr::LogicalPlanBuilder::values_with_schema(rows, &df_schema)?
            .build()?,
    )
}

/// Does the plan scan `information_schema` (SHOW TABLES, SHOW key, ...) or
/// the `ember.*` system tables? Those live in the scheduler, so the
/// scheduler answers.
fn reads_information_schema(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && matches!(
                scan.table_name.schema(),
                Some("information_schema" | crate::system_tables::SCHEMA)
            )
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}
