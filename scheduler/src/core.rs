//! The scheduler's heart: the executor [registry](crate::registry) and the
//! jobs, behind one lock, fed by events (job submitted, task reported,
//! heartbeat, executor lost), plus the effects those events have on the
//! outside (launches, cancellations, freeing data).
//!
//! Every event mutates the state under the lock, computes which tasks to
//! launch ([`Core::dispatch`]), and sends the RPCs after releasing it. There
//! is no polling loop on the critical path: a freed slot is refilled by the
//! very status update that freed it.
//!
//! Every way of losing an executor goes through [`Core::executor_lost`]:
//! its control stream breaking (the primary signal: a dead process is noticed
//! within milliseconds), a refused launch, a fetch failure whose owner then
//! refuses a connection, a newer registration of the same executor, and the
//! heartbeat timeout (which only catches hosts that vanish silently).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_proto::executor_service_client::ExecutorServiceClient;
use ember_proto::{
    CancelTasksRequest, ClusterInfo, ExecutorInfo, Heartbeat, HeartbeatResponse, JobStatus,
    LaunchTasksRequest, RemoveJobDataRequest, TaskAttempt, TaskFailure, TaskStatusUpdate,
    task_failure, task_status_update,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::SchedulerConfig;
use crate::commit::Output;
use crate::error::{Result, SchedulerError};
use crate::event_log::{Event, EventLog, Logged};
use crate::job::{ExecutorRef, Job, JobPhase, TaskState, Transition};
use crate::metrics::{Metrics, StateLabel};
use crate::overview::{ExecutorView, JobView, TaskRow};
use crate::registry::{LaunchedAttempt, Registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

struct JobEntry {
    job: Job,
    status: watch::Sender<JobStatus>,
    /// Job events already published.
    events_seen: usize,
    /// What of its progress the event log has.
    logged: Logged,
}

impl JobEntry {
    /// Tells the job's watchers its status now, and the event log and the
    /// metrics what is new in it.
    fn publish(&mut self, report: &Reporting) {
        let status = self.job.status();
        let fresh = status.events.get(self.events_seen..).unwrap_or_default();
        let retried = fresh
            .iter()
            .filter(|e| e.kind == ember_proto::JobEventKind::TaskRetried as i32)
            .count();
        if retried > 0 {
            report
                .tasks
                .get_or_create(&StateLabel { state: "retried" })
                .inc_by(retried as u64);
        }
        report.events.progress(&mut self.logged, &status, fresh);
        self.events_seen = status.events.len();
        self.status.send_replace(status);
    }
}

/// Where the core tells what happens to jobs, reachable under its lock: the
/// event log, and the metrics (`ember_jobs_total`, `ember_tasks_total`,
/// shared with [`Metrics`]) counted as jobs change.
#[derive(Default)]
struct Reporting {
    events: EventLog,
    jobs: Family<StateLabel, Counter>,
    tasks: Family<StateLabel, Counter>,
}

#[derive(Default)]
struct State {
    registry: Registry,
    jobs: HashMap<String, JobEntry>,
    /// Running jobs in submission order (first come, first served).
    queue: Vec<String>,
    /// Released jobs, newest last, for the UI, API and system tables.
    history: VecDeque<JobView>,
    /// Executors lost lately, with why (newest last).
    lost: VecDeque<ExecutorView>,
    report: Reporting,
}

/// Lost executors kept for people to look at.
const LOST_KEPT: usize = 100;

/// Released jobs kept for people to look at.
const HISTORY: usize = 500;

impl State {
    /// Publishes the job's new status after transition `t` and keeps the
    /// queue in step. Returns the job's id if it just failed (its tasks must
    /// be killed and its data freed).
    fn settle(&mut self, job_id: &str, t: Transition) -> Option<String> {
        let entry = self.jobs.get_mut(job_id)?;
        match t {
            Transition::JobSucceeded => crate::metrics::job_ended(&self.report.jobs, "succeeded"),
            Transition::JobFailed => crate::metrics::job_ended(&self.report.jobs, "failed"),
            _ => {}
        }
        if t != Transition::Ignored {
            entry.publish(&self.report);
        }
        match t {
            Transition::JobSucceeded => {
                tracing::info!(
                    job = job_id,
                    elapsed_ms = entry.job.elapsed().as_millis() as u64,
                    "job succeeded"
                );
                self.queue.retain(|q| q != job_id);
                None
            }
            Transition::JobFailed => {
                tracing::warn!(job = job_id, phase = ?entry.job.phase, "job failed");
                self.queue.retain(|q| q != job_id);
                Some(job_id.to_string())
            }
            Transition::Reopened => {
                tracing::warn!(job = job_id, "result partitions lost; recomputing them");
                if !self.queue.iter().any(|q| q == job_id) {
                    self.queue.push(job_id.to_string());
                }
                None
            }
            Transition::Commit => {
                // No more tasks to run; publishing happens off the lock.
                self.queue.retain(|q| q != job_id);
                None
            }
            Transition::Ignored | Transition::Progressed => None,
        }
    }
}

/// How long after a write job ends its staging directory is deleted again:
/// killed tasks stop at their next yield point, and a file write already
/// handed to the OS or the object store may still land after the first
/// deletion.
const STAGING_SWEEP_DELAY: Duration = Duration::from_secs(5);

/// Deletes a write job's staging directory in the background, now and once
/// more a little later.
fn discard_staged(output: Output, job_id: &str) {
    let job_id = job_id.to_string();
    tokio::spawn(async move {
        output.discard(&job_id).await;
        tokio::time::sleep(STAGING_SWEEP_DELAY).await;
        output.discard(&job_id).await;
    });
}

/// A batch of task attempts of one stage for one executor.
struct Launch {
    executor_id: String,
    client: ExecutorServiceClient<Channel>,
    request: LaunchTasksRequest,
}

pub struct Core {
    pub config: SchedulerConfig,
    pub metrics: Metrics,
    state: Mutex<State>,
}

impl Core {
    pub fn new(config: SchedulerConfig) -> Arc<Self> {
        let metrics = Metrics::default();
        let (events, history) = match &config.event_log_dir {
            Some(dir) => {
                let history = crate::event_log::load_history(dir, HISTORY);
                let events = EventLog::start(dir.clone(), config.event_log_retention.max(1))
                    .unwrap_or_else(|e| {
                        tracing::warn!(dir = %dir.display(), error = %e, "no event log");
                        EventLog::default()
                    });
                (events, history)
            }
            None => (EventLog::default(), VecDeque::new()),
        };
        let state = State {
            history,
            report: Reporting {
                events,
                jobs: metrics.jobs.clone(),
                tasks: metrics.tasks.clone(),
            },
            ..State::default()
        };
        Arc::new(Self {
            config,
            metrics,
            state: Mutex::new(state),
        })
    }

    // ------------------------------------------------------------ executors

    /// Registers an executor; returns its registration id. An executor that
    /// registers again from the same address replaces its old registration
    /// (which is lost: whatever it ran is re-run).
    pub fn register_executor(self: &Arc<Self>, info: ExecutorInfo) -> Result<u64> {
        if info.slots == 0 {
            return Err(SchedulerError::Registration(
                "an executor needs at least one slot".into(),
            ));
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", info.address))
            .map_err(|e| {
                SchedulerError::Registration(format!("bad address {:?}: {e}", info.address))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let client = ExecutorServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size);
        let existing = {
            let state = self.state.lock();
            state
                .registry
                .get(&info.executor_id)
                .map(|e| e.info.address.clone())
        };
        match existing {
            Some(address) if address != info.address => {
                return Err(SchedulerError::Registration(format!(
                    "executor id {} is already registered (at {address}); ids must be unique",
                    info.executor_id
                )));
            }
            Some(_) => self.executor_lost(&info.executor_id, "registered again"),
            None => {}
        }
        let registration = {
            let mut state = self.state.lock();
            if state.registry.get(&info.executor_id).is_some() {
                return Err(SchedulerError::Registration(format!(
                    "executor id {} registered twice at once",
                    info.executor_id
                )));
            }
            tracing::info!(executor = %info.executor_id, address = %info.address, slots = info.slots, "executor registered");
            state.registry.add(info, client)
        };
        self.dispatch();
        Ok(registration)
    }

    /// One heartbeat from an executor's control stream: refreshes its
    /// liveness, ends the attempts it no longer runs, and names the jobs it
    /// holds that the scheduler has forgotten.
    pub fn heartbeat(self: &Arc<Self>, hb: &Heartbeat) -> HeartbeatResponse {
        let grace = (self.config.heartbeat_interval * 3).max(Duration::from_secs(2));
        let mut failed = vec![];
        let forget_jobs;
        let mut vanished_any = false;
        let connected_now;
        {
            let mut state = self.state.lock();
            match state.registry.get_mut(&hb.executor_id) {
                Some(e) if e.registration == hb.registration => {
                    e.last_seen = Instant::now();
                    if let Some(load) = hb.load {
                        e.load = load;
                    }
                    connected_now = !e.connected;
                    e.connected = true;
                }
                _ => {
                    return HeartbeatResponse {
                        reregister: true,
                        forget_jobs: vec![],
                    };
                }
            }
            let listed: HashSet<u64> = hb.attempts.iter().copied().collect();
            for (attempt, l) in state.registry.reconcile(&hb.executor_id, &listed, grace) {
                vanished_any = true;
                tracing::warn!(executor = %hb.executor_id, job = %l.job_id, stage = l.stage, partition = l.partition, attempt, "attempt vanished from its executor");
                let t = match state.jobs.get_mut(&l.job_id) {
                    Some(entry) => entry.job.on_attempt_lost(
                        l.stage,
                        l.partition,
                        attempt,
                        &format!("attempt vanished from executor {}", hb.executor_id),
                    ),
                    None => continue,
                };
                failed.extend(state.settle(&l.job_id, t));
            }
            forget_jobs = hb
                .jobs
                .iter()
                .filter(|j| !state.jobs.contains_key(*j))
                .cloned()
                .collect();
        }
        for id in failed {
            self.cleanup_job(&id);
        }
        if vanished_any || connected_now {
            self.dispatch();
        }
        HeartbeatResponse {
            reregister: false,
            forget_jobs,
        }
    }

    /// The control stream of `registration` ended: the executor is lost,
    /// unless it has registered again meanwhile.
    pub fn control_stream_ended(
        self: &Arc<Self>,
        executor_id: &str,
        registration: u64,
        reason: &str,
    ) {
        let current = {
            let state = self.state.lock();
            state
                .registry
                .get(executor_id)
                .is_some_and(|e| e.registration == registration)
        };
        if current {
            self.executor_lost(executor_id, reason);
        }
    }

    /// The one path for every way an executor can be lost.
    pub fn executor_lost(self: &Arc<Self>, executor_id: &str, reason: &str) {
        let mut failed = vec![];
        {
            let mut state = self.state.lock();
            let Some(gone) = state.registry.remove(executor_id) else {
                return;
            };
            let mut view = ExecutorView::of(&gone);
            view.connected = false;
            view.slots_busy = 0;
            view.lost_reason = Some(reason.to_string());
            if state.lost.len() >= LOST_KEPT {
                state.lost.pop_front();
            }
            state.lost.push_back(view);
            tracing::warn!(executor = executor_id, reason, "executor lost");
            let no_executors_left = state.registry.is_empty();
            let ids: Vec<String> = state.jobs.keys().cloned().collect();
            for id in ids {
                let Some(entry) = state.jobs.get_mut(&id) else {
                    continue;
                };
                let mut t = entry.job.on_executor_lost(executor_id, reason);
                if no_executors_left && entry.job.is_running() {
                    entry.job.finish(JobPhase::Failed(format!(
                        "all executors were lost (last: {executor_id}: {reason}); no executor can run the remaining tasks"
                    )));
                    t = Transition::JobFailed;
                }
                failed.extend(state.settle(&id, t));
            }
        }
        for id in failed {
            self.cleanup_job(&id);
        }
        self.dispatch();
    }

    /// A reader could not reach `executor_id` at all: if a fresh connection
    /// is refused too, the executor is lost; if it answers, nothing happens
    /// (the fetch failure itself has been dealt with).
    fn probe(self: &Arc<Self>, executor_id: &str) {
        let address = {
            let state = self.state.lock();
            match state.registry.get(executor_id) {
                Some(e) => e.info.address.clone(),
                None => return,
            }
        };
        let core = Arc::clone(self);
        let executor_id = executor_id.to_string();
        tokio::spawn(async move {
            let connect = tokio::net::TcpStream::connect(&address);
            let reachable = matches!(
                tokio::time::timeout(Duration::from_secs(2), connect).await,
                Ok(Ok(_))
            );
            if !reachable {
                core.executor_lost(
                    &executor_id,
                    &format!(
                        "unreachable: a fetch from it failed and {address} refuses connections"
                    ),
                );
            }
        });
    }

    /// Declares lost every executor silent for longer than the timeout, and
    /// releases finished jobs nobody fetched.
    pub fn check_liveness(self: &Arc<Self>) {
        let timeout = self.config.executor_timeout;
        let silent = self.state.lock().registry.silent(timeout);
        for id in silent {
            self.executor_lost(&id, &format!("no heartbeat for {timeout:?}"));
        }
        let expired: Vec<String> = {
            let state = self.state.lock();
            state
                .jobs
                .iter()
                .filter(|(_, j)| {
                    j.job
                        .finished
                        .is_some_and(|f| f.elapsed() > self.config.result_ttl)
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            tracing::info!(job = %id, "releasing unfetched job after its result TTL");
            self.release_job(&id);
        }
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let state = self.state.lock();
        let (executors, loads) = state
            .registry
            .entries()
            .map(|e| (e.info.clone(), e.load))
            .unzip();
        ClusterInfo {
            executors,
            running_jobs: state.queue.len() as u32,
            loads,
        }
    }

    /// Every job the scheduler knows or recently released, newest first.
    pub fn jobs_overview(&self) -> Vec<JobView> {
        let state = self.state.lock();
        let mut jobs: Vec<JobView> = state
            .jobs
            .values()
            .map(|e| JobView::of(&e.job))
            .chain(state.history.iter().cloned())
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.submitted_at_ms));
        jobs
    }

    /// One job, live or from the recent history.
    pub fn job_overview(&self, job_id: &str) -> Option<JobView> {
        let state = self.state.lock();
        match state.jobs.get(job_id) {
            Some(e) => Some(JobView::of(&e.job)),
            None => state.history.iter().find(|j| j.id == job_id).cloned(),
        }
    }

    /// The tasks of the jobs still held (running, or finished and not yet
    /// released): (job, stage, partition, state, attempt, executor, rows,
    /// elapsed ms).
    pub fn tasks_overview(&self) -> Vec<TaskRow> {
        let state = self.state.lock();
        let mut rows = vec![];
        for entry in state.jobs.values() {
            let job = &entry.job;
            for stage in &job.stages {
                for (p, t) in stage.tasks.iter().enumerate() {
                    let (state, attempt, executor, rows_out, ms) = match t {
                        TaskState::Pending => ("pending", 0, String::new(), 0, 0),
                        TaskState::Running { executor, attempt } => {
                            ("running", *attempt, executor.id.clone(), 0, 0)
                        }
                        TaskState::Succeeded {
                            executor,
                            attempt,
                            stats,
                        } => (
                            "succeeded",
                            *attempt,
                            executor.id.clone(),
                            stats.output_rows,
                            stats.elapsed_ms,
                        ),
                    };
                    rows.push(TaskRow {
                        job_id: job.id.clone(),
                        stage: stage.id,
                        partition: p as u32,
                        state,
                        attempt,
                        executor,
                        rows: rows_out,
                        elapsed_ms: ms,
                    });
                }
            }
        }
        rows
    }

    /// Registered executors, then the ones lost lately (newest first) with
    /// why.
    pub fn executors_overview(&self) -> Vec<ExecutorView> {
        let state = self.state.lock();
        state
            .registry
            .entries()
            .map(ExecutorView::of)
            .chain(state.lost.iter().rev().cloned())
            .collect()
    }

    /// The gauges of `/metrics`.
    pub fn metrics_snapshot(&self, sessions: usize) -> crate::metrics::Snapshot {
        let state = self.state.lock();
        let busy: usize = state.registry.entries().map(|e| e.running.len()).sum();
        crate::metrics::Snapshot {
            executors: state.registry.entries().count() as i64,
            slots_total: state.registry.total_slots() as i64,
            slots_busy: busy as i64,
            jobs_running: state.queue.len() as i64,
            tasks_runnable: state
                .queue
                .iter()
                .filter_map(|id| state.jobs.get(id))
                .map(|j| j.job.runnable_tasks().len() as i64)
                .sum(),
            sessions: sessions as i64,
        }
    }

    pub fn total_slots(&self) -> usize {
        self.state.lock().registry.total_slots()
    }

    /// Sessions that still have a job here (running, or a result to fetch).
    pub fn sessions_with_jobs(&self) -> HashSet<String> {
        let state = self.state.lock();
        state
            .jobs
            .values()
            .map(|j| j.job.session_id.clone())
            .collect()
    }

    // ------------------------------------------------------------ jobs

    pub fn submit(self: &Arc<Self>, job: Job) -> Result<()> {
        {
            let mut state = self.state.lock();
            if state.registry.is_empty() {
                return Err(SchedulerError::NoExecutors);
            }
            if state.queue.len() >= self.config.max_running_jobs {
                return Err(SchedulerError::LimitExceeded(format!(
                    "{} jobs are already running (max_running_jobs)",
                    state.queue.len()
                )));
            }
            let id = job.id.clone();
            self.metrics.job_planned(job.planning.planning);
            state.report.events.record(Event::Submitted {
                job_id: id.clone(),
                session: job.session_id.clone(),
                description: job.description.clone(),
                stages: job.stages.len(),
            });
            let (status, _) = watch::channel(job.status());
            state.queue.push(id.clone());
            state.jobs.insert(
                id,
                JobEntry {
                    job,
                    status,
                    events_seen: 0,
                    logged: Logged::default(),
                },
            );
        }
        self.dispatch();
        Ok(())
    }

    pub fn watch(&self, job_id: &str) -> Result<watch::Receiver<JobStatus>> {
        let state = self.state.lock();
        state
            .jobs
            .get(job_id)
            .map(|j| j.status.subscribe())
            .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_string()))
    }

    pub fn is_running(&self, job_id: &str) -> bool {
        let state = self.state.lock();
        state.jobs.get(job_id).is_some_and(|j| j.job.is_running())
    }

    pub fn task_update(self: &Arc<Self>, update: TaskStatusUpdate) {
        let Some(task) = update.task else { return };
        let mut probe = None;
        let commit;
        let failed = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let first_report = state
                .registry
                .end_attempt(&update.executor_id, task.attempt);
            if let Some(e) = state.registry.get_mut(&update.executor_id)
                && first_report
            {
                match &update.outcome {
                    Some(task_status_update::Outcome::Succeeded(_)) => e.tasks_succeeded += 1,
                    Some(task_status_update::Outcome::Failed(TaskFailure {
                        reason: Some(task_failure::Reason::Killed(_)),
                        ..
                    })) => {}
                    Some(task_status_update::Outcome::Failed(_)) => e.tasks_failed += 1,
                    None => {}
                }
            }
            let Some(entry) = state.jobs.get_mut(&task.job_id) else {
                tracing::debug!(task = %task.display(), "report for a job no longer known ignored");
                drop(guard);
                self.dispatch();
                return;
            };
            let t = match update.outcome {
                Some(task_status_update::Outcome::Succeeded(stats)) => {
                    self.metrics.task_succeeded(&stats);
                    state.report.events.record(Event::Task {
                        job_id: task.job_id.clone(),
                        stage: task.stage_id,
                        partition: task.partition,
                        attempt: task.attempt,
                        executor: update.executor_id.clone(),
                        rows: stats.output_rows,
                        bytes: stats.output_bytes,
                        elapsed_ms: stats.elapsed_ms,
                        input_rows: stats.input_rows,
                        local_fetches: stats.local_fetches,
                        remote_fetches: stats.remote_fetches,
                        local_fetch_bytes: stats.local_fetch_bytes,
                        remote_fetch_bytes: stats.remote_fetch_bytes,
                        shuffle_spilled_bytes: stats.shuffle_spilled_bytes,
                        operator_spilled_bytes: stats.operator_spilled_bytes,
                        queued_us: stats.queued_us,
                        setup_us: stats.setup_us,
                    });
                    entry
                        .job
                        .on_task_succeeded(task.stage_id, task.partition, task.attempt, stats)
                }
                Some(task_status_update::Outcome::Failed(f)) => {
                    let killed = matches!(f.reason, Some(task_failure::Reason::Killed(_)));
                    self.metrics
                        .task_ended(if killed { "killed" } else { "failed" });
                    tracing::debug!(task = %task.display(), error = %f.message, "task failed");
                    if let Some(task_failure::Reason::FetchFailed(ff)) = &f.reason
                        && ff.unreachable
                    {
                        probe = Some(ff.executor_id.clone());
                    }
                    entry
                        .job
                        .on_task_failed(task.stage_id, task.partition, task.attempt, &f)
                }
                None => Transition::Ignored,
            };
            commit = t == Transition::Commit;
            state.settle(&task.job_id, t)
        };
        if let Some(id) = failed {
            self.cleanup_job(&id);
        }
        if commit {
            self.commit(&task.job_id);
        }
        if let Some(executor) = probe {
            self.probe(&executor);
        }
        self.dispatch();
    }

    /// The client could not fetch a result partition.
    pub fn result_lost(
        self: &Arc<Self>,
        job_id: &str,
        partition: u32,
        attempt: u64,
        why: &str,
    ) -> Result<()> {
        let failed = {
            let mut state = self.state.lock();
            let entry = state
                .jobs
                .get_mut(job_id)
                .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_string()))?;
            let executor = entry.job.result_owner(partition, attempt);
            let t = entry.job.on_result_lost(partition, attempt, why);
            let failed = state.settle(job_id, t);
            (failed, executor)
        };
        if let Some(id) = failed.0 {
            self.cleanup_job(&id);
        }
        if let Some(executor) = failed.1 {
            self.probe(&executor);
        }
        self.dispatch();
        Ok(())
    }

    pub fn cancel(self: &Arc<Self>, job_id: &str) -> Result<bool> {
        let cancelled = {
            let mut state = self.state.lock();
            let state = &mut *state;
            let entry = state
                .jobs
                .get_mut(job_id)
                .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_string()))?;
            let was_running = entry.job.is_running();
            entry.job.finish(JobPhase::Cancelled);
            entry.publish(&state.report);
            state.queue.retain(|q| q != job_id);
            was_running
        };
        if cancelled {
            self.metrics.job_ended("cancelled");
            tracing::info!(job = job_id, "job cancelled");
            self.cleanup_job(job_id);
            // Slots of killed tasks come back with their status reports.
        }
        Ok(cancelled)
    }

    /// Cancels the running jobs of a session and frees the finished ones.
    pub fn close_session(self: &Arc<Self>, session_id: &str) {
        let jobs: Vec<String> = {
            let state = self.state.lock();
            state
                .jobs
                .iter()
                .filter(|(_, j)| j.job.session_id == session_id)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in jobs {
            self.release_job(&id);
        }
    }

    /// The client has its result: forget the job and free its data.
    pub fn release_job(self: &Arc<Self>, job_id: &str) {
        let removed = {
            let mut state = self.state.lock();
            state.queue.retain(|q| q != job_id);
            state.jobs.remove(job_id)
        };
        if let Some(mut entry) = removed {
            // Only a job released while running still has tasks to kill.
            let running = entry.job.is_running();
            {
                let mut state = self.state.lock();
                if running {
                    entry.job.finish(JobPhase::Cancelled);
                    entry.publish(&state.report);
                    self.metrics.job_ended("cancelled");
                }
                if state.history.len() >= HISTORY {
                    state.history.pop_front();
                }
                let view = JobView::of(&entry.job);
                state.report.events.record(Event::Finished {
                    job: Box::new(view.clone()),
                });
                state.history.push_back(view);
            }
            let executors = entry.job.executors_used.iter().cloned().collect();
            self.free_data(job_id, executors, running);
            // A commit under way discards the staging directory itself once
            // done; otherwise remove what late attempts may have left there.
            if let Some(w) = entry.job.write
                && entry.job.phase != JobPhase::Committing
            {
                discard_staged(w.output, job_id);
            }
        }
    }

    /// Stops a failed or cancelled job's tasks and frees its data (and the
    /// files a write job staged).
    fn cleanup_job(self: &Arc<Self>, job_id: &str) {
        let (executors, output): (Vec<String>, _) = {
            let state = self.state.lock();
            match state.jobs.get(job_id) {
                Some(e) => (
                    e.job.executors_used.iter().cloned().collect(),
                    e.job.write.as_ref().map(|w| w.output.clone()),
                ),
                None => return,
            }
        };
        self.free_data(job_id, executors, true);
        if let Some(output) = output {
            discard_staged(output, job_id);
        }
    }

    /// Publishes a write job's files, then ends the job.
    fn commit(self: &Arc<Self>, job_id: &str) {
        let (output, accepted) = {
            let state = self.state.lock();
            let Some(w) = state.jobs.get(job_id).and_then(|e| e.job.write.as_ref()) else {
                return;
            };
            (w.output.clone(), w.accepted.clone())
        };
        let core = Arc::clone(self);
        let job_id = job_id.to_string();
        tokio::spawn(async move {
            let result = output.commit(&job_id, &accepted).await;
            match &result {
                Ok(c) => tracing::info!(job = job_id, files = c.files, "written files published"),
                Err(e) => {
                    tracing::warn!(job = job_id, error = %e, "publishing written files failed")
                }
            }
            output.discard(&job_id).await;
            let failed = {
                let mut state = core.state.lock();
                let Some(entry) = state.jobs.get_mut(&job_id) else {
                    return;
                };
                let t = entry.job.on_committed(result.map(|_| ()));
                state.settle(&job_id, t)
            };
            if let Some(id) = failed {
                core.cleanup_job(&id);
            }
        });
    }

    fn free_data(self: &Arc<Self>, job_id: &str, executors: Vec<String>, kill: bool) {
        let clients: Vec<(String, ExecutorServiceClient<Channel>)> = {
            let state = self.state.lock();
            executors
                .iter()
                .filter_map(|id| {
                    state
                        .registry
                        .get(id)
                        .map(|e| (id.clone(), e.client.clone()))
                })
                .collect()
        };
        // Executors away now learn through their heartbeats that the job is
        // forgotten.
        for (executor, mut client) in clients {
            let job_id = job_id.to_string();
            let core = Arc::clone(self);
            tokio::spawn(async move {
                if kill
                    && client
                        .cancel_tasks(CancelTasksRequest {
                            job_id: job_id.clone(),
                        })
                        .await
                        .is_err()
                {
                    core.metrics.grpc_error("client", "CancelTasks");
                }
                if let Err(e) = client
                    .remove_job_data(RemoveJobDataRequest { job_id })
                    .await
                {
                    core.metrics.grpc_error("client", "RemoveJobData");
                    tracing::debug!(executor, error = %e.message(), "could not free job data");
                }
            });
        }
    }

    // ------------------------------------------------------------ dispatch

    /// Fills free slots with runnable tasks, oldest job first, and sends the
    /// launches.
    pub fn dispatch(self: &Arc<Self>) {
        let launches = self.assign();
        for launch in launches {
            let core = Arc::clone(self);
            tokio::spawn(async move {
                let Launch {
                    executor_id,
                    mut client,
                    request,
                } = launch;
                let job_id = request.job_id.clone();
                let stage = request.stage_id;
                let tasks = request.tasks.clone();
                if let Err(e) = client.launch_tasks(request).await {
                    core.metrics.grpc_error("client", "LaunchTasks");
                    core.launch_failed(&executor_id, &job_id, stage, &tasks, e);
                }
            });
        }
    }

    /// A refused connection means the executor is gone; any other refusal
    /// (e.g. a plan over the message size limit) fails those attempts.
    fn launch_failed(
        self: &Arc<Self>,
        executor_id: &str,
        job_id: &str,
        stage: u32,
        tasks: &[TaskAttempt],
        e: tonic::Status,
    ) {
        if matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) {
            self.executor_lost(executor_id, &format!("task launch failed: {}", e.message()));
            return;
        }
        {
            let mut state = self.state.lock();
            for t in tasks {
                state.registry.end_attempt(executor_id, t.attempt);
            }
        }
        self.fail_job(
            job_id,
            format!(
                "executor {executor_id} refused to launch tasks of stage {stage}: {}",
                e.message()
            ),
        );
    }

    /// Fails a running job for a reason found outside its tasks (a launch
    /// refused, a scalar subquery run beside it failed).
    pub fn fail_job(self: &Arc<Self>, job_id: &str, why: String) {
        let failed = {
            let mut state = self.state.lock();
            match state.jobs.get_mut(job_id) {
                Some(entry) if entry.job.is_running() => {
                    entry.job.finish(JobPhase::Failed(why));
                    state.settle(job_id, Transition::JobFailed)
                }
                // Ended meanwhile (or gone): nothing to fail, but slots may
                // have been freed.
                _ => None,
            }
        };
        if let Some(id) = failed {
            self.cleanup_job(&id);
        }
        self.dispatch();
    }

    /// The value of one of a job's scalar subqueries (see
    /// `Job::on_subquery_value`) arrived: the stages waiting for it may run.
    pub fn subquery_value(self: &Arc<Self>, job_id: &str, id: u32, value: Vec<u8>, shown: &str) {
        {
            let mut state = self.state.lock();
            let Some(entry) = state.jobs.get_mut(job_id) else {
                return;
            };
            let t = entry.job.on_subquery_value(id, value, shown);
            state.settle(job_id, t);
        }
        self.dispatch();
    }

    fn assign(&self) -> Vec<Launch> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut batches: BTreeMap<(String, String, u32), Vec<TaskAttempt>> = BTreeMap::new();
        'jobs: for job_id in &state.queue {
            let Some(entry) = state.jobs.get_mut(job_id) else {
                continue;
            };
            let runnable = entry.job.runnable_tasks();
            if runnable.is_empty() {
                continue;
            }
            for (stage, partition) in runnable {
                let attempt = state.registry.next_attempt();
                let Some(executor) = state.registry.pick() else {
                    entry.publish(&state.report);
                    break 'jobs;
                };
                executor.running.insert(
                    attempt,
                    LaunchedAttempt {
                        job_id: job_id.clone(),
                        stage,
                        partition,
                        launched: Instant::now(),
                    },
                );
                let r = ExecutorRef {
                    id: executor.info.executor_id.clone(),
                    address: executor.info.address.clone(),
                };
                entry.job.choose_plan(stage);
                entry.job.mark_running(stage, partition, r.clone(), attempt);
                self.metrics.task_ended("launched");
                batches
                    .entry((r.id, job_id.clone(), stage))
                    .or_default()
                    .push(TaskAttempt { partition, attempt });
            }
            entry.publish(&state.report);
        }
        batches
            .into_iter()
            .filter_map(|((executor_id, job_id, stage), tasks)| {
                let entry = state.jobs.get(&job_id)?;
                let executor = state.registry.get(&executor_id)?;
                let job = &entry.job;
                let run = &job.stages[stage as usize];
                Some(Launch {
                    executor_id,
                    client: executor.client.clone(),
                    request: LaunchTasksRequest {
                        job_id: job.id.clone(),
                        job_token: job.token.clone(),
                        stage_id: stage,
                        stage_attempt: run.attempt,
                        plan: run.launch_plan().as_ref().clone(),
                        inputs: job.stage_inputs(stage),
                        tasks,
                        settings: job.settings.as_ref().clone(),
                        subquery_values: job.subquery_values.clone(),
                        direct_result_max_bytes: job.direct_result_max_bytes(stage),
                    },
                })
            })
            .collect()
    }
}
