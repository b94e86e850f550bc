//! The job → stage → task state machine, kept apart from the gRPC plumbing
//! that feeds it events.
//!
//! ```text
//!  task:  Pending ──launch(attempt n)──▶ Running(n) ──succeeded(n)──▶ Succeeded(n)
//!            ▲                             │                             │
//!            ├── failed(n), lost(n), ──────┘                             │
//!            │   executor lost                 output lost: executor     │
//!            │   (counts toward task_max_attempts)   gone, or a fetch    │
//!            └────────────────────────────────────── failure naming n ───┘
//!                                                    (counts toward stage_max_attempts)
//!
//!  job:   Running ──final stage done──▶ Succeeded ──a final partition lost
//!            ▲                              │        before the client fetched it
//!            └──────────────────────────────┘
//!         Running ──attempts exhausted / not retryable──▶ Failed
//!         Running ──cancel──▶ Cancelled
//! ```
//!
//! Every launch is an *attempt* with an id unique in the scheduler. A report
//! is applied only to the attempt it names; a report about any other attempt
//! is stale (the task was re-run meanwhile) and is ignored, logged and
//! recorded as an event. A map output is invalidated only by evidence about
//! the attempt that produced it.
//!
//! A stage is runnable when every stage it reads has all its outputs, and
//! the value of every scalar subquery its plan reads is known (those run as
//! jobs of their own beside this one; see `ember_planner::subquery_value`).
//! Lost
//! outputs make their tasks Pending again, so recomputation follows the
//! lineage on its own: a consumer waits until its inputs are whole again, and
//! if those inputs' own inputs were lost too, they are recomputed first.
//!
//! Every recovery action is a [`JobEvent`] in the job's status (bounded).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_planner::StageDag;
use ember_proto::{
    FetchTicket, JobEvent, JobEventKind, JobState, JobStatus, MapOutputLocation, ResultLocation,
    StageInput, StageProgress, TaskFailure, TaskSucceeded, task_failure,
};
use prost::Message;

use crate::commit::Output;

/// Events kept per job; later ones are counted, not kept.
pub const MAX_EVENTS: usize = 200;

/// An executor as far as a task is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorRef {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    Pending,
    Running {
        executor: ExecutorRef,
        attempt: u64,
    },
    Succeeded {
        executor: ExecutorRef,
        attempt: u64,
        stats: TaskSucceeded,
    },
}

impl TaskState {
    fn attempt(&self) -> Option<u64> {
        match self {
            TaskState::Pending => None,
            TaskState::Running { attempt, .. } | TaskState::Succeeded { attempt, .. } => {
                Some(*attempt)
            }
        }
    }
}

/// One stage of a running job.
#[derive(Debug)]
pub struct StageRun {
    pub id: u32,
    pub inputs: BTreeSet<u32>,
    /// Serialized stage plan, shared by every launch.
    pub plan: Arc<Vec<u8>>,
    /// Bumped each time lost outputs force the stage to run again (bounded by
    /// `stage_max_attempts`; sent with launches for the logs).
    pub attempt: u32,
    pub tasks: Vec<TaskState>,
    /// Attempts per partition that ended badly (failed, killed, lost with
    /// their executor, vanished); bounded by `task_max_attempts`.
    pub failures: Vec<u32>,
    /// The scalar subqueries whose values the plan reads.
    pub awaits: BTreeSet<u32>,
    /// The other form of the plan, for when an input stage turned out
    /// small (see `ember_planner::choice`).
    pub adaptive: Option<AdaptiveRun>,
}

/// A stage plan's rewritten form and when it runs.
#[derive(Debug)]
pub struct AdaptiveRun {
    pub plan: Arc<Vec<u8>>,
    /// It runs when this stage wrote at most `max_rows` rows.
    pub decided_by: u32,
    pub max_rows: u64,
    /// Made at the stage's first launch and kept: both forms give the same
    /// rows, so attempts of either mix freely, but one choice reads better.
    pub chosen: Option<bool>,
}

impl StageRun {
    /// The plan its tasks run: the rewritten form if it was chosen.
    pub fn launch_plan(&self) -> &Arc<Vec<u8>> {
        match &self.adaptive {
            Some(a) if a.chosen == Some(true) => &a.plan,
            _ => &self.plan,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.tasks
            .iter()
            .all(|t| matches!(t, TaskState::Succeeded { .. }))
    }

    fn count(&self, pred: impl Fn(&TaskState) -> bool) -> u32 {
        self.tasks.iter().filter(|t| pred(t)).count() as u32
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    Running,
    /// A write job's tasks are done; its files are being published. Nothing
    /// can change the outcome now (not even a cancel): the job ends
    /// succeeded or, if publishing fails, failed.
    Committing,
    Succeeded,
    Failed(String),
    Cancelled,
}

/// Limits a job runs under.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub task_max_attempts: u32,
    pub stage_max_attempts: u32,
    /// A final partition encoded in at most this many bytes comes with its
    /// task's report (`ember.direct_result_max_bytes`).
    pub direct_result_max_bytes: u64,
}

/// What an event did to its job.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// Stale or duplicate report: nothing changed.
    Ignored,
    Progressed,
    JobSucceeded,
    JobFailed,
    /// A write job's tasks are done: publish its files.
    Commit,
    /// A succeeded job lost a result partition and runs again.
    Reopened,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub token: String,
    /// The session that submitted it.
    pub session_id: String,
    pub settings: Arc<HashMap<String, String>>,
    pub stages: Vec<StageRun>,
    pub phase: JobPhase,
    pub limits: JobLimits,
    pub started: Instant,
    pub finished: Option<Instant>,
    /// Every executor that ran a task of this job (to free its data there).
    pub executors_used: BTreeSet<String>,
    /// Set for jobs that write files.
    pub write: Option<WriteState>,
    /// What was submitted, for people (SQL text, or "DataFrame"); statements
    /// that carry secrets are not kept.
    pub description: String,
    /// Wall-clock submission time.
    pub submitted_at: std::time::SystemTime,
    /// Each stage's physical plan as text (for people).
    pub stage_plans: Vec<String>,
    /// The rows the client keeps of the final stage's output, when it
    /// merges a sorted result with a limit (see `ResultMerge`).
    pub result_limit: Option<u64>,
    /// How long the statement took to plan and to run its scalar subqueries
    /// before this job started (see `PlanningTime`).
    pub planning: PlanningTime,
    /// The values of the scalar subqueries running beside this job, as
    /// they arrive (datafusion-proto bytes, sent with every launch).
    pub subquery_values: HashMap<u32, Vec<u8>>,
    events: Vec<JobEvent>,
    events_dropped: u32,
}

/// Where a statement's time went on the scheduler before its job started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlanningTime {
    /// Parsing, DataFusion's optimizers, stage cutting and plan encoding
    /// (the scalar subqueries' jobs not included).
    pub planning: Duration,
    /// The statement's uncorrelated scalar subqueries: running those that
    /// must run first, each as a job of its own, and waiting for those that
    /// run beside this job (see `Job::on_subquery_value`) to be submitted,
    /// where their planning, which goes on while the statement's does,
    /// took longer.
    pub subqueries: Duration,
}

/// What a write job tracks to publish its files exactly once.
#[derive(Debug)]
pub struct WriteState {
    pub output: Output,
    /// For each write partition, the attempt whose files are the ones to
    /// publish: the latest accepted success (files are durable, so this is
    /// kept even when the executor that wrote them is lost).
    pub accepted: BTreeMap<u32, u64>,
    /// Published already (a job reopened to recompute a lost result must
    /// not publish again).
    pub committed: bool,
}

impl Job {
    pub fn new(
        id: String,
        token: String,
        session_id: String,
        dag: &StageDag,
        plans: Vec<Vec<u8>>,
        settings: Arc<HashMap<String, String>>,
        limits: JobLimits,
    ) -> Self {
        let stages = dag
            .stages()
            .iter()
            .zip(plans)
            .map(|(s, plan)| StageRun {
                id: s.id,
                inputs: s.inputs.clone(),
                plan: Arc::new(plan),
                attempt: 0,
                tasks: vec![TaskState::Pending; s.partitions],
                failures: vec![0; s.partitions],
                awaits: BTreeSet::new(),
                adaptive: None,
            })
            .collect();
        Self {
            id,
            token,
            session_id,
            settings,
            stages,
            phase: JobPhase::Running,
            limits,
            started: Instant::now(),
            finished: None,
            executors_used: BTreeSet::new(),
            write: None,
            description: String::new(),
            submitted_at: std::time::SystemTime::now(),
            stage_plans: vec![],
            result_limit: None,
            planning: PlanningTime::default(),
            subquery_values: HashMap::new(),
            events: vec![],
            events_dropped: 0,
        }
    }

    /// Describes the job for people (UI, API, system tables): what was
    /// submitted, and each stage's plan.
    pub fn with_description(mut self, description: impl Into<String>, dag: &StageDag) -> Self {
        self.description = description.into();
        self.stage_plans = dag.stages().iter().map(|s| s.plan_text(false)).collect();
        self.result_limit = dag.result_merge().and_then(|m| m.fetch).map(|f| f as u64);
        self
    }

    /// Gives each stage the encoded rewritten form of its plan, if the DAG
    /// has one (`plans`: one per stage, in order).
    pub fn with_adaptive(mut self, dag: &StageDag, plans: Vec<Option<Vec<u8>>>) -> Self {
        for ((run, stage), plan) in self.stages.iter_mut().zip(dag.stages()).zip(plans) {
            run.adaptive = stage
                .adaptive
                .as_ref()
                .zip(plan)
                .map(|(a, plan)| AdaptiveRun {
                    plan: Arc::new(plan),
                    decided_by: a.decided_by,
                    max_rows: a.max_rows,
                    chosen: None,
                });
        }
        self
    }

    /// Chooses the form of `stage`'s plan its launches carry, the first
    /// time it is launched: the rewritten one if the stage deciding wrote
    /// at most its limit of rows (it is complete: the stage reads it).
    pub fn choose_plan(&mut self, stage: u32) {
        let Some(a) = self.stages[stage as usize].adaptive.as_ref() else {
            return;
        };
        if a.chosen.is_some() {
            return;
        }
        let (decided_by, max_rows) = (a.decided_by, a.max_rows);
        let rows: u64 = self.stages[decided_by as usize]
            .tasks
            .iter()
            .map(|t| match t {
                TaskState::Succeeded { stats, .. } => stats.output_rows,
                _ => 0,
            })
            .sum();
        let small = rows <= max_rows;
        if let Some(a) = self.stages[stage as usize].adaptive.as_mut() {
            a.chosen = Some(small);
        }
        let detail = if small {
            format!("the rewritten form: stage {decided_by} wrote {rows} rows, at most {max_rows}")
        } else {
            format!("the plain form: stage {decided_by} wrote {rows} rows, more than {max_rows}")
        };
        self.event(
            JobEventKind::PlanChosen,
            JobEvent {
                stage_id: stage,
                detail,
                ..Default::default()
            },
        );
    }

    /// Records how long the statement took to plan (see `PlanningTime`).
    pub fn with_planning(mut self, planning: PlanningTime) -> Self {
        self.planning = planning;
        self
    }

    /// Makes each stage wait for the values of the scalar subqueries its
    /// plan reads (one set per stage, in order).
    pub fn with_awaited(mut self, awaits: Vec<BTreeSet<u32>>) -> Self {
        for (stage, awaits) in self.stages.iter_mut().zip(awaits) {
            stage.awaits = awaits;
        }
        self
    }

    /// The value of scalar subquery `id` arrived (`shown` is it, for
    /// people): the stages waiting only for it may run. Progressed only the
    /// first time, and only while the job runs.
    pub fn on_subquery_value(&mut self, id: u32, value: Vec<u8>, shown: &str) -> Transition {
        if !self.is_running() || self.subquery_values.contains_key(&id) {
            return Transition::Ignored;
        }
        self.subquery_values.insert(id, value);
        self.event(
            JobEventKind::SubqueryValue,
            JobEvent {
                detail: format!("scalar subquery {id} = {shown}"),
                ..Default::default()
            },
        );
        Transition::Progressed
    }

    /// Makes this a write job publishing its files to `output`.
    pub fn with_output(mut self, output: Output) -> Self {
        self.write = Some(WriteState {
            output,
            accepted: BTreeMap::new(),
            committed: false,
        });
        self
    }

    pub fn is_running(&self) -> bool {
        self.phase == JobPhase::Running
    }

    fn final_stage(&self) -> u32 {
        (self.stages.len() - 1) as u32
    }

    /// The largest result a task of `stage` sends with its report: none
    /// but the final stage's.
    pub fn direct_result_max_bytes(&self, stage: u32) -> u64 {
        if stage == self.final_stage() {
            self.limits.direct_result_max_bytes
        } else {
            0
        }
    }

    /// The executor holding the output of `stage`'s partition `task`, if
    /// one does: a result that came with its report is held by the
    /// scheduler.
    fn holder<'t>(&self, stage: usize, task: &'t TaskState) -> Option<&'t str> {
        match task {
            TaskState::Succeeded {
                executor, stats, ..
            } if stage as u32 != self.final_stage() || stats.direct_result.is_empty() => {
                Some(&executor.id)
            }
            _ => None,
        }
    }

    /// Recovery events so far, oldest first.
    pub fn events(&self) -> &[JobEvent] {
        &self.events
    }

    fn event(&mut self, kind: JobEventKind, event: JobEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events_dropped += 1;
            return;
        }
        self.events.push(JobEvent {
            at_ms: self.started.elapsed().as_millis() as u64,
            kind: kind as i32,
            ..event
        });
    }

    /// Pending tasks whose inputs are all available, stage by stage: first
    /// those of stages already under way, then the others. A stage's reader
    /// waits for its slowest map task, so a slot that frees up finishes a
    /// started stage before opening another: TPC-H q17 at SF 10 left one
    /// executor idle for 2.4 s when the other ran a newly ready stage's two
    /// short tasks ahead of the started stage's long one.
    pub fn runnable_tasks(&self) -> Vec<(u32, u32)> {
        if !self.is_running() {
            return vec![];
        }
        let ready = |stage: &&StageRun| {
            stage
                .inputs
                .iter()
                .all(|i| self.stages[*i as usize].is_complete())
                && stage
                    .awaits
                    .iter()
                    .all(|id| self.subquery_values.contains_key(id))
        };
        let started = |stage: &&StageRun| stage.tasks.iter().any(|t| *t != TaskState::Pending);
        let (under_way, fresh): (Vec<&StageRun>, Vec<&StageRun>) =
            self.stages.iter().filter(ready).partition(started);
        under_way
            .into_iter()
            .chain(fresh)
            .flat_map(|stage| {
                stage
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| **t == TaskState::Pending)
                    .map(|(p, _)| (stage.id, p as u32))
            })
            .collect()
    }

    pub fn mark_running(
        &mut self,
        stage: u32,
        partition: u32,
        executor: ExecutorRef,
        attempt: u64,
    ) {
        self.executors_used.insert(executor.id.clone());
        self.stages[stage as usize].tasks[partition as usize] =
            TaskState::Running { executor, attempt };
    }

    /// Map output locations of `stage` (complete stages only).
    pub fn locations(&self, stage: u32) -> Vec<MapOutputLocation> {
        self.stages[stage as usize]
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(p, t)| match t {
                TaskState::Succeeded {
                    executor, attempt, ..
                } => Some(MapOutputLocation {
                    map_partition: p as u32,
                    executor_id: executor.id.clone(),
                    address: executor.address.clone(),
                    attempt: *attempt,
                }),
                _ => None,
            })
            .collect()
    }

    /// The inputs a task of `stage` needs to know about.
    pub fn stage_inputs(&self, stage: u32) -> Vec<StageInput> {
        self.stages[stage as usize]
            .inputs
            .iter()
            .map(|i| StageInput {
                stage_id: *i,
                locations: self.locations(*i),
            })
            .collect()
    }

    /// The task `attempt` claims to be, if that attempt is the one running
    /// there now. Anything else is a stale or duplicate report, or ids from
    /// the network that name no task: recorded and ignored.
    fn current(
        &mut self,
        stage: u32,
        partition: u32,
        attempt: u64,
        what: &str,
    ) -> Option<&mut TaskState> {
        let state = self
            .stages
            .get(stage as usize)
            .and_then(|s| s.tasks.get(partition as usize));
        match state {
            Some(TaskState::Running { attempt: a, .. }) if *a == attempt => {}
            other => {
                let current = other.and_then(TaskState::attempt);
                tracing::info!(job = %self.id, stage, partition, attempt, ?current, what, "stale report ignored");
                if self.is_running() {
                    self.event(
                        JobEventKind::StaleReportIgnored,
                        JobEvent {
                            stage_id: stage,
                            partitions: vec![partition],
                            attempt,
                            detail: format!(
                                "{what} of attempt {attempt}; current attempt: {}",
                                current.map_or("none".into(), |c| c.to_string())
                            ),
                            ..Default::default()
                        },
                    );
                }
                return None;
            }
        }
        self.stages
            .get_mut(stage as usize)
            .and_then(|s| s.tasks.get_mut(partition as usize))
    }

    pub fn on_task_succeeded(
        &mut self,
        stage: u32,
        partition: u32,
        attempt: u64,
        stats: TaskSucceeded,
    ) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let Some(task) = self.current(stage, partition, attempt, "success") else {
            return Transition::Ignored;
        };
        let TaskState::Running { executor, attempt } = task.clone() else {
            return Transition::Ignored;
        };
        *task = TaskState::Succeeded {
            executor,
            attempt,
            stats,
        };
        if let Some(w) = &mut self.write
            && w.output.target.stage == stage
        {
            w.accepted.insert(partition, attempt);
        }
        if stage == self.final_stage() && self.stages[stage as usize].is_complete() {
            if self.write.as_ref().is_some_and(|w| !w.committed) {
                self.phase = JobPhase::Committing;
                return Transition::Commit;
            }
            self.finish(JobPhase::Succeeded);
            return Transition::JobSucceeded;
        }
        Transition::Progressed
    }

    /// Publishing the files ended with `result`.
    pub fn on_committed(&mut self, result: std::result::Result<(), String>) -> Transition {
        if self.phase != JobPhase::Committing {
            return Transition::Ignored;
        }
        self.phase = JobPhase::Running;
        match result {
            Ok(()) => {
                if let Some(w) = &mut self.write {
                    w.committed = true;
                }
                self.finish(JobPhase::Succeeded);
                Transition::JobSucceeded
            }
            Err(e) => {
                self.finish(JobPhase::Failed(format!(
                    "could not publish the written files: {e}"
                )));
                Transition::JobFailed
            }
        }
    }

    pub fn on_task_failed(
        &mut self,
        stage: u32,
        partition: u32,
        attempt: u64,
        failure: &TaskFailure,
    ) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let Some(task) = self.current(stage, partition, attempt, "failure") else {
            return Transition::Ignored;
        };
        let executor = match task {
            TaskState::Running { executor, .. } => executor.id.clone(),
            _ => String::new(),
        };
        *task = TaskState::Pending;
        match &failure.reason {
            Some(task_failure::Reason::FetchFailed(f)) => {
                let input = self.stages[stage as usize].inputs.contains(&f.map_stage);
                if !input {
                    // Not evidence about anything this task reads: a bug.
                    self.finish(JobPhase::Failed(format!(
                        "task {stage}.{partition} reported a fetch failure for stage {}, which it does not read: {}",
                        f.map_stage, failure.message
                    )));
                    return Transition::JobFailed;
                }
                let lost = self.lose_output(
                    f.map_stage,
                    f.map_partition,
                    f.map_attempt,
                    &failure.message,
                );
                if !lost {
                    // The output was recomputed already: this reader just
                    // runs again, with the new location.
                    return self.retry(stage, partition, attempt, &executor, &failure.message);
                }
                self.event(
                    JobEventKind::TaskRetried,
                    JobEvent {
                        executor_id: executor,
                        stage_id: stage,
                        partitions: vec![partition],
                        attempt,
                        detail: "its input was lost; runs again once recomputed".into(),
                        ..Default::default()
                    },
                );
                self.check_stage_attempts(f.map_stage, &failure.message)
            }
            Some(task_failure::Reason::Execution(e)) if !e.retryable => {
                self.finish(JobPhase::Failed(failure.message.clone()));
                Transition::JobFailed
            }
            Some(task_failure::Reason::Execution(_)) | Some(task_failure::Reason::Killed(_)) => {
                self.retry(stage, partition, attempt, &executor, &failure.message)
            }
            None => {
                self.finish(JobPhase::Failed(failure.message.clone()));
                Transition::JobFailed
            }
        }
    }

    /// An attempt the scheduler believed running is gone without a report
    /// (its executor no longer lists it, or refused its launch).
    pub fn on_attempt_lost(
        &mut self,
        stage: u32,
        partition: u32,
        attempt: u64,
        why: &str,
    ) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let Some(task) = self.current(stage, partition, attempt, "loss") else {
            return Transition::Ignored;
        };
        let executor = match task {
            TaskState::Running { executor, .. } => executor.id.clone(),
            _ => String::new(),
        };
        *task = TaskState::Pending;
        self.retry(stage, partition, attempt, &executor, why)
    }

    /// Counts a bad end of `attempt` (already back to Pending) and fails the
    /// job once the partition has used up its attempts.
    fn retry(
        &mut self,
        stage: u32,
        partition: u32,
        attempt: u64,
        executor: &str,
        why: &str,
    ) -> Transition {
        let failures = {
            let f = &mut self.stages[stage as usize].failures[partition as usize];
            *f += 1;
            *f
        };
        if failures >= self.limits.task_max_attempts {
            self.finish(JobPhase::Failed(format!(
                "task {stage}.{partition} failed {failures} times (ember.task_max_attempts = {}); last: {why}",
                self.limits.task_max_attempts
            )));
            return Transition::JobFailed;
        }
        self.event(
            JobEventKind::TaskRetried,
            JobEvent {
                executor_id: executor.to_string(),
                stage_id: stage,
                partitions: vec![partition],
                attempt,
                detail: why.to_string(),
                ..Default::default()
            },
        );
        Transition::Progressed
    }

    /// Invalidates map output (`stage`, `partition`) if `attempt` produced
    /// the current one. Returns whether it did.
    fn lose_output(&mut self, stage: u32, partition: u32, attempt: u64, why: &str) -> bool {
        let Some(task) = self
            .stages
            .get_mut(stage as usize)
            .and_then(|s| s.tasks.get_mut(partition as usize))
        else {
            return false;
        };
        let executor = match task {
            TaskState::Succeeded {
                executor,
                attempt: a,
                ..
            } if *a == attempt => executor.id.clone(),
            _ => return false,
        };
        *task = TaskState::Pending;
        self.stages[stage as usize].attempt += 1;
        self.event(
            JobEventKind::OutputsLost,
            JobEvent {
                executor_id: executor,
                stage_id: stage,
                partitions: vec![partition],
                attempt,
                detail: why.to_string(),
                ..Default::default()
            },
        );
        true
    }

    fn check_stage_attempts(&mut self, stage: u32, why: &str) -> Transition {
        let attempts = self.stages[stage as usize].attempt;
        if attempts >= self.limits.stage_max_attempts {
            self.finish(JobPhase::Failed(format!(
                "stage {stage} lost its outputs {attempts} times (ember.stage_max_attempts = {}); last: {why}",
                self.limits.stage_max_attempts
            )));
            return Transition::JobFailed;
        }
        Transition::Progressed
    }

    /// `executor` is gone: its running tasks go back to Pending (each counts
    /// as a failed attempt), and the outputs it held are recomputed if
    /// something still needs them. A succeeded job whose result partitions
    /// were there runs again to recompute them.
    pub fn on_executor_lost(&mut self, executor: &str, reason: &str) -> Transition {
        if !self.executors_used.contains(executor) {
            return Transition::Ignored;
        }
        let mut reopened = false;
        if self.phase == JobPhase::Succeeded {
            let final_stage = self.final_stage();
            let held = self.stages[final_stage as usize]
                .tasks
                .iter()
                .any(|t| self.holder(final_stage as usize, t) == Some(executor));
            if !held {
                return Transition::Ignored;
            }
            self.reopen();
            reopened = true;
        }
        if !self.is_running() {
            return Transition::Ignored;
        }
        self.event(
            JobEventKind::ExecutorLost,
            JobEvent {
                executor_id: executor.to_string(),
                detail: reason.to_string(),
                ..Default::default()
            },
        );
        let why = format!("executor {executor} lost: {reason}");
        for s in 0..self.stages.len() {
            let running: Vec<(u32, u64)> = self.stages[s]
                .tasks
                .iter()
                .enumerate()
                .filter_map(|(p, t)| match t {
                    TaskState::Running {
                        executor: e,
                        attempt,
                    } if e.id == executor => Some((p as u32, *attempt)),
                    _ => None,
                })
                .collect();
            for (p, attempt) in running {
                self.stages[s].tasks[p as usize] = TaskState::Pending;
                if self.retry(s as u32, p, attempt, executor, &why) == Transition::JobFailed {
                    return Transition::JobFailed;
                }
            }
        }
        // Consumers first: an output lost there makes its own inputs needed
        // again. Repeat until nothing more is lost (the DAG is small).
        loop {
            let mut lost_any = false;
            for s in (0..self.stages.len()).rev() {
                let needed = s as u32 == self.final_stage()
                    || self
                        .stages
                        .iter()
                        .any(|c| c.inputs.contains(&(s as u32)) && !c.is_complete());
                if !needed {
                    continue;
                }
                let held: Vec<u32> = self.stages[s]
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| self.holder(s, t) == Some(executor))
                    .map(|(p, _)| p as u32)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                lost_any = true;
                for p in &held {
                    self.stages[s].tasks[*p as usize] = TaskState::Pending;
                }
                self.stages[s].attempt += 1;
                self.event(
                    if reopened && s as u32 == self.final_stage() {
                        JobEventKind::ResultLost
                    } else {
                        JobEventKind::OutputsLost
                    },
                    JobEvent {
                        executor_id: executor.to_string(),
                        stage_id: s as u32,
                        partitions: held,
                        detail: why.clone(),
                        ..Default::default()
                    },
                );
                if self.check_stage_attempts(s as u32, &why) == Transition::JobFailed {
                    return Transition::JobFailed;
                }
            }
            if !lost_any {
                break;
            }
        }
        if reopened {
            Transition::Reopened
        } else {
            Transition::Progressed
        }
    }

    /// The executor holding final partition `partition` from `attempt`, if
    /// that is the current result.
    pub fn result_owner(&self, partition: u32, attempt: u64) -> Option<String> {
        let final_stage = self.final_stage() as usize;
        let task = self.stages[final_stage].tasks.get(partition as usize)?;
        match task {
            TaskState::Succeeded { attempt: a, .. } if *a == attempt => {
                self.holder(final_stage, task).map(str::to_string)
            }
            _ => None,
        }
    }

    /// The client could not fetch final partition `partition` of `attempt`:
    /// recompute it (if that attempt's output is still the current one).
    pub fn on_result_lost(&mut self, partition: u32, attempt: u64, why: &str) -> Transition {
        if self.phase != JobPhase::Succeeded {
            return Transition::Ignored;
        }
        let Some(executor) = self.result_owner(partition, attempt) else {
            return Transition::Ignored;
        };
        let final_stage = self.final_stage();
        self.reopen();
        self.stages[final_stage as usize].tasks[partition as usize] = TaskState::Pending;
        self.stages[final_stage as usize].attempt += 1;
        self.event(
            JobEventKind::ResultLost,
            JobEvent {
                executor_id: executor,
                stage_id: final_stage,
                partitions: vec![partition],
                attempt,
                detail: why.to_string(),
                ..Default::default()
            },
        );
        match self.check_stage_attempts(final_stage, why) {
            Transition::JobFailed => Transition::JobFailed,
            _ => Transition::Reopened,
        }
    }

    fn reopen(&mut self) {
        self.phase = JobPhase::Running;
        self.finished = None;
    }

    pub fn finish(&mut self, phase: JobPhase) {
        if self.is_running() {
            self.phase = phase;
            self.finished = Some(Instant::now());
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.finished.unwrap_or_else(Instant::now) - self.started
    }

    /// The snapshot clients see.
    pub fn status(&self) -> JobStatus {
        let (state, error) = match &self.phase {
            JobPhase::Running | JobPhase::Committing => (JobState::Running, String::new()),
            JobPhase::Succeeded => (JobState::Succeeded, String::new()),
            JobPhase::Failed(m) => (JobState::Failed, m.clone()),
            JobPhase::Cancelled => (JobState::Cancelled, "job cancelled".to_string()),
        };
        let stages = self
            .stages
            .iter()
            .map(|s| {
                let mut p = StageProgress {
                    stage_id: s.id,
                    tasks_total: s.tasks.len() as u32,
                    tasks_done: s.count(|t| matches!(t, TaskState::Succeeded { .. })),
                    tasks_running: s.count(|t| matches!(t, TaskState::Running { .. })),
                    tasks_failed: s.failures.iter().sum(),
                    attempt: s.attempt,
                    ..Default::default()
                };
                let mut executors = BTreeSet::new();
                for t in &s.tasks {
                    if let TaskState::Succeeded {
                        executor, stats, ..
                    } = t
                    {
                        p.output_rows += stats.output_rows;
                        p.output_bytes += stats.output_bytes;
                        p.local_fetches += stats.local_fetches;
                        p.remote_fetches += stats.remote_fetches;
                        p.spilled_bytes +=
                            stats.shuffle_spilled_bytes + stats.operator_spilled_bytes;
                        p.input_rows += stats.input_rows;
                        p.local_fetch_bytes += stats.local_fetch_bytes;
                        p.remote_fetch_bytes += stats.remote_fetch_bytes;
                        p.task_time_ms += stats.elapsed_ms;
                        p.task_setup_us += stats.setup_us;
                        p.task_queued_us += stats.queued_us;
                        p.task_time_max_ms = p.task_time_max_ms.max(stats.elapsed_ms);
                        executors.insert(executor.id.clone());
                    }
                }
                p.executors = executors.into_iter().collect();
                p
            })
            .collect();
        let results = if self.phase == JobPhase::Succeeded {
            let final_stage = self.final_stage();
            let tasks = &self.stages[final_stage as usize].tasks;
            self.locations(final_stage)
                .into_iter()
                .map(|l| ResultLocation {
                    direct_result: match &tasks[l.map_partition as usize] {
                        TaskState::Succeeded { stats, .. } => stats.direct_result.clone(),
                        _ => vec![],
                    },
                    partition: l.map_partition,
                    executor_id: l.executor_id,
                    flight_address: l.address,
                    attempt: l.attempt,
                    ticket: FetchTicket {
                        job_id: self.id.clone(),
                        job_token: self.token.clone(),
                        stage_id: final_stage,
                        map_partition: l.map_partition,
                        bucket: 0,
                        attempt: l.attempt,
                        result: true,
                    }
                    .encode_to_vec(),
                })
                .collect()
        } else {
            vec![]
        };
        let mut events = self.events.clone();
        if self.events_dropped > 0 {
            events.push(JobEvent {
                detail: format!("{} more events not kept", self.events_dropped),
                ..Default::default()
            });
        }
        JobStatus {
            job_id: self.id.clone(),
            state: state as i32,
            stages,
            results,
            error,
            elapsed_ms: self.elapsed().as_millis() as u64,
            events,
            planning_us: self.planning.planning.as_micros() as u64,
            subqueries_us: self.planning.subqueries.as_micros() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::prelude::*;
    use ember_proto::{ExecutionError, FetchFailed, TaskKilled};

    use super::*;

    fn exec(id: &str) -> ExecutorRef {
        ExecutorRef {
            id: id.into(),
            address: format!("{id}:1"),
        }
    }

    /// A job of two stages: stage 0 (2 map tasks) feeds stage 1 (1 task).
    fn two_stage_job() -> Job {
        job_of(vec![(0, BTreeSet::new(), 2), (1, BTreeSet::from([0]), 1)])
    }

    /// A job of `(stage, inputs, tasks)`.
    fn job_of(stages: Vec<(u32, BTreeSet<u32>, usize)>) -> Job {
        Job {
            id: "j".into(),
            token: "t".into(),
            session_id: "s".into(),
            settings: Arc::new(HashMap::new()),
            stages: stages
                .into_iter()
                .map(|(id, inputs, n)| StageRun {
                    id,
                    inputs,
                    plan: Arc::new(vec![]),
                    attempt: 0,
                    tasks: vec![TaskState::Pending; n],
                    failures: vec![0; n],
                    awaits: BTreeSet::new(),
                    adaptive: None,
                })
                .collect(),
            phase: JobPhase::Running,
            limits: JobLimits {
                task_max_attempts: 2,
                stage_max_attempts: 3,
                direct_result_max_bytes: 0,
            },
            started: Instant::now(),
            finished: None,
            executors_used: BTreeSet::new(),
            write: None,
            description: String::new(),
            submitted_at: std::time::SystemTime::now(),
            stage_plans: vec![],
            result_limit: None,
            planning: PlanningTime::default(),
            subquery_values: HashMap::new(),
            events: vec![],
            events_dropped: 0,
        }
    }

    fn ok() -> TaskSucceeded {
        TaskSucceeded {
            output_rows: 1,
            ..Default::default()
        }
    }

    fn failure(reason: task_failure::Reason) -> TaskFailure {
        TaskFailure {
            message: "boom".into(),
            reason: Some(reason),
        }
    }

    fn fetch_failed(executor: &str, map_partition: u32, map_attempt: u64) -> TaskFailure {
        failure(task_failure::Reason::FetchFailed(FetchFailed {
            executor_id: executor.into(),
            map_stage: 0,
            map_partition,
            map_attempt,
            unreachable: false,
        }))
    }

    fn kinds(job: &Job) -> Vec<JobEventKind> {
        job.events()
            .iter()
            .map(|e| JobEventKind::try_from(e.kind).unwrap())
            .collect()
    }

    /// Stage 0 done: partition 0 by attempt 1 on a, partition 1 by attempt 2 on b.
    fn run_stage0(job: &mut Job) {
        job.mark_running(0, 0, exec("a"), 1);
        job.mark_running(0, 1, exec("b"), 2);
        job.on_task_succeeded(0, 0, 1, ok());
        job.on_task_succeeded(0, 1, 2, ok());
    }

    #[test]
    fn a_stage_runs_its_rewritten_plan_when_the_stage_deciding_wrote_few_rows() {
        // Stage 0 writes 2 rows (1 per task); stage 1 runs form [1] at most
        // `max_rows` rows, [0] otherwise. Chosen once, at the first launch.
        for (max_rows, plan, detail) in [
            (
                2,
                vec![1u8],
                "the rewritten form: stage 0 wrote 2 rows, at most 2",
            ),
            (
                1,
                vec![0u8],
                "the plain form: stage 0 wrote 2 rows, more than 1",
            ),
        ] {
            let mut job = two_stage_job();
            job.stages[1].plan = Arc::new(vec![0]);
            job.stages[1].adaptive = Some(AdaptiveRun {
                plan: Arc::new(vec![1]),
                decided_by: 0,
                max_rows,
                chosen: None,
            });
            run_stage0(&mut job);
            job.choose_plan(1);
            job.choose_plan(1);
            assert_eq!(job.stages[1].launch_plan().as_ref(), &plan);
            assert_eq!(kinds(&job), vec![JobEventKind::PlanChosen]);
            assert_eq!(job.events()[0].detail, detail);
            assert_eq!(job.events()[0].stage_id, 1);
        }
    }

    #[test]
    fn a_started_stage_is_finished_before_a_newly_ready_one() {
        // TPC-H q17's shape: stage 0 feeds stage 1; stage 2 reads files.
        let mut job = job_of(vec![
            (0, BTreeSet::new(), 1),
            (1, BTreeSet::from([0]), 2),
            (2, BTreeSet::new(), 2),
        ]);
        assert_eq!(job.runnable_tasks(), vec![(0, 0), (2, 0), (2, 1)]);
        job.mark_running(0, 0, exec("a"), 1);
        job.mark_running(2, 0, exec("b"), 2);
        job.on_task_succeeded(0, 0, 1, ok());
        // Stage 2 is under way: its second task goes before stage 1's.
        assert_eq!(job.runnable_tasks(), vec![(2, 1), (1, 0), (1, 1)]);
    }

    #[test]
    fn a_stage_reading_a_subquery_value_waits_for_it_and_keeps_it() {
        // Stage 2 reads files and scalar subquery 0's value; stage 0 does not.
        let mut job = job_of(vec![
            (0, BTreeSet::new(), 2),
            (1, BTreeSet::from([0, 2]), 1),
            (2, BTreeSet::new(), 1),
        ])
        .with_awaited(vec![BTreeSet::new(), BTreeSet::new(), BTreeSet::from([0])]);
        assert_eq!(job.runnable_tasks(), vec![(0, 0), (0, 1)]);
        run_stage0(&mut job);
        assert!(job.runnable_tasks().is_empty());
        assert_eq!(
            job.on_subquery_value(0, vec![7], "42"),
            Transition::Progressed
        );
        assert_eq!(job.runnable_tasks(), vec![(2, 0)]);
        // Said once; a second report changes nothing.
        assert_eq!(job.on_subquery_value(0, vec![8], "43"), Transition::Ignored);
        assert_eq!(job.subquery_values[&0], vec![7]);
        assert_eq!(kinds(&job), [JobEventKind::SubqueryValue]);
        assert_eq!(job.events()[0].detail, "scalar subquery 0 = 42");
        // Not once the job has ended.
        job.finish(JobPhase::Cancelled);
        assert_eq!(job.on_subquery_value(1, vec![9], "1"), Transition::Ignored);
    }

    #[test]
    fn consumer_stage_waits_for_all_its_inputs() {
        let mut job = two_stage_job();
        assert_eq!(job.runnable_tasks(), vec![(0, 0), (0, 1)]);
        job.mark_running(0, 0, exec("a"), 1);
        job.on_task_succeeded(0, 0, 1, ok());
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        job.mark_running(0, 1, exec("b"), 2);
        job.on_task_succeeded(0, 1, 2, ok());
        assert_eq!(job.runnable_tasks(), vec![(1, 0)]);
        let locations = job.locations(0);
        assert_eq!(locations.len(), 2);
        assert_eq!(locations[1].attempt, 2);
    }

    #[test]
    fn a_stages_progress_sums_its_tasks_setup_and_queueing() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        job.mark_running(0, 1, exec("b"), 2);
        for (p, attempt, setup_us, queued_us) in [(0, 1, 100, 7), (1, 2, 250, 0)] {
            let stats = TaskSucceeded {
                setup_us,
                queued_us,
                ..ok()
            };
            job.on_task_succeeded(0, p, attempt, stats);
        }
        let stage = &job.status().stages[0];
        assert_eq!((stage.task_setup_us, stage.task_queued_us), (350, 7));
    }

    #[test]
    fn final_task_success_completes_the_job_with_result_locations() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        assert_eq!(
            job.on_task_succeeded(1, 0, 3, ok()),
            Transition::JobSucceeded
        );
        let status = job.status();
        assert_eq!(status.state, JobState::Succeeded as i32);
        assert_eq!(status.results.len(), 1);
        assert_eq!(status.results[0].executor_id, "a");
        assert_eq!(status.results[0].attempt, 3);
    }

    #[test]
    fn report_about_another_attempt_is_ignored_and_recorded() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        assert_eq!(job.on_task_succeeded(0, 0, 7, ok()), Transition::Ignored);
        assert!(matches!(
            job.stages[0].tasks[0],
            TaskState::Running { attempt: 1, .. }
        ));
        assert_eq!(kinds(&job), vec![JobEventKind::StaleReportIgnored]);
    }

    #[test]
    fn late_report_of_an_attempt_lost_with_its_executor_never_touches_the_rerun() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        job.on_executor_lost("a", "control stream broken");
        // a re-registers and is given the same partition again.
        job.mark_running(0, 0, exec("a"), 5);
        let f = failure(task_failure::Reason::Execution(ExecutionError {
            retryable: true,
        }));
        assert_eq!(job.on_task_failed(0, 0, 1, &f), Transition::Ignored);
        assert_eq!(job.on_task_succeeded(0, 0, 1, ok()), Transition::Ignored);
        assert!(matches!(
            job.stages[0].tasks[0],
            TaskState::Running { attempt: 5, .. }
        ));
        assert_eq!(job.on_task_succeeded(0, 0, 5, ok()), Transition::Progressed);
    }

    #[test]
    fn retryable_failure_is_retried_until_attempts_run_out() {
        let mut job = two_stage_job();
        let f = failure(task_failure::Reason::Execution(ExecutionError {
            retryable: true,
        }));
        job.mark_running(0, 0, exec("a"), 1);
        assert_eq!(job.on_task_failed(0, 0, 1, &f), Transition::Progressed);
        assert!(job.runnable_tasks().contains(&(0, 0)));
        job.mark_running(0, 0, exec("a"), 2);
        assert_eq!(job.on_task_failed(0, 0, 2, &f), Transition::JobFailed);
        let JobPhase::Failed(msg) = &job.phase else {
            panic!("{:?}", job.phase)
        };
        assert!(
            msg.contains("task 0.0 failed 2 times") && msg.contains("boom"),
            "{msg}"
        );
        assert!(job.runnable_tasks().is_empty());
    }

    #[test]
    fn non_retryable_failure_fails_the_job_at_once() {
        let mut job = two_stage_job();
        let f = failure(task_failure::Reason::Execution(ExecutionError {
            retryable: false,
        }));
        job.mark_running(0, 0, exec("a"), 1);
        assert_eq!(job.on_task_failed(0, 0, 1, &f), Transition::JobFailed);
    }

    #[test]
    fn fetch_failure_recomputes_only_the_lost_map_output() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        assert_eq!(
            job.on_task_failed(1, 0, 3, &fetch_failed("b", 1, 2)),
            Transition::Progressed
        );
        // Only b's output is recomputed; the reducer waits for it.
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        assert!(matches!(
            job.stages[0].tasks[0],
            TaskState::Succeeded { .. }
        ));
        assert_eq!(job.stages[0].attempt, 1);
        assert!(kinds(&job).contains(&JobEventKind::OutputsLost));
    }

    #[test]
    fn stale_fetch_failure_never_throws_away_a_recomputed_output() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        job.on_task_failed(1, 0, 3, &fetch_failed("b", 1, 2));
        // Map partition 1 is recomputed as attempt 4 on c.
        job.mark_running(0, 1, exec("c"), 4);
        job.on_task_succeeded(0, 1, 4, ok());
        // A second reader still held the old location and reports it late.
        job.mark_running(1, 0, exec("a"), 6);
        assert_eq!(
            job.on_task_failed(1, 0, 6, &fetch_failed("b", 1, 2)),
            Transition::Progressed
        );
        assert!(matches!(
            job.stages[0].tasks[1],
            TaskState::Succeeded { attempt: 4, .. }
        ));
        assert_eq!(job.stages[0].attempt, 1, "no stage attempt burnt");
        assert_eq!(job.runnable_tasks(), vec![(1, 0)]);
    }

    #[test]
    fn fetch_failure_naming_a_stage_out_of_range_fails_cleanly() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        let f = failure(task_failure::Reason::FetchFailed(FetchFailed {
            executor_id: "b".into(),
            map_stage: 99,
            map_partition: 0,
            map_attempt: 2,
            unreachable: false,
        }));
        assert_eq!(job.on_task_failed(1, 0, 3, &f), Transition::JobFailed);
        // Reports naming tasks that do not exist are ignored, not a panic.
        assert_eq!(job.on_task_succeeded(42, 0, 1, ok()), Transition::Ignored);
    }

    #[test]
    fn lost_executor_reruns_its_tasks_and_needed_outputs() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("b"), 3);
        assert_eq!(job.on_executor_lost("b", "gone"), Transition::Progressed);
        // b's running reducer and b's map output both need to run again.
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        assert_eq!(job.stages[1].tasks[0], TaskState::Pending);
        assert_eq!(
            kinds(&job),
            vec![
                JobEventKind::ExecutorLost,
                JobEventKind::TaskRetried,
                JobEventKind::OutputsLost
            ]
        );
    }

    #[test]
    fn a_task_that_loses_every_executor_it_runs_on_fails_the_job() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        assert_eq!(job.on_executor_lost("a", "killed"), Transition::Progressed);
        job.mark_running(0, 0, exec("b"), 2);
        assert_eq!(job.on_executor_lost("b", "killed"), Transition::JobFailed);
        let JobPhase::Failed(msg) = &job.phase else {
            panic!()
        };
        assert!(msg.contains("executor b lost"), "{msg}");
    }

    #[test]
    fn killed_task_goes_back_to_pending_and_counts() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        let f = failure(task_failure::Reason::Killed(TaskKilled {}));
        assert_eq!(job.on_task_failed(0, 0, 1, &f), Transition::Progressed);
        assert!(job.runnable_tasks().contains(&(0, 0)));
        assert_eq!(job.stages[0].failures[0], 1);
    }

    #[test]
    fn vanished_attempt_is_retried() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"), 1);
        assert_eq!(
            job.on_attempt_lost(0, 0, 1, "not listed by its executor"),
            Transition::Progressed
        );
        assert_eq!(job.on_attempt_lost(0, 0, 1, "again"), Transition::Ignored);
        assert!(job.runnable_tasks().contains(&(0, 0)));
    }

    #[test]
    fn result_lost_after_success_reopens_the_job_for_that_partition() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        job.on_task_succeeded(1, 0, 3, ok());
        assert_eq!(job.on_result_lost(0, 99, "stale"), Transition::Ignored);
        assert_eq!(
            job.on_result_lost(0, 3, "transport error"),
            Transition::Reopened
        );
        assert!(job.is_running());
        assert_eq!(job.runnable_tasks(), vec![(1, 0)]);
        assert!(job.status().results.is_empty());
        job.mark_running(1, 0, exec("b"), 4);
        assert_eq!(
            job.on_task_succeeded(1, 0, 4, ok()),
            Transition::JobSucceeded
        );
        assert_eq!(job.status().results[0].attempt, 4);
    }

    #[test]
    fn executor_lost_after_success_recomputes_the_results_it_held() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("b"), 3);
        job.on_task_succeeded(1, 0, 3, ok());
        // Losing an executor holding no result leaves a finished job alone.
        job.executors_used.insert("c".into());
        assert_eq!(job.on_executor_lost("c", "gone"), Transition::Ignored);
        assert_eq!(job.on_executor_lost("b", "gone"), Transition::Reopened);
        // The result and b's map output (which the result needs) both rerun.
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        assert!(kinds(&job).contains(&JobEventKind::ResultLost));
    }

    #[test]
    fn a_result_sent_with_its_report_outlives_its_executor() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("b"), 3);
        let direct = TaskSucceeded {
            direct_result: vec![1, 2, 3],
            ..ok()
        };
        job.on_task_succeeded(1, 0, 3, direct);
        let status = job.status();
        assert_eq!(status.state, JobState::Succeeded as i32);
        assert_eq!(status.results[0].direct_result, vec![1, 2, 3]);
        // b held only map outputs nobody needs any more.
        assert_eq!(job.on_executor_lost("b", "gone"), Transition::Ignored);
        assert_eq!(job.status().state, JobState::Succeeded as i32);
        // Nothing to lose while fetching it either.
        assert_eq!(
            job.on_result_lost(0, 3, "cannot fetch"),
            Transition::Ignored
        );
        assert!(job.runnable_tasks().is_empty());
        // Only the final stage's tasks are offered to send their result.
        job.limits.direct_result_max_bytes = 64;
        assert_eq!(job.direct_result_max_bytes(0), 0);
        assert_eq!(job.direct_result_max_bytes(1), 64);
    }

    fn writing(job: Job) -> Job {
        let target = ember_planner::WriteTarget {
            stage: 0,
            destination: datafusion::datasource::listing::ListingTableUrl::parse(
                "file:///tmp/out/",
            )
            .unwrap(),
            single_file: false,
            staging_root: "file:///tmp/out/.ember-staging/".into(),
        };
        job.with_output(Output {
            target,
            store: Arc::new(datafusion::object_store::memory::InMemory::new()),
        })
    }

    #[test]
    fn a_write_job_publishes_the_latest_accepted_attempt_of_each_partition_once() {
        let mut job = writing(two_stage_job());
        run_stage0(&mut job);
        // b dies before the final stage read its output: partition 1 reruns.
        job.executors_used.insert("b".into());
        job.mark_running(1, 0, exec("a"), 3);
        assert_eq!(job.on_executor_lost("b", "gone"), Transition::Progressed);
        job.mark_running(0, 1, exec("a"), 4);
        job.on_task_succeeded(0, 1, 4, ok());
        // A late success of the superseded attempt changes nothing.
        assert_eq!(job.on_task_succeeded(0, 1, 2, ok()), Transition::Ignored);
        assert_eq!(job.on_task_succeeded(1, 0, 3, ok()), Transition::Commit);
        let w = job.write.as_ref().unwrap();
        assert_eq!(w.accepted, BTreeMap::from([(0, 1), (1, 4)]));
        // While publishing, the job is neither running nor cancellable.
        assert_eq!(job.status().state, JobState::Running as i32);
        assert!(job.runnable_tasks().is_empty());
        job.finish(JobPhase::Cancelled);
        assert_eq!(job.phase, JobPhase::Committing);
        assert_eq!(job.on_committed(Ok(())), Transition::JobSucceeded);
        assert_eq!(job.status().state, JobState::Succeeded as i32);
        // A result lost afterwards is recomputed without publishing again.
        assert_eq!(job.on_result_lost(0, 3, "gone"), Transition::Reopened);
        job.mark_running(1, 0, exec("a"), 5);
        assert_eq!(
            job.on_task_succeeded(1, 0, 5, ok()),
            Transition::JobSucceeded
        );
    }

    #[test]
    fn a_write_whose_files_cannot_be_published_fails() {
        let mut job = writing(two_stage_job());
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"), 3);
        assert_eq!(job.on_task_succeeded(1, 0, 3, ok()), Transition::Commit);
        assert_eq!(
            job.on_committed(Err("disk full".into())),
            Transition::JobFailed
        );
        let status = job.status();
        assert_eq!(status.state, JobState::Failed as i32);
        assert!(status.error.contains("disk full"), "{}", status.error);
    }

    #[tokio::test]
    async fn job_from_a_real_plan_has_one_stage_run_per_stage() {
        let ctx =
            SessionContext::new_with_config(ember_planner::config::distributed_session_config(4));
        let plan = ctx
            .sql("SELECT a % 3 AS k, count(*) FROM (VALUES (1), (2), (3), (4)) t(a) GROUP BY 1 ORDER BY 1")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let dag = StageDag::cut(plan, 4).unwrap();
        let plans = vec![vec![]; dag.stages().len()];
        let job = Job::new(
            "j".into(),
            "t".into(),
            "s".into(),
            &dag,
            plans,
            Arc::new(HashMap::new()),
            JobLimits {
                task_max_attempts: 1,
                stage_max_attempts: 1,
                direct_result_max_bytes: 0,
            },
        );
        assert_eq!(job.stages.len(), dag.stages().len());
        assert!(job.stages.len() >= 2, "{}", dag.display(false));
    }
}
