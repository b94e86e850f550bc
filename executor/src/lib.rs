//! # ember-executor
//!
//! An executor runs tasks. It registers with the scheduler and heartbeats; the
//! scheduler pushes it tasks (`LaunchTasks`: a stage plan once, plus the
//! partitions to run); each task executes one partition of the stage plan with
//! DataFusion under this executor's memory pool, and its shuffle writer puts
//! the output into the [`store::ShuffleStore`]. Other executors and clients
//! stream that output over Arrow Flight ([`flight`]); tasks read local map
//! outputs straight from the store ([`shuffle::TaskShuffle`]). Every launch is
//! a task *attempt* with an id from the scheduler; the attempt keys its map
//! output, its spill file and every report about it.
//!
//! A control stream to the scheduler carries heartbeats; its breaking is how
//! the scheduler notices this process died (see `control`). Tests can inject
//! faults ([`faults`]).
//!
//! One port serves both the `ExecutorService` gRPC API and Flight.
//!
//! What it must never do: import the scheduler (they meet only in
//! `ember-proto`), or serve data without checking the job's token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ember_executor::ExecutorError> {
//! let config = ember_executor::ExecutorConfig::new("http://127.0.0.1:50050");
//! let executor = ember_executor::Executor::start(config).await?;
//! println!("executor {} serving on {}", executor.id(), executor.address());
//! executor.shutdown().await;
//! # Ok(()) }
//! ```

mod cli;
mod config;
mod control;
pub mod error;
pub mod faults;
pub mod flight;
mod flight_encode;
mod http;
mod jobs;
pub mod memory;
pub mod metrics;
mod service;
pub mod shuffle;
pub mod store;
mod task;
mod work_dir;

pub use cli::ExecutorBuilder;
pub use config::ExecutorConfig;
pub use ember_planner::Functions;
pub use error::{ExecutorError, Result};
pub use service::Executor;
