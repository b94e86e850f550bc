//! [`ShuffleReaderExec`]: a leaf of a stage that reads the map outputs of an
//! earlier stage.
//!
//! ```text
//!   hashed (after a hash/round-robin exchange)    pass-through (before a merge)
//!
//!   map 0   map 1   map 2                         map 0   map 1   map 2
//!   b0 b1   b0 b1   b0 b1                          b0      b0      b0
//!    │  └─────┼──┐   │  │                           │       │       │
//!    ▼        ▼  ▼   ▼  ▼                           ▼       ▼       ▼
//!   out 0 = b0 of all maps, out 1 = b1 of all     out i = whole map output i
//! ```
//!
//! A hashed reader after an order-preserving exchange (a `RepartitionExec`
//! DataFusion planned with `preserve_order`) merges its map outputs' buckets,
//! each sorted, into one sorted stream, and declares that ordering, as the
//! exchange it replaces did: operators above it (a window over sorted
//! partitions) rely on it.
//!
//! The reader knows only stage ids and partition numbers; where each map
//! output lives is resolved at execution time by the task's
//! [`ShuffleService`](crate::ShuffleService) (local store or Arrow Flight), so
//! one serialized stage plan serves every task and every retry.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, LexOrdering, PhysicalExpr,
};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::shuffle::ShuffleContext;

/// How many map outputs one reader partition streams concurrently.
const CONCURRENT_FETCHES: usize = 4;

/// Reads the output of stage `stage_id`.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    stage_id: u32,
    schema: SchemaRef,
    hashed: bool,
    map_partitions: usize,
    /// The order of every output partition (merged, when hashed).
    ordering: Option<LexOrdering>,
    /// Expressions constant in every output partition.
    constants: Vec<ConstExpr>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// `partitioning` is what the reader declares as its output partitioning;
    /// with `hashed` it has one partition per bucket, otherwise one per map
    /// partition. `ordering` is the order of each map output (hashed: of each
    /// bucket), which every output partition then has too; `constants` are
    /// the map outputs' constant expressions (hashed: only those with the
    /// same value in every map output stay constant, the others are dropped).
    pub fn try_new(
        stage_id: u32,
        schema: SchemaRef,
        hashed: bool,
        map_partitions: usize,
        partitioning: Partitioning,
        ordering: Option<LexOrdering>,
        constants: Vec<ConstExpr>,
    ) -> Result<Self> {
        let constants: Vec<ConstExpr> = constants
            .into_iter()
            .filter(|c| !hashed || matches!(c.across_partitions, AcrossPartitions::Uniform(_)))
            .collect();
        let mut eq =
            EquivalenceProperties::new_with_orderings(Arc::clone(&schema), ordering.clone());
        eq.add_constants(constants.iter().cloned())?;
        let properties = PlanProperties::new(
            eq,
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        Ok(Self {
            stage_id,
            schema,
            hashed,
            map_partitions,
            ordering,
            constants,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The expressions constant in every output partition.
    pub fn constants(&self) -> &[ConstExpr] {
        &self.constants
    }

    /// The order of every output partition, if any.
    pub fn ordering(&self) -> Option<&LexOrdering> {
        self.ordering.as_ref()
    }

    pub fn stage_id(&self) -> u32 {
        self.stage_id
    }

    pub fn hashed(&self) -> bool {
        self.hashed
    }

    pub fn map_partitions(&self) -> usize {
        self.map_partitions
    }

    /// (map partition, bucket) pairs output partition `partition` reads.
    pub fn inputs_of(&self, partition: usize) -> Vec<(u32, u32)> {
        if self.hashed {
            (0..self.map_partitions)
                .map(|m| (m as u32, partition as u32))
                .collect()
        } else {
            vec![(partition as u32, 0)]
        }
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = if self.hashed {
            "hashed"
        } else {
            "pass-through"
        };
        write!(
            f,
            "ShuffleReaderExec: stage={}, {mode}, partitions={}, map_partitions={}",
            self.stage_id,
            self.properties.partitioning.partition_count(),
            self.map_partitions
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "ShuffleReaderExec is a leaf".into(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let count = self.properties.partitioning.partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "ShuffleReaderExec of stage {} has {count} partitions, asked for {partition}",
                self.stage_id
            )));
        }
        let shuffle = ShuffleContext::from_task(&context)?;
        let stage_id = self.stage_id;
        let schema = Arc::clone(&self.schema);
        if let Some(ordering) = self.ordering.as_ref().filter(|_| self.hashed)
            && self.map_partitions > 1
        {
            // Each bucket is sorted; merge them (all open at once). One
            // bucket is read as it is.
            let streams = self
                .inputs_of(partition)
                .into_iter()
                .map(|(map, bucket)| shuffle.fetch(stage_id, map, bucket, Arc::clone(&schema)))
                .collect::<Result<Vec<_>>>()?;
            let reservation = MemoryConsumer::new(format!("ShuffleReaderMerge[{partition}]"))
                .register(context.memory_pool());
            let merged = StreamingMergeBuilder::new()
                .with_streams(streams)
                .with_schema(Arc::clone(&schema))
                .with_expressions(ordering)
                .with_metrics(BaselineMetrics::new(&self.metrics, partition))
                .with_batch_size(context.session_config().batch_size())
                .with_reservation(reservation)
                .build()?;
            return Ok(make_cooperative(merged));
        }
        let fetches = self
            .inputs_of(partition)
            .into_iter()
            .map(move |(map, bucket)| {
                let shuffle = Arc::clone(&shuffle);
                let schema = Arc::clone(&schema);
                async move { shuffle.fetch(stage_id, map, bucket, schema) }
            });
        // Open a few map outputs at a time and interleave their batches; each
        // stream is pulled batch by batch, nothing is buffered whole.
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let batches = futures::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_FETCHES)
            .try_flatten_unordered(CONCURRENT_FETCHES)
            .inspect_ok(move |b| {
                baseline.record_output(b.num_rows());
            });
        // In-memory map outputs are always ready: spend tokio's budget like
        // DataFusion's own leaves do, so the task yields (and can be
        // cancelled) even while a CPU-heavy operator consumes this stream.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))))
    }
}
