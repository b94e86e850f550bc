//! # ember-scheduler
//!
//! The scheduler owns sessions (catalog + settings), plans SQL into stage
//! DAGs, and drives every job to completion: it tracks the job → stage → task
//! state ([`job`]), keeps the registry of executors and their free slots, and
//! pushes runnable tasks into free slots the moment they appear ([`core`],
//! over the executor [`registry`]).
//! Clients watch a job's progress as a stream of snapshots and, once it
//! succeeds, fetch the result partitions straight from the executors over
//! Arrow Flight: results never pass through the scheduler.
//!
//! What it must never do: import the executor (they meet only in
//! `ember-proto`), or turn a typed failure into a string before acting on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let scheduler = ember_scheduler::Scheduler::start(ember_scheduler::SchedulerConfig::default()).await?;
//! println!("scheduler listening on {}", scheduler.url());
//! # Ok(()) }
//! ```

mod cli;
pub mod commit;
pub mod core;
pub mod error;
pub mod event_log;
mod http;
pub mod job;
pub mod metrics;
pub mod overview;
pub mod registry;
mod service;
pub mod session;
mod subqueries;
pub mod system_tables;

use std::net::SocketAddr;
use std::time::Duration;

pub use cli::SchedulerBuilder;
pub use ember_planner::Functions;
pub use error::{Result, SchedulerError};
pub use service::Scheduler;

/// How a scheduler is started.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// How often executors heartbeat.
    pub heartbeat_interval: Duration,
    /// An executor silent this long is declared lost. Only hosts that vanish
    /// without closing their connections need it: a process that dies breaks
    /// its control stream and is declared lost at once.
    pub executor_timeout: Duration,
    /// A session unused this long (and with no job left) is closed.
    pub session_idle_timeout: Duration,
    /// Finished jobs whose result was never fetched are freed after this.
    pub result_ttl: Duration,
    /// Cap on concurrently running jobs; more are refused.
    pub max_running_jobs: usize,
    /// Cap on open sessions; more are refused.
    pub max_sessions: usize,
    /// Cap on one gRPC message, both directions.
    pub max_message_size: usize,
    /// Target partitions for new sessions; 0 means the cluster's total slots
    /// when the session opens (at least 2).
    pub default_partitions: usize,
    /// User-defined functions every session can call (executors must have
    /// them too).
    pub functions: Functions,
    /// Where to serve HTTP (REST API, `/metrics`, health); `None`: nowhere.
    pub http: Option<SocketAddr>,
    /// Where to write the event log (and read finished jobs back from at
    /// start); `None`: no event log.
    pub event_log_dir: Option<std::path::PathBuf>,
    /// Job files the event log keeps.
    pub event_log_retention: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 50050)),
            heartbeat_interval: Duration::from_millis(1000),
            executor_timeout: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(1800),
            result_ttl: Duration::from_secs(600),
            max_running_jobs: 64,
            max_sessions: 1024,
            max_message_size: ember_proto::DEFAULT_MAX_MESSAGE_SIZE,
            default_partitions: 0,
            functions: Functions::default(),
            http: None,
            event_log_dir: None,
            event_log_retention: 1000,
        }
    }
}
