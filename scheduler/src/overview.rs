//! What the scheduler shows about itself: jobs with their stages, and
//! executors, as plain serializable views. The REST API serves them as
//! JSON, the `ember.*` system tables as rows, and the web UI draws them.
//! Nothing here carries a secret: job descriptions of statements that set
//! one are replaced (see [`describe`]).

use std::time::{SystemTime, UNIX_EPOCH};

use ember_proto::{JobEventKind, JobState};
use serde::Serialize;

use crate::job::{Job, TaskState};
use crate::registry::ExecutorEntry;

/// One job, running or finished.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct JobView {
    pub id: String,
    pub session: String,
    /// The SQL text (or "DataFrame plan").
    pub description: String,
    /// running, succeeded, failed or cancelled.
    pub state: String,
    pub error: String,
    /// Milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    pub elapsed_ms: u64,
    /// Microseconds spent planning the statement before the job started
    /// (its scalar subqueries' jobs not included; `elapsed_ms` starts after).
    #[serde(default)]
    pub planning_us: u64,
    /// Microseconds spent first running the statement's scalar subqueries.
    #[serde(default)]
    pub subqueries_us: u64,
    /// Rows of the result (the final stage's output) once succeeded.
    pub result_rows: u64,
    pub stages: Vec<StageView>,
    /// Job events (recovery, scalar subquery values), as text.
    pub events: Vec<String>,
}

/// One stage of a job.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StageView {
    pub id: u32,
    /// The stages it reads.
    pub inputs: Vec<u32>,
    pub tasks_total: u32,
    pub tasks_done: u32,
    pub tasks_running: u32,
    /// Attempts of its tasks that ended badly (failed, killed, lost).
    #[serde(default)]
    pub tasks_failed: u32,
    /// Rows its tasks read (files, memory, shuffle).
    #[serde(default)]
    pub input_rows: u64,
    pub output_rows: u64,
    pub output_bytes: u64,
    /// Bytes its tasks spilled to disk (shuffle output and operators).
    #[serde(default)]
    pub spilled_bytes: u64,
    pub local_fetches: u64,
    pub remote_fetches: u64,
    /// Bytes (as Arrow in memory) of the shuffle buckets its tasks read
    /// from their own executor and from others.
    #[serde(default)]
    pub local_fetch_bytes: u64,
    #[serde(default)]
    pub remote_fetch_bytes: u64,
    /// Re-runs after lost outputs.
    pub attempt: u32,
    pub task_time_ms: u64,
    pub task_time_max_ms: u64,
    /// Of the task time: setting up tasks (context, plan decoding) and
    /// waiting for slots, summed (µs).
    #[serde(default)]
    pub task_setup_us: u64,
    #[serde(default)]
    pub task_queued_us: u64,
    /// Durations of its succeeded tasks: min, median, p95, max (ms), to
    /// spot stragglers.
    pub task_ms_distribution: [u64; 4],
    pub executors: Vec<String>,
    /// The stage's physical plan.
    pub plan: String,
}

/// min, median, p95 and max of `v` (zeros when empty).
fn distribution(mut v: Vec<u64>) -> [u64; 4] {
    if v.is_empty() {
        return [0; 4];
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    [v[0], at(0.5), at(0.95), v[v.len() - 1]]
}

/// One registered executor.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ExecutorView {
    pub id: String,
    pub address: String,
    pub slots: u32,
    pub slots_busy: u32,
    pub memory_bytes: u64,
    /// `host:port` of its `/metrics`, if it serves one.
    pub http_address: Option<String>,
    /// Figures of its last heartbeat (execution memory reserved by running
    /// tasks, shuffle output held in memory and spilled since start, tasks
    /// waiting there for a slot), and attempts that reported there since it
    /// registered, succeeded or failed.
    pub memory_pool_used_bytes: u64,
    /// The most its pool has held at once, and its peak resident memory,
    /// since it started.
    #[serde(default)]
    pub memory_pool_peak_bytes: u64,
    #[serde(default)]
    pub resident_peak_bytes: u64,
    pub shuffle_memory_bytes: u64,
    pub shuffle_spilled_bytes: u64,
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
    pub tasks_queued: u64,
    pub last_heartbeat_ms_ago: u64,
    /// Its control stream is open (it gets tasks).
    pub connected: bool,
    /// Set for an executor that was lost: why.
    pub lost_reason: Option<String>,
}

/// One task of a job the scheduler still holds.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub job_id: String,
    pub stage: u32,
    pub partition: u32,
    /// pending, running or succeeded.
    pub state: &'static str,
    pub attempt: u64,
    pub executor: String,
    pub rows: u64,
    pub elapsed_ms: u64,
}

/// One open session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    pub session_id: String,
    pub idle_ms: u64,
}

/// How a job's submitted text is shown: statements that carry secrets are
/// not kept.
pub fn describe(sql: &str) -> String {
    let secret = ember_planner::config::mentions_secret(sql);
    if secret {
        "(statement with credentials, not shown)".to_string()
    } else {
        sql.trim().to_string()
    }
}

fn state_name(state: i32) -> &'static str {
    match JobState::try_from(state).unwrap_or(JobState::Running) {
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        _ => "running",
    }
}

impl JobView {
    pub fn of(job: &Job) -> Self {
        let status = job.status();
        let stages: Vec<StageView> = status
            .stages
            .iter()
            .zip(&job.stages)
            .map(|(p, run)| StageView {
                id: p.stage_id,
                inputs: run.inputs.iter().copied().collect(),
                tasks_total: p.tasks_total,
                tasks_done: p.tasks_done,
                tasks_running: p.tasks_running,
                tasks_failed: p.tasks_failed,
                input_rows: p.input_rows,
                output_rows: p.output_rows,
                output_bytes: p.output_bytes,
                spilled_bytes: p.spilled_bytes,
                local_fetches: p.local_fetches,
                remote_fetches: p.remote_fetches,
                local_fetch_bytes: p.local_fetch_bytes,
                remote_fetch_bytes: p.remote_fetch_bytes,
                attempt: p.attempt,
                task_time_ms: p.task_time_ms,
                task_time_max_ms: p.task_time_max_ms,
                task_setup_us: p.task_setup_us,
                task_queued_us: p.task_queued_us,
                task_ms_distribution: distribution(
                    run.tasks
                        .iter()
                        .filter_map(|t| match t {
                            TaskState::Succeeded { stats, .. } => Some(stats.elapsed_ms),
                            _ => None,
                        })
                        .collect(),
                ),
                executors: p.executors.clone(),
                plan: job
                    .stage_plans
                    .get(p.stage_id as usize)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let state = state_name(status.state);
        let result_rows = if state == "succeeded" {
            let rows = stages.last().map_or(0, |s| s.output_rows);
            job.result_limit.map_or(rows, |limit| rows.min(limit))
        } else {
            0
        };
        Self {
            id: job.id.clone(),
            session: job.session_id.clone(),
            description: job.description.clone(),
            state: state.to_string(),
            error: status.error.clone(),
            submitted_at_ms: job
                .submitted_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            elapsed_ms: status.elapsed_ms,
            planning_us: status.planning_us,
            subqueries_us: status.subqueries_us,
            result_rows,
            stages,
            events: status
                .events
                .iter()
                .map(|e| {
                    let kind = JobEventKind::try_from(e.kind).unwrap_or(JobEventKind::Unspecified);
                    format!("{kind:?}: {}", crate::session::event_text(e))
                })
                .collect(),
        }
    }
}

impl ExecutorView {
    pub fn of(e: &ExecutorEntry) -> Self {
        Self {
            id: e.info.executor_id.clone(),
            address: e.info.address.clone(),
            slots: e.info.slots,
            slots_busy: e.running.len() as u32,
            memory_bytes: e.info.memory_bytes,
            http_address: Some(e.info.http_address.clone()).filter(|a| !a.is_empty()),
            memory_pool_used_bytes: e.load.memory_pool_used_bytes,
            memory_pool_peak_bytes: e.load.memory_pool_peak_bytes,
            resident_peak_bytes: e.load.resident_peak_bytes,
            shuffle_memory_bytes: e.load.shuffle_memory_bytes,
            shuffle_spilled_bytes: e.load.shuffle_spilled_bytes,
            tasks_succeeded: e.tasks_succeeded,
            tasks_failed: e.tasks_failed,
            tasks_queued: e.load.tasks_queued,
            last_heartbeat_ms_ago: e.last_seen.elapsed().as_millis() as u64,
            connected: e.connected,
            lost_reason: None,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
