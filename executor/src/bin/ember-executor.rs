//! `ember-executor`: runs Ember tasks for a scheduler.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ember_executor::{Executor, ExecutorConfig};

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
    /// Memory for task execution, e.g. 4GiB or 512MiB.
    #[arg(long, env = "EMBER_EXECUTOR_MEMORY", default_value = "4GiB", value_parser = parse_size)]
    memory: u64,
    /// Memory for shuffle outputs before they spill (default: a quarter of --memory).
    #[arg(long, env = "EMBER_EXECUTOR_SHUFFLE_MEMORY", value_parser = parse_size)]
    shuffle_memory: Option<u64>,
    /// Directory for spill files (default: a temporary directory).
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

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = ExecutorConfig::new(args.scheduler);
    config.bind = args.bind;
    config.advertise_host = args.advertise_host;
    if let Some(slots) = args.slots {
        config.slots = slots;
    }
    config.memory_bytes = args.memory;
    config.shuffle_memory_bytes = args.shuffle_memory.unwrap_or(args.memory / 4);
    config.work_dir = args.work_dir;
    config.executor_id = args.id;
    config.register_timeout = std::time::Duration::from_secs(args.register_timeout_secs);
    config.faults = args.faults;
    config.faults_dir = args.faults_dir;

    let executor = match Executor::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ember-executor: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "ember-executor {} listening on {}",
        executor.id(),
        executor.address()
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    executor.shutdown().await;
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
