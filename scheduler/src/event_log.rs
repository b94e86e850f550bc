//! The event log: one file of versioned JSON lines per job in
//! `--event-log-dir` (`job-<id>.jsonl`): `submitted`, one `task` line per
//! succeeded task attempt with its figures, and `finished` with the job's
//! final view (stages, recovery events). A restarted scheduler reloads the
//! finished jobs into its history, so the UI and API still show them; the
//! oldest files beyond the retention limit are deleted.
//!
//! Lines are written by a background task, never under the core's lock.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    },
    Finished {
        job: Box<JobView>,
    },
}

impl Event {
    fn job_id(&self) -> &str {
        match self {
            Event::Submitted { job_id, .. } | Event::Task { job_id, .. } => job_id,
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
