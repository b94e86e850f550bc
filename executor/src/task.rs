//! Running one task attempt: decode the stage plan, execute one partition of
//! it with DataFusion (its [`ShuffleWriterExec`](ember_planner::ShuffleWriterExec)
//! root writes the output into the shuffle store under the attempt's key),
//! then report the outcome.
//!
//! Every launched attempt reports exactly once, killed ones included (the
//! scheduler's slot accounting depends on it), and the report is retried
//! until the scheduler acknowledges it: a scheduler that is briefly away
//! must not leave a task `Running` forever. Until then the attempt stays in
//! the list the executor's heartbeats carry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use ember_planner::Functions;
use ember_planner::config::ember_options;
use ember_planner::object_stores::{EmberStores, S3Config, StoreCache};
use ember_planner::subquery_value::SubqueryValues;
use ember_planner::{
    MapOutputLocation, ShuffleContext, TaskIdentity, codec, find_fetch_failure,
    find_missing_function, stats_from_batch,
};
use ember_proto::{
    TaskFailure, TaskId, TaskStatusUpdate, TaskSucceeded, task_failure, task_status_update,
};
use tokio::sync::watch;

use crate::faults::{FaultAction, FaultPoint};
use crate::service::Inner;
use crate::shuffle::{FetchCounters, TaskShuffle};

/// What all the tasks of one `LaunchTasks` share.
#[derive(Debug)]
pub struct Launch {
    pub job_id: String,
    pub job_token: String,
    pub stage_id: u32,
    pub stage_attempt: u32,
    pub plan: Vec<u8>,
    pub inputs: HashMap<u32, Vec<MapOutputLocation>>,
    pub settings: HashMap<String, String>,
    /// The values of the job's scalar subqueries known at launch.
    pub subquery_values: Arc<SubqueryValues>,
    /// A final stage's: its results up to this size go with the report.
    pub direct_result_max_bytes: u64,
}

/// Longest pause between two tries of a status report.
const MAX_REPORT_BACKOFF: Duration = Duration::from_secs(2);

/// Runs one attempt (or reports it killed at once if `cancelled` is `None`:
/// its job was removed before the launch arrived) and reports the outcome.
pub async fn run_and_report(
    inner: Arc<Inner>,
    launch: Arc<Launch>,
    partition: u32,
    attempt: u64,
    cancelled: Option<watch::Receiver<bool>>,
) {
    let task = TaskId {
        job_id: launch.job_id.clone(),
        stage_id: launch.stage_id,
        stage_attempt: launch.stage_attempt,
        partition,
        attempt,
    };
    let started = Instant::now();
    let mut queued = Duration::ZERO;
    let counters = Arc::new(FetchCounters::default());
    let result = match cancelled {
        None => Err(None),
        Some(mut cancelled) => {
            inner.metrics.tasks_queued.inc();
            let permit = Arc::clone(&inner.task_slots).acquire_owned().await;
            inner.metrics.tasks_queued.dec();
            queued = started.elapsed();
            let mut work = {
                let inner = Arc::clone(&inner);
                let launch = Arc::clone(&launch);
                let counters = Arc::clone(&counters);
                inner.cpu.clone().spawn(async move {
                    run_task(&inner, &launch, partition, attempt, counters).await
                })
            };
            // Cancellation is answered from this (network) side at once; the
            // task itself stops at its next yield point.
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
            result
        }
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = match result {
        Ok((stats, plan, setup)) => task_status_update::Outcome::Succeeded(TaskSucceeded {
            direct_result: direct_result(&inner, &launch, partition, attempt, &stats)
                .unwrap_or_default(),
            output_rows: stats.rows,
            output_bytes: stats.bytes,
            local_fetches: load(&counters.local),
            remote_fetches: load(&counters.remote),
            elapsed_ms: started.elapsed().as_millis() as u64,
            shuffle_spilled_bytes: stats.spilled_bytes,
            operator_spilled_bytes: plan.spilled_bytes,
            input_rows: plan.input_rows,
            local_fetch_bytes: load(&counters.local_bytes),
            remote_fetch_bytes: load(&counters.remote_bytes),
            queued_us: queued.as_micros() as u64,
            setup_us: setup.as_micros() as u64,
        }),
        Err(Some(e)) => {
            tracing::warn!(task = %task.display(), error = %e, "task failed");
            task_status_update::Outcome::Failed(classify_failure(&e))
        }
        Err(None) => task_status_update::Outcome::Failed(TaskFailure {
            message: "task killed".into(),
            reason: Some(task_failure::Reason::Killed(ember_proto::TaskKilled {})),
        }),
    };
    match &outcome {
        task_status_update::Outcome::Succeeded(s) => inner.metrics.task_succeeded(s),
        task_status_update::Outcome::Failed(f) => inner.metrics.task_ended(
            if matches!(f.reason, Some(task_failure::Reason::Killed(_))) {
                "killed"
            } else {
                "failed"
            },
        ),
    }
    let update = TaskStatusUpdate {
        executor_id: inner.id.clone(),
        task: Some(task.clone()),
        outcome: Some(outcome),
    };
    report(&inner, update).await;
    inner.attempts.lock().remove(&attempt);
}

/// A final partition small enough to go with its task's report, encoded,
/// and taken out of the store (as Spark's direct results: the client and
/// the scheduler skip a fetch, and the result outlives this executor).
fn direct_result(
    inner: &Inner,
    launch: &Launch,
    partition: u32,
    attempt: u64,
    stats: &ember_planner::MapOutputStats,
) -> Option<Vec<u8>> {
    let max = launch.direct_result_max_bytes;
    if max == 0 || stats.bytes > max {
        return None;
    }
    let key = (launch.stage_id, partition, attempt);
    let (schema, batches) = inner.store.memory_output(&launch.job_id, key)?;
    let bytes = match ember_planner::ipc_types::write_stream(&schema, &batches) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(job = %launch.job_id, partition, error = %e, "result kept for fetching: cannot encode it");
            return None;
        }
    };
    if bytes.len() as u64 > max {
        return None;
    }
    inner.store.remove_output(&launch.job_id, key);
    Some(bytes)
}

/// What a task's plan did, from DataFusion's metrics of its operators.
#[derive(Debug, Default, Clone, Copy)]
struct PlanFigures {
    /// Bytes its operators (sorts, joins, aggregations) spilled.
    spilled_bytes: u64,
    /// Rows its leaves (scans, shuffle readers) produced.
    input_rows: u64,
}

impl PlanFigures {
    fn of(plan: &dyn ExecutionPlan) -> Self {
        let metrics = plan.metrics();
        let mut figures = Self {
            spilled_bytes: metrics
                .as_ref()
                .and_then(|m| m.spilled_bytes())
                .unwrap_or(0) as u64,
            input_rows: 0,
        };
        let children = plan.children();
        if children.is_empty() {
            figures.input_rows = metrics.and_then(|m| m.output_rows()).unwrap_or(0) as u64;
        }
        for child in children {
            let f = Self::of(child.as_ref());
            figures.spilled_bytes += f.spilled_bytes;
            figures.input_rows += f.input_rows;
        }
        figures
    }
}

/// Sends `update` until the scheduler acknowledges it, the job is forgotten,
/// or the executor shuts down.
async fn report(inner: &Inner, update: TaskStatusUpdate) {
    let Some(task) = &update.task else { return };
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Some(pause) = inner.faults.disconnected_for() {
            tokio::time::sleep(pause).await;
            continue;
        }
        if !inner.attempts.lock().contains_key(&task.attempt) {
            // The job was forgotten by the scheduler meanwhile.
            return;
        }
        match inner
            .scheduler
            .clone()
            .update_task_status(update.clone())
            .await
        {
            Ok(_) => return,
            Err(e) => {
                inner.metrics.grpc_error("client", "UpdateTaskStatus");
                tracing::warn!(task = %task.display(), error = %e.message(), "status report failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_REPORT_BACKOFF);
            }
        }
    }
}

async fn run_task(
    inner: &Arc<Inner>,
    launch: &Launch,
    partition: u32,
    attempt: u64,
    counters: Arc<FetchCounters>,
) -> datafusion::error::Result<(ember_planner::MapOutputStats, PlanFigures, Duration)> {
    inject(inner, FaultPoint::TaskStart, launch, partition).await?;
    let started = Instant::now();
    let shuffle = Arc::new(TaskShuffle {
        executor_id: inner.id.clone(),
        job_id: launch.job_id.clone(),
        job_token: launch.job_token.clone(),
        attempt,
        inputs: launch.inputs.clone(),
        store: Arc::clone(&inner.store),
        peers: Arc::clone(&inner.peers),
        counters,
    });
    let identity = TaskIdentity {
        job_id: launch.job_id.clone(),
        attempt,
    };
    let task_ctx = Arc::new(task_context(
        &launch.settings,
        Arc::clone(&launch.subquery_values),
        &inner.functions,
        Arc::clone(&inner.runtime),
        shuffle,
        identity,
    )?);
    let plan = codec::decode_plan(&launch.plan, &task_ctx).map_err(|e| {
        match find_missing_function(&e) {
            // The same on every attempt here: fail the job, saying what to do.
            Some(missing) => DataFusionError::Plan(format!(
                "executor {} cannot run function '{}': it was not started with it \
                 (build it with ember_executor::ExecutorBuilder::with_udf and friends)",
                inner.id, missing.name
            )),
            None => e,
        }
    })?;
    let stream = Arc::clone(&plan).execute(partition as usize, task_ctx)?;
    let setup = started.elapsed();
    let batches: Vec<_> = futures::TryStreamExt::try_collect(stream).await?;
    let stats = batches
        .first()
        .and_then(stats_from_batch)
        .ok_or_else(|| DataFusionError::Internal("shuffle writer returned no statistics".into()))?;
    inject(inner, FaultPoint::TaskEnd, launch, partition).await?;
    Ok((stats, PlanFigures::of(plan.as_ref()), setup))
}

/// Fires a configured fault at `point`, if one matches this task.
async fn inject(
    inner: &Inner,
    point: FaultPoint,
    launch: &Launch,
    partition: u32,
) -> datafusion::error::Result<()> {
    let stage = launch.stage_id;
    let reads = !launch.inputs.is_empty();
    match inner
        .faults
        .act(inner.faults.fire(point, stage, partition, reads))
    {
        Some((FaultAction::Fail, _)) => Err(DataFusionError::Execution(format!(
            "injected fault at {point:?} (stage {stage}, partition {partition})"
        ))),
        Some((FaultAction::Hang, d)) if d.is_zero() => {
            futures::future::pending::<()>().await;
            Ok(())
        }
        Some((FaultAction::Hang, d)) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The functions a task can call: DataFusion's built-ins and the ones this
/// executor was built with, gathered once. (A DataFusion session builds and
/// registers several hundred functions when it is created: measurable per
/// task, so tasks get a bare [`TaskContext`] holding these instead.)
#[derive(Debug)]
pub struct TaskFunctions {
    scalar: HashMap<String, Arc<ScalarUDF>>,
    higher_order: HashMap<String, Arc<HigherOrderUDF>>,
    aggregate: HashMap<String, Arc<AggregateUDF>>,
    window: HashMap<String, Arc<WindowUDF>>,
}

impl TaskFunctions {
    pub fn new(functions: &Functions) -> Self {
        let session = SessionContext::new();
        functions.register_in(&session);
        let all = session.task_ctx();
        Self {
            scalar: all.scalar_functions().clone(),
            higher_order: all.higher_order_functions().clone(),
            aggregate: all.aggregate_functions().clone(),
            window: all.window_functions().clone(),
        }
    }
}

/// The context a task runs in: the job's settings and scalar subquery
/// values, this executor's runtime (memory pool, spill dirs, object stores),
/// its functions, the task's shuffle service and its identity (file writers
/// name their staging directory after it).
pub fn task_context(
    settings: &HashMap<String, String>,
    subquery_values: Arc<SubqueryValues>,
    functions: &TaskFunctions,
    runtime: Arc<RuntimeEnv>,
    shuffle: Arc<TaskShuffle>,
    identity: TaskIdentity,
) -> datafusion::error::Result<TaskContext> {
    let mut config = ember_planner::config::task_base_config();
    for (key, value) in settings {
        config.options_mut().set(key, value)?;
    }
    // The job's object-store settings; clients are shared process-wide.
    let stores = EmberStores::new(S3Config::of(&ember_options(&config)), StoreCache::global());
    let runtime = RuntimeEnvBuilder::from_runtime_env(&runtime)
        .with_object_store_registry(Arc::new(stores))
        .build_arc()?;
    let session_id = identity.job_id.clone();
    let config = config
        .with_extension(Arc::new(ShuffleContext(shuffle)))
        .with_extension(Arc::new(identity))
        .with_extension(subquery_values);
    Ok(TaskContext::new(
        None,
        session_id,
        config,
        functions.scalar.clone(),
        functions.higher_order.clone(),
        functions.aggregate.clone(),
        functions.window.clone(),
        runtime,
    ))
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
                    map_attempt: f.map_attempt,
                    unreachable: f.unreachable,
                },
            )),
        };
    }
    // Errors about the query itself, or about the values it computes (a
    // cast that cannot be made, a division by zero), fail the same way on
    // every attempt. I/O, memory and external errors may not.
    let retryable = match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => false,
        DataFusionError::ArrowError(arrow, _) => !matches!(
            arrow.as_ref(),
            ArrowError::CastError(_)
                | ArrowError::DivideByZero
                | ArrowError::ArithmeticOverflow(_)
                | ArrowError::InvalidArgumentError(_)
                | ArrowError::ParseError(_)
                | ArrowError::SchemaError(_)
                | ArrowError::NotYetImplemented(_)
        ),
        _ => true,
    };
    TaskFailure {
        message,
        reason: Some(task_failure::Reason::Execution(
            ember_proto::ExecutionError { retryable },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable(e: DataFusionError) -> bool {
        match classify_failure(&e).reason {
            Some(task_failure::Reason::Execution(x)) => x.retryable,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_of_the_values_are_not_retried_errors_of_the_place_are() {
        let arrow = |e| DataFusionError::ArrowError(Box::new(e), None);
        // The same on every attempt: a cast that cannot be made, a division
        // by zero, a plan error (also when wrapped).
        assert!(!retryable(arrow(ArrowError::CastError("no".into()))));
        assert!(!retryable(arrow(ArrowError::DivideByZero)));
        assert!(!retryable(DataFusionError::Context(
            "in a task".into(),
            Box::new(DataFusionError::Plan("no such column".into()))
        )));
        // Perhaps not: I/O, memory, the operators' own execution errors.
        assert!(retryable(arrow(ArrowError::IoError(
            "read".into(),
            std::io::Error::other("reset")
        ))));
        assert!(retryable(DataFusionError::ResourcesExhausted(
            "pool".into()
        )));
        assert!(retryable(DataFusionError::Execution("injected".into())));
    }
}
