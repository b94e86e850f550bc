//! `ember-scheduler`: the Ember cluster's scheduler.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ember_scheduler::{Scheduler, SchedulerConfig};

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
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = SchedulerConfig {
        bind: args.bind,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms.max(50)),
        executor_timeout: Duration::from_secs(args.executor_timeout_secs.max(1)),
        session_idle_timeout: Duration::from_secs(args.session_idle_timeout_secs.max(1)),
        max_sessions: args.max_sessions.max(1),
        result_ttl: Duration::from_secs(args.result_ttl_secs.max(1)),
        max_running_jobs: args.max_running_jobs.max(1),
        max_message_size: args.max_message_size,
        default_partitions: args.partitions,
    };
    let scheduler = match Scheduler::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ember-scheduler: cannot bind {}: {e}", args.bind);
            std::process::exit(1);
        }
    };
    println!("ember-scheduler listening on {}", scheduler.url());
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
}
