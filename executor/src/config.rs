//! How an executor is started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ember_planner::Functions;

/// How an executor is started.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Scheduler URL, e.g. `http://127.0.0.1:50050`.
    pub scheduler_url: String,
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Host name other executors and clients use to reach this one
    /// (defaults to the bind IP).
    pub advertise_host: Option<String>,
    /// Tasks run concurrently.
    pub slots: usize,
    /// The executor's memory pool: DataFusion's operators and shuffle
    /// outputs reserve from it.
    pub memory_bytes: u64,
    /// Shuffle outputs stay in memory while the pool holds less than this
    /// (their bytes included); past it they spill to `work_dir`.
    pub shuffle_memory_bytes: u64,
    /// Under which the executor keeps its shuffle and spill files (in a
    /// directory of its own, see `work_dir`); a temporary directory if unset.
    pub work_dir: Option<PathBuf>,
    /// Stable id; a random one if unset.
    pub executor_id: Option<String>,
    /// Cap on one gRPC/Flight message.
    pub max_message_size: usize,
    /// How long to keep trying to reach the scheduler at start. Once
    /// registered, an executor that loses its scheduler keeps trying to
    /// register again for as long as it runs.
    pub register_timeout: Duration,
    /// Fault injection for tests (see [`crate::faults`]); empty: none.
    pub faults: String,
    /// Directory whose token files share the fault budget across processes.
    pub faults_dir: Option<PathBuf>,
    /// User-defined functions tasks may call (the scheduler must know them
    /// too, to plan queries that call them).
    pub functions: Functions,
    /// Where to serve `/metrics` and health checks; `None`: nowhere.
    pub http: Option<SocketAddr>,
}

impl ExecutorConfig {
    pub fn new(scheduler_url: impl Into<String>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            scheduler_url: scheduler_url.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            slots: cores,
            memory_bytes: 4 << 30,
            shuffle_memory_bytes: 3 << 30,
            work_dir: None,
            executor_id: None,
            max_message_size: ember_proto::DEFAULT_MAX_MESSAGE_SIZE,
            register_timeout: Duration::ZERO,
            faults: String::new(),
            faults_dir: None,
            functions: Functions::default(),
            http: None,
        }
    }
}
