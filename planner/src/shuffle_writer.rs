//! [`ShuffleWriterExec`]: the root of every stage. It runs one partition of the
//! stage's plan and hands the output, split into buckets, to the executor's
//! shuffle store.
//!
//! ```text
//!            stage plan, partition p
//!                     │ batches
//!                     ▼
//!        ┌──────── ShuffleWriterExec ────────┐
//!        │ hash / round-robin partitioner    │   (pass-through: all in bucket 0)
//!        └──┬──────────┬──────────────┬──────┘
//!           ▼          ▼              ▼
//!       bucket 0   bucket 1   …   bucket n-1     → map output (stage, p)
//! ```
//!
//! The output is published only once the whole partition is written (Spark's
//! map-side semantics), so a reader never sees half a map output. Executing
//! it yields a single one-row batch of statistics (rows, bytes, batches).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::shuffle::{MapOutputStats, ShuffleContext};

/// Writes one partition of its input into the shuffle store.
#[derive(Debug)]
pub struct ShuffleWriterExec {
    stage_id: u32,
    input: Arc<dyn ExecutionPlan>,
    /// `None`: pass-through, the whole partition goes to bucket 0.
    partitioning: Option<Partitioning>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleWriterExec {
    pub fn try_new(
        stage_id: u32,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Option<Partitioning>,
    ) -> Result<Self> {
        if let Some(p) = &partitioning
            && !matches!(p, Partitioning::Hash(..) | Partitioning::RoundRobinBatch(_))
        {
            return Err(DataFusionError::NotImplemented(format!(
                "shuffle partitioning {p:?}"
            )));
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(stats_schema()),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Self {
            stage_id,
            input,
            partitioning,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    pub fn partitioning(&self) -> Option<&Partitioning> {
        self.partitioning.as_ref()
    }

    /// Number of buckets each map task writes.
    pub fn buckets(&self) -> usize {
        self.partitioning
            .as_ref()
            .map_or(1, |p| p.partition_count())
    }
}

/// Copies the strings a view array (`Utf8View`, `BinaryView`) really uses
/// into buffers of its own.
///
/// Taking rows out of a view array (as the hash partitioner does) keeps
/// references to *all* of the source's data buffers, so every bucket would
/// carry, account for and ship the whole input's strings: memory budgets blow
/// up and Flight sends the same bytes once per bucket.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    let needs = batch
        .columns()
        .iter()
        .any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView));
    if !needs {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| -> ArrayRef {
            match c.data_type() {
                DataType::Utf8View => Arc::new(c.as_string_view().gc()),
                DataType::BinaryView => Arc::new(c.as_binary_view().gc()),
                _ => Arc::clone(c),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Schema of the one-row statistics batch a writer task yields.
pub fn stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
        Field::new("batches", DataType::UInt64, false),
        Field::new("spilled_bytes", DataType::UInt64, false),
    ]))
}

/// Reads the statistics batch written by [`ShuffleWriterExec`].
pub fn stats_from_batch(batch: &RecordBatch) -> Option<MapOutputStats> {
    let col = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .filter(|a| !a.is_empty())
            .map(|a| a.value(0))
    };
    Some(MapOutputStats {
        rows: col(0)?,
        bytes: col(1)?,
        batches: col(2)?,
        spilled_bytes: col(3)?,
    })
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.partitioning {
            Some(Partitioning::Hash(exprs, n)) => {
                let keys: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                write!(
                    f,
                    "ShuffleWriterExec: stage={}, hash([{}], {n})",
                    self.stage_id,
                    keys.join(", ")
                )
            }
            Some(p) => write!(f, "ShuffleWriterExec: stage={}, {p}", self.stage_id),
            None => write!(
                f,
                "ShuffleWriterExec: stage={}, pass-through",
                self.stage_id
            ),
        }
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let Some(Partitioning::Hash(exprs, _)) = &self.partitioning {
            for e in exprs {
                if f(e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "ShuffleWriterExec takes exactly one child".into(),
            ));
        }
        Ok(Arc::new(Self::try_new(
            self.stage_id,
            children.swap_remove(0),
            self.partitioning.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let shuffle = ShuffleContext::from_task(&context)?;
        let input_partitions = self.input.output_partitioning().partition_count();
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let buckets = self.buckets();
        let mut sink = shuffle.create_sink(
            self.stage_id,
            partition as u32,
            buckets,
            self.input.schema(),
        )?;
        let timer = MetricBuilder::new(&self.metrics).subset_time("repartition_time", partition);
        let mut partitioner = match &self.partitioning {
            Some(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                timer,
                partition,
                input_partitions,
            )?),
            None => None,
        };
        let write = async move {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                match partitioner.as_mut() {
                    Some(p) => p.partition(batch, |bucket, b| sink.push(bucket, compact(b)?))?,
                    None => sink.push(0, compact(batch)?)?,
                }
            }
            let stats = sink.finish()?;
            let batch = RecordBatch::try_new(
                stats_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![stats.rows])),
                    Arc::new(UInt64Array::from(vec![stats.bytes])),
                    Arc::new(UInt64Array::from(vec![stats.batches])),
                    Arc::new(UInt64Array::from(vec![stats.spilled_bytes])),
                ],
            )?;
            Ok(batch)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stats_schema(),
            futures::stream::once(write),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::StringViewArray;
    use arrow::compute::take;

    use super::*;

    #[test]
    fn compacted_bucket_no_longer_carries_the_whole_input() {
        let long: Vec<String> = (0..10_000)
            .map(|i| format!("a fairly long string number {i}"))
            .collect();
        let strings = StringViewArray::from_iter_values(long.iter());
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        // What the hash partitioner does: take a few rows out of a big batch.
        let few = take(&strings, &UInt64Array::from(vec![1u64, 5000, 9999]), None).unwrap();
        let bucket = RecordBatch::try_new(Arc::clone(&schema), vec![few]).unwrap();
        let before = bucket.get_array_memory_size();
        let after = compact(bucket.clone()).unwrap();
        assert!(
            after.get_array_memory_size() * 10 < before,
            "{} -> {}",
            before,
            after.get_array_memory_size()
        );
        assert_eq!(after, bucket, "compaction must not change values");
    }
}
