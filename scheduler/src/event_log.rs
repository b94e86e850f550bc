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
//! Lines are written by a thread of its own (`Writer`), never under the
//! core's lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use ember_proto::{JobEvent, JobEventKind, JobStatus};
use serde::Serialize;

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
        /// Of `elapsed_ms`: waiting for a slot, and setting up (task
        /// context and plan decoding).
        queued_us: u64,
        setup_us: u64,
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
    /// A stage's plan was chosen from the rows an input stage wrote
    /// (detail: which form, and why).
    PlanChosen {
        job_id: String,
        stage: u32,
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
            | Event::SubqueryValue { job_id, .. }
            | Event::PlanChosen { job_id, .. } => job_id,
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

/// An event and when it was recorded (not when its line is written: the
/// writer takes what arrived together in one batch).
#[derive(Debug)]
struct Stamped {
    at_ms: u64,
    event: Event,
}

/// Where events go (nowhere without `--event-log-dir`).
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    tx: Option<std_mpsc::Sender<Stamped>>,
}

impl EventLog {
    /// Starts the writer thread for `dir`, keeping at most `retention` job
    /// files.
    pub fn start(dir: PathBuf, retention: usize) -> std::io::Result<Self> {
        let mut writer = Writer::open(dir, retention)?;
        let (tx, rx) = std_mpsc::channel::<Stamped>();
        std::thread::Builder::new()
            .name("ember-event-log".into())
            .spawn(move || {
                // Whatever arrived while the last batch was written goes in
                // one write per job file.
                while let Ok(first) = rx.recv() {
                    let batch: Vec<Stamped> = std::iter::once(first).chain(rx.try_iter()).collect();
                    if let Err(e) = writer.write(&batch) {
                        tracing::warn!(error = %e, "could not write the event log");
                    }
                }
            })?;
        Ok(Self { tx: Some(tx) })
    }

    pub fn record(&self, event: Event) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Stamped {
                at_ms: now_ms(),
                event,
            });
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
            if kind == JobEventKind::PlanChosen {
                self.record(Event::PlanChosen {
                    job_id: job_id.clone(),
                    stage: e.stage_id,
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

/// Writes batches of events: each job's file is opened once and kept
/// open until its `finished` line, and the job files are known in the
/// order they were made (the directory is read once, at start), so neither
/// a line nor a finished job costs a scan of the directory.
struct Writer {
    dir: PathBuf,
    retention: usize,
    /// Files of jobs not finished yet, by path.
    open: HashMap<PathBuf, File>,
    /// Every job file, oldest first.
    files: VecDeque<PathBuf>,
}

impl Writer {
    fn open(dir: PathBuf, retention: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let files = job_files(&dir)?.into();
        Ok(Self {
            dir,
            retention,
            open: HashMap::new(),
            files,
        })
    }

    /// Appends `events` (a job's lines in one write) and, if a job finished,
    /// deletes the oldest files of finished jobs beyond the retention limit.
    fn write(&mut self, events: &[Stamped]) -> std::io::Result<()> {
        let mut lines: Vec<(&str, String)> = Vec::new();
        let mut finished = Vec::new();
        for Stamped { at_ms, event } in events {
            let job_id = event.job_id();
            let mut line = serde_json::to_string(&Line {
                v: VERSION,
                at_ms: *at_ms,
                event,
            })
            .map_err(std::io::Error::other)?;
            line.push('\n');
            match lines.iter_mut().find(|(j, _)| *j == job_id) {
                Some((_, text)) => text.push_str(&line),
                None => lines.push((job_id, line)),
            }
            if matches!(event, Event::Finished { .. }) {
                finished.push(job_id);
            }
        }
        for (job_id, text) in lines {
            let path = file(&self.dir, job_id);
            if !self.open.contains_key(&path) {
                let f = OpenOptions::new().create(true).append(true).open(&path)?;
                if !self.files.contains(&path) {
                    self.files.push_back(path.clone());
                }
                self.open.insert(path.clone(), f);
            }
            (&self.open[&path]).write_all(text.as_bytes())?;
        }
        if finished.is_empty() {
            return Ok(());
        }
        for job_id in finished {
            self.open.remove(&file(&self.dir, job_id));
        }
        self.prune()
    }

    /// Deletes the oldest files beyond the retention limit, except those of
    /// jobs still running.
    fn prune(&mut self) -> std::io::Result<()> {
        let mut excess = self.files.len().saturating_sub(self.retention);
        let mut result = Ok(());
        let open = &self.open;
        self.files.retain(|path| {
            if excess == 0 || result.is_err() || open.contains_key(path) {
                return true;
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    result = Err(e);
                    true
                }
                _ => {
                    excess -= 1;
                    false
                }
            }
        });
        result
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(job_id: &str) -> Event {
        Event::Submitted {
            job_id: job_id.into(),
            session: "s".into(),
            description: "SELECT 1".into(),
            stages: 1,
        }
    }

    fn finished(job_id: &str) -> Event {
        Event::Finished {
            job: Box::new(JobView {
                id: job_id.into(),
                session: "s".into(),
                description: "SELECT 1".into(),
                state: "succeeded".into(),
                error: String::new(),
                submitted_at_ms: 0,
                elapsed_ms: 1,
                planning_us: 0,
                subqueries_us: 0,
                result_rows: 1,
                stages: vec![],
                events: vec![],
            }),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn now<const N: usize>(events: [Event; N]) -> Vec<Stamped> {
        events
            .into_iter()
            .map(|event| Stamped {
                at_ms: now_ms(),
                event,
            })
            .collect()
    }

    #[test]
    fn a_line_carries_the_time_its_event_was_recorded_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path().to_path_buf(), 10).unwrap();
        // Recorded 40 ms apart, written in one batch.
        let events = [(1_000, submitted("t")), (1_040, finished("t"))];
        w.write(&events.map(|(at_ms, event)| Stamped { at_ms, event }))
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("job-t.jsonl")).unwrap();
        let at: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["at_ms"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(at, [1_000, 1_040]);
    }

    #[test]
    fn lines_go_to_their_jobs_files_and_old_finished_files_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        // A file of an earlier run, the oldest.
        std::fs::write(dir.path().join("job-old.jsonl"), "").unwrap();
        let mut w = Writer::open(dir.path().to_path_buf(), 2).unwrap();
        // a and b interleaved in one batch; c runs on past the others.
        w.write(&now([submitted("a"), submitted("b"), submitted("c")]))
            .unwrap();
        w.write(&now([finished("a"), finished("b")])).unwrap();
        // Four files, retention 2: the earlier run's and a's go (oldest
        // first), c's stays although it is older than b's: c still runs.
        assert_eq!(names(dir.path()), ["job-b.jsonl", "job-c.jsonl"]);
        let b = std::fs::read_to_string(dir.path().join("job-b.jsonl")).unwrap();
        let events: Vec<String> = b
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events, ["\"submitted\"", "\"finished\""]);

        // A running job's file is kept even past the limit; once it
        // finishes, the oldest finished file goes.
        w.write(&now([submitted("d")])).unwrap();
        w.write(&now([finished("d")])).unwrap();
        assert_eq!(names(dir.path()), ["job-c.jsonl", "job-d.jsonl"]);
        w.write(&now([finished("c")])).unwrap();
        assert_eq!(names(dir.path()), ["job-c.jsonl", "job-d.jsonl"]);
        let c = std::fs::read_to_string(dir.path().join("job-c.jsonl")).unwrap();
        assert_eq!(c.lines().count(), 2);
    }

    #[test]
    fn the_writer_thread_writes_what_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::start(dir.path().to_path_buf(), 10).unwrap();
        log.record(submitted("j"));
        log.record(finished("j"));
        let path = dir.path().join("job-j.jsonl");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("\"event\":\"finished\"")
        {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(load_history(dir.path(), 10).len(), 1);
    }
}
