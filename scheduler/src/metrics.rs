//! Prometheus metrics of the scheduler (`/metrics`), named the Prometheus
//! way: `ember_tasks_total{state="failed"}`, units in the name. Counters
//! are bumped where the core applies events; gauges are read from the core
//! at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A `state` label (`succeeded`, `failed`, `launched`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// A `locality` label (`local`, `remote`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabel {
    pub locality: &'static str,
}

/// A `kind` label of spilled bytes (`shuffle`: map output past the shuffle
/// budget; `operator`: sorts, joins, aggregations).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// A gRPC call that ended in an error: which side saw it (`server`: a call
/// the scheduler answered; `client`: one it made) and the method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcErrorLabel {
    pub side: &'static str,
    pub method: String,
}

/// Counts a job's end in `jobs` (`ember_jobs_total`).
pub fn job_ended(jobs: &Family<StateLabel, Counter>, state: &'static str) {
    jobs.get_or_create(&StateLabel { state }).inc();
}

/// The scheduler's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub jobs: Family<StateLabel, Counter>,
    pub tasks: Family<StateLabel, Counter>,
    task_duration: Histogram,
    planning_duration: Histogram,
    task_output_rows: Counter,
    task_output_bytes: Counter,
    shuffle_fetches: Family<LocalityLabel, Counter>,
    shuffle_fetched_bytes: Family<LocalityLabel, Counter>,
    spilled: Family<KindLabel, Counter>,
    grpc_errors: Family<GrpcErrorLabel, Counter>,
    executors: Gauge,
    slots: Family<StateLabel, Gauge>,
    jobs_running: Gauge,
    tasks_runnable: Gauge,
    sessions: Gauge,
}

/// What gauges show, read from the core when scraped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub executors: i64,
    pub slots_total: i64,
    pub slots_busy: i64,
    pub jobs_running: i64,
    pub tasks_runnable: i64,
    pub sessions: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<StateLabel, Counter>::default();
        let tasks = Family::<StateLabel, Counter>::default();
        let task_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let planning_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let task_output_rows = Counter::default();
        let task_output_bytes = Counter::default();
        let shuffle_fetches = Family::<LocalityLabel, Counter>::default();
        let shuffle_fetched_bytes = Family::<LocalityLabel, Counter>::default();
        let spilled = Family::<KindLabel, Counter>::default();
        let grpc_errors = Family::<GrpcErrorLabel, Counter>::default();
        let tasks_runnable = Gauge::default();
        let executors = Gauge::default();
        let slots = Family::<StateLabel, Gauge>::default();
        let jobs_running = Gauge::default();
        let sessions = Gauge::default();
        registry.register("ember_jobs", "Jobs ended, by end state", jobs.clone());
        registry.register(
            "ember_tasks",
            "Task attempts launched, and how they ended",
            tasks.clone(),
        );
        registry.register(
            "ember_task_duration_seconds",
            "Run time of succeeded task attempts",
            task_duration.clone(),
        );
        registry.register(
            "ember_job_planning_seconds",
            "Time the scheduler spent planning each job's statement before it started (its scalar subqueries' jobs not included)",
            planning_duration.clone(),
        );
        registry.register(
            "ember_task_output_rows",
            "Rows written by succeeded tasks (map outputs and results)",
            task_output_rows.clone(),
        );
        registry.register(
            "ember_task_output_bytes",
            "Bytes written by succeeded tasks (map outputs and results)",
            task_output_bytes.clone(),
        );
        registry.register(
            "ember_shuffle_fetches",
            "Shuffle buckets read by succeeded tasks, from this executor or another",
            shuffle_fetches.clone(),
        );
        registry.register(
            "ember_shuffle_fetched_bytes",
            "Bytes (as Arrow in memory) of the shuffle buckets succeeded tasks read, from their executor or another",
            shuffle_fetched_bytes.clone(),
        );
        registry.register(
            "ember_spilled_bytes",
            "Bytes spilled to disk by succeeded tasks, by kind (shuffle output, operators)",
            spilled.clone(),
        );
        registry.register(
            "ember_grpc_errors",
            "gRPC calls that ended in an error, answered here (side=server) or made from here (side=client)",
            grpc_errors.clone(),
        );
        registry.register(
            "ember_tasks_runnable",
            "Tasks whose inputs are ready, waiting for a free slot (the scheduler's queue)",
            tasks_runnable.clone(),
        );
        registry.register("ember_executors", "Registered executors", executors.clone());
        registry.register("ember_slots", "Task slots, total and busy", slots.clone());
        registry.register(
            "ember_jobs_running",
            "Jobs running now",
            jobs_running.clone(),
        );
        registry.register("ember_sessions", "Open sessions", sessions.clone());
        Self {
            registry,
            jobs,
            tasks,
            task_duration,
            planning_duration,
            task_output_rows,
            task_output_bytes,
            shuffle_fetches,
            shuffle_fetched_bytes,
            spilled,
            grpc_errors,
            executors,
            slots,
            jobs_running,
            tasks_runnable,
            sessions,
        }
    }
}

impl Metrics {
    /// Counts a succeeded task attempt and its figures.
    pub fn task_succeeded(&self, s: &ember_proto::TaskSucceeded) {
        self.task_ended("succeeded");
        self.task_duration.observe(s.elapsed_ms as f64 / 1000.0);
        self.task_output_rows.inc_by(s.output_rows);
        self.task_output_bytes.inc_by(s.output_bytes);
        for (locality, n, bytes) in [
            ("local", s.local_fetches, s.local_fetch_bytes),
            ("remote", s.remote_fetches, s.remote_fetch_bytes),
        ] {
            let label = LocalityLabel { locality };
            self.shuffle_fetches.get_or_create(&label).inc_by(n);
            self.shuffle_fetched_bytes
                .get_or_create(&label)
                .inc_by(bytes);
        }
        for (kind, n) in [
            ("shuffle", s.shuffle_spilled_bytes),
            ("operator", s.operator_spilled_bytes),
        ] {
            self.spilled.get_or_create(&KindLabel { kind }).inc_by(n);
        }
    }

    /// Counts a task attempt's end (`succeeded`, `failed`, `killed`).
    pub fn job_planned(&self, planning: std::time::Duration) {
        self.planning_duration.observe(planning.as_secs_f64());
    }

    pub fn task_ended(&self, state: &'static str) {
        self.tasks.get_or_create(&StateLabel { state }).inc();
    }

    /// Counts a gRPC call that failed; `side` is `server` or `client`.
    pub fn grpc_error(&self, side: &'static str, method: &str) {
        self.grpc_errors
            .get_or_create(&GrpcErrorLabel {
                side,
                method: method.to_string(),
            })
            .inc();
    }

    /// Counts a job's end (`succeeded`, `failed`, `cancelled`).
    pub fn job_ended(&self, state: &'static str) {
        job_ended(&self.jobs, state);
    }

    /// The text exposition format, gauges set from `now`.
    pub fn render(&self, now: Snapshot) -> String {
        self.executors.set(now.executors);
        self.slots
            .get_or_create(&StateLabel { state: "total" })
            .set(now.slots_total);
        self.slots
            .get_or_create(&StateLabel { state: "busy" })
            .set(now.slots_busy);
        self.jobs_running.set(now.jobs_running);
        self.tasks_runnable.set(now.tasks_runnable);
        self.sessions.set(now.sessions);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
