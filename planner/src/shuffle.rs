//! The contract between Ember's shuffle operators and whoever runs them.
//!
//! [`ShuffleWriterExec`](crate::ShuffleWriterExec) and
//! [`ShuffleReaderExec`](crate::ShuffleReaderExec) are plain DataFusion
//! operators: they know how to split and read shuffle data, not where it is
//! kept nor how it travels. The executor provides that by putting a
//! [`ShuffleContext`] into the task's `SessionConfig` before executing a stage
//! plan. This keeps the planner free of executor code (the dependency points one
//! way: planner ← executor).
//!
//! ```text
//!   ShuffleWriterExec ──push(bucket, batch)──▶ MapOutputSink ──▶ shuffle store
//!   ShuffleReaderExec ──fetch(stage, map, bucket)──▶ ShuffleService ──▶ local store
//!                                                                  └─▶ remote Flight
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::SendableRecordBatchStream;

/// The bytes of Arrow data `batch` holds for its own rows.
///
/// DataFusion's hash partitioner reorders a batch once and hands out every
/// bucket as a slice of it, so all buckets share the same buffers.
/// `RecordBatch::get_array_memory_size` counts the shared buffers whole for
/// each slice: with 2 buckets a map output looked twice its size (the
/// shuffle budget spilled at half its setting), with 16 buckets sixteen
/// times. Summed over the slices of one batch, this is the batch's size.
pub fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Where one map task's output lives, as far as a reader is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOutputLocation {
    pub map_partition: u32,
    pub executor_id: String,
    /// `host:port` of the owning executor's Flight endpoint.
    pub address: String,
    /// The task attempt that produced the output (part of its key in the
    /// owner's store: a re-run never overwrites what a reader may stream).
    pub attempt: u64,
}

/// What one finished map task wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOutputStats {
    pub rows: u64,
    pub bytes: u64,
    pub batches: u64,
    /// Bytes of it written to disk because the shuffle budget was reached.
    pub spilled_bytes: u64,
}

/// Receives one map task's output, bucket by bucket. The implementation
/// decides whether batches stay in memory or spill to disk.
pub trait MapOutputSink: Send {
    /// Adds `batch` to `bucket`.
    fn push(&mut self, bucket: usize, batch: RecordBatch) -> Result<()>;
    /// Publishes the output (readers may fetch it from now on).
    fn finish(self: Box<Self>) -> Result<MapOutputStats>;
}

/// The executor's side of a shuffle, for one running task.
pub trait ShuffleService: Debug + Send + Sync {
    /// Opens the sink for this task's map output of `stage_id`.
    fn create_sink(
        &self,
        stage_id: u32,
        map_partition: u32,
        buckets: usize,
        schema: SchemaRef,
    ) -> Result<Box<dyn MapOutputSink>>;

    /// Streams `bucket` of the map output of (`stage_id`, `map_partition`),
    /// from the local store or from the executor that owns it.
    fn fetch(
        &self,
        stage_id: u32,
        map_partition: u32,
        bucket: u32,
        schema: SchemaRef,
    ) -> Result<SendableRecordBatchStream>;
}

/// The `SessionConfig` extension through which operators reach the
/// [`ShuffleService`] of the task they run in.
#[derive(Debug, Clone)]
pub struct ShuffleContext(pub Arc<dyn ShuffleService>);

impl ShuffleContext {
    /// The shuffle service of the task `ctx` belongs to.
    pub fn from_task(ctx: &TaskContext) -> Result<Arc<dyn ShuffleService>> {
        ctx.session_config()
            .get_extension::<ShuffleContext>()
            .map(|c| Arc::clone(&c.0))
            .ok_or_else(|| {
                DataFusionError::Execution(
                    "shuffle operators can only run inside an Ember executor task".into(),
                )
            })
    }
}
