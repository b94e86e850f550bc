//! Prometheus metrics of an executor (`/metrics` on its `--http` port):
//! tasks by outcome and duration, shuffle output and fetches, spill, memory
//! in use, tasks waiting for a slot, gRPC errors. Counters are bumped as
//! tasks end; gauges are read at scrape time.

use ember_proto::{ExecutorLoad, TaskSucceeded};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Locality {
    pub locality: &'static str,
}

/// A gRPC call that ended in an error: which side saw it (`server`: a call
/// this executor answered; `client`: one it made) and the method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcError {
    pub side: &'static str,
    pub method: String,
}

/// What gauges show, read when scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub memory_pool_used: i64,
    /// The most the pool has had reserved at once since start.
    pub memory_pool_peak: u64,
    /// The process's peak resident memory (0 where the OS does not say).
    pub resident_peak: u64,
    pub shuffle_memory_used: i64,
    pub shuffle_spilled_total: u64,
    pub tasks_running: i64,
    pub slots: i64,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tasks: Family<Label, Counter>,
    task_duration: Histogram,
    output_rows: Counter,
    output_bytes: Counter,
    fetches: Family<Locality, Counter>,
    fetched_bytes: Family<Locality, Counter>,
    spilled: Counter,
    operator_spilled: Counter,
    /// Tasks launched here that wait for a free slot.
    pub tasks_queued: Gauge,
    grpc_errors: Family<GrpcError, Counter>,
    memory_pool_used: Gauge,
    memory_pool_peak: Gauge,
    resident_peak: Gauge,
    shuffle_memory_used: Gauge,
    tasks_running: Gauge,
    slots: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let m = Self {
            registry: Registry::default(),
            tasks: Family::default(),
            task_duration: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            output_rows: Counter::default(),
            output_bytes: Counter::default(),
            fetches: Family::default(),
            fetched_bytes: Family::default(),
            spilled: Counter::default(),
            operator_spilled: Counter::default(),
            tasks_queued: Gauge::default(),
            grpc_errors: Family::default(),
            memory_pool_used: Gauge::default(),
            memory_pool_peak: Gauge::default(),
            resident_peak: Gauge::default(),
            shuffle_memory_used: Gauge::default(),
            tasks_running: Gauge::default(),
            slots: Gauge::default(),
        };
        r.register(
            "ember_executor_tasks",
            "Task attempts ended here, by outcome",
            m.tasks.clone(),
        );
        r.register(
            "ember_executor_task_duration_seconds",
            "Run time of task attempts that succeeded here",
            m.task_duration.clone(),
        );
        r.register(
            "ember_shuffle_written_rows",
            "Rows of map outputs and results written here",
            m.output_rows.clone(),
        );
        r.register(
            "ember_shuffle_written_bytes",
            "Bytes of map outputs and results written here",
            m.output_bytes.clone(),
        );
        r.register(
            "ember_shuffle_fetches",
            "Shuffle buckets read by tasks here, from this executor or another",
            m.fetches.clone(),
        );
        r.register(
            "ember_shuffle_fetched_bytes",
            "Bytes (as Arrow in memory) of the shuffle buckets tasks here read, from this executor or another",
            m.fetched_bytes.clone(),
        );
        r.register(
            "ember_shuffle_spilled_bytes",
            "Bytes of shuffle output spilled to disk",
            m.spilled.clone(),
        );
        r.register(
            "ember_operator_spilled_bytes",
            "Bytes spilled to disk by operators (sorts, joins, aggregations) of tasks here",
            m.operator_spilled.clone(),
        );
        r.register(
            "ember_executor_tasks_queued",
            "Tasks launched here waiting for a free slot",
            m.tasks_queued.clone(),
        );
        r.register(
            "ember_grpc_errors",
            "gRPC calls that ended in an error, answered here (side=server) or made from here (side=client)",
            m.grpc_errors.clone(),
        );
        r.register(
            "ember_memory_pool_used_bytes",
            "Execution memory reserved by running tasks",
            m.memory_pool_used.clone(),
        );
        r.register(
            "ember_memory_pool_peak_bytes",
            "The most memory the executor's pool (operators and shuffle output together, within --memory) has held at once since start",
            m.memory_pool_peak.clone(),
        );
        r.register(
            "ember_process_resident_peak_bytes",
            "The executor process's peak resident memory (VmHWM; 0 where the OS does not report it)",
            m.resident_peak.clone(),
        );
        r.register(
            "ember_shuffle_memory_used_bytes",
            "Shuffle output held in memory",
            m.shuffle_memory_used.clone(),
        );
        r.register(
            "ember_executor_tasks_running",
            "Tasks running now",
            m.tasks_running.clone(),
        );
        r.register("ember_executor_slots", "Task slots", m.slots.clone());
        Self { registry: r, ..m }
    }
}

impl Metrics {
    /// A task attempt ended `failed` or `killed`.
    pub fn task_ended(&self, state: &'static str) {
        self.tasks.get_or_create(&Label { state }).inc();
    }

    /// A task attempt succeeded with figures `s`.
    pub fn task_succeeded(&self, s: &TaskSucceeded) {
        self.task_ended("succeeded");
        self.task_duration.observe(s.elapsed_ms as f64 / 1000.0);
        self.output_rows.inc_by(s.output_rows);
        self.output_bytes.inc_by(s.output_bytes);
        self.operator_spilled.inc_by(s.operator_spilled_bytes);
        for (locality, n, bytes) in [
            ("local", s.local_fetches, s.local_fetch_bytes),
            ("remote", s.remote_fetches, s.remote_fetch_bytes),
        ] {
            let label = Locality { locality };
            self.fetches.get_or_create(&label).inc_by(n);
            self.fetched_bytes.get_or_create(&label).inc_by(bytes);
        }
    }

    /// A gRPC call failed; `side` is `server` or `client`.
    pub fn grpc_error(&self, side: &'static str, method: &str) {
        self.grpc_errors
            .get_or_create(&GrpcError {
                side,
                method: method.to_string(),
            })
            .inc();
    }

    /// What a heartbeat tells the scheduler, with gauges from `now`.
    pub fn load(&self, now: Snapshot) -> ExecutorLoad {
        ExecutorLoad {
            memory_pool_used_bytes: now.memory_pool_used.max(0) as u64,
            memory_pool_peak_bytes: now.memory_pool_peak,
            resident_peak_bytes: now.resident_peak,
            shuffle_memory_bytes: now.shuffle_memory_used.max(0) as u64,
            shuffle_spilled_bytes: now.shuffle_spilled_total,
            tasks_queued: self.tasks_queued.get().max(0) as u64,
        }
    }

    pub fn render(&self, now: Snapshot) -> String {
        self.memory_pool_used.set(now.memory_pool_used);
        self.memory_pool_peak.set(now.memory_pool_peak as i64);
        self.resident_peak.set(now.resident_peak as i64);
        self.shuffle_memory_used.set(now.shuffle_memory_used);
        self.tasks_running.set(now.tasks_running);
        self.slots.set(now.slots);
        let seen = self.spilled.get();
        if now.shuffle_spilled_total > seen {
            self.spilled.inc_by(now.shuffle_spilled_total - seen);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// This process's peak resident set size (`VmHWM` of `/proc/self/status`),
/// or 0 where there is no such file.
pub fn resident_peak_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}
