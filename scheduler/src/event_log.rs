//! The event log: one file of versioned JSON lines per job in
//! `--event-log-dir` (`job-<id>.jsonl`): `submitted`; `stage_started` and
//! `stage_finished` (with the stage's figures) for each run of a stage; one
//! `task` line per succeeded task attempt with its figures; a `recovery`
//! line per recovery event (executor lost, outputs lost and recomputed,
//! task retried, result lost); a `subquery_value` line when the value of a
//! scalar subquery run beside the job arrives; and `finished` with the
//! job's final view. A restarted scheduler reloads the
//! finished jobs into its history, so the UI and API still show them; the
//! oldest files beyond the retention limit are deleted.
//!
//! Lines are written by a background task, never under the core's lock.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use ember_proto::{JobEvent, JobEventKind, JobStatus};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::overview::{JobView, now_ms};

/// Version of the line format.
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Submitted {
        job_id: String,
        session: String,
        description: String,
        stages: usize,
    },
    Task {
        job_id: String,
        stage: u32,
        partition: u32,
        attempt: u64,
        executor: String,
        rows: u64,
        bytes: u64,
        elapsed_ms: u64,
        input_rows: u64,
        local_fetches: u64,
        remote_fetches: u64,
        local_fetch_bytes: u64,
        remote_fetch_bytes: u64,
        shuffle_spilled_bytes: u64,
        operator_spilled_bytes: u64,
    },
    StageStarted {
        job_id: String,
        stage: u32,
        /// Which run of the stage (0 first; more after lost outputs).
        attempt: u32,
        tasks: u32,
    },
    StageFinished {
        job_id: String,
        stage: u32,
        attempt: u32,
        tasks: u32,
        tasks_failed: u32,
        input_rows: u64,
        rows: u64,
        bytes: u64,
        local_fetch_bytes: u64,
        remote_fetch_bytes: u64,
        spilled_bytes: u64,
        task_time_ms: u64,
        task_time_max_ms: u64,
    },
    Recovery {
        job_id: String,
        /// executor_lost, outputs_lost, task_retried, stale_report_ignored
        /// or result_lost.
        kind: String,
        stage: u32,
        executor: String,
        partitions: Vec<u32>,
        attempt: u64,
        detail: String,
    },
    /// The value of a scalar subquery run beside the job arrived (detail:
    /// which, and the value).
    SubqueryValue {
        job_id: String,
        detail: String,
    },
    Finished {
        job: Box<JobView>,
    },
}

impl Event {
    fn job_id(&self) -> &str {
        match self {
            Event::Submitted { job_id, .. }
            | Event::Task { job_id, .. }
            | Event::StageStarted { job_id, .. }
            | Event::StageFinished { job_id, .. }
            | Event::Recovery { job_id, .. }
            | Event::SubqueryValue { job_id, .. } => job_id,
            Event::Finished { job } => &job.id,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    v: u32,
    at_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// Where events go (nowhere without `--event-log-dir`).
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl EventLog {
    /// Starts the writer for `dir`, keeping at most `retention` job files.
    pub fn start(dir: PathBuf, retention: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let dir = dir.clone();
                let finished = matches!(event, Event::Finished { .. });
                let written = tokio::task::spawn_blocking(move || {
                    append(&dir, &event)?;
                    if finished {
                        prune(&dir, retention)?;
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, "could not write the event log");
                }
            }
        });
        Ok(Self { tx: Some(tx) })
    }

    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    /// Records what `status` shows that `logged` has not (stages started or
    /// finished), and `fresh`, the job's new events.
    pub fn progress(&self, logged: &mut Logged, status: &JobStatus, fresh: &[JobEvent]) {
        if self.tx.is_none() {
            return;
        }
        let job_id = &status.job_id;
        for s in &status.stages {
            let run = (s.stage_id, s.attempt);
            if (s.tasks_running > 0 || s.tasks_done > 0) && logged.started.insert(run) {
                self.record(Event::StageStarted {
                    job_id: job_id.clone(),
                    stage: s.stage_id,
                    attempt: s.attempt,
                    tasks: s.tasks_total,
                });
            }
            if s.tasks_done == s.tasks_total && logged.finished.insert(run) {
                self.record(Event::StageFinished {
                    job_id: job_id.clone(),
                    stage: s.stage_id,
                    attempt: s.attempt,
                    tasks: s.tasks_total,
                    tasks_failed: s.tasks_failed,
                    input_rows: s.input_rows,
                    rows: s.output_rows,
                    bytes: s.output_bytes,
                    local_fetch_bytes: s.local_fetch_bytes,
                    remote_fetch_bytes: s.remote_fetch_bytes,
                    spilled_bytes: s.spilled_bytes,
                    task_time_ms: s.task_time_ms,
                    task_time_max_ms: s.task_time_max_ms,
                });
            }
        }
        for e in fresh {
            let kind = JobEventKind::try_from(e.kind).unwrap_or(JobEventKind::Unspecified);
            if kind == JobEventKind::SubqueryValue {
                self.record(Event::SubqueryValue {
                    job_id: job_id.clone(),
                    detail: e.detail.clone(),
                });
                continue;
            }
            self.record(Event::Recovery {
                job_id: job_id.clone(),
                kind: kind
                    .as_str_name()
                    .trim_start_matches("JOB_EVENT_KIND_")
                    .to_ascii_lowercase(),
                stage: e.stage_id,
                executor: e.executor_id.clone(),
                partitions: e.partitions.clone(),
                attempt: e.attempt,
                detail: e.detail.clone(),
            });
        }
    }
}

/// What of one job's progress is in the log already.
#[derive(Debug, Default)]
pub struct Logged {
    /// Runs of stages, (stage, attempt), logged as started / finished.
    started: HashSet<(u32, u32)>,
    finished: HashSet<(u32, u32)>,
}

fn file(dir: &Path, job_id: &str) -> PathBuf {
    dir.join(format!("job-{job_id}.jsonl"))
}

fn append(dir: &Path, event: &Event) -> std::io::Result<()> {
    let line = serde_json::to_string(&Line {
        v: VERSION,
        at_ms: now_ms(),
        event,
    })
    .map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file(dir, event.job_id()))?;
    writeln!(f, "{line}")
}

/// Job files, oldest first.
fn job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn prune(dir: &Path, retention: usize) -> std::io::Result<()> {
    let files = job_files(dir)?;
    for old in files.iter().take(files.len().saturating_sub(retention)) {
        std::fs::remove_file(old)?;
    }
    Ok(())
}

/// The finished jobs of an earlier run, oldest first (at most `keep`).
pub fn load_history(dir: &Path, keep: usize) -> VecDeque<JobView> {
    let mut jobs = VecDeque::new();
    let Ok(files) = job_files(dir) else {
        return jobs;
    };
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let finished = text.lines().rev().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            if v["v"] != VERSION || v["event"] != "finished" {
                return None;
            }
            serde_json::from_value::<JobView>(v["job"].clone()).ok()
        });
        if let Some(job) = finished {
            if jobs.len() >= keep {
                jobs.pop_front();
            }
            jobs.push_back(job);
        }
    }
    jobs
}
