//! [`ReplicateExec`]: every output partition is the whole input.
//!
//! A broadcast for an operator that runs partition by partition: a
//! `Partitioned` hash join whose build side is a `ReplicateExec` builds its
//! table from all of that side in every task, as a `CollectLeft` join does,
//! but each task's join ends with its own probe partition. That is what a
//! task needs to emit the build rows its probe partition matched (a
//! `LeftSemi` join, see [`crate::semi_reduction`]): a `CollectLeft` join
//! emits them only after every probe partition of the plan has ended, and
//! no task runs more than one.

use std::fmt;
use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PhysicalExpr, PlanProperties, SendableRecordBatchStream, Statistics, StatisticsArgs,
    replace_children_if_necessary,
};

/// `partitions` output partitions, each all the rows of `input` (its
/// partitions merged, in no order).
#[derive(Debug)]
pub struct ReplicateExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl ReplicateExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, partitions: usize) -> Self {
        // Merging partitions loses their order, as a coalesce does.
        let mut equivalence = input.equivalence_properties().clone();
        if input.output_partitioning().partition_count() > 1 {
            equivalence.clear_orderings();
            equivalence.clear_per_partition_constants();
        }
        let properties = PlanProperties::new(
            equivalence,
            Partitioning::UnknownPartitioning(partitions),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self {
            input,
            properties: Arc::new(properties),
        }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn partitions(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

impl DisplayAs for ReplicateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ReplicateExec: partitions={}, each the whole input",
            self.partitions()
        )
    }
}

impl ExecutionPlan for ReplicateExec {
    fn name(&self) -> &str {
        "ReplicateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn child_stats_requests(&self, _partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(None)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let whole = &input_stats[0];
        if args.partition().is_some() || self.partitions() == 1 {
            return Ok(Arc::clone(whole));
        }
        // All partitions: that many copies.
        let copies = Precision::Exact(self.partitions());
        let mut all = Statistics::new_unknown(&self.schema());
        all.num_rows = whole.num_rows.multiply(&copies);
        all.total_byte_size = whole.total_byte_size.multiply(&copies);
        Ok(Arc::new(all))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("ReplicateExec has one input, given {}", c.len()))
        })?;
        Ok(Arc::new(Self::new(input, self.partitions())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.partitions() {
            return Err(DataFusionError::Internal(format!(
                "ReplicateExec has {} partitions, asked for {partition}",
                self.partitions()
            )));
        }
        CoalescePartitionsExec::new(Arc::clone(&self.input)).execute(0, context)
    }
}

/// `plan`, each of whose partitions is the whole of something (a
/// [`ReplicateExec`], under projections), as that whole in one partition.
pub(crate) fn whole_once(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(replicate) = plan.downcast_ref::<ReplicateExec>() {
        return Ok(Some(Arc::new(ReplicateExec::new(
            Arc::clone(replicate.input()),
            1,
        ))));
    }
    if plan.downcast_ref::<ProjectionExec>().is_some()
        && let Some(input) = whole_once(plan.children()[0])?
    {
        return Ok(Some(replace_children_if_necessary(
            Arc::clone(plan),
            vec![input],
        )?));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use datafusion::physical_plan::collect_partitioned;

    use crate::test_util::int_table;

    use super::*;

    #[tokio::test]
    async fn every_partition_is_all_of_the_input() {
        let table = int_table(
            &["a"],
            vec![vec![vec![Some(1), Some(2)]], vec![vec![Some(3)]]],
        );
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table).unwrap();
        let scan = ctx
            .sql("SELECT a FROM t")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        assert_eq!(scan.output_partitioning().partition_count(), 2);
        let replicated: Arc<dyn ExecutionPlan> = Arc::new(ReplicateExec::new(scan, 3));
        let partitions = collect_partitioned(Arc::clone(&replicated), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(partitions.len(), 3);
        for batches in partitions {
            let mut values: Vec<i32> = batches
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<arrow::array::Int32Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .collect();
            values.sort();
            assert_eq!(values, [1, 2, 3]);
        }
        assert!(replicated.execute(3, ctx.task_ctx()).is_err());
    }
}
