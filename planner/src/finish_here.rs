//! [`FinishHere`]: a scalar subquery's last aggregation step, done by the
//! scheduler.
//!
//! A one-row aggregate (`SELECT avg(x) FROM t`, the usual scalar subquery)
//! ends, cut into stages, with a stage of one task: it fetches the partial
//! row of every task before it and finishes the aggregate. The scheduler
//! reads a subquery's value from the job's result anyway; taking the
//! partial rows instead (most often sent with their tasks' reports) and
//! finishing the aggregate itself saves that stage's launch, its task and
//! its report on the way to the value, which the statement's own stages
//! wait for:
//!
//! ```text
//!   on the cluster                          done by the scheduler
//!
//!   scheduler ◀── stage n: Aggregate(Final)    Aggregate(Final) ◀──┬── partial row 0
//!                   ◀── stage n-1 (Partial)                        └── partial row 1
//!                                                                    (stage n-1, final)
//! ```
//!
//! The step is the final stage's plan as planned, with the reader of the
//! partial rows replaced by those rows: the scheduler planned the query, so
//! every function in it is one the scheduler has. Only for partial states
//! of fixed size (a sum and a count, a minimum): a state that is a list
//! (`count(DISTINCT x)`, `array_agg`) can hold as much as the input, and
//! stays with the cluster, within its memory limits.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::shuffle_reader::ShuffleReaderExec;

/// The last step of a one-row aggregate, taken off the cluster (see the
/// module): run over the partial rows of the job's final stage.
#[derive(Debug, Clone)]
pub struct FinishHere {
    /// `[Projection…] → Aggregate(Final, no group) → Coalesce → reader`.
    plan: Arc<dyn ExecutionPlan>,
}

impl FinishHere {
    /// The step `plan` (a final stage's plan below its writer) is, if it
    /// only finishes a one-row aggregate over every partition of stage
    /// `input`, read pass-through.
    pub(crate) fn of(plan: &Arc<dyn ExecutionPlan>, input: u32) -> Option<Self> {
        let mut node = plan;
        while let Some(p) = node.downcast_ref::<ProjectionExec>() {
            node = p.input();
        }
        let aggregate = node.downcast_ref::<AggregateExec>()?;
        if *aggregate.mode() != AggregateMode::Final || !aggregate.group_expr().is_empty() {
            return None;
        }
        let coalesce = aggregate.input().downcast_ref::<CoalescePartitionsExec>()?;
        let reader = coalesce.input().downcast_ref::<ShuffleReaderExec>()?;
        if reader.hashed() || reader.stage_id() != input {
            return None;
        }
        // Partial states that are lists (`count(DISTINCT)`'s values,
        // `array_agg`'s rows) can be as large as the input; the cluster keeps
        // finishing those, under its memory limits.
        if reader
            .schema()
            .fields()
            .iter()
            .any(|f| f.data_type().is_nested())
        {
            return None;
        }
        // A step awaiting another subquery's value stays on the cluster.
        if !crate::subquery_value::awaited_by(plan).ok()?.is_empty() {
            return None;
        }
        Some(Self {
            plan: Arc::clone(plan),
        })
    }

    /// The aggregate's result over `partials`, the rows the tasks of the
    /// job's final stage wrote (in any order).
    pub async fn run(
        &self,
        partials: Vec<RecordBatch>,
        ctx: Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let mut partials = Some(partials);
        let plan = Arc::clone(&self.plan)
            .transform_up(|node| {
                let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
                    return Ok(Transformed::no(node));
                };
                let schema = reader.schema();
                // The rows as sent may lack the schema's metadata; their
                // columns are the reader's.
                let rows = partials
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec())
                            .map_err(DataFusionError::from)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let source = MemorySourceConfig::try_new_exec(&[rows], schema, None)?;
                Ok(Transformed::yes(source as Arc<dyn ExecutionPlan>))
            })?
            .data;
        collect(plan, ctx).await
    }
}
