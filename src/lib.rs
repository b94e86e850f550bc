//! # Ember
//!
//! A distributed, in-memory SQL engine: Spark's execution model (queries cut
//! into stages, stages run as tasks on executors, shuffle between them, lost
//! work recomputed from lineage) on DataFusion and Arrow.
//!
//! [`EmberContext`] is the entry point. It talks to a scheduler over gRPC and
//! fetches results from executors over Arrow Flight, whether the cluster is
//! remote ([`EmberContext::remote`]) or embedded in this process
//! ([`EmberContext::standalone`]: a scheduler and executors on loopback ports,
//! the very same network path).
//!
//! ```no_run
//! # async fn demo() -> ember::Result<()> {
//! let ctx = ember::EmberContext::standalone(2).await?;
//! ctx.run_sql("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'data/t/'").await?;
//! let result = ctx.run_sql("SELECT count(*) FROM t").await?;
//! println!("{}", result.pretty()?);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod context;
pub mod dataframe;
pub mod error;
mod fetch;
mod read_options;
pub mod sql;
pub mod tpch;
pub mod verify;

pub use context::{EmberContext, QueryResult, RunningJob, StandaloneOptions, Submitted};
pub use ember_planner::Functions;
pub use ember_planner::logging;
pub use ember_proto::{ClusterInfo, JobEvent, JobEventKind, JobState, JobStatus};
pub use error::{EmberError, EmberError as Error, Result};
pub use fetch::ResultStream;

/// What a DataFrame program needs: the context, DataFusion's DataFrame and
/// expression functions.
pub mod prelude {
    pub use crate::{EmberContext, EmberError, Result, ResultStream, StandaloneOptions};
    pub use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
    pub use datafusion::functions_aggregate::expr_fn::*;
    pub use datafusion::logical_expr::{ScalarUDF, Volatility, create_udaf, create_udf};
    pub use datafusion::prelude::{
        CsvReadOptions, Expr, JoinType, JsonReadOptions, ParquetReadOptions, col, lit,
    };
    pub use futures::StreamExt;
}

/// Re-exported so users need not depend on the exact versions themselves.
pub use arrow;
pub use datafusion;
