//! The `ember-scheduler` command line, as a library: [`SchedulerBuilder`]
//! builds a scheduler binary with the user's own functions (it plans the
//! queries that call them; executors need them too, see
//! `ember_executor::ExecutorBuilder`).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use datafusion::arrow::datatypes::DataType;
//! # use datafusion::common::ScalarValue;
//! # use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
//! # fn my_udf() -> ScalarUDF {
//! #     let one = |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(1))));
//! #     create_udf("one", vec![], DataType::Int64, Volatility::Immutable, Arc::new(one))
//! # }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     ember_scheduler::SchedulerBuilder::new()
//!         .with_udf(my_udf())
//!         .run_from_args()
//!         .await
//! }
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ember_planner::Functions;

use crate::{Scheduler, SchedulerConfig};

/// A scheduler process: the `ember-scheduler` command line plus the
/// user-defined functions queries may call.
#[derive(Debug, Clone, Default)]
pub struct SchedulerBuilder {
    functions: Functions,
}

impl SchedulerBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    ember_planner::with_function_methods!("the scheduler's queries");

    /// Parses the process's command line (the flags of `ember-scheduler
    /// --help`), runs the scheduler until SIGINT or SIGTERM, and shuts it
    /// down.
    pub async fn run_from_args(self) -> ExitCode {
        self.run_with_args(std::env::args()).await
    }

    /// Like [`run_from_args`](Self::run_from_args) with the given command
    /// line (its first item is the program name).
    pub async fn run_with_args(self, args: impl IntoIterator<Item = String>) -> ExitCode {
        ember_planner::logging::init("info");
        let args = Args::parse_from(args);
        let bind = args.bind;
        let config = match args.into_config(self.functions) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ember-scheduler: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scheduler = match Scheduler::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ember-scheduler: cannot bind {bind}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("ember-scheduler listening on {}", scheduler.url());
        if let Some(http) = scheduler.http_url() {
            println!("ember-scheduler REST API and metrics on {http}");
        }
        let ctrl_c = tokio::signal::ctrl_c();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
        tracing::info!("shutting down");
        scheduler.shutdown().await;
        ExitCode::SUCCESS
    }
}

/// Plans queries into stages and schedules their tasks on Ember executors.
#[derive(Debug, Parser)]
#[command(name = "ember-scheduler", version)]
struct Args {
    /// Address to bind the gRPC service.
    #[arg(long, env = "EMBER_SCHEDULER_BIND", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Milliseconds between executor heartbeats.
    #[arg(long, env = "EMBER_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    heartbeat_interval_ms: u64,
    /// Seconds without a heartbeat before an executor is declared lost.
    #[arg(long, env = "EMBER_EXECUTOR_TIMEOUT_SECS", default_value_t = 10)]
    executor_timeout_secs: u64,
    /// Seconds a session may stay unused (with no job left) before it is closed.
    #[arg(long, env = "EMBER_SESSION_IDLE_TIMEOUT_SECS", default_value_t = 1800)]
    session_idle_timeout_secs: u64,
    /// Maximum open sessions.
    #[arg(long, env = "EMBER_MAX_SESSIONS", default_value_t = 1024)]
    max_sessions: usize,
    /// Seconds a finished job's result is kept for its client to fetch.
    #[arg(long, env = "EMBER_RESULT_TTL_SECS", default_value_t = 600)]
    result_ttl_secs: u64,
    /// Maximum concurrently running jobs.
    #[arg(long, env = "EMBER_MAX_RUNNING_JOBS", default_value_t = 64)]
    max_running_jobs: usize,
    /// Maximum size of one gRPC message in bytes.
    #[arg(long, env = "EMBER_MAX_MESSAGE_SIZE", default_value_t = ember_proto::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    /// Target partitions of new sessions (0: the cluster's total slots).
    #[arg(long, env = "EMBER_PARTITIONS", default_value_t = 0)]
    partitions: usize,
    /// Where to serve the REST API, /metrics and health checks (`off`: nowhere).
    #[arg(long, env = "EMBER_HTTP", default_value = "127.0.0.1:8080")]
    http: String,
    /// Directory of the event log (JSON lines per job; finished jobs reload
    /// after a restart). No event log without it.
    #[arg(long, env = "EMBER_EVENT_LOG_DIR")]
    event_log_dir: Option<std::path::PathBuf>,
    /// Jobs the event log keeps (oldest deleted first).
    #[arg(long, env = "EMBER_EVENT_LOG_RETENTION", default_value_t = 1000)]
    event_log_retention: usize,
}

impl Args {
    fn into_config(self, functions: Functions) -> Result<SchedulerConfig, String> {
        let http = match self.http.as_str() {
            "off" | "" => None,
            addr => Some(
                addr.parse()
                    .map_err(|e| format!("--http {addr}: {e} (an address, or off)"))?,
            ),
        };
        Ok(SchedulerConfig {
            bind: self.bind,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms.max(50)),
            executor_timeout: Duration::from_secs(self.executor_timeout_secs.max(1)),
            session_idle_timeout: Duration::from_secs(self.session_idle_timeout_secs.max(1)),
            max_sessions: self.max_sessions.max(1),
            result_ttl: Duration::from_secs(self.result_ttl_secs.max(1)),
            max_running_jobs: self.max_running_jobs.max(1),
            max_message_size: self.max_message_size,
            default_partitions: self.partitions,
            functions,
            http,
            event_log_dir: self.event_log_dir,
            event_log_retention: self.event_log_retention,
        })
    }
}
