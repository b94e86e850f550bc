//! The `ember-executor` command line, as a library: [`ExecutorBuilder`]
//! builds an executor binary with the user's own functions.
//!
//! ```no_run
//! // src/bin/my-executor.rs: the `ember-executor` flags, plus `my_udf`.
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
//!     ember_executor::ExecutorBuilder::new()
//!         .with_udf(my_udf())
//!         .run_from_args()
//!         .await
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ember_planner::Functions;

use crate::{Executor, ExecutorConfig};

/// An executor process: the `ember-executor` command line plus the
/// user-defined functions its tasks may call.
#[derive(Debug, Clone, Default)]
pub struct ExecutorBuilder {
    functions: Functions,
}

impl ExecutorBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    ember_planner::with_function_methods!("the executor's tasks");

    /// Parses the process's command line (the flags of `ember-executor
    /// --help`), runs the executor until SIGINT or SIGTERM, and shuts it
    /// down.
    pub async fn run_from_args(self) -> ExitCode {
        self.run_with_args(std::env::args()).await
    }

    /// Like [`run_from_args`](Self::run_from_args) with the given command
    /// line (its first item is the program name).
    pub async fn run_with_args(self, args: impl IntoIterator<Item = String>) -> ExitCode {
        ember_planner::logging::init("info");
        let config = Args::parse_from(args).into_config(self.functions);
        let executor = match Executor::start(config).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("ember-executor: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "ember-executor {} listening on {}",
            executor.id(),
            executor.address()
        );
        if let Some(http) = executor.http_url() {
            println!("ember-executor metrics on {http}");
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        executor.shutdown().await;
        ExitCode::SUCCESS
    }
}

/// Runs tasks for an Ember scheduler and serves their shuffle data over Arrow Flight.
#[derive(Debug, Parser)]
#[command(name = "ember-executor", version)]
struct Args {
    /// Scheduler URL.
    #[arg(
        long,
        env = "EMBER_SCHEDULER",
        default_value = "http://127.0.0.1:50050"
    )]
    scheduler: String,
    /// Address to bind (gRPC + Flight); port 0 picks a free port.
    #[arg(long, env = "EMBER_EXECUTOR_BIND", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Host name to advertise to the cluster (default: the bind IP).
    #[arg(long, env = "EMBER_EXECUTOR_HOST")]
    advertise_host: Option<String>,
    /// Concurrent tasks (default: number of cores).
    #[arg(long, env = "EMBER_EXECUTOR_SLOTS")]
    slots: Option<usize>,
    /// Memory for task execution and shuffle outputs together, e.g. 4GiB or 512MiB.
    #[arg(long, env = "EMBER_EXECUTOR_MEMORY", default_value = "4GiB", value_parser = parse_size)]
    memory: u64,
    /// Shuffle outputs stay in memory while all memory in use (operators' and
    /// shuffle outputs') stays under this; past it they spill (default:
    /// three quarters of --memory).
    #[arg(long, env = "EMBER_EXECUTOR_SHUFFLE_MEMORY", value_parser = parse_size)]
    shuffle_memory: Option<u64>,
    /// Directory for shuffle and spill files: the executor works in a
    /// directory of its own under it, removed when it stops, and removes
    /// those left by executors that were killed (default: a temporary
    /// directory).
    #[arg(long, env = "EMBER_EXECUTOR_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Executor id (default: random).
    #[arg(long, env = "EMBER_EXECUTOR_ID")]
    id: Option<String>,
    /// Seconds to keep retrying while the scheduler is unreachable at start.
    #[arg(long, env = "EMBER_REGISTER_TIMEOUT_SECS", default_value_t = 60)]
    register_timeout_secs: u64,
    /// Fault injection, for tests only (e.g. `kill@task-end:stage=1:times=1`;
    /// see the `faults` module). Off by default.
    #[arg(long, env = "EMBER_FAULTS", default_value = "", hide = true)]
    faults: String,
    /// Directory that shares the fault budget across executor processes.
    #[arg(long, env = "EMBER_FAULTS_DIR", hide = true)]
    faults_dir: Option<PathBuf>,
    /// Where to serve /metrics and health checks (e.g. 127.0.0.1:9090; off by default).
    #[arg(long, env = "EMBER_EXECUTOR_HTTP")]
    http: Option<SocketAddr>,
}

/// Parses sizes like `4GiB`, `512MiB`, `1G`, `1000000`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB, GiB)")),
    };
    Ok((n * mult as f64) as u64)
}

impl Args {
    fn into_config(self, functions: Functions) -> ExecutorConfig {
        let mut config = ExecutorConfig::new(self.scheduler);
        config.bind = self.bind;
        config.advertise_host = self.advertise_host;
        if let Some(slots) = self.slots {
            config.slots = slots;
        }
        config.memory_bytes = self.memory;
        config.shuffle_memory_bytes = self.shuffle_memory.unwrap_or(self.memory / 4 * 3);
        config.work_dir = self.work_dir;
        config.executor_id = self.id;
        config.register_timeout = std::time::Duration::from_secs(self.register_timeout_secs);
        config.faults = self.faults;
        config.faults_dir = self.faults_dir;
        config.functions = functions;
        config.http = self.http;
        config
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
