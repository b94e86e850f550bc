//! The job → stage → task state machine, kept apart from the gRPC plumbing
//! that feeds it events.
//!
//! ```text
//!  task:  Pending ──launch──▶ Running ──succeeded──▶ Succeeded
//!            ▲                  │  │                    │
//!            └──── failed, ─────┘  └─ executor lost ────┤ output lost (executor
//!                  retryable             (→ Pending)     │ gone, fetch failed)
//!            ▲                                           │
//!            └───────────────────────────────────────────┘
//!
//!  job:   Running ──final stage done──▶ Succeeded
//!            ├──── attempts exhausted / not retryable ──▶ Failed
//!            └──── cancel ──▶ Cancelled
//! ```
//!
//! A stage is runnable when every stage it reads has all its outputs. Lost
//! outputs make their stage's tasks Pending again, so recomputation follows the
//! lineage on its own: a consumer waits until its inputs are whole again, and
//! if those inputs' own inputs were lost too, they are recomputed first.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_planner::StageDag;
use ember_proto::{
    FetchTicket, JobState, JobStatus, MapOutputLocation, ResultLocation, StageInput, StageProgress,
    TaskFailure, TaskSucceeded, task_failure,
};
use prost::Message;

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
    },
    Succeeded {
        executor: ExecutorRef,
        stats: TaskSucceeded,
    },
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
    /// Failed attempts per partition.
    pub failures: Vec<u32>,
}

impl StageRun {
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
    Succeeded,
    Failed(String),
    Cancelled,
}

/// Limits a job runs under.
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    pub task_max_attempts: u32,
    pub stage_max_attempts: u32,
}

/// What a task status update did to its job.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// Stale or duplicate report: nothing changed.
    Ignored,
    Progressed,
    JobSucceeded,
    JobFailed,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub token: String,
    pub settings: Arc<HashMap<String, String>>,
    pub stages: Vec<StageRun>,
    pub phase: JobPhase,
    pub limits: JobLimits,
    pub started: Instant,
    pub finished: Option<Instant>,
    /// Every executor that ran a task of this job (to free its data there).
    pub executors_used: BTreeSet<String>,
}

impl Job {
    pub fn new(
        id: String,
        token: String,
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
            })
            .collect();
        Self {
            id,
            token,
            settings,
            stages,
            phase: JobPhase::Running,
            limits,
            started: Instant::now(),
            finished: None,
            executors_used: BTreeSet::new(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.phase == JobPhase::Running
    }

    fn final_stage(&self) -> u32 {
        (self.stages.len() - 1) as u32
    }

    /// Pending tasks whose inputs are all available, stage by stage.
    pub fn runnable_tasks(&self) -> Vec<(u32, u32)> {
        if !self.is_running() {
            return vec![];
        }
        let mut out = vec![];
        for stage in &self.stages {
            let ready = stage
                .inputs
                .iter()
                .all(|i| self.stages[*i as usize].is_complete());
            if !ready {
                continue;
            }
            for (p, t) in stage.tasks.iter().enumerate() {
                if *t == TaskState::Pending {
                    out.push((stage.id, p as u32));
                }
            }
        }
        out
    }

    pub fn mark_running(&mut self, stage: u32, partition: u32, executor: ExecutorRef) {
        self.executors_used.insert(executor.id.clone());
        self.stages[stage as usize].tasks[partition as usize] = TaskState::Running { executor };
    }

    /// Map output locations of `stage` (complete stages only).
    pub fn locations(&self, stage: u32) -> Vec<MapOutputLocation> {
        self.stages[stage as usize]
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(p, t)| match t {
                TaskState::Succeeded { executor, .. } => Some(MapOutputLocation {
                    map_partition: p as u32,
                    executor_id: executor.id.clone(),
                    address: executor.address.clone(),
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

    fn running_on<'a>(
        &'a mut self,
        stage: u32,
        partition: u32,
        executor: &str,
    ) -> Option<&'a mut TaskState> {
        let t = self
            .stages
            .get_mut(stage as usize)?
            .tasks
            .get_mut(partition as usize)?;
        match t {
            TaskState::Running { executor: e } if e.id == executor => Some(t),
            _ => None,
        }
    }

    /// A report counts only if the task is running on the reporting executor;
    /// anything else is a stale or duplicate report.
    pub fn on_task_succeeded(
        &mut self,
        stage: u32,
        partition: u32,
        executor: &str,
        stats: TaskSucceeded,
    ) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let Some(task) = self.running_on(stage, partition, executor) else {
            return Transition::Ignored;
        };
        let TaskState::Running { executor } = task.clone() else {
            return Transition::Ignored;
        };
        *task = TaskState::Succeeded { executor, stats };
        if stage == self.final_stage() && self.stages[stage as usize].is_complete() {
            self.finish(JobPhase::Succeeded);
            return Transition::JobSucceeded;
        }
        Transition::Progressed
    }

    pub fn on_task_failed(
        &mut self,
        stage: u32,
        partition: u32,
        executor: &str,
        failure: &TaskFailure,
    ) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let Some(task) = self.running_on(stage, partition, executor) else {
            return Transition::Ignored;
        };
        *task = TaskState::Pending;
        match &failure.reason {
            Some(task_failure::Reason::FetchFailed(f)) => {
                let lost = self.lose_outputs(f.map_stage, &f.executor_id);
                let map = &mut self.stages[f.map_stage as usize];
                if lost > 0 {
                    map.attempt += 1;
                }
                if map.attempt >= self.limits.stage_max_attempts {
                    let msg = format!(
                        "stage {} lost its outputs {} times; last: {}",
                        f.map_stage, map.attempt, failure.message
                    );
                    self.finish(JobPhase::Failed(msg));
                    return Transition::JobFailed;
                }
                Transition::Progressed
            }
            Some(task_failure::Reason::Killed(_)) => Transition::Progressed,
            Some(task_failure::Reason::Execution(e)) => {
                let s = &mut self.stages[stage as usize];
                s.failures[partition as usize] += 1;
                let attempts = s.failures[partition as usize];
                if !e.retryable || attempts >= self.limits.task_max_attempts {
                    self.finish(JobPhase::Failed(failure.message.clone()));
                    return Transition::JobFailed;
                }
                Transition::Progressed
            }
            None => {
                self.finish(JobPhase::Failed(failure.message.clone()));
                Transition::JobFailed
            }
        }
    }

    /// Marks the outputs of `stage` held by `executor` as lost. Returns how
    /// many were lost.
    fn lose_outputs(&mut self, stage: u32, executor: &str) -> usize {
        let mut lost = 0;
        if let Some(s) = self.stages.get_mut(stage as usize) {
            for t in &mut s.tasks {
                if matches!(t, TaskState::Succeeded { executor: e, .. } if e.id == executor) {
                    *t = TaskState::Pending;
                    lost += 1;
                }
            }
        }
        lost
    }

    /// `executor` is gone: its running tasks go back to Pending, and the map
    /// outputs it held are recomputed if something still needs them.
    pub fn on_executor_lost(&mut self, executor: &str) -> Transition {
        if !self.is_running() {
            return Transition::Ignored;
        }
        let mut changed = false;
        for s in 0..self.stages.len() {
            for t in &mut self.stages[s].tasks {
                if matches!(t, TaskState::Running { executor: e } if e.id == executor) {
                    *t = TaskState::Pending;
                    changed = true;
                }
            }
            let needed = s as u32 == self.final_stage()
                || self
                    .stages
                    .iter()
                    .any(|c| c.inputs.contains(&(s as u32)) && !c.is_complete());
            if needed && self.lose_outputs(s as u32, executor) > 0 {
                self.stages[s].attempt += 1;
                changed = true;
                if self.stages[s].attempt >= self.limits.stage_max_attempts {
                    self.finish(JobPhase::Failed(format!(
                        "stage {s} lost its outputs {} times (last: executor {executor} lost)",
                        self.stages[s].attempt
                    )));
                    return Transition::JobFailed;
                }
            }
        }
        if changed {
            Transition::Progressed
        } else {
            Transition::Ignored
        }
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
            JobPhase::Running => (JobState::Running, String::new()),
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
                    attempt: s.attempt,
                    ..Default::default()
                };
                let mut executors = BTreeSet::new();
                for t in &s.tasks {
                    if let TaskState::Succeeded { executor, stats } = t {
                        p.output_rows += stats.output_rows;
                        p.output_bytes += stats.output_bytes;
                        p.local_fetches += stats.local_fetches;
                        p.remote_fetches += stats.remote_fetches;
                        p.task_time_ms += stats.elapsed_ms;
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
            self.locations(final_stage)
                .into_iter()
                .map(|l| ResultLocation {
                    partition: l.map_partition,
                    executor_id: l.executor_id,
                    flight_address: l.address,
                    ticket: FetchTicket {
                        job_id: self.id.clone(),
                        job_token: self.token.clone(),
                        stage_id: final_stage,
                        map_partition: l.map_partition,
                        bucket: 0,
                    }
                    .encode_to_vec(),
                })
                .collect()
        } else {
            vec![]
        };
        JobStatus {
            job_id: self.id.clone(),
            state: state as i32,
            stages,
            results,
            error,
            elapsed_ms: self.elapsed().as_millis() as u64,
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
        let stages = vec![(0, BTreeSet::new(), 2), (1, BTreeSet::from([0]), 1)];
        Job {
            id: "j".into(),
            token: "t".into(),
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
                })
                .collect(),
            phase: JobPhase::Running,
            limits: JobLimits {
                task_max_attempts: 2,
                stage_max_attempts: 3,
            },
            started: Instant::now(),
            finished: None,
            executors_used: BTreeSet::new(),
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

    fn run_stage0(job: &mut Job) {
        job.mark_running(0, 0, exec("a"));
        job.mark_running(0, 1, exec("b"));
        job.on_task_succeeded(0, 0, "a", ok());
        job.on_task_succeeded(0, 1, "b", ok());
    }

    #[test]
    fn consumer_stage_waits_for_all_its_inputs() {
        let mut job = two_stage_job();
        assert_eq!(job.runnable_tasks(), vec![(0, 0), (0, 1)]);
        job.mark_running(0, 0, exec("a"));
        job.on_task_succeeded(0, 0, "a", ok());
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        job.mark_running(0, 1, exec("b"));
        job.on_task_succeeded(0, 1, "b", ok());
        assert_eq!(job.runnable_tasks(), vec![(1, 0)]);
        assert_eq!(job.locations(0).len(), 2);
    }

    #[test]
    fn final_task_success_completes_the_job_with_result_locations() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"));
        assert_eq!(
            job.on_task_succeeded(1, 0, "a", ok()),
            Transition::JobSucceeded
        );
        let status = job.status();
        assert_eq!(status.state, JobState::Succeeded as i32);
        assert_eq!(status.results.len(), 1);
        assert_eq!(status.results[0].executor_id, "a");
    }

    #[test]
    fn report_from_an_executor_not_running_the_task_is_ignored() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"));
        assert_eq!(job.on_task_succeeded(0, 0, "b", ok()), Transition::Ignored);
    }

    #[test]
    fn retryable_failure_is_retried_until_attempts_run_out() {
        let mut job = two_stage_job();
        let f = failure(task_failure::Reason::Execution(ExecutionError {
            retryable: true,
        }));
        job.mark_running(0, 0, exec("a"));
        assert_eq!(job.on_task_failed(0, 0, "a", &f), Transition::Progressed);
        assert!(job.runnable_tasks().contains(&(0, 0)));
        job.mark_running(0, 0, exec("a"));
        assert_eq!(job.on_task_failed(0, 0, "a", &f), Transition::JobFailed);
        assert_eq!(job.phase, JobPhase::Failed("boom".into()));
        assert!(job.runnable_tasks().is_empty());
    }

    #[test]
    fn non_retryable_failure_fails_the_job_at_once() {
        let mut job = two_stage_job();
        let f = failure(task_failure::Reason::Execution(ExecutionError {
            retryable: false,
        }));
        job.mark_running(0, 0, exec("a"));
        assert_eq!(job.on_task_failed(0, 0, "a", &f), Transition::JobFailed);
    }

    #[test]
    fn fetch_failure_recomputes_only_the_lost_map_outputs() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("a"));
        let f = failure(task_failure::Reason::FetchFailed(FetchFailed {
            executor_id: "b".into(),
            map_stage: 0,
            map_partition: 1,
        }));
        assert_eq!(job.on_task_failed(1, 0, "a", &f), Transition::Progressed);
        // Only b's output is recomputed; the reducer waits for it.
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        assert!(matches!(
            job.stages[0].tasks[0],
            TaskState::Succeeded { .. }
        ));
        assert_eq!(job.stages[0].attempt, 1);
    }

    #[test]
    fn lost_executor_reruns_its_tasks_and_needed_outputs() {
        let mut job = two_stage_job();
        run_stage0(&mut job);
        job.mark_running(1, 0, exec("b"));
        assert_eq!(job.on_executor_lost("b"), Transition::Progressed);
        // b's running reducer and b's map output both need to run again.
        assert_eq!(job.runnable_tasks(), vec![(0, 1)]);
        assert_eq!(job.stages[1].tasks[0], TaskState::Pending);
    }

    #[test]
    fn killed_task_goes_back_to_pending() {
        let mut job = two_stage_job();
        job.mark_running(0, 0, exec("a"));
        let f = failure(task_failure::Reason::Killed(TaskKilled {}));
        assert_eq!(job.on_task_failed(0, 0, "a", &f), Transition::Progressed);
        assert!(job.runnable_tasks().contains(&(0, 0)));
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
            &dag,
            plans,
            Arc::new(HashMap::new()),
            JobLimits {
                task_max_attempts: 1,
                stage_max_attempts: 1,
            },
        );
        assert_eq!(job.stages.len(), dag.stages().len());
        assert!(job.stages.len() >= 2, "{}", dag.display(false));
    }
}
