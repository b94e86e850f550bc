//! The scheduler's heart: the executor registry and the running jobs, behind
//! one lock, plus the dispatch step that pushes runnable tasks into free
//! executor slots.
//!
//! Every event (job submitted, task finished, executor registered or lost)
//! mutates the state under the lock, computes which tasks to launch, and sends
//! the launches after releasing it. There is no polling loop on the critical
//! path: a freed slot is refilled by the very status update that freed it.
//!
//! All ways of losing an executor (heartbeat timeout, failed launch, broken
//! stream, deregistration) go through [`Core::executor_lost`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_proto::executor_service_client::ExecutorServiceClient;
use ember_proto::{
    CancelTasksRequest, ClusterInfo, ExecutorInfo, JobStatus, LaunchTasksRequest,
    RemoveJobDataRequest, TaskStatusUpdate, task_status_update,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::job::{ExecutorRef, Job, JobPhase, Transition};

#[derive(Debug)]
struct ExecutorEntry {
    info: ExecutorInfo,
    free_slots: usize,
    last_seen: Instant,
    client: ExecutorServiceClient<Channel>,
}

struct JobEntry {
    job: Job,
    status: watch::Sender<JobStatus>,
}

#[derive(Default)]
struct State {
    executors: BTreeMap<String, ExecutorEntry>,
    jobs: HashMap<String, JobEntry>,
    /// Running jobs in submission order (first come, first served).
    queue: Vec<String>,
}

/// A batch of tasks of one stage for one executor.
struct Launch {
    executor_id: String,
    client: ExecutorServiceClient<Channel>,
    request: LaunchTasksRequest,
}

pub struct Core {
    pub config: SchedulerConfig,
    state: Mutex<State>,
}

impl Core {
    pub fn new(config: SchedulerConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
        })
    }

    // ------------------------------------------------------------ executors

    pub fn register_executor(self: &Arc<Self>, info: ExecutorInfo) -> Result<()> {
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
        {
            let mut state = self.state.lock();
            if let Some(existing) = state.executors.get(&info.executor_id) {
                return Err(SchedulerError::Registration(format!(
                    "executor id {} is already registered (at {}); ids must be unique",
                    info.executor_id, existing.info.address
                )));
            }
            tracing::info!(executor = %info.executor_id, address = %info.address, slots = info.slots, "executor registered");
            state.executors.insert(
                info.executor_id.clone(),
                ExecutorEntry {
                    free_slots: info.slots as usize,
                    info,
                    last_seen: Instant::now(),
                    client,
                },
            );
        }
        self.dispatch();
        Ok(())
    }

    /// Returns false if the executor is unknown (it must register again).
    pub fn heartbeat(&self, executor_id: &str) -> bool {
        let mut state = self.state.lock();
        match state.executors.get_mut(executor_id) {
            Some(e) => {
                e.last_seen = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The one path for every way an executor can be lost.
    pub fn executor_lost(self: &Arc<Self>, executor_id: &str, reason: &str) {
        let mut failed = vec![];
        {
            let mut state = self.state.lock();
            if state.executors.remove(executor_id).is_none() {
                return;
            }
            tracing::warn!(executor = executor_id, reason, "executor lost");
            let no_executors_left = state.executors.is_empty();
            let ids: Vec<String> = state.queue.clone();
            for id in ids {
                let Some(entry) = state.jobs.get_mut(&id) else {
                    continue;
                };
                let t = entry.job.on_executor_lost(executor_id);
                if no_executors_left && entry.job.is_running() {
                    entry.job.finish(JobPhase::Failed(format!(
                        "all executors were lost (last: {executor_id}: {reason}); no executor can run the remaining tasks"
                    )));
                }
                if t != Transition::Ignored || !entry.job.is_running() {
                    entry.status.send_replace(entry.job.status());
                }
                if !entry.job.is_running() {
                    failed.push(id);
                }
            }
            state.queue.retain(|id| !failed.contains(id));
        }
        for id in failed {
            self.cleanup_job(&id);
        }
        self.dispatch();
    }

    /// Declares lost every executor silent for longer than the timeout, and
    /// releases finished jobs nobody fetched.
    pub fn check_liveness(self: &Arc<Self>) {
        let timeout = self.config.executor_timeout;
        let silent: Vec<String> = {
            let state = self.state.lock();
            state
                .executors
                .iter()
                .filter(|(_, e)| e.last_seen.elapsed() > timeout)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in silent {
            self.executor_lost(&id, "no heartbeat");
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
        ClusterInfo {
            executors: state.executors.values().map(|e| e.info.clone()).collect(),
            running_jobs: state.queue.len() as u32,
        }
    }

    pub fn total_slots(&self) -> usize {
        let state = self.state.lock();
        state
            .executors
            .values()
            .map(|e| e.info.slots as usize)
            .sum()
    }

    // ------------------------------------------------------------ jobs

    pub fn submit(self: &Arc<Self>, job: Job) -> Result<()> {
        {
            let mut state = self.state.lock();
            if state.executors.is_empty() {
                return Err(SchedulerError::NoExecutors);
            }
            if state.queue.len() >= self.config.max_running_jobs {
                return Err(SchedulerError::LimitExceeded(format!(
                    "{} jobs are already running (max_running_jobs)",
                    state.queue.len()
                )));
            }
            let id = job.id.clone();
            let (status, _) = watch::channel(job.status());
            state.queue.push(id.clone());
            state.jobs.insert(id, JobEntry { job, status });
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

    pub fn task_update(self: &Arc<Self>, update: TaskStatusUpdate) {
        let Some(task) = update.task else { return };
        let mut finished = None;
        {
            let mut state = self.state.lock();
            if let Some(e) = state.executors.get_mut(&update.executor_id) {
                e.free_slots = (e.free_slots + 1).min(e.info.slots as usize);
                e.last_seen = Instant::now();
            }
            let Some(entry) = state.jobs.get_mut(&task.job_id) else {
                return;
            };
            let t = match update.outcome {
                Some(task_status_update::Outcome::Succeeded(stats)) => entry.job.on_task_succeeded(
                    task.stage_id,
                    task.partition,
                    &update.executor_id,
                    stats,
                ),
                Some(task_status_update::Outcome::Failed(f)) => {
                    tracing::debug!(task = %task.display(), error = %f.message, "task failed");
                    entry
                        .job
                        .on_task_failed(task.stage_id, task.partition, &update.executor_id, &f)
                }
                None => Transition::Ignored,
            };
            if t != Transition::Ignored {
                entry.status.send_replace(entry.job.status());
            }
            match t {
                Transition::JobSucceeded => {
                    tracing::info!(job = %task.job_id, elapsed_ms = entry.job.elapsed().as_millis() as u64, "job succeeded");
                    finished = Some((task.job_id.clone(), false));
                }
                Transition::JobFailed => {
                    tracing::warn!(job = %task.job_id, phase = ?entry.job.phase, "job failed");
                    finished = Some((task.job_id.clone(), true));
                }
                _ => {}
            }
            if let Some((id, _)) = &finished {
                state.queue.retain(|q| q != id);
            }
        }
        if let Some((id, true)) = finished {
            self.cleanup_job(&id);
        }
        self.dispatch();
    }

    pub fn cancel(self: &Arc<Self>, job_id: &str) -> Result<bool> {
        let cancelled = {
            let mut state = self.state.lock();
            let entry = state
                .jobs
                .get_mut(job_id)
                .ok_or_else(|| SchedulerError::UnknownJob(job_id.to_string()))?;
            let was_running = entry.job.is_running();
            entry.job.finish(JobPhase::Cancelled);
            entry.status.send_replace(entry.job.status());
            state.queue.retain(|q| q != job_id);
            was_running
        };
        if cancelled {
            tracing::info!(job = job_id, "job cancelled");
            self.cleanup_job(job_id);
            // Slots of killed tasks come back with their status reports.
        }
        Ok(cancelled)
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
            if running {
                entry.job.finish(JobPhase::Cancelled);
                entry.status.send_replace(entry.job.status());
            }
            let executors = entry.job.executors_used.iter().cloned().collect();
            self.free_data(job_id, executors, running);
        }
    }

    /// Stops a failed or cancelled job's tasks and frees its data.
    fn cleanup_job(self: &Arc<Self>, job_id: &str) {
        let executors: Vec<String> = {
            let state = self.state.lock();
            match state.jobs.get(job_id) {
                Some(e) => e.job.executors_used.iter().cloned().collect(),
                None => return,
            }
        };
        self.free_data(job_id, executors, true);
    }

    fn free_data(self: &Arc<Self>, job_id: &str, executors: Vec<String>, kill: bool) {
        let clients: Vec<(String, ExecutorServiceClient<Channel>)> = {
            let state = self.state.lock();
            executors
                .iter()
                .filter_map(|id| {
                    state
                        .executors
                        .get(id)
                        .map(|e| (id.clone(), e.client.clone()))
                })
                .collect()
        };
        for (executor, mut client) in clients {
            let job_id = job_id.to_string();
            tokio::spawn(async move {
                if kill {
                    let _ = client
                        .cancel_tasks(CancelTasksRequest {
                            job_id: job_id.clone(),
                        })
                        .await;
                }
                if let Err(e) = client
                    .remove_job_data(RemoveJobDataRequest { job_id })
                    .await
                {
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
                if let Err(e) = client.launch_tasks(request).await {
                    core.executor_lost(
                        &executor_id,
                        &format!("task launch failed: {}", e.message()),
                    );
                }
            });
        }
    }

    fn assign(&self) -> Vec<Launch> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut batches: BTreeMap<(String, String, u32), Vec<u32>> = BTreeMap::new();
        'jobs: for job_id in &state.queue {
            let Some(entry) = state.jobs.get_mut(job_id) else {
                continue;
            };
            for (stage, partition) in entry.job.runnable_tasks() {
                // The executor with the most free slots: spreads tasks evenly.
                let Some(executor) = state
                    .executors
                    .values_mut()
                    .filter(|e| e.free_slots > 0)
                    .max_by_key(|e| e.free_slots)
                else {
                    break 'jobs;
                };
                executor.free_slots -= 1;
                let r = ExecutorRef {
                    id: executor.info.executor_id.clone(),
                    address: executor.info.address.clone(),
                };
                entry.job.mark_running(stage, partition, r.clone());
                batches
                    .entry((r.id, job_id.clone(), stage))
                    .or_default()
                    .push(partition);
            }
            entry.status.send_replace(entry.job.status());
        }
        batches
            .into_iter()
            .filter_map(|((executor_id, job_id, stage), partitions)| {
                let entry = state.jobs.get(&job_id)?;
                let executor = state.executors.get(&executor_id)?;
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
                        plan: run.plan.as_ref().clone(),
                        inputs: job.stage_inputs(stage),
                        partitions,
                        settings: job.settings.as_ref().clone(),
                    },
                })
            })
            .collect()
    }
}
