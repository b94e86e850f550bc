//! # ember-planner
//!
//! Turns DataFusion's optimized physical plan into something a cluster can
//! run: a DAG of [stages](StageDag), each a plan fragment with a
//! [`ShuffleWriterExec`] at its root and [`ShuffleReaderExec`]s at the leaves
//! that read earlier stages. It also owns how those fragments travel
//! ([`codec`]: datafusion-proto plus Ember's extension codec) and the
//! session settings that make DataFusion plans safe to cut ([`config`]).
//!
//! What it must never do: know where data lives or how it moves. The shuffle
//! operators reach storage and the network only through the
//! [`ShuffleService`] the executor installs in each task
//! ([`ShuffleContext`]); the planner depends on neither the scheduler nor the
//! executor.
//!
//! ```no_run
//! # async fn demo(ctx: datafusion::prelude::SessionContext) -> Result<(), Box<dyn std::error::Error>> {
//! let plan = ctx.sql("SELECT count(*) FROM t GROUP BY k").await?.create_physical_plan().await?;
//! let dag = ember_planner::StageDag::cut(plan, 4)?;
//! println!("{}", dag.display(false));
//! # Ok(()) }
//! ```

pub mod aggregate_prefilter;
pub mod arrow_write;
pub mod balance;
pub mod choice;
pub mod codec;
pub mod config;
mod df_nodes;
pub mod distinct_exchange;
pub mod error;
pub mod fidelity;
mod finish_here;
pub mod functions;
pub mod ipc_types;
pub mod joins;
pub mod logging;
pub mod object_stores;
pub mod one_task_scans;
mod replicate;
pub mod result_merge;
pub mod scalar_subquery;
pub mod semi_reduction;
pub mod shuffle;
mod shuffle_reader;
mod shuffle_writer;
pub mod small_scans;
mod stages;
pub mod subquery_value;
pub mod table;
#[cfg(test)]
mod test_util;
mod virtual_columns;
pub mod window_filter;
pub mod write;

pub use error::{FetchFailedError, PlannerError, find_fetch_failure};
pub use finish_here::FinishHere;
pub use functions::{Functions, MissingFunction, find_missing_function};
pub use result_merge::ResultMerge;
pub use shuffle::{
    MapOutputLocation, MapOutputSink, MapOutputStats, ShuffleContext, ShuffleService,
};
pub use shuffle_reader::ShuffleReaderExec;
pub use shuffle_writer::{ShuffleWriterExec, stats_from_batch, stats_schema};
pub use stages::{CutOptions, Stage, StageDag};
pub use table::{ClusterTable, ClusterTableCodec};
pub use write::{FileWriteExec, TaskIdentity, WriteTarget};
